import Conditions
import Foundation
import Logging
import Synchronization

/// A bounded pool of blocking connections, after GRDB's `Pool`: a permit per connection, idle connections
/// in a lock, connecting and pinging outside it, broken connections discarded.
///
/// Permits, idle connections and counters share one `NSCondition`, so a lease takes that lock once to
/// check out and once to check in: many threads on few cores then queue on a futex instead of spinning on
/// several locks in turn.
///
/// Every call blocks the calling thread; call it from your own threads, never from Swift's cooperative pool.
public final class MySQLPool: Sendable {
    /// Limits and timings of a pool.
    public struct Configuration: Sendable, Hashable {
        /// The most connections open at once, idle and leased together.
        public var maxConnections: Int
        /// How long `withConnection` waits for a free connection before throwing `poolTimeout`.
        public var acquireTimeout: Duration
        /// A connection idle for longer than this is pinged before it is handed out.
        public var pingAfterIdle: Duration
        /// A connection open for longer than this (less up to 1/40 of it, drawn per connection, so that connections
        /// opened together do not all reconnect together) is closed instead of being handed out; nil keeps them.
        public var maxLifetime: Duration?
        /// The most times `transaction` runs its body when it fails with a deadlock or lock wait timeout (see
        /// `LockConflictRetry` for which of them run again).
        public var transactionAttempts: Int
        /// The prepared-statement cache size of each connection.
        public var statementCacheCapacity: Int

        /// Makes a configuration; counts below 1 are raised to 1.
        public init(
            maxConnections: Int = 10, acquireTimeout: Duration = .seconds(5), pingAfterIdle: Duration = .seconds(30),
            maxLifetime: Duration? = nil, transactionAttempts: Int = 3, statementCacheCapacity: Int = 128
        ) {
            self.maxConnections = max(1, maxConnections)
            self.acquireTimeout = acquireTimeout
            self.pingAfterIdle = pingAfterIdle
            self.maxLifetime = maxLifetime
            self.transactionAttempts = max(1, transactionAttempts)
            self.statementCacheCapacity = max(1, statementCacheCapacity)
        }
    }

    /// The server and credentials every connection uses.
    public let connectionConfiguration: MySQLConfiguration
    /// The pool's limits.
    public let configuration: Configuration

    private let core: PoolCore
    private let observer: (any MySQLPoolObserver)?
    /// The observer's `connectionAcquired(waitNanoseconds:)`, bound once: calling it through the optional
    /// existential copied the observer on every lease.
    private let reportAcquired: (@Sendable (Int64) -> Void)?
    /// `configuration.pingAfterIdle` in nanoseconds, compared with `MySQLConnection.lastUsedNanoseconds`.
    private let pingAfterIdleNanoseconds: Int64
    /// How long a `withinLockWait` call may have run and still start again after a deadlock: the sessions' lock wait
    /// timeout, or, where the server keeps its own, the read timeout, which then ends a longer wait first.
    private let lockWaitBudgetNanoseconds: Int64
    private let logger: Logger
    /// Whether the last connect failed, so that a run of failed connects (a server down for minutes) is logged once.
    private let connectFailing = Atomic<Bool>(false)

    /// Makes a pool; no connection is opened until the first lease.
    /// - Parameters:
    ///   - connection: the server and credentials.
    ///   - configuration: limits and timings.
    ///   - observer: told about waits, timeouts, discards, retries and lock conflicts not retried, for metrics.
    ///   - logger: receives debug and info messages, and a warning when connects start failing; never bound values or
    ///     passwords.
    public init(
        connection: MySQLConfiguration, configuration: Configuration = Configuration(),
        observer: (any MySQLPoolObserver)? = nil, logger: Logger
    ) {
        self.connectionConfiguration = connection
        self.configuration = configuration
        self.core = PoolCore(permits: configuration.maxConnections)
        self.observer = observer
        if let observer {
            self.reportAcquired = { @Sendable waitNanoseconds in observer.connectionAcquired(waitNanoseconds: waitNanoseconds) }
        } else {
            self.reportAcquired = nil
        }
        self.pingAfterIdleNanoseconds = configuration.pingAfterIdle.saturatingNanoseconds
        self.lockWaitBudgetNanoseconds =
            Int64(connection.lockWaitTimeoutSeconds ?? connection.readTimeoutSeconds) * 1_000_000_000
        var logger = logger
        logger[metadataKey: "mysql.server"] = "\(connection.host ?? connection.socketPath ?? "")"
        self.logger = logger
    }

