import Foundation
import TestSupport
import Testing

@Suite("offPool, the topic tests' way off the cooperative pool")
struct OffPoolTests {
    @Test("an expectation failing in the work is recorded against the test that ran it")
    func failuresBelongToTheTest() async throws {
        // Recorded against «unknown» test instead, the issue would not be this known issue, and this test would fail.
        await withKnownIssue {
            try await offPool {
                try await Task.sleep(for: .milliseconds(1))
                #expect(Bool(false), "recorded inside offPool, after a suspension")
            }
        }
    }

    @Test("the work runs on threads of its own, also after it suspends: more at once than the cooperative pool has threads")
    func workRunsOffTheCooperativePool() async throws {
        let count = ProcessInfo.processInfo.activeProcessorCount + 2
        let started = Latch()
        let sawAll = Recorder<Bool>()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<count {
                group.addTask {
                    try await offPool {
                        // Resumed on the cooperative pool, the bodies past this point could not all block at once.
                        try await Task.sleep(for: .milliseconds(1))
                        _ = await eventually { true }
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
