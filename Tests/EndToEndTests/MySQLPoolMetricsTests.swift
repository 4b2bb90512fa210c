import Foundation
import MySQLClient
import TestSupport
import Testing

@testable import stovepipe

/// GET /metrics of `server`, parsed.
private func scrape(_ server: RunningServer) throws -> PrometheusExposition {
    let response = try http("GET", "/metrics", port: server.port)
    guard response.status == 200 else { throw WireError.malformed("GET /metrics answered \(response.status)") }
    return try PrometheusExposition(response.text)
}

private let acquireWaitCount = "stovepipe_mysql_pool_acquire_wait_seconds_count"
private let connections = "stovepipe_mysql_pool_connections"
private let discarded = "stovepipe_mysql_pool_discarded_total"
private let timeouts = "stovepipe_mysql_pool_acquire_timeouts_total"
private let retries = "stovepipe_mysql_transaction_retries_total"
private let errors = "stovepipe_mysql_errors_total"

extension PrometheusExposition {
    /// The sum of every `stovepipe_mysql_errors_total{code=...}` series.
    fileprivate var mysqlErrorsTotal: Double { samples(named: errors).reduce(0) { $0 + $1.value } }

    /// `stovepipe_mysql_errors_total` by its code label.
    fileprivate var mysqlErrorsByCode: [String: Double] {
        Dictionary(samples(named: errors).compactMap { sample in sample.labels["code"].map { ($0, sample.value) } }) { first, _ in first }
    }
}

