import API
import Domain
import Foundation
import Logging
import MySQLClient
import TestSupport
import Testing

@testable import stovepipe

/// Connections of the test database running a counter's statement, which waits on the row lock the test holds.
private func lockWaits(_ admin: MySQLConnection, database: String) throws -> Int64 {
    try admin.query(
        """
        SELECT COUNT(*) FROM information_schema.PROCESSLIST
        WHERE DB = \(database) AND INFO LIKE \("INSERT INTO counters%")
        """
    ).first?.int64(0) ?? -1
}

/// Connections open to the test database, as the server sees them.
private func connections(_ admin: MySQLConnection, database: String) throws -> Int64 {
    try admin.query("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = \(database)").first?.int64(0) ?? -1
}

@Suite(.serialized, .enabled(if: mysqlEndToEndRuns)) struct MySQLReadinessTests {
    /// MySQL storage as `serve` wires it, checked by a monitor as `serve` makes it: a burst that holds every connection
    /// of the stores' pool (each caller waiting on a row lock another session holds) leaves readiness answering.
    @Test func readinessStaysOkWhileEveryConnectionOfTheStoresPoolIsHeld() async throws {
        let setup = try MigratedQueueSetup()
        defer { setup.remove() }
        let database = setup.database
        // The holders wait on the lock until the test lets them go, not until a lock wait timeout frees the pool.
        let url = database.url + (database.url.contains("?") ? "&" : "?") + "read-timeout=600&lock-wait-timeout=590"
        let poolSize = 2
        var configuration = ServeConfiguration(queues: try QueueConfiguration.demo())
        configuration.mysqlURL = url
        configuration.mysqlPoolSize = poolSize
        let logger = Logger(label: "readiness-test", factory: { _ in SwiftLogNoOpLogHandler() })
        let storage = try Storage.mysql(url: url, configuration, logger: logger)
        // For a requirement that fails; closing again after the test's own close does nothing.
        defer { for close in storage.closers { close() } }

        let saturated = DrainFlag()
        // Each finished check: whether it started with every connection held, and what it found.
        let finished = Recorder<(startedSaturated: Bool, checks: [ReadinessCheck])>()
        let readiness = storage.readiness
        let monitor = ReadinessMonitor(name: storage.readinessName) {
            let startedSaturated = saturated.isSet
            let checks = readiness()
            finished.append((startedSaturated, checks))
            return checks
        }
        monitor.start(waitingAtMost: .zero)
        defer { monitor.stop() }
        func databaseOk(_ checks: [ReadinessCheck]) -> Bool { checks.contains { $0.name == "database" && $0.ok } }
        #expect(await eventually { databaseOk(monitor.current()) }, "\(monitor.current())")

        let queue = try QueueName("demo/main")
        let domain = "readiness-test"
        #expect(try await onOwnThread { try storage.counter.next(queue: queue, domain: domain) } == 1)
        var sessionConfiguration = database.server
        sessionConfiguration.database = database.name
        let lockHolder = try MySQLConnection(configuration: sessionConfiguration)
        // Ending the session lets the holders go, should a requirement fail before the test does.
        defer { lockHolder.close() }
        let admin = try MySQLConnection(configuration: database.server)
        defer { admin.close() }
        try lockHolder.execute("START TRANSACTION")
        let held = try lockHolder.query(
            "SELECT value FROM counters WHERE queue = \(queue.rawValue) AND domain = \(domain) FOR UPDATE")
        try #require(held.count == 1)

        // Each holder leases a connection of the stores' pool and waits on the row lock, on a thread of its own.
        let counter = storage.counter
        let values = Recorder<UInt64>()
        let done = Latch()
        for index in 0..<poolSize {
            let executor = ThreadExecutor(name: "pool-holder-\(index)")
            Task(executorPreference: executor) {
                defer { executor.finish() }
                do {
                    values.append(try counter.next(queue: queue, domain: domain))
                } catch {
                    Issue.record("a holder failed: \(error)")
                }
                done.arrive()
            }
        }
        let allWaiting = try await eventually { try lockWaits(admin, database: database.name) == Int64(poolSize) }
        try #require(allWaiting, "the holders never all waited on the lock")
        saturated.set()

        // Reading the monitor asks for a fresh check; wait for one that started with every connection held.
        var failures: Set<String> = []
        let checked = await eventually(timeout: .seconds(30)) {
            let current = monitor.current()
            if !databaseOk(current) { failures.formUnion(current.map(\.detail)) }
            return finished.values.contains { $0.startedSaturated }
        }
        #expect(checked, "no readiness check finished while the pool was saturated")
        let during = finished.values.filter(\.startedSaturated).map(\.checks)
        #expect(during.allSatisfy(databaseOk), "\(during)")
        #expect(during.allSatisfy { $0.contains { $0.name == "schema" && $0.ok } }, "\(during)")
        #expect(failures.isEmpty, "/readyz would have said: \(failures.sorted())")
        // Still saturated: the check did not pass because a holder gave its connection back.
        #expect(try lockWaits(admin, database: database.name) == Int64(poolSize))
        // The pool's connections and readiness's one, and the session holding the lock: no more.
        #expect(try connections(admin, database: database.name) == Int64(poolSize + 1 + 1))

        try lockHolder.execute("ROLLBACK")
        lockHolder.close()
        #expect(done.wait(for: poolSize, timeout: .seconds(30)), "the holders did not finish")
        #expect(values.values.sorted() == [2, 3])

        // Shutdown's order: the monitor stops, then storage closes every connection it opened, readiness's too.
        #expect(monitor.stop())
        for close in storage.closers { close() }
        var open: Int64 = -1
        let closed = try await eventually {
            open = try connections(admin, database: database.name)
            return open == 0
        }
        #expect(closed, "\(open) connections still open")
    }
}
