import Domain
import Logging
import MySQLClient

/// One schema change: a version, a name, and the SQL text that applies it.
public struct MySQLMigration: Sendable, Hashable {
    /// Applied in ascending order; recorded in `schema_migrations` once applied.
    public let version: UInt32
    /// A short label, such as the table it creates.
    public let name: String
    /// The statements, run as one script.
    public let sql: String

    /// Makes a migration.
    public init(version: UInt32, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// How the database schema compares with the migrations this binary knows.
public enum MySQLSchemaStatus: Sendable, Equatable {
    /// Every known migration is applied and nothing else is.
    case current
    /// These known versions are not applied yet: run `migrate`.
    case behind(pending: [UInt32])
    /// Every known migration is applied, and so are versions this binary does not know (a newer release's).
    case ahead(unknown: [UInt32])
}

/// What a readiness probe learns of the database.
public enum MySQLProbe: Sendable, Equatable {
    /// The database answered with its schema's status.
    case answered(MySQLSchemaStatus)
    /// The server refused the user: a wrong password, or no privilege on the database or on `schema_migrations`.
    case permissionDenied
    /// The database did not answer, or failed otherwise.
    case unavailable
}

/// Applies the schema in `Schema/*.sql` and records it in `schema_migrations`.
///
/// A named lock (GET_LOCK, per database) serialises migrators, so two replicas that start together apply each
/// migration once: the second waits, then finds everything applied.
public struct MySQLMigrator: Sendable {
    /// The migrations of this binary, in order; each file of `Schema/` with a `V<version>__` prefix.
    public static let migrations: [MySQLMigration] = [
        MySQLMigration(version: 1, name: "requests", sql: text(PackageResources.V001__requests_sql)),
        MySQLMigration(version: 2, name: "request_uris", sql: text(PackageResources.V002__request_uris_sql)),
        MySQLMigration(version: 3, name: "queues", sql: text(PackageResources.V003__queues_sql)),
        MySQLMigration(version: 4, name: "counters", sql: text(PackageResources.V004__counters_sql)),
        MySQLMigration(version: 100, name: "topic_messages", sql: text(PackageResources.V100__topic_messages_sql)),
        MySQLMigration(version: 101, name: "topic_partitions", sql: text(PackageResources.V101__topic_partitions_sql)),
        MySQLMigration(version: 102, name: "topic_replicas", sql: text(PackageResources.V102__topic_replicas_sql)),
    ]

    /// The bookkeeping table's definition, created before any migration runs.
    static let bookkeepingSQL = text(PackageResources.schema_migrations_sql)

    /// The prefix of the named lock; the rest is a hash of the database name, so databases sharing a
    /// server do not wait for each other and the name stays within GET_LOCK's 64 characters.
    public static let lockPrefix = "stovepipe.migrate."

    /// The read timeout, in seconds, of the connection `migrate` runs on: DDL answers only when it is done, and
    /// an ALTER of a large table can take hours. The lock wait stays bounded by `lockTimeoutSeconds`.
    public static let ddlReadTimeoutSeconds: UInt32 = 86_400

    private let pool: MySQLPool
    private let database: MySQLDatabase
    private let migrations: [MySQLMigration]
    private let lockTimeoutSeconds: UInt32
    private let logger: Logger

    /// Makes a migrator.
    /// - Parameters:
    ///   - pool: connections to the database to migrate.
    ///   - lockTimeoutSeconds: how long to wait for another migrator to finish.
    ///   - logger: receives one info line per applied migration.
    public init(pool: MySQLPool, lockTimeoutSeconds: UInt32 = 120, logger: Logger) {
        self.init(pool: pool, migrations: Self.migrations, lockTimeoutSeconds: lockTimeoutSeconds, logger: logger)
    }

    /// Makes a migrator of other migrations than this binary's, for tests.
    init(pool: MySQLPool, migrations: [MySQLMigration], lockTimeoutSeconds: UInt32 = 120, logger: Logger) {
        self.pool = pool
        self.database = MySQLDatabase(pool: pool)
        self.migrations = migrations
        self.lockTimeoutSeconds = lockTimeoutSeconds
        self.logger = logger
    }

    /// Applies every migration not yet recorded, in order, under the named lock, on a connection of its own
    /// whose read timeout is `ddlReadTimeoutSeconds`.
    /// - Returns: the versions applied by this call (empty when the schema was current).
    /// - Throws: `BackendError.unavailable` when the lock is not granted in time, GET_LOCK fails, a migration
    ///   fails, or a table it creates already exists with other columns (the migration is then not recorded).
    @discardableResult
    public func migrate() throws(BackendError) -> [UInt32] {
        let migrations = migrations
        let lockTimeout = lockTimeoutSeconds
        let logger = logger
        return try withMigrationConnection { connection in
            try Self.requireDatabase(connection)
            return try Self.withLock(connection, timeoutSeconds: lockTimeout) {
                // DDL commits implicitly in MySQL, so each migration is recorded right after it succeeds;
                // the schema files use IF NOT EXISTS so a migration interrupted before its record re-runs safely.
                // Only when it is missing: CREATE TABLE IF NOT EXISTS needs the CREATE privilege and a writable
                // server even when the table exists, and a migrate with nothing to apply should need neither.
                if try !Self.bookkeepingListed(connection) {
                    try Self.requireWritable(connection, pending: migrations.map(\.version))
                    try Self.runScript(
                        Self.bookkeepingSQL, on: connection,
                        failing: "mysql: creating the bookkeeping table `schema_migrations`")
                }
                try Self.requireBookkeepingShape(connection)
                let applied = try Self.appliedVersions(connection)
                let pending = migrations.filter { !applied.contains($0.version) }
                if !pending.isEmpty { try Self.requireWritable(connection, pending: pending.map(\.version)) }
                var newlyApplied: [UInt32] = []
                for migration in pending {
                    try Self.apply(migration, on: connection)
                    // CREATE TABLE IF NOT EXISTS keeps a table of that name whatever its columns, with only a note
                    // (1050), so the migration is recorded only once its tables have the columns it declares.
                    if let (table, problem) = try Self.firstShapeProblem(in: migration, on: connection) {
                        throw BackendError.unavailable(
                            retryable: false,
                            detail: "mysql migration \(migration.version) (\(migration.name)) failed: table "
                                + "`\(table)`\(problem); it was there before, not made by this migration (another "
                                + "application's?): rename or drop it, or use a database of stovepipe's own, then run "
                                + "`stovepipe migrate` again")
                    }
                    try connection.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))")
                    logger.info(
                        "mysql migration applied",
                        metadata: ["mysql.migration.version": "\(migration.version)", "mysql.migration.name": "\(migration.name)"])
                    newlyApplied.append(migration.version)
                }
                return newlyApplied
            }
        }
    }

