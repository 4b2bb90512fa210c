public import Domain
import Conditions
import Foundation
public import Logging
public import Metrics
public import MySQLClient
import Synchronization

/// The durable topic system on MySQL: several replicas share the partitions of each topic through leases.
///
/// Publishing is one INSERT, committed before `publish` returns, and idempotent on (topic, message id).
/// Each partition (topic, partition key) is delivered by the one replica holding its lease, serially and in
/// seq order, which for publishers that wait for `publish` to return is their publish order. Leases are
/// shared fairly among live replicas, renewed while held, and move when a replica stops renewing them.
/// Delivery is at least once: a delivery is hidden for `visibilityTimeout` (renewed while its handler runs),
/// and a consumer that dies leaves it to be redelivered once both its lease and that timeout have passed, or
/// dead-lettered then if that delivery was the last of `retryPolicy.maxAttempts`.
public final class MySQLBroker: MessageBroker, @unchecked Sendable {
    // @unchecked Sendable: `state` is read and written only while holding `condition`'s lock; every other
    // stored property is immutable and Sendable.
    private let condition = MonotonicCondition()
    private var state = ConsumerState()
    /// For the calls of publishers and operators, who wait for the answer: a lock wait timeout is not run again.
    private let database: MySQLDatabase
    /// For the broker's own threads, which may wait: lock wait timeouts are run again too, up to the pool's attempts.
    private let background: MySQLDatabase
    /// The broker's timings and retry policy.
    public let configuration: Configuration
    /// This broker's identity in the lease and replica tables: `configuration.replicaID` or a fresh one.
    public let replicaID: String
    private let logger: Logger
    private let metrics: any MetricsFactory
    /// Metric handles by label and topic, made on first use: asking the factory is a locked lookup that
    /// does not belong on every publish and delivery. Labels and topics are fixed sets, so this is bounded.
    private let counters = Mutex<[String: Metrics.Counter]>([:])
    private let gauges = Mutex<[String: Metrics.Gauge]>([:])
    /// Whether the last database call of the coordinator failed, so a run of failures is logged once.
    private let failing = Mutex(false)

    /// The DDL of the topic tables (`CREATE TABLE IF NOT EXISTS`), in order; the migrator applies the same files.
    public static let schema: [String] = [
        String(decoding: PackageResources.V100__topic_messages_sql, as: UTF8.self),
        String(decoding: PackageResources.V101__topic_partitions_sql, as: UTF8.self),
        String(decoding: PackageResources.V102__topic_replicas_sql, as: UTF8.self),
    ]

    /// Makes a broker on `pool`, whose database must have the topic tables; no thread starts before `start()`.
    /// - Parameters:
    ///   - pool: connections to the database; the consumer uses up to `workerThreads + 2` at once.
    ///   - configuration: retries, threads, timings, retention and the replica identity.
    ///   - logger: receives lease moves, dead letters and database trouble; never payloads or bound values.
    ///   - metricsFactory: where counters and gauges go; nil for the process-wide `MetricsSystem.factory`.
    public init(
        pool: MySQLPool, configuration: Configuration = Configuration(), logger: Logger,
        metricsFactory: (any MetricsFactory)? = nil
    ) {
        self.database = MySQLDatabase(pool: pool)
        self.background = MySQLDatabase(pool: pool, lockConflicts: .upToAttempts)
        self.metrics = metricsFactory ?? MetricsSystem.factory
        self.configuration = configuration
        self.replicaID = configuration.replicaID ?? Self.makeReplicaID()
        var logger = logger
        logger[metadataKey: "messagequeue.replica"] = "\(replicaID)"
        self.logger = logger
    }

    // MARK: publishing

    /// Inserts `message` in one statement and returns once it is committed; a no-op when the topic already
    /// holds its id (pending, or acked within `ackedRetention`), except that a dead-lettered id is re-driven.
    public func publish(_ message: Message) throws(BackendError) {
        let inserted = try database.run { connection in try TopicStore.insert(message, on: connection) }
        var redrivenPartition: PartitionID?
        if inserted {
            count("stovepipe_topic_published_total", message.topic)
        } else {
            // Published again: the publisher asks for a delivery, which a dead letter would never get. The
            // locking re-drive runs only for a dead letter, not for every repeated publish of a live message.
            let dead = try database.run { connection in
                try TopicStore.isDeadLetter(message.topic, messageID: message.id, on: connection)
            }
            let redriven = dead ? try database.transaction { connection in
                try TopicStore.redrive(message.topic, messageID: message.id, on: connection)
            } : nil
            redrivenPartition = redriven
            if redriven != nil {
                count("stovepipe_topic_redriven_total", message.topic)
                logger.info(
                    "dead letter re-driven by a new publish",
                    metadata: ["messagequeue.topic": "\(message.topic)", "messagequeue.message_id": "\(message.id)"])
            }
        }
        // A re-driven dead letter returns to its own partition, which a publish naming another key does not name.
        published(redrivenPartition ?? PartitionID(topic: message.topic, key: message.partitionKey))
    }

