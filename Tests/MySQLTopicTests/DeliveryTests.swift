import Domain
import Foundation
import MySQLBackend
import MySQLClient
import TestSupport
import Testing

/// A delivery as the handler saw it.
struct Seen: Sendable, Equatable {
    let id: String
    let attempt: Int
}

@Suite("MySQLBroker delivery", .enabled(if: LiveDatabase.shouldRun))
struct DeliveryTests {
    @Test("a message whose insert commits after a later message was consumed is still delivered")
    func outOfOrderCommit() async throws {
        try await withHarness { harness in
            let broker = harness.makeBroker(fastConfiguration())
            let seen = Recorder<String>()
            broker.subscribe(topic) { delivery in
                seen.append(delivery.message.id)
                return .ack
            }
            try broker.start()

            // The first publish takes its AUTO_INCREMENT seq, then its transaction stays open.
            let inserted = Latch()
            let commit = Latch()
            let publisher = harness.makeBroker(fastConfiguration())
            let held = Recorder<Bool>()
            Thread {
                let outcome = Result {
                    let holder = try harness.connect()
                    defer { holder.close() }
                    try holder.withTransaction { connection in
                        try publisher.publish(message("early"), on: connection)
                        inserted.arrive()
                        commit.wait()
                    }
                }
                held.append((try? outcome.get()) != nil)
            }.start()
            #expect(inserted.wait(timeout: .seconds(20)))

            try broker.publish(message("late"))
            #expect(await eventually { seen.values.contains("late") })
            #expect(!seen.values.contains("early"))

            commit.arrive()
            #expect(await eventually { held.count == 1 })
            #expect(held.values == [true])
            #expect(await eventually { seen.values.contains("early") })
            #expect(seen.values == ["late", "early"])

            // The early message really has the smaller id: a high-water mark would have skipped it.
            let rows = try harness.query("SELECT message_id FROM topic_messages ORDER BY seq")
            #expect(rows.compactMap { $0.string(0) } == ["early", "late"])
        }
    }

    @Test("a handler that fails twice then succeeds sees its attempts spaced by at least the backoff")
    func backoffSpacing() async throws {
        try await withHarness { harness in
            var configuration = fastConfiguration()
            let policy = RetryPolicy(maxAttempts: 5, backoffBase: .milliseconds(300), backoffCap: .seconds(5))
            configuration.retryPolicy = policy
            let broker = harness.makeBroker(configuration)
            let starts = Recorder<ContinuousClock.Instant>()
            broker.subscribe(topic) { delivery in
                starts.append(.now)
                return delivery.attempt < 3 ? .retry(reason: "not yet \(delivery.attempt)") : .ack
            }
            try broker.publish(message("flaky"))
            try broker.start()
            #expect(await eventually { starts.count == 3 })
            let times = starts.values
            // Equal jitter: the wait after attempt n is at least half of base * 2^(n-1).
            #expect(times[1] - times[0] >= policy.backoff(afterAttempt: 1, random: 0))
            #expect(times[2] - times[1] >= policy.backoff(afterAttempt: 2, random: 0))
            #expect(try await eventually { try broker.stats(topic) == TopicStats(topic: topic, backlog: 0, inFlight: 0, deadLetters: 0, oldestPendingAgeSeconds: nil) })
            #expect(starts.count == 3)
        }
    }

