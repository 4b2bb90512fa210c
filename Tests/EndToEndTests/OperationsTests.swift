import Foundation
import Testing
import HTTPServer

#if canImport(Glibc)
import Glibc
#endif

/// The value of the sample `name{labels}` in a Prometheus text exposition, or nil.
func sample(_ exposition: String, _ series: String) -> Double? {
    for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

/// Sends raw bytes on a fresh connection and returns everything the server answers until it closes.
func rawExchange(_ bytes: String, port: Int) throws -> String {
    let fd = try connectLoopback(port: port, timeoutSeconds: 10)
    defer { close(fd) }
    let data = Array(bytes.utf8)
    _ = data.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        received += buffer[0..<n]
    }
    return String(decoding: received, as: UTF8.self)
}

/// The lines of `log` written so far, without a last line still being written.
func completeLines(_ log: String) -> [Substring] {
    guard let end = log.lastIndex(of: "\n") else { return [] }
    return log[..<end].split(separator: "\n")
}

@Suite(.serialized) struct OperationsTests {
    @Test func metricsCountRealTraffic() throws {
        let server = try RunningServer(arguments: [])
        for _ in 0..<3 { _ = try http("POST", "/queues/demo/main/ingest", port: server.port) }
        _ = try http("GET", "/requests/request/demo/main/9", port: server.port)
        let malformed = try rawExchange("GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", port: server.port)
        #expect(malformed.hasPrefix("HTTP/1.1 400"))
        #expect(try eventually {
            try http("GET", "/requests/request/demo/main/1", port: server.port).json["state"] as? String == "processing"
        })
        // Some counters move after what the requests above can observe: the consumer counts an outcome after
        // writing the request's state, the event loop counts a protocol error after it has sent the 400 and
        // shut the connection down, and the API counts a request once its response is sent. Scrape until they
        // have moved, then check every value exactly.
        var metrics = ""
        #expect(try eventually {
            metrics = try http("GET", "/metrics", port: server.port).text
            let protocolErrors = (sample(metrics, #"stovepipe_http_protocol_errors_total{kind="whitespaceBeforeColon"}"#) ?? 0)
                + (sample(metrics, #"stovepipe_http_protocol_errors_total{kind="invalidHeaderName"}"#) ?? 0)
            let requests = sample(metrics, #"stovepipe_http_request_duration_seconds_count{route="/queues/{queue}/ingest"}"#) ?? 0
            let notFound = sample(metrics, #"stovepipe_http_requests_total{route="/requests/{id}",method="GET",status="404"}"#) ?? 0
            let found = sample(metrics, #"stovepipe_http_requests_total{route="/requests/{id}",method="GET",status="200"}"#) ?? 0
            return (sample(metrics, #"stovepipe_process_total{outcome="processing"}"#) ?? 0) >= 1 && protocolErrors >= 1
                && requests >= 3 && notFound >= 1 && found >= 1
        })
        #expect(metrics.hasSuffix("\n"), "the exposition format ends its last line with a line feed")
        #expect(sample(metrics, #"stovepipe_ingest_total{outcome="minted"}"#) == 1)
        #expect(sample(metrics, #"stovepipe_ingest_total{outcome="deduplicated"}"#) == 2)
        #expect(sample(metrics, #"stovepipe_process_total{outcome="processing"}"#) == 1)
        #expect(sample(metrics, #"stovepipe_http_requests_total{route="/queues/{queue}/ingest",method="POST",status="202"}"#) == 1)
        #expect(sample(metrics, #"stovepipe_http_requests_total{route="/queues/{queue}/ingest",method="POST",status="200"}"#) == 2)
        #expect(sample(metrics, #"stovepipe_http_requests_total{route="/requests/{id}",method="GET",status="404"}"#) == 1)
        #expect(sample(metrics, #"stovepipe_http_protocol_errors_total{kind="whitespaceBeforeColon"}"#) == 1
            || sample(metrics, #"stovepipe_http_protocol_errors_total{kind="invalidHeaderName"}"#) == 1)
        #expect((sample(metrics, "stovepipe_http_connections_total") ?? 0) >= 6)
        #expect((sample(metrics, #"stovepipe_store_operation_duration_seconds_count{store="requests",operation="create"}"#) ?? 0) == 1)
        #expect(metrics.contains("stovepipe_http_request_duration_seconds_bucket"))
        #expect(sample(metrics, #"stovepipe_http_request_duration_seconds_count{route="/queues/{queue}/ingest"}"#) == 3)
        #expect((sample(metrics, #"stovepipe_http_requests_total{route="/requests/{id}",method="GET",status="200"}"#) ?? 0) >= 1)
        // No unbounded label values: no request ids or raw paths appear in any series.
        #expect(!metrics.contains("request/demo/main/"))
        #expect(!metrics.contains("/queues/demo"))
        #expect(server.terminate() == 0)
    }

    /// `serve FLAG=0` and `FLAG=-1` are usage errors (exit 64) that name the flag.
    private func expectRefusesNonPositiveSeconds(_ flag: String) throws {
        for bad in ["0", "-1"] {
            let (status, output) = try EndToEndTests.runToExit(["serve", "--port", "0", "\(flag)=\(bad)"])
            #expect(status == 64, "\(output)")
            #expect(output.contains("\(flag) must be a positive number of seconds"), "\(output)")
            #expect(output.contains("Usage: stovepipe serve <options>\n  See 'stovepipe serve --help'"), "\(output)")
        }
    }

    /// Thread counts are bounded: each thread starts with the server, so a slip of the keyboard must not exhaust the machine.
    @Test(arguments: [
        ("--workers", "0", "1...4096"), ("--workers", "4097", "1...4096"),
        ("--event-loops", "0", "1...256"), ("--event-loops", "257", "1...256"),
    ])
    func threadCountsOutsideTheirRangeAreUsageErrors(_ flag: String, _ value: String, _ range: String) throws {
        let (listened, status, output) = try EndToEndTests.runUntilListeningOrExit(["serve", "--port", "0", "\(flag)=\(value)"])
        #expect(!listened && status == 64, "\(output)")
        #expect(output.contains("\(flag) must be \(range)"), "\(output)")
    }

    /// A subcommand's usage error names that subcommand's usage, as ArgumentParser does for its own parse errors.
    @Test func usageErrorsOfSubcommandsShowTheirOwnUsage() throws {
        let environment = ["STOVEPIPE_MYSQL_URL": ""]
        for (arguments, usage) in [(["migrate"], "stovepipe migrate"), (["topics", "list"], "stovepipe topics list")] {
            let (status, output) = try EndToEndTests.runToExit(arguments, environment: environment)
            #expect(status == 64, "\(output)")
            #expect(output.contains("needs --mysql-url or STOVEPIPE_MYSQL_URL"), "\(output)")
            #expect(output.contains("Usage: \(usage) ["), "\(output)")
            #expect(output.contains("See '\(usage) --help' for more information."), "\(output)")
        }
    }

    @Test func bodyTimeoutOptionIsCheckedAndAnUnfinishedBodyIs408AndCounted() throws {
        try expectRefusesNonPositiveSeconds("--body-timeout")
        let server = try RunningServer(arguments: ["--body-timeout", "0.3"])
        // Within rawExchange's 10 s receive timeout only the body timeout can answer: the idle timeout is 60 s.
        let answer = try rawExchange(
            "POST /queues/demo/main/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", port: server.port)
        #expect(answer.hasPrefix("HTTP/1.1 408"), "\(answer)")
        #expect(answer.contains("Connection: close"), "\(answer)")
        #expect(try eventually {
            sample(try http("GET", "/metrics", port: server.port).text, #"stovepipe_http_protocol_errors_total{kind="bodyTimeout"}"#) == 1
        })
        #expect(server.terminate() == 0)
    }

    /// Every serve option that has a default shows it in `--help`, the HTTP limits' read from the server's own.
    @Test func serveHelpShowsTheDefaults() throws {
        let (status, help) = try EndToEndTests.runToExit(["serve", "--help"], readingStandardOutput: true)
        #expect(status == 0)
        // ArgumentParser wraps the help to the terminal's width; one space between words makes it searchable.
        let text = help.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        let withoutDefault: Set = ["--mysql-url", "--queues", "--ingest-secret", "--ingest-secret-file", "--tls-cert", "--tls-key"]
        // An option's entry runs from its "--name <name>" to the next one's (help texts mention other flags too).
        let starts = text.ranges(of: /--([a-z-]+) <\1>/).map(\.lowerBound)
        let options = zip(starts, starts.dropFirst() + [text.endIndex]).map { String(text[$0..<$1]) }
        #expect(options.count >= 30, "\(text)")
        for option in options {
            let name = String(option.prefix { $0 != " " })
            #expect(option.contains("(default: ") != withoutDefault.contains(name), "\(option)")
        }
        let defaults = HTTPServerConfiguration()
        for (name, value) in [
            ("--max-body-bytes", "\(defaults.maxBodyBytes)"), ("--max-header-fields", "\(defaults.maxHeaderFields)"),
            ("--max-connections", "\(defaults.maxConnections)"), ("--header-timeout", "10"), ("--body-timeout", "60"),
            ("--workers", "twice the cores, at least 4: \(HTTPServerConfiguration.defaultWorkerThreads) here"),
            ("--log-level", "info"), ("--log-format", "text"),
        ] {
            #expect(options.contains { $0.hasPrefix(name + " ") && $0.contains("(default: \(value))") }, "\(name)")
        }
    }

    @Test func queueTimeoutOptionIsChecked() throws {
        try expectRefusesNonPositiveSeconds("--queue-timeout")
        let server = try RunningServer(arguments: ["--queue-timeout", "0.5"])
        #expect(try http("POST", "/queues/demo/main/ingest", port: server.port).status == 202)
        #expect(server.terminate() == 0)
    }

    @Test func accessLogsAreJSONLinesWithTheRequestID() throws {
        let server = try RunningServer(arguments: ["--log-format", "json", "--ingest-secret", "topsecret"])
        let response = try http("GET", "/queues/demo/main", port: server.port, headers: [("X-Request-ID", "trace-abc.123")])
        #expect(response.headers["x-request-id"] == "trace-abc.123")
        let generated = try http("GET", "/healthz", port: server.port, headers: [("X-Request-ID", "bad id with spaces")])
        #expect(generated.headers["x-request-id"] != nil)
        #expect(generated.headers["x-request-id"] != "bad id with spaces")
        _ = try http("POST", "/queues/demo/main/ingest", port: server.port, body: "{\"secret\": \"payload-value\"}",
            headers: [("X-Stovepipe-Signature-256", "sha256=" + String(repeating: "0", count: 64))])
        #expect(server.terminate() == 0)
        let lines = server.log.split(separator: "\n")
        #expect(!lines.isEmpty)
        let objects = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(objects.count == lines.count, "every log line is a JSON object")
        let access = objects.first { $0["http.request_id"] as? String == "trace-abc.123" }
        #expect(access?["http.route"] as? String == "/queues/{queue}")
        #expect(access?["http.method"] as? String == "GET")
        #expect(access?["http.status"] as? String == "200")
        #expect(access?["duration.ms"] != nil)
        #expect(access?["bytes"] != nil)
        #expect(!server.log.contains("topsecret"))
        #expect(!server.log.contains("payload-value"))
        #expect(!server.log.contains("sha256="))
    }

    @Test(arguments: ["text", "json"])
    func accessLinesCarryTheSentRequestIDAsHTTPRequestID(_ format: String) throws {
        let server = try RunningServer(arguments: ["--log-format", format])
        _ = try http("GET", "/queues/demo/main", port: server.port, headers: [("X-Request-ID", "trace-access.7")])
        var access: Substring?
        #expect(eventually {
            access = completeLines(server.log).first { $0.contains("/queues/{queue}") }
            return access != nil
        })
        let line = String(access ?? "")
        switch format {
        case "json":
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(object["http.request_id"] as? String == "trace-access.7", "\(line)")
            #expect(object["request.id"] == nil, "\(line)")
        default:
            #expect(line.contains(" http.request_id=trace-access.7 "), "\(line)")
            #expect(!line.contains("request.id="), "\(line)")
        }
        #expect(server.terminate() == 0)
    }

    /// The HTTP request id joins a POST's access line with the domain's `ingested` line, which names the Stovepipe
    /// request under `request.id`.
    @Test func anIngestsAccessLineAndIngestedLineShareTheHTTPRequestID() throws {
        let server = try RunningServer(arguments: ["--log-format", "json"])
        let response = try http(
            "POST", "/queues/demo/main/ingest", port: server.port, headers: [("X-Request-ID", "ingest-trace.42")])
        #expect(response.status == 202)
        var access: [String: Any]?
        var ingested: [String: Any]?
        #expect(eventually {
            let objects = completeLines(server.log).compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            access = objects.first { $0["http.route"] as? String == "/queues/{queue}/ingest" }
            ingested = objects.first { $0["msg"] as? String == "ingested" }
            return access != nil && ingested != nil
        })
        #expect(access?["http.request_id"] as? String == "ingest-trace.42")
        #expect(access?["request.id"] == nil)
        #expect(ingested?["http.request_id"] as? String == "ingest-trace.42")
        #expect(ingested?["request.id"] as? String == "request/demo/main/1")
        #expect(server.terminate() == 0)
    }

    @Test func optionsAndUnrecognisedMethodsOverTheWire() throws {
        let server = try RunningServer(arguments: [])
        func exchange(_ requestLine: String) throws -> (head: [Substring], body: Substring) {
            let answer = try rawExchange("\(requestLine)\r\nHost: x\r\nConnection: close\r\n\r\n", port: server.port)
            let parts = answer.split(separator: "\r\n\r\n", maxSplits: 1, omittingEmptySubsequences: false)
            return (parts[0].split(separator: "\r\n"), parts.count > 1 ? parts[1] : "")
        }
        for (requestLine, allow) in [("OPTIONS * HTTP/1.1", "GET, HEAD, POST, OPTIONS"), ("OPTIONS /healthz HTTP/1.1", "GET, HEAD, OPTIONS")] {
            let options = try exchange(requestLine)
            #expect(options.head.first == "HTTP/1.1 204 No Content", "\(options.head)")
            #expect(options.head.contains("Allow: \(allow)"), "\(options.head)")
            // RFC 9110 §8.6: a 204 carries no Content-Length.
            #expect(!options.head.contains { $0.lowercased().hasPrefix("content-length:") }, "\(options.head)")
            #expect(options.body.isEmpty)
        }
        let unrecognised = try exchange("FOO /healthz HTTP/1.1")
        #expect(unrecognised.head.first == "HTTP/1.1 501 Not Implemented", "\(unrecognised.head)")
        #expect(unrecognised.head.contains("Content-Type: application/problem+json"), "\(unrecognised.head)")
        #expect(unrecognised.body.contains("urn:stovepipe:problem:not-implemented"), "\(unrecognised.body)")
        #expect(server.terminate() == 0)
    }

    @Test func readinessAndHealthDuringLife() throws {
        let server = try RunningServer(arguments: [])
        #expect(try http("GET", "/healthz", port: server.port).status == 200)
        let ready = try http("GET", "/readyz", port: server.port)
        #expect(ready.status == 200)
        #expect((ready.json["checks"] as? [[String: Any]])?.contains { $0["name"] as? String == "topic consumer" && $0["ok"] as? Bool == true } == true)
        #expect(server.terminate() == 0)
    }

    @Test func healthcheckSubcommand() throws {
        let server = try RunningServer(arguments: [])
        func run(_ url: String) throws -> Int32 {
            let process = Process()
            process.executableURL = RunningServer.binary
            process.arguments = ["healthcheck", "--url", url]
            process.environment = RunningServer.environment()
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            return process.terminationStatus
        }
        #expect(try run("http://127.0.0.1:\(server.port)/healthz") == 0)
        #expect(try run("http://127.0.0.1:\(server.port)/nope") != 0)
        #expect(server.terminate() == 0)
        #expect(try run("http://127.0.0.1:\(server.port)/healthz") != 0)
    }
}
