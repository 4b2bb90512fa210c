import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// How many descriptors process `pid` holds open.
private func openDescriptors(of pid: Int32) -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
}

/// What each descriptor of process `pid` refers to (`socket:[inode]`, a path, `anon_inode:[eventfd]`), sorted.
private func descriptorTargets(of pid: Int32) -> [String] {
    let directory = "/proc/\(pid)/fd"
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    return names.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\($0)") }.sorted()
}

/// The socket descriptors of process `pid` (`socket:[inode]`), sorted: the listener's and connections'.
private func socketDescriptors(of pid: Int32) -> [String] {
    descriptorTargets(of: pid).filter { $0.hasPrefix("socket:") }
}

/// The CPU time process `pid` has used, user and system, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
private func cpuTicks(of pid: Int32) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let afterName = text.lastIndex(of: ")")
    else { return -1 }
    // Fields after the parenthesised name start with field 3 (state).
    let fields = text[text.index(after: afterName)...].split(separator: " ")
    guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { return -1 }
    return user + system
}

/// The value of the unlabelled metric `name` in the server's `/metrics`, nil if it cannot be read.
private func metric(_ name: String, port: Int) -> Double? {
    guard let response = try? http("GET", "/metrics", port: port) else { return nil }
    let line = response.text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
    return line.flatMap { Double($0.dropFirst(name.count + 1)) }
}

/// Sends `text` on `fd`, ignoring failures (the server may already have closed).
private func sendAll(_ fd: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
}

/// Closes `fd` with SO_LINGER 0: a reset instead of a FIN.
private func reset(_ fd: Int32) {
    var option = linger(l_onoff: 1, l_linger: 0)
    _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
    close(fd)
}

/// Reads until the server closes or the socket's receive timeout passes.
private func drain(_ fd: Int32) {
    var buffer = [UInt8](repeating: 0, count: 65536)
    while buffer.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}
}

