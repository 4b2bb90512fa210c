import Foundation
import Glibc
import HTTPServer
import Logging
import Synchronization

/// Why a test client gave up.
enum ClientError: Error, CustomStringConvertible {
    case connectFailed(Int32)
    case sendFailed(Int32)
    case timedOut(String)
    case closed(String)
    case malformed(String)

    var description: String {
        switch self {
        case .connectFailed(let code): "connect failed: errno \(code)"
        case .sendFailed(let code): "send failed: errno \(code)"
        case .timedOut(let what): "timed out waiting for \(what)"
        case .closed(let what): "connection closed while waiting for \(what)"
        case .malformed(let what): "malformed response: \(what)"
        }
    }
}

/// A response as the test client read it.
struct ClientResponse {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: [UInt8]

    func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// A blocking loopback client on a raw Glibc socket; every wait has a deadline.
final class TestClient {
    private(set) var fd: Int32
    private var buffer: [UInt8] = []
    private var sawEOF = false

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            Glibc.close(fd)
            throw ClientError.connectFailed(code)
        }
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Half-closes: the server sees end of input but can still answer.
    func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw ClientError.sendFailed(errno) }
            sent += count
        }
    }

    /// Closes with SO_LINGER 0, so the kernel sends a RST instead of a FIN.
    func reset() {
        var option = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
        Glibc.close(fd)
        fd = -1
    }

    /// Reads more bytes into the buffer; false on EOF or reset.
    private func fill(until deadline: ContinuousClock.Instant, what: String) throws -> Bool {
        let remaining = deadline - .now
        guard remaining > .zero else { throw ClientError.timedOut(what) }
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(
            remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)
        let ready = poll(&poller, 1, max(1, milliseconds))
        if ready == 0 { throw ClientError.timedOut(what) }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
        if count <= 0 {
            sawEOF = true
            return false
        }
        buffer.append(contentsOf: chunk[0..<count])
        return true
    }

    /// Reads one response; `head` for a response to HEAD (a length but no body).
    func readResponse(head: Bool = false, timeout: Duration = .seconds(5)) throws -> ClientResponse {
        let deadline = ContinuousClock.now + timeout
        var headEnd: Int?
        while headEnd == nil {
            headEnd = findHeadEnd()
            if headEnd == nil, try !fill(until: deadline, what: "a response head") {
                throw ClientError.closed("a response head")
            }
        }
        guard let end = headEnd else { throw ClientError.malformed("no head") }
        let headText = String(decoding: buffer[0..<end], as: UTF8.self)
        var lines = headText.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0] == "HTTP/1.1", let status = Int(parts[1]) else {
            throw ClientError.malformed(statusLine)
        }
        var headers: [(name: String, value: String)] = []
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { throw ClientError.malformed(line) }
            headers.append(
                (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            )
        }
        buffer.removeFirst(end + 4)
        var response = ClientResponse(status: status, headers: headers, body: [])
        let length =
            head || status < 200 || status == 204 || status == 304
            ? 0 : Int(response.header("Content-Length") ?? "0") ?? 0
        while buffer.count < length {
            if try !fill(until: deadline, what: "a response body") { throw ClientError.closed("a response body") }
        }
        response.body = Array(buffer[0..<length])
        buffer.removeFirst(length)
        return response
    }

    /// Waits for the server to close: true on EOF or reset, false if it stayed open until the timeout.
    func waitForClose(timeout: Duration = .seconds(5)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !sawEOF {
            do {
                if try !fill(until: deadline, what: "close") { return true }
            } catch {
                return false
            }
        }
        return true
    }

    /// Reads what has arrived every 20 ms, at most 16 KiB at a time, for `duration`: a slow reader.
    func readSlowly(for duration: Duration) {
        let deadline = ContinuousClock.now + duration
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while ContinuousClock.now < deadline {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count > 0 { buffer.append(contentsOf: chunk[0..<count]) }
            usleep(20_000)
        }
    }

    /// Whether unread response bytes are buffered.
    var hasBufferedBytes: Bool { !buffer.isEmpty }

    private func findHeadEnd() -> Int? {
        guard buffer.count >= 4 else { return nil }
        for index in 0...(buffer.count - 4)
        where buffer[index] == 13 && buffer[index + 1] == 10 && buffer[index + 2] == 13 && buffer[index + 3] == 10 {
            return index
        }
        return nil
    }
}

