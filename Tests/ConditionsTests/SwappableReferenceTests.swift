import Conditions
import Foundation
import Synchronization
import Testing

/// A value that records its release in `released`, and checks on every read that it was not released.
private final class Tracked: Sendable {
    let number: Int
    let released: ReleasedNumbers

    init(_ number: Int, released: ReleasedNumbers) {
        self.number = number
        self.released = released
    }

    var isReleased: Bool { released.mutex.withLock { $0.contains(number) } }

    deinit {
        let number = self.number
        released.mutex.withLock { _ = $0.insert(number) }
    }
}

/// The numbers of the values released so far, shared by the values.
private final class ReleasedNumbers: Sendable {
    let mutex = Mutex<Set<Int>>([])
}

@Suite struct SwappableReferenceTests {
    @Test func aReaderGetsTheValueStoredLast() {
        let released = ReleasedNumbers()
        let reference = SwappableReference(Tracked(1, released: released))
        #expect(reference.load().number == 1)
        reference.store(Tracked(2, released: released))
        #expect(reference.load().number == 2)
        #expect(reference.load().number == 2)
    }

    /// A replaced value lives on only while a reader holds it, and the last one is released with the reference.
    @Test func aReplacedValueIsReleasedOnceNoReaderHoldsIt() {
        let released = ReleasedNumbers()
        var reference: SwappableReference<Tracked>? = SwappableReference(Tracked(1, released: released))
        var held: Tracked? = reference?.load()
        reference?.store(Tracked(2, released: released))
        #expect(held?.isReleased == false)
        #expect(released.mutex.withLock { $0 } == [])
        held = nil
        #expect(released.mutex.withLock { $0 } == [1])
        reference?.store(Tracked(3, released: released))
        #expect(released.mutex.withLock { $0 } == [1, 2])
        reference = nil
        #expect(released.mutex.withLock { $0 } == [1, 2, 3])
    }

    /// Readers on several threads never get a released value while a writer replaces it again and again, and every
    /// replaced value is released.
    @Test func readersOnOtherThreadsNeverSeeAReleasedValue() {
        let released = ReleasedNumbers()
        let reference = SwappableReference(Tracked(0, released: released))
        let stop = Atomic<Bool>(false)
        let problems = Mutex<[String]>([])
        let readers = 3
        let done = DispatchSemaphore(value: 0)
        for _ in 0..<readers {
            Thread {
                var last = 0
                var reads = 0
                while !stop.load(ordering: .relaxed) || reads < 1000 {
                    let value = reference.load()
                    if value.isReleased { problems.withLock { $0.append("read \(value.number) after its release") } }
                    if value.number < last { problems.withLock { $0.append("read \(value.number) after \(last)") } }
                    last = value.number
                    reads += 1
                }
                done.signal()
            }.start()
        }
        let stores = 20_000
        for number in 1...stores { reference.store(Tracked(number, released: released)) }
        stop.store(true, ordering: .relaxed)
        for _ in 0..<readers { done.wait() }
        #expect(problems.withLock { $0 } == [])
        #expect(reference.load().number == stores)
        #expect(released.mutex.withLock { $0 } == Set(0..<stores))
    }
}