// Serialized: each test runs the real binary, and the machine has two cores.
@Suite("Connection resources of the real binary", .serialized)
struct ConnectionResourceTests {
    @Test("resets, half-closes and abandoned requests leave no descriptor behind")
    func noDescriptorLeaks() throws {
        let server = try RunningServer(arguments: ["--idle-timeout", "2", "--header-timeout", "2"])
        let pid = server.process.processIdentifier
        // Sockets only, counted before any connection (once one was accepted, its descriptor may outlive the client's
        // close a moment): each worker thread makes its keep-alive eventfd when it starts, which on a loaded machine
        // can be after this count, so other descriptors may grow without any leak.
        let baseline = socketDescriptors(of: pid)
        let baselineTargets = descriptorTargets(of: pid)
        #expect(baseline.count > 0)
        #expect(try http("GET", "/healthz", port: server.port).status == 200)
        let accepted = try #require(metric("stovepipe_http_connections_total", port: server.port))
        let request = "GET /queues HTTP/1.1\r\nHost: t\r\n\r\n"
        for round in 0..<10 {
            // Reset mid-head, right after a request (mid-response or while queued), and after a response.
            let midHead = try connectLoopback(port: server.port)
            sendAll(midHead, "GET /queues HTTP/1.1\r\nHo")
            let afterRequest = try connectLoopback(port: server.port)
            sendAll(afterRequest, request + request)
            let afterResponse = try connectLoopback(port: server.port, timeoutSeconds: 20)
            sendAll(afterResponse, request)
            var first = [UInt8](repeating: 0, count: 1)
            _ = first.withUnsafeMutableBytes { recv(afterResponse, $0.baseAddress, 1, 0) }
            reset(midHead)
            reset(afterRequest)
            reset(afterResponse)
            // A half-close after a request, which is answered; a FIN mid-head; a connection that sends nothing.
            let halfClosed = try connectLoopback(port: server.port, timeoutSeconds: 20)
            sendAll(halfClosed, request)
            shutdown(halfClosed, Int32(SHUT_WR))
            drain(halfClosed)
            close(halfClosed)
            let finMidHead = try connectLoopback(port: server.port)
            sendAll(finMidHead, round.isMultiple(of: 2) ? "GET / HTTP/1.1\r\n" : "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc")
            close(finMidHead)
            close(try connectLoopback(port: server.port))
        }
        // Every connection above was accepted (60, and the scrapes'), and all of them were closed again.
        #expect(eventually(within: 30) { (metric("stovepipe_http_connections_total", port: server.port) ?? 0) >= accepted + 60 })
        #expect(
            eventually(within: 30) { socketDescriptors(of: pid) == baseline },
            "sockets: \(socketDescriptors(of: pid)), at the start: \(baseline); all now \(descriptorTargets(of: pid)), at the start \(baselineTargets)")
        #expect(try http("GET", "/healthz", port: server.port).status == 200)
        #expect(server.terminate() == 0)
    }

    @Test("an open files limit below --max-connections is named at start-up, as the point where connections get 503")
    func openFilesLimitBelowMaxConnectionsIsWarned() throws {
        var limit = rlimit()
        try #require(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0)
        // The server raises its soft limit to this hard one, which a child inherits; unlimited leaves nothing to test.
        try #require(limit.rlim_max < 1 << 30, "no finite open files limit to exceed")
        let tooMany = try RunningServer(arguments: ["--max-connections", String(limit.rlim_max)])
        // Lines reach the file from the log's writer thread: waited for, not read at once.
        #expect(eventually { tooMany.log.contains("WARNING stovepipe: the open files limit is below") }, "\(tooMany.log)")
        #expect(tooMany.terminate() == 0)
        let fits = try RunningServer(arguments: ["--max-connections", "100"])
        // The line after the check: once it is written, a warning would have been too.
        #expect(try http("GET", "/healthz", port: fits.port).status == 200)
        #expect(eventually { fits.log.contains("http.route=/healthz") })
        #expect(!fits.log.contains("open files limit"), "\(fits.log)")
        #expect(fits.terminate() == 0)
    }

    @Test("out of descriptors, accepting backs off instead of spinning, and recovers once some are free")
    func acceptUnderDescriptorExhaustion() throws {
        let server = try RunningServer(arguments: [])
        let pid = server.process.processIdentifier
        #expect(try http("GET", "/healthz", port: server.port).status == 200)
        let baseline = openDescriptors(of: pid)
        // Room for a few connections only; lowered from outside, after start-up raised the soft limit to the hard one.
        let limit = baseline + 4
        let prlimit = Process()
        prlimit.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        prlimit.arguments = ["prlimit", "--pid", String(pid), "--nofile=\(limit):\(limit)"]
        try prlimit.run()
        prlimit.waitUntilExit()
        try #require(prlimit.terminationStatus == 0, "prlimit failed")

        var clients: [Int32] = []
        defer { for fd in clients { close(fd) } }
        for _ in 0..<16 { clients.append(try connectLoopback(port: server.port, timeoutSeconds: 2)) }
        #expect(eventually(within: 20) { openDescriptors(of: pid) >= limit })
        // A spinning loop would use about the whole window; backing off uses almost none of it.
        let before = cpuTicks(of: pid)
        let window = 2.0
        usleep(UInt32(window * 1_000_000))
        let used = Double(cpuTicks(of: pid) - before) / Double(sysconf(Int32(_SC_CLK_TCK)))
        #expect(used < window / 4, "the server used \(used) s of CPU in \(window) s while out of descriptors")
        #expect(server.log.contains("accept failed"), "accept never ran out of descriptors")
        // Twelve connections found no descriptor, so accept failed again and again, but the log says so once for the
        // whole stretch.
        let failures = server.log.split(separator: "\n").filter { $0.contains("accept failed") }
        #expect(failures.count == 1, "\(failures)")

        for fd in clients { close(fd) }
        clients = []
        #expect(
            eventually(within: 30) { (try? http("GET", "/healthz", port: server.port).status) == 200 },
            "no answer once descriptors were free again")
        // Once accepting works again the log says so (from the log's writer thread: waited for); the metric counts
        // every failure.
        #expect(eventually { server.log.contains("accepting again") }, "no line once accepting worked again")
        #expect((metric("stovepipe_http_accept_failures_total", port: server.port) ?? 0) >= 2)
        #expect(server.terminate() == 0)
    }
}