/// A responder built from a closure.
struct ClosureResponder: HTTPResponder {
    let body: @Sendable (HTTPRequest) throws -> HTTPResponse
    /// Undecoded paths answered on the event loop.
    var inlinePaths: Set<String> = []

    init(inlinePaths: Set<String> = [], _ body: @escaping @Sendable (HTTPRequest) throws -> HTTPResponse) {
        self.body = body
        self.inlinePaths = inlinePaths
    }

    func respond(to request: HTTPRequest) throws -> HTTPResponse { try body(request) }

    func respondsInline(method: String, rawPath: String) -> Bool { inlinePaths.contains(rawPath) }
}

/// Echoes the method, path, query, request id and body, so tests can check what arrived.
let echoResponder = ClosureResponder { request in
    var headers = HTTPHeaders()
    headers.add("X-Method", request.method)
    headers.add("X-Path", request.path)
    headers.add("X-Query", request.query)
    headers.add("X-Seen-Request-ID", request.requestID)
    headers.add("X-Peer", request.peer)
    return HTTPResponse(status: 200, headers: headers, body: request.body)
}

/// Records every observer callback.
final class RecordingObserver: HTTPServerObserver {
    private let state = Mutex<
        (opened: Int, closed: Int, refused: Int, shed: Int, errors: [HTTPProtocolError], completed: [Int])
    >(
        (0, 0, 0, 0, [], [])
    )

    func connectionOpened(peer: String) { state.withLock { $0.opened += 1 } }
    func connectionClosed(peer: String) { state.withLock { $0.closed += 1 } }
    func connectionRefused(peer: String) { state.withLock { $0.refused += 1 } }
    func protocolError(_ error: HTTPProtocolError) { state.withLock { $0.errors.append(error) } }
    func requestShed() { state.withLock { $0.shed += 1 } }
    func requestCompleted(method: String, status: Int, duration: Duration, requestBytes: Int, responseBytes: Int) {
        state.withLock { $0.completed.append(status) }
    }

    var opened: Int { state.withLock { $0.opened } }
    var closed: Int { state.withLock { $0.closed } }
    var refused: Int { state.withLock { $0.refused } }
    var shed: Int { state.withLock { $0.shed } }
    var errors: [HTTPProtocolError] { state.withLock { $0.errors } }
    var completed: [Int] { state.withLock { $0.completed } }
}

/// A one-way gate a blocking responder can wait on, released by the test.
final class Gate: Sendable {
    private let open = Mutex(false)
    private let arrivals = Mutex(0)

    func wait(timeout: Duration = .seconds(10)) {
        arrivals.withLock { $0 += 1 }
        _ = eventually(timeout: timeout) { open.withLock { $0 } }
    }

    func release() { open.withLock { $0 = true } }

    var waiting: Int { arrivals.withLock { $0 } }
}

/// Polls `condition` until it holds or `timeout` passes; returns its last value.
@discardableResult
func eventually(timeout: Duration = .seconds(5), _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(2000)
    }
    return condition()
}

/// A configuration for tests: ephemeral port, few threads, short shutdown.
func testConfiguration(_ change: (inout HTTPServerConfiguration) -> Void = { _ in }) -> HTTPServerConfiguration {
    var configuration = HTTPServerConfiguration(
        host: "127.0.0.1", port: 0, eventLoopThreads: 1, workerThreads: 2, shutdownTimeout: .seconds(5)
    )
    change(&configuration)
    return configuration
}

/// Runs `body` against a started server and always shuts it down.
func withServer(
    _ configuration: HTTPServerConfiguration = testConfiguration(),
    responder: any HTTPResponder = echoResponder,
    observer: RecordingObserver? = nil,
    _ body: (_ port: Int, _ server: HTTPServer) throws -> Void
) throws {
    var logger = Logger(label: "http-test")
    logger.logLevel = .warning
    let server = HTTPServer(configuration: configuration, responder: responder, logger: logger, observer: observer)
    let port = try server.start()
    defer { server.shutdown() }
    try body(port, server)
}

/// A GET request with Host.
func get(_ path: String, _ extra: String = "") -> String {
    "GET \(path) HTTP/1.1\r\nHost: test\r\n\(extra)\r\n"
}
