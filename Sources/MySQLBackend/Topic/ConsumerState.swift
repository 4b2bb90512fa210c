import Domain

/// A delivery whose handler is running.
struct InFlightDelivery: Sendable {
    let seq: UInt64
    let token: UInt64
    /// For the log lines about it.
    let messageID: String
    let startedAt: ContinuousClock.Instant
    /// Set once the handler ran past `maxHandlingTime` and the partition was given up.
    var abandoned = false
}

/// A partition a worker has taken; `delivery` is set once its head's delivery began.
struct BusyPartition: Sendable {
    var delivery: InFlightDelivery?
}

/// What this replica knows and is doing; guarded by the broker's condition lock.
struct ConsumerState {
    enum Phase { case idle, running, stopping, stopped }

    var phase = Phase.idle
    var handlers: [TopicName: @Sendable (Delivery) -> DeliveryOutcome] = [:]
    /// Partitions whose lease this replica believes it holds.
    var owned: Set<PartitionID> = []
    /// Owned partitions waiting for a worker, oldest request first; mirrored by `readySet`.
    private(set) var ready: [PartitionID] = []
    private(set) var readySet: Set<PartitionID> = []
    /// Partitions a worker is delivering; the value is set once the delivery began.
    var busy: [PartitionID: BusyPartition] = [:]
    /// Owned, idle partitions whose head is not due yet, and when it will be.
    var dueAt: [PartitionID: ContinuousClock.Instant] = [:]
    /// The partitions with pending messages at the last poll, per topic.
    var lastWork: [TopicName: Set<String>] = [:]
    /// Raised by local publishes; a worker that found its partition empty looks again if it moved.
    var publishGeneration: UInt64 = 0
    /// The coordinator should poll now rather than at its next interval.
    var wakeRequested = false
    /// Live replicas at the last heartbeat, this one included.
    var liveReplicas = 1
    var runningThreads = 0
    /// The workers among `runningThreads`.
    var runningWorkers = 0
    var workerThreads: [ObjectIdentifier] = []
    /// Workers whose handler is inside `shutdown()`, waiting for the other threads to exit.
    var workersInShutdown = 0

    mutating func pushReady(_ partition: PartitionID) {
        guard owned.contains(partition), busy[partition] == nil, readySet.insert(partition).inserted else { return }
        dueAt[partition] = nil
        ready.append(partition)
    }

    mutating func popReady() -> PartitionID? {
        guard !ready.isEmpty else { return nil }
        let partition = ready.removeFirst()
        readySet.remove(partition)
        return partition
    }

    /// Forgets `partition` as owned, ready and timed.
    mutating func disown(_ partition: PartitionID) {
        owned.remove(partition)
        dueAt[partition] = nil
        if readySet.remove(partition) != nil {
            ready.removeAll { $0 == partition }
        }
    }

    /// Moves owned partitions whose head became due to the ready list.
    mutating func promoteDue(now: ContinuousClock.Instant) {
        for (partition, due) in dueAt where due <= now {
            dueAt[partition] = nil
            pushReady(partition)
        }
    }

    /// The earliest time an owned, idle partition's head becomes due.
    var earliestDue: ContinuousClock.Instant? { dueAt.values.min() }

    func ownedCount(of topic: TopicName) -> Int { owned.count { $0.topic == topic } }

    /// Stopping, and a worker (other than those waiting inside `shutdown()`) has not exited yet; asked by the
    /// coordinator and the visibility thread, which keep renewing for those workers.
    var deliveringWhileStopping: Bool { phase == .stopping && runningWorkers > workersInShutdown }
}