    /// Runs `body` on a new connection with the pool's settings but a read timeout of `ddlReadTimeoutSeconds` and the
    /// server's lock wait timeouts; a deadlock or lock wait timeout runs it again, as `MySQLDatabase.run` does.
    private func withMigrationConnection<Result>(_ body: (MySQLConnection) throws -> Result) throws(BackendError)
        -> Result
    {
        // Not a pooled connection: MYSQL_OPT_READ_TIMEOUT applies from mysql_real_connect on (the C API sets
        // options between mysql_init and mysql_real_connect), so a pooled connection keeps the pool's 30 s.
        var configuration = pool.connectionConfiguration
        configuration.readTimeoutSeconds = max(configuration.readTimeoutSeconds, Self.ddlReadTimeoutSeconds)
        // The server's lock waits, not the pool's short one: a DDL statement waits for its metadata lock up to
        // lock_wait_timeout (a day by default, MariaDB docs), and a few seconds would fail a migration whenever a
        // transaction holds the table. The named lock is unaffected either way: GET_LOCK waits its own timeout
        // argument, which `lockTimeoutSeconds` bounds.
        configuration.lockWaitTimeoutSeconds = nil
        var attempt = 1
        while true {
            do {
                let connection = try MySQLConnection(
                    configuration: configuration, statementCacheCapacity: pool.configuration.statementCacheCapacity)
                defer { connection.close() }
                return try body(connection)
            } catch let error as MySQLError
                where error.code.isTransient && attempt < pool.configuration.transactionAttempts
            {
                attempt += 1
            } catch {
                throw MySQLErrorTranslation.backendError(error)
            }
        }
    }

    /// Compares the applied versions with this binary's migrations.
    public func status() throws(BackendError) -> MySQLSchemaStatus {
        do {
            return try untranslatedStatus()
        } catch let error as MySQLError where error.code == .tableAccessDenied {
            // information_schema lists only the tables the user holds a privilege on, and one it lists may still
            // not be readable: reading the table tells a user who may not read it from a database never migrated,
            // which `migrate` would not help.
            throw Self.accessDenied(
                "schema_migrations", error, needs: "SELECT on it (or, if `stovepipe migrate` never ran on this database, run it)")
        } catch {
            throw MySQLErrorTranslation.backendError(error)
        }
    }

    /// The schema's status for a readiness probe, telling a user the server refuses from a database that does not answer.
    public func probe() -> MySQLProbe {
        do {
            return .answered(try untranslatedStatus())
        } catch let error as MySQLError where Self.permissionCodes.contains(error.code) {
            return .permissionDenied
        } catch {
            return .unavailable
        }
    }

    /// The codes of a user the server refuses: a wrong password (1045; 1698 for a socket-authenticated user that is
    /// not the OS user), no privilege on the database (1044) or a table (1142) or column (1143) of it, or one the
    /// statement needs (1227). A table grant revoked while serving is refused on open connections from their next
    /// statement (1142), a database grant only on new ones (1044; MySQL manual, "When Privilege Changes Take Effect").
    private static let permissionCodes: Set<MySQLErrorCode> = [
        .accessDenied, .databaseAccessDenied, .tableAccessDenied, MySQLErrorCode(rawValue: 1143),
        MySQLErrorCode(rawValue: 1227), MySQLErrorCode(rawValue: 1698),
    ]

