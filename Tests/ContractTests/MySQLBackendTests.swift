import Domain
import Foundation
import MySQLClient
import Synchronization
import TestSupport
import Testing

@testable import MySQLBackend

/// Whether the MySQL-only suites run: with the URL, or under CI=true (where a missing URL fails them).
private let mysqlSuitesRun =
    ProcessInfo.processInfo.environment["STOVEPIPE_TEST_MYSQL_URL"].map { !$0.isEmpty } ?? false
    || ProcessInfo.processInfo.environment["CI"] == "true"

/// A fresh, empty database (not migrated) for one test; dropped afterwards.
private func withEmptyDatabase<Result: Sendable>(
    _ body: @escaping @Sendable (MySQLConfiguration) throws -> Result
) async throws -> Result {
    guard let fixture = MySQLFixture.fromEnvironment() else {
        throw FixtureUnavailable("STOVEPIPE_TEST_MYSQL_URL is not set")
    }
    let base = try fixture.baseConfiguration()
    return try await offPool {
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let admin = try MySQLConnection(configuration: base)
        try admin.execute("CREATE DATABASE \(identifier: name) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        defer { _ = try? admin.execute("DROP DATABASE IF EXISTS \(identifier: name)") }
        var configuration = base
        configuration.database = name
        return try body(configuration)
    }
}

/// `migrate()` of a migrator, running on a thread of its own.
private final class BackgroundMigration: Sendable {
    private let result = Mutex<Result<[UInt32], BackendError>?>(nil)

    /// Starts `migrator.migrate()` now.
    init(_ migrator: MySQLMigrator) {
        Thread { [self] in
            do throws(BackendError) {
                let applied = try migrator.migrate()
                result.withLock { $0 = .success(applied) }
            } catch {
                result.withLock { $0 = .failure(error) }
            }
        }.start()
    }

    /// What `migrate()` returned or threw; nil while it runs.
    var outcome: Result<[UInt32], BackendError>? { result.withLock { $0 } }
}

@Suite("MySQL migrator", .enabled(if: mysqlSuitesRun), .serialized)
struct MySQLMigratorTests {
    @Test("status, migrate, idempotent re-run, and a newer schema")
    func lifecycle() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            let all = MySQLMigrator.migrations.map(\.version)
            #expect(all == all.sorted() && Set(all).count == all.count)
            #expect(try storage.migrator.status() == .behind(pending: all))
            #expect(throws: BackendError.self) { try storage.migrator.requireUpToDate() }
            #expect(try storage.migrator.migrate() == all)
            #expect(try storage.migrator.status() == .current)
            #expect(try storage.migrator.requireUpToDate() == [])
            #expect(try storage.migrator.migrate() == [])

            let tables = try storage.pool.withConnection { connection in
                try connection.query(
                    """
                    SELECT table_name, engine, table_collation FROM information_schema.tables
                    WHERE table_schema = DATABASE()
                    """
                ).map { "\($0.string(0) ?? "")/\($0.string(1) ?? "")/\($0.string(2) ?? "")" }.sorted()
            }
            #expect(
                tables == [
                    "counters/InnoDB/utf8mb4_bin", "queues/InnoDB/utf8mb4_bin", "request_uris/InnoDB/utf8mb4_bin",
                    "requests/InnoDB/utf8mb4_bin", "schema_migrations/InnoDB/utf8mb4_bin",
                    "topic_messages/InnoDB/utf8mb4_bin", "topic_partitions/InnoDB/utf8mb4_bin",
                    "topic_replicas/InnoDB/utf8mb4_bin",
                ])

            try storage.pool.withConnection { connection in
                try connection.execute("INSERT INTO schema_migrations (version, name) VALUES (\(999), \("future"))")
            }
            #expect(try storage.migrator.status() == .ahead(unknown: [999]))
            // Migrations only add: an older binary keeps running on a newer release's schema.
            #expect(try storage.migrator.requireUpToDate() == [999])
            // A missing known migration is what matters, whatever newer ones are there too.
            try storage.pool.withConnection { connection in
                try connection.execute("DELETE FROM schema_migrations WHERE version = \(UInt32(4))")
            }
            #expect(try storage.migrator.status() == .behind(pending: [4]))
            #expect(throws: BackendError.self) { try storage.migrator.requireUpToDate() }
        }
    }

    @Test("two migrators started together apply each migration once")
    func concurrentMigrators() async throws {
        try await withEmptyDatabase { configuration in
            let replicas = [
                MySQLStorage(configuration: configuration, logger: silentLogger),
                MySQLStorage(configuration: configuration, logger: silentLogger),
            ]
            defer { replicas.forEach { $0.close() } }
            let results = Mutex<[[UInt32]]>([])
            let failures = Mutex<[BackendError]>([])
            let threads = replicas.map { storage in
                Thread {
                    do throws(BackendError) {
                        let applied = try storage.migrator.migrate()
                        results.withLock { $0.append(applied) }
                    } catch {
                        failures.withLock { $0.append(error) }
                    }
                }
            }
            threads.forEach { $0.start() }
            let deadline = ContinuousClock.now + .seconds(60)
            while results.withLock({ $0.count }) + failures.withLock({ $0.count }) < 2 && ContinuousClock.now < deadline {
                Thread.sleep(forTimeInterval: 0.01)
            }
            #expect(failures.withLock { $0 }.isEmpty)
            let all = MySQLMigrator.migrations.map(\.version)
            #expect(results.withLock { $0 }.sorted { $0.count < $1.count } == [[], all])
            let recorded = try replicas[0].pool.withConnection { connection in
                try connection.query("SELECT COUNT(*) FROM schema_migrations").first?.int64(0)
            }
            #expect(recorded == Int64(all.count))
        }
    }

    @Test("a migrator that cannot get the lock in time is unavailable and retryable")
    func lockTimeout() async throws {
        try await withEmptyDatabase { configuration in
            let holder = try MySQLConnection(configuration: configuration)
            let got = try holder.query(
                "SELECT GET_LOCK(CONCAT(\(MySQLMigrator.lockPrefix), LEFT(SHA2(DATABASE(), 256), 40)), 5)")
            #expect(got.first?.int64(0) == 1)
            let holderID = try #require(try holder.query("SELECT CONNECTION_ID()").first?.uint64(0))
            let pool = MySQLPool(connection: configuration, logger: silentLogger)
            defer { pool.close() }
            let migrator = MySQLMigrator(pool: pool, lockTimeoutSeconds: 1, logger: silentLogger)
            do throws(BackendError) {
                try migrator.migrate()
                Issue.record("migrate ran while another session held the lock")
            } catch {
                guard case .unavailable(let retryable, let detail) = error else {
                    Issue.record("expected unavailable, got \(error)")
                    return
                }
                #expect(retryable)
                // A migrate killed while the server still runs its statement (an ALTER) holds the lock until that
                // ends: the operator needs the session to look for.
                #expect(detail.contains("waited 1 s") && detail.contains("connection \(holderID)"), "\(detail)")
            }
            _ = try holder.query("SELECT RELEASE_LOCK(CONCAT(\(MySQLMigrator.lockPrefix), LEFT(SHA2(DATABASE(), 256), 40)))")
            #expect(try migrator.migrate() == MySQLMigrator.migrations.map(\.version))
        }
    }

    @Test("a migration that fails is named; those before it stay recorded, the lock is released, a re-run finishes")
    func failedMigration() async throws {
        try await withEmptyDatabase { configuration in
            let blocker = try MySQLConnection(configuration: configuration)
            // A child whose foreign key names a column queues will not have: CREATE TABLE queues fails (1005).
            try blocker.execute("SET SESSION foreign_key_checks = 0")
            try blocker.execute("CREATE TABLE blocker (q INT, FOREIGN KEY (q) REFERENCES queues (missing)) ENGINE=InnoDB")
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            do throws(BackendError) {
                try storage.migrator.migrate()
                Issue.record("migrate succeeded although queues could not be created")
            } catch {
                guard case .unavailable(let retryable, let detail) = error else {
                    Issue.record("expected unavailable, got \(error)")
                    return
                }
                #expect(!retryable)
                #expect(detail.hasPrefix("mysql migration 3 (queues) failed: mysql error 1005: "), "\(detail)")
                #expect(detail.contains("queues"), "\(detail)")
            }
            let recorded = try blocker.query("SELECT version FROM schema_migrations ORDER BY version").map { $0.uint64(0) }
            #expect(recorded == [1, 2])
            let lock = try blocker.query(
                "SELECT GET_LOCK(CONCAT(\(MySQLMigrator.lockPrefix), LEFT(SHA2(DATABASE(), 256), 40)), 0)")
            #expect(lock.first?.int64(0) == 1)
            _ = try blocker.query("SELECT RELEASE_LOCK(CONCAT(\(MySQLMigrator.lockPrefix), LEFT(SHA2(DATABASE(), 256), 40)))")
            try blocker.execute("DROP TABLE blocker")
            #expect(try storage.migrator.migrate() == [3, 4, 100, 101, 102])
        }
    }

    @Test("a URL without a database is refused as such, not blamed on another migrator")
    func noDatabase() async throws {
        guard let fixture = MySQLFixture.fromEnvironment() else {
            throw FixtureUnavailable("STOVEPIPE_TEST_MYSQL_URL is not set")
        }
        var base = try fixture.baseConfiguration()
        base.database = nil
        let configuration = base
        let noDatabase = BackendError.unavailable(
            retryable: false, detail: "mysql: no database selected: the URL must name one (mysql://USER@HOST/DATABASE)")
        try await offPool {
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            #expect(throws: noDatabase) { try storage.migrator.migrate() }
            #expect(throws: noDatabase) { try storage.migrator.status() }
        }
    }

    @Test("a migrator waits for the lock longer than the connection's read timeout")
    func lockWaitOutlastsReadTimeout() async throws {
        try await withEmptyDatabase { configuration in
            let holder = try MySQLConnection(configuration: configuration)
            let got = try holder.query(
                "SELECT GET_LOCK(CONCAT(\(MySQLMigrator.lockPrefix), LEFT(SHA2(DATABASE(), 256), 40)), 5)")
            #expect(got.first?.int64(0) == 1)
            var shortReads = configuration
            shortReads.readTimeoutSeconds = 2
            let pool = MySQLPool(connection: shortReads, logger: silentLogger)
            defer { pool.close() }
            let migrator = MySQLMigrator(pool: pool, lockTimeoutSeconds: 5, logger: silentLogger)
            let started = ContinuousClock.now
            do throws(BackendError) {
                try migrator.migrate()
                Issue.record("migrate ran while another session held the lock")
            } catch {
                guard case .unavailable(true, let detail) = error else {
                    Issue.record("expected unavailable and retryable, got \(error)")
                    return
                }
                #expect(detail.hasPrefix("mysql: another migrator holds the schema lock"), "\(detail)")
                #expect(ContinuousClock.now - started >= .seconds(5))
            }
        }
    }

    @Test("migrate refuses a table of another shape that has a schema table's name, and records nothing for it")
    func foreignTable() async throws {
        try await withEmptyDatabase { configuration in
            let other = try MySQLConnection(configuration: configuration)
            defer { other.close() }
            // Another application's table: CREATE TABLE IF NOT EXISTS leaves it alone with only a note (1050).
            try other.execute("CREATE TABLE requests (id INT NOT NULL PRIMARY KEY, body TEXT NULL) ENGINE=InnoDB")
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            do throws(BackendError) {
                try storage.migrator.migrate()
                Issue.record("migrate accepted another application's requests table")
            } catch {
                guard case .unavailable(let retryable, let detail) = error else {
                    Issue.record("expected unavailable, got \(error)")
                    return
                }
                #expect(!retryable)
                #expect(detail.hasPrefix("mysql migration 1 (requests) failed: table `requests`"), "\(detail)")
                #expect(detail.contains("column `queue` is missing"), "\(detail)")
                #expect(detail.contains("stovepipe migrate"), "\(detail)")
            }
            #expect(try other.query("SELECT version FROM schema_migrations").isEmpty)
            try other.execute("RENAME TABLE requests TO other_requests")
            #expect(try storage.migrator.migrate() == MySQLMigrator.migrations.map(\.version))
            #expect(try storage.migrator.requireUpToDate() == [])
        }
    }

    @Test("start-up refuses a schema table changed after migrate; status, which readiness calls, reads versions only")
    func changedTable() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            func startUpProblem() -> String? {
                do throws(BackendError) {
                    try storage.migrator.requireUpToDate()
                    return nil
                } catch {
                    guard case .unavailable(false, let detail) = error else { return "unexpected \(error)" }
                    return detail
                }
            }
            try storage.pool.withConnection { try $0.execute("ALTER TABLE queues MODIFY version VARCHAR(20) NOT NULL") }
            #expect(try storage.migrator.status() == .current)
            let typeProblem = startUpProblem()
            #expect(typeProblem?.contains("table `queues` (migration 3): column `version` is varchar") == true, "\(typeProblem ?? "nil")")
            try storage.pool.withConnection { try $0.execute("ALTER TABLE queues MODIFY version BIGINT UNSIGNED NULL") }
            let nullProblem = startUpProblem()
            #expect(nullProblem?.contains("table `queues` (migration 3): column `version` allows NULL") == true, "\(nullProblem ?? "nil")")
            try storage.pool.withConnection { try $0.execute("ALTER TABLE queues MODIFY version BIGINT UNSIGNED NOT NULL") }
            #expect(startUpProblem() == nil)
            try storage.pool.withConnection { try $0.execute("DROP TABLE counters") }
            let missing = startUpProblem()
            #expect(missing?.contains("table `counters` (migration 4) does not exist") == true, "\(missing ?? "nil")")
        }
    }

    @Test("start-up and migrate refuse a key column whose collation is not Schema/'s, as a case-insensitive one")
    func changedCollation() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            // utf8mb4_general_ci compares without case: git://h/A and git://h/a would be one request_uris key.
            try storage.pool.withConnection {
                try $0.execute(
                    "ALTER TABLE request_uris MODIFY uri VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL")
            }
            #expect(try storage.migrator.status() == .current)
            let problem = shapeProblem { () throws(BackendError) in try storage.migrator.requireUpToDate() }
            #expect(
                problem?.contains(
                    "table `request_uris` (migration 2): column `uri` has collation utf8mb4_general_ci, where Schema/ declares utf8mb4_bin"
                ) == true, "\(problem ?? "nil")")

            // A table made by hand before migrate, with the right columns but the wrong collation, is not recorded.
            try storage.pool.withConnection { connection in
                try connection.execute("DROP TABLE request_uris")
                try connection.execute("DELETE FROM schema_migrations WHERE version = \(UInt32(2))")
                let sql = MySQLMigrator.migrations[1].sql.replacingOccurrences(
                    of: "uri        VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
                    with: "uri        VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
                try #require(sql != MySQLMigrator.migrations[1].sql)
                try connection.executeScript(unsafeSQL: sql)
            }
            let migrateProblem = shapeProblem { () throws(BackendError) in try storage.migrator.migrate() }
            #expect(
                migrateProblem?.contains("table `request_uris`: column `uri` has collation utf8mb4_unicode_ci") == true,
                "\(migrateProblem ?? "nil")")
            #expect(try storage.migrator.status() == .behind(pending: [2]))
        }
    }

    @Test("start-up refuses a schema table whose primary key, unique key or index was dropped or changed")
    func changedKeys() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            func alter(_ sql: String) throws {
                try storage.pool.withConnection { try $0.executeScript(unsafeSQL: sql) }
            }
            func startUpProblem() -> String? {
                shapeProblem { () throws(BackendError) in try storage.migrator.requireUpToDate() }
            }
            // Without it a second ingest of one commit is no longer a duplicate (1062).
            try alter("ALTER TABLE request_uris DROP PRIMARY KEY")
            let primary = startUpProblem()
            #expect(
                primary?.contains("table `request_uris` (migration 2): primary key (queue, uri) is missing") == true,
                "\(primary ?? "nil")")
            try alter("ALTER TABLE request_uris ADD PRIMARY KEY (queue, uri)")
            #expect(startUpProblem() == nil)

            try alter("ALTER TABLE topic_messages DROP INDEX topic_messages_id, ADD KEY topic_messages_id (topic, message_id)")
            let unique = startUpProblem()
            #expect(
                unique?.contains("table `topic_messages` (migration 100): unique key `topic_messages_id` (topic, message_id) is missing")
                    == true, "\(unique ?? "nil")")
            try alter("ALTER TABLE topic_messages DROP INDEX topic_messages_id, ADD UNIQUE KEY topic_messages_id (topic, message_id)")
            #expect(startUpProblem() == nil)

            try alter("ALTER TABLE topic_messages DROP INDEX topic_messages_head")
            let index = startUpProblem()
            #expect(
                index?.contains("table `topic_messages` (migration 100): key `topic_messages_head` (topic, state, partition_key, seq) is missing")
                    == true, "\(index ?? "nil")")
            // Another name for the same columns serves as well.
            try alter("ALTER TABLE topic_messages ADD KEY head_by_hand (topic, state, partition_key, seq)")
            #expect(startUpProblem() == nil)
        }
    }

    @Test("start-up refuses a unique key Schema/ does not define, naming it; one that contains a declared key serves")
    func extraUniqueKeys() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            func alter(_ sql: String) throws {
                try storage.pool.withConnection { try $0.executeScript(unsafeSQL: sql) }
            }
            func startUpProblem() -> String? {
                shapeProblem { () throws(BackendError) in try storage.migrator.requireUpToDate() }
            }
            // A 1062 from such a key would be taken for a second create of one request, URI or message.
            try alter("ALTER TABLE requests ADD UNIQUE KEY by_state (state)")
            let state = startUpProblem()
            #expect(
                state?.contains("table `requests` (migration 1): unique key `by_state` (state) is not in Schema/") == true,
                "\(state ?? "nil")")
            #expect(state?.contains("DROP INDEX `by_state`") == true, "\(state ?? "nil")")
            try alter("ALTER TABLE requests DROP INDEX by_state")
            #expect(startUpProblem() == nil)

            try alter("ALTER TABLE request_uris ADD UNIQUE KEY by_time (created_at)")
            let time = startUpProblem()
            #expect(
                time?.contains("table `request_uris` (migration 2): unique key `by_time` (created_at) is not in Schema/")
                    == true, "\(time ?? "nil")")
            try alter("ALTER TABLE request_uris DROP INDEX by_time")

            // Only a prefix of a declared key's column: two URIs that share the prefix would collide.
            try alter("ALTER TABLE request_uris ADD UNIQUE KEY uri_prefix (queue, uri(20))")
            let prefix = startUpProblem()
            #expect(prefix?.contains("unique key `uri_prefix` (queue, uri(20)) is not in Schema/") == true, "\(prefix ?? "nil")")
            try alter("ALTER TABLE request_uris DROP INDEX uri_prefix")

            // Rows equal on a superset of a declared key's columns are equal on the key: a duplicate on it is one on the key.
            try alter("ALTER TABLE request_uris ADD UNIQUE KEY wider (uri, request_n, queue)")
            try alter("ALTER TABLE topic_messages ADD UNIQUE KEY same_columns (topic, message_id)")
            #expect(startUpProblem() == nil)
        }
    }

    @Test("start-up refuses a column narrowed by hand (length, integer range, fractional seconds); a wider one serves")
    func narrowedColumns() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            func startUpProblem(after sql: String) throws -> String? {
                try storage.pool.withConnection { try $0.executeScript(unsafeSQL: sql) }
                return shapeProblem { () throws(BackendError) in try storage.migrator.requireUpToDate() }
            }
            let cases: [(sql: String, problem: String?)] = [
                // Strict mode refuses a longer URI (1406): every ingest of one would fail.
                ("ALTER TABLE requests MODIFY uri VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL",
                 "table `requests` (migration 1): column `uri` is varchar(100), narrower than Schema/'s varchar(512)"),
                ("ALTER TABLE requests MODIFY uri VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL", nil),
                ("ALTER TABLE requests MODIFY n INT UNSIGNED NOT NULL",
                 "table `requests` (migration 1): column `n` is int(10) unsigned, narrower than Schema/'s bigint unsigned"),
                ("ALTER TABLE requests MODIFY n BIGINT NOT NULL",
                 "table `requests` (migration 1): column `n` is bigint(20), narrower than Schema/'s bigint unsigned"),
                ("ALTER TABLE requests MODIFY n BIGINT UNSIGNED NOT NULL", nil),
                ("ALTER TABLE topic_messages MODIFY attempts BIGINT NOT NULL DEFAULT 0", nil),
                ("ALTER TABLE topic_messages MODIFY payload BLOB NOT NULL",
                 "table `topic_messages` (migration 100): column `payload` is blob, narrower than Schema/'s mediumblob"),
                ("ALTER TABLE topic_messages MODIFY payload LONGBLOB NOT NULL", nil),
                ("ALTER TABLE queues MODIFY created_at DATETIME NOT NULL",
                 "table `queues` (migration 3): column `created_at` is datetime, narrower than Schema/'s datetime(6)"),
            ]
            for (sql, expected) in cases {
                let problem = try startUpProblem(after: sql)
                if let expected {
                    #expect(problem?.contains(expected) == true, "\(sql): \(problem ?? "nil")")
                } else {
                    #expect(problem == nil, "\(sql)")
                }
            }
        }
    }

    @Test("migrations whose DDL ran but were not recorded (a migrate killed in between) re-run and are recorded")
    func unrecordedDDLReruns() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            // MySQL DDL commits on its own (implicit commit), so a process or connection killed after a migration's
            // DDL leaves it unrecorded: every schema file must run again without error on its own result.
            try storage.pool.withConnection { try $0.execute("DELETE FROM schema_migrations") }
            let all = MySQLMigrator.migrations.map(\.version)
            #expect(try storage.migrator.status() == .behind(pending: all))
            #expect(try storage.migrator.migrate() == all)
            #expect(try storage.migrator.requireUpToDate() == [])
        }
    }

    @Test("start-up refuses a schema table moved to another engine, which has no transactions or row locks")
    func changedEngine() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            try storage.pool.withConnection { try $0.execute("ALTER TABLE queues ENGINE=MyISAM") }
            let problem = shapeProblem { () throws(BackendError) in try storage.migrator.requireUpToDate() }
            #expect(
                problem?.contains("table `queues` (migration 3): its engine is MyISAM, where Schema/ declares InnoDB") == true,
                "\(problem ?? "nil")")
            try storage.pool.withConnection { try $0.execute("ALTER TABLE queues ENGINE=InnoDB") }
            #expect(shapeProblem { () throws(BackendError) in try storage.migrator.requireUpToDate() } == nil)
        }
    }

    @Test("an older binary serves a newer schema's added columns, unless its inserts could not fill one")
    func rollbackOntoAddedColumns() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            func alter(_ sql: String) throws {
                try storage.pool.withConnection { try $0.executeScript(unsafeSQL: sql) }
            }
            // A newer release's migrations, which this binary does not know.
            try alter(
                """
                INSERT INTO schema_migrations (version, name) VALUES (5, 'newer');
                ALTER TABLE requests ADD COLUMN note TEXT NULL, ADD COLUMN priority INT NOT NULL DEFAULT 0,
                    ADD COLUMN tag VARCHAR(20) AS (LEFT(uri, 20)) VIRTUAL;
                CREATE TABLE newer_table (id INT NOT NULL PRIMARY KEY) ENGINE=InnoDB
                """)
            #expect(try storage.migrator.requireUpToDate() == [5])
            let id = RequestID(queue: try QueueName("app/main"), number: 1)
            let request = Request(id: id, uri: SourceURI("git://app/main/1"), createdAt: Date(timeIntervalSince1970: 1_700_000_000))
            try storage.requests.create(request)

            // Every insert of this binary would fail with 1364 (strict mode: no default for the column).
            try alter("ALTER TABLE requests ADD COLUMN owner VARCHAR(40) NOT NULL")
            let second = Request(
                id: RequestID(queue: try QueueName("app/main"), number: 2), uri: SourceURI("git://app/main/2"),
                createdAt: Date(timeIntervalSince1970: 1_700_000_000))
            #expect(throws: BackendError.self) { try storage.requests.create(second) }
            let problem = shapeProblem { () throws(BackendError) in try storage.migrator.requireUpToDate() }
            #expect(
                problem?.contains("table `requests` (migration 1): column `owner` is NOT NULL without a default") == true,
                "\(problem ?? "nil")")
            try alter("ALTER TABLE requests ALTER COLUMN owner SET DEFAULT ''")
            #expect(try storage.migrator.requireUpToDate() == [5])
        }
    }

    @Test("a migration that runs longer than the pool's read timeout finishes")
    func slowMigration() async throws {
        try await withEmptyDatabase { configuration in
            var shortReads = configuration
            shortReads.readTimeoutSeconds = 1
            let pool = MySQLPool(connection: shortReads, logger: silentLogger)
            defer { pool.close() }
            // A slow ALTER sends nothing back until it is done, as SLEEP does.
            let slow = MySQLMigration(version: 1, name: "slow", sql: "DO SLEEP(3)")
            let migrator = MySQLMigrator(pool: pool, migrations: [slow], lockTimeoutSeconds: 5, logger: silentLogger)
            let applied = try migrator.migrate()
            #expect(applied == [1])
            #expect(try migrator.status() == .current)
        }
    }

    @Test("a migration's DDL waits for its metadata lock longer than the pool's lock-wait-timeout")
    func ddlOutwaitsPoolLockWait() async throws {
        try await withEmptyDatabase { configuration in
            let holder = try MySQLConnection(configuration: configuration)
            defer { holder.close() }
            try holder.execute("CREATE TABLE m (id INT PRIMARY KEY) ENGINE=InnoDB")
            // An open transaction that read the table holds its metadata lock until it ends; ALTER waits for it.
            try holder.executeScript(unsafeSQL: "START TRANSACTION; SELECT id FROM m")
            var shortLockWaits = configuration
            shortLockWaits.lockWaitTimeoutSeconds = 1
            let pool = MySQLPool(connection: shortLockWaits, logger: silentLogger)
            defer { pool.close() }
            let alter = MySQLMigration(version: 1, name: "alter", sql: "ALTER TABLE m ADD COLUMN c INT NULL")
            let migrator = MySQLMigrator(pool: pool, migrations: [alter], lockTimeoutSeconds: 5, logger: silentLogger)
            let migration = BackgroundMigration(migrator)
            func alterWaits() throws -> Bool {
                try !holder.query(
                    """
                    SELECT id FROM information_schema.processlist
                    WHERE state = \("Waiting for table metadata lock") AND db = DATABASE()
                    """
                ).isEmpty
            }
            let deadline = ContinuousClock.now + .seconds(10)
            while try !alterWaits() && migration.outcome == nil && ContinuousClock.now < deadline {
                Thread.sleep(forTimeInterval: 0.01)
            }
            #expect(try alterWaits(), "the ALTER never waited for the metadata lock")
            // Three times the pool's lock wait: a migration connection with the pool's 1 s would have failed by now.
            let outlasted = ContinuousClock.now + .seconds(3)
            while ContinuousClock.now < outlasted && migration.outcome == nil {
                Thread.sleep(forTimeInterval: 0.05)
            }
            #expect(migration.outcome == nil, "migrate ended while the metadata lock was still held")
            #expect(try alterWaits())
            try holder.executeScript(unsafeSQL: "COMMIT")
            while migration.outcome == nil && ContinuousClock.now < deadline + .seconds(10) {
                Thread.sleep(forTimeInterval: 0.01)
            }
            #expect(migration.outcome == .success([1]))
            let columns = try holder.query(
                """
                SELECT column_name FROM information_schema.columns
                WHERE table_schema = DATABASE() AND table_name = \("m")
                """)
            #expect(columns.compactMap { $0.string(0) }.sorted() == ["c", "id"])
        }
    }

    @Test("a GET_LOCK that answers NULL (its query killed) is reported as an error, not as another migrator")
    func killedLockWait() async throws {
        try await withEmptyDatabase { configuration in
            let holder = try MySQLConnection(configuration: configuration)
            defer { holder.close() }
            let got = try holder.query(
                "SELECT GET_LOCK(CONCAT(\(MySQLMigrator.lockPrefix), LEFT(SHA2(DATABASE(), 256), 40)), 5)")
            #expect(got.first?.int64(0) == 1)
            let pool = MySQLPool(connection: configuration, logger: silentLogger)
            defer { pool.close() }
            let migrator = MySQLMigrator(pool: pool, lockTimeoutSeconds: 20, logger: silentLogger)
            let started = ContinuousClock.now
            let migration = BackgroundMigration(migrator)
            let deadline = ContinuousClock.now + .seconds(10)
            var waiter: UInt64?
            while waiter == nil && ContinuousClock.now < deadline {
                waiter = try holder.query(
                    "SELECT id FROM information_schema.processlist WHERE state = \("User lock") AND db = DATABASE()"
                ).first?.uint64(0)
                if waiter == nil { Thread.sleep(forTimeInterval: 0.05) }
            }
            let id = try #require(waiter)
            // GET_LOCK answers NULL, without an error, when its query is killed (KILL QUERY).
            try holder.executeScript(unsafeSQL: "KILL QUERY \(id)")
            while migration.outcome == nil && ContinuousClock.now < deadline {
                Thread.sleep(forTimeInterval: 0.01)
            }
            let result = try #require(migration.outcome)
            #expect(ContinuousClock.now - started < .seconds(15))
            guard case .failure(.unavailable(let retryable, let detail)) = result else {
                Issue.record("expected unavailable, got \(result)")
                return
            }
            #expect(!retryable)
            #expect(detail.contains("GET_LOCK") && detail.contains("NULL"), "\(detail)")
            #expect(!detail.contains("another migrator"), "\(detail)")
        }
    }
}

