import Domain
import MetricsTestKit
import MySQLBackend
import MySQLClient
import TestSupport
import Testing

@Suite("MySQLBroker metrics", .enabled(if: LiveDatabase.shouldRun))
struct MetricsTests {
    @Test("publishes, deliveries and outcomes are counted per topic; gauges report backlog, dead letters and leases")
    func countersAndGauges() async throws {
        try await withHarness { harness in
            let metrics = TestMetrics()
            var configuration = fastConfiguration(maxAttempts: 2, lease: .milliseconds(600), visibility: .milliseconds(600))
            configuration.retryPolicy = RetryPolicy(maxAttempts: 2, backoffBase: .milliseconds(2), backoffCap: .milliseconds(4))
            let broker = MySQLBroker(
                pool: harness.makePool(), configuration: configuration, logger: quietLogger, metricsFactory: metrics)
            defer { broker.shutdown() }
            broker.subscribe(topic) { delivery in
                switch delivery.message.id {
                case "fails": return .retry(reason: "always")
                case "bad": return .reject(reason: "never")
                default: return .ack
                }
            }
            try broker.publish(message("ok"))
            try broker.publish(message("ok"))
            try broker.publish(message("fails", key: "other"))
            try broker.publish(message("bad", key: "third"))
            try broker.start()
            #expect(try await eventually { try broker.stats(topic).deadLetters == 2 })

            let dimensions = [("topic", topic.rawValue)]
            func total(_ name: String) -> Int64? { try? metrics.expectCounter(name, dimensions).totalValue }
            // An outcome is counted once its write commits, so stats on another connection can see the
            // dead letter a moment before the worker thread counts it.
            #expect(await eventually {
                total("stovepipe_topic_dead_lettered_total") == 2 && total("stovepipe_topic_acked_total") == 1
            })
            #expect(total("stovepipe_topic_published_total") == 3)
            #expect(total("stovepipe_topic_delivered_total") == 4)
            #expect(total("stovepipe_topic_acked_total") == 1)
            #expect(total("stovepipe_topic_retried_total") == 1)
            #expect(total("stovepipe_topic_dead_lettered_total") == 2)
            #expect(total("stovepipe_topic_redriven_total") == 0)
            #expect(total("stovepipe_topic_postponed_total") == 0)
            // A dead letter comes back by an operator's redrive, or by being published again.
            try broker.redrive(topic, messageID: "fails")
            try broker.publish(message("bad", key: "third"))
            #expect(total("stovepipe_topic_redriven_total") == 2)
            #expect(total("stovepipe_topic_published_total") == 3, "a re-drive is not a new message")
            #expect(await eventually { total("stovepipe_topic_dead_lettered_total") == 4 })
            // Gauges are refreshed by the heartbeat, a third of the lease.
            #expect(await eventually { (try? metrics.expectGauge("stovepipe_topic_dead_letters", dimensions).lastValue) == 2 })
            #expect(await eventually { (try? metrics.expectGauge("stovepipe_topic_backlog", dimensions).lastValue) == 0 })
            // One refresh records the gauges one after another: the last may come a moment after the ones above.
            #expect(await eventually {
                (try? metrics.expectGauge("stovepipe_topic_oldest_pending_age_seconds", dimensions).lastValue) != nil
            })
            #expect(await eventually { (try? metrics.expectGauge("stovepipe_topic_leases", dimensions).lastValue) != nil })
        }
    }

    @Test("the warning that says a message was dead-lettered names the message, whether its handler gave up or its consumer died")
    func deadLetterLinesNameTheMessage() async throws {
        try await withHarness { harness in
            let lines = Recorder<String>()
            let configuration = fastConfiguration(maxAttempts: 1)
            // A warning: the message is given up until an operator re-drives it, which a log kept at warning must show.
            let broker = MySQLBroker(
                pool: harness.makePool(), configuration: configuration, logger: recordingLogger(lines, level: .warning))
            defer { broker.shutdown() }
            broker.subscribe(topic) { _ in .reject(reason: "never") }
            try broker.publish(message("bad-1"))
            // Its only attempt began and recorded no outcome, as when its consumer dies: dead-lettered undelivered.
            try broker.publish(message("orphan-2", key: "other"))
            let arranger = try harness.connect()
            defer { arranger.close() }
            try arranger.execute("UPDATE topic_messages SET attempts = 1 WHERE message_id = 'orphan-2'")
            try broker.start()
            #expect(try await eventually { try broker.stats(topic).deadLetters == 2 })
            #expect(await eventually { lines.values.filter { $0.hasPrefix("message dead-lettered") }.count == 2 })
            let deadLettered = lines.values.filter { $0.hasPrefix("message dead-lettered") }
            #expect(deadLettered.contains { $0.contains(" messagequeue.message_id=bad-1") }, "\(deadLettered)")
            #expect(deadLettered.contains { $0.contains(" messagequeue.message_id=orphan-2") }, "\(deadLettered)")
        }
    }
}
