import Foundation
import MySQLClient
import TestSupport
import Testing

@Suite("MySQLConnection recovery after server-side errors", .enabled(if: LiveDatabase.shouldRun), .serialized)
struct MySQLRecoveryTests {
    @Test("a query cut off by the read timeout breaks the connection, and the pool hands out a fresh one")
    func readTimeoutBreaksTheConnection() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            var configuration = configuration
            configuration.readTimeoutSeconds = 1
            let connection = try MySQLConnection(configuration: configuration)
            let error = try #require(throws: MySQLError.self) { try connection.query("SELECT SLEEP(\(3)) AS s") }
            #expect(error.isConnectionBroken, "got \(String(reflecting: error))")
            #expect(!connection.isUsable)

            // Cut off while the rows are read (mysql_stmt_store_result): the first row fills the server's
            // network buffer and is sent, the second sleeps past the timeout.
            let reader = try MySQLConnection(configuration: configuration)
            let rowsError = try #require(throws: MySQLError.self) {
                try reader.query(
                    """
                    SELECT IF(n = 1, REPEAT('x', 200000), SLEEP(\(3))) AS v
                    FROM (SELECT 1 AS n UNION ALL SELECT 2) AS t
                    """)
            }
            #expect(rowsError.isConnectionBroken, "got \(String(reflecting: rowsError))")
            #expect(!reader.isUsable)

            let pool = MySQLPool(
                connection: configuration, configuration: .init(maxConnections: 1), logger: quietLogger)
            defer { pool.close() }
            let firstID = try pool.withConnection { $0.connectionID }
            #expect(throws: MySQLError.self) { try pool.withConnection { try $0.query("SELECT SLEEP(\(3)) AS s") } }
            let (secondID, one) = try pool.withConnection { connection in
                (connection.connectionID, try connection.query("SELECT \(1) AS n").first?.int64("n"))
            }
            #expect(secondID != firstID)
            #expect(one == 1)
            #expect(pool.statistics.totalDiscarded == 1)
        }
    }

    @Test("empty text is not NULL, a 1 MB MEDIUMTEXT reads whole, and BIGINT UNSIGNED keeps its maximum")
    func valueEdges() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.execute("CREATE TABLE e (id INT PRIMARY KEY, t MEDIUMTEXT NULL, u BIGINT UNSIGNED NULL)")
            let megabyte = String(repeating: "0123456789abcdef", count: 65_536)
            let noText: String? = nil
            try connection.execute("INSERT INTO e VALUES (1, \(""), \(UInt64.max)), (2, \(noText), \(UInt64(0)))")
            try connection.execute("INSERT INTO e VALUES (3, \(megabyte), NULL)")
            let rows = try connection.query("SELECT t, u FROM e ORDER BY id")
            try #require(rows.count == 3)
            #expect(rows[0][0] == .string("") && !rows[0].isNull(0))
            #expect(rows[0].uint64("u") == UInt64.max)
            #expect(rows[1].isNull(0) && rows[1].string("t") == nil)
            #expect(rows[1].uint64("u") == 0)
            #expect(rows[2].string("t")?.utf8.count == megabyte.utf8.count)
            let intact = rows[2].string("t") == megabyte
            #expect(intact)
            #expect(rows[2].isNull(1))
            let matched = try connection.query("SELECT id FROM e WHERE u = \(UInt64.max)")
            #expect(matched.first?.int64("id") == 1)
        }
    }

    @Test("cached statements keep working across DROP TABLE and a CREATE TABLE with other columns")
    func tableDroppedAndRecreated() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            let admin = try MySQLConnection(configuration: configuration)
            try admin.execute("CREATE TABLE d (id BIGINT PRIMARY KEY, v INT)")
            func insert(_ id: Int64) throws(MySQLError) { try connection.execute("INSERT INTO d (id) VALUES (\(id))") }
            func select() throws(MySQLError) -> [MySQLRow] { try connection.query("SELECT * FROM d WHERE id >= \(Int64(0)) ORDER BY id") }
            try insert(1)
            #expect(try select().first?.columns.map(\.name) == ["id", "v"])
            try admin.execute("DROP TABLE d")
            let gone = try #require(throws: MySQLError.self) { try select() }
            #expect(gone.code == .noSuchTable)
            #expect(throws: MySQLError.self) { try insert(2) }
            try admin.execute("CREATE TABLE d (id BIGINT PRIMARY KEY, a VARCHAR(5) DEFAULT 'a', b INT DEFAULT 9)")
            try insert(3)
            let rows = try select()
            #expect(rows.count == 1)
            #expect(rows.first?.columns.map(\.name) == ["id", "a", "b"])
            #expect(rows.first?.string("a") == "a" && rows.first?.int64("b") == 9)
            #expect(connection.isUsable)
        }
    }

    @Test("a lease that throws inside a transaction after SELECT ... FOR UPDATE leaves no lock or row behind")
    func leakedTransactionReleasesLocks() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            struct Abort: Error {}
            let pool = MySQLPool(connection: configuration, configuration: .init(maxConnections: 1), logger: quietLogger)
            defer { pool.close() }
            let other = try MySQLConnection(configuration: configuration)
            try other.execute("CREATE TABLE k (id BIGINT PRIMARY KEY, v INT) ENGINE=InnoDB")
            try other.execute("INSERT INTO k VALUES (1, 0)")
            #expect(throws: Abort.self) {
                try pool.withConnection { connection in
                    try connection.executeScript(unsafeSQL: "START TRANSACTION")
                    try connection.execute("INSERT INTO k VALUES (\(2), 0)")
                    _ = try connection.query("SELECT v FROM k WHERE id = \(1) FOR UPDATE")
                    throw Abort()
                }
            }
            // NOWAIT fails at once (1205) if the lease's lock on row 1 survived.
            try other.executeScript(unsafeSQL: "START TRANSACTION")
            #expect(try other.query("SELECT v FROM k WHERE id = \(1) FOR UPDATE NOWAIT").count == 1)
            try other.executeScript(unsafeSQL: "ROLLBACK")
            let (count, inTransaction) = try pool.withConnection { connection in
                (try connection.query("SELECT COUNT(*) FROM k").first?.int64(0), connection.isInTransaction)
            }
            #expect(count == 1)
            #expect(!inTransaction)
            #expect(pool.statistics.totalOpened == 1)
        }
    }

    @Test("a CALL whose later statement fails throws, and the connection and the cached CALL stay in sync")
    func procedureFailingAfterRows() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            var configuration = configuration
            // Bounds a desynchronised read to seconds instead of the default 30.
            configuration.readTimeoutSeconds = 5
            let connection = try MySQLConnection(configuration: configuration)
            try connection.executeScript(
                unsafeSQL: "CREATE PROCEDURE half(IN fail INT) BEGIN SELECT 1 AS a; IF fail = 1 THEN SELECT * FROM missing; END IF; SELECT 2 AS b; END")
            let error = try #require(throws: MySQLError.self) { try connection.query("CALL half(\(Int64(1)))") }
            #expect(error.code == .noSuchTable, "got \(String(reflecting: error))")
            #expect(connection.isUsable)
            #expect(try connection.query("SELECT \(1) + 1 AS n").first?.int64("n") == 2)
            #expect(try connection.query("CALL half(\(Int64(0)))").first?.int64("a") == 1)
            #expect(try connection.query("SELECT \(2) + 1 AS n").first?.int64("n") == 3)
            #expect(throws: MySQLError.self) { try connection.query("CALL half(\(Int64(1)))") }
            #expect(try connection.query("CALL half(\(Int64(0)))").first?.int64("a") == 1)
            #expect(connection.isUsable)
        }
    }

    @Test("a cached SELECT * names its columns anew after ALTER TABLE renames or swaps them")
    func cachedStatementAfterRename() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            let admin = try MySQLConnection(configuration: configuration)
            try admin.execute("CREATE TABLE rn (id BIGINT PRIMARY KEY, a INT, b INT)")
            try admin.execute("INSERT INTO rn VALUES (1, 10, 20)")
            func select() throws(MySQLError) -> MySQLRow? { try connection.query("SELECT * FROM rn WHERE id = \(1)").first }
            #expect(try select()?.int64("a") == 10)

            try admin.execute("ALTER TABLE rn RENAME COLUMN a TO c")
            let renamed = try select()
            #expect(renamed?.columns.map(\.name) == ["id", "c", "b"])
            #expect(renamed?.int64("c") == 10)

            // Same count and types, names swapped: read by the old names, each value came back under the other's.
            try admin.execute("ALTER TABLE rn RENAME COLUMN c TO x")
            try admin.execute("ALTER TABLE rn RENAME COLUMN b TO c")
            try admin.execute("ALTER TABLE rn RENAME COLUMN x TO b")
            let swapped = try select()
            #expect(swapped?.columns.map(\.name) == ["id", "b", "c"])
            #expect(swapped?.int64("b") == 10 && swapped?.int64("c") == 20)
        }
    }

    @Test("a lease whose dead idle connection cannot be replaced (connect refused) gives its permit back")
    func failedReplacementFreesThePermit() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let admin = try MySQLConnection(configuration: configuration)
            let user = "capped_\(configuration.database ?? "x")".prefix(60)
            let password = "capped-pw"
            try admin.executeScript(
                unsafeSQL: "CREATE USER '\(user)'@'%' IDENTIFIED BY '\(password)' WITH MAX_USER_CONNECTIONS 2")
            defer { try? admin.executeScript(unsafeSQL: "DROP USER '\(user)'@'%'") }
            // No grants (the test user has no GRANT OPTION): USAGE is enough to connect and SELECT 1.
            var capped = configuration
            capped.user = String(user)
            capped.password = password
            capped.database = nil

            let pool = MySQLPool(
                connection: capped, configuration: .init(maxConnections: 1, acquireTimeout: .seconds(2), pingAfterIdle: .zero),
                logger: quietLogger)
            defer { pool.close() }
            let pooledID = try pool.withConnection { $0.connectionID }
            let other = try MySQLConnection(configuration: capped)
            try admin.execute(MySQLQuery(unsafeSQL: "KILL \(pooledID)"))
            // The server counts the killed session until its thread ends; wait until the freed place can be taken.
            let deadline = ContinuousClock.now + .seconds(30)
            var filler: MySQLConnection?
            while filler == nil && ContinuousClock.now < deadline {
                filler = try? MySQLConnection(configuration: capped)
            }
            try #require(filler != nil)

            // The idle connection fails its ping, and its replacement is refused (ER_USER_LIMIT_REACHED).
            let error = try #require(throws: MySQLError.self) { try pool.withConnection { _ in 0 } }
            #expect(error.code == MySQLErrorCode(rawValue: 1226), "got \(String(reflecting: error))")
            #expect(pool.statistics.inUse == 0 && pool.statistics.idle == 0)
            #expect(pool.statistics.totalDiscarded == 1)

            filler?.close()
            other.close()
            // The permit came back: with a place free again the next lease connects instead of timing out.
            var answer: Int64?
            while answer == nil && ContinuousClock.now < deadline {
                answer = try? pool.withConnection { try $0.query("SELECT \(1) AS n").first?.int64("n") }
            }
            #expect(answer == 1)
            #expect(pool.statistics.totalAcquireTimeouts == 0)
            #expect(pool.statistics.inUse == 0 && pool.statistics.idle == 1)
        }
    }

    @Test("a cached SELECT whose columns did not change is not prepared again, however often it runs")
    func cachedStatementNotPreparedAgain() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let connection = try MySQLConnection(configuration: configuration)
            try connection.execute("CREATE TABLE c (id BIGINT PRIMARY KEY, name VARCHAR(20), n INT)")
            try connection.execute("INSERT INTO c VALUES (1, 'one', 1), (2, 'two', 2)")
            func prepares() throws(MySQLError) -> Int64? {
                try connection.query(
                    "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'COM_STMT_PREPARE'"
                ).first?.string(0).flatMap { Int64($0) }
            }
            func select(_ id: Int64) throws(MySQLError) -> String? {
                try connection.query("SELECT * FROM c WHERE id = \(id)").first?.string("name")
            }
            #expect(try select(1) == "one")
            _ = try prepares()
            let before = try #require(try prepares())
            for _ in 0..<5 { #expect(try select(2) == "two") }
            #expect(try prepares() == before)
            // The counter does count this connection's prepares.
            _ = try connection.query("SELECT \(1) AS other")
            #expect(try prepares() == before + 1)
        }
    }
}
