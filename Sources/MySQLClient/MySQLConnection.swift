internal import CMySQL

/// What an INSERT, UPDATE, DELETE or DDL statement reported.
public struct MySQLExecuteResult: Sendable, Hashable {
    /// Rows changed (or matched, with `reportsMatchedRows`); for a SELECT, the rows returned.
    public let affectedRows: UInt64
    /// The AUTO_INCREMENT value the statement generated, or the argument of `LAST_INSERT_ID(expr)`; 0 if none.
    public let lastInsertID: UInt64

    /// Makes a result.
    public init(affectedRows: UInt64, lastInsertID: UInt64) {
        self.affectedRows = affectedRows
        self.lastInsertID = lastInsertID
    }
}

/// One blocking connection to a MySQL or MariaDB server, with a cache of prepared statements keyed by SQL text.
///
/// Every call blocks the calling thread, so call it from your own threads, never from Swift's cooperative pool.
/// The C API is thread-safe per connection, not across threads on one connection: a connection is used by one
/// thread at a time, which the pool's lease guarantees. Hence it is not `Sendable`.
public final class MySQLConnection {
    /// What the connection was opened with.
    public let configuration: MySQLConfiguration
    /// The most prepared statements kept open; the least recently used is closed beyond this.
    public let statementCacheCapacity: Int
    /// When the connection last completed a command; the pool pings connections idle for long.
    public var lastUsed: ContinuousClock.Instant {
        .now - .nanoseconds(BootClock.nanoseconds() &- lastUsedNanoseconds)
    }
    /// `lastUsed` on `BootClock`: read and written once per command, so kept as a plain integer.
    private(set) var lastUsedNanoseconds: Int64

    private var handle: UnsafeMutablePointer<MYSQL>?
    // Unchecked: a connection is used by one thread at a time (it is not Sendable) and no method touches the
    // cache while iterating it, so the runtime's exclusivity check on every lookup has nothing to catch.
    @exclusivity(unchecked) private var statements: [MySQLQuery.Text: PreparedStatement] = [:]
    private var useCounter: UInt64 = 0
    private var brokenReason: MySQLError?

    /// Connects.
    /// - Parameters:
    ///   - configuration: server, credentials and options.
    ///   - statementCacheCapacity: the most prepared statements kept open at once.
    /// - Throws: `MySQLError` from the client library or the server (a connection-lost code when unreachable).
    public init(configuration: MySQLConfiguration, statementCacheCapacity: Int = 128) throws(MySQLError) {
        try MySQLLibrary.initialize()
        self.configuration = configuration
        self.statementCacheCapacity = max(1, statementCacheCapacity)
        self.lastUsedNanoseconds = BootClock.nanoseconds()
        guard let mysql = mysql_init(nil) else {
            throw MySQLError(code: .outOfMemory, message: "mysql_init could not allocate a connection")
        }
        do throws(MySQLError) {
            try Self.applyOptions(configuration, to: mysql)
            try Self.connect(mysql, configuration)
            if let seconds = configuration.lockWaitTimeoutSeconds {
                try Self.setLockWaitTimeouts(seconds, on: mysql)
            }
        } catch {
            mysql_close(mysql)
            throw error
        }
        handle = mysql
    }

    deinit {
        close()
    }

    /// Closes every prepared statement, then the connection; later calls throw `connectionClosed`.
    public func close() {
        // mysql_stmt_close needs the connection alive to free the statement on the server.
        for statement in statements.values { statement.close() }
        statements.removeAll()
        if let handle { mysql_close(handle) }
        handle = nil
    }

    /// False once closed, or once an error showed the connection cannot be used again.
    public var isUsable: Bool { handle != nil && brokenReason == nil }

    /// The code of the error that made the connection unusable, if one did.
    var brokenCode: MySQLErrorCode? { brokenReason?.code }

    /// The server's id of this connection, as `CONNECTION_ID()` returns it; 0 when closed.
    public var connectionID: UInt64 {
        guard let handle else { return 0 }
        return UInt64(mysql_thread_id(handle))
    }

    /// True while a transaction is open (SERVER_STATUS_IN_TRANS from the last OK packet).
    public var isInTransaction: Bool {
        guard let handle else { return false }
        return handle.pointee.server_status & UInt32(SERVER_STATUS_IN_TRANS) != 0
    }

