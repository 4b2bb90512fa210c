import CEpoll
import Conditions
import Foundation
import Glibc

/// A complete request waiting for a worker.
struct WorkItem: Sendable {
    let connection: Connection
    /// Mutable so the worker can fill in the peer and request id in place.
    var parsed: ParsedRequest
    /// When the request became complete (monotonic nanoseconds).
    let receivedAt: UInt64
    /// The connection's request limit is reached: the response closes it.
    let isLastOnConnection: Bool
}

/// A bounded queue of requests drained by a fixed set of worker threads. An idle worker waits on its
/// own semaphore, and a new request wakes the worker that went idle last: under light load one warm
/// thread (with whatever the responder keeps warm for it, such as a pooled database connection) serves
/// request after request instead of each request waking whichever thread a shared condition picks.
///
/// A worker that waits on its keep-alive connection for the next request registers as waiting: a
/// request queued while no worker is idle cuts the wait of the worker registered last.
// @unchecked Sendable: `ring`, `head`, `count`, `idle`, `keepAliveWaiters`, `keepAliveWaitsRefused` and `stopped` are
// only read or written with `lock` held.
final class WorkerPool<Item: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var ring: [Item?]
    private var head = 0
    private var count = 0
    private var idle: [WorkerWaiter] = []
    // Unchecked: touched on every keep-alive wait, always with `lock` held, where the runtime's dynamic exclusivity
    // check would cost about 80 instructions per access.
    @exclusivity(unchecked) private var keepAliveWaiters: [WorkerWaiter] = []
    private var keepAliveWaitsRefused = false
    private var stopped = false

    init(capacity: Int) {
        ring = Array(repeating: nil, count: max(1, capacity))
    }

    /// Queues `item`; false when the queue is full or stopped.
    func submit(_ item: Item) -> Bool {
        lock.lock()
        guard !stopped, count < ring.count else {
            lock.unlock()
            return false
        }
        ring[(head + count) % ring.count] = item
        count += 1
        let woken = idle.popLast()
        // Under the lock, so a waiting worker that is no longer listed has its interruption to clear.
        if woken == nil { keepAliveWaiters.popLast()?.interruptKeepAliveWait() }
        lock.unlock()
        woken?.semaphore.signal()
        return true
    }

    /// Registers `waiter` as waiting on a keep-alive connection; false when items are queued (they come first), after
    /// `stopKeepAliveWaits()`, or once the pool stopped.
    func beginKeepAliveWait(_ waiter: WorkerWaiter) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped, !keepAliveWaitsRefused, count == 0 else { return false }
        keepAliveWaiters.append(waiter)
        return true
    }

    /// Interrupts every waiting worker and refuses new waits (shutdown: connections go back to
    /// their loops to be drained).
    func stopKeepAliveWaits() {
        lock.lock()
        keepAliveWaitsRefused = true
        for waiter in keepAliveWaiters { waiter.interruptKeepAliveWait() }
        keepAliveWaiters = []
        lock.unlock()
    }

    /// Ends `waiter`'s wait and clears any interruption sent to it.
    func endKeepAliveWait(_ waiter: WorkerWaiter) {
        lock.lock()
        let index = keepAliveWaiters.lastIndex { $0 === waiter }
        if let index { keepAliveWaiters.remove(at: index) }
        lock.unlock()
        // Still listed: nobody interrupted it, and its eventfd needs no read.
        if index == nil { waiter.clearInterruption() }
    }

    /// The next item, waiting on `waiter` for one; nil once the pool is stopped.
    func take(_ waiter: WorkerWaiter) -> Item? {
        lock.lock()
        while true {
            if stopped {
                lock.unlock()
                return nil
            }
            if count > 0 {
                let item = ring[head]
                ring[head] = nil
                head = (head + 1) % ring.count
                count -= 1
                lock.unlock()
                return item
            }
            // Each signal pairs with one removal from `idle`, so a signal sent between the unlock and
            // the wait is kept by the semaphore, not lost.
            idle.append(waiter)
            lock.unlock()
            waiter.semaphore.wait()
            lock.lock()
        }
    }

    /// Removes the queued items `selects` picks and returns them in queue order; the others keep theirs.
    func remove(where selects: (Item) -> Bool) -> [Item] {
        lock.lock()
        defer { lock.unlock() }
        var removed: [Item] = []
        var kept = 0
        for offset in 0..<count {
            let index = (head + offset) % ring.count
            guard let item = ring[index] else { continue }
            ring[index] = nil
            if selects(item) {
                removed.append(item)
            } else {
                ring[(head + kept) % ring.count] = item
                kept += 1
            }
        }
        count = kept
        return removed
    }

    /// Workers waiting for an item.
    var idleWorkers: Int {
        lock.lock()
        defer { lock.unlock() }
        return idle.count
    }

    /// Wakes every worker to exit; items still queued are dropped.
    func stop() {
        lock.lock()
        stopped = true
        for index in ring.indices { ring[index] = nil }
        count = 0
        let waiting = idle
        idle = []
        for waiter in keepAliveWaiters { waiter.interruptKeepAliveWait() }
        keepAliveWaiters = []
        lock.unlock()
        for waiter in waiting { waiter.semaphore.signal() }
    }
}

/// One worker's wake-up calls: a semaphore while it is idle, an eventfd while it waits on a keep-alive connection.
final class WorkerWaiter: Sendable {
    fileprivate let semaphore = DispatchSemaphore(value: 0)
    /// Readable once the pool wants the waiting worker back; -1 if no eventfd could be made.
    let keepAliveInterruptFD: Int32

    init() {
        keepAliveInterruptFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
    }

    deinit {
        if keepAliveInterruptFD >= 0 { close(keepAliveInterruptFD) }
    }

    fileprivate func interruptKeepAliveWait() {
        guard keepAliveInterruptFD >= 0 else { return }
        var one: UInt64 = 1
        _ = write(keepAliveInterruptFD, &one, MemoryLayout<UInt64>.size)
    }

    fileprivate func clearInterruption() {
        guard keepAliveInterruptFD >= 0 else { return }
        var counter: UInt64 = 0
        _ = read(keepAliveInterruptFD, &counter, MemoryLayout<UInt64>.size)
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
    private let condition = MonotonicCondition()
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
            condition.wait(for: .nanoseconds(Int64(clamping: deadline - now)))
        }
        return true
    }
}
