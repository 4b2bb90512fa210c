import Foundation
import Logging
import MySQLClient
import Synchronization
import TestSupport
import Testing

/// Records pool events for assertions.
final class RecordingObserver: MySQLPoolObserver {
    let discarded = Mutex<[MySQLErrorCode]>([])
    let retried = Mutex<[MySQLErrorCode]>([])
    let failed = Mutex<[MySQLErrorCode]>([])
    let acquired = Mutex(0)
    let timedOut = Mutex(0)

    func connectionAcquired(wait: Duration) { acquired.withLock { $0 += 1 } }
    func acquireTimedOut(wait: Duration) { timedOut.withLock { $0 += 1 } }
    func connectionDiscarded(code: MySQLErrorCode) { discarded.withLock { $0.append(code) } }
    func transactionRetried(code: MySQLErrorCode) { retried.withLock { $0.append(code) } }
    func lockConflictFailed(code: MySQLErrorCode) { failed.withLock { $0.append(code) } }
}

/// Records each lease's wait through the `Duration` requirement, which the pool reaches by the default
/// `connectionAcquired(waitNanoseconds:)`.
final class WaitRecordingObserver: MySQLPoolObserver {
    let waits = Mutex<[Duration]>([])

    func connectionAcquired(wait: Duration) { waits.withLock { $0.append(wait) } }
}

@Suite("MySQLPool against a live server", .enabled(if: LiveDatabase.shouldRun), .serialized)
struct MySQLPoolTests {
    @Test("a connection lost while rolling back a failed transaction is discarded for the loss, not for the statement's error")
    func lostDuringRollbackIsDiscardedForTheLoss() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let observer = RecordingObserver()
            let pool = MySQLPool(
                connection: configuration, configuration: .init(maxConnections: 2), observer: observer, logger: quietLogger)
            defer { pool.close() }
            try pool.withConnection { connection in
                try connection.execute(MySQLQuery(unsafeSQL: "CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB"))
                try connection.execute(MySQLQuery(unsafeSQL: "INSERT INTO t VALUES (1)"))
            }
            let killer = try MySQLConnection(configuration: configuration)
            defer { killer.close() }

