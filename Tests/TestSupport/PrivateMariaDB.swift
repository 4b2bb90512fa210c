import Foundation

#if canImport(Glibc)
import Glibc
#endif

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

    /// Kills the server with SIGKILL, as a crash would, and waits until it has exited; its data directory stays,
    /// and `start()` brings it back (through crash recovery) on the same port.
    public func kill() throws {
        let pid = try send(SIGKILL)
        // Not our child, so it cannot be waited for: poll until it is gone (or a zombie its parent has yet to reap).
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            if stat.isEmpty || stat.contains(") Z ") { return }
            usleep(10_000)
        }
        throw LiveDatabase.Unavailable(description: "mariadbd \(pid) still runs 30 s after SIGKILL")
    }

    /// Sends `signal` to the server (SIGSTOP freezes it as a hung host would); returns its pid.
    @discardableResult
    public func send(_ signal: Int32) throws -> Int32 {
        let text = (try? String(contentsOf: directory.appendingPathComponent("pid"), encoding: .utf8)) ?? ""
        guard let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw LiveDatabase.Unavailable(description: "no pid file in \(directory.path)")
        }
        // The pid file may name a process that has since taken the number: only the mariadbd of this directory
        // is signalled, as the script's stop does.
        let arguments = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))).map {
            String(decoding: $0.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
        } ?? ""
        guard arguments.contains("--datadir=") && arguments.contains(directory.lastPathComponent + "/data ") else {
            throw LiveDatabase.Unavailable(description: "pid \(pid) is not the mariadbd of \(directory.path)")
        }
        guard Glibc.kill(pid, signal) == 0 else {
            throw LiveDatabase.Unavailable(description: "kill -\(signal) \(pid) failed (errno \(errno))")
        }
        return pid
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