    /// `status` with the errors of the client and the server as they are.
    private func untranslatedStatus() throws -> MySQLSchemaStatus {
        let applied = try pool.withConnectionRetryingLockConflicts { connection -> Set<UInt32> in
            if try !Self.bookkeepingListed(connection) {
                // Only when no table is found: a URL without a database finds none either (readiness probes
                // call this, so a current schema costs no extra round trip).
                try Self.requireDatabase(connection)
            }
            do throws(MySQLError) {
                return try Self.appliedVersions(connection)
            } catch {
                guard error.code == .noSuchTable else { throw error }
                return []
            }
        }
        let known = Set(migrations.map(\.version))
        // Behind wins: a migration this binary needs is missing, whatever newer ones are there too.
        let pending = known.subtracting(applied).sorted()
        if !pending.isEmpty { return .behind(pending: pending) }
        let unknown = applied.subtracting(known).sorted()
        return unknown.isEmpty ? .current : .ahead(unknown: unknown)
    }

    /// Throws when a migration this binary needs is missing, or a table the schema creates differs from its
    /// declaration (see `shapeProblem`) or may not be read, or, with `checkingWrites`, written as `serve` writes it;
    /// call at start-up before serving. Returns the applied versions this binary does not know (empty when
    /// current): migrations only add, so an older release keeps working on a newer schema, as during a rolling
    /// deploy or a rollback. `migrate` passes false: its user may hold DDL privileges only.
    /// - Throws: `BackendError.unavailable(retryable: false, ...)` naming the pending versions or the first table
    ///   and column or key that differ, or the privilege missing, or the lookup's error.
    @discardableResult
    public func requireUpToDate(checkingWrites: Bool = true) throws(BackendError) -> [UInt32] {
        let unknown: [UInt32]
        switch try status() {
        case .current:
            unknown = []
        case .ahead(let newer):
            unknown = newer
        case .behind(let pending):
            throw .unavailable(
                retryable: false,
                detail: "mysql schema is behind: migrations \(pending) are pending; run `stovepipe migrate --mysql-url URL`")
        }
        // Here and in migrate only, not in `status`: readiness probes call that, and this reads every table's columns.
        let migrations = migrations
        let logger = logger
        try database.run { connection in
            try Self.requireBookkeepingShape(connection)
            for migration in migrations {
                guard let (table, problem) = try Self.firstShapeProblem(in: migration, on: connection) else { continue }
                throw BackendError.unavailable(
                    retryable: false,
                    detail: "mysql schema does not match this binary: table `\(table)` (migration "
                        + "\(migration.version))\(problem); restore it to its definition in Schema/, or, if it is "
                        + "another application's table, rename it, delete version \(migration.version) from "
                        + "schema_migrations and run `stovepipe migrate`")
            }
            guard checkingWrites else { return }
            try Self.requireWritePrivileges(
                on: migrations.flatMap { Self.declaredTables(in: $0.sql) }, connection: connection, logger: logger)
        }
        return unknown
    }

    /// The writes `serve` makes to each table of this binary's schema; the bookkeeping is only read. SELECT on
    /// every table is checked by `shapeProblem`.
    static let writesNeeded: [String: [String]] = [
        "requests": ["INSERT", "UPDATE"], "request_uris": ["INSERT", "UPDATE"], "queues": ["INSERT", "UPDATE"],
        "counters": ["INSERT", "UPDATE"], "topic_messages": ["INSERT", "UPDATE", "DELETE"],
        "topic_partitions": ["INSERT", "UPDATE"], "topic_replicas": ["INSERT", "UPDATE", "DELETE"],
    ]

    /// Throws when the user lacks a privilege of `writesNeeded` on one of `tables`, naming it.
    ///
    /// The server is asked, not the grant tables read: EXPLAIN of an INSERT, UPDATE or DELETE checks the statement's
    /// privileges as running it would (global, database, including patterns such as `app\_%`, table, and the
    /// default role's) and writes nothing. Only 1142, a table-level refusal, which the server answers only when the
    /// user holds the privilege on no column of the table either, refuses; anything it cannot tell is a warning.
    private static func requireWritePrivileges(
        on tables: [DeclaredTable], connection: MySQLConnection, logger: Logger
    ) throws {
        for table in tables {
            guard let writes = writesNeeded[table.name], let column = table.columns.first?.name else { continue }
            for privilege in writes {
                let statement: MySQLQuery
                switch privilege {
                case "INSERT": statement = "EXPLAIN INSERT INTO \(identifier: table.name) (\(identifier: column)) VALUES (NULL)"
                case "UPDATE":
                    statement = "EXPLAIN UPDATE \(identifier: table.name) SET \(identifier: column) = \(identifier: column) WHERE FALSE"
                default: statement = "EXPLAIN DELETE FROM \(identifier: table.name) WHERE FALSE"
                }
                do throws(MySQLError) {
                    _ = try connection.query(statement)
                } catch {
                    // A read-only server (1290) refuses every write whatever the grants: nothing more to learn.
                    if error.code == .readOnly {
                        logger.warning(
                            "mysql: the server is read-only (a replica?); the user's write privileges were not checked")
                        return
                    }
                    if error.isConnectionBroken || error.code.isTransient { throw error }
                    if error.code == .tableAccessDenied {
                        let account = try? connection.query("SELECT CURRENT_USER(), DATABASE()").first
                        throw writeDenied(
                            privilege, table: table.name, writes: writes, user: account?.string(0),
                            database: account?.string(1))
                    }
                    logger.warning(
                        "mysql: could not check the user's write privileges; serving",
                        metadata: ["mysql.table": "\(table.name)", "mysql.privilege": "\(privilege)", "mysql.error": "\(error.code)"])
                }
            }
        }
    }

