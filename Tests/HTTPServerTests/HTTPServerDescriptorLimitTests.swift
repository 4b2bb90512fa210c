import Foundation
import Glibc
import Testing

/// The benchmark server (Benchmarks/HTTPBenchServer) run as a child, so its open-files limit can be lowered
/// without touching the test process's, which parallel tests share.
private final class BenchServerChild {
    let process: Process
    let port: Int
    private let directory: URL

    init() throws {
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let server = URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent(
            "HTTPBenchServer")
        guard FileManager.default.isExecutableFile(atPath: server.path) else {
            throw ChildProcessError.notFound(server.path + " (swift build --build-tests builds it)")
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-emfile-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let output = directory.appendingPathComponent("stdout")
        guard FileManager.default.createFile(atPath: output.path, contents: nil) else {
            throw ChildProcessError.failed("HTTPBenchServer", status: -1, stderr: "cannot create its output file")
        }
        let process = Process()
        self.process = process
        process.executableURL = server
        process.environment = ["PORT": "0", "EVENT_LOOPS": "1", "WORKERS": "1"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: output)
        process.standardError = FileHandle.nullDevice
        try process.run()
        var port: Int?
        eventually(timeout: .seconds(30)) {
            let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
            port = text.split(separator: "\n").first { $0.hasPrefix("listening on ") }
                .flatMap { Int($0.dropFirst("listening on ".count)) }
            return port != nil || !process.isRunning
        }
        guard let port else {
            process.terminate()
            process.waitUntilExit()
            throw ChildProcessError.failed("HTTPBenchServer", status: process.terminationStatus, stderr: "no port")
        }
        self.port = port
    }

    deinit {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: directory)
    }

    /// The child's open descriptor numbers, read from /proc.
    func openDescriptors() -> [Int] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/fd"))
        return (entries ?? []).compactMap { Int($0) }
    }

    /// Sets the child's soft and hard open-files limit with prlimit(1) (Glibc's prlimit(2) is not visible to Swift).
    func limitOpenFiles(to count: Int) throws {
        try ChildProcess.run(
            "prlimit", ["--pid", String(process.processIdentifier), "--nofile=\(count):\(count)"], directory: directory)
    }
}

@Suite("HTTP server past the open-files limit")
struct HTTPServerDescriptorLimitTests {
    @Test("a client connecting while the server is out of descriptors gets a prompt 503, and the server recovers")
    func outOfDescriptorsAnswers503() throws {
        let server = try BenchServerChild()
        let warmUp = try TestClient(port: server.port)
        try warmUp.send(get("/healthz"))
        #expect(try warmUp.readResponse().status == 200)
        // A limit two past the highest descriptor, and idle connections in every free number below it (at least one
        // more than the warm-up's): a new descriptor can then come from nowhere, so accept(2) fails with EMFILE.
        var baseline: [Int] = []
        #expect(eventually { baseline = server.openDescriptors(); return !baseline.isEmpty })
        let limit = (baseline.max() ?? 0) + 2
        try server.limitOpenFiles(to: limit)
        let held = try [warmUp] + (0..<(limit - baseline.count)).map { _ in try TestClient(port: server.port) }
        #expect(
            eventually { server.openDescriptors().count >= limit },
            "open: \(server.openDescriptors()), limit \(limit), at the start: \(baseline)")

        // Twice, the second client sending its request at once as most do: the spare is taken back after each.
        for sends in [false, true] {
            let refused = try TestClient(port: server.port)
            if sends { try refused.send(get("/healthz")) }
            let response = try refused.readResponse(timeout: .seconds(10))
            #expect(response.status == 503)
            #expect(response.header("Retry-After") == "1")
            #expect(response.header("Connection") == "close")
            #expect(refused.waitForClose(timeout: .seconds(10)))
        }

        // The spare is open again, so the one a closed connection frees serves the next client.
        #expect(eventually { server.openDescriptors().count >= limit }, "the spare was not taken back")
        warmUp.reset()
        #expect(eventually(timeout: .seconds(10)) { server.openDescriptors().count < limit })
        let served = try TestClient(port: server.port)
        try served.send(get("/healthz"))
        #expect(try served.readResponse(timeout: .seconds(10)).status == 200)
        withExtendedLifetime(held) {}
    }
}