    /// Counters and gauges for metrics.
    public var statistics: MySQLPoolStatistics {
        core.withLock { state in
            MySQLPoolStatistics(
                inUse: state.inUse, idle: state.idle.count, totalOpened: state.totalOpened,
                totalDiscarded: state.totalDiscarded, totalRetired: state.totalRetired, totalAcquired: state.totalAcquired,
                totalAcquireTimeouts: state.totalAcquireTimeouts, totalAcquireWait: .nanoseconds(state.totalAcquireWaitNanoseconds),
                totalTransactionRetries: state.totalTransactionRetries)
        }
    }

    /// Leases a connection for the duration of `body`.
    ///
    /// The connection goes back to the pool afterwards unless an error showed it broken (it is then closed and
    /// the next lease opens a fresh one) or it is still inside a transaction (it is rolled back first, and
    /// discarded if that fails).
    /// - Throws: `MySQLError` with `poolTimeout` when no connection is free within `acquireTimeout`,
    ///   `poolClosed` after `close()`, a connect error, or whatever `body` throws.
    @discardableResult
    public func withConnection<Result: Sendable>(_ body: (MySQLConnection) throws -> Result) throws -> Result {
        var lease = try lease()
        // What goes back to the pool is decided inside the lock, after `body`; the generic part stays small so
        // that a caller's specialization carries no Result or tuple metadata lookups per lease.
        var ran = false
        var reusable = false
        var failure: MySQLErrorCode?
        // After the connection's lock is released: a discard takes it again.
        defer { if ran { checkIn(lease, reusable: reusable, reason: failure) } }
        while true {
            // One critical section per lease: the idle check (and ping) and `body` share it.
            let slot = lease.slot
            do {
                return try slot.connection.withLock { connection in
                    // Thrown rather than returned as an Optional, which would cost an unspecialized caller
                    // a metadata lookup per lease.
                    guard prepare(connection, &lease) else { throw Refused() }
                    ran = true
                    defer {
                        reusable = Self.settle(connection)
                        // What broke the connection, when that was not `body`'s own error (a ROLLBACK after a
                        // duplicate key that finds the connection gone), is why it is discarded.
                        if !reusable, let broken = connection.brokenCode { failure = broken }
                    }
                    do {
                        return try body(connection)
                    } catch {
                        failure = (error as? MySQLError)?.code
                        throw error
                    }
                }
            } catch is Refused {
                try replace(&lease)
            }
        }
    }

    /// `prepare` turned the leased connection down; the reason is in the lease.
    private struct Refused: Error {}

    /// A leased slot, when its lease began, and why it cannot be used once `prepare` has turned it down.
    private struct Lease {
        var slot: Slot
        /// True for a connection this lease opened, which needs no idle check.
        var isNew: Bool
        let start: Int64
        var waitNanoseconds: Int64 = 0
        var failure: MySQLErrorCode?
        /// True when `prepare` turned the connection down for its age, not for an error.
        var expired = false
    }

    /// A permit and a connection: an idle one when there is one (checked by `prepare`), else a new one.
    private func lease() throws(MySQLError) -> Lease {
        let start = BootClock.nanoseconds()
        switch core.acquire(timeout: configuration.acquireTimeout) {
        case .acquired(let slot?):
            return Lease(slot: slot, isNew: false, start: start)
        case .acquired(nil):
            return Lease(slot: try open(), isNew: true, start: start)
        case .closed:
            throw MySQLError.poolClosed
        case .timedOut:
            let waited = Duration.nanoseconds(BootClock.nanoseconds() &- start)
            core.withLock { $0.totalAcquireTimeouts += 1 }
            observer?.acquireTimedOut(wait: waited)
            logger.info("mysql pool acquire timed out", metadata: ["mysql.pool.wait": "\(waited)"])
            throw MySQLError.poolTimeout(after: configuration.acquireTimeout)
        }
    }

