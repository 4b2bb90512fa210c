import API
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct EndToEndTests {
    @Test func ingestDedupProcessAndShutdownOverAGitQueue() throws {
        let repository = try TemporaryRepository()
        defer { repository.remove() }
        let first = try repository.commit("one")
        let server = try RunningServer(arguments: ["--queues", try gitQueuesFile(repository).path])

        let minted = try http("POST", "/queues/app/main/ingest", port: server.port)
        #expect(minted.status == 202, "\(minted.text)")
        #expect(minted.headers["location"] == "/requests/request/app/main/1")
        #expect(minted.json["deduplicated"] as? Bool == false)
        #expect((minted.json["uri"] as? String)?.hasSuffix(first) == true)

        let again = try http("POST", "/queues/app%2Fmain/ingest", port: server.port, body: "{}")
        #expect(again.status == 200)
        #expect(again.json["id"] as? String == "request/app/main/1")
        #expect(again.json["deduplicated"] as? Bool == true)

        let second = try repository.commit("two")
        let next = try http("POST", "/queues/app/main/ingest", port: server.port)
        #expect(next.status == 202)
        #expect(next.json["id"] as? String == "request/app/main/2")
        #expect((next.json["uri"] as? String)?.hasSuffix(second) == true)

        let processed = try eventually {
            try http("GET", "/requests/request/app/main/2", port: server.port).json["state"] as? String == "processing"
        }
        #expect(processed)
        let request = try http("GET", "/requests/request%2Fapp%2Fmain%2F2", port: server.port)
        #expect(request.status == 200)
        #expect(request.json["build_strategy"] as? String == "full")
        // The first head was consumed before the second existed, so it was processed, not superseded;
        // coalescing of a backlog is covered by the process controller's tests.
        let firstState = try http("GET", "/requests/request/app/main/1", port: server.port).json["state"] as? String
        #expect(firstState == "processing" || firstState == "superseded")

        let queue = try http("GET", "/queues/app/main", port: server.port)
        #expect(queue.json["latest_request_id"] as? String == "request/app/main/2")
        let page = try http("GET", "/queues/app%2Fmain/requests?limit=1", port: server.port)
        #expect((page.json["requests"] as? [[String: Any]])?.first?["id"] as? String == "request/app/main/2")
        #expect(page.json["next_cursor"] is String)

        #expect(try http("POST", "/queues/nope/ingest", port: server.port).status == 404)
        #expect(server.terminate() == 0)
    }

    @Test func aBranchResetToAnOldCommitGetsAFreshRequest() throws {
        let repository = try TemporaryRepository()
        defer { repository.remove() }
        let first = try repository.commit("one")
        let server = try RunningServer(arguments: ["--queues", try gitQueuesFile(repository).path])
        #expect(try http("POST", "/queues/app/main/ingest", port: server.port).status == 202)
        try repository.commit("two")
        #expect(try http("POST", "/queues/app/main/ingest", port: server.port).json["id"] as? String == "request/app/main/2")

        try git(["reset", "-q", "--hard", first], in: repository.url)
        let reset = try http("POST", "/queues/app/main/ingest", port: server.port)
        #expect(reset.status == 202, "\(reset.text)")
        #expect(reset.json["id"] as? String == "request/app/main/3")
        #expect((reset.json["uri"] as? String)?.hasSuffix(first) == true)
        let again = try http("POST", "/queues/app/main/ingest", port: server.port)
        #expect(again.status == 200)
        #expect(again.json["id"] as? String == "request/app/main/3")
        let queue = try http("GET", "/queues/app/main", port: server.port)
        #expect(queue.json["latest_request_id"] as? String == "request/app/main/3")
        let processed = try eventually {
            try http("GET", "/requests/request/app/main/3", port: server.port).json["state"] as? String == "processing"
        }
        #expect(processed)
        #expect(server.terminate() == 0)
    }

    @Test func signaturesAreCheckedWhenASecretIsSet() throws {
        let repository = try TemporaryRepository()
        defer { repository.remove() }
        try repository.commit("one")
        let server = try RunningServer(
            arguments: ["--queues", try gitQueuesFile(repository).path], environment: ["STOVEPIPE_INGEST_SECRET": "hush"])
        let body = #"{"ref":"refs/heads/main"}"#
        let signature = SignatureVerifier(secret: Array("hush".utf8)).signature(for: Array(body.utf8))
        let refused = try http("POST", "/queues/app/main/ingest", port: server.port, body: body)
        #expect(refused.status == 401)
        #expect(refused.headers["content-type"] == "application/problem+json")
        let wrong = try http("POST", "/queues/app/main/ingest", port: server.port, body: body,
            headers: [("X-Stovepipe-Signature-256", "sha256=" + String(repeating: "ab", count: 32))])
        #expect(wrong.status == 401)
        let accepted = try http("POST", "/queues/app/main/ingest", port: server.port, body: body,
            headers: [("X-Hub-Signature-256", signature)])
        #expect(accepted.status == 202)
        // Read the log after exit: until then, info lines may still sit in the log writer's batch.
        #expect(server.terminate() == 0)
        #expect(!server.log.contains("hush"))
    }

    /// A configured queue whose ref is gone answers 404 like an unknown one; the log says which it was.
    @Test func aQueueWhoseRefIsGoneIs404AndLogsAWarning() throws {
        let repository = try TemporaryRepository()
        defer { repository.remove() }
        try repository.commit("one")
        let queues = repository.url.appendingPathExtension("gone.json")
        let document = #"{"queues": ["#
            + #"{"name": "app/main", "source": {"type": "git", "repository": "\#(repository.url.path)", "ref": "main"}},"#
            + #"{"name": "app/gone", "source": {"type": "git", "repository": "\#(repository.url.path)", "ref": "gone"}}]}"#
        try Data(document.utf8).write(to: queues)
        let server = try RunningServer(arguments: ["--queues", queues.path])
        #expect(try http("POST", "/queues/app/main/ingest", port: server.port).status == 202)
        #expect(try http("POST", "/queues/app/gone/ingest", port: server.port).status == 404)
        #expect(server.terminate() == 0)
        let warnings = server.log.split(separator: "\n").filter { $0.contains("WARNING") && $0.contains("ref does not exist") }
        #expect(warnings.count == 1, "\(server.log)")
        #expect(warnings.allSatisfy { $0.contains("queue=app/gone") && $0.contains("http.request_id=") }, "\(server.log)")
    }

    @Test func sixtyFourClientsIngestingOneHeadGetOneRequest() throws {
        let repository = try TemporaryRepository()
        defer { repository.remove() }
        try repository.commit("one")
        let server = try RunningServer(arguments: ["--queues", try gitQueuesFile(repository).path])
        let port = server.port
        let statuses = Mutex<[Int]>([])
        let ids = Mutex<Set<String>>([])
        let group = DispatchGroup()
        for _ in 0..<64 {
            group.enter()
            Thread {
                defer { group.leave() }
                let response = try? http("POST", "/queues/app/main/ingest", port: port)
                statuses.withLock { $0.append(response?.status ?? -1) }
                if let id = response?.json["id"] as? String { ids.withLock { _ = $0.insert(id) } }
            }.start()
        }
        #expect(group.wait(timeout: .now() + 60) == .success)
        let all = statuses.withLock { $0 }
        #expect(all.filter { $0 == 202 }.count == 1)
        #expect(all.filter { $0 == 200 }.count == 63)
        #expect(ids.withLock { $0 } == ["request/app/main/1"])
        #expect(server.terminate() == 0)
    }

    @Test func sigtermAnswersInFlightRequestsAndExitsZero() throws {
        let server = try RunningServer(arguments: [])
        let port = server.port
        let results = Mutex<[Int]>([])
        let group = DispatchGroup()
        for _ in 0..<16 {
            group.enter()
            Thread {
                defer { group.leave() }
                for _ in 0..<20 {
                    guard let response = try? http("POST", "/queues/demo/main/ingest", port: port) else { return }
                    results.withLock { $0.append(response.status) }
                }
            }.start()
        }
        #expect(eventually { results.withLock { $0.count } >= 16 })
        kill(server.process.processIdentifier, SIGTERM)
        #expect(group.wait(timeout: .now() + 60) == .success)
        server.process.waitUntilExit()
        #expect(server.process.terminationStatus == 0)
        // Every exchange that got an answer got a complete, successful one: none was cut off mid-response.
        #expect(results.withLock { $0 }.allSatisfy { $0 == 200 || $0 == 202 || $0 == 503 })
        #expect(server.log.contains("stopped"))
    }

    @Test func badQueuesFileStopsStartupNamingThePlace() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(#"{"queues": [{"name": "ok"}, {"name": "a//b", "source": {"type": "static", "history": ["x"]}}]}"#.utf8).write(to: file)
        let (status, output) = try Self.runToExit(["serve", "--port", "0", "--queues", file.path])
        #expect(status != 0)
        #expect(output.contains("$.queues[0].source"), "\(output)")
    }

    @Test func keepAliveWaitOptionIsCheckedAndZeroTurnsItOff() throws {
        for bad in ["5000", "-1", "soon"] {
            let (status, output) = try Self.runToExit(["serve", "--port", "0", "--worker-keep-alive-wait-ms=\(bad)"])
            #expect(status != 0)
            #expect(output.contains("--worker-keep-alive-wait-ms"), "\(output)")
        }
        let server = try RunningServer(arguments: ["--worker-keep-alive-wait-ms", "0"])
        #expect((200..<300).contains(try http("POST", "/queues/demo/main/ingest", port: server.port).status))
        #expect(try http("GET", "/requests/request/demo/main/1", port: server.port).status == 200)
        #expect(server.terminate() == 0)
    }

    @Test func consumerThreadsAreCheckedAndZeroNeedsMySQL() throws {
        for bad in ["257", "-1", "many"] {
            let (status, output) = try Self.runToExit(["serve", "--port", "0", "--consumer-threads=\(bad)"])
            #expect(status != 0)
            #expect(output.contains("--consumer-threads"), "\(output)")
        }
        let (status, output) = try Self.runToExit(["serve", "--port", "0", "--consumer-threads", "0"])
        #expect(status != 0)
        #expect(output.contains("--consumer-threads 0 needs --mysql-url"), "\(output)")
    }

    @Test(arguments: [
        ["--idle-timeout", "1e16"], ["--header-timeout", "1e300"], ["--shutdown-timeout", "1e17"],
        ["--topic-lease-seconds", "1e17"], ["--topic-visibility-seconds", "inf"],
    ])
    func secondsOptionsTooLargeToRepresentAreRejected(_ arguments: [String]) throws {
        let (status, output) = try Self.runToExit(["serve", "--port", "0"] + arguments)
        // A validation error (exit 64) naming the option, not a trap while converting the value.
        #expect(status == 64, "\(output)")
        #expect(output.contains(arguments[0]), "\(output)")
    }

    @Test func aTopicBackoffCapBeyondADayIsAUsageError() throws {
        let (status, output) = try Self.runToExit([
            "serve", "--port", "0", "--topic-backoff-base-ms", "9223372036854775807", "--topic-backoff-cap-ms", "9223372036854775807",
        ])
        #expect(status == 64, "\(output)")
        #expect(output.contains("--topic-backoff-cap-ms must be at most 86400000"), "\(output)")
    }

    @Test func sighupWithoutTLSIsLoggedAndIgnored() throws {
        let server = try RunningServer(arguments: [])
        kill(server.process.processIdentifier, SIGHUP)
        #expect(eventually { server.log.contains("SIGHUP ignored") }, "\(server.log)")
        #expect(try http("GET", "/healthz", port: server.port).status == 200)
        #expect(server.terminate() == 0, "still shuts down gracefully")
    }

    @Test func aSIGHUPDuringStartUpIsHandledOnceTheHandlerExistsAndDoesNotEndTheProcess() throws {
        // A queues file that takes long to parse: once the server has read as many bytes as it holds (rchar in
        // /proc/<pid>/io) it is parsing it, in start-up, for about a second before any signal handler exists.
        let history = (0..<300_000).map { "\"c\($0)\"" }.joined(separator: ",")
        let document = #"{"queues": [{"name": "early", "source": {"type": "static", "history": [\#(history)]}}]}"#
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-e2e-\(UUID().uuidString).json")
        try Data(document.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let server = try RunningServer(arguments: ["--queues", file.path]) { process in
            let readIt = eventually { bytesRead(by: process.processIdentifier) >= document.utf8.count }
            try #require(readIt, "the server never read its queues file")
            kill(process.processIdentifier, SIGHUP)
        }
        #expect(eventually { server.log.contains("queues reloaded") }, "the early SIGHUP was not handled: \(server.log)")
        #expect(try http("GET", "/healthz", port: server.port).status == 200)
        #expect(server.terminate() == 0, "still shuts down gracefully")
    }

    @Test(arguments: [
        (["--tls-cert", "", "--tls-key", ""], [String: String]()),
        ([], ["STOVEPIPE_TLS_CERT": "", "STOVEPIPE_TLS_KEY": ""]),
        ([], ["STOVEPIPE_TLS_CERT": " ", "STOVEPIPE_TLS_KEY": "key.pem"]),
    ])
    func anEmptyTLSSettingIsAUsageErrorNotPlainHTTP(_ arguments: [String], _ environment: [String: String]) throws {
        // An operator who meant TLS and whose template left the paths empty must not get plain HTTP on the port.
        let (listened, status, output) = try Self.runUntilListeningOrExit(["serve", "--port", "0"] + arguments, environment: environment)
        #expect(!listened, "served plain HTTP")
        #expect(status == 64, "\(output)")
        #expect(output.contains("is set but empty"), "\(output)")
    }

    @Test func anEmptyMySQLURLInTheEnvironmentIsAUsageError() throws {
        let (status, output) = try Self.runToExit(["serve", "--port", "0"], environment: ["STOVEPIPE_MYSQL_URL": ""])
        #expect(status == 64, "\(output)")
        #expect(output.contains("STOVEPIPE_MYSQL_URL is set but empty"), "\(output)")
    }

    @Test(arguments: [
        (["--queues", ""], [String: String]()), ([], ["STOVEPIPE_QUEUES": ""]), (["--queues", ""], ["STOVEPIPE_QUEUES": "/srv/queues.json"]),
    ])
    func anEmptyQueuesFileSettingIsAUsageErrorNotTheDemoQueue(_ arguments: [String], _ environment: [String: String]) throws {
        let (listened, status, output) = try Self.runUntilListeningOrExit(["serve", "--port", "0"] + arguments, environment: environment)
        #expect(!listened, "started with the demo queue")
        #expect(status == 64, "\(output)")
        #expect(output.contains("the queues file is set but empty"), "\(output)")
    }

    @Test(arguments: [
        (["--ingest-secret", ""], [String: String]()), ([], ["STOVEPIPE_INGEST_SECRET": ""]),
        ([], ["STOVEPIPE_INGEST_SECRET": " \t"]), (["--ingest-secret", ""], ["STOVEPIPE_INGEST_SECRET": "hush"]),
    ])
    func anEmptyIngestSecretIsAUsageErrorNotUnsignedIngest(_ arguments: [String], _ environment: [String: String]) throws {
        let (listened, status, output) = try Self.runUntilListeningOrExit(["serve", "--port", "0"] + arguments, environment: environment)
        #expect(!listened, "started and would take unsigned ingests")
        #expect(status == 64, "\(output)")
        #expect(output.contains("ingest secret is set but empty"), "\(output)")
    }

    @Test func aQueuesFileBeyondTheLimitStopsStartUpNamingItsSize() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-queues-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        // Sparse: the size is there without writing it.
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        #expect(truncate(path, off_t((64 << 20) + 1)) == 0)
        let (status, output) = try Self.runToExit(["serve", "--port", "0", "--queues", path])
        #expect(status == 64, "\(output)")
        #expect(output.contains("\(path): is 67108865 bytes; a queues file may have at most 67108864 bytes"), "\(output)")
    }

    @Test(arguments: [["--git-cache-directory", ""], ["--git-cache-directory", " \t"]])
    func anEmptyGitCacheDirectoryIsAUsageErrorNotTheWorkingDirectory(_ arguments: [String]) throws {
        let (listened, status, output) = try Self.runUntilListeningOrExit(["serve", "--port", "0"] + arguments)
        #expect(!listened, "started and would mirror remotes into the working directory")
        #expect(status == 64, "\(output)")
        #expect(output.contains("--git-cache-directory is set but empty or blank"), "\(output)")
    }

    @Test(.timeLimit(.minutes(1)), arguments: ["0", "-3", "1025"])
    func aPoolSizeOutsideItsRangeIsAUsageError(_ size: String) throws {
        let (status, output) = try Self.runToExit(["serve", "--port", "0", "--mysql-pool-size=\(size)"])
        #expect(status == 64, "\(output)")
        #expect(output.contains("--mysql-pool-size must be 1...1024"), "\(output)")
    }

    @Test(.timeLimit(.minutes(1)), arguments: ["-1", "86401", "x"])
    func aMaxLifetimeOutsideItsRangeIsAUsageError(_ seconds: String) throws {
        let (status, output) = try Self.runToExit(["serve", "--port", "0", "--mysql-max-lifetime-seconds=\(seconds)"])
        #expect(status == 64, "\(output)")
        #expect(output.contains("--mysql-max-lifetime-seconds"), "\(output)")
    }

    @Test func theListeningLineIsAURLForAnIPv6Host() throws {
        let process = Process()
        process.executableURL = RunningServer.binary
        process.arguments = ["serve", "--port", "0", "--host", "::1"]
        process.environment = RunningServer.environment()
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
        }
        var line: [UInt8] = []
        while let byte = try output.fileHandleForReading.read(upToCount: 1)?.first, byte != UInt8(ascii: "\n") { line.append(byte) }
        let text = String(decoding: line, as: UTF8.self)
        // RFC 3986 §3.2.2: an IPv6 literal in a URL is written in brackets.
        #expect(text.hasPrefix("listening on http://[::1]:"), "\(text)")
        let url = String(text.dropFirst("listening on ".count)) + "/healthz"
        let probe = Process()
        probe.executableURL = RunningServer.binary
        probe.arguments = ["healthcheck", "--url", url]
        probe.environment = RunningServer.environment()
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        try probe.run()
        probe.waitUntilExit()
        #expect(probe.terminationStatus == 0, "\(url)")
    }

    /// Runs the binary with `arguments` until it exits, or says it listens (then stops it); whether it listened, its status and
    /// standard error.
    static func runUntilListeningOrExit(
        _ arguments: [String], environment: [String: String] = [:]
    ) throws -> (listened: Bool, status: Int32, stderr: String) {
        let process = Process()
        process.executableURL = RunningServer.binary
        process.arguments = arguments
        process.environment = RunningServer.environment(environment)
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        var line: [UInt8] = []
        while let byte = try output.fileHandleForReading.read(upToCount: 1)?.first, byte != UInt8(ascii: "\n") { line.append(byte) }
        let listened = String(decoding: line, as: UTF8.self).hasPrefix("listening on ")
        if listened { kill(process.processIdentifier, SIGTERM) }
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (listened, process.terminationStatus, text)
    }

    /// Runs the binary with `arguments` until it exits; its status and standard error.
    /// Runs the binary to its exit; the text is its standard error, or its standard output when `readingStandardOutput`.
    static func runToExit(
        _ arguments: [String], environment: [String: String] = [:], readingStandardOutput: Bool = false
    ) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = RunningServer.binary
        process.arguments = arguments
        process.environment = RunningServer.environment(environment)
        let captured = Pipe()
        process.standardError = readingStandardOutput ? FileHandle.nullDevice : captured
        process.standardOutput = readingStandardOutput ? captured : FileHandle.nullDevice
        try process.run()
        let output = String(decoding: captured.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }
}