    /// Inserts `message` on `connection`, inside the caller's transaction if one is open, so a message can be
    /// published atomically with other writes; returns false when the topic already holds its id.
    ///
    /// This replica's consumer is woken at once; when the caller's transaction commits later, the message
    /// is picked up by the next poll instead.
    /// - Throws: `MySQLError`, for the caller's transaction to handle.
    @discardableResult
    public func publish(_ message: Message, on connection: MySQLConnection) throws(MySQLError) -> Bool {
        let inserted = try TopicStore.insert(message, on: connection)
        if inserted { count("stovepipe_topic_published_total", message.topic) }
        published(PartitionID(topic: message.topic, key: message.partitionKey))
        return inserted
    }

    /// The local wake-up: a partition this replica holds and is not delivering is handed to a worker now;
    /// any other makes the coordinator poll now instead of at its next interval.
    private func published(_ partition: PartitionID) {
        condition.lock()
        defer { condition.unlock() }
        state.publishGeneration &+= 1
        guard state.phase == .running, state.handlers[partition.topic] != nil else { return }
        if state.owned.contains(partition) {
            state.pushReady(partition)
        } else {
            state.wakeRequested = true
        }
        condition.broadcast()
    }

    // MARK: lifecycle

    /// Registers the handler of `topic`, replacing any earlier one.
    public func subscribe(_ topic: TopicName, handler: @escaping @Sendable (Delivery) -> DeliveryOutcome) {
        condition.lock()
        state.handlers[topic] = handler
        state.wakeRequested = true
        condition.broadcast()
        condition.unlock()
    }

    /// Announces this replica and starts the coordinator and worker threads; a second call does nothing.
    /// - Throws: `unavailable` when the database cannot be reached, or after `shutdown()`.
    public func start() throws(BackendError) {
        condition.lock()
        let phase = state.phase
        condition.unlock()
        switch phase {
        case .running:
            return
        case .stopping, .stopped:
            throw .unavailable(retryable: false, detail: "the mysql broker is shut down")
        case .idle:
            break
        }
        // Every counter of a subscribed topic is exported from the start: one that first appears at 1 (the
        // first dead letter, say) is lost to rate() and increase(), which need an earlier sample.
        for topic in subscribedTopics() {
            for label in Self.topicCounterLabels { _ = counter(label, topic) }
        }
        let live = try background.run { connection in
            try TopicStore.heartbeat(replica: replicaID, on: connection)
            return try TopicStore.liveReplicaCount(windowMicroseconds: configuration.leaseDuration.wholeMicroseconds, on: connection)
        }
        condition.lock()
        defer { condition.unlock() }
        guard state.phase == .idle else {
            if state.phase == .running { return }
            throw .unavailable(retryable: false, detail: "the mysql broker is shut down")
        }
        state.phase = .running
        state.liveReplicas = max(1, live)
        state.wakeRequested = true
        let coordinator = Thread { [self] in coordinatorLoop() }
        coordinator.name = "mysql-broker-coordinator"
        state.runningThreads += 1
        coordinator.start()
        let visibility = Thread { [self] in visibilityLoop() }
        visibility.name = "mysql-broker-visibility"
        state.runningThreads += 1
        visibility.start()
        for index in 0..<configuration.workerThreads {
            let worker = Thread { [self] in workerLoop() }
            worker.name = "mysql-broker-\(index)"
            state.runningThreads += 1
            state.runningWorkers += 1
            state.workerThreads.append(ObjectIdentifier(worker))
            worker.start()
        }
        logger.info(
            "mysql broker started",
            metadata: ["broker.workers": "\(configuration.workerThreads)", "broker.live_replicas": "\(live)"])
    }

    /// Stops taking deliveries, lets handlers in progress finish (renewing their leases and visibility
    /// meanwhile, and giving up the other leases at once) and records their outcomes, joins the threads, then
    /// releases this replica's leases and forgets it, so others take over at once.
    public func shutdown() {
        shutdown(until: nil)
    }

