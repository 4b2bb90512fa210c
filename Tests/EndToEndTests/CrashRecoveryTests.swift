import Foundation
import MySQLClient
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The private test server's URL, or nil (a failure under CI=true, where the MySQL suites must run).
func testMySQLURL() -> String? {
    let environment = ProcessInfo.processInfo.environment
    if let url = environment["STOVEPIPE_TEST_MYSQL_URL"], !url.isEmpty { return url.hasSuffix("/") ? url : url + "/" }
    if environment["CI"] == "true" { Issue.record("CI=true but STOVEPIPE_TEST_MYSQL_URL is not set: the MySQL suites must run") }
    return nil
}

/// Creates a fresh database on the test server and returns its URL; dropped by `dropDatabase`.
func createDatabase(_ base: String) throws -> (url: String, name: String) {
    let name = "e2e_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
    try MySQLLibrary.initialize()
    let connection = try MySQLConnection(configuration: try MySQLConfiguration(url: base))
    defer { connection.close() }
    try connection.executeScript(unsafeSQL: "CREATE DATABASE `\(name)`")
    return (base + name, name)
}

func dropDatabase(_ base: String, _ name: String) {
    guard let configuration = try? MySQLConfiguration(url: base), let connection = try? MySQLConnection(configuration: configuration)
    else { return }
    defer { connection.close() }
    try? connection.executeScript(unsafeSQL: "DROP DATABASE IF EXISTS `\(name)`")
}

/// Runs the binary to completion and returns its exit status.
func runStovepipe(_ arguments: [String]) throws -> Int32 {
    let process = Process()
    process.executableURL = RunningServer.binary
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus
}

@Suite(.serialized) struct CrashRecoveryTests {
    @Test func killNineDuringIngestLosesNoAcceptedRequest() throws {
        guard let base = testMySQLURL() else { return }
        let database = try createDatabase(base)
        defer { dropDatabase(base, database.name) }
        #expect(try runStovepipe(["migrate", "--mysql-url", database.url]) == 0)

        let repository = try TemporaryRepository()
        defer { repository.remove() }
        try repository.commit("c0")
        let queues = repository.url.appendingPathExtension("queues.json")
        try Data(#"{"queues": [{"name": "app/main", "source": {"type": "git", "repository": "\#(repository.url.path)", "ref": "refs/heads/main"}}]}"#.utf8)
            .write(to: queues)
        let arguments = [
            "--mysql-url", database.url, "--queues", queues.path, "--topic-lease-seconds", "2",
            "--topic-visibility-seconds", "2", "--topic-poll-interval-ms", "100",
        ]

        let first = try RunningServer(arguments: arguments)
        let port = first.port
        let accepted = Mutex<Set<String>>([])
        let stop = Atomic<Bool>(false)
        let done = DispatchSemaphore(value: 0)
        // One thread moves the branch and ingests each new head; two more ingest whatever the head is.
        let committer = Thread {
            defer { done.signal() }
            var n = 1
            while !stop.load(ordering: .relaxed) {
                guard (try? repository.commit("c\(n)")) != nil else { return }
                n += 1
                guard let response = try? http("POST", "/queues/app/main/ingest", port: port) else { continue }
                if (200..<300).contains(response.status), let id = response.json["id"] as? String {
                    _ = accepted.withLock { $0.insert(id) }
                }
            }
        }
        let repeaters = (0..<2).map { _ in
            Thread {
                defer { done.signal() }
                while !stop.load(ordering: .relaxed) {
                    guard let response = try? http("POST", "/queues/app/main/ingest", port: port) else { continue }
                    if (200..<300).contains(response.status), let id = response.json["id"] as? String {
                        _ = accepted.withLock { $0.insert(id) }
                    }
                }
            }
        }
        committer.start()
        repeaters.forEach { $0.start() }
        #expect(eventually(within: 60) { accepted.withLock { $0.count } >= 25 })
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        stop.store(true, ordering: .relaxed)
        for _ in 0..<3 { _ = done.wait(timeout: .now() + 60) }

        let ids = accepted.withLock { $0 }
        #expect(ids.count >= 25)
        let second = try RunningServer(arguments: arguments)
        func state(_ id: String) -> String? {
            (try? http("GET", "/requests/\(id)", port: second.port))?.json["state"] as? String
        }
        let settled = eventually(within: 60) {
            ids.allSatisfy { ["processing", "superseded"].contains(state($0)) }
        }
        #expect(settled, "still accepted: \(ids.filter { state($0) == "accepted" }.sorted())")
        #expect(second.terminate() == 0)
    }
}