    /// The server version, such as `10.11.19-MariaDB`.
    public var serverVersion: String {
        guard let handle, let text = mysql_get_server_info(handle) else { return "" }
        return String(cString: text)
    }

    /// How many prepared statements are cached.
    public var cachedStatementCount: Int { statements.count }

    /// Runs `query` and returns its rows (none for statements without a result set).
    /// - Throws: `MySQLError`; after a connection-level error the connection is no longer usable.
    public func query(_ query: MySQLQuery) throws(MySQLError) -> [MySQLRow] {
        try run(query).rows
    }

    /// Runs `query` and returns the affected rows and last insert id; any result set is read and dropped.
    /// - Throws: `MySQLError`; after a connection-level error the connection is no longer usable.
    @discardableResult
    public func execute(_ query: MySQLQuery) throws(MySQLError) -> MySQLExecuteResult {
        let outcome = try run(query)
        return MySQLExecuteResult(affectedRows: outcome.affectedRows, lastInsertID: outcome.lastInsertID)
    }

    /// Runs SQL text that may hold several `;`-separated statements, such as a migration, without binds.
    ///
    /// Uses the text protocol with multi-statements switched on for this call only. Server messages are kept,
    /// since the text carries no bound values; never splice user values into `unsafeSQL`.
    /// - Throws: `MySQLError` of the first statement that failed; later statements do not run.
    public func executeScript(unsafeSQL: String) throws(MySQLError) {
        let mysql = try usableHandle()
        guard mysql_set_server_option(mysql, MYSQL_OPTION_MULTI_STATEMENTS_ON) == 0 else { throw fail(mysql) }
        var scriptError: MySQLError?
        do throws(MySQLError) {
            try Self.realQuery(unsafeSQL, on: mysql)
            try drainResults(mysql)
        } catch {
            scriptError = error
            // The remaining results of a failed multi-statement are discarded by the server; drain the client.
            while mysql_more_results(mysql) != 0 && mysql_next_result(mysql) == 0 {
                if let result = mysql_store_result(mysql) { mysql_free_result(result) }
            }
        }
        let optionStatus = mysql_set_server_option(mysql, MYSQL_OPTION_MULTI_STATEMENTS_OFF)
        if let scriptError { throw record(scriptError) }
        guard optionStatus == 0 else { throw fail(mysql) }
        lastUsedNanoseconds = BootClock.nanoseconds()
    }

    /// Checks the server still answers (COM_PING); MYSQL_OPT_RECONNECT is off, so it never reconnects.
    /// - Throws: `MySQLError`, usually a connection-lost code.
    public func ping() throws(MySQLError) {
        let mysql = try usableHandle()
        guard mysql_ping(mysql) == 0 else { throw fail(mysql) }
        lastUsedNanoseconds = BootClock.nanoseconds()
    }

    /// Runs `body` inside START TRANSACTION ... COMMIT; on any error it rolls back and rethrows.
    ///
    /// When the rollback itself fails, the connection is marked unusable so no pool reuses it.
    /// - Throws: the error of `body` or of COMMIT; `MySQLError` when a transaction is already open.
    public func withTransaction<Result>(_ body: (MySQLConnection) throws -> Result) throws -> Result {
        guard !isInTransaction else {
            throw MySQLError(code: .invalidArgument, message: "a transaction is already open on this connection")
        }
        try executeText("START TRANSACTION")
        do {
            let result = try body(self)
            try executeText("COMMIT")
            return result
        } catch {
            rollbackOrMarkBroken()
            throw error
        }
    }

    /// Rolls back; a failed rollback leaves the transaction's state unknown, so the connection is retired.
    func rollbackOrMarkBroken() {
        guard handle != nil else { return }
        do throws(MySQLError) {
            try executeText("ROLLBACK")
        } catch {
            brokenReason = brokenReason ?? error
        }
    }

    private func executeText(_ sql: String) throws(MySQLError) {
        let mysql = try usableHandle()
        do throws(MySQLError) {
            try Self.realQuery(sql, on: mysql)
            try drainResults(mysql)
        } catch {
            throw record(error)
        }
        lastUsedNanoseconds = BootClock.nanoseconds()
    }