@Suite("MySQL schema declarations")
struct MySQLSchemaDeclarationTests {
    @Test("every migration's table, columns and keys are read from its schema file, comments left out")
    func declaredTables() {
        let tables = MySQLMigrator.migrations.flatMap { MySQLMigrator.declaredTables(in: $0.sql) }
        #expect(tables.map(\.name) == MySQLMigrator.migrations.map(\.name))
        let requests = tables.first { $0.name == "requests" }
        #expect(
            requests?.columns.map(\.name) == [
                "queue", "n", "uri", "state", "build_strategy", "base_uri", "version", "created_at", "updated_at",
            ])
        #expect(
            requests?.columns.first { $0.name == "base_uri" }
                == .init(
                    name: "base_uri", type: "varchar", isNullable: true, collation: "utf8mb4_bin", size: 512, isUnsigned: false))
        #expect(
            requests?.columns.first { $0.name == "n" }
                == .init(name: "n", type: "bigint", isNullable: false, collation: nil, size: nil, isUnsigned: true))
        #expect(requests?.columns.first { $0.name == "created_at" }?.typeText == "datetime(6)")
        #expect(requests?.keys == [.init(kind: .primary, name: nil, columns: ["queue", "n"])])
        #expect(tables.allSatisfy { $0.engine == "InnoDB" })
        #expect(
            tables.first { $0.name == "topic_messages" }?.keys == [
                .init(kind: .primary, name: nil, columns: ["seq"]),
                .init(kind: .unique, name: "topic_messages_id", columns: ["topic", "message_id"]),
                .init(kind: .index, name: "topic_messages_head", columns: ["topic", "state", "partition_key", "seq"]),
                .init(kind: .index, name: "topic_messages_finished", columns: ["state", "finished_at"]),
                .init(kind: .index, name: "topic_messages_delivery", columns: ["delivery_token"]),
            ])
        let bookkeeping = MySQLMigrator.declaredTables(in: MySQLMigrator.bookkeepingSQL)
        #expect(bookkeeping.map { $0.columns.map(\.name) } == [["version", "name", "created_at", "updated_at"]])
        #expect(MySQLMigrator.declaredTables(in: "DO SLEEP(1)").isEmpty)
    }
}

