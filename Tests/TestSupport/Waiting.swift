import Foundation
import Synchronization

/// Polls `condition` every 2 ms until it holds or `timeout` passes; returns whether it held.
public func eventually(timeout: Duration = .seconds(20), _ condition: () throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        // Polls on this thread instead of suspending: tests that block the two cooperative threads
        // (MySQL calls, thread joins) could otherwise keep this one from resuming past its deadlines.
        usleep(2_000)
    }
}

/// Values appended from handler threads, read by the test.
public final class Recorder<Value: Sendable>: Sendable {
    private let storage = Mutex<[Value]>([])

    /// An empty recorder.
    public init() {}

    /// Appends one value.
    public func append(_ value: Value) { storage.withLock { $0.append(value) } }

    /// Everything appended so far, in order.
    public var values: [Value] { storage.withLock { $0 } }

    /// How many values were appended.
    public var count: Int { storage.withLock { $0.count } }
}

/// A count that threads raise and wait on, with a deadline.
public final class Latch: @unchecked Sendable {
    // @unchecked Sendable: `arrived` is only touched while holding `condition`.
    private let condition = NSCondition()
    private var arrived = 0

    /// A latch with no arrivals.
    public init() {}

    /// Adds one arrival and wakes waiters.
    public func arrive() {
        condition.lock()
        arrived += 1
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until `count` arrivals or `timeout`; returns whether they arrived.
    @discardableResult
    public func wait(for count: Int = 1, timeout: Duration = .seconds(60)) -> Bool {
        let parts = timeout.components
        let deadline = Date(timeIntervalSinceNow: Double(parts.seconds) + Double(parts.attoseconds) / 1e18)
        condition.lock()
        defer { condition.unlock() }
        while arrived < count {
            if !condition.wait(until: deadline) { return arrived >= count }
        }
        return true
    }

    /// Arrivals so far.
    public var arrivals: Int {
        condition.lock()
        defer { condition.unlock() }
        return arrived
    }
}