@Suite(.serialized, .enabled(if: mysqlEndToEndRuns)) struct MySQLPoolMetricsTests {
    @Test func poolMetricsFollowRealTrafficAndServerSideKills() async throws {
        let setup = try MigratedQueueSetup()
        defer { setup.remove() }
        let database = setup.database
        try setup.repository.commit("one")

        let poolSize = 8
        let server = try RunningServer(arguments: setup.serveArguments + ["--mysql-pool-size", String(poolSize)])

        let start = try scrape(server)
        // Every documented series is exposed from the start, errors with exactly the documented code labels.
        #expect(start.value(timeouts) == 0)
        #expect(start.value(discarded) == 0)
        #expect(start.value(retries) != nil)
        #expect(start.value(connections, ["state": "in_use"]) != nil)
        #expect(start.value(connections, ["state": "idle"]) != nil)
        let documentedCodes: Set<String> = [
            "1040", "1047", "1053", "1205", "1213", "1290", "1927", "2002", "2003", "2006", "2013", "2055", "4031", "90001", "other",
        ]
        #expect(Set(start.mysqlErrorsByCode.keys) == documentedCodes)
        #expect(start.mysqlErrorsTotal == 0)
        let waitsAtStart = try #require(start.value(acquireWaitCount))

        // Real traffic: each of these requests reads or writes the database through the pool at least once.
        var storageRequests = 0
        func expectStatus(_ method: String, _ path: String, _ status: Int) throws {
            let response = try http(method, path, port: server.port)
            #expect(response.status == status, "\(method) \(path): \(response.text)")
            storageRequests += 1
        }
        try expectStatus("POST", "/queues/app/main/ingest", 202)
        try expectStatus("POST", "/queues/app/main/ingest", 200)
        for _ in 0..<3 { try expectStatus("GET", "/requests/request/app/main/1", 200) }
        for _ in 0..<2 { try expectStatus("GET", "/requests/request/app/main/99", 404) }
        try expectStatus("GET", "/queues/app/main", 200)

        let afterTraffic = try scrape(server)
        let waitsAfterTraffic = try #require(afterTraffic.value(acquireWaitCount))
        #expect(waitsAfterTraffic > 0)
        #expect(waitsAfterTraffic >= waitsAtStart + Double(storageRequests), "\(waitsAtStart) -> \(waitsAfterTraffic)")
        // The histogram is consistent: its +Inf bucket holds every observation.
        #expect(afterTraffic.value("stovepipe_mysql_pool_acquire_wait_seconds_bucket", ["le": "+Inf"]) == waitsAfterTraffic)
        #expect(afterTraffic.value(timeouts) == 0)
        // The gauges are read at scrape time: some connection is idle between requests, and never more than the pool holds.
        let idleAfterTraffic = try await eventually(timeout: .seconds(10)) {
            let metrics = try scrape(server)
            let idle = metrics.value(connections, ["state": "idle"]) ?? -1
            let inUse = metrics.value(connections, ["state": "in_use"]) ?? -1
            return idle >= 1 && inUse >= 0 && idle + inUse <= Double(poolSize)
        }
        #expect(idleAfterTraffic, "no idle connection after traffic")

        // Kill every connection of the server's database from the server side; the pool finds them broken.
        let admin = try MySQLConnection(configuration: database.server)
        defer { admin.close() }
        let ids = try admin.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = \(database.name) AND ID <> CONNECTION_ID()"
        ).compactMap { $0.uint64("ID") }
        #expect(!ids.isEmpty)
        var killed = 0
        for id in ids {
            // 1094 (unknown thread) only means the connection closed on its own in the meantime.
            if (try? admin.execute("KILL CONNECTION \(id)")) != nil { killed += 1 }
        }
        try #require(killed > 0)
        let beforeKill = afterTraffic.value(discarded) ?? 0

        // This request leases the connection returned last, which is one of the killed ones unless the
        // topic consumer took it first; either lease discards it.
        _ = try http("GET", "/requests/request/app/main/1", port: server.port)
        let discardedAfterKill = try await eventually {
            (try scrape(server).value(discarded) ?? 0) > beforeKill
        }
        #expect(discardedAfterKill, "no connection was discarded after KILL; log: \(server.log)")

        // The pool opens fresh connections: requests succeed again.
        let recovered = try await eventually {
            try http("GET", "/requests/request/app/main/1", port: server.port).status == 200
        }
        #expect(recovered, "requests did not recover after the kill")

        // Every discard counts its MySQL error code, and only pool events count: at rest the error total is
        // exactly discards plus retries plus acquire timeouts (no lock conflict ends a call here), and a
        // connection-loss code moved.
        let balanced = try await eventually {
            let metrics = try scrape(server)
            let events = (metrics.value(discarded) ?? -1) + (metrics.value(retries) ?? -1) + (metrics.value(timeouts) ?? -1)
            return metrics.mysqlErrorsTotal == events
        }
        #expect(balanced)
        let final = try scrape(server)
        let connectionLossCodes = ["1927", "2006", "2013", "2055"]
        let lossErrors = connectionLossCodes.reduce(0) { $0 + (final.mysqlErrorsByCode[$1] ?? 0) }
        #expect(lossErrors >= 1, "\(final.mysqlErrorsByCode)")
        #expect((final.value(discarded) ?? 0) >= 1)
        #expect((final.value(acquireWaitCount) ?? 0) > waitsAfterTraffic)
        let inUse = final.value(connections, ["state": "in_use"]) ?? -1
        let idle = final.value(connections, ["state": "idle"]) ?? -1
        #expect(inUse >= 0 && idle >= 0 && inUse + idle <= Double(poolSize))
        #expect(server.terminate() == 0, "\(server.log)")
    }

    @Test func ingestBehindALockedCounterAnswers503AfterOneLockWaitCountedUnretried() async throws {
        let setup = try MigratedQueueSetup()
        defer { setup.remove() }
        try setup.repository.commit("one")
        let url = setup.database.url + (setup.database.url.contains("?") ? "&" : "?") + "lock-wait-timeout=2"
        let server = try RunningServer(arguments: ["--mysql-url", url, "--queues", setup.queues.path])
        // The first ingest makes the queue's request counter row; the second needs its next value.
        #expect(try http("POST", "/queues/app/main/ingest", port: server.port).status == 202)
        try setup.repository.commit("two")

        // Another session holds the counter's row, as an operator's open transaction would.
        var configuration = setup.database.server
        configuration.database = setup.database.name
        let holder = try MySQLConnection(configuration: configuration)
        defer { holder.close() }
        try holder.execute("START TRANSACTION")
        let held = try holder.query(
            "SELECT value FROM counters WHERE queue = \("app/main") AND domain = \("request") FOR UPDATE")
        try #require(held.count == 1)

        let before = try scrape(server)
        let started = ContinuousClock.now
        let blocked = try http("POST", "/queues/app/main/ingest", port: server.port)
        let elapsed = ContinuousClock.now - started
        #expect(blocked.status == 503, "\(blocked.text)")
        #expect(blocked.headers["retry-after"] == "1")
        // One 2 s lock wait, not three; a generous margin for a loaded machine.
        #expect(elapsed < .seconds(4), "\(elapsed)")
        let after = try scrape(server)
        #expect((after.mysqlErrorsByCode["1205"] ?? 0) - (before.mysqlErrorsByCode["1205"] ?? 0) == 1)
        #expect(after.value(retries) == before.value(retries))
        #expect(server.log.contains("1205: lock wait timeout"), "\(server.log)")

        try holder.execute("ROLLBACK")
        #expect(try http("POST", "/queues/app/main/ingest", port: server.port).status == 202)
        #expect(server.terminate() == 0, "\(server.log)")
    }
}

