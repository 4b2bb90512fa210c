import Foundation

/// A complete request waiting for a worker.
struct WorkItem: Sendable {
    let connection: Connection
    let request: ParsedRequest
    /// When the request became complete (monotonic nanoseconds).
    let receivedAt: UInt64
    /// The connection's request limit is reached: the response closes it.
    let isLastOnConnection: Bool
}

/// A bounded queue of requests drained by a fixed set of worker threads.
// @unchecked Sendable: `ring`, `head`, `count` and `stopped` are only read or written with
// `condition` locked.
final class WorkerPool: @unchecked Sendable {
    private let condition = NSCondition()
    private var ring: [WorkItem?]
    private var head = 0
    private var count = 0
    private var stopped = false

    init(capacity: Int) {
        ring = Array(repeating: nil, count: max(1, capacity))
    }

    /// Queues `item`; false when the queue is full or stopped.
    func submit(_ item: WorkItem) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !stopped, count < ring.count else { return false }
        ring[(head + count) % ring.count] = item
        count += 1
        condition.signal()
        return true
    }

    /// The next item, waiting for one; nil once the pool is stopped.
    func take() -> WorkItem? {
        condition.lock()
        defer { condition.unlock() }
        while count == 0 && !stopped { condition.wait() }
        guard !stopped else { return nil }
        let item = ring[head]
        ring[head] = nil
        head = (head + 1) % ring.count
        count -= 1
        return item
    }

    /// Wakes every worker to exit; items still queued are dropped.
    func stop() {
        condition.lock()
        stopped = true
        for index in ring.indices { ring[index] = nil }
        count = 0
        condition.broadcast()
        condition.unlock()
    }
}

/// Named threads that can be joined with a deadline.
final class ThreadGroup: Sendable {
    private let running = WaitableCounter()

    /// Starts `body` on a new thread called `name`.
    func start(name: String, stackSize: Int?, _ body: @escaping @Sendable () -> Void) {
        running.change(by: 1)
        let thread = Thread { [running] in
            body()
            running.change(by: -1)
        }
        thread.name = name
        if let stackSize { thread.stackSize = stackSize }
        thread.start()
    }

    /// Waits until every thread has returned or `deadline` (monotonic nanoseconds) passes; true if all returned.
    func join(until deadline: UInt64) -> Bool {
        running.waitForZero(until: deadline)
    }
}

/// A counter others can wait on reaching zero.
// @unchecked Sendable: `value` is only read or written with `condition` locked.
final class WaitableCounter: @unchecked Sendable {
    private let condition = NSCondition()
    private var value = 0

    func change(by delta: Int) {
        condition.lock()
        value += delta
        if value == 0 { condition.broadcast() }
        condition.unlock()
    }

    func waitForZero(until deadline: UInt64) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while value != 0 {
            let now = MonotonicClock.now()
            guard now < deadline else { return false }
            _ = condition.wait(until: Date(timeIntervalSinceNow: Double(deadline - now) / 1e9))
        }
        return true
    }
}