    /// The start-up error for a write privilege the user lacks; names the account (never its password) and database.
    private static func writeDenied(
        _ privilege: String, table: String, writes: [String], user: String?, database: String?
    ) -> BackendError {
        // CURRENT_USER() is user@host, the account the server matched (the host may be a pattern such as %).
        let account = user.map { text -> String in
            guard let at = text.lastIndex(of: "@") else { return "'\(text)'" }
            return "'\(text[..<at])'@'\(text[text.index(after: at)...])'"
        } ?? "this user"
        let grant = (["SELECT"] + writes).joined(separator: ", ")
        return .unavailable(
            retryable: false,
            detail: "mysql: table `\(table)`: \(privilege) denied to \(account) (error 1142), so every write to it would "
                + "fail: grant the user \(grant) on it (GRANT \(grant) ON `\(database ?? "DATABASE")`.`\(table)` TO "
                + "\(account)), or SELECT, INSERT, UPDATE, DELETE on the database")
    }

    private static func apply(_ migration: MySQLMigration, on connection: MySQLConnection) throws {
        try runScript(migration.sql, on: connection, failing: "mysql migration \(migration.version) (\(migration.name))")
    }

    /// Runs this binary's own DDL `sql`; a failure other than a lock conflict is unavailable, its detail starting
    /// with `what` and ending with the server's message.
    private static func runScript(_ sql: String, on connection: MySQLConnection, failing what: String) throws {
        do throws(MySQLError) {
            try connection.executeScript(unsafeSQL: sql)
        } catch {
            // Deadlocks and lock waits go to the retry as they are. The script is this binary's own DDL with no
            // bound values, so the server's message is safe to pass on, and it names what failed.
            guard !error.code.isTransient,
                case .unavailable(let retryable, let detail) = MySQLErrorTranslation.backendError(error)
            else { throw error }
            throw BackendError.unavailable(retryable: retryable, detail: "\(what) failed: \(detail): \(error.message)")
        }
    }

    /// Throws when the server is read-only, as a replica is, whatever the user's privileges: a user that may write
    /// to it anyway (READ_ONLY ADMIN or SUPER) would diverge the replica from its primary, and the primary's own
    /// `schema_migrations` row for a version would then stop replication with a duplicate key (1062).
    private static func requireWritable(_ connection: MySQLConnection, pending: [UInt32]) throws {
        guard try connection.query("SELECT @@GLOBAL.read_only").first?.int64(0) == 1 else { return }
        throw BackendError.unavailable(
            retryable: false,
            detail: "mysql: the server is read-only (read_only is ON), as a replica is: run `stovepipe migrate` against the "
                + "primary; migrations \(pending) are pending, none was applied")
    }

    /// Whether information_schema lists `schema_migrations` in the current database, which it does only when the
    /// table exists and the user holds a privilege on it.
    private static func bookkeepingListed(_ connection: MySQLConnection) throws -> Bool {
        let count = try connection.query(
            """
            SELECT COUNT(*) FROM information_schema.tables
            WHERE table_schema = DATABASE() AND table_name = \("schema_migrations")
            """)
        return count.first?.int64(0) == 1
    }

    /// The error for a table the user may not read (1142); `needs` says what to grant. Not the server's message:
    /// a prepared statement's execution error is withheld (it may quote bound values).
    private static func accessDenied(_ table: String, _ error: MySQLError, needs: String) -> BackendError {
        .unavailable(
            retryable: false,
            detail: "mysql: table `\(table)`: SELECT denied to this user (error \(error.code.rawValue)): "
                + "grant the user \(needs)")
    }

    // Without a database the lock name is NULL (GET_LOCK answers NULL at once) and no table is found.
    private static func requireDatabase(_ connection: MySQLConnection) throws {
        guard try connection.query("SELECT DATABASE()").first?.string(0) != nil else {
            throw BackendError.unavailable(
                retryable: false, detail: "mysql: no database selected: the URL must name one (mysql://USER@HOST/DATABASE)")
        }
    }