    /// Checks the leased connection under its lock (pinging it if it idled longer than `pingAfterIdle`), and
    /// reports the lease's wait when it is usable; otherwise keeps the reason in `lease` and returns false.
    private func prepare(_ connection: MySQLConnection, _ lease: inout Lease) -> Bool {
        guard connection.isUsable else {
            lease.failure = .connectionClosed
            return false
        }
        // One clock read serves the age and idle checks and, unless a ping follows, the end of the wait.
        var now = BootClock.nanoseconds()
        // A connection this lease opened is never retired, even with a zero lifetime: the lease would loop.
        if !lease.isNew && now >= lease.slot.retireAtNanoseconds {
            lease.expired = true
            return false
        }
        if !lease.isNew && now &- connection.lastUsedNanoseconds > pingAfterIdleNanoseconds {
            do throws(MySQLError) {
                try connection.ping()
            } catch {
                lease.failure = error.code
                return false
            }
            now = BootClock.nanoseconds()
        }
        lease.waitNanoseconds = now &- lease.start
        reportAcquired?(lease.waitNanoseconds)
        return true
    }

    /// Discards the slot `prepare` turned down and takes the next idle connection, or opens one; connecting
    /// and pinging happen outside the pool lock. Gives the permit back when no connection can be had.
    private func replace(_ lease: inout Lease) throws(MySQLError) {
        if lease.expired {
            retire(lease.slot)
        } else {
            discard(lease.slot, code: lease.failure ?? .connectionClosed)
        }
        lease.failure = nil
        lease.expired = false
        let next: Slot?
        do throws(MySQLError) {
            next = try core.withLock { state throws(MySQLError) in
                guard !state.closed else { throw MySQLError.poolClosed }
                return state.idle.popLast()
            }
        } catch {
            // No connection was leased: the permit goes back.
            _ = core.release(nil, acquiredAfterNanoseconds: nil)
            throw error
        }
        if let next {
            lease.slot = next
            lease.isNew = false
        } else {
            lease.slot = try open()
            lease.isNew = true
        }
    }

    /// A new connection for a lease that holds a permit; gives the permit back when connecting fails.
    private func open() throws(MySQLError) -> Slot {
        let connection: MySQLConnection
        do throws(MySQLError) {
            connection = try MySQLConnection(
                configuration: connectionConfiguration, statementCacheCapacity: configuration.statementCacheCapacity)
        } catch {
            _ = core.release(nil, acquiredAfterNanoseconds: nil)
            observer?.connectFailed(code: error.code)
            if !connectFailing.exchange(true, ordering: .relaxed) {
                logger.warning(
                    "mysql connect failed; calls that need a new connection fail until a connect succeeds",
                    metadata: ["mysql.error.code": "\(error.code.rawValue)"])
            }
            throw error
        }
        if connectFailing.exchange(false, ordering: .relaxed) { logger.info("mysql connects again") }
        logger.debug("mysql connection opened", metadata: ["mysql.connection.id": "\(connection.connectionID)"])
        core.withLock { $0.totalOpened += 1 }
        return Slot(connection, retireAtNanoseconds: retireTime())
    }

    /// When a connection opened now reaches `maxLifetime`, less its share of jitter; `Int64.max` for never.
    private func retireTime() -> Int64 {
        guard let maxLifetime = configuration.maxLifetime else { return .max }
        let lifetime = maxLifetime.saturatingNanoseconds
        let jitter = lifetime > 40 ? Int64.random(in: 0..<(lifetime / 40)) : 0
        let (retireAt, overflow) = BootClock.nanoseconds().addingReportingOverflow(lifetime - jitter)
        return overflow ? .max : retireAt
    }

