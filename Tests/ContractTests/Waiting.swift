import Foundation
import Synchronization

/// Polls `condition` every 2 ms until it holds or `timeout` passes; returns whether it held.
func eventually(timeout: Duration = .seconds(10), _ condition: () throws -> Bool) async rethrows -> Bool {
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
final class Recorder<Value: Sendable>: Sendable {
    private let storage = Mutex<[Value]>([])

    func append(_ value: Value) { storage.withLock { $0.append(value) } }

    var values: [Value] { storage.withLock { $0 } }

    var count: Int { storage.withLock { $0.count } }
}

/// A count that threads raise and wait on, with a deadline.
final class Latch: @unchecked Sendable {
    // @unchecked Sendable: `arrived` is only touched while holding `condition`.
    private let condition = NSCondition()
    private var arrived = 0

    /// Adds one arrival and wakes waiters.
    func arrive() {
        condition.lock()
        arrived += 1
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until `count` arrivals or `timeout`; returns whether they arrived.
    func wait(for count: Int, timeout: Duration) -> Bool {
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
    var arrivals: Int {
        condition.lock()
        defer { condition.unlock() }
        return arrived
    }
}

/// Runs `body(i)` for i in 0..<count, each on its own Foundation thread, released together; waits for all
/// until `timeout` and returns whether they all finished.
func onThreads(
    _ count: Int, timeout: Duration = .seconds(10), _ body: @escaping @Sendable (Int) -> Void
) async -> Bool {
    let start = Latch()
    let done = Latch()
    for index in 0..<count {
        let thread = Thread {
            _ = start.wait(for: 1, timeout: .seconds(10))
            body(index)
            done.arrive()
        }
        thread.start()
    }
    start.arrive()
    return await eventually(timeout: timeout) { done.arrivals == count }
}

/// Runs blocking work (MySQL, subprocesses) on its own Foundation thread, off Swift's cooperative pool.
func offPool<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Swift.Result { try body() }) }.start()
    }
}
