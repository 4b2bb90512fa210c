import Domain
import Foundation
import MySQLBackend
import MySQLClient
import TestSupport
import Testing

/// Users with fewer privileges than `migrate` or `serve` need, as a production deployment's users may be.
@Suite("MySQL schema checks and users without privileges", .enabled(if: privateServerSuitesRun), .serialized)
struct MySQLPrivilegeTests {
    @Test("a serving user that may not read schema_migrations or a table is told so, not that migrations are pending")
    func servingUserWithoutPrivileges() async throws {
        try await withPrivateServer { server, url in
            let root = try Self.root(server)
            try await Self.admin(root) { connection in
                try connection.execute("CREATE DATABASE app CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                try connection.execute("CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-password'")
            }
            var owner = try MySQLConfiguration(url: url)
            owner.database = "app"
            let migrating = MySQLStorage(configuration: owner, logger: silentLogger)
            defer { migrating.close() }
            _ = try await offPool { try migrating.migrator.migrate() }
            // The application's tables, one by one, but not the bookkeeping: GRANT ... ON app.* cannot leave one out.
            let tables = ["requests", "request_uris", "queues", "counters", "topic_messages", "topic_partitions", "topic_replicas"]
            try await Self.admin(root) { connection in
                for table in tables {
                    try connection.execute(
                        MySQLQuery(unsafeSQL: "GRANT SELECT, INSERT, UPDATE, DELETE ON app.\(table) TO 'app'@'127.0.0.1'"))
                }
            }
            var app = owner
            app.user = "app"
            app.password = "app-password"
            let serving = MySQLStorage(configuration: app, logger: silentLogger)
            defer { serving.close() }

            let bookkeeping = await offPoolProblem { () throws(BackendError) in _ = try serving.migrator.status() }
            #expect(bookkeeping?.contains("table `schema_migrations`") == true, "\(bookkeeping ?? "nil")")
            #expect(bookkeeping?.contains("SELECT denied") == true, "\(bookkeeping ?? "nil")")
            #expect(bookkeeping?.contains("pending") == false, "\(bookkeeping ?? "nil")")
            let startUp = await offPoolProblem { () throws(BackendError) in try serving.migrator.requireUpToDate() }
            #expect(startUp == bookkeeping)
            // A privilege other than SELECT lists the table in information_schema; reading it is still refused.
            try await Self.admin(root) { try $0.execute("GRANT INSERT ON app.schema_migrations TO 'app'@'127.0.0.1'") }
            let listed = await offPoolProblem { () throws(BackendError) in _ = try serving.migrator.status() }
            #expect(listed?.contains("table `schema_migrations`") == true, "\(listed ?? "nil")")
            #expect(listed?.contains("SELECT denied") == true, "\(listed ?? "nil")")

            try await Self.admin(root) { connection in
                try connection.execute("GRANT SELECT ON app.schema_migrations TO 'app'@'127.0.0.1'")
                try connection.execute("REVOKE ALL PRIVILEGES ON app.counters FROM 'app'@'127.0.0.1'")
            }
            #expect(try await offPool { try serving.migrator.status() } == .current)
            let table = await offPoolProblem { () throws(BackendError) in try serving.migrator.requireUpToDate() }
            #expect(table?.contains("table `counters`") == true, "\(table ?? "nil")")
            #expect(table?.contains("SELECT denied") == true, "\(table ?? "nil")")
            #expect(table?.contains("does not exist") == false, "\(table ?? "nil")")
            // Writes without reads: information_schema lists every column, and every read would fail.
            try await Self.admin(root) { connection in
                try connection.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON app.counters TO 'app'@'127.0.0.1'")
                try connection.execute("REVOKE SELECT ON app.requests FROM 'app'@'127.0.0.1'")
            }
            let unreadable = await offPoolProblem { () throws(BackendError) in try serving.migrator.requireUpToDate() }
            #expect(unreadable?.contains("table `requests`") == true, "\(unreadable ?? "nil")")
            #expect(unreadable?.contains("SELECT denied") == true, "\(unreadable ?? "nil")")
        }
    }

    @Test("start-up refuses a user that may read but not write, naming the privilege; grants through a wildcard or a role serve")
    func servingUserWithoutWritePrivileges() async throws {
        try await withPrivateServer { server, url in
            let root = try Self.root(server)
            try await Self.admin(root) { connection in
                try connection.execute("CREATE DATABASE app_1 CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                try connection.execute("CREATE USER 'reader'@'127.0.0.1' IDENTIFIED BY 'reader-password'")
                try connection.execute("GRANT SELECT ON app_1.* TO 'reader'@'127.0.0.1'")
            }
            var owner = try MySQLConfiguration(url: url)
            owner.database = "app_1"
            let migrating = MySQLStorage(configuration: owner, logger: silentLogger)
            defer { migrating.close() }
            _ = try await offPool { try migrating.migrator.migrate() }
            var reader = owner
            reader.user = "reader"
            reader.password = "reader-password"
            let serving = MySQLStorage(configuration: reader, logger: silentLogger)
            defer { serving.close() }

            #expect(try await offPool { try serving.migrator.status() } == .current)
            let refused = await offPoolProblem { () throws(BackendError) in try serving.migrator.requireUpToDate() }
            #expect(refused?.contains("table `requests`") == true, "\(refused ?? "nil")")
            #expect(refused?.contains("INSERT denied") == true, "\(refused ?? "nil")")
            #expect(refused?.contains("'reader'@'127.0.0.1'") == true, "\(refused ?? "nil")")
            #expect(refused?.contains("reader-password") == false, "\(refused ?? "nil")")
            // `migrate` checks the shape only: its user may hold DDL privileges and none on the application's rows.
            #expect(try await offPool { try serving.migrator.requireUpToDate(checkingWrites: false) } == [])

            // Table by table: the first privilege a table lacks is named.
            try await Self.admin(root) { connection in
                try connection.execute("GRANT INSERT, UPDATE ON app_1.requests TO 'reader'@'127.0.0.1'")
                try connection.execute("GRANT INSERT ON app_1.request_uris TO 'reader'@'127.0.0.1'")
            }
            let update = await offPoolProblem { () throws(BackendError) in try serving.migrator.requireUpToDate() }
            #expect(update?.contains("table `request_uris`") == true, "\(update ?? "nil")")
            #expect(update?.contains("UPDATE denied") == true, "\(update ?? "nil")")

            // A read-only server (a replica) refuses every write whatever the grants: nothing to learn, nothing refused.
            try await Self.admin(root) { try $0.execute(MySQLQuery(unsafeSQL: "SET GLOBAL read_only = 1")) }
            let readOnly = await offPoolProblem { () throws(BackendError) in try serving.migrator.requireUpToDate() }
            #expect(readOnly == nil, "\(readOnly ?? "nil")")
            try await Self.admin(root) { try $0.execute(MySQLQuery(unsafeSQL: "SET GLOBAL read_only = 0")) }

            // The server's answer, not a reading of the grants: a pattern grant (`app\_%`) does not add to an exact one
            // for app_1 (the server uses the most specific database row only), so the user still may not write...
            try await Self.admin(root) { connection in
                try connection.execute(MySQLQuery(unsafeSQL: #"GRANT INSERT, UPDATE, DELETE ON `app\_%`.* TO 'reader'@'127.0.0.1'"#))
            }
            let shadowed = await offPoolProblem { () throws(BackendError) in try serving.migrator.requireUpToDate() }
            #expect(shadowed?.contains("UPDATE denied") == true, "\(shadowed ?? "nil")")
            let queue = try QueueName("q")
            let write = await offPoolProblem { () throws(BackendError) in try serving.queues.create(Queue(name: queue)) }
            #expect(write?.contains("1142") == true, "\(write ?? "nil")")
            // ...while a user whose only grant is the pattern's may, and serves.
            try await Self.admin(root) { connection in
                try connection.execute("CREATE USER 'patterned'@'127.0.0.1' IDENTIFIED BY 'patterned-password'")
                try connection.execute(
                    MySQLQuery(unsafeSQL: #"GRANT SELECT, INSERT, UPDATE, DELETE ON `app\_%`.* TO 'patterned'@'127.0.0.1'"#))
            }
            var patterned = owner
            patterned.user = "patterned"
            patterned.password = "patterned-password"
            let withPattern = MySQLStorage(configuration: patterned, logger: silentLogger)
            defer { withPattern.close() }
            let wildcard = await offPoolProblem { () throws(BackendError) in try withPattern.migrator.requireUpToDate() }
            #expect(wildcard == nil, "\(wildcard ?? "nil")")
            try await offPool { try withPattern.queues.create(Queue(name: queue)) }

            // A default role's privileges are the user's from its first statement on.
            try await Self.admin(root) { connection in
                try connection.execute("CREATE ROLE writer")
                try connection.execute("GRANT INSERT, UPDATE, DELETE ON app_1.* TO writer")
                try connection.execute("CREATE USER 'roled'@'127.0.0.1' IDENTIFIED BY 'roled-password'")
                try connection.execute("GRANT SELECT ON app_1.* TO 'roled'@'127.0.0.1'")
                try connection.execute("GRANT writer TO 'roled'@'127.0.0.1'")
                try connection.execute(MySQLQuery(unsafeSQL: "SET DEFAULT ROLE writer FOR 'roled'@'127.0.0.1'"))
            }
            var roled = owner
            roled.user = "roled"
            roled.password = "roled-password"
            let withRole = MySQLStorage(configuration: roled, logger: silentLogger)
            defer { withRole.close() }
            let role = await offPoolProblem { () throws(BackendError) in try withRole.migrator.requireUpToDate() }
            #expect(role == nil, "\(role ?? "nil")")
        }
    }

    @Test("readiness of a user whose privileges were revoked while serving says permission denied, naming no user or database")
    func readinessAfterRevoke() async throws {
        try await withPrivateServer { server, url in
            let root = try Self.root(server)
            try await Self.admin(root) { connection in
                try connection.execute("CREATE DATABASE app CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                try connection.execute("CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-password'")
            }
            var owner = try MySQLConfiguration(url: url)
            owner.database = "app"
            let migrating = MySQLStorage(configuration: owner, logger: silentLogger)
            defer { migrating.close() }
            _ = try await offPool { try migrating.migrator.migrate() }
            // A table grant: its revoke holds for open sessions from their next statement, while a database grant's
            // holds only from their next USE (MySQL manual, "When Privilege Changes Take Effect").
            try await Self.admin(root) { try $0.execute("GRANT SELECT ON app.schema_migrations TO 'app'@'127.0.0.1'") }
            var app = owner
            app.user = "app"
            app.password = "app-password"
            let serving = MySQLStorage(configuration: app, logger: silentLogger)
            defer { serving.close() }
            #expect(try await offPool { serving.probeReadiness() } == .answered(.current))

            // On the connection the first probe opened: the read of schema_migrations is refused (1142).
            try await Self.admin(root) { try $0.execute("REVOKE SELECT ON app.schema_migrations FROM 'app'@'127.0.0.1'") }
            #expect(try await offPool { serving.probeReadiness() } == .permissionDenied)
            // On a new connection: the server refuses the database itself (1044).
            let fresh = MySQLStorage(configuration: app, logger: silentLogger)
            defer { fresh.close() }
            #expect(try await offPool { fresh.probeReadiness() } == .permissionDenied)
            // A wrong password (1045) as well; a server that is gone is not a permission problem.
            var wrong = app
            wrong.password = "not-the-password"
            let denied = MySQLStorage(configuration: wrong, logger: silentLogger)
            defer { denied.close() }
            #expect(try await offPool { denied.probeReadiness() } == .permissionDenied)
            var nowhere = app
            nowhere.host = "127.0.0.1"
            nowhere.port = 1
            nowhere.socketPath = nil
            let gone = MySQLStorage(configuration: nowhere, logger: silentLogger)
            defer { gone.close() }
            #expect(try await offPool { gone.probeReadiness() } == .unavailable)
        }
    }

    @Test("migrate by a user without CREATE names the privilege and creates nothing; needs none on a current schema; refuses a read-only server")
    func migratingUserWithoutCreate() async throws {
        try await withPrivateServer { server, url in
            let root = try Self.root(server)
            try await Self.admin(root) { connection in
                try connection.execute("CREATE DATABASE app CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                try connection.execute("CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-password'")
                try connection.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO 'app'@'127.0.0.1'")
            }
            var owner = try MySQLConfiguration(url: url)
            owner.database = "app"
            var app = owner
            app.user = "app"
            app.password = "app-password"
            let dmlOnly = MySQLStorage(configuration: app, logger: silentLogger)
            defer { dmlOnly.close() }

            let refused = await offPoolProblem { () throws(BackendError) in _ = try dmlOnly.migrator.migrate() }
            #expect(refused?.contains("schema_migrations") == true, "\(refused ?? "nil")")
            #expect(refused?.contains("CREATE command denied") == true, "\(refused ?? "nil")")
            let created = try await Self.admin(root) { connection in
                try connection.query("SHOW TABLES FROM app").compactMap { $0.string(0) }
            }
            #expect(created.isEmpty)

            let migrating = MySQLStorage(configuration: owner, logger: silentLogger)
            defer { migrating.close() }
            _ = try await offPool { try migrating.migrator.migrate() }
            // A deployment that runs migrate with the application's own user before every start: nothing to do.
            #expect(try await offPool { try dmlOnly.migrator.migrate() } == [])

            // A replica (read_only) refuses DDL from a user without READ_ONLY ADMIN; when nothing is pending, none is sent.
            try await Self.admin(root) { try $0.execute(MySQLQuery(unsafeSQL: "SET GLOBAL read_only = 1")) }
            #expect(try await offPool { try dmlOnly.migrator.migrate() } == [])
            try await Self.admin(root) { connection in
                try connection.execute("DELETE FROM app.schema_migrations WHERE version = 102")
                try connection.execute("DROP TABLE app.topic_replicas")
            }
            let readOnly = await offPoolProblem { () throws(BackendError) in _ = try dmlOnly.migrator.migrate() }
            #expect(readOnly?.contains("read-only") == true, "\(readOnly ?? "nil")")
            #expect(readOnly?.contains("[102]") == true, "\(readOnly ?? "nil")")
            // A user that may write to a read-only server (READ_ONLY ADMIN, which ALL PRIVILEGES grants) is refused
            // too: DDL and a version row written to a replica diverge it from its primary, and the primary's own
            // row for that version would stop replication with a duplicate key (1062).
            let privileged = await offPoolProblem { () throws(BackendError) in _ = try migrating.migrator.migrate() }
            #expect(privileged == readOnly)
            let left = try await Self.admin(root) { connection in
                (
                    try connection.query("SELECT COUNT(*) FROM app.schema_migrations WHERE version = 102").first?.int64(0),
                    try connection.query("SHOW TABLES FROM app LIKE 'topic_replicas'").count
                )
            }
            #expect(left.0 == 0 && left.1 == 0, "\(left)")
            try await Self.admin(root) { try $0.execute(MySQLQuery(unsafeSQL: "SET GLOBAL read_only = 0")) }
            #expect(try await offPool { try migrating.migrator.migrate() } == [102])
        }
    }

    private static func root(_ server: PrivateServer) throws -> MySQLConfiguration {
        // Root over the private socket: the test user may not grant.
        try MySQLConfiguration(url: "mysql://root@/?socket=\(server.directory.path)/sock")
    }

    @discardableResult
    private static func admin<Result: Sendable>(
        _ root: MySQLConfiguration, _ body: @escaping @Sendable (MySQLConnection) throws -> Result
    ) async throws -> Result {
        try await offPool {
            let connection = try MySQLConnection(configuration: root)
            defer { connection.close() }
            return try body(connection)
        }
    }
}

/// The detail of the `unavailable` that `body` throws, run off the cooperative pool; nil when it succeeds.
private func offPoolProblem(
    retryable: Bool = false, _ body: @escaping @Sendable () throws(BackendError) -> Void
) async -> String? {
    do {
        return try await offPool { () -> String? in
            do throws(BackendError) {
                try body()
                return nil
            } catch {
                guard case .unavailable(retryable, let detail) = error else { return "unexpected \(error)" }
                return detail
            }
        }
    } catch {
        return "unexpected \(error)"
    }
}