@Suite(.serialized, .enabled(if: mysqlEndToEndRuns)) struct MySQLTopicMetricsEndToEndTests {
    /// Every family the README's metrics table documents, with its type.
    private static let documented: [String: String] = [
        "stovepipe_http_requests_total": "counter", "stovepipe_http_request_duration_seconds": "histogram",
        "stovepipe_http_open_connections": "gauge", "stovepipe_http_connections_total": "counter",
        "stovepipe_http_connections_closed_total": "counter", "stovepipe_http_connections_refused_total": "counter",
        "stovepipe_http_requests_shed_total": "counter", "stovepipe_http_protocol_errors_total": "counter",
        "stovepipe_ingest_total": "counter", "stovepipe_ingest_duration_seconds": "histogram",
        "stovepipe_process_total": "counter", "stovepipe_process_duration_seconds": "histogram",
        "stovepipe_process_swept_total": "counter", "stovepipe_store_operation_duration_seconds": "histogram",
        "stovepipe_mysql_pool_connections": "gauge", "stovepipe_mysql_pool_acquire_wait_seconds": "histogram",
        "stovepipe_mysql_pool_acquire_timeouts_total": "counter", "stovepipe_mysql_pool_discarded_total": "counter",
        "stovepipe_mysql_transaction_retries_total": "counter", "stovepipe_mysql_errors_total": "counter",
        "stovepipe_topic_published_total": "counter", "stovepipe_topic_delivered_total": "counter",
        "stovepipe_topic_acked_total": "counter", "stovepipe_topic_retried_total": "counter",
        "stovepipe_topic_dead_lettered_total": "counter", "stovepipe_topic_postponed_total": "counter",
        "stovepipe_topic_redriven_total": "counter", "stovepipe_topic_backlog": "gauge", "stovepipe_topic_in_flight": "gauge",
        "stovepipe_topic_dead_letters": "gauge", "stovepipe_topic_oldest_pending_age_seconds": "gauge",
        "stovepipe_topic_leases": "gauge", "stovepipe_http_accept_failures_total": "counter",
        "stovepipe_config_reloads_total": "counter",
    ]

    @Test func everyDocumentedFamilyIsExportedFromTheStartInTextFormat004() async throws {
        let setup = try MigratedQueueSetup()
        defer { setup.remove() }
        let server = try RunningServer(arguments: setup.serveArguments)
        // One request first, so that the per-route families have a series: a configured queue, never ingested.
        #expect(try http("GET", "/queues/app/main", port: server.port).status == 200)
        // The topic gauges are known once the consumer's first heartbeat has read the topic, and the heartbeat sets
        // the leases gauge before the others: wait for every family, not for one of them.
        var response = try http("GET", "/metrics", port: server.port)
        #expect(try await eventually {
            response = try http("GET", "/metrics", port: server.port)
            return Self.documented.allSatisfy { name, type in response.text.contains("# TYPE \(name) \(type)\n") }
        })
        #expect(response.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        let text = response.text
        let exposition = try PrometheusExposition(text)

        var types: [String: String] = [:]
        var sampled: Set<String> = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if line.hasPrefix("# TYPE ") {
                let name = String(fields[2])
                #expect(types[name] == nil, "a second TYPE line for \(name)")
                #expect(!sampled.contains(name), "TYPE of \(name) after its samples")
                types[name] = String(fields[3])
            } else if !line.hasPrefix("#") {
                let name = String(line.prefix { $0 != "{" && $0 != " " })
                let family = ["_bucket", "_sum", "_count"].first { name.hasSuffix($0) && types[name] == nil }
                    .map { String(name.dropLast($0.count)) } ?? name
                #expect(types[family] != nil, "sample before its TYPE: \(line)")
                sampled.insert(family)
            }
        }
        for (name, type) in Self.documented {
            #expect(types[name] == type, "\(name): \(types[name] ?? "absent")")
            #expect(sampled.contains(name), "\(name) has no series")
        }
        for (name, type) in types where type == "counter" { #expect(name.hasSuffix("_total"), "\(name)") }
        #expect(helpLineProblems(text) == [])
        #expect(stovepipeFamilies(text) == Set(MetricHelp.texts.keys), "every family of the help table is made, and no other")
        let documentedLabels = try MetricHelpTests.readmeMetricLabels(known: Set(MetricHelp.texts.keys))
        let exportedLabels = try MetricHelpTests.exportedLabels(text)
        for name in Self.documented.keys {
            #expect(exportedLabels[name] == documentedLabels[name], "\(name): README \(documentedLabels[name] ?? []), exported \(exportedLabels[name] ?? [])")
        }
        // Each histogram series: `le` increasing to +Inf, counts never falling, +Inf equal to _count.
        for (name, type) in types where type == "histogram" {
            for count in exposition.samples(named: name + "_count") {
                let buckets = exposition.samples(named: name + "_bucket").filter {
                    var labels = $0.labels
                    labels["le"] = nil
                    return labels == count.labels
                }
                let bounds = buckets.compactMap { $0.labels["le"].flatMap { $0 == "+Inf" ? .infinity : Double($0) } }
                #expect(bounds.count == buckets.count && bounds == bounds.sorted() && Set(bounds).count == bounds.count, "\(name)")
                #expect(bounds.last == .infinity && buckets.last?.value == count.value, "\(name) \(count.labels)")
                #expect(buckets.map(\.value) == buckets.map(\.value).sorted(), "\(name) \(count.labels)")
            }
        }
        #expect(server.terminate() == 0, "\(server.log)")
    }

    @Test func processTopicMetricsFollowIngestsOverMySQL() async throws {
        let setup = try MigratedQueueSetup()
        defer { setup.remove() }
        let server = try RunningServer(arguments: setup.serveArguments)
        let topic = ["topic": "process"]

        let start = try scrape(server)
        #expect(start.value("stovepipe_topic_published_total", topic) ?? 0 == 0)

        // Three heads, each ingested twice: three requests minted, three messages published, none for the repeats.
        for number in 1...3 {
            try setup.repository.commit("head \(number)")
            #expect(try http("POST", "/queues/app/main/ingest", port: server.port).status == 202)
            #expect(try http("POST", "/queues/app/main/ingest", port: server.port).status == 200)
        }
        let settled = try await eventually {
            let metrics = try scrape(server)
            return metrics.value("stovepipe_topic_acked_total", topic) == 3
                && metrics.value("stovepipe_topic_backlog", topic) == 0
                && metrics.value("stovepipe_topic_in_flight", topic) == 0
        }
        let metrics = try scrape(server)
        #expect(settled, "acked \(metrics.value("stovepipe_topic_acked_total", topic) ?? -1)")
        #expect(metrics.value("stovepipe_topic_published_total", topic) == 3)
        #expect((metrics.value("stovepipe_topic_delivered_total", topic) ?? 0) >= 3)
        #expect(metrics.value("stovepipe_topic_dead_lettered_total", topic) ?? 0 == 0)
        #expect(metrics.value("stovepipe_topic_dead_letters", topic) == 0)
        #expect(metrics.value("stovepipe_topic_leases", topic) != nil)
        #expect(metrics.value("stovepipe_ingest_total", ["outcome": "minted"]) == 3)
        #expect(metrics.value("stovepipe_ingest_total", ["outcome": "deduplicated"]) == 3)
        #expect(server.terminate() == 0, "\(server.log)")
    }
}