    /// Rolls back a transaction `body` left open, and says whether the connection can go back to the pool.
    private static func settle(_ connection: MySQLConnection) -> Bool {
        if connection.isUsable && connection.isInTransaction {
            // A connection never goes back to the pool inside a transaction.
            connection.rollbackOrMarkBroken()
        }
        return connection.isUsable && !connection.isInTransaction
    }

    /// Which lock conflicts a call runs again, and for how long.
    public enum LockConflictRetry: Sendable, Hashable {
        /// For calls someone is waiting on: a deadlock (1213) is run again, up to `transactionAttempts` runs, but only
        /// while the call has run for less than one lock wait timeout; a lock wait timeout (1205) ends the call at once,
        /// since the lock's holder has already kept it that long.
        case withinLockWait
        /// For background work that may wait longer: deadlocks and lock wait timeouts alike are run again, up to
        /// `transactionAttempts` runs in all.
        case upToAttempts
    }

    /// Runs `body` in a transaction on a leased connection, running the whole transaction again after a lock conflict
    /// as `lockConflicts` allows.
    /// - Throws: as `withConnection`, and the lock conflict that was not run again.
    @discardableResult
    public func transaction<Result: Sendable>(
        lockConflicts: LockConflictRetry = .withinLockWait, _ body: (MySQLConnection) throws -> Result
    ) throws -> Result {
        try retrying(lockConflicts) { try withConnection { connection in try connection.withTransaction(body) } }
    }

    /// Runs `body` on a leased connection outside a transaction, running it again after a lock conflict as
    /// `lockConflicts` allows; retries are counted and reported as `transaction`'s.
    /// - Throws: as `withConnection`, and the lock conflict that was not run again.
    @discardableResult
    public func withConnectionRetryingLockConflicts<Result: Sendable>(
        lockConflicts: LockConflictRetry = .withinLockWait, _ body: (MySQLConnection) throws -> Result
    ) throws -> Result {
        try retrying(lockConflicts) { try withConnection(body) }
    }

    /// Calls `run` until it succeeds, fails otherwise than with a lock conflict, or fails with one that `policy`
    /// does not run again; that last one is reported to the observer and logged.
    private func retrying<Result>(_ policy: LockConflictRetry, _ run: () throws -> Result) throws -> Result {
        let start = BootClock.nanoseconds()
        var attempt = 1
        while true {
            do {
                return try run()
            } catch let error as MySQLError where error.code.isTransient {
                let elapsed = BootClock.nanoseconds() &- start
                guard attempt < configuration.transactionAttempts,
                    policy == .upToAttempts || (error.code == .deadlock && elapsed < lockWaitBudgetNanoseconds)
                else {
                    observer?.lockConflictFailed(code: error.code)
                    logger.debug(
                        "mysql lock conflict not retried",
                        metadata: [
                            "mysql.error.code": "\(error.code.rawValue)", "mysql.attempt": "\(attempt)",
                            "mysql.elapsed": "\(Duration.nanoseconds(elapsed))",
                        ])
                    throw error
                }
                core.withLock { $0.totalTransactionRetries += 1 }
                observer?.transactionRetried(code: error.code)
                logger.debug(
                    "mysql transaction retried",
                    metadata: ["mysql.error.code": "\(error.code.rawValue)", "mysql.attempt": "\(attempt)"])
                // A short random pause keeps two deadlocked transactions from colliding again in lockstep.
                Thread.sleep(forTimeInterval: Double.random(in: 0.002...0.010) * Double(attempt))
                attempt += 1
            }
        }
    }

    /// Closes the idle connections and refuses new leases; leased connections close when they come back.
    /// Waiting callers get `poolClosed`.
    public func close() {
        let idle = core.close()
        for slot in idle {
            slot.connection.withLock { $0.close() }
        }
        logger.debug("mysql pool closed", metadata: ["mysql.pool.closed_idle": "\(idle.count)"])
    }

