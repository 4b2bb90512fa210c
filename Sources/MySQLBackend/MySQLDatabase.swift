import Domain
import Logging
import MySQLClient

/// Runs store operations on the pool: retries lock conflicts, and translates every error to `BackendError`.
struct MySQLDatabase: Sendable {
    let pool: MySQLPool
    /// Which lock conflicts run again: for the stores, whose callers wait (an HTTP request), deadlocks only and
    /// within about one lock wait timeout; the topic's own threads may retry lock wait timeouts too.
    var lockConflicts: MySQLPool.LockConflictRetry = .withinLockWait

    /// Runs `body` on a leased connection; a statement that hits a deadlock or lock wait timeout is run
    /// again as `lockConflicts` allows, and each retry reaches the pool's observer.
    @discardableResult
    func run<Result: Sendable>(
        duplicate: BackendError? = nil, _ body: (MySQLConnection) throws -> Result
    ) throws(BackendError) -> Result {
        do {
            return try pool.withConnectionRetryingLockConflicts(lockConflicts: lockConflicts, body)
        } catch {
            throw MySQLErrorTranslation.backendError(error, duplicate: duplicate)
        }
    }

    /// Runs `body` in a transaction (retried whole on lock conflicts by the pool, as `lockConflicts` allows).
    @discardableResult
    func transaction<Result: Sendable>(
        duplicate: BackendError? = nil, _ body: (MySQLConnection) throws -> Result
    ) throws(BackendError) -> Result {
        do {
            return try pool.transaction(lockConflicts: lockConflicts, body)
        } catch {
            throw MySQLErrorTranslation.backendError(error, duplicate: duplicate)
        }
    }
}
