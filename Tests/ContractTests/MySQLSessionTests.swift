import Domain
import Foundation
import MySQLBackend
import MySQLClient
import TestSupport
import Testing

/// Session settings a server's own configuration would otherwise override for every application connection.
@Suite("MySQL session settings against a server's init_connect", .enabled(if: privateServerSuitesRun), .serialized)
struct MySQLSessionTests {
    // On a server of its own: init_connect is global, and it would change the sessions of the suites running beside.
    @Test(
        "under init_connect = 'SET NAMES utf8' or 'latin1', sessions still speak utf8mb4 and a 4-byte URI round-trips",
        arguments: ["utf8", "latin1"])
    func charsetAfterInitConnect(_ serverCharset: String) async throws {
        try await withPrivateServer { server, url in
            try await offPool { try Self.exerciseCharset(serverCharset, server: server, url: url) }
        }
    }

    @Test("on a server whose global sql_mode is empty, sessions are strict: an over-long value fails instead of being cut")
    func strictAfterEmptyGlobalSQLMode() async throws {
        try await withPrivateServer { server, url in
            try await offPool {
                let admin = try MySQLConnection(
                    configuration: MySQLConfiguration(url: "mysql://root@/?socket=\(server.directory.path)/sock"))
                defer { admin.close() }
                try admin.execute("CREATE DATABASE session CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                // Older MySQL defaults and some managed databases run without strict mode.
                try admin.executeScript(unsafeSQL: "SET GLOBAL sql_mode = ''")
                var configuration = try MySQLConfiguration(url: url)
                configuration.database = "session"
                let connection = try MySQLConnection(configuration: configuration)
                defer { connection.close() }
                let mode = try connection.query("SELECT @@SESSION.sql_mode").first?.string(0) ?? ""
                for required in ["STRICT_ALL_TABLES", "NO_ENGINE_SUBSTITUTION"] {
                    #expect(mode.split(separator: ",").contains(Substring(required)), "sql_mode is '\(mode)'")
                }
                try connection.execute("CREATE TABLE t (v VARCHAR(4) NOT NULL)")
                let error = try #require(throws: MySQLError.self) { try connection.execute("INSERT INTO t VALUES (\("abcdef"))") }
                #expect(error.code.rawValue == 1406, "\(String(reflecting: error))")
                #expect(try connection.query("SELECT COUNT(*) FROM t").first?.uint64(0) == 0, "a cut value was stored")
            }
        }
    }

    private static func exerciseCharset(_ serverCharset: String, server: PrivateServer, url: String) throws {
        // Root over the private socket: init_connect runs for users without SUPER (or CONNECTION ADMIN), which
        // ALL PRIVILEGES ON *.* grants the test user, so the application's user here is one without them.
        let admin = try MySQLConnection(configuration: MySQLConfiguration(url: "mysql://root@/?socket=\(server.directory.path)/sock"))
        defer { admin.close() }
        try admin.execute("CREATE DATABASE session CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        try admin.execute("CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-password'")
        try admin.execute("GRANT ALL PRIVILEGES ON session.* TO 'app'@'127.0.0.1'")
        // A setting many servers carry from older guides; the client asked for utf8mb4 in its handshake.
        try admin.executeScript(unsafeSQL: "SET GLOBAL init_connect = 'SET NAMES \(serverCharset)'")

        var configuration = try MySQLConfiguration(url: url)
        configuration.user = "app"
        configuration.password = "app-password"
        configuration.database = "session"
        let connection = try MySQLConnection(configuration: configuration)
        defer { connection.close() }
        let session = try #require(
            try connection.query(
                "SELECT @@character_set_client, @@character_set_connection, @@character_set_results, @@time_zone"
            ).first)
        #expect(
            (0..<4).map { session.string($0) } == ["utf8mb4", "utf8mb4", "utf8mb4", "+00:00"],
            "init_connect ran, but the session is not utf8mb4 in UTC")

        let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
        defer { storage.close() }
        try storage.migrator.migrate()
        let queue = try QueueName("app/main")
        // Git branch names may hold any UTF-8; the URI embeds the ref.
        let uri = SourceURI("git://app/refs/heads/fëature-🚀#0123456789abcdef")
        let request = Request(
            id: RequestID(queue: queue, number: 1), uri: uri, createdAt: Date(timeIntervalSince1970: 1_700_000_000))
        try storage.requests.create(request)
        try storage.requestURIs.create(queue: queue, uri: uri, id: request.id)
        #expect(try storage.requests.get(request.id).uri == uri)
        #expect(try storage.requestURIs.id(queue: queue, uri: uri) == request.id)
        // Stored as utf8mb4, not as question marks or as bytes re-read in another character set.
        let stored = try connection.query("SELECT HEX(uri) FROM requests WHERE n = \(1)").first?.string(0)
        #expect(stored == uri.rawValue.utf8.map { String(format: "%02X", $0) }.joined())
    }
}