@Suite("MySQL stores beyond the contract", .enabled(if: mysqlSuitesRun), .serialized)
struct MySQLStoreTests {
    @Test("without CLIENT_FOUND_ROWS an update of identical fields still matches its version, which it advances")
    func updateWithoutFoundRows() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            var plain = configuration
            plain.reportsMatchedRows = false
            let pool = MySQLPool(connection: plain, logger: silentLogger)
            defer { pool.close() }
            let requests = MySQLRequestStore(pool: pool)
            let queues = MySQLQueueStore(pool: pool)
            let queueName = try QueueName("q")
            let request = Request(
                id: RequestID(queue: queueName, number: 1), uri: SourceURI("git://q/1"),
                createdAt: Date(timeIntervalSince1970: 1_700_000_000))
            try requests.create(request)
            try requests.update(request, oldVersion: 1, newVersion: 2)
            #expect(try requests.get(request.id).version == 2)
            #expect(throws: BackendError.versionMismatch) { try requests.update(request, oldVersion: 1, newVersion: 2) }
            let queue = Queue(name: queueName)
            try queues.create(queue)
            try queues.update(queue, oldVersion: 1, newVersion: 2)
            #expect(try queues.get(queueName).version == 2)
            #expect(throws: BackendError.versionMismatch) { try queues.update(queue, oldVersion: 7, newVersion: 8) }
        }
    }

    @Test("a 1062 from a unique key added by hand after start-up is unavailable, not a duplicate create, and never quotes the value")
    func duplicateOnUnexpectedKey() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            func alter(_ sql: String) throws {
                try storage.pool.withConnection { try $0.executeScript(unsafeSQL: sql) }
            }
            let queue = try QueueName("q")
            func request(_ number: UInt64) -> Request {
                Request(
                    id: RequestID(queue: queue, number: number), uri: SourceURI("git://q/secret-\(number)"),
                    createdAt: Date(timeIntervalSince1970: 1_700_000_000))
            }
            try storage.requests.create(request(1))
            // The primary key's duplicate is still the create's signal.
            #expect(throws: BackendError.alreadyExists) { try storage.requests.create(request(1)) }

            try alter("ALTER TABLE requests ADD UNIQUE KEY by_state (state)")
            let requestProblem = shapeProblem { () throws(BackendError) in try storage.requests.create(request(2)) }
            #expect(requestProblem?.contains("unique key `by_state`") == true, "\(requestProblem ?? "nil")")
            #expect(requestProblem?.contains("queued") == false, "\(requestProblem ?? "nil")")
            #expect(throws: BackendError.notFound) { try storage.requests.get(request(2).id) }
            #expect(throws: BackendError.alreadyExists) { try storage.requests.create(request(1)) }

            try storage.requestURIs.create(queue: queue, uri: SourceURI("git://q/a"), id: request(1).id)
            try alter("ALTER TABLE request_uris ADD UNIQUE KEY by_request (request_n)")
            let uriProblem = shapeProblem { () throws(BackendError) in
                try storage.requestURIs.create(queue: queue, uri: SourceURI("git://q/secret-b"), id: request(1).id)
            }
            #expect(uriProblem?.contains("unique key `by_request`") == true, "\(uriProblem ?? "nil")")
            #expect(uriProblem?.contains("secret") == false, "\(uriProblem ?? "nil")")
            #expect(throws: BackendError.alreadyExists) {
                try storage.requestURIs.create(queue: queue, uri: SourceURI("git://q/a"), id: request(1).id)
            }

            try storage.queues.create(Queue(name: queue))
            try alter("ALTER TABLE queues ADD UNIQUE KEY by_version (version)")
            let other = try QueueName("r")
            let queueProblem = shapeProblem { () throws(BackendError) in try storage.queues.create(Queue(name: other)) }
            #expect(queueProblem?.contains("unique key `by_version`") == true, "\(queueProblem ?? "nil")")

            // A publish of an existing message id is a no-op; one colliding on another key is an error, not that no-op.
            func message(_ id: String, key: String) -> Message {
                Message(topic: .process, partitionKey: key, id: id, payload: Array("secret".utf8))
            }
            let published = try storage.pool.withConnection { connection in
                (
                    try TopicStore.insert(message("m1", key: "p1"), on: connection),
                    try TopicStore.insert(message("m1", key: "p1"), on: connection)
                )
            }
            #expect(published == (true, false))
            try alter("ALTER TABLE topic_messages ADD UNIQUE KEY one_per_partition (partition_key)")
            let collision = #expect(throws: MySQLError.self) {
                try storage.pool.withConnection { try TopicStore.insert(message("m2", key: "p1"), on: $0) }
            }
            #expect(collision?.code == .duplicateEntry)
            #expect(collision?.duplicateKey == "one_per_partition")
            #expect(collision.map { String(reflecting: $0).contains("secret") || String(reflecting: $0).contains("p1") } == false)
            #expect(try storage.pool.withConnection { try TopicStore.insert(message("m1", key: "p1"), on: $0) } == false)
        }
    }

    @Test("the key of a duplicate entry is read from the end of the server's message, whatever the value holds")
    func duplicateKeyName() {
        #expect(MySQLError.duplicateKeyName(inServerMessage: "Duplicate entry 'q-1' for key 'PRIMARY'") == "PRIMARY")
        // MySQL 8.0.19 and later qualify the key with its table.
        #expect(
            MySQLError.duplicateKeyName(inServerMessage: "Duplicate entry 'q-1' for key 'requests.PRIMARY'")
                == "requests.PRIMARY")
        // A value can quote anything, the words of the message included; the key is the message's last quoted part.
        #expect(
            MySQLError.duplicateKeyName(inServerMessage: "Duplicate entry 'x' for key 'PRIMARY'-by_state' for key 'by_state'")
                == "by_state")
        // Another language (lc_messages), or a cut message: not known, rather than guessed.
        #expect(MySQLError.duplicateKeyName(inServerMessage: "Doppelter Eintrag 'q-1' für Schlüssel 'PRIMARY'") == nil)
        #expect(MySQLError.duplicateKeyName(inServerMessage: "Duplicate entry 'q-1' for key 'PRIM") == nil)
    }

    @Test("a row the domain cannot decode is unavailable, not retryable")
    func corruptRow() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            try storage.pool.withConnection { connection in
                try connection.execute(
                    """
                    INSERT INTO requests VALUES (\("q"), 1, \("git://q/1"), \("exploded"), \(""), NULL, 1,
                    \(Date(timeIntervalSince1970: 0)), \(Date(timeIntervalSince1970: 0)))
                    """)
            }
            #expect(throws: BackendError.unavailable(retryable: false, detail: "mysql: a requests row does not decode")) {
                try storage.requests.get(RequestID(queue: try QueueName("q"), number: 1))
            }
        }
    }

    @Test("a store update behind another session's row lock fails after one lock wait, unretried, counted by code, retryable")
    func rowLockedUpdate() async throws {
        try await withEmptyDatabase { configuration in
            let (storage, observer) = try Self.storageWithShortLockWaits(configuration)
            defer { storage.close() }
            let request = Request(
                id: RequestID(queue: try QueueName("q"), number: 1), uri: SourceURI("git://q/1"),
                createdAt: Date(timeIntervalSince1970: 1_700_000_000))
            try storage.requests.create(request)
            let holder = try MySQLConnection(configuration: configuration)
            defer { holder.close() }
            try holder.executeScript(unsafeSQL: "START TRANSACTION; SELECT n FROM requests WHERE n = 1 FOR UPDATE")
            try Self.expectOneLockWait(observer) { () throws(BackendError) in
                try storage.requests.update(request, oldVersion: 1, newVersion: 2)
            }
            try holder.executeScript(unsafeSQL: "ROLLBACK")
            try storage.requests.update(request, oldVersion: 1, newVersion: 2)
            #expect(try storage.requests.get(request.id).version == 2)
        }
    }

    @Test("a counter behind another session's row lock fails after one lock wait, unretried, counted by code, retryable")
    func rowLockedCounter() async throws {
        try await withEmptyDatabase { configuration in
            let (storage, observer) = try Self.storageWithShortLockWaits(configuration)
            defer { storage.close() }
            let queue = try QueueName("q")
            #expect(try storage.counter.next(queue: queue, domain: "request") == 1)
            let holder = try MySQLConnection(configuration: configuration)
            defer { holder.close() }
            try holder.executeScript(
                unsafeSQL: "START TRANSACTION; SELECT value FROM counters WHERE queue = 'q' AND domain = 'request' FOR UPDATE")
            try Self.expectOneLockWait(observer) { () throws(BackendError) in
                _ = try storage.counter.next(queue: queue, domain: "request")
            }
            try holder.executeScript(unsafeSQL: "ROLLBACK")
            // The timed-out statement changed nothing: the next value follows the last one handed out.
            #expect(try storage.counter.next(queue: queue, domain: "request") == 2)
        }
    }

    /// The lock wait of the stores' sessions in `storageWithShortLockWaits`.
    private static let shortLockWait = Duration.seconds(2)

    /// Migrated storage on a one-connection pool whose sessions wait `shortLockWait` for a lock, read timeout 10 s.
    private static func storageWithShortLockWaits(
        _ configuration: MySQLConfiguration
    ) throws -> (MySQLStorage, RetryRecorder) {
        var shortLockWaits = configuration
        shortLockWaits.readTimeoutSeconds = 10
        shortLockWaits.lockWaitTimeoutSeconds = 2
        let observer = RetryRecorder()
        let storage = MySQLStorage(
            configuration: shortLockWaits, poolConfiguration: .init(maxConnections: 1), observer: observer,
            logger: silentLogger)
        try storage.migrator.migrate()
        return (storage, observer)
    }

    /// Runs `blocked`, a store call behind another session's row lock, and checks that it fails as unavailable and
    /// retryable once its one lock wait ends: not run again (a lock held for a whole lock wait is unlikely to be
    /// free at once), but counted once by its code; the connection is kept.
    private static func expectOneLockWait(
        _ observer: RetryRecorder, _ blocked: () throws(BackendError) -> Void
    ) throws {
        let started = ContinuousClock.now
        #expect(throws: BackendError.unavailable(retryable: true, detail: "mysql unavailable (error 1205: lock wait timeout)")) {
            try blocked()
        }
        // One lock wait, not the three of three attempts; a generous margin for a loaded machine.
        #expect(ContinuousClock.now - started < shortLockWait * 2)
        #expect(observer.retriedCodes.values.isEmpty)
        #expect(observer.failedCodes.values == [.lockWaitTimeout])
        #expect(observer.discardedCodes.values.isEmpty)
    }

    @Test("a statement stopped by the user's statement time limit (1969) is unavailable, retryable, its connection kept")
    func statementTimeLimit() async throws {
        try await withEmptyDatabase { configuration in
            // A per-user limit, as shared servers set it (MariaDB's MAX_STATEMENT_TIME resource option): no global
            // setting changes under the other suites.
            let user = "timed_" + UUID().uuidString.prefix(8).lowercased()
            let admin = try MySQLConnection(configuration: configuration)
            defer { admin.close() }
            try admin.execute(MySQLQuery(unsafeSQL: "CREATE USER '\(user)'@'127.0.0.1' IDENTIFIED BY 'pw' WITH MAX_STATEMENT_TIME 0.3"))
            defer { _ = try? admin.execute(MySQLQuery(unsafeSQL: "DROP USER '\(user)'@'127.0.0.1'")) }
            try admin.execute(MySQLQuery(unsafeSQL: "GRANT ALL ON `\(configuration.database ?? "")`.* TO '\(user)'@'127.0.0.1'"))
            let setup = MySQLStorage(configuration: configuration, logger: silentLogger)
            defer { setup.close() }
            try setup.migrator.migrate()
            let request = Request(
                id: RequestID(queue: try QueueName("q"), number: 1), uri: SourceURI("git://q/1"),
                createdAt: Date(timeIntervalSince1970: 1_700_000_000))
            try setup.requests.create(request)
            var limited = configuration
            limited.user = user
            limited.password = "pw"
            limited.lockWaitTimeoutSeconds = 20
            let observer = RetryRecorder()
            let storage = MySQLStorage(
                configuration: limited, poolConfiguration: .init(maxConnections: 1), observer: observer,
                logger: silentLogger)
            defer { storage.close() }
            let holder = try MySQLConnection(configuration: configuration)
            defer { holder.close() }
            try holder.executeScript(unsafeSQL: "START TRANSACTION; SELECT n FROM requests WHERE n = 1 FOR UPDATE")
            let error = backendError { () throws(BackendError) in
                try storage.requests.update(request, oldVersion: 1, newVersion: 2)
            }
            guard case .unavailable(let retryable, let detail)? = error else {
                Issue.record("expected unavailable, got \(String(describing: error))")
                return
            }
            #expect(detail.contains("1969"), "\(detail)")
            // On a loaded server the same statement finishes in time once the load passes.
            #expect(retryable)
            #expect(observer.discardedCodes.values.isEmpty)
            try holder.executeScript(unsafeSQL: "ROLLBACK")
            try storage.requests.update(request, oldVersion: 1, newVersion: 2)
            #expect(try storage.requests.get(request.id).version == 2)
        }
    }

    @Test("a closed pool is unavailable and final")
    func closedPool() async throws {
        try await withEmptyDatabase { configuration in
            let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
            try storage.migrator.migrate()
            storage.close()
            #expect(throws: BackendError.unavailable(retryable: false, detail: "mysql: the connection pool is closed")) {
                try storage.counter.next(queue: try QueueName("q"), domain: "request")
            }
        }
    }
}