            let error = try #require(throws: MySQLError.self) {
                try pool.transaction { connection in
                    let id = try #require(try connection.query("SELECT CONNECTION_ID()").first?.uint64(0))
                    do {
                        try connection.execute(MySQLQuery(unsafeSQL: "INSERT INTO t VALUES (1)"))
                    } catch let duplicate as MySQLError {
                        // Killed between the failed statement and the transaction's ROLLBACK.
                        try killer.execute(MySQLQuery(unsafeSQL: "KILL \(id)"))
                        throw duplicate
                    }
                }
            }
            #expect(error.code == .duplicateEntry, "the caller still sees the statement's error")
            let discarded = observer.discarded.withLock { $0 }
            #expect(discarded.count == 1 && discarded.allSatisfy(\.isConnectionBroken), "\(discarded)")
            #expect(pool.statistics.totalDiscarded == 1)
            #expect(try pool.withConnection { try $0.query("SELECT COUNT(*) FROM t").first?.uint64(0) } == 1)
        }
    }

    @Test("a connection past its maximum lifetime is closed and replaced when next leased, as a retirement, not a discard")
    func expiredConnectionRetired() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let observer = RecordingObserver()
            // A zero lifetime expires every idle connection; the lease that opens one still uses it.
            let pool = MySQLPool(
                connection: configuration, configuration: .init(maxConnections: 2, maxLifetime: .zero),
                observer: observer, logger: quietLogger)
            defer { pool.close() }
            func connectionID() throws -> UInt64 {
                try pool.withConnection { connection in
                    try #require(try connection.query("SELECT CONNECTION_ID()").first?.uint64(0))
                }
            }
            let firstID = try connectionID()
            let secondID = try connectionID()
            #expect(secondID != firstID, "the expired connection was handed out again")
            let statistics = pool.statistics
            #expect(statistics.totalOpened == 2 && statistics.totalRetired == 1)
            #expect(statistics.totalDiscarded == 0 && observer.discarded.withLock { $0 }.isEmpty)
            #expect(statistics.idle == 1 && statistics.inUse == 0)
            let admin = try MySQLConnection(configuration: configuration)
            defer { admin.close() }
            let open = try admin.query(MySQLQuery(unsafeSQL: "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = \(firstID)"))
            #expect(open.first?.uint64(0) == 0, "the retired connection is still open on the server")

            let keeping = MySQLPool(connection: configuration, configuration: .init(maxConnections: 1), logger: quietLogger)
            defer { keeping.close() }
            let kept = try keeping.withConnection { try $0.query("SELECT CONNECTION_ID()").first?.uint64(0) }
            #expect(try keeping.withConnection { try $0.query("SELECT CONNECTION_ID()").first?.uint64(0) } == kept)
            #expect(keeping.statistics.totalRetired == 0)
        }
    }

    @Test("a killed connection fails once with a connection-lost code, is discarded, and the pool recovers")
    func brokenConnectionDiscarded() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let observer = RecordingObserver()
            let pool = MySQLPool(
                connection: configuration, configuration: .init(maxConnections: 2, pingAfterIdle: .seconds(3600)),
                observer: observer, logger: quietLogger)
            defer { pool.close() }
            let firstID = try pool.withConnection { connection in
                try #require(try connection.query("SELECT CONNECTION_ID()").first?.uint64(0))
            }
            let killer = try MySQLConnection(configuration: configuration)
            try killer.execute(MySQLQuery(unsafeSQL: "KILL \(firstID)"))

            let error = try #require(throws: MySQLError.self) {
                try pool.withConnection { connection in try connection.query("SELECT 1") }
            }
            #expect(error.isConnectionBroken, "got \(String(reflecting: error))")
            #expect(pool.statistics.totalDiscarded == 1)
            #expect(observer.discarded.withLock { $0 } == [error.code])
            #expect(pool.statistics.idle == 0)

            let secondID = try pool.withConnection { connection in
                try #require(try connection.query("SELECT CONNECTION_ID()").first?.uint64(0))
            }
            #expect(secondID != firstID)
            #expect(pool.statistics.totalOpened == 2)
            #expect(pool.statistics.inUse == 0)
            #expect(pool.statistics.idle == 1)
        }
    }

    @Test("a value over max_allowed_packet fails its lease, and the connection the server closed is not reused")
    func oversizedPacketDiscardsConnection() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let pool = MySQLPool(
                connection: configuration, configuration: .init(maxConnections: 1, pingAfterIdle: .seconds(3600)),
                logger: quietLogger)
            defer { pool.close() }
            let limit = try #require(try pool.withConnection { try $0.query("SELECT @@max_allowed_packet").first?.uint64(0) })
            try #require(limit <= 256 * 1024 * 1024, "max_allowed_packet is too large to exceed in a test")
            let oversized = String(repeating: "x", count: Int(limit) + 1024)
            let error = try #require(throws: MySQLError.self) {
                try pool.withConnection { try $0.query("SELECT LENGTH(\(oversized)) AS n") }
            }
            #expect(error.isConnectionBroken, "got \(String(reflecting: error))")
            #expect(pool.statistics.totalDiscarded == 1)
            #expect(try pool.withConnection { try $0.query("SELECT \(1) + 1 AS n").first?.int64("n") } == 2)
        }
    }

    @Test("a connection idle past pingAfterIdle is pinged; a dead one is replaced without the caller seeing an error")
    func pingBeforeUse() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let pool = MySQLPool(
                connection: configuration, configuration: .init(maxConnections: 1, pingAfterIdle: .zero), logger: quietLogger)
            defer { pool.close() }
            let firstID = try pool.withConnection { try #require(try $0.query("SELECT CONNECTION_ID()").first?.uint64(0)) }
            let killer = try MySQLConnection(configuration: configuration)
            try killer.execute(MySQLQuery(unsafeSQL: "KILL \(firstID)"))
            let secondID = try pool.withConnection { try #require(try $0.query("SELECT CONNECTION_ID()").first?.uint64(0)) }
            #expect(secondID != firstID)
            #expect(pool.statistics.totalDiscarded == 1)
        }
    }

    @Test("a connection is pinged only once it idled past pingAfterIdle")
    func pingOnlyAfterIdle() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let pool = MySQLPool(
                connection: configuration, configuration: .init(maxConnections: 1, pingAfterIdle: .seconds(2)),
                logger: quietLogger)
            defer { pool.close() }
            let killer = try MySQLConnection(configuration: configuration)
            let firstID = try pool.withConnection { try #require(try $0.query("SELECT CONNECTION_ID()").first?.uint64(0)) }
            try killer.execute(MySQLQuery(unsafeSQL: "KILL \(firstID)"))
            // Idle for less than pingAfterIdle: handed out unpinged, so the body meets the dead connection.
            let error = try #require(throws: MySQLError.self) { try pool.withConnection { try $0.query("SELECT 1") } }
            #expect(error.isConnectionBroken, "got \(String(reflecting: error))")
            let secondID = try pool.withConnection { try #require(try $0.query("SELECT CONNECTION_ID()").first?.uint64(0)) }
            try killer.execute(MySQLQuery(unsafeSQL: "KILL \(secondID)"))
            Thread.sleep(forTimeInterval: 2.5)
            // Idle past pingAfterIdle: the ping finds it dead and the lease gets a new connection instead.
            let thirdID = try pool.withConnection { try #require(try $0.query("SELECT CONNECTION_ID()").first?.uint64(0)) }
            #expect(thirdID != secondID)
            #expect(pool.statistics.totalDiscarded == 2)
            #expect(pool.statistics.totalOpened == 3)
        }
    }

    @Test("acquire waits are reported to the observer and summed in the statistics")
    func acquireWaitStatistics() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let observer = WaitRecordingObserver()
            let pool = MySQLPool(
                connection: configuration, configuration: .init(maxConnections: 1), observer: observer,
                logger: quietLogger)
            defer { pool.close() }
            #expect(try pool.withConnection { try $0.query("SELECT 1").count } == 1)
            let held = Signal()
            let holder = BackgroundWork {
                try pool.withConnection { _ in
                    held.fire()
                    Thread.sleep(forTimeInterval: 0.3)
                }
            }
            try held.wait()
            // Waits for the holder's permit.
            #expect(try pool.withConnection { try $0.query("SELECT 2").count } == 1)
            try holder.join()
            let waits = observer.waits.withLock { $0 }
            let statistics = pool.statistics
            #expect(waits.count == 3)
            #expect(statistics.totalAcquired == 3)
            #expect(statistics.totalAcquireWait == waits.reduce(.zero, +))
            #expect(waits.allSatisfy { $0 >= .zero })
            #expect(try #require(waits.last) >= .milliseconds(200))
        }
    }

    @Test("an exhausted pool throws poolTimeout once the acquire timeout passes")
    func exhaustion() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let observer = RecordingObserver()
            let pool = MySQLPool(
                connection: configuration, configuration: .init(maxConnections: 1, acquireTimeout: .milliseconds(300)),
                observer: observer, logger: quietLogger)
            defer { pool.close() }
            let held = Signal()
            let release = Signal()
            let holder = BackgroundWork {
                try pool.withConnection { connection in
                    _ = try connection.query("SELECT 1")
                    held.fire()
                    try release.wait()
                }
            }
            try held.wait()
            #expect(pool.statistics.inUse == 1)
            let started = ContinuousClock.now
            let error = try #require(throws: MySQLError.self) { try pool.withConnection { _ in 1 } }
            let waited = started.duration(to: .now)
            #expect(error.code == .poolTimeout)
            #expect(waited >= .milliseconds(250))
            #expect(waited < .seconds(30))
            #expect(pool.statistics.totalAcquireTimeouts == 1)
            #expect(observer.timedOut.withLock { $0 } == 1)
            release.fire()
            try holder.join()
            #expect(try pool.withConnection { try $0.query("SELECT 2").first?.int64(0) } == 2)
            #expect(pool.statistics.totalOpened == 1)
        }
    }

    @Test("transaction commits, and rolls back and rethrows on error")
    func transactions() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let pool = MySQLPool(connection: configuration, logger: quietLogger)
            defer { pool.close() }
            try pool.withConnection { try $0.execute("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB") }
            try pool.transaction { connection in
                try connection.execute("INSERT INTO t VALUES (\(1))")
                try connection.execute("INSERT INTO t VALUES (\(2))")
            }
            do {
                try pool.transaction { connection in
                    try connection.execute("INSERT INTO t VALUES (\(3))")
                    try connection.execute("INSERT INTO t VALUES (\(1))")
                }
                Issue.record("a duplicate insert committed")
            } catch MySQLErrorCode.duplicateEntry {
                // Rolled back and rethrown.
            }
            let ids = try pool.withConnection { try $0.query("SELECT id FROM t ORDER BY id").compactMap { $0.int64(0) } }
            #expect(ids == [1, 2])
            #expect(pool.statistics.totalDiscarded == 0)
            #expect(pool.statistics.totalTransactionRetries == 0)
        }
    }

    @Test("a connection returned inside an open transaction is rolled back before reuse")
    func leakedTransactionRolledBack() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let pool = MySQLPool(connection: configuration, configuration: .init(maxConnections: 1), logger: quietLogger)
            defer { pool.close() }
            try pool.withConnection { try $0.execute("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB") }
            try pool.withConnection { connection in
                try connection.execute("START TRANSACTION")
                try connection.execute("INSERT INTO t VALUES (\(1))")
                #expect(connection.isInTransaction)
            }
            let (count, inTransaction) = try pool.withConnection { connection in
                (try connection.query("SELECT COUNT(*) FROM t").first?.int64(0), connection.isInTransaction)
            }
            #expect(count == 0)
            #expect(inTransaction == false)
            #expect(pool.statistics.totalOpened == 1)
        }
    }

    @Test("a deadlock is retried and both transactions commit")
    func deadlockRetried() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let observer = RecordingObserver()
            let pool = MySQLPool(
                connection: configuration, configuration: .init(maxConnections: 4, transactionAttempts: 3),
                observer: observer, logger: quietLogger)
            defer { pool.close() }
            try pool.withConnection { connection in
                try connection.execute("CREATE TABLE d (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB")
                try connection.execute("INSERT INTO d VALUES (1, 0), (2, 0)")
            }
            // Each transaction locks one row, waits until the other has locked its row, then wants the other's:
            // InnoDB sees the cycle and rolls one back with 1213. Only first attempts wait, so retries run freely.
            let firstLocked = Signal()
            let secondLocked = Signal()
            func crossing(first: Int, second: Int, mine: Signal, theirs: Signal) -> BackgroundWork<Int> {
                BackgroundWork {
                    let attempts = Mutex(0)
                    try pool.transaction { connection in
                        let attempt = attempts.withLock { value in
                            value += 1
                            return value
                        }
                        try connection.execute("UPDATE d SET v = v + 1 WHERE id = \(first)")
                        if attempt == 1 {
                            mine.fire()
                            try theirs.wait()
                        }
                        try connection.execute("UPDATE d SET v = v + 1 WHERE id = \(second)")
                    }
                    return attempts.withLock { $0 }
                }
            }
            let one = crossing(first: 1, second: 2, mine: firstLocked, theirs: secondLocked)
            let two = crossing(first: 2, second: 1, mine: secondLocked, theirs: firstLocked)
            let attempts = [try one.join(), try two.join()]
            #expect(attempts.sorted() == [1, 2])
            #expect(pool.statistics.totalTransactionRetries == 1)
            #expect(observer.retried.withLock { $0 } == [.deadlock])
            let values = try pool.withConnection { try $0.query("SELECT v FROM d ORDER BY id").compactMap { $0.int64(0) } }
            #expect(values == [2, 2])
        }
    }

    @Test("concurrent leases never exceed maxConnections and all commit")
    func concurrency() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let pool = MySQLPool(connection: configuration, configuration: .init(maxConnections: 2), logger: quietLogger)
            defer { pool.close() }
            try pool.withConnection { connection in
                try connection.execute("CREATE TABLE c (k VARCHAR(8) PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB")
                try connection.execute("INSERT INTO c VALUES ('k', 0)")
            }
            let peak = Mutex(0)
            let workers = (0..<4).map { _ in
                BackgroundWork {
                    for _ in 0..<25 {
                        try pool.transaction { connection in
                            let inUse = pool.statistics.inUse
                            peak.withLock { $0 = max($0, inUse) }
                            try connection.execute("UPDATE c SET n = n + 1 WHERE k = \("k")")
                        }
                    }
                }
            }
            for worker in workers { try worker.join() }
            #expect(try pool.withConnection { try $0.query("SELECT n FROM c").first?.int64(0) } == 100)
            #expect(peak.withLock { $0 } <= 2)
            #expect(pool.statistics.totalOpened <= 2)
            #expect(pool.statistics.totalAcquired == 102)
        }
    }

    @Test("a closed pool refuses leases with poolClosed")
    func closed() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let pool = MySQLPool(connection: configuration, logger: quietLogger)
            #expect(try pool.withConnection { try $0.query("SELECT 1").count } == 1)
            pool.close()
            #expect(pool.statistics.idle == 0)
            let error = try #require(throws: MySQLError.self) { try pool.withConnection { _ in 0 } }
            #expect(error.code == .poolClosed)
        }
    }
}

