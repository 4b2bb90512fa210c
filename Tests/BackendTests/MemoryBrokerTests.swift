import Backends
import Domain
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

private let topic = TopicName("memory")

private func message(_ id: String, key: String = "k") -> Message {
    Message(topic: topic, partitionKey: key, id: id, payload: [])
}

/// Ids a handler saw, in order.
private final class Seen: Sendable {
    private let ids = Mutex<[String]>([])
    func append(_ id: String) { ids.withLock { $0.append(id) } }
    var values: [String] { ids.withLock { $0 } }
}

/// A started two-worker broker whose handler blocks on message "stuck" until `release` (at most 60 s), and hands
/// any other delivery to `other` with the broker; returns once "stuck" is in its handler.
private func brokerWithAStuckHandler(
    warnings: Recorder<String>, release: Latch,
    other: @escaping @Sendable (MemoryBroker, Delivery) -> DeliveryOutcome = { _, _ in .ack }
) throws -> MemoryBroker {
    let logger = Logger(label: "memory-broker-tests") { _ in LineRecorder(lines: warnings, logLevel: .warning) }
    let broker = MemoryBroker(workerThreads: 2, logger: logger)
    let stuck = Latch()
    broker.subscribe(topic) { delivery in
        guard delivery.message.id == "stuck" else { return other(broker, delivery) }
        stuck.arrive()
        release.wait(timeout: .seconds(60))
        return .ack
    }
    try broker.publish(message("stuck", key: "stuck"))
    try broker.start()
    #expect(stuck.wait(timeout: .seconds(20)), "the handler never received the message")
    return broker
}

@Suite("MemoryBroker specifics")
struct MemoryBrokerTests {
    @Test("the warning that says a message was dead-lettered names the message")
    func deadLetterLineNamesTheMessage() async throws {
        let lines = Recorder<String>()
        let logger = Logger(label: "memory-broker-tests") { _ in LineRecorder(lines: lines, logLevel: .warning) }
        let broker = MemoryBroker(policy: RetryPolicy(maxAttempts: 1), workerThreads: 1, logger: logger)
        defer { broker.shutdown() }
        broker.subscribe(topic) { _ in .reject(reason: "never") }
        try broker.publish(message("bad-1"))
        try broker.start()
        #expect(await eventually { lines.values.contains { $0.hasPrefix("message dead-lettered") } })
        let deadLettered = lines.values.filter { $0.hasPrefix("message dead-lettered") }
        #expect(deadLettered.count == 1 && deadLettered.allSatisfy { $0.contains(" messagequeue.message_id=bad-1") }, "\(deadLettered)")
    }