/// Records the pool's retries, the lock conflicts it gave up on, and its discards by code.
private struct RetryRecorder: MySQLPoolObserver {
    let retriedCodes = Recorder<MySQLErrorCode>()
    let discardedCodes = Recorder<MySQLErrorCode>()
    let failedCodes = Recorder<MySQLErrorCode>()

    func transactionRetried(code: MySQLErrorCode) { retriedCodes.append(code) }
    func lockConflictFailed(code: MySQLErrorCode) { failedCodes.append(code) }
    func connectionDiscarded(code: MySQLErrorCode) { discardedCodes.append(code) }
}

/// Counts the pool events an observer is told of, by kind.
private struct EventCounter: MySQLPoolObserver {
    let acquired = Recorder<Int64>()
    let timedOut = Recorder<Duration>()
    let discarded = Recorder<MySQLErrorCode>()

    func connectionAcquired(waitNanoseconds: Int64) { acquired.append(waitNanoseconds) }
    func acquireTimedOut(wait: Duration) { timedOut.append(wait) }
    func connectionDiscarded(code: MySQLErrorCode) { discarded.append(code) }
}

@Suite("MySQL readiness probe", .enabled(if: mysqlSuitesRun), .serialized)
struct MySQLReadinessProbeTests {
    @Test("the probe answers on a connection of its own while the stores' pool is saturated; a killed one is discarded, counted and replaced by the next probe")
    func ownConnection() async throws {
        try await withEmptyDatabase { configuration in
            let events = EventCounter()
            let storage = MySQLStorage(
                configuration: configuration, poolConfiguration: MySQLPool.Configuration(maxConnections: 1),
                observer: events, logger: silentLogger)
            defer { storage.close() }
            try storage.migrator.migrate()
            #expect(storage.probeReadiness() == .answered(.current))
            // The stores' only connection is leased while the probe runs.
            let during = try storage.pool.withConnection { _ in storage.probeReadiness() }
            #expect(during == .answered(.current))
            #expect(storage.pool.statistics.totalAcquireTimeouts == 0)
            // The observer hears the readiness connection's errors, not its leases.
            #expect(events.acquired.count == Int(storage.pool.statistics.totalAcquired))
            #expect(storage.readinessPool.configuration.maxConnections == 1)
            #expect(storage.readinessPool.configuration.acquireTimeout < .seconds(2))

            let id = try storage.readinessPool.withConnection { $0.connectionID }
            let admin = try MySQLConnection(configuration: configuration)
            defer { admin.close() }
            try admin.execute("KILL CONNECTION \(id)")
            #expect(storage.probeReadiness() == .unavailable)
            #expect(storage.readinessPool.statistics.totalDiscarded == 1)
            #expect(events.discarded.count == 1)
            #expect(storage.probeReadiness() == .answered(.current))
            #expect(storage.readinessPool.statistics.totalOpened == 2)
            #expect(storage.pool.statistics.totalDiscarded == 0)
            #expect(events.timedOut.count == 0)
        }
    }
}

