public import Domain
import Conditions
import Foundation
public import Logging

/// An in-process topic system delivering on its own worker threads; nothing survives a restart.
///
/// Messages with one (topic, partition key) are delivered serially and in publish order; different keys
/// are delivered in parallel. Publishing an id the topic holds (waiting, in flight, dead-lettered, or acked
/// within `ackedRetention`, as the MySQL topic keeps acked rows) is a no-op; after that the id may be
/// published again.
public final class MemoryBroker: MessageBroker, @unchecked Sendable {
    // @unchecked Sendable: every mutable stored property (`state`) is read and written only while holding
    // `condition`'s lock; the other stored properties are immutable and Sendable.
    //
    // Waking: while the broker runs, only idle workers wait on `condition` (shutdown waits only once stopped). A
    // worker waits only after finding nothing deliverable, and then until the earliest due head, if any. A change that
    // makes a head deliverable wakes one worker (`signal`): a publish or redrive whose message is the deliverable head
    // of its partition. A worker that took a delivery wakes one more if some head is left that no waiting worker's
    // timeout will look at by its due time: that covers heads freed or requeued by a recorded outcome (the recording
    // worker looks first, but may take another delivery), and several retries falling due together (the worker whose
    // timeout ran takes one and passes the rest on). So a deliverable head never waits while a worker idles without a
    // wake-up coming. `broadcast` stays where every waiter must look: subscribe, shutdown, a worker exiting.
    private let condition = MonotonicCondition()
    private var state = BrokerState()
    private let policy: RetryPolicy
    private let workerThreads: Int
    private let ackedRetention: Duration
    private let logger: Logger

    /// Makes a broker with `workerThreads` delivery threads (at least 1), started by `start()`, that holds an
    /// acked id for `ackedRetention` (the MySQL topic's default: 10 minutes).
    public init(
        policy: RetryPolicy = RetryPolicy(), workerThreads: Int = 4, ackedRetention: Duration = .seconds(600), logger: Logger
    ) {
        self.policy = policy
        self.workerThreads = max(1, workerThreads)
        self.ackedRetention = max(ackedRetention, .zero)
        self.logger = logger
    }

    /// Enqueues `message` at the tail of its partition; throws `unavailable` after `shutdown()`.
    public func publish(_ message: Message) throws(BackendError) {
        condition.lock()
        defer { condition.unlock() }
        guard state.phase != .stopped else {
            throw .unavailable(retryable: false, detail: "the in-memory broker is shut down")
        }
        let now = ContinuousClock.now
        state.releaseAckedHolds(upTo: now)
        guard state.heldIDs[message.topic, default: []].insert(message.id).inserted else {
            // Published again: a no-op, unless the message was dead-lettered, which the publisher asks to retry.
            // The dead letter goes back as it was stored, to its own partition: this publish may name another key.
            if let redriven = state.redrive(message.topic, messageID: message.id, now: now) {
                logger.info(
                    "dead letter re-driven by a new publish",
                    metadata: ["messagequeue.topic": "\(message.topic)", "messagequeue.message_id": "\(message.id)"])
                wakeOne(for: redriven, now: now)
            }
            return
        }
        state.enqueue(message, now: now)
        wakeOne(for: message, now: now)
    }

    /// Registers the handler of `topic`, replacing any earlier one.
    public func subscribe(_ topic: TopicName, handler: @escaping @Sendable (Delivery) -> DeliveryOutcome) {
        condition.lock()
        state.handlers[topic] = handler
        condition.broadcast()
        condition.unlock()
    }

    /// Starts the worker threads; a second call does nothing; `unavailable` after `shutdown()`.
    public func start() throws(BackendError) {
        condition.lock()
        defer { condition.unlock() }
        switch state.phase {
        case .running:
            return
        case .stopped:
            throw .unavailable(retryable: false, detail: "the in-memory broker is shut down")
        case .idle:
            state.phase = .running
        }
        for index in 0..<workerThreads {
            let thread = Thread { [self] in workerLoop(index) }
            thread.name = "memory-broker-\(index)"
            state.runningWorkers += 1
            state.workers.append(thread)
            thread.start()
        }
        logger.debug("in-memory broker started", metadata: ["broker.workers": "\(workerThreads)"])
    }

    /// Stops taking deliveries, lets handlers in progress finish and record their outcome, joins the threads.
    public func shutdown() {
        shutdown(until: nil)
    }