    private static func appliedVersions(_ connection: MySQLConnection) throws(MySQLError) -> Set<UInt32> {
        let rows = try connection.query("SELECT version FROM schema_migrations")
        return Set(rows.compactMap { $0.uint64(0).flatMap(UInt32.init(exactly:)) })
    }

    /// A column as a schema file declares it.
    struct DeclaredColumn: Sendable, Hashable {
        /// The column name.
        let name: String
        /// The declared type's name in lower case, such as `varchar`.
        let type: String
        /// Whether it allows NULL (no NOT NULL in its definition).
        let isNullable: Bool
        /// The collation its definition names after COLLATE, in lower case; nil when it names none.
        let collation: String?
        /// The number in parentheses after the type (a length, or fractional-second digits); nil when there is none.
        let size: UInt64?
        /// Whether its definition says UNSIGNED.
        let isUnsigned: Bool

        /// The type as information_schema's column_type spells it, without an integer's display width.
        var typeText: String {
            type + (size.map { "(\($0))" } ?? "") + (isUnsigned ? " unsigned" : "")
        }
    }

    /// A primary key, unique key or index a schema file declares.
    struct DeclaredKey: Sendable, Hashable {
        /// Which of the three it is.
        enum Kind: Sendable, Hashable {
            case primary
            case unique
            case index
        }

        /// Which of the three it is.
        let kind: Kind
        /// Its name; nil for the primary key.
        let name: String?
        /// Its columns, in order.
        let columns: [String]

        /// How a problem names it, such as "unique key `x` (a, b)".
        var description: String {
            let columns = "(\(columns.joined(separator: ", ")))"
            switch kind {
            case .primary: return "primary key \(columns)"
            case .unique: return "unique key `\(name ?? "")` \(columns)"
            case .index: return "key `\(name ?? "")` \(columns)"
            }
        }
    }

    /// A table a schema file creates, with its columns in order.
    struct DeclaredTable: Sendable, Hashable {
        /// The table name.
        let name: String
        /// The columns; keys and constraints are left out.
        let columns: [DeclaredColumn]
        /// The primary key, unique keys and indexes.
        let keys: [DeclaredKey]
        /// The storage engine its options name after ENGINE, such as `InnoDB`; nil when they name none.
        let engine: String?
    }

    /// The tables the `CREATE TABLE` statements of `sql` make. Reads this binary's own schema files, whose
    /// definitions put a column's name first and its type second; not a parser for SQL in general.
    static func declaredTables(in sql: String) -> [DeclaredTable] {
        let tokens = tokens(of: sql)
        let constraints: Set<String> = [
            "PRIMARY", "UNIQUE", "KEY", "INDEX", "CONSTRAINT", "FOREIGN", "CHECK", "FULLTEXT", "SPATIAL",
        ]
        var tables: [DeclaredTable] = []
        var index = 0
        while index + 2 < tokens.count {
            guard tokens[index].uppercased() == "CREATE", tokens[index + 1].uppercased() == "TABLE" else {
                index += 1
                continue
            }
            index += 2
            if index + 3 < tokens.count, tokens[index..<index + 3].map({ $0.uppercased() }) == ["IF", "NOT", "EXISTS"] {
                index += 3
            }
            guard index + 1 < tokens.count, tokens[index + 1] == "(" else { continue }
            let name = tokens[index]
            index += 2
            var columns: [DeclaredColumn] = []
            var keys: [DeclaredKey] = []
            var definition: [String] = []
            var depth = 0
            while index < tokens.count {
                let token = tokens[index]
                index += 1
                if depth == 0 && (token == "," || token == ")") {
                    if definition.count >= 2, !constraints.contains(definition[0].uppercased()) {
                        let upper = definition.map { $0.uppercased() }
                        let notNull = zip(upper, upper.dropFirst()).contains { $0 == "NOT" && $1 == "NULL" }
                        let collation = upper.firstIndex(of: "COLLATE").flatMap { at in
                            at + 1 < definition.count ? definition[at + 1].lowercased() : nil
                        }
                        let size = definition.count > 3 && definition[2] == "(" ? UInt64(definition[3]) : nil
                        columns.append(
                            DeclaredColumn(
                                name: definition[0], type: definition[1].lowercased(), isNullable: !notNull,
                                collation: collation, size: size, isUnsigned: upper.contains("UNSIGNED")))
                    } else if let key = declaredKey(definition) {
                        keys.append(key)
                    }
                    definition = []
                    if token == ")" { break }
                    continue
                }
                if token == "(" { depth += 1 } else if token == ")" { depth -= 1 }
                definition.append(token)
            }
            var engine: String?
            var option = index
            while option + 1 < tokens.count, tokens[option] != ";", tokens[option].uppercased() != "CREATE" {
                if tokens[option].uppercased() == "ENGINE" { engine = tokens[option + 1] }
                option += 1
            }
            tables.append(DeclaredTable(name: name, columns: columns, keys: keys, engine: engine))
        }
        return tables
    }

