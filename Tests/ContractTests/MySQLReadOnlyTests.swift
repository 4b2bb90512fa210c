import Domain
import Foundation
import MySQLBackend
import MySQLClient
import TestSupport
import Testing

/// A server that turns read-only under the pool, as a former primary does after a managed database's failover.
@Suite("MySQL server turned read-only", .enabled(if: privateServerSuitesRun), .serialized)
struct MySQLReadOnlyTests {
    @Test("a write refused as read-only (1290) is retryable and its connection discarded; writes resume afterwards")
    func readOnlyServer() async throws {
        try await withPrivateServer { server, url in try await Self.exercise(server, url: url) }
    }

    private static func exercise(_ server: PrivateServer, url: String) async throws {
        // Root over the private socket: the test user may not grant.
        let admin = try MySQLConfiguration(url: "mysql://root@/?socket=\(server.directory.path)/sock")
        // A user without READ_ONLY ADMIN (which ALL PRIVILEGES grants), as an application's user is.
        try await offPool {
            let connection = try MySQLConnection(configuration: admin)
            defer { connection.close() }
            try connection.execute("CREATE DATABASE failover CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            try connection.execute("CREATE USER 'writer'@'127.0.0.1' IDENTIFIED BY 'writer-password'")
            try connection.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON failover.* TO 'writer'@'127.0.0.1'")
        }
        var owner = try MySQLConfiguration(url: url)
        owner.database = "failover"
        let migrating = MySQLStorage(configuration: owner, logger: silentLogger)
        defer { migrating.close() }
        _ = try await offPool { try migrating.migrator.migrate() }

        var writer = owner
        writer.user = "writer"
        writer.password = "writer-password"
        let storage = MySQLStorage(
            configuration: writer, poolConfiguration: MySQLPool.Configuration(maxConnections: 2, acquireTimeout: .seconds(5)),
            logger: silentLogger)
        defer { storage.close() }
        let queue = try QueueName("app/main")
        @Sendable func request(_ number: UInt64) -> Request {
            Request(
                id: RequestID(queue: queue, number: number), uri: SourceURI("git://app/main/\(number)"),
                createdAt: Date(timeIntervalSince1970: 1_700_000_000))
        }

        try await offPool { try storage.requests.create(request(1)) }
        #expect(storage.pool.statistics.totalDiscarded == 0)

        try await setReadOnly(true, admin)
        let refused = try await offPool { () -> BackendError? in
            backendError { () throws(BackendError) in try storage.requests.create(request(2)) }
        }
        guard case .unavailable(let retryable, let detail) = refused else {
            Issue.record("a write to a read-only server answered \(String(describing: refused))")
            return
        }
        #expect(retryable, "a failover is over in seconds; the caller should retry")
        #expect(detail.contains("1290"), "\(detail)")
        // A new connection resolves the host name again and so reaches the new primary.
        #expect(storage.pool.statistics.totalDiscarded == 1, "the connection to the read-only server was kept")
        // Reads still work on a read-only server.
        #expect(try await offPool { try storage.requests.get(request(1).id).uri } == SourceURI("git://app/main/1"))

        try await setReadOnly(false, admin)
        try await offPool { try storage.requests.create(request(2)) }
        #expect(try await offPool { try storage.requests.get(request(2).id).uri } == SourceURI("git://app/main/2"))
    }

    private static func setReadOnly(_ readOnly: Bool, _ admin: MySQLConfiguration) async throws {
        try await offPool {
            let connection = try MySQLConnection(configuration: admin)
            defer { connection.close() }
            try connection.execute(MySQLQuery(unsafeSQL: "SET GLOBAL read_only = \(readOnly ? 1 : 0)"))
        }
    }
}
