import Foundation
import TestSupport
import Testing

@Suite("onThread, the live suites' way off the cooperative pool")
struct OnThreadTests {
    @Test("an expectation failing in the work is recorded against the test that ran it")
    func failuresBelongToTheTest() async throws {
        // Recorded against «unknown» test instead, the issue would not be this known issue, and this test would fail.
        await withKnownIssue {
            try await onThread { #expect(Bool(false), "recorded inside onThread") }
        }
    }

    @Test("an expectation failing in background work started inside onThread is recorded against the test")
    func backgroundFailuresBelongToTheTest() async throws {
        await withKnownIssue {
            try await onThread {
                let work = BackgroundWork { #expect(Bool(false), "recorded inside BackgroundWork") }
                try work.join()
            }
        }
    }

    @Test("blocking work runs on threads of its own: more at once than the cooperative pool has threads")
    func workRunsOffTheCooperativePool() async throws {
        let count = ProcessInfo.processInfo.activeProcessorCount + 2
        let started = Latch()
        let sawAll = Recorder<Bool>()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<count {
                group.addTask {
                    try await onThread {
                        // Each blocks until all have started: on the cooperative pool the last ones never would.
                        started.arrive()
                        sawAll.append(started.wait(for: count, timeout: .seconds(20)))
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(sawAll.values == Array(repeating: true, count: count))
    }
}
