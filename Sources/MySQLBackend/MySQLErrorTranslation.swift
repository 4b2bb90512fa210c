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