    private func run(_ query: MySQLQuery) throws(MySQLError) -> ExecutionOutcome {
        let mysql = try usableHandle()
        let statement = try cachedStatement(for: query.text, on: mysql)
        guard statement.parameterCount == query.binds.count else {
            throw MySQLError(
                code: .bindCountMismatch,
                message: "the statement has \(statement.parameterCount) placeholders but \(query.binds.count) values")
        }
        useCounter &+= 1
        statement.lastUse = useCounter
        do throws(MySQLError) {
            let outcome = try statement.execute(query.binds)
            lastUsedNanoseconds = BootClock.nanoseconds()
            return outcome
        } catch where error.code == .newStatementMetadata || error.code == .needReprepare {
            // The table changed under the cached statement; the C API's remedy is to prepare it again (2057), and
            // the server's own when its re-prepares ran out (1615, ER_NEED_REPREPARE).
            statements.removeValue(forKey: query.text)
            statement.close()
            return try runOnce(query, on: mysql)
        } catch {
            // The statement stays cached: after a server error (1062, 1213, ...) it can be executed again.
            throw record(error)
        }
    }

    /// Prepares `query` afresh and executes it once; a second metadata change is an error like any other.
    private func runOnce(_ query: MySQLQuery, on mysql: UnsafeMutablePointer<MYSQL>) throws(MySQLError)
        -> ExecutionOutcome
    {
        let statement = try cachedStatement(for: query.text, on: mysql)
        statement.lastUse = useCounter
        do throws(MySQLError) {
            let outcome = try statement.execute(query.binds)
            lastUsedNanoseconds = BootClock.nanoseconds()
            return outcome
        } catch {
            throw record(error)
        }
    }

    private func cachedStatement(for text: MySQLQuery.Text, on mysql: UnsafeMutablePointer<MYSQL>) throws(MySQLError)
        -> PreparedStatement
    {
        if let statement = statements[text] { return statement }
        let statement: PreparedStatement
        do throws(MySQLError) {
            statement = try PreparedStatement.prepare(text.sql, on: mysql)
        } catch where error.code == .preparedStatementLimit && !statements.isEmpty {
            // max_prepared_stmt_count limits the statements of all sessions together (MariaDB server system
            // variables), so this cache may be far below its capacity and never evict: without room made here, every
            // new SQL text failed on this connection while it held statements it no longer used. Closing our least
            // recently used one (mysql_stmt_close frees it on the server) gives this prepare a slot.
            evictLeastRecentlyUsed()
            do throws(MySQLError) {
                statement = try PreparedStatement.prepare(text.sql, on: mysql)
            } catch {
                throw record(error)
            }
        } catch {
            throw record(error)
        }
        if statements.count >= statementCacheCapacity { evictLeastRecentlyUsed() }
        statements[text] = statement
        return statement
    }

    private func evictLeastRecentlyUsed() {
        guard let oldest = statements.min(by: { $0.value.lastUse < $1.value.lastUse }) else { return }
        oldest.value.close()
        statements.removeValue(forKey: oldest.key)
    }

    private func usableHandle() throws(MySQLError) -> UnsafeMutablePointer<MYSQL> {
        if let brokenReason { throw brokenReason }
        guard let handle else { throw .connectionClosed }
        return handle
    }

    /// Remembers errors after which the connection cannot be used again, and passes every error through.
    private func record(_ error: MySQLError) -> MySQLError {
        if error.isConnectionBroken && brokenReason == nil { brokenReason = error }
        return error
    }

    private func fail(_ mysql: UnsafeMutablePointer<MYSQL>) -> MySQLError {
        record(Self.error(of: mysql))
    }

    private func drainResults(_ mysql: UnsafeMutablePointer<MYSQL>) throws(MySQLError) {
        while true {
            if let result = mysql_store_result(mysql) {
                mysql_free_result(result)
            } else if mysql_field_count(mysql) != 0 {
                throw Self.error(of: mysql)
            }
            // mysql_next_result: 0 = another result follows, -1 = no more, > 0 = the next statement failed.
            let next = mysql_next_result(mysql)
            if next == -1 { return }
            if next > 0 { throw Self.error(of: mysql) }
        }
    }

