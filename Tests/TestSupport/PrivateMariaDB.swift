import Foundation

/// Whether a `mariadbd` binary is on PATH (or in /usr/sbin, where Debian installs it).
public let mariadbdInstalled: Bool = {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin"]
    return directories.contains { FileManager.default.isExecutableFile(atPath: $0 + "/mariadbd") }
}()

/// Runs with a live-MySQL environment (the URL set) and a local mariadbd, and always under CI=true, where a
/// missing mariadbd fails the test instead of skipping it.
public let privateServerSuitesRun: Bool = {
    let environment = ProcessInfo.processInfo.environment
    let urlSet = environment[LiveDatabase.urlVariable].map { !$0.isEmpty } ?? false
    return (urlSet && mariadbdInstalled) || LiveDatabase.isCI
}()

/// `scripts/mysql-test-db`, found by walking up from this file to the package root.
public func testDatabaseScript() throws -> URL {
    var directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    while directory.path != "/" {
        let script = directory.appendingPathComponent("scripts/mysql-test-db")
        if FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path),
            FileManager.default.isExecutableFile(atPath: script.path)
        {
            return script
        }
        directory.deleteLastPathComponent()
    }
    throw LiveDatabase.Unavailable(description: "scripts/mysql-test-db not found above \(#filePath)")
}

/// A MariaDB server of one test's own, in its own directory, that the test stops and starts.
public struct PrivateServer: Sendable {
    let script: URL
    /// The directory the server keeps its data, socket and logs in.
    public let directory: URL

    /// Creates the directory, lets `prepare` add to it (`tls/` for a TLS server), and starts the server in it;
    /// returns the server and its URL (ending in `/`).
    public static func start(preparing prepare: (URL) throws -> Void = { _ in }) throws -> (PrivateServer, url: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-outage-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let server = PrivateServer(script: try testDatabaseScript(), directory: directory)
        do {
            try prepare(directory)
            return (server, try server.start())
        } catch {
            server.stopAndRemove()
            throw error
        }
    }

    /// Starts (or restarts, on the same port) the server; returns the URL the script prints.
    @discardableResult
    public func start() throws -> String {
        try run("start").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Stops the server; its data directory stays.
    public func stop() throws {
        _ = try run("stop")
    }

    /// Stops the server if it runs and deletes its directory.
    public func stopAndRemove() {
        _ = try? run("stop")
        try? FileManager.default.removeItem(at: directory)
    }

    private func run(_ command: String) throws -> String {
        let process = Process()
        process.executableURL = script
        process.arguments = [command, directory.path]
        let output = Pipe()
        process.standardOutput = output
        let errorLog = directory.appendingPathComponent("script-\(command).log")
        _ = FileManager.default.createFile(atPath: errorLog.path, contents: nil)
        let errorHandle = try FileHandle(forWritingTo: errorLog)
        defer { try? errorHandle.close() }
        process.standardError = errorHandle
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let log = (try? String(contentsOf: errorLog, encoding: .utf8)) ?? ""
            throw LiveDatabase.Unavailable(description: "mysql-test-db \(command) exited \(process.terminationStatus): \(log)")
        }
        return String(decoding: data, as: UTF8.self)
    }
}
