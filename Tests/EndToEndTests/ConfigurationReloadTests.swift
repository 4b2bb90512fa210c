import API
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A scratch directory for a test's files; the caller removes it.
private func scratchDirectory() throws -> URL {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-e2e-reload-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return directory
}

/// A queues document of static queues, each with the history `history`.
private func staticQueues(_ names: [String], history: [String] = ["git://h/c2", "git://h/c1"]) -> String {
    staticQueues(names.map { ($0, history) })
}

/// A queues document of static queues, each with its own history.
private func staticQueues(_ queues: [(name: String, history: [String])]) -> String {
    let entries = queues.map { name, history in
        let uris = history.map { "\"\($0)\"" }.joined(separator: ", ")
        return #"{"name": "\#(name)", "source": {"type": "static", "history": [\#(uris)]}}"#
    }
    return #"{"queues": [\#(entries.joined(separator: ", "))]}"#
}

/// The value of `stovepipe_config_reloads_total` for `file` and `result`; nil when the series is not exported.
private func reloads(_ file: String, _ result: String, port: Int) throws -> Double? {
    let text = try http("GET", "/metrics", port: port).text
    return try PrometheusExposition(text).value("stovepipe_config_reloads_total", ["file": file, "result": result])
}

@Suite(.serialized) struct ConfigurationReloadTests {
    /// Queues added by a reload are usable at once, removed ones answer 404 to ingest while their requests stay readable.
    @Test func sighupReloadsTheQueuesFile() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("queues.json")
        try Data(staticQueues(["keep/main", "gone/main"]).utf8).write(to: file)
        let server = try RunningServer(arguments: ["--queues", file.path])
        let ingested = try http("POST", "/queues/gone/main/ingest", port: server.port)
        #expect(ingested.status == 202, "\(ingested.text)")
        let location = try #require(ingested.headers["location"])
        #expect(try http("POST", "/queues/new/main/ingest", port: server.port).status == 404)
        for file in ["queues", "ingest_secret", "tls"] {
            for result in ["ok", "failed"] { #expect(try reloads(file, result, port: server.port) == 0, "\(file) \(result)") }
        }

        try Data(staticQueues(["keep/main", "new/main"]).utf8).write(to: file)
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try reloads("queues", "ok", port: server.port) == 1 }, "\(server.log)")
        let added = try http("POST", "/queues/new/main/ingest", port: server.port)
        #expect(added.status == 202, "\(added.text)")
        #expect(try http("GET", "/queues/new/main", port: server.port).status == 200)
        #expect(try http("POST", "/queues/keep/main/ingest", port: server.port).status == 202)
        let removed = try http("POST", "/queues/gone/main/ingest", port: server.port)
        #expect(removed.status == 404, "\(removed.text)")
        #expect(try http("GET", location, port: server.port).status == 200, "a removed queue's request is still readable")
        #expect(try reloads("queues", "failed", port: server.port) == 0)
        let line = server.log.split(separator: "\n").first { $0.contains("queues reloaded") }
        #expect(line?.contains("added=new/main") == true && line?.contains("removed=gone/main") == true, "\(server.log)")
        #expect(line?.contains(file.path) == true, "\(server.log)")
        #expect(server.terminate() == 0, "\(server.log)")
    }

    /// `$FILE` is the queues file; nil contents remove it. Each is refused whole and the running queues stay.
    @Test(arguments: [
        (Optional("{\"queues\": ["), "not valid JSON"),
        (nil, "$FILE: cannot be read: No such file or directory"),
        (Optional(#"{"queues": []}"#), "$.queues: is empty"),
        (Optional(staticQueues(["keep/main", "new/main", "new/main"])), "queue 'new/main' is configured twice"),
        (Optional(staticQueues(["keep/main", "new/main"], history: ["git://h/other"])),
         "queue 'keep/main': its source changed"),
    ])
    func aQueuesFileThatCannotBeUsedOnReloadKeepsTheRunningQueues(_ contents: String?, _ problem: String) throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("queues.json")
        try Data(staticQueues(["keep/main"]).utf8).write(to: file)
        let server = try RunningServer(arguments: ["--queues", file.path])

        if let contents {
            try Data(contents.utf8).write(to: file)
        } else {
            try FileManager.default.removeItem(at: file)
        }
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try reloads("queues", "failed", port: server.port) == 1 }, "\(server.log)")
        #expect(try reloads("queues", "ok", port: server.port) == 0)
        let line = server.log.split(separator: "\n").first { $0.contains("queues reload failed") }
        #expect(line?.contains("ERROR") == true, "\(server.log)")
        #expect(line?.contains(file.path) == true, "names the file: \(server.log)")
        #expect(line?.contains(problem.replacingOccurrences(of: "$FILE", with: file.path)) == true, "\(server.log)")
        #expect(try http("POST", "/queues/keep/main/ingest", port: server.port).status == 202)
        #expect(try http("POST", "/queues/new/main/ingest", port: server.port).status == 404)

        // The next good file is taken.
        try Data(staticQueues(["keep/main", "new/main"]).utf8).write(to: file)
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try reloads("queues", "ok", port: server.port) == 1 }, "\(server.log)")
        #expect(try http("POST", "/queues/new/main/ingest", port: server.port).status == 202)
        #expect(server.terminate() == 0, "\(server.log)")
    }

    /// A queue removed by one reload and given another source by a later one is refused too: its requests and last green
    /// commit belong to the first source for as long as the process runs.
    @Test func aRemovedQueueComesBackOnlyWithItsSource() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("queues.json")
        try Data(staticQueues(["keep/main", "app/main"]).utf8).write(to: file)
        let server = try RunningServer(arguments: ["--queues", file.path])
        try Data(staticQueues(["keep/main"]).utf8).write(to: file)
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try reloads("queues", "ok", port: server.port) == 1 }, "\(server.log)")
        #expect(try http("POST", "/queues/app/main/ingest", port: server.port).status == 404)

        let moved = staticQueues([("keep/main", ["git://h/c2", "git://h/c1"]), ("app/main", ["git://h/other"])])
        try Data(moved.utf8).write(to: file)
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try reloads("queues", "failed", port: server.port) == 1 }, "\(server.log)")
        #expect(server.log.contains("queue 'app/main': its source changed"), "\(server.log)")
        #expect(try http("POST", "/queues/app/main/ingest", port: server.port).status == 404)

        try Data(staticQueues(["keep/main", "app/main"]).utf8).write(to: file)
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try reloads("queues", "ok", port: server.port) == 2 }, "\(server.log)")
        #expect(try http("POST", "/queues/app/main/ingest", port: server.port).status == 202)
        #expect(server.terminate() == 0, "\(server.log)")
    }

    /// A git queue added by a reload has its source set up when first used, as one configured at start-up.
    @Test func aGitQueueAddedByAReloadIsUsableAtOnce() throws {
        let repository = try TemporaryRepository()
        defer { repository.remove() }
        let head = try repository.commit("one")
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("queues.json")
        try Data(staticQueues(["keep/main"]).utf8).write(to: file)
        let server = try RunningServer(arguments: ["--queues", file.path])
        try Data(contentsOf: gitQueuesFile(repository)).write(to: file)
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try reloads("queues", "ok", port: server.port) == 1 }, "\(server.log)")
        let ingested = try http("POST", "/queues/app/main/ingest", port: server.port)
        #expect(ingested.status == 202, "\(ingested.text)")
        #expect(ingested.text.contains(head), "\(ingested.text)")
        #expect(try http("POST", "/queues/keep/main/ingest", port: server.port).status == 404)
        #expect(server.terminate() == 0, "\(server.log)")
    }

    /// Rotation: the new secret is added beside the old one, the sender moves to it, the old one is removed; no signed
    /// delivery is refused meanwhile, and no line of the log holds a secret.
    @Test func sighupReloadsTheIngestSecretFileForARotationWithoutRefusals() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let queues = directory.appendingPathComponent("queues.json")
        try Data(staticQueues(["app/main"]).utf8).write(to: queues)
        let secretFile = directory.appendingPathComponent("secret")
        let (old, new) = ("s3cret-old-7f3a-0c1d", "s3cret-new-91c4-5e6f")
        try Data("\(old)\n".utf8).write(to: secretFile)
        let server = try RunningServer(arguments: ["--queues", queues.path, "--ingest-secret-file", secretFile.path])
        func status(signedWith secret: String?) throws -> Int {
            let body = "{}"
            let headers = secret.map { [("X-Hub-Signature-256", SignatureVerifier(secret: Array($0.utf8)).signature(for: Array(body.utf8)))] }
            return try http("POST", "/queues/app/main/ingest", port: server.port, body: body, headers: headers ?? []).status
        }
        #expect(try status(signedWith: old) == 202)
        #expect(try status(signedWith: new) == 401)

        try Data("\(old)\n\(new)\n".utf8).write(to: secretFile)
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try reloads("ingest_secret", "ok", port: server.port) == 1 }, "\(server.log)")
        #expect(try status(signedWith: old) == 200)
        #expect(try status(signedWith: new) == 200)
        #expect(try status(signedWith: nil) == 401)
        #expect(try status(signedWith: "\(old)\n\(new)") == 401, "the lines are secrets, not the file")

        try Data("\(new)\r\n".utf8).write(to: secretFile)
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try reloads("ingest_secret", "ok", port: server.port) == 2 }, "\(server.log)")
        #expect(try status(signedWith: new) == 200)
        #expect(try status(signedWith: old) == 401)
        #expect(try reloads("ingest_secret", "failed", port: server.port) == 0)
        let lines = server.log.split(separator: "\n").filter { $0.contains("ingest secrets reloaded") }
        #expect(lines.count == 2 && lines.allSatisfy { $0.contains(secretFile.path) }, "\(server.log)")
        #expect(lines.first?.contains("secrets=2") == true && lines.last?.contains("secrets=1") == true, "\(server.log)")
        #expect(server.terminate() == 0)
        #expect(!server.log.contains("s3cret"), "a secret is in the log")
    }

    /// `$FILE` is the secret file; nil contents remove it. The secrets in use stay, and the failure names the file.
    @Test(arguments: [
        (Optional(" \n\t\r\n"), "is set but empty or blank in $FILE"),
        (nil, "cannot read the ingest secret file $FILE: No such file or directory"),
        (Optional(String(repeating: "h", count: 4097)), "is 4097 bytes; at most 4096 are read"),
        (Optional("s3cret-kept-and-long\nshort\n"), "secret 2 of 2 (one per line) has 5 bytes"),
    ])
    func anIngestSecretFileThatCannotBeUsedOnReloadKeepsTheSecrets(_ contents: String?, _ problem: String) throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let queues = directory.appendingPathComponent("queues.json")
        try Data(staticQueues(["app/main"]).utf8).write(to: queues)
        let secretFile = directory.appendingPathComponent("secret")
        try Data("s3cret-kept\n".utf8).write(to: secretFile)
        let server = try RunningServer(arguments: ["--queues", queues.path, "--ingest-secret-file", secretFile.path])
        if let contents {
            try Data(contents.utf8).write(to: secretFile)
        } else {
            try FileManager.default.removeItem(at: secretFile)
        }
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try reloads("ingest_secret", "failed", port: server.port) == 1 }, "\(server.log)")
        let line = server.log.split(separator: "\n").first { $0.contains("ingest secret reload failed") }
        #expect(line?.contains("ERROR") == true, "\(server.log)")
        #expect(line?.contains(problem.replacingOccurrences(of: "$FILE", with: secretFile.path)) == true, "\(server.log)")
        // The queues file is reloaded on the same signal, on its own.
        #expect(try reloads("queues", "ok", port: server.port) == 1)
        let body = "{}"
        let signature = SignatureVerifier(secret: Array("s3cret-kept".utf8)).signature(for: Array(body.utf8))
        let accepted = try http("POST", "/queues/app/main/ingest", port: server.port, body: body,
            headers: [("X-Stovepipe-Signature-256", signature)])
        #expect(accepted.status == 202, "\(accepted.text)")
        #expect(try http("POST", "/queues/app/main/ingest", port: server.port, body: body).status == 401)
        #expect(server.terminate() == 0)
        #expect(!server.log.contains("s3cret"), "a secret is in the log")
    }

    /// A secret given in the environment or on the command line cannot change while the process runs: only the queues
    /// file is reloaded, and the secret keeps working.
    @Test func aSecretNotFromAFileIsNotReloaded() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let queues = directory.appendingPathComponent("queues.json")
        try Data(staticQueues(["app/main"]).utf8).write(to: queues)
        let server = try RunningServer(arguments: ["--queues", queues.path], environment: ["STOVEPIPE_INGEST_SECRET": "s3cret-env"])
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try reloads("queues", "ok", port: server.port) == 1 }, "\(server.log)")
        #expect(try reloads("ingest_secret", "ok", port: server.port) == 0)
        #expect(try reloads("ingest_secret", "failed", port: server.port) == 0)
        let body = "{}"
        let signature = SignatureVerifier(secret: Array("s3cret-env".utf8)).signature(for: Array(body.utf8))
        #expect(try http("POST", "/queues/app/main/ingest", port: server.port, body: body,
            headers: [("X-Stovepipe-Signature-256", signature)]).status == 202)
        #expect(server.terminate() == 0)
    }
}
