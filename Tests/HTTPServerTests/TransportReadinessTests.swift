import COpenSSL
import Glibc
import Logging
import Synchronization
import Testing

@testable import HTTPServer

/// A transport that plays back scripted reads and writes and counts calls, to check how a
/// connection reacts to a TLS layer's wants without relying on socket buffer sizes.
private final class ScriptedTransport: ConnectionTransport {
    struct Script {
        var reads: [(result: ScriptedRead, waitsForWritable: Bool, buffered: Bool)] = []
        var writes: [(result: TransportResult, waitsForReadable: Bool)] = []
        var readCalls = 0
        var writeCalls = 0
        var established = true
        var readWaitsForWritable = false
        var writeWaitsForReadable = false
        var buffered = false
    }

    enum ScriptedRead {
        case bytes(String)
        case other(TransportResult)
    }

    let script = Mutex(Script())

    var isEstablished: Bool { script.withLock { $0.established } }
    var readWaitsForWritable: Bool { script.withLock { $0.readWaitsForWritable } }
    var writeWaitsForReadable: Bool { script.withLock { $0.writeWaitsForReadable } }
    var hasBufferedInput: Bool { script.withLock { $0.buffered } }
    var shutdownWaitsForWritable: Bool { false }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> TransportResult {
        script.withLock { script in
            script.readCalls += 1
            guard !script.reads.isEmpty else {
                script.readWaitsForWritable = false
                script.buffered = false
                return .wouldBlock
            }
            let next = script.reads.removeFirst()
            script.readWaitsForWritable = next.waitsForWritable
            script.buffered = next.buffered
            switch next.result {
            case .bytes(let text):
                let bytes = Array(text.utf8)
                buffer.copyBytes(from: bytes)
                return .transferred(bytes.count)
            case .other(let result):
                return result
            }
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> TransportResult {
        script.withLock { script in
            script.writeCalls += 1
            guard !script.writes.isEmpty else {
                script.writeWaitsForReadable = false
                return .transferred(bytes.count)
            }
            let next = script.writes.removeFirst()
            script.writeWaitsForReadable = next.waitsForReadable
            return next.result
        }
    }

    func shutdownWrite() {}
    func close() {}
}

/// One connection over a scripted transport, with the loop and context it needs but no thread.
private final class Harness {
    let transport = ScriptedTransport()
    let listenFD: Int32
    let loop: EventLoop
    let connection: Connection
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    var writer = ResponseWriter(serverName: "test")

    /// `transport` replaces the scripted one, which then goes unused.
    init(handshakeTimeout: Duration = .seconds(10), transport: (any ConnectionTransport)? = nil) throws {
        var configuration = HTTPServerConfiguration(host: "127.0.0.1", port: 0)
        configuration.tls = TLSConfiguration(
            certificateChainPath: "/nonexistent", privateKeyPath: "/nonexistent", handshakeTimeout: handshakeTimeout)
        let context = ServerContext(
            configuration: configuration, responder: echoResponder, observer: nil, logger: Logger(label: "test"))
        listenFD = try Sockets.listen(host: "127.0.0.1", port: 0, backlog: 1).fd
        loop = try EventLoop(index: 0, listenFD: listenFD, context: context, listenerReleased: WaitableCounter())
        connection = Connection(
            fd: -1, transport: transport ?? self.transport, token: 1, peer: "test", loop: loop, context: context)
    }

    deinit {
        scratch.deallocate()
        loop.closeDescriptors()
        Glibc.close(listenFD)
    }

    func events(readable: Bool = false, writable: Bool = false) -> ConnectionActions {
        connection.handleEvents(readable: readable, hangUp: false, writable: writable, scratch: scratch, writer: &writer)
    }
}

@Suite("How a connection follows its transport's wants")
struct TransportReadinessTests {
    @Test("a read that waits to send is retried on a writable-only event")
    func readRetriedWhenWritable() throws {
        let harness = try Harness()
        harness.transport.script.withLock { $0.reads = [(.other(.wouldBlock), true, false)] }
        _ = harness.events(readable: true)
        #expect(harness.transport.script.withLock { $0.readCalls } == 1)
        _ = harness.events(writable: true)
        #expect(harness.transport.script.withLock { $0.readCalls } == 2)
        // Once the read no longer waits to send, writable events leave reading alone.
        _ = harness.events(writable: true)
        #expect(harness.transport.script.withLock { $0.readCalls } == 2)
    }

    @Test("a write that waits to receive is retried on a readable-only event")
    func writeRetriedWhenReadable() throws {
        let harness = try Harness()
        harness.transport.script.withLock { $0.writes = [(.wouldBlock, true)] }
        _ = harness.connection.complete(response: Array("HTTP/1.1 200 OK\r\n\r\n".utf8), closes: false, writer: &harness.writer)
        #expect(harness.transport.script.withLock { $0.writeCalls } == 1)
        _ = harness.events(readable: true)
        #expect(harness.transport.script.withLock { $0.writeCalls } == 2)
    }

    @Test("a close_notify the full socket did not take goes out, with the FIN, once the socket is writable")
    func closeNotifyRetriedWhenWritable() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("server")
        let store = TLSContextStore(
            configuration: TLSConfiguration(certificateChainPath: certificate.certificate, privateKeyPath: certificate.key))
        try store.reload()
        // A Unix socket pair: a send succeeds while the queued bytes are below SO_SNDBUF and fails with EAGAIN
        // after, and SIOCOUTQ tells how many are queued, so the socket can be filled to a known point.
        var pair: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &pair) == 0)
        defer { close(pair[1]) }
        let server = try #require(store.makeTransport(fd: pair[0]))
        let harness = try Harness(transport: server)
        defer { _ = harness.connection.closeTransport() }
        let client = try TLSPeer(fd: pair[1])
        var scratch = [UInt8](repeating: 0, count: 16 * 1024)
        for _ in 0..<20 where !(client.isEstablished && server.isEstablished) {
            client.handshake()
            _ = scratch.withUnsafeMutableBytes { server.read(into: $0) }
        }
        try #require(client.isEstablished && server.isEstablished)