    @Test("a handler that always fails ends in the dead-letter set with its last error and attempt count")
    func alwaysFailingDeadLetters() async throws {
        try await withHarness { harness in
            let broker = harness.makeBroker(fastConfiguration(maxAttempts: 4))
            let seen = Recorder<Seen>()
            broker.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                return .retry(reason: "boom \(delivery.attempt)")
            }
            let doomed = message("doomed", payload: "{\"id\":1}")
            try broker.publish(doomed)
            try broker.start()
            #expect(try await eventually { try broker.deadLetters(topic, limit: 10).count == 1 })
            #expect(try broker.deadLetters(topic, limit: 10) == [DeadLetter(message: doomed, attempts: 4, reason: "boom 4")])
            #expect(seen.values.map(\.attempt) == [1, 2, 3, 4])
            #expect(try broker.stats(topic).deadLetters == 1)
            let rows = try harness.query("SELECT state, last_error FROM topic_messages")
            #expect(rows.first?.string(0) == "dead")
            #expect(rows.first?.string(1) == "boom 4")
        }
    }

    @Test("a publish from this process wakes its consumer at once, without waiting for a poll")
    func localPublishWakesConsumer() async throws {
        try await withHarness { harness in
            // An hour-long poll: only the local wake-up can deliver these within the test's deadline.
            let broker = harness.makeBroker(fastConfiguration(poll: .seconds(3600)))
            let seen = Recorder<String>()
            broker.subscribe(topic) { delivery in
                seen.append(delivery.message.id)
                return .ack
            }
            // Published by another replica, so only the start-up poll delivers it: once it is handled that poll
            // has read the pending partitions, and later deliveries can only come from wake-ups.
            try harness.makeBroker(fastConfiguration()).publish(message("w1", key: "w"))
            try broker.start()
            #expect(await eventually { seen.values == ["w1"] })
            try broker.publish(message("a1", key: "a"))
            #expect(await eventually { seen.values == ["w1", "a1"] })
            try broker.publish(message("a2", key: "a"))
            #expect(await eventually { seen.values == ["w1", "a1", "a2"] })
            try broker.publish(message("b1", key: "b"))
            #expect(await eventually { seen.values == ["w1", "a1", "a2", "b1"] })
        }
    }

    @Test("a publish that re-drives a dead letter while naming another partition key wakes the dead letter's partition")
    func redrivingPublishWakesTheDeadLettersPartition() async throws {
        try await withHarness { harness in
            // A minute-long poll: only the local wake-up can deliver the re-driven message within the deadline below.
            let broker = harness.makeBroker(fastConfiguration(poll: .seconds(60)))
            let seen = Recorder<Seen>()
            let entered = Latch()
            let release = Latch()
            // Opened however the test ends, so the shutdown never waits on a blocked handler.
            defer { release.arrive() }
            broker.subscribe(topic) { delivery in
                if delivery.message.id == "hold" {
                    entered.arrive()
                    release.wait()
                    return .ack
                }
                let first = !seen.values.contains { $0.id == delivery.message.id }
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                return first ? .reject(reason: "not yet") : .ack
            }
            try broker.start()
            try broker.publish(message("doomed", key: "a"))
            #expect(try await eventually { try broker.deadLetters(topic, limit: 10).map(\.message.id) == ["doomed"] })
            // Partition "b" is this replica's and busy: a wake-up for it hands it to no worker and asks for no poll.
            try broker.publish(message("hold", key: "b"))
            #expect(entered.wait(timeout: .seconds(20)))

            try broker.publish(message("doomed", key: "b"))
            #expect(await eventually(timeout: .seconds(10)) { seen.values.count == 2 })
            #expect(seen.values == [Seen(id: "doomed", attempt: 1), Seen(id: "doomed", attempt: 1)])
            #expect(try broker.deadLetters(topic, limit: 10).isEmpty)
        }
    }

    @Test("a message published by another replica is picked up by the next poll")
    func remotePublishIsPolled() async throws {
        try await withHarness { harness in
            let consumer = harness.makeBroker(fastConfiguration(poll: .milliseconds(100)))
            let seen = Recorder<String>()
            consumer.subscribe(topic) { delivery in
                seen.append(delivery.message.id)
                return .ack
            }
            try consumer.start()
            let publisher = harness.makeBroker(fastConfiguration())
            for index in 1...5 { try publisher.publish(message("m\(index)")) }
            #expect(await eventually { seen.count == 5 })
            #expect(seen.values == ["m1", "m2", "m3", "m4", "m5"])
        }
    }

    @Test("publish is committed when it returns, and idempotent across replicas")
    func publishIsDurableAndIdempotent() async throws {
        try await withHarness { harness in
            let first = harness.makeBroker(fastConfiguration())
            let second = harness.makeBroker(fastConfiguration())
            try first.publish(message("once", payload: "first"))
            let rows = try harness.query("SELECT payload, state, attempts FROM topic_messages WHERE message_id = \("once")")
            #expect(rows.count == 1)
            #expect(rows.first?.bytes(0) == Array("first".utf8))
            #expect(rows.first?.string(1) == "pending")
            try second.publish(message("once", payload: "second"))
            let again = try harness.query("SELECT payload FROM topic_messages")
            #expect(again.compactMap { $0.bytes(0) } == [Array("first".utf8)])
            #expect(try first.stats(topic).backlog == 1)
        }
    }

    @Test("an acked id stays held (publishing it again is a no-op) until retention deletes it")
    func ackedRetention() async throws {
        try await withHarness { harness in
            let broker = harness.makeBroker(fastConfiguration())
            let seen = Recorder<String>()
            broker.subscribe(topic) { delivery in
                seen.append(delivery.message.id)
                return .ack
            }
            try broker.start()
            try broker.publish(message("job"))
            #expect(await eventually { seen.count == 1 })
            try broker.publish(message("job"))
            try broker.publish(message("sentinel"))
            #expect(await eventually { seen.count == 2 })
            #expect(seen.values == ["job", "sentinel"])
            // The handler saw the sentinel before the worker wrote its ack: wait for that commit.
            #expect(try await eventually {
                try harness.query("SELECT COUNT(*) FROM topic_messages WHERE state = \("acked")").first?.int64(0) == 2
            })
        }
    }

    @Test("a reject reason longer than TEXT holds is cut to fit in bytes, at a character boundary, and recorded at once")
    func longRejectReason() async throws {
        try await withHarness { harness in
            let broker = harness.makeBroker(fastConfiguration())
            // One grapheme of 25 UTF-8 bytes: 9,000 of them are 225,000 bytes, over TEXT's 65,535.
            let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466}"
            let reason = String(repeating: family, count: 9_000)
            broker.subscribe(topic) { _ in .reject(reason: reason) }
            try broker.publish(message("long"))
            try broker.start()
            #expect(try await eventually { try !broker.deadLetters(topic, limit: 1).isEmpty })
            let letter = try #require(try broker.deadLetters(topic, limit: 1).first)
            #expect(letter.attempts == 1, "the outcome was not written on the first attempt")
            #expect(!letter.reason.isEmpty && letter.reason.utf8.count <= 65_535)
            #expect(reason.hasPrefix(letter.reason) && letter.reason.count * family.utf8.count == letter.reason.utf8.count)
        }
    }

    @Test("acked messages past retention are deleted; dead letters are kept")
    func garbageCollection() async throws {
        try await withHarness { harness in
            var configuration = fastConfiguration()
            configuration.ackedRetention = .zero
            configuration.maintenanceInterval = .milliseconds(50)
            let broker = harness.makeBroker(configuration)
            broker.subscribe(topic) { delivery in delivery.message.id == "bad" ? .reject(reason: "no") : .ack }
            for index in 1...10 { try broker.publish(message("m\(index)", key: "k\(index % 3)")) }
            try broker.publish(message("bad"))
            try broker.start()
            // The acked rows can all be deleted while the worker of partition "q" has yet to write the reject,
            // so wait until the one row left is the dead letter.
            #expect(try await eventually {
                let rows = try harness.query("SELECT message_id, state FROM topic_messages")
                return rows.map { [$0.string(0), $0.string(1)] } == [["bad", "dead"]]
            })
            #expect(try broker.deadLetters(topic, limit: 10).map(\.message.id) == ["bad"])
        }
    }

    @Test("shutdown releases the leases and forgets the replica")
    func shutdownReleases() async throws {
        try await withHarness { harness in
            let broker = harness.makeBroker(fastConfiguration())
            let seen = Recorder<String>()
            broker.subscribe(topic) { delivery in
                seen.append(delivery.message.id)
                return .ack
            }
            try broker.start()
            for key in ["a", "b", "c"] { try broker.publish(message("m-\(key)", key: key)) }
            #expect(await eventually { seen.count == 3 })
            let replicas = try harness.query("SELECT replica_id FROM topic_replicas")
            #expect(replicas.compactMap { $0.string(0) } == [broker.replicaID])
            broker.shutdown()
            let owned = try harness.query("SELECT COUNT(*) FROM topic_partitions WHERE owner IS NOT NULL")
            #expect(owned.first?.int64(0) == 0)
            #expect(try harness.query("SELECT COUNT(*) FROM topic_replicas").first?.int64(0) == 0)
            #expect(throws: BackendError.self) { try broker.start() }
        }
    }

    @Test("connections killed under the consumer are replaced; every message is still delivered, in order")
    func killedConnectionsRecover() async throws {
        try await withHarness { harness in
            let broker = harness.makeBroker(fastConfiguration())
            let seen = Recorder<String>()
            broker.subscribe(topic) { delivery in
                Thread.sleep(forTimeInterval: 0.002)
                seen.append(delivery.message.id)
                return .ack
            }
            let ids = (1...60).map { "m\($0)" }
            for id in ids { try broker.publish(message(id)) }
            try broker.start()
            #expect(await eventually { seen.count >= 10 })
            let killer = try harness.connect()
            defer { killer.close() }
            let own = try #require(try killer.query("SELECT CONNECTION_ID()").first?.uint64(0))
            let victims = try killer.query(
                "SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> \(own)")
            for victim in victims.compactMap({ $0.uint64(0) }) {
                _ = try? killer.execute(MySQLQuery(unsafeSQL: "KILL \(victim)"))
            }
            #expect(await eventually { Set(seen.values).count == ids.count })
            var firstSeen: [String] = []
            for id in seen.values where !firstSeen.contains(id) { firstSeen.append(id) }
            #expect(firstSeen == ids)
        }
    }

    @Test("a database that cannot be reached is unavailable and retryable, and the error names no value")
    func unreachableDatabase() async throws {
        try await offPool {
            var configuration = try LiveDatabase.baseConfiguration()
            configuration.port = 1
            configuration.connectTimeoutSeconds = 2
            let pool = MySQLPool(connection: configuration, logger: quietLogger)
            defer { pool.close() }
            let broker = MySQLBroker(pool: pool, configuration: fastConfiguration(), logger: quietLogger)
            let error = try #require(throws: BackendError.self) { try broker.publish(message("secret-id-42")) }
            guard case .unavailable(let retryable, let detail) = error else {
                Issue.record("expected unavailable, got \(error)")
                return
            }
            #expect(retryable)
            #expect(!detail.contains("secret-id-42"))
            #expect(throws: BackendError.self) { try broker.start() }
        }
    }
}