    /// The key a definition such as `UNIQUE KEY name (a, b)` declares; nil for a column or another constraint.
    private static func declaredKey(_ definition: [String]) -> DeclaredKey? {
        guard let open = definition.firstIndex(of: "("), open > 0 else { return nil }
        let words = definition[..<open].map { $0.uppercased() }
        let kind: DeclaredKey.Kind
        switch words.first {
        case "PRIMARY": kind = .primary
        case "UNIQUE": kind = .unique
        case "KEY", "INDEX": kind = .index
        default: return nil
        }
        let name = kind == .primary || ["KEY", "INDEX", "UNIQUE"].contains(words[open - 1]) ? nil : definition[open - 1]
        // The column list up to its closing parenthesis; a prefix length such as `c(10)` is left out.
        var columns: [String] = []
        var depth = 0
        for token in definition[(open + 1)...] {
            if token == "(" {
                depth += 1
            } else if token == ")" {
                if depth == 0 { break }
                depth -= 1
            } else if depth == 0 && token != "," && !["ASC", "DESC"].contains(token.uppercased()) {
                columns.append(token)
            }
        }
        return DeclaredKey(kind: kind, name: name, columns: columns)
    }

    /// Words (backquotes removed), `(`, `)`, `,` and `;`; comments and string literals are skipped.
    private static func tokens(of sql: String) -> [String] {
        var tokens: [String] = []
        var word = ""
        var scalars = sql.unicodeScalars.makeIterator()
        var pending = scalars.next()
        func flush() {
            if !word.isEmpty { tokens.append(word) }
            word = ""
        }
        while let scalar = pending {
            pending = scalars.next()
            switch scalar {
            case "-" where pending == "-":
                flush()
                while let skipped = pending, skipped != "\n" { pending = scalars.next() }
            case "`":
                flush()
                while let quoted = pending, quoted != "`" {
                    word.unicodeScalars.append(quoted)
                    pending = scalars.next()
                }
                pending = scalars.next()
                flush()
            case "'", "\"":
                flush()
                while let quoted = pending, quoted != scalar { pending = scalars.next() }
                pending = scalars.next()
            case "(", ")", ",", ";":
                flush()
                tokens.append(String(scalar))
            default:
                if scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "_" || scalar == "$" {
                    word.unicodeScalars.append(scalar)
                } else {
                    flush()
                }
            }
        }
        flush()
        return tokens
    }

    /// The family of a type name: a declared and a found type need only agree on it (an INT widened to BIGINT
    /// by hand still holds every value).
    static func typeFamily(_ type: String) -> String {
        switch type.lowercased() {
        case "tinyint", "smallint", "mediumint", "int", "integer", "bigint", "bool", "boolean": "integer"
        case "char", "varchar", "tinytext", "text", "mediumtext", "longtext": "text"
        case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob": "binary"
        case "date", "datetime", "timestamp": "date-time"
        case "decimal", "numeric", "dec", "fixed": "decimal"
        case "float", "double", "real": "floating-point"
        case let other: other
        }
    }

