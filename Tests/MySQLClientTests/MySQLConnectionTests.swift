import Foundation
import MySQLClient
import TestSupport
import Testing

@Suite("MySQLConnection against a live server", .enabled(if: LiveDatabase.shouldRun), .serialized)
struct MySQLConnectionTests {
    @Test("every value type binds and reads back, by index and by name")
    func everyType() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.executeScript(
                unsafeSQL: """
                    CREATE TABLE v (
                        id INT PRIMARY KEY, i BIGINT, u BIGINT UNSIGNED, t TINYINT, d DOUBLE, f FLOAT,
                        s VARCHAR(255), b VARBINARY(255), dt DATETIME(6), ts TIMESTAMP(6) NULL, birthday DATE,
                        amount DECIMAL(12,3), flag BOOLEAN, tm TIME, j JSON, e ENUM('a','b')
                    ) ENGINE=InnoDB
                    """)
            let text = "héllo 🌍 'quoted' \\ \"x\""
            let bytes: [UInt8] = [0, 1, 127, 128, 255, 0]
            let moment = MySQLDateTime(year: 2026, month: 11, day: 29, hour: 6, minute: 7, second: 8, microsecond: 901_234)
            let date = Date(timeIntervalSince1970: 1_700_000_000.25)
            try connection.execute(
                """
                INSERT INTO v VALUES (1, \(Int64.min), \(UInt64.max), \(-128), \(1.0e300), \(2.5), \(text), \(bytes),
                \(moment), \(date), \(MySQLDateTime(year: 1999, month: 12, day: 31)), \(MySQLValue.string("-123456789.125")),
                \(true), \("-01:02:03"), \("{\"k\": [1, 2]}"), \("b"))
                """)
            let rows = try connection.query("SELECT * FROM v WHERE id = \(1)")
            #expect(rows.count == 1)
            let row = try #require(rows.first)
            #expect(row.columns.map(\.name) == ["id", "i", "u", "t", "d", "f", "s", "b", "dt", "ts", "birthday", "amount", "flag", "tm", "j", "e"])
            #expect(row.int64("i") == Int64.min)
            #expect(row[1] == .int64(.min))
            #expect(row.uint64("u") == UInt64.max)
            #expect(row[2] == .uint64(.max))
            #expect(row.int64("u") == nil)
            #expect(row.int64("t") == -128)
            #expect(row.double("d") == 1.0e300)
            #expect(row.double("f") == 2.5)
            #expect(row.string("s") == text)
            #expect(row.string(6) == text)
            #expect(row.bytes("b") == bytes)
            #expect(row["b"] == .bytes(bytes))
            #expect(row.dateTime("dt") == moment)
            #expect(row.date("ts") == Date(timeIntervalSince1970: 1_700_000_000.25))
            #expect(row.dateTime("birthday") == MySQLDateTime(year: 1999, month: 12, day: 31))
            #expect(row.string("amount") == "-123456789.125")
            #expect(row.double("amount") == -123_456_789.125)
            #expect(row.bool("flag") == true)
            #expect(row.string("tm") == "-01:02:03")
            #expect(row.string("j") == "{\"k\": [1, 2]}")
            #expect(row.string("e") == "b")
            #expect(row.string("no_such_column") == nil)
        }
    }

    @Test("NULLs bind and read as nil through every accessor")
    func nulls() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.execute(
                "CREATE TABLE n (id INT PRIMARY KEY, i BIGINT NULL, s TEXT NULL, b BLOB NULL, dt DATETIME NULL, d DOUBLE NULL)")
            let noInt: Int64? = nil
            let noText: String? = nil
            let noBytes: [UInt8]? = nil
            let noDate: Date? = nil
            try connection.execute("INSERT INTO n VALUES (1, \(noInt), \(noText), \(noBytes), \(noDate), \(MySQLValue.null))")
            let row = try #require(try connection.query("SELECT i, s, b, dt, d, NULL AS nothing FROM n").first)
            for index in 0..<6 {
                #expect(row.isNull(index))
                #expect(row[index] == .null)
            }
            #expect(row.int64("i") == nil && row.string("s") == nil && row.bytes("b") == nil)
            #expect(row.dateTime("dt") == nil && row.double("d") == nil && row.string("nothing") == nil)
            let matched = try connection.query("SELECT id FROM n WHERE i <=> \(noInt)")
            #expect(matched.count == 1)
        }
    }

    @Test("a date-time with a field out of range is refused before it is sent, not stored as a zero or wrapped date")
    func dateTimeFieldsOutOfRange() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            defer { connection.close() }
            try connection.execute("CREATE TABLE d (id INT PRIMARY KEY, dt DATETIME(6) NOT NULL)")
            let latest = MySQLDateTime(year: 9999, month: 12, day: 31, hour: 23, minute: 59, second: 59, microsecond: 999_999)
            let earliest = MySQLDateTime(year: 1, month: 1, day: 1)
            try connection.execute("INSERT INTO d VALUES (1, \(latest)), (2, \(earliest))")
            #expect(try connection.query("SELECT dt FROM d ORDER BY id").map { $0.dateTime(0) } == [latest, earliest])
            let outOfRange = [
                MySQLDateTime(year: 10_000, month: 1, day: 1), MySQLDateTime(year: 2024 + 65_536, month: 1, day: 1),
                MySQLDateTime(year: -1, month: 1, day: 1), MySQLDateTime(year: 2024, month: 13, day: 1),
                MySQLDateTime(year: 2024, month: 1, day: 32), MySQLDateTime(year: 2024, month: 1, day: 1, hour: 24),
                MySQLDateTime(year: 2024, month: 1, day: 1, minute: 300), MySQLDateTime(year: 2024, month: 1, day: 1, minute: -5),
                MySQLDateTime(year: 2024, month: 1, day: 1, second: 60),
                MySQLDateTime(year: 2024, month: 1, day: 1, microsecond: 1_000_000),
                // Date.distantFuture is year 4001; a Date a trillion seconds on is past DATETIME's year 9999.
                MySQLDateTime(Date(timeIntervalSince1970: 1e12)),
                // Past what a 64-bit count of microseconds holds, and not a number at all: refused, not a trap.
                MySQLDateTime(Date(timeIntervalSince1970: 1e300)), MySQLDateTime(Date(timeIntervalSince1970: -1e300)),
                MySQLDateTime(Date(timeIntervalSince1970: .infinity)), MySQLDateTime(Date(timeIntervalSince1970: .nan)),
            ]
            for (offset, value) in outOfRange.enumerated() {
                let error = try #require(throws: MySQLError.self, "\(value)") {
                    try connection.execute("INSERT INTO d VALUES (\(10 + offset), \(value))")
                }
                #expect(error.code == .invalidArgument, "\(value): \(String(reflecting: error))")
            }
            #expect(try connection.query("SELECT COUNT(*) FROM d").first?.int64(0) == 2, "an out-of-range value was stored")
            #expect(connection.isUsable)
            try connection.execute("INSERT INTO d VALUES (3, \(latest))")
        }
    }

    @Test("BIT(n) reads as an integer from its big-endian bytes, BIT(1) as a Bool, by index and by name")
    func bitColumns() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            defer { connection.close() }
            try connection.execute(
                "CREATE TEMPORARY TABLE bits (id INT PRIMARY KEY, flag BIT(1) NOT NULL, mask BIT(12) NULL, wide BIT(64) NULL)")
            try connection.execute("INSERT INTO bits VALUES (1, b'1', b'101000000011', \(UInt64.max)), (2, b'0', NULL, NULL)")
            let rows = try connection.query("SELECT flag, mask, wide FROM bits ORDER BY id")
            try #require(rows.count == 2)
            let set = rows[0]
            #expect(set.bool("flag") == true && set.bool(0) == true)
            #expect(set.int64("flag") == 1 && set.uint64(0) == 1)
            #expect(set.int64("mask") == 0xA03 && set.uint64(1) == 0xA03)
            #expect(set.bool("mask") == true)
            // The raw bytes stay readable as they were.
            #expect(set.bytes("mask") == [0x0A, 0x03])
            #expect(set.uint64("wide") == UInt64.max && set.int64("wide") == nil && set.bool(2) == true)
            let clear = rows[1]
            #expect(clear.bool("flag") == false && clear.int64(0) == 0)
            #expect(clear.bool("mask") == nil && clear.uint64("wide") == nil)
        }
    }

    @Test("long text and blobs come back whole, not cut at the initial buffer")
    func longValues() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.execute("CREATE TABLE l (id INT PRIMARY KEY, txt LONGTEXT, blb LONGBLOB)")
            let long = String((0..<100_000).map { index in Character(UnicodeScalar(UInt8(97 + index % 26))) }) + "ü🌍end"
            let blob = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            try connection.execute("INSERT INTO l VALUES (1, \("short"), \([UInt8]([1])))")
            try connection.execute("INSERT INTO l VALUES (2, \(long), \(blob))")
            try connection.execute("INSERT INTO l VALUES (3, \("short again"), \([UInt8]()))")
            let rows = try connection.query("SELECT txt, blb FROM l ORDER BY id")
            #expect(rows.count == 3)
            #expect(rows[0].string("txt") == "short")
            #expect(rows[1].string("txt")?.utf8.count == long.utf8.count)
            #expect(rows[1].bytes("blb")?.count == blob.count)
            // Compared outside #expect so a failure does not print 400 KB.
            let textIntact = rows[1].string("txt") == long
            let blobIntact = rows[1].bytes("blb") == blob
            #expect(textIntact)
            #expect(blobIntact)
            #expect(rows[2].string("txt") == "short again")
            #expect(rows[2].bytes("blb") == [])
            let length = try connection.query("SELECT CHAR_LENGTH(txt) AS n FROM l WHERE id = \(2)")
            #expect(length.first?.int64("n") == Int64(long.count))
        }
    }

    @Test("a duplicate key is 1062, matchable by name, without the value in its text")
    func duplicateEntry() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.execute("CREATE TABLE u (k VARCHAR(64) PRIMARY KEY)")
            let key = "secret-key-value"
            try connection.execute("INSERT INTO u VALUES (\(key))")
            do {
                try connection.execute("INSERT INTO u VALUES (\(key))")
                Issue.record("a duplicate insert succeeded")
            } catch MySQLErrorCode.duplicateEntry {
                // Matched by name.
            } catch {
                Issue.record("expected duplicateEntry, got \(String(reflecting: error))")
            }
            let error = try #require(throws: MySQLError.self) { try connection.execute("INSERT INTO u VALUES (\(key))") }
            #expect(error.code == .duplicateEntry)
            #expect(error.sqlState == "23000")
            #expect(!error.message.contains(key))
            #expect(!error.description.contains(key))
            #expect(!String(reflecting: error).contains(key))
            #expect(!error.isConnectionBroken)
            #expect(connection.isUsable)
        }
    }

    @Test("a cached statement that failed runs again with new values")
    func statementReuseAfterError() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.execute("CREATE TABLE r (id BIGINT PRIMARY KEY)")
            let before = connection.cachedStatementCount
            func insert(_ id: Int64) throws(MySQLError) { try connection.execute("INSERT INTO r VALUES (\(id))") }
            try insert(1)
            #expect(connection.cachedStatementCount == before + 1)
            #expect(throws: MySQLError.self) { try insert(1) }
            try insert(2)
            #expect(throws: MySQLError.self) { try insert(2) }
            try insert(3)
            #expect(connection.cachedStatementCount == before + 1)
            let rows = try connection.query("SELECT COUNT(*) AS n FROM r")
            #expect(rows.first?.int64("n") == 3)
        }
    }

    @Test("a cached statement whose rows failed half-way runs again at once")
    func statementReuseAfterRowError() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            var configuration = configuration
            // Bounds the failure: the reused statement waited for rows until the read timeout, then lost the connection.
            configuration.readTimeoutSeconds = 5
            let connection = try MySQLConnection(configuration: configuration)
            try connection.execute("CREATE TABLE g (id INT PRIMARY KEY, grp INT NOT NULL)")
            try connection.execute("INSERT INTO g VALUES (1, 1), (2, 2), (3, 2)")
            // For id 2 the scalar subquery finds two rows: ER_SUBQUERY_NO_1_ROW comes after the metadata, while the
            // rows are read (mysql_stmt_store_result), not from mysql_stmt_execute.
            func members(from id: Int64) throws(MySQLError) -> [MySQLRow] {
                try connection.query("SELECT (SELECT h.id FROM g AS h WHERE h.grp = g.id) AS m FROM g WHERE id >= \(id) ORDER BY id")
            }
            let error = try #require(throws: MySQLError.self) { try members(from: 1) }
            #expect(error.code == MySQLErrorCode(rawValue: 1242))
            #expect(connection.isUsable)
            let rows = try members(from: 3)
            #expect(rows.count == 1 && rows.first?.isNull(0) == true)
            #expect(connection.isUsable)
            #expect(try connection.query("SELECT \(1) + 1 AS n").first?.int64("n") == 2)
        }
    }

    @Test("CALL of a procedure that returns rows reads the first result and leaves the connection in sync")
    func storedProcedureResults() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.executeScript(unsafeSQL: "CREATE PROCEDURE two_results(IN n INT) BEGIN SELECT n AS a; SELECT n + 1 AS b; END")
            #expect(try connection.query("CALL two_results(\(Int64(4)))").first?.int64("a") == 4)
            #expect(connection.isUsable)
            #expect(try connection.query("SELECT \(1) + 1 AS n").first?.int64("n") == 2)
            #expect(try connection.query("CALL two_results(\(Int64(7)))").first?.int64("a") == 7)
            #expect(try connection.query("SELECT \(2) + 1 AS n").first?.int64("n") == 3)
            #expect(connection.isUsable)
        }
    }

    @Test("ssl-mode=REQUIRED never connects without TLS")
    func tlsRequiredIsEnforced() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let plain = try MySQLConnection(configuration: configuration)
            let serverTLS = try plain.query("SELECT @@have_ssl AS s").first?.string("s")
            var required = configuration
            required.tlsMode = .required
            if serverTLS == "YES" {
                let connection = try MySQLConnection(configuration: required)
                let cipher = try connection.query("SHOW SESSION STATUS LIKE 'Ssl_cipher'").first?.string(1)
                #expect(cipher?.isEmpty == false)
            } else {
                let error = try #require(throws: MySQLError.self) { _ = try MySQLConnection(configuration: required) }
                #expect(error.code == .sslConnectionError)
            }
        }
    }

    @Test("one literal is prepared once however often it runs; the same SQL as unsafeSQL reads the same rows")
    func literalAndUnsafeSQLStatements() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.execute("CREATE TABLE q (id BIGINT PRIMARY KEY, v VARCHAR(20))")
            for id in Int64(1)...3 { try connection.execute("INSERT INTO q VALUES (\(id), \("v\(id)"))") }
            let before = connection.cachedStatementCount
            func literal(_ id: Int64) throws(MySQLError) -> String? {
                try connection.query("SELECT v FROM q WHERE id = \(id)").first?.string("v")
            }
            #expect(try literal(1) == "v1")
            #expect(try literal(3) == "v3")
            #expect(connection.cachedStatementCount == before + 1)
            let raw = try connection.query(MySQLQuery(unsafeSQL: "SELECT v FROM q WHERE id = ?", binds: [.int64(2)]))
            #expect(raw.first?.string("v") == "v2")
            #expect(try literal(2) == "v2")
        }
    }

    @Test("a cached SELECT reads the new columns after ALTER TABLE changes them")
    func cachedStatementAfterSchemaChange() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            let admin = try MySQLConnection(configuration: configuration)
            try connection.execute("CREATE TABLE s (id BIGINT PRIMARY KEY, v INT)")
            try connection.execute("INSERT INTO s VALUES (1, 7)")
            func select() throws(MySQLError) -> MySQLRow? { try connection.query("SELECT * FROM s WHERE id = \(1)").first }
            let first = try select()
            #expect(first?.columns.map(\.name) == ["id", "v"])
            #expect(first?[1] == .int64(7))
            #expect(try select()?[1] == .int64(7))

            // Same column count, another type: the server re-prepares, and the rows follow the new metadata.
            try admin.execute("ALTER TABLE s MODIFY v VARCHAR(20)")
            try admin.execute("UPDATE s SET v = \("seven") WHERE id = \(1)")
            let retyped = try select()
            #expect(retyped?[1] == .string("seven"))

            try admin.execute("ALTER TABLE s ADD COLUMN w VARCHAR(10) DEFAULT 'x'")
            let widened = try select()
            #expect(widened?.columns.map(\.name) == ["id", "v", "w"])
            #expect(widened?.string("w") == "x")
            #expect(widened?.string("v") == "seven")
        }
    }

    @Test("execute reports affected rows and the last insert id; reportsMatchedRows counts matched rows")
    func executeResult() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.execute("CREATE TABLE a (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)")
            let first = try connection.execute("INSERT INTO a (v) VALUES (\(10))")
            let second = try connection.execute("INSERT INTO a (v) VALUES (\(20))")
            #expect(first.affectedRows == 1 && first.lastInsertID == 1)
            #expect(second.lastInsertID == 2)
            let updated = try connection.execute("UPDATE a SET v = v + 1")
            #expect(updated.affectedRows == 2)
            let unchanged = try connection.execute("UPDATE a SET v = \(11) WHERE id = \(1)")
            #expect(unchanged.affectedRows == 0)

            var matching = configuration
            matching.reportsMatchedRows = true
            let matchingConnection = try MySQLConnection(configuration: matching)
            let matched = try matchingConnection.execute("UPDATE a SET v = \(11) WHERE id = \(1)")
            #expect(matched.affectedRows == 1)

            try connection.execute("CREATE TABLE c (k VARCHAR(10) PRIMARY KEY, value BIGINT UNSIGNED NOT NULL)")
            var values: [UInt64] = []
            for _ in 0..<3 {
                let result = try connection.execute(
                    "INSERT INTO c (k, value) VALUES (\("x"), 1) ON DUPLICATE KEY UPDATE value = LAST_INSERT_ID(value + 1)")
                values.append(result.affectedRows == 1 ? 1 : result.lastInsertID)
            }
            #expect(values == [1, 2, 3])
        }
    }

    @Test("a script runs every statement; a failing one throws and the connection stays usable")
    func scripts() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.executeScript(
                unsafeSQL: """
                    CREATE TABLE s1 (id INT PRIMARY KEY);
                    CREATE TABLE s2 (id INT PRIMARY KEY);
                    INSERT INTO s1 VALUES (1), (2);
                    SELECT * FROM s1;
                    INSERT INTO s2 SELECT id FROM s1;
                    """)
            #expect(try connection.query("SELECT COUNT(*) FROM s2").first?.int64(0) == 2)
            let error = try #require(throws: MySQLError.self) {
                try connection.executeScript(unsafeSQL: "INSERT INTO s1 VALUES (3); INSERT INTO nowhere VALUES (1); INSERT INTO s1 VALUES (4);")
            }
            #expect(error.code == .noSuchTable)
            #expect(connection.isUsable)
            let ids = try connection.query("SELECT id FROM s1 ORDER BY id").compactMap { $0.int64(0) }
            #expect(ids == [1, 2, 3])
            // Multi-statements are switched off again after the script.
            #expect(throws: MySQLError.self) { try connection.execute("SELECT 1; SELECT 2") }
        }
    }

    @Test("a syntax error keeps its message, and a bind count mismatch is caught before the server")
    func statementErrors() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            let syntax = try #require(throws: MySQLError.self) { try connection.query("SELEC 1") }
            #expect(syntax.code == .syntaxError)
            #expect(syntax.message.contains("SELEC"))
            let mismatch = try #require(throws: MySQLError.self) {
                try connection.query(MySQLQuery(unsafeSQL: "SELECT ?, ?", binds: [.int64(1)]))
            }
            #expect(mismatch.code == .bindCountMismatch)
            #expect(try connection.query("SELECT \(7) + 1 AS n").first?.int64("n") == 8)
        }
    }

    @Test("GET_LOCK and RELEASE_LOCK work through prepared statements across connections")
    func namedLocks() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let holder = try MySQLConnection(configuration: configuration)
            let other = try MySQLConnection(configuration: configuration)
            let name = "stovepipe-test-\(UUID().uuidString)"
            #expect(try holder.query("SELECT GET_LOCK(\(name), \(5)) AS got").first?.int64("got") == 1)
            #expect(try other.query("SELECT GET_LOCK(\(name), \(0)) AS got").first?.int64("got") == 0)
            #expect(try holder.query("SELECT RELEASE_LOCK(\(name)) AS released").first?.int64("released") == 1)
            #expect(try other.query("SELECT GET_LOCK(\(name), \(5)) AS got").first?.int64("got") == 1)
            #expect(try other.query("SELECT RELEASE_LOCK(\(name))").first?.int64(0) == 1)
        }
    }

    @Test("withTransaction commits on success and rolls back on error")
    func transactions() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.execute("CREATE TABLE x (id INT PRIMARY KEY) ENGINE=InnoDB")
            try connection.withTransaction { connection in
                #expect(connection.isInTransaction)
                try connection.execute("INSERT INTO x VALUES (\(1))")
            }
            #expect(!connection.isInTransaction)
            struct Abort: Error {}
            #expect(throws: Abort.self) {
                try connection.withTransaction { connection in
                    try connection.execute("INSERT INTO x VALUES (\(2))")
                    throw Abort()
                }
            }
            #expect(!connection.isInTransaction)
            #expect(throws: MySQLError.self) {
                try connection.withTransaction { connection in
                    try connection.execute("INSERT INTO x VALUES (\(3))")
                    try connection.execute("INSERT INTO x VALUES (\(1))")
                }
            }
            let ids = try connection.query("SELECT id FROM x ORDER BY id").compactMap { $0.int64(0) }
            #expect(ids == [1])
            #expect(connection.isUsable)
        }
    }

    @Test("a killed connection reports a connection-lost code and is no longer usable")
    func killedConnection() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let victim = try MySQLConnection(configuration: configuration)
            let killer = try MySQLConnection(configuration: configuration)
            let id = try #require(try victim.query("SELECT CONNECTION_ID() AS id").first?.uint64("id"))
            #expect(id == victim.connectionID)
            try killer.execute(MySQLQuery(unsafeSQL: "KILL \(id)"))
            let error = try #require(throws: MySQLError.self) { try victim.query("SELECT 1") }
            #expect(error.isConnectionBroken, "got \(String(reflecting: error))")
            #expect(!victim.isUsable)
            let again = try #require(throws: MySQLError.self) { try victim.query("SELECT 1") }
            #expect(again.isConnectionBroken)
        }
    }
}
