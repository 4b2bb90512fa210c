import Domain
import Foundation
import MySQLBackend
import MySQLClient

/// The MySQL stores and topic on the server of `STOVEPIPE_TEST_MYSQL_URL`, a fresh database per backend.
///
/// Without the URL the fixture is left out, except under CI=true, where it stays in and every test fails
/// with the reason, so CI cannot pass without MySQL.
struct MySQLFixture: BackendFixture {
    let name = "mysql"
    private let base: Result<MySQLConfiguration, FixtureUnavailable>

    /// The fixture, or nil when the URL is unset outside CI.
    static func fromEnvironment() -> MySQLFixture? {
        let environment = ProcessInfo.processInfo.environment
        guard let url = environment["STOVEPIPE_TEST_MYSQL_URL"], !url.isEmpty else {
            guard environment["CI"] == "true" else { return nil }
            return MySQLFixture(
                base: .failure(FixtureUnavailable("STOVEPIPE_TEST_MYSQL_URL is not set, and CI=true requires MySQL")))
        }
        do {
            var configuration = try MySQLConfiguration(url: url)
            let loopback: Set<String> = ["127.0.0.1", "::1", "localhost"]
            guard configuration.socketPath != nil || loopback.contains(configuration.host ?? "") else {
                return MySQLFixture(base: .failure(FixtureUnavailable("refusing a non-loopback MySQL test server")))
            }
            configuration.database = nil
            return MySQLFixture(base: .success(configuration))
        } catch {
            return MySQLFixture(base: .failure(FixtureUnavailable("STOVEPIPE_TEST_MYSQL_URL: \(error)")))
        }
    }

    /// The server's configuration without a database, or why there is none.
    func baseConfiguration() throws -> MySQLConfiguration {
        try base.get()
    }

    func makeBackend() throws -> any TestBackend {
        let base = try base.get()
        let database = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let admin = try MySQLConnection(configuration: base)
        try admin.execute("CREATE DATABASE \(identifier: database) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        var configuration = base
        configuration.database = database
        let storage = MySQLStorage(
            configuration: configuration,
            poolConfiguration: MySQLPool.Configuration(maxConnections: 8, transactionAttempts: 5),
            logger: silentLogger)
        do {
            try storage.migrator.migrate()
        } catch {
            storage.close()
            _ = try? admin.execute("DROP DATABASE IF EXISTS \(identifier: database)")
            throw error
        }
        return MySQLTestBackend(storage: storage, database: database, base: base)
    }
}

/// One migrated database; `tearDown` closes the pool and drops the database.
struct MySQLTestBackend: TestBackend {
    let storage: MySQLStorage
    let database: String
    let base: MySQLConfiguration

    var stores: StoreSet {
        StoreSet(requests: storage.requests, uris: storage.requestURIs, queues: storage.queues, counter: storage.counter)
    }

    func makeBroker(policy: RetryPolicy) throws -> any MessageBroker {
        // A short poll keeps the suite quick; the latency of local publishes does not depend on it.
        let configuration = MySQLBroker.Configuration(retryPolicy: policy, workerThreads: 4, pollInterval: .milliseconds(50))
        return MySQLBroker(pool: storage.pool, configuration: configuration, logger: silentLogger)
    }

    func tearDown() {
        storage.close()
        if let admin = try? MySQLConnection(configuration: base) {
            _ = try? admin.execute("DROP DATABASE IF EXISTS \(identifier: database)")
        }
    }
}

/// Why a fixture cannot make a backend.
struct FixtureUnavailable: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) { self.description = description }
}