        var size: Int32 = 4096
        setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var limit: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &limit, &length)
        func queued() -> Int32 {
            var count: Int32 = 0
            _ = ioctl(pair[0], UInt(TIOCOUTQ), &count)
            return count
        }
        // One-byte records until one more would cross the limit: the response still goes, the alert then cannot.
        var filled = 0
        var before = queued()
        var step: Int32 = 0
        repeat {
            try #require([UInt8(ascii: "x")].withUnsafeBytes { server.write($0) } == .transferred(1))
            filled += 1
            let now = queued()
            step = now - before
            before = now
        } while before + step < limit
        let response = Array("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
        #expect(harness.connection.complete(response: response, closes: true, writer: &harness.writer).isEmpty)
        try #require(queued() >= limit, "the socket should have been full when the close_notify was due")

        // The client reads everything; the socket has room again, which epoll reports as writable.
        #expect(client.readAll() == filled + response.count)
        #expect(!client.closeNotifyReceived)
        _ = harness.events(writable: true)
        #expect(client.readAll() == 0)
        #expect(client.closeNotifyReceived, "no close_notify after the socket became writable")
        #expect(scratch.withUnsafeMutableBytes { recv(pair[1], $0.baseAddress, $0.count, 0) } == 0, "no FIN")
    }

    @Test("a short read with input still buffered in the transport reads on")
    func bufferedInputReadsOn() throws {
        let harness = try Harness()
        harness.transport.script.withLock {
            $0.reads = [(.bytes("GET /a HT"), false, true), (.bytes("TP/1.1\r\nHost: t\r\n\r\n"), false, false)]
        }
        let actions = harness.events(readable: true)
        #expect(actions.dispatch?.parsed.request.path == "/a")
    }

    @Test("a failed handshake is a protocol error and closes")
    func handshakeFailure() throws {
        let harness = try Harness()
        harness.transport.script.withLock { $0.reads = [(.other(.handshakeFailed), false, false)] }
        let actions = harness.events(readable: true)
        #expect(actions.close)
        #expect(actions.protocolError == .tlsHandshakeFailed)
    }

    @Test("an unfinished handshake is closed at the handshake timeout, not before")
    func handshakeTimeout() throws {
        let harness = try Harness(handshakeTimeout: .seconds(2))
        harness.transport.script.withLock { $0.established = false }
        let start = harness.connection.acceptedAt
        let early = harness.connection.checkDeadlines(now: start + 1_900_000_000, writer: &harness.writer)
        #expect(!early.close)
        let late = harness.connection.checkDeadlines(now: start + 2_000_000_000, writer: &harness.writer)
        #expect(late.close)
        #expect(late.protocolError == .tlsHandshakeTimeout)
    }
}

