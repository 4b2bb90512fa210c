import Foundation
import MySQLClient
import Testing

@Suite("MySQLConfiguration URL parsing")
struct MySQLConfigurationTests {
    @Test("a full URL yields every field, percent-decoded")
    func fullURL() throws {
        let configuration = try MySQLConfiguration(
            url: "mysql://app%20user:p%40ss%3Aw%2Fd%3F@db.example.com:3307/stove%2Dpipe"
                + "?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ca.pem&connect-timeout=3&read-timeout=7&write-timeout=9")
        #expect(configuration.user == "app user")
        #expect(configuration.password == "p@ss:w/d?")
        #expect(configuration.host == "db.example.com")
        #expect(configuration.port == 3307)
        #expect(configuration.database == "stove-pipe")
        #expect(configuration.socketPath == nil)
        #expect(configuration.tlsMode == .verifyIdentity)
        #expect(configuration.tlsCAPath == "/etc/ca.pem")
        #expect(configuration.connectTimeoutSeconds == 3)
        #expect(configuration.readTimeoutSeconds == 7)
        #expect(configuration.writeTimeoutSeconds == 9)
    }

    @Test("defaults: port 3306, no password, no database, TLS off, finite timeouts")
    func defaults() throws {
        let configuration = try MySQLConfiguration(url: "mysql://root@127.0.0.1/")
        #expect(configuration.user == "root")
        #expect(configuration.password == nil)
        #expect(configuration.host == "127.0.0.1")
        #expect(configuration.port == 3306)
        #expect(configuration.database == nil)
        #expect(configuration.tlsMode == .disabled)
        #expect(configuration.connectTimeoutSeconds > 0)
        #expect(configuration.readTimeoutSeconds > 0)
        #expect(configuration.writeTimeoutSeconds > 0)
        #expect(configuration.reportsMatchedRows == false)
        let withoutSlash = try MySQLConfiguration(url: "mysql://root:@localhost:13306")
        #expect(withoutSlash.password == "")
        #expect(withoutSlash.port == 13306)
        #expect(withoutSlash.database == nil)
    }

    @Test("ssl-mode REQUIRED is case-insensitive")
    func sslRequired() throws {
        let configuration = try MySQLConfiguration(url: "mysql://u@h/db?ssl-mode=required")
        #expect(configuration.tlsMode == .required)
    }

    @Test("a Unix socket comes from ?socket= with an empty host")
    func socket() throws {
        let configuration = try MySQLConfiguration(url: "mysql://root@/app?socket=%2Fvar%2Frun%2Fmysqld.sock")
        #expect(configuration.host == nil)
        #expect(configuration.socketPath == "/var/run/mysqld.sock")
        #expect(configuration.database == "app")
    }

    @Test("an IPv6 literal goes in brackets")
    func ipv6() throws {
        let configuration = try MySQLConfiguration(url: "mysql://root@[::1]:3310/db")
        #expect(configuration.host == "::1")
        #expect(configuration.port == 3310)
        #expect(configuration.redactedURL.contains("[::1]:3310"))
    }

    @Test(
        "malformed URLs are rejected with a specific error",
        arguments: [
            ("postgres://u@h/db", MySQLConfigurationError.notAMySQLURL),
            ("mysql://", .notAMySQLURL),
            ("mysql://h/db", .missingUser),
            ("mysql://:pw@h/db", .missingUser),
            ("mysql://u@/db", .missingHost),
            ("mysql://u@h:0/db", .invalidPort),
            ("mysql://u@h:70000/db", .invalidPort),
            ("mysql://u@h:abc/db", .invalidPort),
            ("mysql://u@h:+3306/db", .invalidPort),
            ("mysql://u@[::1/db", .invalidHost),
            ("mysql://u@h/a%2Fb", .invalidDatabaseName),
            ("mysql://u@h/db?sslmode=REQUIRED", .unknownParameter("sslmode")),
            ("mysql://u@h/db?ssl-mode=SOMETIMES", .invalidParameterValue(name: "ssl-mode")),
            ("mysql://u@h/db?connect-timeout=0", .invalidParameterValue(name: "connect-timeout")),
            ("mysql://u@h/db?read-timeout=", .invalidParameterValue(name: "read-timeout")),
            ("mysql://u@h/db?read-timeout=+30", .invalidParameterValue(name: "read-timeout")),
            ("mysql://u@h/db?connect-timeout=%2B5", .invalidParameterValue(name: "connect-timeout")),
            ("mysql://u@h/db?write-timeout=86401", .invalidParameterValue(name: "write-timeout")),
            ("mysql://u@h/db?read-timeout=2147484", .invalidParameterValue(name: "read-timeout")),
            ("mysql://u@h/db?ssl-ca=/ca.pem", .conflictingParameters("ssl-ca needs ssl-mode=REQUIRED or VERIFY_IDENTITY")),
            ("mysql://u@h/db?socket=/s.sock", .conflictingParameters("socket given together with a host")),
            ("mysql://u@h/db?ssl-mode=REQUIRED&ssl-mode=DISABLED", .conflictingParameters("ssl-mode given twice")),
        ])
    func rejected(url: String, expected: MySQLConfigurationError) {
        #expect(throws: expected) { try MySQLConfiguration(url: url) }
    }

