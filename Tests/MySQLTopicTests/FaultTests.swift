import Domain
import Foundation
import MetricsTestKit
import MySQLBackend
import MySQLClient
import TestSupport
import Testing

@Suite("MySQLBroker under injected faults", .enabled(if: LiveDatabase.shouldRun))
struct FaultTests {
    @Test("a row lock that stalls a replica's heartbeat does not let another replica redeliver the message it is handling")
    func stalledHeartbeatKeepsDeliveryHidden() async throws {
        try await withHarness { harness in
            // The ratios of the defaults (15 s lease and visibility, 5 s lock wait), scaled down.
            let timings = fastConfiguration(lease: .seconds(3), visibility: .seconds(3))
            let stalled = harness.makeBroker(timings, pool: harness.makePool(lockWaitSeconds: 1))
            let entered = Latch()
            let release = Latch()
            defer { release.arrive() }
            stalled.subscribe(topic) { _ in
                entered.arrive()
                release.wait()
                return .ack
            }
            try stalled.publish(message("job"))
            try stalled.start()
            #expect(entered.wait(timeout: .seconds(20)))
            let token = try #require(harness.query("SELECT delivery_token FROM topic_messages WHERE message_id = 'job'").first?.uint64(0))

            // Another session holds the stalled replica's row, as a long transaction or a stuck operator session
            // would: each heartbeat waits for it and fails with 1205, three times in a row (about 3 s).
            let holder = try harness.connect()
            defer { holder.close() }
            try holder.execute("START TRANSACTION")
            _ = try holder.query("SELECT replica_id FROM topic_replicas WHERE replica_id = \(stalled.replicaID) FOR UPDATE")
            let begun = try #require(holder.query("SELECT CAST(UTC_TIMESTAMP(6) AS CHAR)").first?.string(0))

            let other = harness.makeBroker(timings)
            let seen = Recorder<Seen>()
            other.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                return .ack
            }
            try other.start()
            // Well past two lease and visibility periods, the delivery is still the stalled replica's and hidden.
            let observer = try harness.connect()
            defer { observer.close() }
            #expect(
                try await eventually {
                    try !observer.query("SELECT 1 FROM DUAL WHERE UTC_TIMESTAMP(6) > CAST(\(begun) AS DATETIME(6)) + INTERVAL 8 SECOND")
                        .isEmpty
                })
            #expect(!seen.values.contains { $0.id == "job" })
            let job = try observer.query("SELECT state, delivery_token FROM topic_messages WHERE message_id = 'job'").first
            #expect(job?.string(0) == "pending")
            #expect(job?.uint64(1) == token)