    /// As `shutdown()`, but stops waiting for handlers at `deadline`; the messages of those still running are never
    /// redelivered, as nothing in memory outlives the process (an outcome that comes later is recorded, not acted on).
    public func shutdown(waitingUntil deadline: ContinuousClock.Instant) {
        shutdown(until: deadline)
    }

    private func shutdown(until deadline: ContinuousClock.Instant?) {
        condition.lock()
        state.phase = .stopped
        condition.broadcast()
        // A handler that shuts the broker down runs on a worker, which cannot wait for itself to exit, nor for
        // another worker whose handler is shutting down too: each would wait for the other forever.
        let callerIsWorker = state.workers.contains { $0 === Thread.current }
        if callerIsWorker {
            state.workersInShutdown += 1
            condition.broadcast()
        }
        var deadlinePassed = false
        while state.runningWorkers > (callerIsWorker ? state.workersInShutdown : 0) {
            guard let deadline else {
                condition.wait()
                continue
            }
            guard condition.wait(for: deadline - ContinuousClock.now) else {
                deadlinePassed = true
                break
            }
        }
        if callerIsWorker { state.workersInShutdown -= 1 }
        // The caller's own delivery, if it is a handler, is not left behind: it goes on once this returns.
        let abandoned = deadlinePassed ? state.deliveriesInFlight - (callerIsWorker ? 1 : 0) : 0
        condition.unlock()
        if abandoned > 0 {
            logger.warning(
                "in-memory broker shutdown deadline passed with handlers still running; their messages are lost (in-memory topics are not durable)",
                metadata: ["broker.handlers_abandoned": "\(abandoned)"])
        }
    }

    /// The dead letters of `topic`, oldest first, at most `limit`.
    public func deadLetters(_ topic: TopicName, limit: Int) throws(BackendError) -> [DeadLetter] {
        condition.lock()
        defer { condition.unlock() }
        return Array(state.deadLetters[topic, default: []].prefix(max(limit, 0)))
    }

    /// Moves the dead letter `messageID` to the tail of its partition with a fresh attempt count.
    public func redrive(_ topic: TopicName, messageID: String) throws(BackendError) {
        condition.lock()
        defer { condition.unlock() }
        let now = ContinuousClock.now
        guard let message = state.redrive(topic, messageID: messageID, now: now) else { throw .notFound }
        wakeOne(for: message, now: now)
    }

    /// Waiting and in-flight counts, dead letters, and the age of the oldest waiting or in-flight message
    /// (a re-driven message counts from its redrive).
    public func stats(_ topic: TopicName) throws(BackendError) -> TopicStats {
        condition.lock()
        defer { condition.unlock() }
        var backlog = 0
        var inFlight = 0
        var oldest: ContinuousClock.Instant?
        for (key, partition) in state.partitions where key.topic == topic {
            for (offset, entry) in partition.entries.enumerated() {
                if partition.busy && offset == 0 { inFlight += 1 } else { backlog += 1 }
                oldest = min(oldest ?? entry.enqueuedAt, entry.enqueuedAt)
            }
        }
        let age = oldest.map { Self.seconds(ContinuousClock.now - $0) }
        return TopicStats(
            topic: topic, backlog: backlog, inFlight: inFlight,
            deadLetters: state.deadLetters[topic, default: []].count, oldestPendingAgeSeconds: age
        )
    }

    private func workerLoop(_ index: Int) {
        condition.lock()
        while state.phase == .running {
            let now = ContinuousClock.now
            guard let key = state.nextReadyPartition(now: now), let handler = state.handlers[key.topic],
                let delivery = state.beginDelivery(of: key)
            else {
                if let due = state.earliestDue() {
                    state.waitingUntil[index] = due
                    condition.wait(for: due - now)
                    state.waitingUntil[index] = nil
                } else {
                    condition.wait()
                }
                continue
            }
            wakeAnotherForUncoveredHeads()
            condition.unlock()
            let outcome = handler(delivery)
            log(outcome, of: delivery)
            condition.lock()
            // No wake-up: this worker looks for a deliverable head itself before it waits again.
            record(outcome, of: delivery, in: key)
        }
        state.runningWorkers -= 1
        condition.broadcast()
        condition.unlock()
    }

    // Called with the lock held, after `message` was enqueued.
    private func wakeOne(for message: Message, now: ContinuousClock.Instant) {
        // A waiting worker found nothing deliverable; only a head that is deliverable now changes that for one of them
        // (a message behind another waits for the worker recording the one in front).
        if state.isDeliverableHead(message, now: now) { condition.signal() }
    }