@Suite("MySQLPool during an outage")
struct MySQLPoolOutageTests {
    @Test("a pool pointed at a closed port fails with a connection error within the connect timeout")
    func closedPort() async throws {
        let (descriptor, port) = try closedLoopbackPort()
        defer { close(descriptor) }
        var configuration = MySQLConfiguration(host: "127.0.0.1", port: port, user: "nobody", password: "x")
        configuration.connectTimeoutSeconds = 2
        let pool = MySQLPool(connection: configuration, configuration: .init(maxConnections: 1), logger: quietLogger)
        defer { pool.close() }
        // Timed on the connecting thread: the await's return also waits for a cooperative thread, which other
        // suites running in parallel may hold.
        let (error, elapsed) = try await onThread {
            let started = ContinuousClock.now
            let error = try #require(throws: MySQLError.self) { try pool.withConnection { _ in 0 } }
            return (error, started.duration(to: .now))
        }
        #expect(error.isConnectionBroken, "got \(String(reflecting: error))")
        #expect([MySQLErrorCode.connectionError, .hostConnectionError].contains(error.code))
        #expect(elapsed < .seconds(30))
        // The permit came back: a second attempt fails the same way instead of timing out on the pool.
        let again = try await onThread { try #require(throws: MySQLError.self) { try pool.withConnection { _ in 0 } } }
        #expect(again.code != .poolTimeout)
        #expect(pool.statistics.inUse == 0)
    }

    /// A loopback port nothing listens on: bound by us and left bound without `listen`, so connections are
    /// refused and no other test can take the port meanwhile (a closed one could be rebound); the caller
    /// closes the descriptor.
    private func closedLoopbackPort() throws -> (descriptor: Int32, port: UInt16) {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(descriptor >= 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
        }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard bound == 0, named == 0 else {
            close(descriptor)
            throw PortUnavailable()
        }
        return (descriptor, UInt16(bigEndian: address.sin_port))
    }

    /// The test could not bind a loopback port.
    private struct PortUnavailable: Error {}

    @Test(
        "connects that fail log one warning for the run of failures, and the first connect that succeeds again says so",
        .enabled(if: LiveDatabase.shouldRun))
    func failingConnectsAreLoggedOncePerRun() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            // An account that does not exist yet: connects fail (1045) until the test creates it.
            let user = "obs_\(UInt32.random(in: 0...UInt32.max))"
            var missing = configuration
            missing.user = user
            missing.password = "pw-\(user)"
            // No default database: the account gets no privileges, only the right to connect.
            missing.database = nil
            let lines = Recorder<String>()
            let logger = Logger(label: "mysql-client-tests") { _ in LineRecorder(lines: lines) }
            let pool = MySQLPool(connection: missing, configuration: .init(maxConnections: 2), logger: logger)
            defer { pool.close() }
            for _ in 0..<3 { #expect(throws: MySQLError.self) { try pool.withConnection { _ in 0 } } }
            let failing = lines.values.filter { $0.hasPrefix("mysql connect failed") }
            #expect(failing.count == 1, "\(lines.values)")
            #expect(failing.first?.contains("mysql.error.code=1045") == true, "\(failing)")
            #expect(failing.first?.contains(missing.password ?? "") == false)

            let admin = try MySQLConnection(configuration: configuration)
            defer {
                _ = try? admin.execute(MySQLQuery(unsafeSQL: "DROP USER IF EXISTS '\(user)'@'%', '\(user)'@'127.0.0.1', '\(user)'@'localhost'"))
                admin.close()
            }
            for host in ["%", "127.0.0.1", "localhost"] {
                try admin.execute(MySQLQuery(unsafeSQL: "CREATE USER '\(user)'@'\(host)' IDENTIFIED BY 'pw-\(user)'"))
            }
            #expect(try pool.withConnection { _ in 1 } == 1)
            #expect(try pool.withConnection { _ in 1 } == 1)
            let lines2 = lines.values
            #expect(lines2.filter { $0.hasPrefix("mysql connects again") }.count == 1, "\(lines2)")
            #expect(lines2.filter { $0.hasPrefix("mysql connect failed") }.count == 1, "\(lines2)")
        }
    }
}
