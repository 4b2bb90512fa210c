import API
import Backends
import Domain
import Logging
import Metrics
import MySQLBackend
import MySQLClient

/// Pool events as swift-metrics: acquire wait, timeouts, discards, retries, lock conflicts not retried and failed
/// connects by a bounded code set.
///
/// The handles are made once: every lease reports its wait, and making a handle per event costs a
/// factory lookup under the factory's lock on each store call.
struct PoolMetrics: MySQLPoolObserver {
    /// The codes that get their own label value; every other code is `other`.
    private static let namedCodes: Set<UInt32> = [1040, 1047, 1053, 1205, 1213, 1290, 1927, 2002, 2003, 2006, 2013, 2055, 4031, 90001]

    static func label(_ code: MySQLErrorCode) -> String {
        namedCodes.contains(code.rawValue) ? String(code.rawValue) : "other"
    }

    private let acquireWait = Metrics.Timer(label: "stovepipe_mysql_pool_acquire_wait_seconds")
    private let acquireTimeouts = Metrics.Counter(label: "stovepipe_mysql_pool_acquire_timeouts_total")
    private let discarded = Metrics.Counter(label: "stovepipe_mysql_pool_discarded_total")
    private let retries = Metrics.Counter(label: "stovepipe_mysql_transaction_retries_total")
    private let errors: [String: Metrics.Counter] = Dictionary(
        uniqueKeysWithValues: (namedCodes.map { String($0) } + ["other"]).map { label in
            (label, Metrics.Counter(label: "stovepipe_mysql_errors_total", dimensions: [("code", label)]))
        })

    private func countError(_ code: MySQLErrorCode) {
        errors[Self.label(code)]?.increment()
    }

    func connectionAcquired(wait: Duration) {
        acquireWait.recordNanoseconds(wait.nanoseconds)
    }

    func connectionAcquired(waitNanoseconds: Int64) {
        acquireWait.recordNanoseconds(waitNanoseconds)
    }

    func acquireTimedOut(wait: Duration) {
        acquireTimeouts.increment()
        countError(.poolTimeout)
    }

    func connectionDiscarded(code: MySQLErrorCode) {
        discarded.increment()
        countError(code)
    }

    func transactionRetried(code: MySQLErrorCode) {
        retries.increment()
        countError(code)
    }

    func lockConflictFailed(code: MySQLErrorCode) {
        countError(code)
    }

    func connectFailed(code: MySQLErrorCode) {
        countError(code)
    }
}

extension Storage {
    /// MySQL stores on one pool, readiness on a connection of its own; refuses a database whose schema is older than
    /// this binary.
    static func mysql(url: String, _ configuration: ServeConfiguration, logger: Logger) throws -> Storage {
        let connection: MySQLConfiguration
        do {
            connection = try MySQLConfiguration(url: url)
        } catch {
            throw StartupError("\(error)")
        }
        let storage = MySQLStorage(
            configuration: connection,
            poolConfiguration: MySQLPool.Configuration(
                maxConnections: configuration.mysqlPoolSize, maxLifetime: configuration.mysqlMaxLifetime),
            observer: PoolMetrics(), logger: logger.with(component: "mysql"))
        do {
            let unknown = try storage.migrator.requireUpToDate()
            if !unknown.isEmpty {
                logger.warning(
                    "the database's schema is newer than this binary; serving on it (migrations only add)",
                    metadata: ["schema.unknown_versions": "\(unknown)"])
            }
        } catch {
            storage.close()
            throw StartupError("the database at \(connection.redactedURL) is not ready: \(error)")
        }
        logger.notice("storage is MySQL", metadata: ["database": "\(connection.redactedURL)"])
        let pool = storage.pool
        let gauges = (
            inUse: Metrics.Gauge(label: "stovepipe_mysql_pool_connections", dimensions: [("state", "in_use")]),
            idle: Metrics.Gauge(label: "stovepipe_mysql_pool_connections", dimensions: [("state", "idle")])
        )
        // The durable topic shares the stores' pool: its consumer holds at most consumerThreads + 2 connections.
        let broker = MySQLBroker(
            pool: pool,
            configuration: MySQLBroker.Configuration(
                retryPolicy: configuration.retryPolicy, workerThreads: configuration.consumerThreads,
                pollInterval: configuration.topicPollInterval, leaseDuration: configuration.topicLease,
                visibilityTimeout: configuration.topicVisibility),
            logger: logger.with(component: "topic"))
        // From the start, as every counter: a publish-only replica's first publish would otherwise be lost to rate().
        broker.exportPublishCounters(of: [.process])
        return Storage(
            requests: storage.requests, uris: storage.requestURIs, queues: storage.queues, counter: storage.counter,
            broker: broker,
            // On a connection of its own: a pool saturated by a burst is busy, not unready (the gauges show it).
            readiness: {
                switch storage.probeReadiness() {
                case .answered(.current):
                    return [ReadinessCheck(name: "database", ok: true), ReadinessCheck(name: "schema", ok: true)]
                case .answered(.ahead):
                    // Migrations only add: during a rolling deploy the replicas of the older release keep serving.
                    return [
                        ReadinessCheck(name: "database", ok: true),
                        ReadinessCheck(name: "schema", ok: true, detail: "the database is newer than this binary"),
                    ]
                case .answered(.behind(let pending)):
                    return [
                        ReadinessCheck(name: "database", ok: true),
                        ReadinessCheck(name: "schema", ok: false, detail: "\(pending.count) migrations pending; run stovepipe migrate"),
                    ]
                case .permissionDenied:
                    // Fixed words: the body is public, and the user and database names are the operator's to read in logs.
                    return [ReadinessCheck(name: "database", ok: false, detail: "permission denied (the database refuses this service's user)")]
                case .unavailable:
                    return [ReadinessCheck(name: "database", ok: false, detail: "the database does not answer")]
                }
            },
            readinessName: "database",
            refreshGauges: {
                let statistics = pool.statistics
                gauges.inUse.record(statistics.inUse)
                gauges.idle.record(statistics.idle)
            },
            closers: [{ storage.close() }])
    }
}