    @Test("an acked id is held for the retention, then may be published again and is delivered again")
    func ackedIDIsReleasedAfterTheRetention() async throws {
        // Long enough that the publish below surely falls within it, even on a loaded machine; the broker
        // starts the hold when it records the ack, before the test can see it.
        let (broker, seen) = try await Self.brokerThatAckedOnce(retention: .seconds(3))
        defer { broker.shutdown() }
        // Within the retention: a no-op, which the sentinel behind it in the partition proves.
        try broker.publish(message("again"))
        try broker.publish(message("sentinel"))
        #expect(await eventually { seen.values.contains("sentinel") })
        #expect(seen.values == ["again", "sentinel"])
        // Published until the retention has passed and it is taken again.
        #expect(try await eventually {
            try broker.publish(message("again"))
            return seen.values.count == 3
        })
        #expect(seen.values == ["again", "sentinel", "again"])
    }

    @Test("with no retention an acked id may be published again at once")
    func zeroRetentionReleasesAtOnce() async throws {
        let (broker, seen) = try await Self.brokerThatAckedOnce(retention: .zero)
        defer { broker.shutdown() }
        try broker.publish(message("again"))
        #expect(await eventually { seen.values.count == 2 })
        #expect(seen.values == ["again", "again"])
    }

    /// A started broker holding acked ids for `retention`, whose handler records and acks every delivery,
    /// once message "again" has been delivered and acked.
    private static func brokerThatAckedOnce(retention: Duration) async throws -> (MemoryBroker, Seen) {
        let broker = MemoryBroker(workerThreads: 2, ackedRetention: retention, logger: silentLogger)
        let seen = Seen()
        broker.subscribe(topic) { delivery in
            seen.append(delivery.message.id)
            return .ack
        }
        try broker.start()
        try broker.publish(message("again"))
        #expect(await eventually { seen.values.count == 1 })
        #expect(try await eventually { try broker.stats(topic).inFlight == 0 })
        return (broker, seen)
    }

    @Test("start twice is harmless; after shutdown, start and publish are unavailable; shutdown is idempotent")
    func lifecycle() throws {
        let broker = MemoryBroker(logger: silentLogger)
        try broker.start()
        try broker.start()
        broker.shutdown()
        broker.shutdown()
        #expect(throws: BackendError.unavailable(retryable: false, detail: "the in-memory broker is shut down")) {
            try broker.publish(message("late"))
        }
        #expect(throws: BackendError.unavailable(retryable: false, detail: "the in-memory broker is shut down")) {
            try broker.start()
        }
    }

    @Test("shutdown of a broker never started returns at once")
    func shutdownUnstarted() throws {
        let broker = MemoryBroker(logger: silentLogger)
        try broker.publish(message("waiting"))
        broker.shutdown()
        #expect(try broker.stats(topic).backlog == 1)
    }

    @Test("a topic without a handler keeps its messages waiting while others flow")
    func unsubscribedTopicWaits() async throws {
        let broker = MemoryBroker(workerThreads: 2, logger: silentLogger)
        defer { broker.shutdown() }
        let seen = Seen()
        broker.subscribe(topic) { delivery in
            seen.append(delivery.message.id)
            return .ack
        }
        let quiet = TopicName("quiet")
        try broker.publish(Message(topic: quiet, partitionKey: "k", id: "q1", payload: []))
        try broker.publish(message("m1"))
        try broker.start()
        #expect(await eventually { seen.values == ["m1"] })
        #expect(try broker.stats(quiet).backlog == 1)
    }

    @Test("a handler may shut the broker down without deadlocking")
    func shutdownFromHandler() async throws {
        let broker = MemoryBroker(workerThreads: 2, logger: silentLogger)
        let returned = Mutex(false)
        broker.subscribe(topic) { _ in
            broker.shutdown()
            returned.withLock { $0 = true }
            return .ack
        }
        try broker.publish(message("stop"))
        try broker.start()
        #expect(await eventually { returned.withLock { $0 } })
        broker.shutdown()
        #expect(try broker.stats(topic).inFlight == 0)
    }

    @Test("shutdown with a deadline returns at the deadline while a handler is stuck, and warns that its message is lost")
    func shutdownDeadlineLeavesAStuckHandler() throws {
        let warnings = Recorder<String>()
        let release = Latch()
        // However the test ends, the stuck handler goes on, so that its worker thread ends.
        defer { release.arrive() }
        let broker = try brokerWithAStuckHandler(warnings: warnings, release: release)
        let deadline = ContinuousClock.now + .milliseconds(300)
        let returnedAt = Recorder<ContinuousClock.Instant>()
        let returned = Latch()
        // On a thread of its own, so that a shutdown that never returns fails the test instead of hanging it.
        Thread {
            broker.shutdown(waitingUntil: deadline)
            returnedAt.append(.now)
            returned.arrive()
        }.start()
        #expect(returned.wait(timeout: .seconds(10)), "shutdown(waitingUntil:) kept waiting for the stuck handler")
        #expect(returnedAt.values.first.map { $0 >= deadline } == true, "shutdown returned before its deadline")
        #expect(
            warnings.values.contains { $0.contains("their messages are lost") && $0.contains("broker.handlers_abandoned=1") },
            "\(warnings.values)")

        // The abandoned handler returns on a stopped broker: its ack is recorded, and nothing is delivered again.
        release.arrive()
        broker.shutdown()
        #expect(try broker.stats(topic) == TopicStats(topic: topic, backlog: 0, inFlight: 0, deadLetters: 0, oldestPendingAgeSeconds: nil))
        #expect(throws: BackendError.unavailable(retryable: false, detail: "the in-memory broker is shut down")) {
            try broker.publish(message("late"))
        }
    }

    @Test("a handler shutting the broker down with a deadline returns at it while another handler is stuck")
    func shutdownDeadlineFromHandler() throws {
        let warnings = Recorder<String>()
        let release = Latch()
        defer { release.arrive() }
        let returned = Latch()
        let broker = try brokerWithAStuckHandler(warnings: warnings, release: release) { broker, _ in
            broker.shutdown(waitingUntil: .now + .milliseconds(300))
            returned.arrive()
            return .ack
        }
        try broker.publish(message("stop", key: "stop"))
        #expect(returned.wait(timeout: .seconds(10)), "the handler's shutdown kept waiting for the stuck handler")
        // The handler calling shutdown goes on; only the stuck one is left behind.
        #expect(warnings.values.contains { $0.contains("broker.handlers_abandoned=1") }, "\(warnings.values)")

        release.arrive()
        broker.shutdown()
        #expect(try broker.stats(topic) == TopicStats(topic: topic, backlog: 0, inFlight: 0, deadLetters: 0, oldestPendingAgeSeconds: nil))
    }

    @Test("a long backoff keeps the partition waiting while other partitions flow")
    func backoffBlocksOnlyItsPartition() async throws {
        let broker = MemoryBroker(
            policy: RetryPolicy(maxAttempts: 5, backoffBase: .seconds(60), backoffCap: .seconds(60)), workerThreads: 2,
            logger: silentLogger
        )
        defer { broker.shutdown() }
        let seen = Seen()
        broker.subscribe(topic) { delivery in
            seen.append(delivery.message.id)
            return delivery.message.id == "slow" ? .retry(reason: "later") : .ack
        }
        try broker.publish(message("slow", key: "a"))
        try broker.publish(message("behind", key: "a"))
        try broker.publish(message("other", key: "b"))
        try broker.start()
        #expect(await eventually { seen.values.contains("other") && seen.values.contains("slow") })
        // The handler saw "slow" before its worker requeued it: until then it counts as in flight.
        #expect(try await eventually {
            let stats = try broker.stats(topic)
            return stats.backlog == 2 && stats.inFlight == 0
        })
        #expect(!seen.values.contains("behind"))
    }

    @Test("bursts on many partitions, with retries and postponements, reach idle workers: every message is handled once, in order")
    func burstsOnManyPartitions() async throws {
        let broker = MemoryBroker(
            policy: RetryPolicy(maxAttempts: 5, backoffBase: .milliseconds(1), backoffCap: .milliseconds(5)), workerThreads: 8,
            logger: silentLogger
        )
        defer { broker.shutdown() }
        let partitions = 64
        let perPartition = 20
        let acked = Recorder<String>()
        let overlaps = Recorder<String>()
        let inFlight = Mutex<Set<String>>([])
        let postponed = Mutex<Set<String>>([])
        broker.subscribe(topic) { delivery in
            let message = delivery.message
            guard inFlight.withLock({ $0.insert(message.partitionKey).inserted }) else {
                overlaps.append(message.id)
                return .ack
            }
            defer { _ = inFlight.withLock { $0.remove(message.partitionKey) } }
            let number = Int(message.id.split(separator: "/").last ?? "") ?? 0
            // Some wait for a backoff, some postpone once: their partitions become deliverable again only by time.
            if number % 7 == 0 && delivery.attempt == 1 { return .retry(reason: "once") }
            if number % 11 == 0 && postponed.withLock({ $0.insert(message.id).inserted }) { return .postpone(.milliseconds(1)) }
            acked.append(message.id)
            return .ack
        }
        try broker.start()
        // Four publishers publish each burst together; none starts the next burst before every message of this one
        // is handled, so the workers fall idle between bursts and every burst has to wake them.
        let publishers = 4
        let burstSize = partitions * perPartition / 5
        let failures = Recorder<String>()
        let publishersDone = Latch()
        for publisher in 0..<publishers {
            Thread {
                defer { publishersDone.arrive() }
                let deadline = ContinuousClock.now + .seconds(60)
                for burst in 0..<5 {
                    for round in 0..<(perPartition / 5) {
                        for partition in stride(from: publisher, to: partitions, by: publishers) {
                            let id = "p\(partition)/\(burst * perPartition / 5 + round)"
                            do { try broker.publish(message(id, key: "p\(partition)")) } catch { failures.append("\(id): \(error)") }
                        }
                    }
                    while acked.count < (burst + 1) * burstSize && ContinuousClock.now < deadline { usleep(500) }
                }
            }.start()
        }
        #expect(publishersDone.wait(for: 4, timeout: .seconds(120)))
        #expect(await eventually(timeout: .seconds(60)) { acked.count >= partitions * perPartition })
        #expect(failures.values.isEmpty, "\(failures.values)")
        #expect(overlaps.values.isEmpty, "\(overlaps.values)")
        #expect(acked.count == partitions * perPartition)
        let ids = acked.values
        #expect(Set(ids).count == ids.count, "a message was handled twice")
        for partition in 0..<partitions {
            let order = ids.filter { $0.hasPrefix("p\(partition)/") }
            #expect(order == (0..<perPartition).map { "p\(partition)/\($0)" }, "partition \(partition)")
        }
    }

    @Test("retries of several partitions falling due together are delivered in parallel, one worker each")
    func retriesFallingDueTogetherRunInParallel() async throws {
        let workers = 4
        let broker = MemoryBroker(
            policy: RetryPolicy(maxAttempts: 3, backoffBase: .milliseconds(20), backoffCap: .milliseconds(20)),
            workerThreads: workers, logger: silentLogger
        )
        defer { broker.shutdown() }
        let secondAttempts = Latch()
        let sawAll = Recorder<Bool>()
        broker.subscribe(topic) { delivery in
            guard delivery.attempt > 1 else { return .retry(reason: "later") }
            // Each waits for the others: only a wake-up reaching every idle worker lets all of them return true.
            secondAttempts.arrive()
            sawAll.append(secondAttempts.wait(for: workers, timeout: .seconds(20)))
            return .ack
        }
        for index in 0..<workers { try broker.publish(message("m\(index)", key: "k\(index)")) }
        try broker.start()
        #expect(await eventually(timeout: .seconds(60)) { sawAll.count == workers })
        #expect(sawAll.values == Array(repeating: true, count: workers))
    }

    @Test("a dead letter re-driven by a publish that names another partition key is delivered in its own partition")
    func redriveByPublishWithAnotherKeyWakesAWorker() async throws {
        let broker = MemoryBroker(policy: RetryPolicy(maxAttempts: 1), workerThreads: 1, logger: silentLogger)
        defer { broker.shutdown() }
        let deliveries = Recorder<String>()
        broker.subscribe(topic) { delivery in
            deliveries.append("\(delivery.message.id)@\(delivery.message.partitionKey)#\(delivery.attempt)")
            return deliveries.count == 1 ? .reject(reason: "first") : .ack
        }
        try broker.start()
        try broker.publish(message("x", key: "a"))
        #expect(try await eventually { try broker.deadLetters(topic, limit: 10).count == 1 })
        // The worker now waits without a timeout: only a wake-up from this publish can bring it to the re-driven
        // message, which goes back to the dead letter's partition ("a"), not to the one this publish names.
        try broker.publish(message("x", key: "b"))
        #expect(await eventually(timeout: .seconds(10)) { deliveries.count == 2 })
        #expect(deliveries.values == ["x@a#1", "x@a#1"])
    }

    @Test("a postponed message is delivered when due although the worker waiting for it was woken for other work")
    func dueMessageWhileItsWaiterIsBusy() async throws {
        // Two idle workers: one waits for the postponed message's due time, the other without a timeout. A publish
        // wakes one of them, whichever pthread_cond_signal picks; when it picks the first, the postponed message
        // is left to the other, which has to be woken for it. Repeated, as the pick is not the broker's to make.
        for trial in 0..<10 {
            let broker = MemoryBroker(workerThreads: 2, logger: silentLogger)
            defer { broker.shutdown() }
            let postponed = Mutex(false)
            let dueAgain = Latch()
            let sawIt = Recorder<Bool>()
            broker.subscribe(topic) { delivery in
                switch delivery.message.id {
                case "due":
                    if postponed.withLock({ done in defer { done = true }; return !done }) { return .postpone(.milliseconds(100)) }
                    dueAgain.arrive()
                default:
                    // Holds its worker until the postponed message is delivered again.
                    sawIt.append(dueAgain.wait(timeout: .seconds(10)))
                }
                return .ack
            }
            try broker.start()
            try broker.publish(message("due", key: "due"))
            // The postponement is recorded under the lock, which the worker keeps until it waits again.
            #expect(try await eventually { try broker.stats(topic).inFlight == 0 && postponed.withLock { $0 } })
            try broker.publish(message("other", key: "other"))
            #expect(await eventually { sawIt.count == 1 })
            #expect(sawIt.values == [true], "trial \(trial): the postponed message waited for the other handler")
        }
    }
}