    /// As `shutdown()`, but stops waiting for handlers at `deadline`: their deliveries stay hidden until their
    /// visibility timeout passes and are then redelivered (and their outcomes, if they ever come, dropped).
    public func shutdown(waitingUntil deadline: ContinuousClock.Instant) {
        shutdown(until: deadline)
    }

    private func shutdown(until deadline: ContinuousClock.Instant?) {
        condition.lock()
        switch state.phase {
        case .idle:
            state.phase = .stopped
            condition.unlock()
            return
        case .stopped:
            condition.unlock()
            return
        case .running, .stopping:
            state.phase = .stopping
        }
        condition.broadcast()
        // A handler that shuts the broker down runs on a worker, which cannot wait for itself to exit, nor for
        // another worker whose handler is shutting down too: each would wait for the other forever.
        if state.workerThreads.contains(ObjectIdentifier(Thread.current)) {
            state.workersInShutdown += 1
            condition.broadcast()
            while state.runningThreads > state.workersInShutdown {
                condition.wait()
            }
            state.workersInShutdown -= 1
        } else {
            while state.runningThreads > 0 {
                guard let deadline else {
                    condition.wait()
                    continue
                }
                let left = deadline - .now
                if left <= .zero { break }
                condition.wait(for: left)
            }
        }
        let handlersLeft = state.runningThreads
        let alreadyStopped = state.phase == .stopped
        state.phase = .stopped
        state.owned.removeAll()
        condition.unlock()
        guard !alreadyStopped else { return }
        if handlersLeft > 0 {
            logger.warning(
                "mysql broker shutdown deadline passed with handlers still running; their messages will be redelivered",
                metadata: ["broker.threads_running": "\(handlersLeft)"])
        }
        do {
            try background.run { connection in
                try TopicStore.releaseAllLeases(replica: replicaID, on: connection)
                try TopicStore.removeReplica(replicaID, on: connection)
            }
            logger.info("mysql broker stopped; leases released")
        } catch {
            logger.warning("mysql broker stopped; its leases could not be released and will expire", metadata: ["error": "\(error)"])
        }
        for topic in subscribedTopics() { gauge("stovepipe_topic_leases", topic, 0) }
    }

    // MARK: operators

    /// The dead letters of `topic` in the order they were dead-lettered, at most `limit`.
    public func deadLetters(_ topic: TopicName, limit: Int) throws(BackendError) -> [DeadLetter] {
        guard limit > 0 else { return [] }
        return try database.run { connection in try TopicStore.deadLetters(topic, limit: limit, on: connection) }
    }

    /// Moves the dead letter `messageID` to the tail of its partition with a fresh attempt count.
    public func redrive(_ topic: TopicName, messageID: String) throws(BackendError) {
        let partition = try database.transaction { connection in
            try TopicStore.redrive(topic, messageID: messageID, on: connection)
        }
        guard let partition else { throw .notFound }
        count("stovepipe_topic_redriven_total", topic)
        logger.info("dead letter re-driven", metadata: ["messagequeue.topic": "\(topic)", "messagequeue.message_id": "\(messageID)"])
        published(partition)
    }

    /// Backlog (pending and not in flight, due or not), in flight (a delivery began and its visibility
    /// deadline has not passed), dead letters, and the age of the oldest pending message (counted from its
    /// publish or redrive).
    public func stats(_ topic: TopicName) throws(BackendError) -> TopicStats {
        try database.run { connection in try TopicStore.stats(topic, on: connection) }
    }

    // MARK: workers

    private enum HeadResult {
        /// A delivery ran (or the head moved under us); look at the partition again.
        case delivered
        /// Nothing pending.
        case empty
        /// The head becomes due after this long.
        case notDue(Duration)
        /// Another replica holds the lease now.
        case lostLease
        /// The database failed; try again after a poll interval.
        case failed
    }

