import Foundation
import Dispatch
import Synchronization
import Testing

@testable import stovepipe

@Suite struct OpenConnectionsTests {
    /// A gauge as a backend keeps it: the value of the last record call to finish.
    final class LastValue: Sendable {
        private let state = Mutex<[Int]>([])
        func store(_ value: Int) { state.withLock { $0.append(value) } }
        var values: [Int] { state.withLock { $0 } }
    }

    @Test("the gauge ends at the true count when a second change comes while the first is being recorded")
    func recordsInOrder() {
        let gauge = LastValue()
        let firstRecording = DispatchSemaphore(value: 0)
        let secondRecorded = DispatchSemaphore(value: 0)
        let counter = OpenConnections { value in
            if value == 1 {
                // The first loop thread is inside its record when the second one changes the count. Recording out
                // of order, the second records 2 at once and this wait ends at that signal; in order, the second
                // waits for this record, so only the timeout ends the wait.
                firstRecording.signal()
                _ = secondRecorded.wait(timeout: .now() + 1)
            }
            gauge.store(value)
            if value == 2 { secondRecorded.signal() }
        }
        // Threads of their own: a blocked block on Dispatch's pool can hold back the next one's thread for about
        // as long as the wait above, which would let the second change come only after the first was recorded.
        let finished = DispatchSemaphore(value: 0)
        Thread { counter.add(1); finished.signal() }.start()
        firstRecording.wait()
        Thread { counter.add(1); finished.signal() }.start()
        finished.wait()
        finished.wait()
        // Out of order the second thread recorded 2 while the first was held, and the first then recorded 1 over
        // it: [2, 1], the gauge at 1 with two connections open.
        #expect(gauge.values == [1, 2])
        #expect(counter.value == 2)
    }

    @Test("opens and closes from many threads leave the gauge at the count")
    func concurrentChanges() {
        let gauge = LastValue()
        let counter = OpenConnections { gauge.store($0) }
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            for _ in 0..<500 { counter.add(1) }
            for _ in 0..<(thread == 0 ? 499 : 500) { counter.add(-1) }
        }
        #expect(counter.value == 1)
        #expect(gauge.values.last == 1)
        #expect(gauge.values.count == 8 * 1000 - 1)
    }
}