    /// Returns a lease's connection to the pool, or discards it when `body` left it unusable.
    private func checkIn(_ lease: Lease, reusable: Bool, reason: MySQLErrorCode?) {
        guard reusable else {
            // Closed before its permit returns, so no more than maxConnections are ever open.
            discard(lease.slot, code: reason ?? .connectionClosed)
            _ = core.release(nil, acquiredAfterNanoseconds: lease.waitNanoseconds)
            return
        }
        if !core.release(lease.slot, acquiredAfterNanoseconds: lease.waitNanoseconds) {
            // The pool was closed while the connection was leased.
            lease.slot.connection.withLock { $0.close() }
        }
    }

    /// Closes the slot's connection and returns the server's id it had, for the log line.
    private static func close(_ slot: Slot) -> UInt64 {
        slot.connection.withLock { connection in
            let id = connection.connectionID
            connection.close()
            return id
        }
    }

    /// Closes a connection that reached its maximum lifetime and counts it; no error, so not a discard.
    private func retire(_ slot: Slot) {
        let connectionID = Self.close(slot)
        core.withLock { $0.totalRetired += 1 }
        logger.debug("mysql connection retired at its maximum lifetime", metadata: ["mysql.connection.id": "\(connectionID)"])
    }

    /// Closes a connection that must not be reused and counts it.
    private func discard(_ slot: Slot, code: MySQLErrorCode) {
        let connectionID = Self.close(slot)
        core.withLock { $0.totalDiscarded += 1 }
        observer?.connectionDiscarded(code: code)
        logger.info(
            "mysql connection discarded",
            metadata: ["mysql.connection.id": "\(connectionID)", "mysql.error.code": "\(code.rawValue)"])
    }
}

/// Counters and gauges of a pool, for metrics.
public struct MySQLPoolStatistics: Sendable, Hashable {
    /// Connections leased right now.
    public var inUse: Int
    /// Connections open and waiting in the pool.
    public var idle: Int
    /// Connections opened since the pool was made.
    public var totalOpened: UInt64
    /// Connections closed because they were broken, failed a ping, or failed a rollback.
    public var totalDiscarded: UInt64
    /// Connections closed, unbroken, because they reached the pool's `maxLifetime`.
    public var totalRetired: UInt64
    /// Successful leases.
    public var totalAcquired: UInt64
    /// Leases that gave up with `poolTimeout`.
    public var totalAcquireTimeouts: UInt64
    /// The summed wait of successful leases, connecting included.
    public var totalAcquireWait: Duration
    /// Transactions, and statements outside one, run again after a deadlock or lock wait timeout.
    public var totalTransactionRetries: UInt64
}

/// Receives pool events as they happen, for metrics such as `mysql.pool.wait.duration`.
public protocol MySQLPoolObserver: Sendable {
    /// A lease got a connection after `wait`.
    func connectionAcquired(wait: Duration)
    /// A lease got a connection after `waitNanoseconds`; the pool calls this one, which by default calls
    /// `connectionAcquired(wait:)`.
    func connectionAcquired(waitNanoseconds: Int64)
    /// A lease gave up with `poolTimeout` after `wait`.
    func acquireTimedOut(wait: Duration)
    /// A connection was closed as unusable; `code` says why.
    func connectionDiscarded(code: MySQLErrorCode)
    /// A transaction, or a statement outside one, is being run again after `code` (deadlock or lock wait timeout).
    func transactionRetried(code: MySQLErrorCode)
    /// A transaction, or a statement outside one, failed with `code` (deadlock or lock wait timeout) and is not run
    /// again: its `LockConflictRetry` does not allow it, or its attempts are used up.
    func lockConflictFailed(code: MySQLErrorCode)
    /// Opening a new connection failed with `code` (no server: 2002, 2003; refused: 1040, an access error).
    func connectFailed(code: MySQLErrorCode)
}

extension MySQLPoolObserver {
    /// Does nothing.
    public func connectionAcquired(wait: Duration) {}
    /// Calls `connectionAcquired(wait:)`.
    public func connectionAcquired(waitNanoseconds: Int64) { connectionAcquired(wait: .nanoseconds(waitNanoseconds)) }
    /// Does nothing.
    public func acquireTimedOut(wait: Duration) {}
    /// Does nothing.
    public func connectionDiscarded(code: MySQLErrorCode) {}
    /// Does nothing.
    public func transactionRetried(code: MySQLErrorCode) {}
    /// Does nothing.
    public func lockConflictFailed(code: MySQLErrorCode) {}
    /// Does nothing.
    public func connectFailed(code: MySQLErrorCode) {}
}

