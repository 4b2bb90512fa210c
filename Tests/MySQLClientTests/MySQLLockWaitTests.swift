import Foundation
import MySQLClient
import Synchronization
import TestSupport
import Testing

@Suite("MySQL lock waits end with 1205 on a usable connection", .enabled(if: LiveDatabase.shouldRun), .serialized)
struct MySQLLockWaitTests {
    @Test("a new connection sets both session lock waits to lockWaitTimeoutSeconds; nil keeps the server's")
    func sessionVariables() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            var configuration = configuration
            configuration.lockWaitTimeoutSeconds = 7
            let connection = try MySQLConnection(configuration: configuration)
            defer { connection.close() }
            let row = try #require(
                try connection.query("SELECT @@session.innodb_lock_wait_timeout, @@session.lock_wait_timeout").first)
            #expect(row.int64(0) == 7)
            #expect(row.int64(1) == 7)
            // Run once and closed: the connect leaves nothing in the statement cache.
            #expect(connection.cachedStatementCount == 1)

            configuration.lockWaitTimeoutSeconds = nil
            let untouched = try MySQLConnection(configuration: configuration)
            defer { untouched.close() }
            let same = try untouched.query(
                """
                SELECT @@session.innodb_lock_wait_timeout = @@global.innodb_lock_wait_timeout,
                    @@session.lock_wait_timeout = @@global.lock_wait_timeout
                """)
            #expect(same.first?.int64(0) == 1)
            #expect(same.first?.int64(1) == 1)
        }
    }

    @Test("an UPDATE behind another session's row lock fails with 1205 within the lock wait; the connection is kept")
    func rowLock() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let holder = try Self.holderOfOneRow(configuration)
            defer { holder.close() }
            // The uncommitted UPDATE holds the row's exclusive lock until the holder's transaction ends.
            try holder.executeScript(unsafeSQL: "START TRANSACTION; UPDATE t SET version = 2 WHERE id = 1")
            let error = try expectLockWaitTimeout(configuration) { connection throws(MySQLError) in
                try connection.execute("UPDATE t SET version = \(3) WHERE id = \(1) AND version = \(1)")
            }
            #expect(error.code == .lockWaitTimeout)
            try holder.executeScript(unsafeSQL: "ROLLBACK")
        }
    }

    @Test("a SELECT behind another session's LOCK TABLES ... WRITE fails with 1205; the connection is kept")
    func tableLock() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let holder = try Self.holderOfOneRow(configuration)
            defer { holder.close() }
            try holder.executeScript(unsafeSQL: "LOCK TABLES t WRITE")
            let error = try expectLockWaitTimeout(configuration) { connection throws(MySQLError) in
                try connection.query("SELECT version FROM t WHERE id = \(1)")
            }
            #expect(error.code == .lockWaitTimeout)
            try holder.executeScript(unsafeSQL: "UNLOCK TABLES")
        }
    }

    @Test("a transaction behind another session's row lock fails with 1205 after one lock wait, not run again")
    func transactionNotRetriedAfterLockWait() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let holder = try Self.holderOfOneRow(configuration)
            defer { holder.close() }
            try holder.executeScript(unsafeSQL: "START TRANSACTION; SELECT version FROM t WHERE id = 1 FOR UPDATE")
            let observer = RecordingObserver()
            let pool = Self.pool(configuration, lockWaitSeconds: 2, observer: observer)
            defer { pool.close() }
            let runs = Mutex(0)
            let started = ContinuousClock.now
            let error = #expect(throws: MySQLError.self) {
                try pool.transaction { connection in
                    runs.withLock { $0 += 1 }
                    try connection.execute("UPDATE t SET version = \(3) WHERE id = \(1)")
                }
            }
            #expect(error?.code == .lockWaitTimeout)
            // One lock wait of 2 s, not three; a generous margin for a loaded machine.
            #expect(ContinuousClock.now - started < .seconds(4))
            #expect(runs.withLock { $0 } == 1)
            #expect(pool.statistics.totalTransactionRetries == 0)
            #expect(observer.retried.withLock { $0 }.isEmpty)
            #expect(observer.failed.withLock { $0 } == [.lockWaitTimeout])
            try holder.executeScript(unsafeSQL: "ROLLBACK")
        }
    }

    @Test("background work (upToAttempts) runs a transaction again after 1205 until its attempts are used up")
    func upToAttemptsRetriesLockWaits() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let holder = try Self.holderOfOneRow(configuration)
            defer { holder.close() }
            try holder.executeScript(unsafeSQL: "START TRANSACTION; SELECT version FROM t WHERE id = 1 FOR UPDATE")
            let observer = RecordingObserver()
            let pool = Self.pool(configuration, lockWaitSeconds: 1, attempts: 2, observer: observer)
            defer { pool.close() }
            let runs = Mutex(0)
            let error = #expect(throws: MySQLError.self) {
                try pool.transaction(lockConflicts: .upToAttempts) { connection in
                    runs.withLock { $0 += 1 }
                    try connection.execute("UPDATE t SET version = \(3) WHERE id = \(1)")
                }
            }
            #expect(error?.code == .lockWaitTimeout)
            #expect(runs.withLock { $0 } == 2)
            #expect(pool.statistics.totalTransactionRetries == 1)
            #expect(observer.retried.withLock { $0 } == [.lockWaitTimeout])
            #expect(observer.failed.withLock { $0 } == [.lockWaitTimeout])
            try holder.executeScript(unsafeSQL: "ROLLBACK")
        }
    }

    @Test("a deadlock is run again only while the call has run for less than one lock wait")
    func deadlockRetriedWithinOneLockWait() async throws {
        try await LiveDatabase.withFreshDatabase { configuration in
            let observer = RecordingObserver()
            let pool = Self.pool(configuration, lockWaitSeconds: 1, observer: observer)
            defer { pool.close() }
            // A deadlock reported at once is run again, as InnoDB's victim usually succeeds at once.
            let quickRuns = Mutex(0)
            try pool.transaction { _ in
                let run = quickRuns.withLock { value in
                    value += 1
                    return value
                }
                if run == 1 { throw MySQLError(code: .deadlock, message: "deadlock") }
            }
            #expect(quickRuns.withLock { $0 } == 2)
            #expect(observer.retried.withLock { $0 } == [.deadlock])
            // One reported after the call has spent a whole lock wait is not: the call answers instead.
            let lateRuns = Mutex(0)
            let error = #expect(throws: MySQLError.self) {
                try pool.transaction { connection in
                    lateRuns.withLock { $0 += 1 }
                    _ = try connection.query(MySQLQuery(unsafeSQL: "SELECT SLEEP(1.2)"))
                    throw MySQLError(code: .deadlock, message: "deadlock")
                }
            }
            #expect(error?.code == .deadlock)
            #expect(lateRuns.withLock { $0 } == 1)
            #expect(observer.retried.withLock { $0 } == [.deadlock])
            #expect(observer.failed.withLock { $0 } == [.deadlock])
        }
    }

    /// A one-connection pool on `configuration` with `lockWaitSeconds` lock waits, a 10 s read timeout and `attempts`
    /// transaction attempts.
    private static func pool(
        _ configuration: MySQLConfiguration, lockWaitSeconds: UInt32, attempts: Int = 3, observer: RecordingObserver
    ) -> MySQLPool {
        var configuration = configuration
        configuration.readTimeoutSeconds = 10
        configuration.lockWaitTimeoutSeconds = lockWaitSeconds
        return MySQLPool(
            connection: configuration, configuration: .init(maxConnections: 1, transactionAttempts: attempts), observer: observer,
            logger: quietLogger)
    }

    /// Another session, with table `t` holding the row (1, 1).
    private static func holderOfOneRow(_ configuration: MySQLConfiguration) throws -> MySQLConnection {
        let holder = try MySQLConnection(configuration: configuration)
        try holder.execute("CREATE TABLE t (id INT PRIMARY KEY, version INT NOT NULL) ENGINE=InnoDB")
        try holder.execute("INSERT INTO t VALUES (1, 1)")
        return holder
    }

    /// Runs `blocked` on a one-connection pool whose lock wait is 1 s and read timeout 10 s, and checks that it
    /// fails well before the read timeout and that the pool then hands out the same, working connection.
    private func expectLockWaitTimeout<Value>(
        _ configuration: MySQLConfiguration, _ blocked: (MySQLConnection) throws(MySQLError) -> Value
    ) throws -> MySQLError {
        var configuration = configuration
        configuration.readTimeoutSeconds = 10
        configuration.lockWaitTimeoutSeconds = 1
        let pool = MySQLPool(connection: configuration, configuration: .init(maxConnections: 1), logger: quietLogger)
        defer { pool.close() }
        let started = ContinuousClock.now
        let (firstID, error, usable) = try pool.withConnection { connection in
            let error = #expect(throws: MySQLError.self) { _ = try blocked(connection) }
            return (connection.connectionID, error, connection.isUsable)
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(usable)
        let (secondID, one) = try pool.withConnection { connection in
            (connection.connectionID, try connection.query("SELECT \(1) AS n").first?.int64("n"))
        }
        #expect(secondID == firstID)
        #expect(one == 1)
        #expect(pool.statistics.totalDiscarded == 0)
        return try #require(error)
    }
}
