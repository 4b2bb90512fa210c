import Domain
import Foundation
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
}