    private static func realQuery(_ sql: String, on mysql: UnsafeMutablePointer<MYSQL>) throws(MySQLError) {
        var text = sql
        let status = text.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { chars in
                mysql_real_query(mysql, chars.baseAddress, UInt(chars.count))
            }
        }
        guard status == 0 else { throw error(of: mysql) }
    }

    /// The connection's last error with its message; used for connect and text-protocol errors,
    /// which carry no bound values.
    static func error(of mysql: UnsafeMutablePointer<MYSQL>) -> MySQLError {
        let code = MySQLErrorCode(rawValue: mysql_errno(mysql))
        let sqlState = mysql_sqlstate(mysql).map { String(cString: $0) } ?? "HY000"
        let message = mysql_error(mysql).map { String(cString: $0) } ?? ""
        let key = code == .duplicateEntry ? MySQLError.duplicateKeyName(inServerMessage: message) : nil
        return MySQLError(
            code: code, sqlState: sqlState.isEmpty ? "HY000" : sqlState, message: message, duplicateKey: key)
    }

    private static func applyOptions(_ configuration: MySQLConfiguration, to mysql: UnsafeMutablePointer<MYSQL>)
        throws(MySQLError)
    {
        // The timeout options take an `unsigned int *` (C API mysql_options); passing a wider integer
        // is the novi/mysql-swift bug.
        try setOption(mysql, MYSQL_OPT_CONNECT_TIMEOUT, uint32: configuration.connectTimeoutSeconds)
        try setOption(mysql, MYSQL_OPT_READ_TIMEOUT, uint32: configuration.readTimeoutSeconds)
        try setOption(mysql, MYSQL_OPT_WRITE_TIMEOUT, uint32: configuration.writeTimeoutSeconds)
        // A silent reconnect would lose the session's transaction and prepared statements; the pool
        // discards a lost connection instead.
        try setOption(mysql, MYSQL_OPT_RECONNECT, bool: false)
        // A NULL argument would enable LOAD DATA LOCAL, which lets a hostile server read client files.
        try setOption(mysql, MYSQL_OPT_LOCAL_INFILE, uint32: 0)
        try setOption(mysql, MYSQL_REPORT_DATA_TRUNCATION, bool: true)
        try setOption(mysql, MYSQL_SET_CHARSET_NAME, string: "utf8mb4")
        // The handshake's character set is not the last word: the server runs its init_connect (MariaDB docs,
        // init_connect: for every user without SUPER or CONNECTION ADMIN) after it, and many servers carry
        // `SET NAMES utf8` or `latin1` there from older guides, which made a 4-byte character fail with 1366 and
        // stored latin1-read UTF-8 as mojibake. MYSQL_INIT_COMMAND runs after init_connect, so it sets the session's
        // character set again, in the same statement (and round trip) as the time zone.
        // DATETIME values are exchanged as UTC; TIMESTAMP columns convert through the session time zone.
        // sql_mode is set whole rather than trusted: a server running without strict mode (older MySQL defaults, some
        // managed databases) cuts an over-long value with a warning instead of failing (1406), and one with
        // ANSI_QUOTES or PIPES_AS_CONCAT reads SQL differently. NO_ENGINE_SUBSTITUTION makes the schema's InnoDB
        // tables fail to create rather than fall back to an engine without transactions. Every mode named here
        // exists in MySQL 5.7 and 8 and in MariaDB.
        try setOption(
            mysql, MYSQL_INIT_COMMAND,
            string: "SET NAMES utf8mb4, time_zone = '+00:00', sql_mode = "
                + "'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'")
        // With a host, force TCP: libmysql would otherwise take "localhost" to mean the default Unix socket
        // and ignore the port (the Perfect-MySQL lesson).
        let protocolType = configuration.host == nil ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP
        try setOption(mysql, MYSQL_OPT_PROTOCOL, uint32: protocolType.rawValue)
        switch configuration.tlsMode {
        case .disabled:
            break
        case .required:
            try setOption(mysql, MYSQL_OPT_SSL_ENFORCE, bool: true)
            try setOption(mysql, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, bool: false)
        case .verifyIdentity:
            try setOption(mysql, MYSQL_OPT_SSL_ENFORCE, bool: true)
            try setOption(mysql, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, bool: true)
        }
        if let caPath = configuration.tlsCAPath {
            try setOption(mysql, MYSQL_OPT_SSL_CA, string: caPath)
        }
    }

    private static func connect(_ mysql: UnsafeMutablePointer<MYSQL>, _ configuration: MySQLConfiguration)
        throws(MySQLError)
    {
        let texts = [
            configuration.host, configuration.user, configuration.password, configuration.database,
            configuration.socketPath,
        ]
        guard texts.allSatisfy({ !($0?.contains("\0") ?? false) }) else {
            throw MySQLError(code: .invalidArgument, message: "a connection parameter contains a NUL byte")
        }
        let flags = configuration.reportsMatchedRows ? UInt(CLIENT_FOUND_ROWS) : 0
        let port = configuration.host == nil ? 0 : UInt32(configuration.port)
        let connected = withOptionalCString(configuration.host) { host in
            withOptionalCString(configuration.user) { user in
                withOptionalCString(configuration.password) { password in
                    withOptionalCString(configuration.database) { database in
                        withOptionalCString(configuration.socketPath) { socket in
                            mysql_real_connect(mysql, host, user, password, database, port, socket, flags)
                        }
                    }
                }
            }
        }
        guard connected != nil else { throw error(of: mysql) }
        // Connector/C fails MYSQL_OPT_SSL_ENFORCE against a server without TLS only when it also verifies the
        // certificate; otherwise it connects in plain text. mysql_get_ssl_cipher is NULL without TLS.
        if configuration.tlsMode != .disabled && mysql_get_ssl_cipher(mysql) == nil {
            throw MySQLError(
                code: .sslConnectionError, message: "TLS is required (ssl-mode), but the connection is not encrypted")
        }
    }

    /// Sets the session's row-lock and metadata-lock waits, so the server ends a long wait with 1205
    /// (ER_LOCK_WAIT_TIMEOUT) and the connection stays usable, instead of the read timeout dropping it.
    private static func setLockWaitTimeouts(_ seconds: UInt32, on mysql: UnsafeMutablePointer<MYSQL>)
        throws(MySQLError)
    {
        // Bound, not spliced into MYSQL_INIT_COMMAND: MariaDB prepares SET with `?` values. Run once and closed
        // rather than cached, so it takes no slot of the statement cache or of max_prepared_stmt_count.
        let statement = try PreparedStatement.prepare(
            "SET SESSION innodb_lock_wait_timeout = ?, lock_wait_timeout = ?", on: mysql)
        defer { statement.close() }
        _ = try statement.execute([.uint64(UInt64(seconds)), .uint64(UInt64(seconds))])
    }

    private static func setOption(_ mysql: UnsafeMutablePointer<MYSQL>, _ option: mysql_option, uint32 value: UInt32)
        throws(MySQLError)
    {
        var value = value
        try check(mysql_options(mysql, option, &value), option)
    }

    private static func setOption(_ mysql: UnsafeMutablePointer<MYSQL>, _ option: mysql_option, bool value: Bool)
        throws(MySQLError)
    {
        // my_bool is a C char.
        var flag: my_bool = value ? 1 : 0
        try check(mysql_options(mysql, option, &flag), option)
    }

    private static func setOption(_ mysql: UnsafeMutablePointer<MYSQL>, _ option: mysql_option, string value: String)
        throws(MySQLError)
    {
        guard !value.contains("\0") else {
            throw MySQLError(code: .invalidArgument, message: "option \(option.rawValue) contains a NUL byte")
        }
        try check(value.withCString { mysql_options(mysql, option, $0) }, option)
    }

    private static func check(_ status: Int32, _ option: mysql_option) throws(MySQLError) {
        guard status == 0 else {
            throw MySQLError(code: .invalidArgument, message: "mysql_options rejected option \(option.rawValue)")
        }
    }

    private static func withOptionalCString<Result>(
        _ text: String?, _ body: (UnsafePointer<CChar>?) -> Result
    ) -> Result {
        guard let text else { return body(nil) }
        return text.withCString { body($0) }
    }
}

@available(*, unavailable)
extension MySQLConnection: Sendable {}
