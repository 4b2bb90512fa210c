import Domain
import Foundation
import MySQLBackend
import MySQLClient
import TestSupport
import Testing

/// One handler run: who ran it, on which partition, and when.
struct Handling: Sendable {
    let replica: Int
    let key: String
    let id: String
    let started: ContinuousClock.Instant
    let ended: ContinuousClock.Instant
}

/// Live lease holders and how many partitions each holds.
private func leaseCounts(_ harness: TopicHarness) throws -> [String: Int] {
    let rows = try harness.query(
        """
        SELECT owner, COUNT(*) FROM topic_partitions
        WHERE owner IS NOT NULL AND lease_expires_at > UTC_TIMESTAMP(6) GROUP BY owner
        """)
    var counts: [String: Int] = [:]
    for row in rows {
        if let owner = row.string(0), let count = row.int64(1) { counts[owner] = Int(count) }
    }
    return counts
}

@Suite("MySQLBroker replicas, leases and crashes", .enabled(if: LiveDatabase.shouldRun))
struct ReplicaTests {
    @Test("a consumer that dies mid-delivery: another replica redelivers after the lease and visibility expire")
    func consumerDiesMidDelivery() async throws {
        try await withHarness { harness in
            let timings = fastConfiguration(lease: .seconds(1), visibility: .seconds(1))
            let doomedPool = harness.makePool()
            let doomed = harness.makeBroker(timings, pool: doomedPool)
            let entered = Latch()
            let release = Latch()
            doomed.subscribe(topic) { _ in
                entered.arrive()
                release.wait()
                return .ack
            }
            try doomed.publish(message("job"))
            try doomed.publish(message("next"))
            try doomed.start()
            #expect(entered.wait(timeout: .seconds(20)))
            // From now on the first replica writes nothing: no renewals, no outcome, as if killed with -9.
            doomedPool.close()

            let survivor = harness.makeBroker(timings)
            let seen = Recorder<Seen>()
            survivor.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                return .ack
            }
            try survivor.start()
            #expect(await eventually { seen.count == 2 })
            #expect(seen.values == [Seen(id: "job", attempt: 2), Seen(id: "next", attempt: 1)])
            release.arrive()
            // The handler saw "next" before the worker wrote its ack: wait for that commit.
            #expect(try await eventually {
                try survivor.stats(topic) == TopicStats(topic: topic, backlog: 0, inFlight: 0, deadLetters: 0, oldestPendingAgeSeconds: nil)
            })
        }
    }

    @Test("the state a killed replica leaves behind (a live lease, a delivery in flight) is recovered")
    func killedReplicaStateRecovered() async throws {
        try await withHarness { harness in
            let connection = try harness.connect()
            defer { connection.close() }
            try connection.execute(
                """
                INSERT INTO topic_replicas (replica_id, heartbeat_at, started_at)
                VALUES ('ghost', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))
                """)
            try connection.execute(
                """
                INSERT INTO topic_partitions (topic, partition_key, owner, lease_expires_at)
                VALUES (\(topic.rawValue), 'q', 'ghost', UTC_TIMESTAMP(6) + INTERVAL 1 SECOND)
                """)
            try insertBegunDelivery(on: connection, key: "q", id: "in-flight", attempts: 1, visibleInSeconds: 1, token: 42)
            let survivor = harness.makeBroker(fastConfiguration(lease: .seconds(1), visibility: .seconds(1)))
            try survivor.publish(message("after"))
            let before = try survivor.stats(topic)
            #expect(before.inFlight == 1)
            #expect(before.backlog == 1)

            let seen = Recorder<Seen>()
            survivor.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                return .ack
            }
            try survivor.start()
            #expect(await eventually { seen.count == 2 })
            #expect(seen.values == [Seen(id: "in-flight", attempt: 2), Seen(id: "after", attempt: 1)])
            // The ghost's lease moved (and, the partition being empty now, may since have been released).
            #expect(try leaseCounts(harness)["ghost"] == nil)
        }
    }

    @Test("a message whose consumers died on every one of its maxAttempts deliveries is dead-lettered, not delivered again; the partition goes on")
    func deliveriesWithoutOutcomeDeadLetter() async throws {
        try await withHarness { harness in
            let connection = try harness.connect()
            defer { connection.close() }
            // Three deliveries began and none ended, as left by consumers killed in each (a poison message
            // that crashes its consumer); the last one's visibility has run out.
            try insertBegunDelivery(on: connection, key: "q", id: "poison", attempts: 3, visibleInSeconds: -1, token: 42)
            try insertBegunDelivery(on: connection, key: "r", id: "survivor", attempts: 2, visibleInSeconds: -1, token: 43)
            let broker = harness.makeBroker(fastConfiguration(maxAttempts: 3))
            try broker.publish(message("after"))
            let seen = Recorder<Seen>()
            broker.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                return .ack
            }
            try broker.start()
            #expect(await eventually { seen.count == 2 })
            #expect(Set(seen.values.map(\.id)) == ["survivor", "after"])
            #expect(seen.values.first { $0.id == "survivor" }?.attempt == 3)
            let dead = try broker.deadLetters(topic, limit: 10)
            #expect(dead.map(\.message.id) == ["poison"])
            #expect(dead.first?.attempts == 3)
            #expect(dead.first?.reason.contains("without an outcome") == true)
            #expect(try await eventually {
                try broker.stats(topic) == TopicStats(topic: topic, backlog: 0, inFlight: 0, deadLetters: 1, oldestPendingAgeSeconds: nil)
            })
        }
    }

    @Test("a handler hung past maxHandlingTime gives up its partition; another replica redelivers; the late outcome is dropped")
    func hungHandlerIsRedelivered() async throws {
        try await withHarness { harness in
            var timings = fastConfiguration(lease: .seconds(1), visibility: .seconds(1))
            timings.maxHandlingTime = .milliseconds(300)
            let hung = harness.makeBroker(timings)
            let entered = Latch()
            let release = Latch()
            hung.subscribe(topic) { _ in
                entered.arrive()
                release.wait()
                return .reject(reason: "too late")
            }
            try hung.publish(message("job"))
            try hung.start()
            #expect(entered.wait(timeout: .seconds(20)))

            let healthy = harness.makeBroker(timings)
            let seen = Recorder<Seen>()
            healthy.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                return .ack
            }
            try healthy.start()
            #expect(await eventually { seen.count == 1 })
            #expect(seen.values == [Seen(id: "job", attempt: 2)])

            release.arrive()
            hung.shutdown()
            #expect(try healthy.deadLetters(topic, limit: 10).isEmpty)
            // The healthy handler ran before its worker wrote the ack: wait for that commit.
            #expect(try await eventually {
                try healthy.stats(topic) == TopicStats(topic: topic, backlog: 0, inFlight: 0, deadLetters: 0, oldestPendingAgeSeconds: nil)
            })
            #expect(entered.arrivals == 1)
        }
    }

    @Test("the warning that a handler ran past maxHandlingTime names the message it is handling")
    func hungHandlerWarningNamesTheMessage() async throws {
        try await withHarness { harness in
            var timings = fastConfiguration(lease: .seconds(1), visibility: .seconds(1))
            timings.maxHandlingTime = .milliseconds(300)
            let lines = Recorder<String>()
            let hung = MySQLBroker(pool: harness.makePool(), configuration: timings, logger: recordingLogger(lines, level: .warning))
            defer { hung.shutdown() }
            let entered = Latch()
            let release = Latch()
            defer { release.arrive() }
            hung.subscribe(topic) { _ in
                entered.arrive()
                release.wait()
                return .ack
            }
            try hung.publish(message("job-7"))
            try hung.start()
            #expect(entered.wait(timeout: .seconds(20)))
            #expect(await eventually { lines.values.contains { $0.hasPrefix("a handler ran past maxHandlingTime") } })
            let warning = lines.values.first { $0.hasPrefix("a handler ran past maxHandlingTime") }
            #expect(warning?.contains(" messagequeue.message_id=job-7") == true, "\(lines.values)")
        }
    }

    @Test("a handler still running while its broker shuts down keeps its lease and visibility: no other replica redelivers it, its ack is recorded, and idle partitions move at once")
    func shutdownRenewsInFlight() async throws {
        try await withHarness { harness in
            let timings = fastConfiguration(lease: .seconds(1), visibility: .seconds(1))
            let stopping = harness.makeBroker(timings)
            let entered = Latch()
            let release = Latch()
            // Opened however the test ends, so the shutdown never waits on a blocked handler.
            defer { release.arrive() }
            let idleKeys = ["idle-1", "idle-2", "idle-3"]
            let postponed = Recorder<String>()
            stopping.subscribe(topic) { delivery in
                guard delivery.message.id == "job" else {
                    postponed.append(delivery.message.partitionKey)
                    return .postpone(.milliseconds(100))
                }
                entered.arrive()
                release.wait()
                return .ack
            }
            try stopping.publish(message("job"))
            for key in idleKeys { try stopping.publish(message("later-\(key)", key: key)) }
            try stopping.start()
            #expect(entered.wait(timeout: .seconds(20)))
            #expect(await eventually { Set(postponed.values) == Set(idleKeys) })
            let token = try #require(harness.query("SELECT delivery_token FROM topic_messages WHERE message_id = 'job'").first?.uint64(0))
            let begun = try #require(harness.query("SELECT CAST(UTC_TIMESTAMP(6) AS CHAR)").first?.string(0))

            let stopped = Latch()
            Thread {
                stopping.shutdown()
                stopped.arrive()
            }.start()
            // start() throws once the shutdown has begun.
            #expect(await eventually { (try? stopping.start()) == nil })

            let other = harness.makeBroker(timings)
            let seen = Recorder<Seen>()
            // Postponed, the idle partitions keep their work, so no share shrinks as they drain.
            other.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                return delivery.message.id.hasPrefix("later-") ? .postpone(.milliseconds(100)) : .ack
            }
            try other.start()
            // The partitions the stopping broker holds but is not delivering move while the handler runs on, all
            // of them: the stopping broker no longer counts as a live replica taking a share.
            #expect(await eventually { Set(seen.values.map(\.id).filter { $0.hasPrefix("later-") }) == Set(idleKeys.map { "later-\($0)" }) })
            // Well past the 1 s lease and visibility, the delivery is still the stopping broker's and hidden.
            #expect(
                try await eventually(timeout: .seconds(10)) {
                    try !harness.query(
                        """
                        SELECT 1 FROM topic_messages
                        WHERE message_id = 'job' AND state = 'pending' AND delivery_token = \(token)
                          AND available_at > CAST(\(begun) AS DATETIME(6)) + INTERVAL 3 SECOND
                        """
                    ).isEmpty
                })
            #expect(!seen.values.contains { $0.id == "job" })
            #expect(!stopped.wait(timeout: .zero))

            release.arrive()
            #expect(stopped.wait(timeout: .seconds(20)))
            let job = try harness.query("SELECT state, attempts FROM topic_messages WHERE message_id = 'job'").first
            #expect(job?.string(0) == "acked")
            #expect(job?.int64(1) == 1)
            #expect(!seen.values.contains { $0.id == "job" })
        }
    }

    @Test("replicas on 20 partitions handle every message, in order per partition, never two at once", arguments: [2, 3])
    func replicasShareWithoutOverlap(_ replicaCount: Int) async throws {
        try await withHarness { harness in
            let timings = fastConfiguration(lease: .milliseconds(1500), visibility: .milliseconds(1500))
            let handled = Recorder<Handling>()
            let keys = (0..<20).map { "queue-\($0)" }
            let rounds = 8
            let publisher = harness.makeBroker(timings)
            var replicas: [MySQLBroker] = []
            for index in 0..<replicaCount {
                let replica = harness.makeBroker(timings)
                replica.subscribe(topic) { delivery in
                    let started = ContinuousClock.now
                    Thread.sleep(forTimeInterval: 0.01)
                    handled.append(
                        Handling(
                            replica: index, key: delivery.message.partitionKey, id: delivery.message.id, started: started,
                            ended: .now))
                    return .ack
                }
                replicas.append(replica)
            }
            // Replicas join while messages keep arriving, so leases move between them during the run.
            for round in 0..<rounds {
                if round % 3 == 0, round / 3 < replicaCount { try replicas[round / 3].start() }
                for key in keys { try publisher.publish(message("\(key)-\(round)", key: key)) }
                try await Task.sleep(for: .milliseconds(150))
            }
            for replica in replicas { try replica.start() }
            let total = keys.count * rounds
            #expect(await eventually(timeout: .seconds(60)) { Set(handled.values.map(\.id)).count == total })

            let byKey = Dictionary(grouping: handled.values, by: \.key)
            for key in keys {
                let runs = (byKey[key] ?? []).sorted { $0.started < $1.started }
                var firstSeen: [String] = []
                for run in runs where !firstSeen.contains(run.id) { firstSeen.append(run.id) }
                #expect(firstSeen == (0..<rounds).map { "\(key)-\($0)" }, "partition \(key) out of order")
                for (earlier, later) in zip(runs, runs.dropFirst()) {
                    #expect(earlier.ended <= later.started, "partition \(key) handled by \(earlier.replica) and \(later.replica) at once")
                }
            }
            for replica in replicas {
                #expect(try await eventually { try replica.stats(topic).backlog == 0 && replica.stats(topic).inFlight == 0 })
            }
        }
    }

    @Test("leases are shared fairly, rebalance when a replica joins or leaves, and a dead replica's leases move")
    func leasesRebalance() async throws {
        try await withHarness { harness in
            let timings = fastConfiguration(lease: .seconds(1), visibility: .seconds(1))
            let keys = (0..<20).map { "queue-\($0)" }
            let publisher = harness.makeBroker(timings)
            for key in keys { try publisher.publish(message("never-done-\(key)", key: key)) }
            // Every partition keeps work: the message is postponed forever, so fair shares stay on 20 partitions.
            func replica(_ pool: MySQLPool? = nil) -> MySQLBroker {
                let broker = harness.makeBroker(timings, pool: pool)
                broker.subscribe(topic) { _ in .postpone(.milliseconds(100)) }
                return broker
            }
            let first = replica()
            try first.start()
            #expect(try await eventually { try leaseCounts(harness) == [first.replicaID: 20] })

            let secondPool = harness.makePool()
            let second = replica(secondPool)
            try second.start()
            #expect(try await eventually { try leaseCounts(harness) == [first.replicaID: 10, second.replicaID: 10] })

            let third = replica()
            try third.start()
            #expect(
                try await eventually {
                    let counts = try leaseCounts(harness)
                    return counts.count == 3 && counts.values.reduce(0, +) == 20 && counts.values.allSatisfy { $0 <= 7 }
                })

            third.shutdown()
            #expect(try await eventually { try leaseCounts(harness) == [first.replicaID: 10, second.replicaID: 10] })

            // The second replica dies without a word: its leases expire and move to the first.
            secondPool.close()
            #expect(try await eventually { try leaseCounts(harness) == [first.replicaID: 20] })
        }
    }

    @Test("a lease a replica still holds in the database but no longer owns (its release failed) is given up for another replica")
    func strayLeaseIsReleased() async throws {
        try await withHarness { harness in
            let timings = fastConfiguration(lease: .seconds(1), visibility: .seconds(1))
            let handled = Recorder<Handling>()
            let entered = Latch()
            let gate = Latch()
            // Opened however the test ends, so shutting the brokers down never waits on a blocked handler.
            defer { gate.arrive() }
            func replica(_ index: Int) -> MySQLBroker {
                let broker = harness.makeBroker(timings)
                broker.subscribe(topic) { delivery in
                    let started = ContinuousClock.now
                    if delivery.message.partitionKey == "p1" {
                        entered.arrive()
                        gate.wait()
                    }
                    handled.append(
                        Handling(
                            replica: index, key: delivery.message.partitionKey, id: delivery.message.id, started: started,
                            ended: .now))
                    return .ack
                }
                return broker
            }
            // The first replica holds p1 and is delivering it: with two live replicas and two partitions with
            // work, that is its whole fair share.
            let first = replica(0)
            try first.publish(message("held", key: "p1"))
            try first.start()
            #expect(entered.wait(timeout: .seconds(20)))
            let second = replica(1)
            try second.start()
            // The first replica's heartbeat after the second one started: its live count is 2 from now on.
            #expect(
                try await eventually {
                    try !harness.query(
                        """
                        SELECT 1 FROM topic_replicas a JOIN topic_replicas b ON b.replica_id = \(second.replicaID)
                        WHERE a.replica_id = \(first.replicaID) AND a.heartbeat_at > b.started_at
                        """
                    ).isEmpty
                })

            // p2's lease names the first replica, which does not own it: as left by a release that failed.
            let connection = try harness.connect()
            defer { connection.close() }
            try connection.execute(
                """
                INSERT INTO topic_partitions (topic, partition_key, owner, lease_expires_at)
                VALUES (\(topic.rawValue), 'p2', \(first.replicaID), UTC_TIMESTAMP(6) + INTERVAL 1 HOUR)
                ON DUPLICATE KEY UPDATE owner = VALUES(owner), lease_expires_at = VALUES(lease_expires_at)
                """)
            try first.publish(message("stray", key: "p2"))
            #expect(await eventually(timeout: .seconds(10)) { handled.values.contains { $0.id == "stray" } })
            #expect(handled.values.map(\.replica) == [1])

            gate.arrive()
            #expect(
                try await eventually {
                    try first.stats(topic) == TopicStats(topic: topic, backlog: 0, inFlight: 0, deadLetters: 0, oldestPendingAgeSeconds: nil)
                })
            #expect(Set(handled.values.map(\.id)) == ["held", "stray"])
            first.shutdown()
            second.shutdown()
        }
    }
}

/// Inserts a pending message of `topic` whose delivery began (`attempts` counted, `token` handed out) and whose
/// visibility ends `visibleInSeconds` from now (negative: it has run out), as a consumer that died leaves it.
private func insertBegunDelivery(
    on connection: MySQLConnection, key: String, id: String, attempts: Int, visibleInSeconds: Int, token: UInt64
) throws {
    try connection.execute(
        """
        INSERT INTO topic_messages
            (topic, partition_key, message_id, payload, state, attempts, available_at, delivery_token, enqueued_at)
        VALUES (\(topic.rawValue), \(key), \(id), '', 'pending', \(attempts),
                UTC_TIMESTAMP(6) + INTERVAL \(visibleInSeconds) SECOND, \(token), UTC_TIMESTAMP(6))
        """)
}