    @Test("lock-wait-timeout defaults to 5 s or less below a short read-timeout, takes whole seconds from 1, and must stay below read-timeout")
    func lockWaitTimeout() throws {
        #expect(try MySQLConfiguration(url: "mysql://u@h/db").lockWaitTimeoutSeconds == 5)
        #expect(try MySQLConfiguration(url: "mysql://u@h/db?lock-wait-timeout=12").lockWaitTimeoutSeconds == 12)
        let shortReads = try MySQLConfiguration(url: "mysql://u@h/db?read-timeout=3&lock-wait-timeout=2")
        #expect(shortReads.lockWaitTimeoutSeconds == 2)
        for bad in ["0", "-1", "+4", "five", "1.5", "86401", "4294967296"] {
            #expect(throws: MySQLConfigurationError.invalidParameterValue(name: "lock-wait-timeout"), "\(bad)") {
                try MySQLConfiguration(url: "mysql://u@h/db?lock-wait-timeout=\(bad)")
            }
        }
        let tooLong = MySQLConfigurationError.conflictingParameters(
            "lock-wait-timeout (30 s) must be below read-timeout (30 s): a lock wait that long would end as a lost "
                + "connection; give a shorter lock-wait-timeout or a longer read-timeout")
        #expect(throws: tooLong) { try MySQLConfiguration(url: "mysql://u@h/db?lock-wait-timeout=30") }
        #expect(throws: MySQLConfigurationError.self) {
            try MySQLConfiguration(url: "mysql://u@h/db?read-timeout=4&lock-wait-timeout=4")
        }
        // Unless given, the lock wait stays below a short read timeout, and a read timeout of 1 s leaves the server's.
        #expect(try MySQLConfiguration(url: "mysql://u@h/db?read-timeout=5").lockWaitTimeoutSeconds == 4)
        #expect(try MySQLConfiguration(url: "mysql://u@h/db?read-timeout=2").lockWaitTimeoutSeconds == 1)
        #expect(try MySQLConfiguration(url: "mysql://u@h/db?read-timeout=1").lockWaitTimeoutSeconds == nil)
        #expect(try MySQLConfiguration(url: "mysql://u@h/db?read-timeout=6").lockWaitTimeoutSeconds == 5)
    }

    @Test("timeouts take whole seconds from 1 to a day, and a bad one says so")
    func timeoutRange() throws {
        #expect(
            throws: MySQLConfigurationError.conflictingParameters(
                "lock-wait-timeout (86400 s) must be below read-timeout (86400 s): a lock wait that long would end as a "
                    + "lost connection; give a shorter lock-wait-timeout")
        ) { try MySQLConfiguration(url: "mysql://u@h/db?read-timeout=86400&lock-wait-timeout=86400") }
        // No read-timeout can be longer than the longest lock-wait-timeout, whatever the read-timeout given.
        #expect(
            throws: MySQLConfigurationError.conflictingParameters(
                "lock-wait-timeout (86400 s) must be below read-timeout (30 s): a lock wait that long would end as a "
                    + "lost connection; give a shorter lock-wait-timeout")
        ) { try MySQLConfiguration(url: "mysql://u@h/db?lock-wait-timeout=86400") }
        #expect(
            throws: MySQLConfigurationError.conflictingParameters(
                "lock-wait-timeout (86399 s) must be below read-timeout (30 s): a lock wait that long would end as a "
                    + "lost connection; give a shorter lock-wait-timeout or a longer read-timeout")
        ) { try MySQLConfiguration(url: "mysql://u@h/db?lock-wait-timeout=86399") }
        let longest = try MySQLConfiguration(
            url: "mysql://u@h/db?connect-timeout=86400&read-timeout=86400&write-timeout=86400&lock-wait-timeout=86399")
        #expect(longest.connectTimeoutSeconds == 86400)
        #expect(longest.readTimeoutSeconds == 86400)
        #expect(longest.writeTimeoutSeconds == 86400)
        #expect(longest.lockWaitTimeoutSeconds == 86399)
        #expect(
            MySQLConfigurationError.invalidParameterValue(name: "read-timeout").description
                == "invalid MySQL URL: bad value for parameter 'read-timeout' (whole seconds, 1 to 86400)")
        #expect(
            MySQLConfigurationError.invalidParameterValue(name: "ssl-mode").description
                == "invalid MySQL URL: bad value for parameter 'ssl-mode'")
        #expect(throws: MySQLConfigurationError.unknownParameter("idle-timeout")) {
            try MySQLConfiguration(url: "mysql://u@h/db?idle-timeout")
        }
    }

    @Test("errors and descriptions never repeat the password")
    func passwordNeverEchoed() throws {
        let secret = "s3cr3t-Pa55"
        let badEscape = "mysql://u:\(secret)%zz@h/db"
        do {
            _ = try MySQLConfiguration(url: badEscape)
            Issue.record("a malformed percent escape was accepted")
        } catch {
            #expect(error == .invalidPercentEncoding(field: "password"))
            #expect(!error.description.contains(secret))
            #expect(!String(reflecting: error).contains(secret))
        }
        do {
            _ = try MySQLConfiguration(url: "mysql://u:\(secret)@h:99999/db")
            Issue.record("an out-of-range port was accepted")
        } catch {
            #expect(!error.description.contains(secret))
        }

        let configuration = try MySQLConfiguration(url: "mysql://u:\(secret)@h/db")
        #expect(configuration.password == secret)
        #expect(!configuration.description.contains(secret))
        #expect(!String(reflecting: configuration).contains(secret))
        #expect(!"\(configuration)".contains(secret))
        #expect(configuration.redactedURL == "mysql://u:***@h:3306/db")
    }
}

