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

    /// Codes after which the same call may succeed later: lock conflicts that outlived the retries,
    /// and a server that is full or going down.
    private static func isRetryable(_ code: MySQLErrorCode) -> Bool {
        code.isTransient || code == .tooManyConnections || code == .serverShutdown
    }

    /// A row that does not decode into a domain value; never retryable.
    static func corruptRow(_ table: String) -> BackendError {
        .unavailable(retryable: false, detail: "mysql: a \(table) row does not decode")
    }
}
