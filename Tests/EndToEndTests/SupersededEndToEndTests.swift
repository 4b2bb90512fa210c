import Foundation
import MySQLClient
import TestSupport
import Testing

@Suite(.serialized, .enabled(if: mysqlEndToEndRuns)) struct SupersededEndToEndTests {
    /// A backlog of heads on one queue is coalesced: only the newest is validated, the older ones are
    /// marked superseded. The backlog is made by holding the queue's `process` partition lease under
    /// another replica's name while three heads are ingested, then letting the server's consumer have it.
    @Test func olderHeadsOfABacklogAreSuperseded() async throws {
        let setup = try MigratedQueueSetup()
        defer { setup.remove() }

        let admin = try MySQLConnection(configuration: try MySQLConfiguration(url: setup.database.url))
        defer { admin.close() }
        try admin.execute(
            """
            INSERT INTO topic_partitions (topic, partition_key, owner, lease_expires_at)
            VALUES ('process', 'app/main', 'another-replica', UTC_TIMESTAMP(6) + INTERVAL 1 HOUR)
            """)

        let server = try RunningServer(arguments: setup.serveArguments + ["--topic-poll-interval-ms", "50"])
        for number in 1...3 {
            try setup.repository.commit("head \(number)")
            #expect(try http("POST", "/queues/app/main/ingest", port: server.port).status == 202)
        }
        for number in 1...3 {
            #expect(try http("GET", "/requests/request/app/main/\(number)", port: server.port).json["state"] as? String == "accepted")
        }
        let backlog = try http("GET", "/topics/process", port: server.port).json["topics"] as? [[String: Any]]
        #expect(backlog?.first?["backlog"] as? Int == 3)

        try admin.execute("UPDATE topic_partitions SET owner = NULL, lease_expires_at = NULL WHERE partition_key = 'app/main'")
        func state(_ number: Int) throws -> String? {
            try http("GET", "/requests/request/app/main/\(number)", port: server.port).json["state"] as? String
        }
        let settled = try await eventually { try state(3) == "processing" && state(1) != "accepted" && state(2) != "accepted" }
        #expect(settled, "\(server.log)")
        #expect(try state(1) == "superseded")
        #expect(try state(2) == "superseded")
        let newest = try http("GET", "/requests/request/app/main/3", port: server.port).json
        #expect(newest["build_strategy"] as? String == "full")
        // The consumer counts each outcome after writing the request's state, which the GETs above can see
        // first: scrape until all three outcomes are counted, then check how they split.
        var metrics = try PrometheusExposition(try http("GET", "/metrics", port: server.port).text)
        #expect(try await eventually {
            metrics = try PrometheusExposition(try http("GET", "/metrics", port: server.port).text)
            return (metrics.value("stovepipe_process_total", ["outcome": "superseded"]) ?? 0)
                + (metrics.value("stovepipe_process_total", ["outcome": "processing"]) ?? 0) >= 3
        })
        #expect(metrics.value("stovepipe_process_total", ["outcome": "superseded"]) == 2)
        #expect(metrics.value("stovepipe_process_total", ["outcome": "processing"]) == 1)
        #expect(server.terminate() == 0, "\(server.log)")
    }
}
