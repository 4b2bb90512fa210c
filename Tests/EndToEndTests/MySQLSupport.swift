import Foundation
import MySQLClient
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs with the URL, and always under CI=true, where a missing URL fails the tests.
let mysqlEndToEndRuns = LiveDatabase.shouldRun

/// A fresh, empty database on the test server; `drop()` removes it.
struct ScratchDatabase {
    /// The test server's URL with this database as its path.
    let url: String
    /// The database's name.
    let name: String
    let server: MySQLConfiguration
    private let configuration: MySQLConfiguration

    init() throws {
        configuration = try LiveDatabase.createDatabase(prefix: "e2e_")
        server = try LiveDatabase.baseConfiguration()
        guard let base = LiveDatabase.baseURL, let name = configuration.database else {
            throw LiveDatabase.Unavailable(description: "no test server URL")
        }
        self.name = name
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

    func drop() { LiveDatabase.drop(configuration) }
}

/// A migrated scratch database with a git repository configured as queue `app/main`: what a test that
/// serves over MySQL starts from. `remove()` drops and deletes all three.
struct MigratedQueueSetup {
    let database: ScratchDatabase
    let repository: TemporaryRepository
    let queues: URL

    init() throws {
        database = try ScratchDatabase()
        do {
            repository = try TemporaryRepository()
        } catch {
            database.drop()
            throw error
        }
        do {
            queues = try gitQueuesFile(repository)
            let migrated = try runStovepipe(["migrate", "--mysql-url", database.url])
            guard migrated.status == 0 else { throw WireError.malformed("migrate failed: \(migrated.stderr)") }
        } catch {
            repository.remove()
            database.drop()
            throw error
        }
    }

    /// Arguments of `serve` on this database and queues file.
    var serveArguments: [String] { ["--mysql-url", database.url, "--queues", queues.path] }

    func remove() {
        try? FileManager.default.removeItem(at: queues)
        repository.remove()
        database.drop()
    }
}

/// What a finished run of the binary printed.
struct Finished {
    let status: Int32
    let stdout: String
    let stderr: String
}

/// Runs the `stovepipe` binary with `arguments` to completion; output goes through files, so neither pipe
/// can fill up and stall it.
func runStovepipe(_ arguments: [String], environment: [String: String] = [:], timeout seconds: Double = 60) throws -> Finished {
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
    process.environment = RunningServer.environment(environment)
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

/// A queues file with one git queue `app/main` over `repository`.
func gitQueuesFile(_ repository: TemporaryRepository) throws -> URL {
    let file = repository.url.appendingPathExtension("queues.json")
    let document = #"{"queues": [{"name": "app/main", "source": {"type": "git", "repository": "\#(repository.url.path)", "ref": "refs/heads/main"}}]}"#
    try Data(document.utf8).write(to: file)
    return file
}
