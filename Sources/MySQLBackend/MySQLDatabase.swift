import Domain
import Logging
import MySQLClient

/// Runs store operations on the pool: retries lock conflicts, and translates every error to `BackendError`.
struct MySQLDatabase: Sendable {
    let pool: MySQLPool

    /// Runs `body` on a leased connection; a statement that hits a deadlock or lock wait timeout is run
    /// again, up to the pool's `transactionAttempts` in all, and each retry reaches the pool's observer.
    @discardableResult
    func run<Result: Sendable>(
        duplicate: BackendError? = nil, _ body: (MySQLConnection) throws -> Result
    ) throws(BackendError) -> Result {
        do {
            return try pool.withConnectionRetryingLockConflicts(body)
        } catch {
            throw MySQLErrorTranslation.backendError(error, duplicate: duplicate)
        }
    }

    /// Runs `body` in a transaction (retried whole on lock conflicts by the pool).
    @discardableResult
    func transaction<Result: Sendable>(
        duplicate: BackendError? = nil, _ body: (MySQLConnection) throws -> Result
    ) throws(BackendError) -> Result {
        do {
            return try pool.transaction(body)
        } catch {
            throw MySQLErrorTranslation.backendError(error, duplicate: duplicate)
        }
    }
}