@Suite("How a connection pauses and resumes reading")
struct ConnectionReadPauseTests {
    @Test("a pipelined body larger than the read limit is read on once the request before it is answered")
    func pipelinedLargeBodyResumes() throws {
        let harness = try Harness()
        harness.transport.script.withLock { $0.reads = [(.bytes("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"), false, false)] }
        #expect(harness.events(readable: true).dispatch?.parsed.request.path == "/slow")

        // While /slow is handled the client pipelines a POST whose body is larger than the input a busy
        // connection buffers: reading pauses partway through it, the rest waiting in the transport.
        let body = String(repeating: "b", count: 100_000)
        let post = Array("POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        let parts = stride(from: 0, to: post.count, by: 40_000).map {
            String(decoding: post[$0..<min($0 + 40_000, post.count)], as: UTF8.self)
        }
        harness.transport.script.withLock { $0.reads = parts.map { (.bytes($0), false, true) } }
        #expect(harness.events(readable: true).isEmpty)
        #expect(harness.transport.script.withLock { $0.reads.count } > 0, "reading should have paused")

        // The answer to /slow goes out; then the loop does what the connection asks, as LoopRunner.perform
        // does. No new readiness edge comes: the client already sent everything.
        var actions = harness.connection.complete(
            response: Array("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".utf8), closes: false, writer: &harness.writer)
        var dispatched = actions.dispatch
        while dispatched == nil && actions.resumeReading {
            actions = harness.connection.handleEvents(
                readable: true, hangUp: true, writable: true, scratch: harness.scratch, writer: &harness.writer)
            dispatched = actions.dispatch
        }
        #expect(dispatched?.parsed.request.path == "/big")
        #expect(dispatched?.parsed.request.body.count == body.utf8.count)
    }
}

/// The client end of a TLS connection over a non-blocking socket, certificate unchecked.
private final class TLSPeer {
    private let context: OpaquePointer
    private let ssl: OpaquePointer
    private(set) var isEstablished = false
    private(set) var closeNotifyReceived = false

    init(fd: Int32) throws {
        context = try #require(SSL_CTX_new(TLS_client_method()))
        guard let ssl = SSL_new(context) else {
            SSL_CTX_free(context)
            throw TLSPeerError.setup
        }
        self.ssl = ssl
        SSL_set_fd(ssl, fd)
        SSL_set_connect_state(ssl)
    }

    deinit {
        SSL_free(ssl)
        SSL_CTX_free(context)
    }

    /// Moves the handshake on as far as the socket allows.
    func handshake() {
        guard !isEstablished else { return }
        ERR_clear_error()
        isEstablished = SSL_do_handshake(ssl) == 1
    }

    /// Reads until the socket has nothing more; how many bytes of application data came.
    func readAll() -> Int {
        var total = 0
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            ERR_clear_error()
            let count = buffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if count > 0 {
                total += Int(count)
                continue
            }
            if SSL_get_error(ssl, count) == SSL_ERROR_ZERO_RETURN { closeNotifyReceived = true }
            return total
        }
    }
}

private enum TLSPeerError: Error { case setup }