/// A pooled connection behind its own, uncontended lock: the lock is what lets a non-Sendable connection
/// move between threads under Swift 6 region checking.
private final class Slot: Sendable {
    let connection: Mutex<MySQLConnection>
    /// The `BootClock` time from which the connection is past its maximum lifetime.
    let retireAtNanoseconds: Int64

    init(_ connection: sending MySQLConnection, retireAtNanoseconds: Int64) {
        self.connection = Mutex(connection)
        self.retireAtNanoseconds = retireAtNanoseconds
    }
}

private struct PoolState {
    var permits: Int
    var idle: [Slot] = []
    var inUse = 0
    /// Callers blocked in `acquire`; a release signals only when there is one.
    var waiters = 0
    var closed = false
    var totalOpened: UInt64 = 0
    var totalDiscarded: UInt64 = 0
    var totalRetired: UInt64 = 0
    var totalAcquired: UInt64 = 0
    var totalAcquireTimeouts: UInt64 = 0
    var totalAcquireWaitNanoseconds: Int64 = 0
    var totalTransactionRetries: UInt64 = 0
}

/// Permits, idle connections and counters under one condition: a counting semaphore with a deadline that
/// `close()` can wake, unlike DispatchSemaphore, which also hands out an idle connection with the permit.
// @unchecked Sendable: `state` is only read or written while `condition` is locked.
private final class PoolCore: @unchecked Sendable {
    enum Outcome {
        /// A permit, with an idle connection when there was one.
        case acquired(Slot?)
        case timedOut
        case closed
    }

    private let condition = MonotonicCondition()
    // Unchecked: every access is under `condition`'s lock and none nests in another, so the runtime's
    // exclusivity check (two swift_beginAccess calls per lease on each side) has nothing to catch.
    @exclusivity(unchecked) private var state: PoolState

    init(permits: Int) {
        state = PoolState(permits: permits)
    }

    func withLock<Result, Failure: Error>(_ body: (inout PoolState) throws(Failure) -> Result) throws(Failure) -> Result {
        condition.lock()
        defer { condition.unlock() }
        return try body(&state)
    }

    /// Takes a permit (waiting up to `timeout`) and the most recently returned idle connection.
    func acquire(timeout: Duration) -> Outcome {
        condition.lock()
        defer { condition.unlock() }
        if state.permits == 0 && !state.closed {
            let deadline = ContinuousClock.now + timeout
            state.waiters += 1
            defer { state.waiters -= 1 }
            while state.permits == 0 && !state.closed {
                if !condition.wait(for: deadline - ContinuousClock.now) && state.permits == 0 && !state.closed {
                    return .timedOut
                }
            }
        }
        if state.closed { return .closed }
        state.permits -= 1
        state.inUse += 1
        return .acquired(state.idle.popLast())
    }

    /// Returns a permit, with `slot` for the idle list unless it is nil or the pool is closed; counts a lease
    /// that got a connection after `waited` nanoseconds. Returns whether `slot` was kept.
    func release(_ slot: Slot?, acquiredAfterNanoseconds waited: Int64?) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        state.inUse -= 1
        state.permits += 1
        if let waited {
            state.totalAcquired += 1
            state.totalAcquireWaitNanoseconds &+= waited
        }
        // Waiters are counted under this lock, so none can be missed; an uncontended lease skips the call.
        if state.waiters > 0 { condition.signal() }
        guard let slot, !state.closed else { return false }
        state.idle.append(slot)
        return true
    }

    /// Refuses further leases, wakes every waiter, and hands back the idle connections to close.
    func close() -> [Slot] {
        condition.lock()
        defer { condition.unlock() }
        state.closed = true
        let idle = state.idle
        state.idle.removeAll()
        condition.broadcast()
        return idle
    }
}
