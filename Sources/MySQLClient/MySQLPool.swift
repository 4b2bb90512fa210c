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
        /// How many times `transaction` runs its body when it fails with a deadlock or lock wait timeout.
        public var transactionAttempts: Int
        /// The prepared-statement cache size of each connection.
        public var statementCacheCapacity: Int

        /// Makes a configuration; counts below 1 are raised to 1.
        public init(
            maxConnections: Int = 10, acquireTimeout: Duration = .seconds(5), pingAfterIdle: Duration = .seconds(30),
            transactionAttempts: Int = 3, statementCacheCapacity: Int = 128
        ) {
            self.maxConnections = max(1, maxConnections)
            self.acquireTimeout = acquireTimeout
            self.pingAfterIdle = pingAfterIdle
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
    private let logger: Logger

    /// Makes a pool; no connection is opened until the first lease.
    /// - Parameters:
    ///   - connection: the server and credentials.
    ///   - configuration: limits and timings.
    ///   - observer: told about waits, timeouts, discards and retries, for metrics.
    ///   - logger: receives debug and info messages; never bound values or passwords.
    public init(
        connection: MySQLConfiguration, configuration: Configuration = Configuration(),
        observer: (any MySQLPoolObserver)? = nil, logger: Logger
    ) {
        self.connectionConfiguration = connection
        self.configuration = configuration
        self.core = PoolCore(permits: configuration.maxConnections)
        self.observer = observer
        var logger = logger
        logger[metadataKey: "mysql.server"] = "\(connection.host ?? connection.socketPath ?? "")"
        self.logger = logger
    }

    /// Counters and gauges for metrics.
    public var statistics: MySQLPoolStatistics {
        core.withLock { state in
            MySQLPoolStatistics(
                inUse: state.inUse, idle: state.idle.count, totalOpened: state.totalOpened,
                totalDiscarded: state.totalDiscarded, totalAcquired: state.totalAcquired,
                totalAcquireTimeouts: state.totalAcquireTimeouts, totalAcquireWait: state.totalAcquireWait,
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
        let (slot, waited) = try lease()
        // What goes back to the pool is decided inside the lock, after `body`; the generic part stays small so
        // that a caller's specialization carries no Result or tuple metadata lookups per lease.
        var reusable = false
        var failure: MySQLErrorCode?
        defer { checkIn(slot, reusable: reusable, reason: failure, acquiredAfter: waited) }
        return try slot.connection.withLock { connection in
            defer { reusable = Self.settle(connection) }
            do {
                return try body(connection)
            } catch {
                failure = (error as? MySQLError)?.code
                throw error
            }
        }
    }

    /// A permit and a connection, and how long getting them took.
    private func lease() throws(MySQLError) -> (Slot, Duration) {
        let start = ContinuousClock.now
        let first: Slot?
        switch core.acquire(timeout: configuration.acquireTimeout) {
        case .acquired(let slot):
            first = slot
        case .closed:
            throw MySQLError.poolClosed
        case .timedOut:
            let waited = start.duration(to: .now)
            core.withLock { $0.totalAcquireTimeouts += 1 }
            observer?.acquireTimedOut(wait: waited)
            logger.info("mysql pool acquire timed out", metadata: ["mysql.pool.wait": "\(waited)"])
            throw MySQLError.poolTimeout(after: configuration.acquireTimeout)
        }
        let slot: Slot
        do {
            slot = try checkOut(first)
        } catch {
            // No connection was leased: the permit goes back.
            _ = core.release(nil, acquiredAfter: nil)
            throw error
        }
        let waited = start.duration(to: .now)
        observer?.connectionAcquired(wait: waited)
        return (slot, waited)
    }

    /// Rolls back a transaction `body` left open, and says whether the connection can go back to the pool.
    private static func settle(_ connection: MySQLConnection) -> Bool {
        if connection.isUsable && connection.isInTransaction {
            // A connection never goes back to the pool inside a transaction.
            connection.rollbackOrMarkBroken()
        }
        return connection.isUsable && !connection.isInTransaction
    }

    /// Runs `body` in a transaction on a leased connection, retrying the whole transaction on deadlock (1213)
    /// or lock wait timeout (1205) up to `transactionAttempts` times in all.
    /// - Throws: as `withConnection`, and the last error once the attempts are used up.
    @discardableResult
    public func transaction<Result: Sendable>(_ body: (MySQLConnection) throws -> Result) throws -> Result {
        var attempt = 1
        while true {
            do {
                return try withConnection { connection in try connection.withTransaction(body) }
            } catch let error as MySQLError where error.code.isTransient && attempt < configuration.transactionAttempts {
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

    /// `candidate` or another idle connection (pinged first if it idled long), or a new one; connecting and
    /// pinging happen outside the pool lock. The caller holds a permit.
    private func checkOut(_ candidate: Slot?) throws(MySQLError) -> Slot {
        var next = candidate
        while let slot = next {
            let pingAfterIdle = configuration.pingAfterIdle
            let failure = slot.connection.withLock { connection -> MySQLError? in
                guard connection.isUsable else { return MySQLError.connectionClosed }
                guard connection.lastUsed.duration(to: .now) > pingAfterIdle else { return nil }
                do throws(MySQLError) {
                    try connection.ping()
                    return nil
                } catch {
                    return error
                }
            }
            guard let failure else { return slot }
            discard(slot, code: failure.code)
            next = try core.withLock { state throws(MySQLError) in
                guard !state.closed else { throw MySQLError.poolClosed }
                return state.idle.popLast()
            }
        }
        let connection = try MySQLConnection(
            configuration: connectionConfiguration, statementCacheCapacity: configuration.statementCacheCapacity)
        logger.debug("mysql connection opened", metadata: ["mysql.connection.id": "\(connection.connectionID)"])
        core.withLock { $0.totalOpened += 1 }
        return Slot(connection)
    }

    private func checkIn(_ slot: Slot, reusable: Bool, reason: MySQLErrorCode?, acquiredAfter waited: Duration) {
        guard reusable else {
            // Closed before its permit returns, so no more than maxConnections are ever open.
            discard(slot, code: reason ?? .connectionClosed)
            _ = core.release(nil, acquiredAfter: waited)
            return
        }
        if !core.release(slot, acquiredAfter: waited) {
            // The pool was closed while the connection was leased.
            slot.connection.withLock { $0.close() }
        }
    }

    /// Closes a connection that must not be reused and counts it.
    private func discard(_ slot: Slot, code: MySQLErrorCode) {
        let connectionID = slot.connection.withLock { connection in
            let id = connection.connectionID
            connection.close()
            return id
        }
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
    /// Successful leases.
    public var totalAcquired: UInt64
    /// Leases that gave up with `poolTimeout`.
    public var totalAcquireTimeouts: UInt64
    /// The summed wait of successful leases, connecting included.
    public var totalAcquireWait: Duration
    /// Transactions run again after a deadlock or lock wait timeout.
    public var totalTransactionRetries: UInt64
}

/// Receives pool events as they happen, for metrics such as `mysql.pool.wait.duration`.
public protocol MySQLPoolObserver: Sendable {
    /// A lease got a connection after `wait`.
    func connectionAcquired(wait: Duration)
    /// A lease gave up with `poolTimeout` after `wait`.
    func acquireTimedOut(wait: Duration)
    /// A connection was closed as unusable; `code` says why.
    func connectionDiscarded(code: MySQLErrorCode)
    /// A transaction is being run again after `code` (deadlock or lock wait timeout).
    func transactionRetried(code: MySQLErrorCode)
}

extension MySQLPoolObserver {
    /// Does nothing.
    public func connectionAcquired(wait: Duration) {}
    /// Does nothing.
    public func acquireTimedOut(wait: Duration) {}
    /// Does nothing.
    public func connectionDiscarded(code: MySQLErrorCode) {}
    /// Does nothing.
    public func transactionRetried(code: MySQLErrorCode) {}
}

/// A pooled connection behind its own, uncontended lock: the lock is what lets a non-Sendable connection
/// move between threads under Swift 6 region checking.
private final class Slot: Sendable {
    let connection: Mutex<MySQLConnection>

    init(_ connection: sending MySQLConnection) {
        self.connection = Mutex(connection)
    }
}

private struct PoolState {
    var permits: Int
    var idle: [Slot] = []
    var inUse = 0
    var closed = false
    var totalOpened: UInt64 = 0
    var totalDiscarded: UInt64 = 0
    var totalAcquired: UInt64 = 0
    var totalAcquireTimeouts: UInt64 = 0
    var totalAcquireWait: Duration = .zero
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

    private let condition = NSCondition()
    private var state: PoolState

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
            let (seconds, attoseconds) = timeout.components
            let deadline = Date(timeIntervalSinceNow: Double(seconds) + Double(attoseconds) / 1e18)
            while state.permits == 0 && !state.closed {
                if !condition.wait(until: deadline) && state.permits == 0 && !state.closed {
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
    /// that got a connection after `waited`. Returns whether `slot` was kept.
    func release(_ slot: Slot?, acquiredAfter waited: Duration?) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        state.inUse -= 1
        state.permits += 1
        if let waited {
            state.totalAcquired += 1
            state.totalAcquireWait += waited
        }
        condition.signal()
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
