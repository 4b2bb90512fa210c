@testable import API
import Foundation
import Synchronization
import Testing

@Suite struct ReadinessMonitorTests {
    /// A check that answers `ok` from `state`, or waits while `state` holds it.
    final class ScriptedCheck: Sendable {
        let state = Mutex((ok: true, held: false, calls: 0))

        func run() -> [ReadinessCheck] {
            state.withLock { $0.calls += 1 }
            let deadline = ContinuousClock.now + .seconds(30)
            while state.withLock({ $0.held }) && ContinuousClock.now < deadline { usleep(1000) }
            let ok = state.withLock { $0.ok }
            return [ReadinessCheck(name: "database", ok: ok), ReadinessCheck(name: "schema", ok: true)]
        }
    }

    @Test func reportsTheLatestResultsAndFollowsChanges() {
        let check = ScriptedCheck()
        let monitor = ReadinessMonitor(name: "database", interval: .milliseconds(20), timeout: .seconds(10)) { check.run() }
        monitor.start()
        defer { monitor.stop() }
        #expect(monitor.current() == [ReadinessCheck(name: "database", ok: true), ReadinessCheck(name: "schema", ok: true)])
        check.state.withLock { $0.ok = false }
        #expect(eventually { monitor.current().first == ReadinessCheck(name: "database", ok: false) })
        check.state.withLock { $0.ok = true }
        #expect(eventually { monitor.current().allSatisfy { $0.ok } })
    }

    @Test func aReadOfOldResultsAsksForAFreshCheck() {
        let check = ScriptedCheck()
        // Without reads, the next check would come an hour later.
        let monitor = ReadinessMonitor(
            name: "database", interval: .seconds(3600), timeout: .seconds(10), freshness: .milliseconds(1)
        ) { check.run() }
        monitor.start()
        defer { monitor.stop() }
        #expect(monitor.current().allSatisfy { $0.ok })
        check.state.withLock { $0.ok = false }
        #expect(eventually { monitor.current().first?.ok == false })
    }

    @Test func aCheckThatDoesNotFinishInTimeIsReportedFailingUnderTheMonitorsName() {
        let check = ScriptedCheck()
        let monitor = ReadinessMonitor(
            name: "database", interval: .milliseconds(10), timeout: .milliseconds(200), freshness: .milliseconds(1)
        ) { check.run() }
        monitor.start()
        defer { monitor.stop() }
        #expect(monitor.current().allSatisfy { $0.ok })
        check.state.withLock { $0.held = true }
        // Answered at once, without waiting for the held check.
        #expect(eventually {
            monitor.current() == [
                ReadinessCheck(name: "database", ok: false, detail: "the check did not finish within 0.2 s")
            ]
        })
        check.state.withLock { $0.held = false }
        #expect(eventually { monitor.current().allSatisfy { $0.ok } })
    }

    @Test func beforeTheFirstCheckFinishesItIsNotReady() {
        let check = ScriptedCheck()
        check.state.withLock { $0.held = true }
        let monitor = ReadinessMonitor(name: "storage", interval: .seconds(1), timeout: .seconds(10)) { check.run() }
        monitor.start(waitingAtMost: .zero)
        #expect(monitor.current() == [ReadinessCheck(name: "storage", ok: false, detail: "the first check has not finished")])
        check.state.withLock { $0.held = false }
        #expect(eventually { monitor.current().allSatisfy { $0.ok } })
        // Its thread has returned once stop() does.
        #expect(monitor.stop())
    }
}
