import Foundation
import TestSupport
import Testing

@Suite("onThreads, the contract suites' concurrent callers")
struct OnThreadsTests {
    @Test("an expectation failing on one of the threads is recorded against the test that started them")
    func failuresBelongToTheTest() async {
        // Recorded against «unknown» test instead, the issues would not be this known issue, and this test would fail.
        await withKnownIssue {
            _ = await onThreads(2) { index in #expect(index < 0, "recorded inside onThreads") }
        }
    }

    @Test("the bodies run at once, each on a thread of its own: more than the cooperative pool has threads")
    func bodiesRunTogether() async {
        let count = ProcessInfo.processInfo.activeProcessorCount + 2
        let started = Latch()
        let sawAll = Recorder<Bool>()
        let finished = await onThreads(count, timeout: .seconds(30)) { _ in
            // Each blocks until all have started: on the cooperative pool the last ones never would.
            started.arrive()
            sawAll.append(started.wait(for: count, timeout: .seconds(20)))
        }
        #expect(finished)
        #expect(sawAll.values == Array(repeating: true, count: count))
    }
}
