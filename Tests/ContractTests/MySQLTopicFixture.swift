import Backends
import Domain
import Foundation
import MySQLBackend
import MySQLClient

/// The MySQL topic under the contract suites: each backend is a fresh database with the topic tables, and
/// each broker a new replica on its own pool. The stores stay in memory until the stores fixture joins it.
///
/// Present when `STOVEPIPE_TEST_MYSQL_URL` is set, and under CI=true even without it, so that a missing
/// database fails the run instead of skipping it.
struct MySQLTopicFixture: BackendFixture {
    let name = "mysql-topic"

    static let urlVariable = "STOVEPIPE_TEST_MYSQL_URL"

    static func fromEnvironment() -> MySQLTopicFixture? {
        let environment = ProcessInfo.processInfo.environment
        let hasURL = !(environment[urlVariable] ?? "").isEmpty
        return hasURL || environment["CI"] == "true" ? MySQLTopicFixture() : nil
    }

    struct Unavailable: Error, CustomStringConvertible {
        let description: String
    }

    func makeBackend() throws -> any TestBackend {
        guard let url = ProcessInfo.processInfo.environment[Self.urlVariable], !url.isEmpty else {
            throw Unavailable(description: "\(Self.urlVariable) is not set, and CI=true requires the MySQL suites to run")
        }
        var base = try MySQLConfiguration(url: url)
        guard base.socketPath != nil || ["127.0.0.1", "::1", "localhost"].contains(base.host ?? "") else {
            throw Unavailable(description: "refusing to run the live MySQL tests against a non-loopback server")
        }
        base.database = nil
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let admin = try MySQLConnection(configuration: base)
        defer { admin.close() }
        try admin.execute("CREATE DATABASE \(identifier: name) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        var configuration = base
        configuration.database = name
        let setup = try MySQLConnection(configuration: configuration)
        defer { setup.close() }
        for statement in MySQLBroker.schema {
            try setup.executeScript(unsafeSQL: statement)
        }
        return MySQLTopicTestBackend(base: base, configuration: configuration)
    }
}

/// One test database; the brokers it made are closed with it.
final class MySQLTopicTestBackend: TestBackend {
    let stores = StoreSet(
        requests: MemoryRequestStore(), uris: MemoryRequestURIStore(), queues: MemoryQueueStore(), counter: MemoryCounter()
    )
    private let base: MySQLConfiguration
    private let configuration: MySQLConfiguration
    private let pools = Recorder<MySQLPool>()

    init(base: MySQLConfiguration, configuration: MySQLConfiguration) {
        self.base = base
        self.configuration = configuration
    }

    func makeBroker(policy: RetryPolicy) throws -> any MessageBroker {
        let pool = MySQLPool(connection: configuration, configuration: .init(maxConnections: 8), logger: silentLogger)
        pools.append(pool)
        // A short poll keeps the suite quick; the latency of local publishes does not depend on it.
        let brokerConfiguration = MySQLBroker.Configuration(
            retryPolicy: policy, workerThreads: 4, pollInterval: .milliseconds(50))
        return MySQLBroker(pool: pool, configuration: brokerConfiguration, logger: silentLogger)
    }

    func tearDown() {
        for pool in pools.values { pool.close() }
        guard let name = configuration.database, let admin = try? MySQLConnection(configuration: base) else { return }
        _ = try? admin.execute("DROP DATABASE IF EXISTS \(identifier: name)")
        admin.close()
    }
}
