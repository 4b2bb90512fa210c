import Domain
import Foundation
import Logging
import MySQLBackend
import MySQLClient
import Synchronization
import TestSupport

/// A fresh database with the topic tables, and the pools and brokers a test makes on it; `tearDown` shuts
/// the brokers down, closes the pools and drops the database. Its calls block: make them in `withHarness`'s body.
final class TopicHarness: Sendable {
    let configuration: MySQLConfiguration
    private let pools = Recorder<MySQLPool>()
    private let brokers = Recorder<MySQLBroker>()

    init() throws {
        configuration = try TopicTestDatabase.create()
    }

    /// A new pool on the test database: a broker on its own pool is an independent replica.
    /// `lockWaitSeconds` sets the pool's lock wait timeouts (the URL's `lock-wait-timeout`), `readTimeoutSeconds` its
    /// read timeout (the URL's `read-timeout`).
    func makePool(maxConnections: Int = 8, lockWaitSeconds: UInt32? = nil, readTimeoutSeconds: UInt32? = nil) -> MySQLPool {
        var connection = configuration
        if let lockWaitSeconds { connection.lockWaitTimeoutSeconds = lockWaitSeconds }
        if let readTimeoutSeconds { connection.readTimeoutSeconds = readTimeoutSeconds }
        let pool = MySQLPool(
            connection: connection, configuration: .init(maxConnections: maxConnections, acquireTimeout: .seconds(10)),
            logger: quietLogger)
        pools.append(pool)
        return pool
    }

    /// A new broker (replica) on its own pool unless `pool` is given.
    func makeBroker(_ configuration: MySQLBroker.Configuration, pool: MySQLPool? = nil) -> MySQLBroker {
        let broker = MySQLBroker(pool: pool ?? makePool(), configuration: configuration, logger: quietLogger)
        brokers.append(broker)
        return broker
    }

    /// A connection of its own, for inspecting and arranging rows.
    func connect() throws -> MySQLConnection {
        try MySQLConnection(configuration: configuration)
    }

    /// Runs one query on a fresh connection.
    func query(_ query: MySQLQuery) throws -> [MySQLRow] {
        let connection = try connect()
        defer { connection.close() }
        return try connection.query(query)
    }

    func tearDown() {
        for broker in brokers.values { broker.shutdown() }
        for pool in pools.values { pool.close() }
        TopicTestDatabase.drop(configuration)
    }
}

/// Runs `body` with a fresh harness and tears it down afterwards, all off Swift's cooperative pool (see `offPool`).
func withHarness(_ body: @escaping @Sendable (TopicHarness) async throws -> Void) async throws {
    try await offPool {
        let harness = try TopicHarness()
        defer { harness.tearDown() }
        try await body(harness)
    }
}

/// Runs `body` as part of the calling task on a thread of its own, off Swift's cooperative pool: the tests' MySQL
/// calls, broker calls and thread joins block, and `eventually` polls on the thread it runs on.
func offPool<Result: Sendable>(_ body: @escaping @Sendable () async throws -> Result) async throws -> Result {
    // The task prefers an executor owning the thread (SE-0417): `body`, and every nonisolated async function it awaits
    // (`eventually`, `Task.sleep`), resume there, not on the cooperative pool. In the calling task, `body` keeps the
    // task's locals, through which Swift Testing records a failing expectation against the running test. Child tasks
    // (async let, task groups) inherit the preference and share the one thread, so they must not wait for each other.
    let executor = ThreadExecutor(name: "topic-test")
    defer { executor.finish() }
    return try await withTaskExecutorPreference(executor) { try await runOnPreferredExecutor(body) }
}

/// Runs `body` on the task's preferred executor: a @concurrent function runs there (SE-0417), never on an actor.
@concurrent
private func runOnPreferredExecutor<Result: Sendable>(_ body: @Sendable () async throws -> Result) async throws -> Result {
    try await body()
}

let topic = TopicName("process-test")

func message(_ id: String, key: String = "q", payload: String = "") -> Message {
    Message(topic: topic, partitionKey: key, id: id, payload: Array(payload.utf8))
}

/// Fast retries, a short poll, and the given lease and visibility timings.
func fastConfiguration(
    maxAttempts: Int = 3, lease: Duration = .seconds(15), visibility: Duration = .seconds(15),
    poll: Duration = .milliseconds(50), workers: Int = 4
) -> MySQLBroker.Configuration {
    MySQLBroker.Configuration(
        retryPolicy: RetryPolicy(maxAttempts: maxAttempts, backoffBase: .milliseconds(2), backoffCap: .milliseconds(10)),
        workerThreads: workers, pollInterval: poll, leaseDuration: lease, visibilityTimeout: visibility)
}

/// A logger whose lines at `level` and above go to `lines`.
func recordingLogger(_ lines: Recorder<String>, level: Logger.Level = .info) -> Logger {
    Logger(label: "mysql-topic-tests") { _ in LineRecorder(lines: lines, logLevel: level) }
}
