import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A response read off a real socket.
struct WireResponse {
    let status: Int
    let headers: [String: String]
    let body: [UInt8]

    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:] }
    var text: String { String(decoding: body, as: UTF8.self) }
}

enum WireError: Error { case connect(Int32), io, malformed(String) }

/// A blocking socket connected to 127.0.0.1:`port`, with a receive timeout; the caller closes it.
func connectLoopback(port: Int, timeoutSeconds: Int = 30) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw WireError.connect(errno) }
    var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        let failure = errno
        close(fd)
        throw WireError.connect(failure)
    }
    return fd
}

/// One HTTP/1.1 exchange over a fresh loopback connection (`Connection: close`).
func http(
    _ method: String, _ path: String, port: Int, body: String = "", headers: [(String, String)] = []
) throws -> WireResponse {
    let fd = try connectLoopback(port: port)
    defer { close(fd) }
    var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: \(body.utf8.count)\r\n"
    for (name, value) in headers { request += "\(name): \(value)\r\n" }
    request += "\r\n" + body
    let bytes = Array(request.utf8)
    var sent = 0
    while sent < bytes.count {
        let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { throw WireError.io }
        sent += n
    }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n == 0 { break }
        guard n > 0 else { throw WireError.io }
        received += buffer[0..<n]
    }
    return try parseResponse(received)
}

func parseResponse(_ bytes: [UInt8]) throws -> WireResponse {
    let separator: [UInt8] = [13, 10, 13, 10]
    guard let end = bytes.indices.first(where: { bytes[$0...].starts(with: separator) }) else {
        throw WireError.malformed("no header end")
    }
    let head = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
    let statusParts = head[0].split(separator: " ")
    guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw WireError.malformed(head[0]) }
    var headers: [String: String] = [:]
    for line in head.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return WireResponse(status: status, headers: headers, body: Array(bytes[(end + 4)...]))
}

/// Waits until `condition` holds or `seconds` pass; returns whether it held.
func eventually(within seconds: Double = 15, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        usleep(20_000)
    }
    return try condition()
}

/// How many bytes process `pid` has read so far (`rchar` in /proc/<pid>/io), 0 if that cannot be told.
func bytesRead(by pid: Int32) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/io", encoding: .utf8) else { return 0 }
    let line = text.split(separator: "\n").first { $0.hasPrefix("rchar:") }
    return line.flatMap { Int($0.dropFirst("rchar:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
}

/// Runs git with an argument vector in `directory`.
@discardableResult
func git(_ arguments: [String], in directory: URL) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"] + arguments
    process.currentDirectoryURL = directory
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw WireError.malformed("git \(arguments) failed") }
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

/// A temporary git repository with a `main` branch.
struct TemporaryRepository {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        try git(["init", "-q"], in: url)
    }

    @discardableResult
    func commit(_ message: String) throws -> String {
        try git(["commit", "-q", "--allow-empty", "-m", message], in: url)
        return try git(["rev-parse", "HEAD"], in: url)
    }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// The real `stovepipe` binary, started on an ephemeral port.
final class RunningServer {
    let process = Process()
    let port: Int
    /// `http`, or `https` when started with a certificate.
    let scheme: String
    private let stdout = Pipe()
    let stderrFile: URL

    static var binary: URL {
        if let path = ProcessInfo.processInfo.environment["STOVEPIPE_BINARY"] { return URL(fileURLWithPath: path) }
        // The test bundle and the executable are built into the same products directory.
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("stovepipe").path),
            directory.path != "/"
        {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent("stovepipe")
    }

    /// The environment of a stovepipe a test starts: this process's without the STOVEPIPE_* settings of the shell
    /// the tests run from (a database, an ingest secret or a log format there would change what a test runs), then
    /// `overrides`.
    static func environment(_ overrides: [String: String] = [:]) -> [String: String] {
        ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("STOVEPIPE_") }.merging(overrides) { _, new in new }
    }

    /// Starts the binary; `duringStartUp` runs once it is started, before its listening line is awaited.
    init(arguments: [String], environment: [String: String] = [:], duringStartUp: (Process) throws -> Void = { _ in }) throws {
        process.executableURL = Self.binary
        process.arguments = ["serve", "--port", "0"] + arguments
        process.environment = Self.environment(environment)
        process.standardOutput = stdout
        stderrFile = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-e2e-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: stderrFile)
        // The child inherits the signal mask of the thread that spawns it, and the test runner's threads block
        // SIGHUP (libdispatch blocks asynchronous signals on its workers); a supervisor leaves it unblocked.
        var hangUp = sigset_t()
        sigemptyset(&hangUp)
        sigaddset(&hangUp, SIGHUP)
        var runnerMask = sigset_t()
        pthread_sigmask(SIG_UNBLOCK, &hangUp, &runnerMask)
        let process = self.process
        let spawned = Result { try process.run() }
        pthread_sigmask(SIG_SETMASK, &runnerMask, nil)
        try spawned.get()
        do {
            try duringStartUp(process)
        } catch {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw error
        }
        // The first stdout line is exactly `listening on http://HOST:PORT` (https with TLS).
        var line: [UInt8] = []
        let handle = stdout.fileHandleForReading
        while let byte = try handle.read(upToCount: 1)?.first, byte != UInt8(ascii: "\n") { line.append(byte) }
        let text = String(decoding: line, as: UTF8.self)
        let scheme = text.hasPrefix("listening on https://") ? "https" : "http"
        guard text.hasPrefix("listening on \(scheme)://127.0.0.1:"), let port = Int(text.split(separator: ":").last ?? "") else {
            process.terminate()
            throw WireError.malformed("unexpected first line '\(text)'; log: \((try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "")")
        }
        self.port = port
        self.scheme = scheme
    }

    /// Sends SIGTERM and waits for the exit status.
    func terminate() -> Int32 {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    var log: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: stderrFile)
    }
}