    private func workerLoop() {
        condition.lock()
        while state.phase == .running {
            guard let partition = state.popReady() else {
                condition.wait()
                continue
            }
            guard let handler = state.handlers[partition.topic] else { continue }
            state.busy[partition] = BusyPartition()
            let generation = state.publishGeneration
            condition.unlock()
            let result = deliverHead(of: partition, handler: handler)
            condition.lock()
            state.busy[partition] = nil
            switch result {
            case .delivered:
                state.pushReady(partition)
            case .empty:
                // A local publish may have committed after our read found nothing: look once more.
                if state.publishGeneration != generation { state.pushReady(partition) }
            case .notDue(let wait):
                if state.owned.contains(partition) { state.dueAt[partition] = .now + wait }
            case .lostLease:
                state.disown(partition)
            case .failed:
                if state.owned.contains(partition) { state.dueAt[partition] = .now + configuration.pollInterval }
            }
            condition.broadcast()
        }
        state.runningThreads -= 1
        state.runningWorkers -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// Delivers the head of `partition` if it is due, and records the handler's outcome.
    private func deliverHead(of partition: PartitionID, handler: @Sendable (Delivery) -> DeliveryOutcome) -> HeadResult {
        let replica = replicaID
        let visibility = configuration.visibilityTimeout.wholeMicroseconds
        let maxAttempts = configuration.retryPolicy.maxAttempts
        let token = UInt64.random(in: 1...UInt64(Int64.max))
        let begun: (head: PartitionHead?, began: Bool, exhausted: Bool, owner: String?)
        // Set before the dead letter is written: if that fails, it may have committed all the same.
        var exhaustedHead: PartitionHead?
        do {
            begun = try background.run { connection in
                guard let head = try TopicStore.head(of: partition, on: connection) else { return (nil, false, false, nil) }
                guard head.dueInMicroseconds <= 0 else { return (head, false, false, replica) }
                // The last delivery the policy allows began and recorded no outcome (its consumer died or hung; a
                // retry there would have dead-lettered it): delivered again and again, a message that kills its
                // consumer would hold its partition forever.
                let exhausted = head.attempts >= maxAttempts
                if exhausted { exhaustedHead = head }
                let began =
                    exhausted
                    ? try TopicStore.deadLetterUndelivered(
                        seq: head.seq, attempts: head.attempts, token: token, of: partition, replica: replica,
                        reason: Self.exhaustedReason(head, maxAttempts: maxAttempts), on: connection)
                    : try TopicStore.beginDelivery(
                        seq: head.seq, attempts: head.attempts, token: token, of: partition, replica: replica,
                        visibilityMicroseconds: visibility, on: connection)
                let owner = began ? replica : try TopicStore.leaseOwner(of: partition, on: connection)
                return (head, began, exhausted, owner)
            }
        } catch {
            databaseFailed(error)
            guard let head = exhaustedHead,
                deadLetterExhaustedAgain(head, of: partition, token: token, maxAttempts: maxAttempts)
            else { return .failed }
            deadLetteredExhausted(head, of: partition)
            return .delivered
        }
        guard let head = begun.head else { return .empty }
        guard head.dueInMicroseconds <= 0 else { return .notDue(.microseconds(head.dueInMicroseconds)) }
        guard begun.began else {
            if begun.owner != replica {
                logger.debug("partition lease lost", metadata: ["messagequeue.topic": "\(partition.topic)"])
                return .lostLease
            }
            // Still ours, but the head changed between the read and the update: read it again.
            return .delivered
        }
        guard !begun.exhausted else {
            deadLetteredExhausted(head, of: partition)
            return .delivered
        }

        condition.lock()
        state.busy[partition] = BusyPartition(
            delivery: InFlightDelivery(seq: head.seq, token: token, messageID: head.messageID, startedAt: .now))
        condition.unlock()

        let message = Message(topic: partition.topic, partitionKey: partition.key, id: head.messageID, payload: head.payload)
        let delivery = Delivery(message: message, attempt: head.attempts + 1)
        count("stovepipe_topic_delivered_total", partition.topic)
        let outcome = handler(delivery)
        record(outcome, of: delivery, seq: head.seq, token: token)
        return .delivered
    }

    private static func exhaustedReason(_ head: PartitionHead, maxAttempts: Int) -> String {
        "attempt \(head.attempts) of \(maxAttempts) ended without an outcome: its consumer died or hung"
    }

    /// Tries again the dead letter of a head whose attempts are used up, after the first write failed; true once it is
    /// written, also when that first write committed though its OK was lost with the connection (2013 after the commit).
    private func deadLetterExhaustedAgain(_ head: PartitionHead, of partition: PartitionID, token: UInt64, maxAttempts: Int) -> Bool {
        for attempt in 1...4 {
            Thread.sleep(forTimeInterval: 0.05 * Double(attempt))
            do {
                return try background.run { connection in
                    if try TopicStore.deadLetterUndelivered(
                        seq: head.seq, attempts: head.attempts, token: token, of: partition, replica: replicaID,
                        reason: Self.exhaustedReason(head, maxAttempts: maxAttempts), on: connection)
                    {
                        return true
                    }
                    return try TopicStore.finished(seq: head.seq, token: token, .deadLettered(reason: ""), on: connection)
                }
            } catch {
                continue
            }
        }
        return false
    }

    private func deadLetteredExhausted(_ head: PartitionHead, of partition: PartitionID) {
        count("stovepipe_topic_dead_lettered_total", partition.topic)
        logger.warning(
            "message dead-lettered: its last allowed attempt ended without an outcome",
            metadata: [
                "messagequeue.topic": "\(partition.topic)", "messagequeue.message_id": "\(head.messageID)",
                "messagequeue.attempt": "\(head.attempts)",
            ])
    }

    /// Writes the outcome, retrying a failing database a few times; if it never succeeds, the message is
    /// redelivered after its visibility timeout, which at-least-once allows.
    private func record(_ outcome: DeliveryOutcome, of delivery: Delivery, seq: UInt64, token: UInt64) {
        let policy = configuration.retryPolicy
        let write: CompletionWrite
        let counter: String
        switch outcome {
        case .ack:
            (write, counter) = (.acked, "stovepipe_topic_acked_total")
        case .retry(let reason) where delivery.attempt < policy.maxAttempts:
            let wait = policy.backoff(afterAttempt: delivery.attempt)
            (write, counter) = (.retryLater(afterMicroseconds: wait.wholeMicroseconds, reason: reason), "stovepipe_topic_retried_total")
        case .retry(let reason), .reject(let reason):
            (write, counter) = (.deadLettered(reason: reason), "stovepipe_topic_dead_lettered_total")
        case .postpone(let delay):
            (write, counter) = (.postponed(afterMicroseconds: max(delay, .zero).wholeMicroseconds), "stovepipe_topic_postponed_total")
        }
        let topic = delivery.message.topic
        var metadata: Logger.Metadata = [
            "messagequeue.topic": "\(topic)", "messagequeue.message_id": "\(delivery.message.id)",
            "messagequeue.attempt": "\(delivery.attempt)",
        ]
        var failedBefore = false
        for attempt in 1...5 {
            do {
                let current = try background.run { connection in
                    if try TopicStore.complete(seq: seq, token: token, write, on: connection) { return true }
                    // An earlier try may have committed and lost its OK with the connection (2013 after the commit):
                    // its write, not another delivery's, is then the one to count.
                    return try failedBefore && TopicStore.finished(seq: seq, token: token, write, on: connection)
                }
                guard current else {
                    logger.info("delivery outcome dropped: the message was redelivered meanwhile", metadata: metadata)
                    return
                }
                count(counter, topic)
                // A warning: the message is given up until an operator re-drives it (or it is published again).
                if case .deadLettered = write { logger.warning("message dead-lettered", metadata: metadata) }
                return
            } catch {
                failedBefore = true
                metadata["error"] = "\(error)"
                Thread.sleep(forTimeInterval: 0.05 * Double(attempt))
            }
        }
        logger.warning("delivery outcome not recorded; the message will be redelivered", metadata: metadata)
    }

    // MARK: coordinator

    private func coordinatorLoop() {
        let renewalInterval = configuration.renewalInterval
        var nextPoll = ContinuousClock.now
        var nextRenewal = ContinuousClock.now + renewalInterval
        var nextMaintenance = ContinuousClock.now + configuration.maintenanceInterval
        condition.lock()
        // While stopping, handlers still running need their leases and visibility renewed until they finish:
        // without that, another replica redelivers their messages after a lease period and drops their outcome.
        while state.phase == .running || state.deliveringWhileStopping {
            let now = ContinuousClock.now
            let running = state.phase == .running
            state.promoteDue(now: now)
            if !state.ready.isEmpty { condition.broadcast() }
            let pollNow = running && (state.wakeRequested || now >= nextPoll)
            let renewNow = now >= nextRenewal
            let maintainNow = running && now >= nextMaintenance
            guard pollNow || renewNow || maintainNow else {
                var wake = running ? min(nextPoll, nextRenewal, nextMaintenance) : nextRenewal
                if running, let due = state.earliestDue { wake = min(wake, due) }
                condition.wait(for: wake - now)
                continue
            }
            state.wakeRequested = false
            condition.unlock()
            if renewNow {
                renew()
                nextRenewal = .now + renewalInterval
            }
            if pollNow {
                poll()
                nextPoll = .now + configuration.pollInterval
            }
            if maintainNow {
                maintain()
                nextMaintenance = .now + configuration.maintenanceInterval
            }
            condition.lock()
        }
        state.runningThreads -= 1
        condition.broadcast()
        condition.unlock()
    }

    private func subscribedTopics() -> [TopicName] {
        condition.lock()
        defer { condition.unlock() }
        return Array(state.handlers.keys)
    }

    /// One query per subscribed topic: which partitions have work, who holds them; then leases are taken
    /// or given up towards this replica's fair share, and held partitions with due work go to the workers.
    private func poll() {
        for topic in subscribedTopics() {
            let partitions: [PartitionWithWork]
            do {
                partitions = try background.run { connection in try TopicStore.partitionsWithWork(topic, on: connection) }
                databaseRecovered()
            } catch {
                databaseFailed(error)
                continue
            }
            condition.lock()
            let plan = planLeases(topic, partitions)
            condition.broadcast()
            condition.unlock()
            execute(plan)
        }
    }

    private struct LeasePlan {
        var release: [PartitionID] = []
        var acquire: [(partition: PartitionID, needsRow: Bool)] = []
    }

    // Called with the lock held.
    private func planLeases(_ topic: TopicName, _ partitions: [PartitionWithWork]) -> LeasePlan {
        let replica = replicaID
        let now = ContinuousClock.now
        state.lastWork[topic] = Set(partitions.map(\.key))
        var plan = LeasePlan()
        for row in partitions where row.owner != replica {
            // Another replica took a lease this one let lapse.
            state.disown(PartitionID(topic: topic, key: row.key))
        }
        // A lease ours in the database but not owned here is one whose release failed: renewLeases keeps
        // extending it, so no other replica could ever take it.
        let stray = partitions.filter { $0.owner == replica }.map { PartitionID(topic: topic, key: $0.key) }
            .filter { !state.owned.contains($0) }
        // Fair share: at most ceil(partitions with work / live replicas) each.
        let liveReplicas = max(1, state.liveReplicas)
        let target = (partitions.count + liveReplicas - 1) / liveReplicas
        var held = partitions.filter { state.owned.contains(PartitionID(topic: topic, key: $0.key)) }
        if held.count > target {
            // Give up the partitions whose heads are due last, never one a worker is delivering.
            let extras = held.filter { state.busy[PartitionID(topic: topic, key: $0.key)] == nil }
                .sorted { $0.headDueInMicroseconds > $1.headDueInMicroseconds }
                .prefix(held.count - target)
            for row in extras {
                let partition = PartitionID(topic: topic, key: row.key)
                state.disown(partition)
                plan.release.append(partition)
            }
            held.removeAll { row in extras.contains { $0.key == row.key } }
        }
        for row in held {
            let partition = PartitionID(topic: topic, key: row.key)
            guard state.busy[partition] == nil, !state.readySet.contains(partition) else { continue }
            if row.headDueInMicroseconds <= 0 {
                state.pushReady(partition)
            } else {
                state.dueAt[partition] = now + .microseconds(row.headDueInMicroseconds)
            }
        }
        if held.count < target {
            let candidates = partitions.filter { row in
                let partition = PartitionID(topic: topic, key: row.key)
                return !state.owned.contains(partition) && state.busy[partition] == nil && row.headDueInMicroseconds <= 0
                    && (row.owner == nil || row.owner == replica || !row.leaseRunning)
            }
            .sorted { $0.headDueInMicroseconds < $1.headDueInMicroseconds }
            .prefix(target - held.count)
            plan.acquire = candidates.map { (PartitionID(topic: topic, key: $0.key), !$0.hasLeaseRow) }
        }
        plan.release += stray.filter { partition in !plan.acquire.contains { $0.partition == partition } }
        return plan
    }

    private func execute(_ plan: LeasePlan) {
        let replica = replicaID
        let lease = configuration.leaseDuration.wholeMicroseconds
        var acquired: [PartitionID] = []
        do {
            try background.run { connection in
                for partition in plan.release {
                    try TopicStore.releaseLease(partition, replica: replica, on: connection)
                }
            }
            for (partition, needsRow) in plan.acquire {
                let taken = try background.run { connection in
                    if needsRow { try TopicStore.ensurePartitionRow(partition, on: connection) }
                    return try TopicStore.acquireLease(partition, replica: replica, leaseMicroseconds: lease, on: connection)
                }
                if taken { acquired.append(partition) }
            }
        } catch {
            databaseFailed(error)
        }
        if !plan.release.isEmpty {
            logger.debug("partition leases released to rebalance", metadata: ["broker.leases_released": "\(plan.release.count)"])
        }
        guard !acquired.isEmpty else { return }
        logger.debug("partition leases acquired", metadata: ["broker.leases_acquired": "\(acquired.count)"])
        condition.lock()
        let running = state.phase == .running
        if running {
            for partition in acquired {
                state.owned.insert(partition)
                state.pushReady(partition)
            }
            condition.broadcast()
        }
        condition.unlock()
        guard !running else { return }
        // Stopping: the renewals for the handlers still running would keep these alive until the last one ends.
        do {
            try background.run { connection in
                for partition in acquired { try TopicStore.releaseLease(partition, replica: replica, on: connection) }
            }
        } catch {
            databaseFailed(error)
        }
    }

    /// The heartbeat: renews leases, announces this replica, counts the live ones, gives up idle partitions,
    /// updates gauges (the visibility of deliveries in progress is `extendDeliveries`').
    private func renew() {
        let replica = replicaID
        let lease = configuration.leaseDuration.wholeMicroseconds
        condition.lock()
        let stopping = state.phase != .running
        condition.unlock()
        // The leases apart from the replica row: a heartbeat stuck behind a lock on that row must not cost them.
        do {
            try background.run { connection in
                try TopicStore.renewLeases(replica: replica, leaseMicroseconds: lease, on: connection)
            }
            databaseRecovered()
        } catch {
            databaseFailed(error)
        }
        do {
            let live = try background.run { connection in
                // A stopping replica takes no more partitions: while its last handlers finish it is not counted
                // as live, so the others' fair shares cover the partitions it gives up.
                if stopping {
                    try TopicStore.removeReplica(replica, on: connection)
                } else {
                    try TopicStore.heartbeat(replica: replica, on: connection)
                }
                return try TopicStore.liveReplicaCount(windowMicroseconds: lease, on: connection)
            }
            condition.lock()
            state.liveReplicas = max(1, live)
            condition.unlock()
        } catch {
            databaseFailed(error)
        }

        var idle: [PartitionID] = []
        condition.lock()
        // Once stopping, every partition no handler is delivering is given up, so others take it over at once
        // rather than after the last handler here finishes.
        for partition in state.owned where state.busy[partition] == nil
            && (stopping
                || (!state.readySet.contains(partition) && state.dueAt[partition] == nil
                    && !(state.lastWork[partition.topic]?.contains(partition.key) ?? false)))
        {
            idle.append(partition)
        }
        for partition in idle { state.disown(partition) }
        var leases: [TopicName: Int] = [:]
        for topic in state.handlers.keys { leases[topic] = state.ownedCount(of: topic) }
        condition.unlock()

        if !idle.isEmpty {
            do {
                try background.run { connection in
                    for partition in idle { try TopicStore.releaseLease(partition, replica: replica, on: connection) }
                }
            } catch {
                databaseFailed(error)
            }
        }
        for (topic, count) in leases {
            gauge("stovepipe_topic_leases", topic, Double(count))
            if let stats = try? stats(topic) {
                gauge("stovepipe_topic_backlog", topic, Double(stats.backlog))
                gauge("stovepipe_topic_in_flight", topic, Double(stats.inFlight))
                gauge("stovepipe_topic_dead_letters", topic, Double(stats.deadLetters))
                gauge("stovepipe_topic_oldest_pending_age_seconds", topic, stats.oldestPendingAgeSeconds ?? 0)
            }
        }
    }

    /// Runs `extendDeliveries` every renewal interval while handlers may run. A thread of its own: the
    /// coordinator's calls (a heartbeat or lease stuck behind a row lock, retried up to three lock waits, a slow
    /// poll) must not hold up the visibility deadlines that keep other replicas from redelivering in-flight messages.
    private func visibilityLoop() {
        let interval = configuration.renewalInterval
        var next = ContinuousClock.now + interval
        condition.lock()
        while state.phase == .running || state.deliveringWhileStopping {
            let now = ContinuousClock.now
            guard now >= next else {
                condition.wait(for: next - now)
                continue
            }
            condition.unlock()
            extendDeliveries()
            next = .now + interval
            condition.lock()
        }
        state.runningThreads -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// Pushes the visibility deadline of every delivery in progress, and gives up the partitions of handlers
    /// running past `maxHandlingTime`, whose deliveries it no longer extends.
    private func extendDeliveries() {
        let now = ContinuousClock.now
        var extend: [InFlightDelivery] = []
        var hung: [(partition: PartitionID, messageID: String)] = []
        condition.lock()
        for (partition, busy) in state.busy {
            guard let delivery = busy.delivery, !delivery.abandoned else { continue }
            if now - delivery.startedAt > configuration.maxHandlingTime {
                state.busy[partition]?.delivery?.abandoned = true
                state.disown(partition)
                hung.append((partition, delivery.messageID))
            } else {
                extend.append(delivery)
            }
        }
        condition.unlock()
        guard !extend.isEmpty || !hung.isEmpty else { return }
        let replica = replicaID
        let visibility = configuration.visibilityTimeout.wholeMicroseconds
        do {
            try background.run { connection in
                for delivery in extend {
                    _ = try TopicStore.extendDelivery(
                        seq: delivery.seq, token: delivery.token, visibilityMicroseconds: visibility, on: connection)
                }
                for (partition, _) in hung {
                    try TopicStore.releaseLease(partition, replica: replica, on: connection)
                }
            }
        } catch {
            databaseFailed(error)
        }
        for (partition, messageID) in hung {
            logger.warning(
                "a handler ran past maxHandlingTime: its partition is released for redelivery elsewhere",
                metadata: ["messagequeue.topic": "\(partition.topic)", "messagequeue.message_id": "\(messageID)"])
        }
    }

    /// Deletes acked messages past retention (in bounded batches) and replicas long silent.
    private func maintain() {
        let retention = configuration.ackedRetention.wholeMicroseconds
        let silence = max(configuration.leaseDuration.wholeMicroseconds * 10, 60_000_000)
        let batch = 500
        do {
            var deleted: UInt64 = 0
            for _ in 0..<20 {
                let count = try background.run { connection in
                    try TopicStore.deleteAcked(olderThanMicroseconds: retention, limit: batch, on: connection)
                }
                deleted += count
                if count < UInt64(batch) { break }
            }
            try background.run { connection in try TopicStore.removeSilentReplicas(silenceMicroseconds: silence, on: connection) }
            if deleted > 0 { logger.debug("acked messages deleted", metadata: ["broker.deleted": "\(deleted)"]) }
        } catch {
            databaseFailed(error)
        }
    }

    // MARK: health and metrics

    /// Logs the first failure of a run of failures only, so an unreachable database does not flood the log.
    private func databaseFailed(_ error: BackendError) {
        let first = failing.withLock { failing in
            defer { failing = true }
            return !failing
        }
        if first { logger.warning("topic consumer cannot reach mysql; retrying", metadata: ["error": "\(error)"]) }
    }

    private func databaseRecovered() {
        let was = failing.withLock { failing in
            defer { failing = false }
            return failing
        }
        if was { logger.info("topic consumer reaches mysql again") }
    }

    /// The counters of each topic, in the README's order.
    private static let topicCounterLabels = [
        "stovepipe_topic_published_total", "stovepipe_topic_delivered_total", "stovepipe_topic_acked_total",
        "stovepipe_topic_retried_total", "stovepipe_topic_dead_lettered_total", "stovepipe_topic_postponed_total",
        "stovepipe_topic_redriven_total",
    ]

    /// Exports the publish counter of each of `topics` at 0, for a replica that publishes to topics it never
    /// subscribes to (`start` exports every counter of the subscribed ones).
    public func exportPublishCounters(of topics: [TopicName]) {
        for topic in topics { _ = counter("stovepipe_topic_published_total", topic) }
    }

    private func counter(_ label: String, _ topic: TopicName) -> Metrics.Counter {
        Self.handle(in: counters, label: label, topic: topic) {
            Metrics.Counter(label: label, dimensions: [("topic", topic.rawValue)], factory: metrics)
        }
    }

    private func count(_ label: String, _ topic: TopicName) {
        counter(label, topic).increment()
    }

    private func gauge(_ label: String, _ topic: TopicName, _ value: Double) {
        Self.handle(in: gauges, label: label, topic: topic) {
            Metrics.Gauge(label: label, dimensions: [("topic", topic.rawValue)], factory: metrics)
        }.record(value)
    }

    /// The cached handle of `label` for `topic`, made by `make` on first use.
    private static func handle<Handle: Sendable>(
        in cache: borrowing Mutex<[String: Handle]>, label: String, topic: TopicName, _ make: () -> Handle
    ) -> Handle {
        let key = label + " " + topic.rawValue
        return cache.withLock { handles in
            if let handle = handles[key] { return handle }
            let handle = make()
            handles[key] = handle
            return handle
        }
    }
}
