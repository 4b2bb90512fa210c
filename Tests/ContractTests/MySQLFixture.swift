import Domain
import Foundation
import MySQLBackend
import MySQLClient
import TestSupport

/// The MySQL stores and topic on the server of `STOVEPIPE_TEST_MYSQL_URL`, a fresh database per backend.
///
/// Without the URL the fixture is left out, except under CI=true, where it stays in and every test fails
/// with the reason, so CI cannot pass without MySQL.
struct MySQLFixture: BackendFixture {
    let name = "mysql"
    private let base: Result<MySQLConfiguration, FixtureUnavailable>

    /// The fixture, or nil when the URL is unset outside CI.
    static func fromEnvironment() -> MySQLFixture? {
        guard LiveDatabase.shouldRun else { return nil }
        do {
            return MySQLFixture(base: .success(try LiveDatabase.baseConfiguration()))
        } catch {
            return MySQLFixture(base: .failure(FixtureUnavailable("\(error)")))
        }
    }

    /// The server's configuration without a database, or why there is none.
    func baseConfiguration() throws -> MySQLConfiguration {
        try base.get()
    }

    func makeBackend() throws -> any TestBackend {
        _ = try base.get()
        let configuration = try LiveDatabase.createDatabase()
        let storage = MySQLStorage(
            configuration: configuration,
            poolConfiguration: MySQLPool.Configuration(maxConnections: 8, transactionAttempts: 5),
            logger: silentLogger)
        do {
            try storage.migrator.migrate()
        } catch {
            storage.close()
            LiveDatabase.drop(configuration)
            throw error
        }
        return MySQLTestBackend(storage: storage, configuration: configuration)
    }
}

/// One migrated database; `tearDown` closes the pool and drops the database.
struct MySQLTestBackend: TestBackend {
    let storage: MySQLStorage
    let configuration: MySQLConfiguration

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
        LiveDatabase.drop(configuration)
    }
}

/// Why a fixture cannot make a backend.
struct FixtureUnavailable: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) { self.description = description }
}