    // Called with the lock held, by a worker that took a delivery and will not look again until its handler returns.
    private func wakeAnotherForUncoveredHeads() {
        guard let due = state.earliestDue(), !state.waitingUntil.values.contains(where: { $0 <= due }) else { return }
        // pthread_cond_signal(3) unblocks at least one waiting worker, which looks and either takes a head (and comes
        // here in turn) or waits until the earliest due head; with no worker waiting, every worker is either in a
        // handler or about to look.
        condition.signal()
    }

    // Called with the lock held.
    private func record(_ outcome: DeliveryOutcome, of delivery: Delivery, in key: PartitionKey) {
        let message = delivery.message
        let now = ContinuousClock.now
        switch outcome {
        case .ack:
            state.finishHead(of: key)
            state.releaseAckedHolds(upTo: now)
            state.holdAcked(message.id, of: key.topic, until: now + ackedRetention)
        case .retry(let reason):
            if delivery.attempt >= policy.maxAttempts {
                deadLetter(delivery, reason: reason, in: key)
            } else {
                let wait = policy.backoff(afterAttempt: delivery.attempt)
                state.requeueHead(of: key, attemptsMade: delivery.attempt, dueAt: now + wait)
            }
        case .reject(let reason):
            deadLetter(delivery, reason: reason, in: key)
        case .postpone(let delay):
            state.requeueHead(of: key, attemptsMade: delivery.attempt - 1, dueAt: now + max(delay, .zero))
        }
    }

    // Called with the lock held.
    private func deadLetter(_ delivery: Delivery, reason: String, in key: PartitionKey) {
        state.finishHead(of: key)
        let letter = DeadLetter(message: delivery.message, attempts: delivery.attempt, reason: reason)
        state.deadLetters[key.topic, default: []].append(letter)
    }

    // Outside the lock: what happens follows from the outcome, the attempt and the immutable policy alone.
    private func log(_ outcome: DeliveryOutcome, of delivery: Delivery) {
        let metadata: Logger.Metadata = [
            "messagequeue.topic": "\(delivery.message.topic)", "messagequeue.message_id": "\(delivery.message.id)",
            "messagequeue.attempt": "\(delivery.attempt)",
        ]
        switch outcome {
        case .ack, .postpone:
            return
        case .retry where delivery.attempt < policy.maxAttempts:
            logger.debug("delivery will be retried", metadata: metadata)
        case .retry, .reject:
            // A warning: the message is given up until an operator re-drives it (or it is published again).
            logger.warning("message dead-lettered", metadata: metadata)
        }
    }

    private static func seconds(_ duration: Duration) -> Double {
        let parts = duration.components
        return max(0, Double(parts.seconds) + Double(parts.attoseconds) / 1e18)
    }
}

private struct PartitionKey: Hashable {
    let topic: TopicName
    let key: String
}

private struct Entry {
    let message: Message
    /// Counted attempts made so far; the next delivery is attempt `attemptsMade + 1`.
    var attemptsMade: Int
    /// When the entry may be delivered.
    var dueAt: ContinuousClock.Instant
    let enqueuedAt: ContinuousClock.Instant
    /// Publish order across partitions, so ready partitions are served oldest message first.
    let sequence: UInt64
}

private struct Partition {
    /// Waiting messages in publish order; the head is in flight while `busy`.
    var entries: [Entry] = []
    var busy = false
}

private struct BrokerState {
    enum Phase { case idle, running, stopped }

    var phase = Phase.idle
    var handlers: [TopicName: @Sendable (Delivery) -> DeliveryOutcome] = [:]
    var partitions: [PartitionKey: Partition] = [:]
    /// Ids waiting, in flight, dead-lettered or acked within the retention, per topic: the idempotency set
    /// of `publish`.
    var heldIDs: [TopicName: Set<String>] = [:]
    /// The acked ids in `heldIDs`, in ack order, which with one retention for all is release order; entries
    /// before `ackedHoldsStart` are already released.
    var ackedHolds: [(topic: TopicName, id: String, releaseAt: ContinuousClock.Instant)] = []
    var ackedHoldsStart = 0
    var deadLetters: [TopicName: [DeadLetter]] = [:]
    var workers: [Thread] = []
    var runningWorkers = 0
    /// Workers whose handler is inside `shutdown()`, waiting for the other workers to exit.
    var workersInShutdown = 0
    var nextSequence: UInt64 = 0
    /// The timeouts of the workers waiting for a due head, by worker index: each looks again by then, if not sooner.
    var waitingUntil: [Int: ContinuousClock.Instant] = [:]