@Suite("MySQLBroker schema", .enabled(if: LiveDatabase.shouldRun))
struct SchemaTests {
    @Test("the migrator creates the topic tables, and the broker works on a migrated database")
    func migratorCreatesTopicTables() async throws {
        try await offPool {
            let configuration = try TopicTestDatabase.create(withTopicTables: false)
            defer { TopicTestDatabase.drop(configuration) }
            let pool = MySQLPool(connection: configuration, logger: quietLogger)
            defer { pool.close() }
            let migrator = MySQLMigrator(pool: pool, logger: quietLogger)
            let applied = try migrator.migrate()
            #expect(applied.contains(100) && applied.contains(101) && applied.contains(102))
            try migrator.requireUpToDate()

            let broker = MySQLBroker(pool: pool, configuration: fastConfiguration(), logger: quietLogger)
            defer { broker.shutdown() }
            let seen = Recorder<String>()
            broker.subscribe(topic) { delivery in
                seen.append(delivery.message.id)
                return .ack
            }
            try broker.start()
            try broker.publish(message("migrated"))
            #expect(await eventually { seen.values == ["migrated"] })
        }
    }

    @Test("the schema statements can be applied twice")
    func schemaIsIdempotent() async throws {
        try await offPool {
            let configuration = try TopicTestDatabase.create()
            defer { TopicTestDatabase.drop(configuration) }
            let connection = try MySQLConnection(configuration: configuration)
            defer { connection.close() }
            for statement in MySQLBroker.schema { try connection.executeScript(unsafeSQL: statement) }
            let tables = try connection.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY table_name")
            #expect(tables.compactMap { $0.string(0) } == ["topic_messages", "topic_partitions", "topic_replicas"])
        }
    }
}