@Suite("MySQL backend error translation")
struct MySQLErrorTranslationTests {
    @Test("an unreachable server is unavailable and retryable, within the connect timeout")
    func outage() async throws {
        var configuration = MySQLConfiguration(host: "127.0.0.1", port: 1, user: "nobody", database: "none")
        configuration.connectTimeoutSeconds = 2
        let storage = MySQLStorage(configuration: configuration, logger: silentLogger)
        defer { storage.close() }
        let id = RequestID(queue: try QueueName("q"), number: 1)
        let error = try await offPool { () -> BackendError? in
            backendError { () throws(BackendError) in _ = try storage.requests.get(id) }
        }
        guard case .unavailable(let retryable, let detail)? = error else {
            Issue.record("expected unavailable, got \(String(describing: error))")
            return
        }
        #expect(retryable)
        #expect(!detail.contains("nobody"))
    }

    @Test("a server refusing a connection for the user's connection limit (1226) is unavailable and retryable", .enabled(if: mysqlSuitesRun))
    func userConnectionLimit() async throws {
        guard let fixture = MySQLFixture.fromEnvironment() else {
            throw FixtureUnavailable("STOVEPIPE_TEST_MYSQL_URL is not set")
        }
        let base = try fixture.baseConfiguration()
        // A per-user limit, as managed databases and shared servers set it: no global setting changes.
        let user = "limited_" + UUID().uuidString.prefix(8).lowercased()
        let error = try await offPool { () -> BackendError? in
            let admin = try MySQLConnection(configuration: base)
            defer { admin.close() }
            try admin.execute(MySQLQuery(unsafeSQL: "CREATE USER '\(user)'@'127.0.0.1' IDENTIFIED BY 'pw' WITH MAX_USER_CONNECTIONS 1"))
            defer { _ = try? admin.execute(MySQLQuery(unsafeSQL: "DROP USER '\(user)'@'127.0.0.1'")) }
            var limited = base
            limited.user = user
            limited.password = "pw"
            let holder = try MySQLConnection(configuration: limited)
            defer { holder.close() }
            let storage = MySQLStorage(configuration: limited, logger: silentLogger)
            defer { storage.close() }
            let id = RequestID(queue: try QueueName("q"), number: 1)
            return backendError { () throws(BackendError) in _ = try storage.requests.get(id) }
        }
        guard case .unavailable(let retryable, let detail)? = error else {
            Issue.record("expected unavailable, got \(String(describing: error))")
            return
        }
        // ER_USER_LIMIT_REACHED for the user's own MAX_USER_CONNECTIONS (1203 for the server-wide max_user_connections).
        #expect(detail.contains("1226"), "\(detail)")
        // Like 1040 (the server's max_connections): the same call succeeds once another connection of the user closes.
        #expect(retryable, "\(detail)")
        #expect(!detail.contains(user))
    }

