import Domain
import Logging
import MySQLClient

/// The MySQL stores, counter and migrator over one pool, and the readiness probe on a connection of its own: what the
/// composition root wires in.
public final class MySQLStorage: Sendable {
    /// The shared connection pool.
    public let pool: MySQLPool
    /// The readiness probe's pool of one connection, apart from `pool`, so a probe never waits behind the stores.
    public let readinessPool: MySQLPool
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
    /// The migrator's probe on `readinessPool`.
    private let readinessMigrator: MySQLMigrator

    // Probes come one at a time from the readiness monitor's thread and never wait; one that did would fail within
    // the monitor's 2 s timeout.
    private static let readinessAcquireTimeout: Duration = .seconds(1)

    /// Makes the pools (no connection opens yet) and the stores on the shared one.
    ///
    /// Sets CLIENT_FOUND_ROWS (`reportsMatchedRows`) so a version-guarded UPDATE counts the row it matched.
    /// - Parameters:
    ///   - configuration: the server, credentials and database.
    ///   - poolConfiguration: limits and timings of the shared pool; `readinessPool` takes them but has one connection
    ///     and a 1 s acquire timeout.
    ///   - observer: pool events for metrics; of `readinessPool` only its errors, so that waits and acquire timeouts
    ///     describe the shared pool.
    ///   - logger: for the pools and the migrator.
    public init(
        configuration: MySQLConfiguration, poolConfiguration: MySQLPool.Configuration = .init(),
        observer: (any MySQLPoolObserver)? = nil, logger: Logger
    ) {
        var configuration = configuration
        configuration.reportsMatchedRows = true
        pool = MySQLPool(connection: configuration, configuration: poolConfiguration, observer: observer, logger: logger)
        var readinessConfiguration = poolConfiguration
        readinessConfiguration.maxConnections = 1
        readinessConfiguration.acquireTimeout = Self.readinessAcquireTimeout
        var readinessLogger = logger
        readinessLogger[metadataKey: "mysql.pool"] = "readiness"
        readinessPool = MySQLPool(
            connection: configuration, configuration: readinessConfiguration,
            observer: observer.map { ErrorsOnly(forwardingTo: $0) }, logger: readinessLogger)
        requests = MySQLRequestStore(pool: pool)
        requestURIs = MySQLRequestURIStore(pool: pool)
        queues = MySQLQueueStore(pool: pool)
        counter = MySQLCounter(pool: pool)
        migrator = MySQLMigrator(pool: pool, logger: logger)
        readinessMigrator = MySQLMigrator(pool: readinessPool, logger: readinessLogger)
    }

    /// `migrator.probe()` on `readinessPool`'s connection, so a saturated shared pool does not fail it.
    public func probeReadiness() -> MySQLProbe {
        readinessMigrator.probe()
    }

    /// Closes both pools; the stores fail with `unavailable` afterwards.
    public func close() {
        pool.close()
        readinessPool.close()
    }
}

/// Passes on the errors a readiness connection meets (failed connects, discards, lock conflicts); its leases and
/// acquire timeouts are not the shared pool's, whose waits and saturation they would blur, and are dropped.
private struct ErrorsOnly: MySQLPoolObserver {
    let base: any MySQLPoolObserver

    init(forwardingTo base: any MySQLPoolObserver) {
        self.base = base
    }

    func connectionDiscarded(code: MySQLErrorCode) {
        base.connectionDiscarded(code: code)
    }

    func transactionRetried(code: MySQLErrorCode) {
        base.transactionRetried(code: code)
    }

    func lockConflictFailed(code: MySQLErrorCode) {
        base.lockConflictFailed(code: code)
    }

    func connectFailed(code: MySQLErrorCode) {
        base.connectFailed(code: code)
    }
}
