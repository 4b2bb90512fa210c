import Foundation
import Glibc
import Synchronization
import Testing
@testable import HTTPServer

/// What the test workers did.
final class WorkerLog: Sendable {
    let taken = Mutex<[String]>([])
    let exited = Mutex(0)
}

@Suite("Worker pool")
struct WorkerPoolTests {
    /// Starts a worker named `name` that records `name item` for every item it takes.
    static func startWorker(_ name: String, pool: WorkerPool<Int>, log: WorkerLog) {
        let thread = Thread {
            let waiter = WorkerWaiter()
            while let item = pool.take(waiter) {
                log.taken.withLock { $0.append("\(name) \(item)") }
            }
            log.exited.withLock { $0 += 1 }
        }
        thread.start()
    }

    @Test("the worker that went idle last takes the next item")
    func lastIdleWorkerIsWokenFirst() {
        let pool = WorkerPool<Int>(capacity: 4)
        let log = WorkerLog()
        Self.startWorker("first", pool: pool, log: log)
        #expect(eventually { pool.idleWorkers == 1 })
        Self.startWorker("second", pool: pool, log: log)
        #expect(eventually { pool.idleWorkers == 2 })
        for item in 1...3 {
            #expect(pool.submit(item))
            #expect(eventually { log.taken.withLock { $0.count } == item && pool.idleWorkers == 2 })
        }
        #expect(log.taken.withLock { $0 } == ["second 1", "second 2", "second 3"])
        pool.stop()
        #expect(eventually { log.exited.withLock { $0 } == 2 })
    }

    @Test("a full or stopped queue refuses items, and stop wakes every idle worker")
    func boundsAndStop() {
        let pool = WorkerPool<Int>(capacity: 2)
        #expect(pool.submit(1))
        #expect(pool.submit(2))
        #expect(!pool.submit(3))
        let log = WorkerLog()
        Self.startWorker("only", pool: pool, log: log)
        #expect(eventually { log.taken.withLock { $0 } == ["only 1", "only 2"] && pool.idleWorkers == 1 })
        pool.stop()
        #expect(!pool.submit(4))
        #expect(eventually { log.exited.withLock { $0 } == 1 })
    }

    @Test("removing selected items frees their slots and keeps the rest in order, across the ring's wrap")
    func removeWhere() {
        let pool = WorkerPool<Int>(capacity: 4)
        let waiter = WorkerWaiter()
        for item in 1...3 { #expect(pool.submit(item)) }
        #expect(pool.take(waiter) == 1)
        #expect(pool.submit(4))
        #expect(pool.submit(5))
        #expect(pool.remove { $0.isMultiple(of: 2) } == [2, 4])
        #expect(pool.remove { _ in false } == [])
        #expect(pool.submit(6))
        #expect(pool.submit(7))
        #expect(!pool.submit(8))
        #expect((0..<4).map { _ in pool.take(waiter) } == [3, 5, 6, 7])
        pool.stop()
    }
}

@Suite("Worker pool: workers waiting on keep-alive connections")
struct WorkerPoolKeepAliveWaitTests {
    /// Whether `waiter`'s interruption descriptor is readable right now.
    static func isInterrupted(_ waiter: WorkerWaiter) -> Bool {
        var descriptor = pollfd(fd: waiter.keepAliveInterruptFD, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) == 1
    }

    @Test("a submit with no idle worker interrupts the worker that began waiting last")
    func submitInterruptsLastWaiter() {
        let pool = WorkerPool<Int>(capacity: 4)
        let first = WorkerWaiter()
        let second = WorkerWaiter()
        #expect(first.keepAliveInterruptFD >= 0)
        #expect(pool.beginKeepAliveWait(first))
        #expect(pool.beginKeepAliveWait(second))
        #expect(!Self.isInterrupted(first) && !Self.isInterrupted(second))
        #expect(pool.submit(1))
        #expect(Self.isInterrupted(second))
        #expect(!Self.isInterrupted(first))
        pool.endKeepAliveWait(second)
        #expect(!Self.isInterrupted(second), "ending the wait clears the interruption")
        pool.endKeepAliveWait(first)
        pool.stop()
    }

    @Test("queued items come first: no wait begins while one is queued")
    func noWaitWithQueuedItems() {
        let pool = WorkerPool<Int>(capacity: 4)
        #expect(pool.submit(1))
        #expect(!pool.beginKeepAliveWait(WorkerWaiter()))
        pool.stop()
    }

    @Test("stopKeepAliveWaits interrupts every waiting worker and refuses new waits")
    func stopKeepAliveWaits() {
        let pool = WorkerPool<Int>(capacity: 4)
        let waiters = [WorkerWaiter(), WorkerWaiter()]
        for waiter in waiters { #expect(pool.beginKeepAliveWait(waiter)) }
        pool.stopKeepAliveWaits()
        for waiter in waiters { #expect(Self.isInterrupted(waiter)) }
        #expect(!pool.beginKeepAliveWait(WorkerWaiter()))
        pool.stop()
    }
}

@Suite("Request ids")
struct RequestIDFormatTests {
    @Test("generated ids are the prefix, a dash and the sequence in base 36, as String(_:radix:) spells it")
    func base36() {
        let samples: [UInt64] = Array(0...100) + [35, 36, 1295, 1296, 46_655, 1 << 32, UInt64.max - 1, UInt64.max]
        for sequence in samples {
            #expect(ServerContext.requestID(prefix: "3f9a", sequence: sequence) == "3f9a-" + String(sequence, radix: 36))
        }
        #expect(ServerContext.requestID(prefix: "", sequence: 71) == "-1z")
    }
}