    @Test("codes map to the domain's errors; details carry only the code")
    func mapping() {
        func translate(_ code: MySQLErrorCode, duplicate: BackendError? = nil) -> BackendError {
            MySQLErrorTranslation.backendError(
                MySQLError(code: code, sqlState: "23000", message: "Duplicate entry 'secret' for key 'PRIMARY'"),
                duplicate: duplicate)
        }
        #expect(translate(.duplicateEntry, duplicate: .alreadyExists) == .alreadyExists)
        #expect(translate(.duplicateEntry) == .unavailable(retryable: false, detail: "mysql error 1062"))
        for code: MySQLErrorCode in [.deadlock, .lockWaitTimeout, .serverGone, .serverLost, .connectionError, .poolTimeout] {
            guard case .unavailable(true, let detail) = translate(code) else {
                Issue.record("code \(code) is not retryable")
                continue
            }
            #expect(!detail.contains("secret"))
        }
        #expect(translate(.syntaxError) == .unavailable(retryable: false, detail: "mysql error 1064"))
        // A statement stopped by the server or an operator, not refused: the same call can succeed when run again.
        for code: MySQLErrorCode in [
            .queryInterrupted, .statementTimeout, .queryExecutionTimeout, .preparedStatementLimit, .needReprepare,
            .nodeNotReady,
        ] {
            guard case .unavailable(true, let detail) = translate(code) else {
                Issue.record("code \(code) is not retryable")
                continue
            }
            #expect(detail.contains(String(code.rawValue)) && !detail.contains("secret"), "\(detail)")
        }
        // A Galera node that left the cluster's primary component keeps answering 1047 until it rejoins; only another
        // connection, which the load balancer may route elsewhere, helps (Galera docs, "WSREP has not yet prepared node").
        #expect(MySQLErrorCode.nodeNotReady.isConnectionBroken)
        #expect(MySQLErrorTranslation.backendError(BackendError.notFound) == .notFound)
        // The codes an operator meets when connecting are named, in fixed words.
        #expect(
            translate(.sslConnectionError)
                == .unavailable(
                    retryable: true,
                    detail: "mysql unavailable (error 2026: TLS could not be set up or the server's certificate was refused)"))
        #expect(translate(.unknownDatabase) == .unavailable(retryable: false, detail: "mysql error 1049: unknown database"))
        #expect(translate(.accessDenied) == .unavailable(retryable: false, detail: "mysql error 1045: access denied (user or password)"))
        // A user with a right password but no privilege on the URL's database (a grant on another one, or none yet).
        #expect(
            translate(.databaseAccessDenied)
                == .unavailable(retryable: false, detail: "mysql error 1044: access denied to the database (the user holds no privilege on it)"))
    }
}

/// The detail of the non-retryable `unavailable` that `body` throws; nil when it succeeds, "unexpected ..." for another error.
func shapeProblem(_ body: () throws(BackendError) -> Void) -> String? {
    do throws(BackendError) {
        try body()
        return nil
    } catch {
        guard case .unavailable(false, let detail) = error else { return "unexpected \(error)" }
        return detail
    }
}
