import Domain
import Logging
import MySQLClient

/// The MySQL stores, counter and migrator over one pool: what the composition root wires in.
public final class MySQLStorage: Sendable {
    /// The shared connection pool.
    public let pool: MySQLPool
    /// Requests.
    public let requests: MySQLRequestStore
    /// The (queue, URI) index.
    public let requestURIs: MySQLRequestURIStore
    /// Queues.
    public let queues: MySQLQueueStore
    /// Durable sequences.
    public let counter: MySQLCounter
    /// Schema migrations and the start-up schema check.
    public let migrator: MySQLMigrator

    /// Makes the pool (no connection opens yet) and the stores on it.
    ///
    /// Sets CLIENT_FOUND_ROWS (`reportsMatchedRows`) so a version-guarded UPDATE counts the row it matched.
    /// - Parameters:
    ///   - configuration: the server, credentials and database.
    ///   - poolConfiguration: pool limits and timings.
    ///   - observer: pool events for metrics.
    ///   - logger: for the pool and the migrator.
    public init(
        configuration: MySQLConfiguration, poolConfiguration: MySQLPool.Configuration = .init(),
        observer: (any MySQLPoolObserver)? = nil, logger: Logger
    ) {
        var configuration = configuration
        configuration.reportsMatchedRows = true
        pool = MySQLPool(connection: configuration, configuration: poolConfiguration, observer: observer, logger: logger)
        requests = MySQLRequestStore(pool: pool)
        requestURIs = MySQLRequestURIStore(pool: pool)
        queues = MySQLQueueStore(pool: pool)
        counter = MySQLCounter(pool: pool)
        migrator = MySQLMigrator(pool: pool, logger: logger)
    }

    /// Closes the pool; the stores fail with `unavailable` afterwards.
    public func close() {
        pool.close()
    }
}