@Suite("MySQLQuery interpolation")
struct MySQLQueryTests {
    @Test("interpolated values become placeholders and binds, in order")
    func interpolation() {
        let id: Int64 = 42
        let name = "x'; DROP TABLE t; --"
        let missing: String? = nil
        let query: MySQLQuery = "SELECT * FROM t WHERE id = \(id) AND name = \(name) AND note <=> \(missing)"
        #expect(query.sql == "SELECT * FROM t WHERE id = ? AND name = ? AND note <=> ?")
        #expect(query.binds == [.int64(42), .string(name), .null])
        #expect(!query.description.contains("DROP"))
    }

    @Test("every bindable Swift type maps to its value")
    func bindableTypes() {
        let date = Date(timeIntervalSince1970: 1.5)
        let query: MySQLQuery =
            "\(1)\(Int32(-2))\(UInt64.max)\(UInt32(7))\(true)\(2.5)\("s"[...])\([UInt8]([1, 2]))\(date)\(MySQLValue.null)"
        #expect(
            query.binds == [
                .int64(1), .int64(-2), .uint64(.max), .uint64(7), .int64(1), .double(2.5), .string("s"),
                .bytes([1, 2]), .dateTime(MySQLDateTime(year: 1970, month: 1, day: 1, second: 1, microsecond: 500_000)),
                .null,
            ])
        #expect(query.sql == String(repeating: "?", count: 10))
    }

    @Test("identifiers are backtick-quoted with embedded backticks doubled")
    func identifiers() {
        let table = "we`ird"
        let query: MySQLQuery = "DROP TABLE \(identifier: table)"
        #expect(query.sql == "DROP TABLE `we``ird`")
        #expect(query.binds.isEmpty)
    }

    @Test("static pieces before and after an identifier keep their places, and values stay binds")
    func identifierBetweenValues() {
        let query: MySQLQuery = "SELECT \(1) FROM \(identifier: "t`x") WHERE id = \(7) AND k = 'a'"
        #expect(query.sql == "SELECT ? FROM `t``x` WHERE id = ? AND k = 'a'")
        #expect(query.binds == [.int64(1), .int64(7)])
    }

    @Test("plain literals and unsafeSQL carry no binds")
    func literals() {
        let literal: MySQLQuery = "SELECT 1"
        #expect(literal.sql == "SELECT 1" && literal.binds.isEmpty)
        let raw = MySQLQuery(unsafeSQL: "SELECT ?", binds: [.int64(1)])
        #expect(raw.sql == "SELECT ?" && raw.binds == [.int64(1)])
    }

    @Test("a literal and unsafeSQL with the same text and binds are equal queries and hash alike")
    func equalityByText() {
        let id: Int64 = 7
        let literal: MySQLQuery = "SELECT v FROM t WHERE id = \(id) AND (v > \(1))"
        let raw = MySQLQuery(unsafeSQL: "SELECT v FROM t WHERE id = ? AND (v > ?)", binds: [.int64(7), .int64(1)])
        #expect(literal == raw)
        #expect(Set([literal, raw]).count == 1)
        let other: MySQLQuery = "SELECT v FROM t WHERE id = \(id) AND (v > \(2))"
        #expect(literal != other)
    }

    @Test("bound values are never printed")
    func valueDescriptions() {
        #expect(MySQLValue.string("secret").description == "string(...)")
        #expect(MySQLValue.int64(99).description == "int64(...)")
    }
}

@Suite("MySQLError and MySQLErrorCode")
struct MySQLErrorTests {
    @Test("description is generic; message and code are available")
    func description() {
        let error = MySQLError(code: .duplicateEntry, sqlState: "23000", message: "duplicate entry for a unique key")
        #expect(error.description == "MySQLError(code: 1062, sqlState: 23000)")
        #expect(String(reflecting: error).contains("duplicate entry"))
    }

    @Test("catch matches a code by name, for untyped and typed throws")
    func patternMatching() {
        func untyped() throws { throw MySQLError(code: .deadlock, message: "") }
        func typed() throws(MySQLError) { throw MySQLError(code: .lockWaitTimeout, message: "") }
        var matched: [String] = []
        do { try untyped() } catch MySQLErrorCode.duplicateEntry { matched.append("dup") } catch MySQLErrorCode.deadlock {
            matched.append("deadlock")
        } catch { matched.append("other") }
        do { try typed() } catch MySQLErrorCode.lockWaitTimeout { matched.append("lockWait") } catch {
            matched.append("other")
        }
        #expect(matched == ["deadlock", "lockWait"])
        #expect(!(MySQLErrorCode.duplicateEntry ~= (CancellationError() as any Error)))
    }

    @Test("connection-lost codes and read-only are broken; statement-level and pool codes are not")
    func brokenCodes() {
        for code: UInt32 in [2002, 2003, 2006, 2013, 2055, 4031, 1927, 1153, 1159, 1290, 1047] {
            #expect(MySQLErrorCode(rawValue: code).isConnectionBroken, "code \(code)")
        }
        for code in [
            MySQLErrorCode.duplicateEntry, .deadlock, .lockWaitTimeout, .poolTimeout, .poolClosed, .syntaxError, .statementTimeout,
            .queryInterrupted,
        ] {
            #expect(!code.isConnectionBroken, "code \(code)")
        }
        #expect(MySQLErrorCode.deadlock.isTransient && MySQLErrorCode.lockWaitTimeout.isTransient)
        #expect(!MySQLErrorCode.duplicateEntry.isTransient)
    }
}

@Suite("MySQLDateTime")
struct MySQLDateTimeTests {
    @Test("converts to and from Date in UTC, with microseconds")
    func dateRoundTrip() {
        let epoch = MySQLDateTime(Date(timeIntervalSince1970: 0))
        #expect(epoch == MySQLDateTime(year: 1970, month: 1, day: 1))
        let leapDay = MySQLDateTime(year: 2024, month: 2, day: 29, hour: 23, minute: 59, second: 58, microsecond: 123_456)
        #expect(MySQLDateTime(leapDay.date) == leapDay)
        #expect(leapDay.description == "2024-02-29 23:59:58.123456")
        let beforeEpoch = MySQLDateTime(Date(timeIntervalSince1970: -1.25))
        #expect(beforeEpoch == MySQLDateTime(year: 1969, month: 12, day: 31, hour: 23, minute: 59, second: 58, microsecond: 750_000))
        #expect(MySQLDateTime(year: 2000, month: 1, day: 1).date.timeIntervalSince1970 == 946_684_800)
        #expect(epoch < leapDay)
    }

    @Test("a Date of whole microseconds survives the round trip bit for bit")
    func microsecondDatesRoundTrip() {
        var mismatches = 0
        for _ in 0..<10_000 {
            let micros = Double(Int64.random(in: 946_684_800_000_000...4_102_444_800_000_000))
            let date = Date(timeIntervalSince1970: micros / 1_000_000)
            if MySQLDateTime(date).date != date { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }
}