    /// How `table` in the database differs from its declaration, as the rest of a sentence that names the table
    /// (" does not exist", ": column `x` is missing", ...): a declared column missing or of another type family,
    /// nullability or collation, or narrower; a column not declared that inserts cannot leave out; another engine;
    /// a declared key missing. Nil when none of these; throws when the user may not read the table.
    private static func shapeProblem(of table: DeclaredTable, on connection: MySQLConnection) throws -> String? {
        // information_schema lists the columns of a table the user holds any privilege on, and none of one it holds
        // none on: reading the table tells a missing table from one the user may not read, which every store needs.
        do throws(MySQLError) {
            _ = try connection.query("SELECT 1 FROM \(identifier: table.name) LIMIT 0")
        } catch {
            guard error.code == .noSuchTable else {
                guard error.code == .tableAccessDenied else { throw error }
                let needs = table.name == "schema_migrations" ? "SELECT on it" : "SELECT, INSERT, UPDATE and DELETE on it"
                throw accessDenied(table.name, error, needs: needs)
            }
            return " does not exist"
        }
        let rows = try connection.query(
            """
            SELECT column_name, data_type, is_nullable, collation_name, column_default, extra, column_type,
                character_maximum_length, datetime_precision
            FROM information_schema.columns
            WHERE table_schema = DATABASE() AND table_name = \(table.name)
            ORDER BY ordinal_position
            """)
        guard !rows.isEmpty else { return " does not exist" }
        var found: [String: FoundColumn] = [:]
        for row in rows {
            guard let name = row.string(0), let type = row.string(1) else { continue }
            // Column names are not case-sensitive in MariaDB (Identifier Case-sensitivity).
            found[name.lowercased()] = FoundColumn(
                type: type.lowercased(), isNullable: row.string(2) == "YES", collation: row.string(3)?.lowercased(),
                columnType: row.string(6)?.lowercased() ?? type.lowercased(), maximumLength: row.uint64(7),
                fractionalDigits: row.uint64(8))
        }
        for column in table.columns {
            guard let actual = found[column.name.lowercased()] else { return ": column `\(column.name)` is missing" }
            if typeFamily(actual.type) != typeFamily(column.type) {
                return ": column `\(column.name)` is \(actual.type), where Schema/ declares \(column.type)"
            }
            if actual.isNullable != column.isNullable {
                return ": column `\(column.name)` \(actual.isNullable ? "allows NULL" : "is NOT NULL"), where Schema/ "
                    + "declares it \(column.isNullable ? "NULL" : "NOT NULL")"
            }
            if !holdsEveryValue(of: column, in: actual) {
                return ": column `\(column.name)` is \(actual.columnType), narrower than Schema/'s \(column.typeText)"
            }
            // The collation decides equality in keys and lookups: a _ci one makes git://h/A and git://h/a one URI.
            if let declared = column.collation, actual.collation != declared {
                return ": column `\(column.name)` has collation \(actual.collation ?? "none"), where Schema/ declares "
                    + declared
            }
        }
        // A column this binary does not know (a newer release's, as after a rollback) is fine unless an insert that
        // leaves it out fails: NOT NULL without a default fails every insert in strict mode (1364). MariaDB's
        // column_default is NULL only when there is no default (DEFAULT NULL reads 'NULL').
        let declared = Set(table.columns.map { $0.name.lowercased() })
        for row in rows {
            guard let name = row.string(0), !declared.contains(name.lowercased()), row.string(2) == "NO",
                row.string(4) == nil
            else { continue }
            let extra = row.string(5)?.lowercased() ?? ""
            if extra.contains("auto_increment") || extra.contains("generated") { continue }
            return ": column `\(name)` is NOT NULL without a default and not in Schema/ (a newer release's?): every "
                + "insert of this binary would fail; give it a default, or run the release that added it"
        }
        // Only InnoDB has the transactions and row locks the stores rely on; another engine ignores them silently.
        if let engine = table.engine {
            let found = try connection.query(
                """
                SELECT engine FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = \(table.name)
                """
            ).first?.string(0)
            if let found, found.lowercased() != engine.lowercased() {
                return ": its engine is \(found), where Schema/ declares \(engine)"
            }
        }
        return try keyProblem(of: table, on: connection)
    }

    /// A column as information_schema.columns describes it.
    private struct FoundColumn {
        /// data_type, such as `varchar`.
        let type: String
        /// is_nullable is YES.
        let isNullable: Bool
        /// collation_name in lower case; nil for a column without one.
        let collation: String?
        /// column_type, such as `bigint(20) unsigned`.
        let columnType: String
        /// character_maximum_length: characters of a text column, bytes of a binary one.
        let maximumLength: UInt64?
        /// datetime_precision.
        let fractionalDigits: UInt64?
    }

    /// Whether `found` holds every value `declared` does, so that strict mode refuses no write the schema allows
    /// (1406 for a longer string, 1264 for a larger number) and no fraction of a second is dropped; a wider
    /// column does. `declared` and `found` are of one type family.
    private static func holdsEveryValue(of declared: DeclaredColumn, in found: FoundColumn) -> Bool {
        switch typeFamily(declared.type) {
        case "integer":
            let bits: [String: Int] = [
                "tinyint": 8, "bool": 8, "boolean": 8, "smallint": 16, "mediumint": 24, "int": 32, "integer": 32,
                "bigint": 64,
            ]
            guard let wanted = bits[declared.type], let have = bits[found.type] else { return true }
            let foundUnsigned = found.columnType.contains("unsigned")
            // A signed column holds an unsigned one's values only with a bit more; an unsigned one no negative value.
            if declared.isUnsigned == foundUnsigned { return have >= wanted }
            return declared.isUnsigned && have > wanted
        case "text", "binary":
            let capacities: [String: UInt64] = [
                "tinytext": 255, "tinyblob": 255, "text": 65_535, "blob": 65_535, "mediumtext": 16_777_215,
                "mediumblob": 16_777_215, "longtext": 4_294_967_295, "longblob": 4_294_967_295,
            ]
            guard let wanted = declared.size ?? capacities[declared.type], let have = found.maximumLength else {
                return true
            }
            return have >= wanted
        case "date-time":
            guard declared.type != "date", let have = found.fractionalDigits else { return true }
            return have >= (declared.size ?? 0)
        default:
            return true
        }
    }