    /// Keeps the acked `id` held until `releaseAt`; an id is re-published only after its release, so no
    /// older hold of it is still queued.
    mutating func holdAcked(_ id: String, of topic: TopicName, until releaseAt: ContinuousClock.Instant) {
        ackedHolds.append((topic, id, releaseAt))
    }

    /// Releases the acked ids whose retention ended by `now`.
    mutating func releaseAckedHolds(upTo now: ContinuousClock.Instant) {
        while ackedHoldsStart < ackedHolds.count, ackedHolds[ackedHoldsStart].releaseAt <= now {
            let hold = ackedHolds[ackedHoldsStart]
            heldIDs[hold.topic]?.remove(hold.id)
            ackedHoldsStart += 1
        }
        // Compacting only once the released prefix is half the array moves each hold a constant number
        // of times on average.
        if ackedHoldsStart > 0, ackedHoldsStart * 2 >= ackedHolds.count {
            ackedHolds.removeFirst(ackedHoldsStart)
            ackedHoldsStart = 0
        }
    }

    /// Moves the dead letter `messageID` to the tail of its partition with a fresh attempt count and returns it; nil
    /// when `topic` has none. The id stays held: it moves from the dead-letter set back to the partition.
    mutating func redrive(_ topic: TopicName, messageID: String, now: ContinuousClock.Instant) -> Message? {
        guard let index = deadLetters[topic]?.firstIndex(where: { $0.message.id == messageID }),
            let dead = deadLetters[topic]?.remove(at: index)
        else { return nil }
        enqueue(dead.message, now: now)
        return dead.message
    }

    mutating func enqueue(_ message: Message, now: ContinuousClock.Instant) {
        nextSequence += 1
        let entry = Entry(message: message, attemptsMade: 0, dueAt: now, enqueuedAt: now, sequence: nextSequence)
        partitions[PartitionKey(topic: message.topic, key: message.partitionKey), default: Partition()]
            .entries.append(entry)
    }

    /// Whether `message` is the due head of an idle partition with a handler: deliverable now.
    func isDeliverableHead(_ message: Message, now: ContinuousClock.Instant) -> Bool {
        guard handlers[message.topic] != nil,
            let partition = partitions[PartitionKey(topic: message.topic, key: message.partitionKey)], !partition.busy,
            let head = partition.entries.first
        else { return false }
        return head.message.id == message.id && head.dueAt <= now
    }

    /// The idle partition with a handler whose head is due, oldest head first.
    func nextReadyPartition(now: ContinuousClock.Instant) -> PartitionKey? {
        var best: (key: PartitionKey, due: ContinuousClock.Instant, sequence: UInt64)?
        for (key, partition) in partitions where !partition.busy && handlers[key.topic] != nil {
            guard let head = partition.entries.first, head.dueAt <= now else { continue }
            if let current = best, (current.due, current.sequence) <= (head.dueAt, head.sequence) { continue }
            best = (key, head.dueAt, head.sequence)
        }
        return best?.key
    }

    /// The earliest due time of an idle, subscribed partition's head: when a worker must look again.
    func earliestDue() -> ContinuousClock.Instant? {
        var earliest: ContinuousClock.Instant?
        for (key, partition) in partitions where !partition.busy && handlers[key.topic] != nil {
            guard let head = partition.entries.first else { continue }
            earliest = min(earliest ?? head.dueAt, head.dueAt)
        }
        return earliest
    }

    mutating func beginDelivery(of key: PartitionKey) -> Delivery? {
        guard var partition = partitions[key], let head = partition.entries.first else { return nil }
        partition.busy = true
        partitions[key] = partition
        return Delivery(message: head.message, attempt: head.attemptsMade + 1)
    }

    /// Deliveries handed to a handler whose outcome is not recorded yet.
    var deliveriesInFlight: Int {
        partitions.values.count { $0.busy }
    }

    /// Removes the in-flight head and frees the partition for its next message.
    mutating func finishHead(of key: PartitionKey) {
        guard var partition = partitions[key], !partition.entries.isEmpty else { return }
        partition.entries.removeFirst()
        partition.busy = false
        partitions[key] = partition.entries.isEmpty ? nil : partition
    }

    /// Keeps the in-flight head at the front, due again at `dueAt`, so nothing overtakes it.
    mutating func requeueHead(of key: PartitionKey, attemptsMade: Int, dueAt: ContinuousClock.Instant) {
        guard var partition = partitions[key], !partition.entries.isEmpty else { return }
        partition.entries[0].attemptsMade = attemptsMade
        partition.entries[0].dueAt = dueAt
        partition.busy = false
        partitions[key] = partition
    }
}
