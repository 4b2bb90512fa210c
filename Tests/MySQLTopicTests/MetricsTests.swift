import Domain
import MetricsTestKit
import MySQLBackend
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
            #expect(try metrics.expectCounter("stovepipe_topic_published_total", dimensions).totalValue == 3)
            #expect(try metrics.expectCounter("stovepipe_topic_delivered_total", dimensions).totalValue == 4)
            #expect(try metrics.expectCounter("stovepipe_topic_acked_total", dimensions).totalValue == 1)
            #expect(try metrics.expectCounter("stovepipe_topic_retried_total", dimensions).totalValue == 1)
            #expect(try metrics.expectCounter("stovepipe_topic_dead_lettered_total", dimensions).totalValue == 2)
            // Gauges are refreshed by the heartbeat, a third of the lease.
            #expect(await eventually { (try? metrics.expectGauge("stovepipe_topic_dead_letters", dimensions).lastValue) == 2 })
            #expect(await eventually { (try? metrics.expectGauge("stovepipe_topic_backlog", dimensions).lastValue) == 0 })
            #expect((try? metrics.expectGauge("stovepipe_topic_oldest_pending_age_seconds", dimensions).lastValue) != nil)
            #expect((try? metrics.expectGauge("stovepipe_topic_leases", dimensions).lastValue) != nil)
        }
    }
}
