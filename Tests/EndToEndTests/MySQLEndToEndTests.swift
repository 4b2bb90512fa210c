import Foundation
import MySQLClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The test server's URL, or nil when it is unset.
private let testServerURL: String? = ProcessInfo.processInfo.environment["STOVEPIPE_TEST_MYSQL_URL"].flatMap {
    $0.isEmpty ? nil : $0
}

/// Runs with the URL, and always under CI=true, where a missing URL fails the tests.
private let mysqlEndToEndRuns = testServerURL != nil || ProcessInfo.processInfo.environment["CI"] == "true"

/// A fresh, empty database on the test server; `drop()` removes it.
private struct ScratchDatabase {
    /// The test server's URL with this database as its path.
    let url: String
    let name: String
    let server: MySQLConfiguration

    init() throws {
        guard let base = testServerURL else {
            throw WireError.malformed("STOVEPIPE_TEST_MYSQL_URL is not set, and CI=true requires the MySQL end-to-end tests")
        }
        var server = try MySQLConfiguration(url: base)
        let loopback: Set<String> = ["127.0.0.1", "::1", "localhost"]
        guard server.socketPath != nil || loopback.contains(server.host ?? "") else {
            throw WireError.malformed("refusing a non-loopback MySQL test server")
        }
        server.database = nil
        name = "e2e_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let admin = try MySQLConnection(configuration: server)
        try admin.execute("CREATE DATABASE \(identifier: name) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        self.server = server
        url = Self.url(base, database: name)
    }

    /// `base` with its path (RFC 3986 §3.3) replaced by `/database`; the query, if any, is kept.
    private static func url(_ base: String, database: String) -> String {
        let scheme = "mysql://"
        let rest = base.dropFirst(scheme.count)
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let query = rest.firstIndex(of: "?").map { String(rest[$0...]) } ?? ""
        return base.prefix(scheme.count) + authority + "/" + database + query
    }

    func drop() {
        if let admin = try? MySQLConnection(configuration: server) {
            _ = try? admin.execute("DROP DATABASE IF EXISTS \(identifier: name)")
        }
    }
}

/// What a finished run of the binary printed.
private struct Finished {
    let status: Int32
    let stdout: String
    let stderr: String
}

/// Runs the `stovepipe` binary with `arguments` to completion; output goes through files, so neither pipe
/// can fill up and stall it.
private func runStovepipe(_ arguments: [String], timeout seconds: Double = 60) throws -> Finished {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-run-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let outFile = directory.appendingPathComponent("stdout")
    let errFile = directory.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: outFile.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errFile.path, contents: nil)
    let outHandle = try FileHandle(forWritingTo: outFile)
    let errHandle = try FileHandle(forWritingTo: errFile)
    defer {
        try? outHandle.close()
        try? errHandle.close()
    }
    let process = Process()
    process.executableURL = RunningServer.binary
    process.arguments = arguments
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = outHandle
    process.standardError = errHandle
    try process.run()
    let exited = eventually(within: seconds) { !process.isRunning }
    if !exited {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        throw WireError.malformed("stovepipe \(arguments.first ?? "") did not exit within \(seconds) s")
    }
    process.waitUntilExit()
    return Finished(
        status: process.terminationStatus,
        stdout: (try? String(contentsOf: outFile, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: errFile, encoding: .utf8)) ?? "")
}

@Suite(.serialized, .enabled(if: mysqlEndToEndRuns)) struct MySQLEndToEndTests {
    /// A queues file with one git queue `app/main` over `repository`.
    private func queuesFile(_ repository: TemporaryRepository) throws -> URL {
        let file = repository.url.appendingPathExtension("queues.json")
        let document = #"{"queues": [{"name": "app/main", "source": {"type": "git", "repository": "\#(repository.url.path)", "ref": "refs/heads/main"}}]}"#
        try Data(document.utf8).write(to: file)
        return file
    }

    @Test func migrateServeRestartAndIngestAgainOverMySQL() throws {
        let database = try ScratchDatabase()
        defer { database.drop() }
        let repository = try TemporaryRepository()
        defer { repository.remove() }
        let queues = try queuesFile(repository)
        defer { try? FileManager.default.removeItem(at: queues) }

        let migrated = try runStovepipe(["migrate", "--mysql-url", database.url])
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(migrated.stdout.contains("applied migrations"), "\(migrated.stdout)")
        #expect(!migrated.stdout.contains(database.server.password ?? "\u{0}"), "migrate printed the password")
        let again = try runStovepipe(["migrate", "--mysql-url", database.url])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.contains("schema already current"), "\(again.stdout)")

        let first = try repository.commit("one")
        let arguments = ["--mysql-url", database.url, "--queues", queues.path]
        let server = try RunningServer(arguments: arguments)
        let minted = try http("POST", "/queues/app/main/ingest", port: server.port)
        #expect(minted.status == 202, "\(minted.text)")
        #expect(minted.json["id"] as? String == "request/app/main/1")
        #expect((minted.json["uri"] as? String)?.hasSuffix(first) == true)
        let duplicate = try http("POST", "/queues/app/main/ingest", port: server.port)
        #expect(duplicate.status == 200, "\(duplicate.text)")
        #expect(duplicate.json["id"] as? String == "request/app/main/1")
        #expect(duplicate.json["deduplicated"] as? Bool == true)
        let processing = try eventually {
            try http("GET", "/requests/request/app/main/1", port: server.port).json["state"] as? String == "processing"
        }
        #expect(processing, "request 1 did not reach processing")
        let ready = try http("GET", "/readyz", port: server.port)
        #expect(ready.status == 200, "\(ready.text)")
        #expect(server.terminate() == 0, "\(server.log)")
        #expect(!server.log.contains(database.server.password ?? "\u{0}"), "the log carries the password")

        // A new process on the same database: what the first one wrote is still there.
        let restarted = try RunningServer(arguments: arguments)
        let durable = try http("POST", "/queues/app/main/ingest", port: restarted.port)
        #expect(durable.status == 200, "\(durable.text)")
        #expect(durable.json["id"] as? String == "request/app/main/1")
        #expect(durable.json["deduplicated"] as? Bool == true)
        #expect(try http("GET", "/requests/request/app/main/1", port: restarted.port).json["state"] as? String == "processing")

        let second = try repository.commit("two")
        let next = try http("POST", "/queues/app/main/ingest", port: restarted.port)
        #expect(next.status == 202, "\(next.text)")
        #expect(next.json["id"] as? String == "request/app/main/2")
        #expect((next.json["uri"] as? String)?.hasSuffix(second) == true)
        let queue = try http("GET", "/queues/app/main", port: restarted.port)
        #expect(queue.json["latest_request_id"] as? String == "request/app/main/2")
        #expect(restarted.terminate() == 0, "\(restarted.log)")
    }

    @Test func serveRefusesAnUnmigratedDatabaseAndSaysToRunMigrate() throws {
        let database = try ScratchDatabase()
        defer { database.drop() }
        let finished = try runStovepipe(["serve", "--port", "0", "--mysql-url", database.url])
        #expect(finished.status != 0)
        #expect(!finished.stdout.contains("listening on"), "\(finished.stdout)")
        #expect(finished.stderr.contains("stovepipe migrate"), "\(finished.stderr)")
        #expect(!finished.stderr.contains(database.server.password ?? "\u{0}"), "stderr carries the password")
    }
}