@Suite(.serialized, .enabled(if: privateServerSuitesRun)) struct MySQLOutageMetricsEndToEndTests {
    /// The codes of a connect that finds no server: CR_CONNECTION_ERROR and CR_CONN_HOST_ERROR.
    private static let connectCodes = ["2002", "2003"]

    @Test func stoppedDatabaseTurnsReadyzAndCountsConnectErrorsThenRecovers() async throws {
        try #require(mariadbdInstalled, "mariadbd is not installed; CI=true requires this test to run")
        let (database, base) = try PrivateServer.start()
        defer { database.stopAndRemove() }
        var serverConfiguration = try MySQLConfiguration(url: base)
        serverConfiguration.database = nil
        let admin = try MySQLConnection(configuration: serverConfiguration)
        _ = try admin.execute(MySQLQuery(unsafeSQL: "CREATE DATABASE stovepipe_outage"))
        admin.close()
        let url = base + "stovepipe_outage?connect-timeout=2"
        let migrated = try runStovepipe(["migrate", "--mysql-url", url])
        try #require(migrated.status == 0, "\(migrated.stderr)")
        let server = try RunningServer(arguments: ["--mysql-url", url])

        #expect(try http("GET", "/readyz", port: server.port).status == 200)
        let before = try scrape(server)
        #expect(Self.connectCodes.reduce(0) { $0 + (before.mysqlErrorsByCode[$1] ?? -1) } == 0)

        try database.stop()
        let unready = try await eventually { try http("GET", "/readyz", port: server.port).status == 503 }
        #expect(unready, "\(server.log)")
        // Every connect the pool tried while the server was gone failed with a connect code, and counted.
        let counted = try await eventually {
            let metrics = try scrape(server)
            return Self.connectCodes.reduce(0) { $0 + (metrics.mysqlErrorsByCode[$1] ?? 0) } > 0
        }
        let seen = try scrape(server).mysqlErrorsByCode
        #expect(counted, "\(seen)")

        try database.start()
        let ready = try await eventually { try http("GET", "/readyz", port: server.port).status == 200 }
        #expect(ready, "\(server.log)")
        #expect(try http("POST", "/queues/demo/main/ingest", port: server.port).status == 202)
        #expect(server.terminate() == 0, "\(server.log)")
    }
}