            try holder.execute("ROLLBACK")
            release.arrive()
            #expect(
                try await eventually {
                    try observer.query("SELECT state FROM topic_messages WHERE message_id = 'job'").first?.string(0) == "acked"
                })
            #expect(!seen.values.contains { $0.id == "job" })
        }
    }

    @Test("the connection writing a dead-letter outcome is killed while it waits for a row lock: the outcome is written and counted once")
    func killedOutcomeWrite() async throws {
        try await withHarness { harness in
            let metrics = TestMetrics()
            let broker = MySQLBroker(
                pool: harness.makePool(), configuration: fastConfiguration(), logger: quietLogger, metricsFactory: metrics)
            defer { broker.shutdown() }
            let entered = Latch()
            let release = Latch()
            defer { release.arrive() }
            broker.subscribe(topic) { _ in
                entered.arrive()
                release.wait()
                return .reject(reason: "never")
            }
            let doomed = message("doomed")
            try broker.publish(doomed)
            try broker.start()
            #expect(entered.wait(timeout: .seconds(20)))

            let holder = try harness.connect()
            defer { holder.close() }
            try holder.execute("START TRANSACTION")
            _ = try holder.query("SELECT seq FROM topic_messages WHERE message_id = 'doomed' FOR UPDATE")
            release.arrive()
            // The outcome's UPDATE waits for the holder's lock: kill its connection from the server.
            func writer() throws -> UInt64? {
                try holder.query(
                    """
                    SELECT id FROM information_schema.processlist
                    WHERE db = DATABASE() AND info LIKE \("%SET state = %, last_error = %")
                    """
                ).first?.uint64(0)
            }
            var victim: UInt64?
            #expect(
                try await eventually {
                    victim = try writer()
                    return victim != nil
                })
            let killed = try #require(victim)
            try holder.execute(MySQLQuery(unsafeSQL: "KILL \(killed)"))
            // The write is tried again on a new connection, which waits for the lock in turn.
            #expect(try await eventually { try writer().map { $0 != killed } ?? false })
            try holder.execute("ROLLBACK")

            #expect(try await eventually { try broker.deadLetters(topic, limit: 10) == [DeadLetter(message: doomed, attempts: 1, reason: "never")] })
            let dimensions = [("topic", topic.rawValue)]
            #expect(await eventually { (try? metrics.expectCounter("stovepipe_topic_dead_lettered_total", dimensions).totalValue) == 1 })
            #expect(try broker.stats(topic) == TopicStats(topic: topic, backlog: 0, inFlight: 0, deadLetters: 1, oldestPendingAgeSeconds: nil))
            #expect(entered.arrivals == 1)
        }
    }

    /// An outcome whose OK is lost: what its write leaves, and how to find that write waiting in the process list.
    struct LostOK: Sendable, CustomTestStringConvertible {
        var outcome: DeliveryOutcome
        var counter: String
        /// The row's state at the end; a retried message is delivered again, and acked then.
        var state: String
        var deliveries: Int
        /// A LIKE pattern for the outcome's UPDATE, and for no other statement the delivery runs.
        var statement: String
        var testDescription: String { "\(outcome)" }
    }

    @Test(
        "an outcome whose OK is lost after it commits (the read times out while the write waits for a row lock) is counted once, not dropped as redelivered",
        arguments: [
            LostOK(outcome: .ack, counter: "stovepipe_topic_acked_total", state: "acked", deliveries: 1, statement: "%SET state = %finished_at%"),
            LostOK(
                outcome: .reject(reason: "never"), counter: "stovepipe_topic_dead_lettered_total", state: "dead", deliveries: 1,
                statement: "%SET state = %finished_at%"),
            LostOK(
                outcome: .retry(reason: "later"), counter: "stovepipe_topic_retried_total", state: "acked", deliveries: 2,
                statement: "%last_error = %available_at = %"),
            LostOK(
                outcome: .postpone(.seconds(3600)), counter: "stovepipe_topic_postponed_total", state: "pending", deliveries: 1,
                statement: "%GREATEST(attempts, 1) - 1%"),
        ])
    func outcomeCommittedButItsOKLost(_ lost: LostOK) async throws {
        try await withHarness { harness in
            let metrics = TestMetrics()
            let lines = Recorder<String>()
            // The client gives up on a read after 1 s; the server keeps waiting for the row lock (30 s) and then commits.
            let broker = MySQLBroker(
                pool: harness.makePool(lockWaitSeconds: 30, readTimeoutSeconds: 1), configuration: fastConfiguration(),
                logger: recordingLogger(lines), metricsFactory: metrics)
            defer { broker.shutdown() }
            let entered = Latch()
            let release = Latch()
            defer { release.arrive() }
            broker.subscribe(topic) { delivery in
                entered.arrive()
                release.wait()
                return delivery.attempt == 1 ? lost.outcome : .ack
            }
            try broker.publish(message("job"))
            try broker.start()
            #expect(entered.wait(timeout: .seconds(20)))

            let holder = try harness.connect()
            defer { holder.close() }
            try holder.execute("START TRANSACTION")
            _ = try holder.query("SELECT seq FROM topic_messages WHERE message_id = 'job' FOR UPDATE")
            release.arrive()
            // The first write's client times out and the write is tried again: two of them wait for the lock, and the
            // first, orphaned on the server, commits once the lock is released; its OK goes to a closed connection.
            #expect(
                try await eventually {
                    try holder.query(
                        """
                        SELECT COUNT(*) FROM information_schema.processlist
                        WHERE db = DATABASE() AND id <> CONNECTION_ID() AND info LIKE \(lost.statement)
                        """
                    ).first?.uint64(0) ?? 0 >= 2
                })
            try holder.execute("ROLLBACK")

            let observer = try harness.connect()
            defer { observer.close() }
            #expect(
                try await eventually {
                    try observer.query("SELECT state FROM topic_messages WHERE message_id = 'job'").first?.string(0) == lost.state
                })
            let dimensions = [("topic", topic.rawValue)]
            #expect(await eventually { (try? metrics.expectCounter(lost.counter, dimensions).totalValue) == 1 })
            #expect(!lines.values.contains { $0.hasPrefix("delivery outcome dropped") })
            #expect(entered.arrivals == lost.deliveries)
            // A postponed row keeps the delivery's token, yet waits: it is not in flight.
            let stats = try broker.stats(topic)
            #expect((stats.backlog, stats.inFlight) == (lost.state == "pending" ? 1 : 0, 0))
        }
    }

    @Test("a message dead-lettered for its used-up attempts whose OK is lost after it commits is counted and logged once")
    func exhaustedDeadLetterCommittedButItsOKLost() async throws {
        try await withHarness { harness in
            let metrics = TestMetrics()
            let lines = Recorder<String>()
            let broker = MySQLBroker(
                pool: harness.makePool(lockWaitSeconds: 30, readTimeoutSeconds: 1), configuration: fastConfiguration(maxAttempts: 3),
                logger: recordingLogger(lines), metricsFactory: metrics)
            defer { broker.shutdown() }
            let entered = Latch()
            broker.subscribe(topic) { _ in
                entered.arrive()
                return .ack
            }
            try broker.publish(message("job"))
            // Its last allowed attempt began and never recorded an outcome.
            _ = try harness.query("UPDATE topic_messages SET attempts = 3 WHERE message_id = 'job'")

            let holder = try harness.connect()
            defer { holder.close() }
            try holder.execute("START TRANSACTION")
            _ = try holder.query("SELECT seq FROM topic_messages WHERE message_id = 'job' FOR UPDATE")
            try broker.start()
            // The dead letter's client times out and it is tried again: two wait for the lock, and the first, orphaned
            // on the server, commits once the lock is released; its OK goes to a closed connection.
            #expect(
                try await eventually {
                    try holder.query(
                        """
                        SELECT COUNT(*) FROM information_schema.processlist
                        WHERE db = DATABASE() AND id <> CONNECTION_ID() AND info LIKE \("%SET m.state = %")
                        """
                    ).first?.uint64(0) ?? 0 >= 2
                })
            try holder.execute("ROLLBACK")

            #expect(try await eventually { try broker.stats(topic).deadLetters == 1 })
            let dimensions = [("topic", topic.rawValue)]
            #expect(await eventually { (try? metrics.expectCounter("stovepipe_topic_dead_lettered_total", dimensions).totalValue) == 1 })
            #expect(await eventually { lines.values.contains { $0.hasPrefix("message dead-lettered: its last allowed attempt") } })
            #expect(lines.values.filter { $0.hasPrefix("message dead-lettered") }.count == 1, "\(lines.values)")
            #expect(entered.arrivals == 0)
        }
    }
}
