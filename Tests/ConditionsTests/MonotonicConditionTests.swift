import Conditions
import Foundation
import Testing

@Suite struct MonotonicConditionTests {
    @Test func aTimedWaitWithoutASignalRunsOutAfterItsTimeout() {
        let condition = MonotonicCondition()
        condition.lock()
        defer { condition.unlock() }
        let start = ContinuousClock.now
        #expect(!condition.wait(for: .milliseconds(50)))
        #expect(ContinuousClock.now - start >= .milliseconds(50))
    }

    @Test func aTimeoutOfZeroOrLessReturnsAtOnce() {
        let condition = MonotonicCondition()
        condition.lock()
        defer { condition.unlock() }
        #expect(!condition.wait(for: .zero))
        #expect(!condition.wait(for: .seconds(-5)))
    }

    @Test func aSignalEndsATimedWaitBeforeItsTimeout() {
        let condition = MonotonicCondition()
        nonisolated(unsafe) var ready = false
        let signaller = Thread {
            condition.lock()
            ready = true
            condition.signal()
            condition.unlock()
        }
        condition.lock()
        signaller.start()
        var woken = true
        // A spurious wake-up is allowed: wait again until the flag is set or the (long) time runs out.
        while !ready && woken { woken = condition.wait(for: .seconds(60)) }
        condition.unlock()
        #expect(ready)
        #expect(woken)
    }

    @Test func aHugeTimeoutDoesNotOverflow() {
        let condition = MonotonicCondition()
        let signaller = Thread {
            condition.lock()
            condition.broadcast()
            condition.unlock()
        }
        condition.lock()
        signaller.start()
        #expect(condition.wait(for: .seconds(Int64.max)))
        condition.unlock()
    }
}
