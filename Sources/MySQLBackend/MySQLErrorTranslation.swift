import Domain
import MySQLClient

/// The one place where MySQL client errors become `BackendError`; the domain never sees a MySQL code.
enum MySQLErrorTranslation {
    /// Translates `error`; `duplicate` is what ER_DUP_ENTRY (1062) means for the statement at hand
    /// (`alreadyExists` for a create), and nil where a duplicate cannot legitimately happen.
    static func backendError(_ error: any Error, duplicate: BackendError? = nil) -> BackendError {
        if let backendError = error as? BackendError { return backendError }
        guard let error = error as? MySQLError else {
            return .unavailable(retryable: false, detail: "mysql backend: unexpected error")
        }
        if error.code == .duplicateEntry, let duplicate { return duplicate }
        // Details carry only the numeric code: server messages may quote user data.
        if error.code == .poolTimeout {
            return .unavailable(retryable: true, detail: "mysql: no connection free within the pool timeout")
        }
        if error.code == .poolClosed {
            return .unavailable(retryable: false, detail: "mysql: the connection pool is closed")
        }
        let code = error.code.summary.map { "\(error.code.rawValue): \($0)" } ?? "\(error.code.rawValue)"
        if error.isConnectionBroken || isRetryable(error.code) {
            return .unavailable(retryable: true, detail: "mysql unavailable (error \(code))")
        }
        return .unavailable(retryable: false, detail: "mysql error \(code)")
    }

    /// Codes after which the same call may succeed later: lock conflicts the pool did not run again (a lock wait
    /// timeout, or a deadlock past its retries), a server that is full or going down, and a statement the server
    /// stopped rather than refused.
    private static func isRetryable(_ code: MySQLErrorCode) -> Bool {
        // Stopped, not refused: KILL QUERY by an operator or a shutdown (1317), a statement time limit on a loaded
        // server (MariaDB's max_statement_time 1969, MySQL's max_execution_time 3024), a table altered under the
        // statement while the server re-prepared it (1615), the server-wide max_prepared_stmt_count (1461), which
        // frees as other sessions close statements.
        if code == .queryInterrupted || code == .statementTimeout || code == .queryExecutionTimeout
            || code == .needReprepare || code == .preparedStatementLimit
        {
            return true
        }
        // A user's connection limit refuses a connect as the server's max_connections (1040) does, until another of
        // the user's connections closes: ER_TOO_MANY_USER_CONNECTIONS (1203) for the server-wide max_user_connections,
        // ER_USER_LIMIT_REACHED (1226) for the account's MAX_USER_CONNECTIONS (MariaDB docs, max_user_connections).
        return code.isTransient || code == .tooManyConnections || code == .tooManyUserConnections
            || code == .userLimitReached || code == .serverShutdown
    }

    /// A row that does not decode into a domain value; never retryable.
    static func corruptRow(_ table: String) -> BackendError {
        .unavailable(retryable: false, detail: "mysql: a \(table) row does not decode")
    }
}

/// The unique key whose duplicate entry (1062) a store's write takes as "the row exists".
struct ExpectedDuplicate: Sendable {
    /// The table written.
    let table: String
    /// The key's name, `PRIMARY` for the primary key.
    let key: String
    /// The key's columns.
    let columns: [String]

    /// Whether the 1062 `error` came from this key, or from a unique index that only repeats it (one whose whole
    /// columns include all of the key's: rows equal on them are equal on the key). True as well when the server's
    /// message named no key (another language): the start-up check refuses unique keys that Schema/ does not imply.
    func matches(_ error: MySQLError, on connection: MySQLConnection) throws(MySQLError) -> Bool {
        guard let named = error.duplicateKey else { return true }
        // MySQL 8.0.19 and later name the key `table.key`.
        let name = named.hasPrefix(table + ".") ? String(named.dropFirst(table.count + 1)) : named
        if name == key { return true }
        let rows = try connection.query(
            """
            SELECT column_name, sub_part FROM information_schema.statistics
            WHERE table_schema = DATABASE() AND table_name = \(table) AND index_name = \(name) AND non_unique = 0
            """)
        let whole = Set(rows.compactMap { $0.uint64(1) == nil ? $0.string(0)?.lowercased() : nil })
        return !rows.isEmpty && Set(columns).isSubset(of: whole)
    }

    /// Runs `write` on `connection`; a duplicate entry from this key is rethrown for the caller's `duplicate`, one
    /// from another unique key becomes a final `unavailable` that names the key (never the value).
    func guarding<Result>(
        _ connection: MySQLConnection, _ write: (MySQLConnection) throws(MySQLError) -> Result
    ) throws -> Result {
        do throws(MySQLError) {
            return try write(connection)
        } catch {
            guard error.code == .duplicateEntry, try !matches(error, on: connection) else { throw error }
            throw BackendError.unavailable(
                retryable: false,
                detail: "mysql: a write to `\(table)` collided with unique key `\(error.duplicateKey ?? "")` (error 1062), "
                    + "which Schema/ does not define: it is not a second create of one row; drop the key")
        }
    }
}
