import Synchronization
import Testing

@testable import stovepipe

#if canImport(Glibc)
import Glibc
#endif

// The bookkeeping behind SignalWaiter, fed directly: in the test process other threads do not block the
// signals, so a real one would be discarded by SIG_IGN before the dispatch source saw it.
@Suite struct SignalTallyTests {
    @Test func aSecondSignalBeforeTheHandlerIsSetRunsItWhenItIsSet() {
        var tally = SignalTally()
        let ran = Atomic<Int>(0)
        #expect(tally.record(SIGTERM, delivered: 1).isFirst)
        let second = tally.record(SIGINT, delivered: 1)
        #expect(!second.isFirst && second.run == nil, "no handler yet")
        tally.setSecondSignalHandler { ran.add(1, ordering: .relaxed) }?()
        #expect(ran.load(ordering: .relaxed) == 1, "the second signal came first: the handler runs as it is set")
        tally.record(SIGTERM, delivered: 1).run?()
        #expect(ran.load(ordering: .relaxed) == 1, "and only once")
        #expect(tally.first == SIGTERM && tally.count == 3)
    }

    @Test func aHandlerSetFirstRunsOnTheSecondSignal() {
        var tally = SignalTally()
        let ran = Atomic<Int>(0)
        #expect(tally.record(SIGTERM, delivered: 1).isFirst)
        #expect(tally.setSecondSignalHandler { ran.add(1, ordering: .relaxed) } == nil)
        tally.record(SIGTERM, delivered: 1).run?()
        #expect(ran.load(ordering: .relaxed) == 1)
    }

    @Test func twoSignalsCoalescedIntoOneEventCountAsTwo() {
        var tally = SignalTally()
        let ran = Atomic<Int>(0)
        #expect(tally.setSecondSignalHandler { ran.add(1, ordering: .relaxed) } == nil)
        let both = tally.record(SIGTERM, delivered: 2)
        #expect(both.isFirst)
        both.run?()
        #expect(ran.load(ordering: .relaxed) == 1, "a dispatch source that reports two signals at once is a second signal")
    }
}