    /// The first key of `table` that the database lacks, or the first unique key it has that Schema/ does not
    /// imply, as the rest of a sentence; nil when neither. A key counts as there when an index has its columns in
    /// order (a primary key: the primary key; a unique key: a unique index), whatever its name.
    private static func keyProblem(of table: DeclaredTable, on connection: MySQLConnection) throws -> String? {
        let rows = try connection.query(
            """
            SELECT index_name, column_name, non_unique, sub_part FROM information_schema.statistics
            WHERE table_schema = DATABASE() AND table_name = \(table.name)
            ORDER BY index_name, seq_in_index
            """)
        var indexes: [String: (columns: [String], isUnique: Bool)] = [:]
        for row in rows {
            guard let name = row.string(0), let column = row.string(1) else { continue }
            // A prefix of a column (sub_part) is not the column: values that share the prefix collide on it.
            let part = row.uint64(3).map { "\(column.lowercased())(\($0))" } ?? column.lowercased()
            indexes[name, default: ([], row.int64(2) == 0)].columns.append(part)
        }
        for key in table.keys {
            let columns = key.columns.map { $0.lowercased() }
            let present: Bool
            switch key.kind {
            case .primary: present = indexes["PRIMARY"]?.columns == columns
            case .unique: present = indexes.values.contains { $0.isUnique && $0.columns == columns }
            case .index: present = indexes.values.contains { $0.columns == columns }
            }
            if !present { return ": \(key.description) is missing" }
        }
        // The stores read a duplicate entry (1062) as a second create of one row. Rows equal on a superset of a declared
        // key's columns are equal on that key, so such a unique index only repeats it; any other makes a 1062 that is not.
        let declaredUnique = table.keys.filter { $0.kind != .index }.map { Set($0.columns.map { $0.lowercased() }) }
        for (name, index) in indexes.sorted(by: { $0.key < $1.key }) where index.isUnique {
            let columns = Set(index.columns)
            if declaredUnique.contains(where: { $0.isSubset(of: columns) }) { continue }
            return ": unique key `\(name)` (\(index.columns.joined(separator: ", "))) is not in Schema/, so a duplicate "
                + "on it would be taken for a second create of one row; drop it (ALTER TABLE `\(table.name)` DROP INDEX "
                + "`\(name)`)"
        }
        return nil
    }

    /// The first table `migration` creates that differs from its declaration, and how (see `shapeProblem`).
    private static func firstShapeProblem(
        in migration: MySQLMigration, on connection: MySQLConnection
    ) throws -> (table: String, problem: String)? {
        for table in declaredTables(in: migration.sql) {
            if let problem = try shapeProblem(of: table, on: connection) { return (table.name, problem) }
        }
        return nil
    }

    /// Throws when `schema_migrations` lacks the columns the migrator uses, as another tool's table of that name may.
    private static func requireBookkeepingShape(_ connection: MySQLConnection) throws {
        for table in declaredTables(in: bookkeepingSQL) {
            guard let problem = try shapeProblem(of: table, on: connection) else { continue }
            throw BackendError.unavailable(
                retryable: false,
                detail: "mysql: table `\(table.name)` is not the migrator's bookkeeping\(problem); it is most likely "
                    + "another migration tool's: use a database of stovepipe's own")
        }
    }

    private static func withLock<Result>(
        _ connection: MySQLConnection, timeoutSeconds: UInt32, _ body: () throws -> Result
    ) throws -> Result {
        // GET_LOCK returns 1 when granted, 0 on timeout and NULL on error; the lock belongs to this session.
        // One wait longer than the read timeout would end in a lost connection (2013), so wait in slices.
        let slice = max(1, connection.configuration.readTimeoutSeconds / 2)
        var remaining = timeoutSeconds
        var granted: Int64?
        repeat {
            let wait = min(slice, remaining)
            remaining -= wait
            granted = try connection.query(
                "SELECT GET_LOCK(CONCAT(\(lockPrefix), LEFT(SHA2(DATABASE(), 256), 40)), \(wait))").first?.int64(0)
        } while granted == 0 && remaining > 0
        if granted == 0 {
            // A migrate killed while the server still runs its statement (an ALTER, which does not notice the client
            // is gone) holds the lock until that statement ends: name the session so the operator can look at it.
            let holder = try? connection.query(
                "SELECT IS_USED_LOCK(CONCAT(\(lockPrefix), LEFT(SHA2(DATABASE(), 256), 40)))").first?.uint64(0)
            let session = holder.map { " (connection \($0): SHOW PROCESSLIST shows what it runs)" } ?? ""
            throw BackendError.unavailable(
                retryable: true,
                detail: "mysql: another migrator holds the schema lock\(session); waited \(timeoutSeconds) s")
        }
        guard granted == 1 else {
            // NULL is an error, not a wait that ran out: MariaDB answers NULL when the GET_LOCK query is killed
            // (KILL QUERY), and on errors such as running out of memory (MariaDB docs, GET_LOCK).
            throw BackendError.unavailable(
                retryable: false,
                detail: "mysql: GET_LOCK of the schema lock answered NULL (an error, such as its query being killed), "
                    + "not a timeout; no migration ran")
        }
        defer {
            _ = try? connection.query("SELECT RELEASE_LOCK(CONCAT(\(lockPrefix), LEFT(SHA2(DATABASE(), 256), 40)))")
        }
        return try body()
    }

    private static func text(_ bytes: [UInt8]) -> String {
        String(decoding: bytes, as: UTF8.self)
    }
}
