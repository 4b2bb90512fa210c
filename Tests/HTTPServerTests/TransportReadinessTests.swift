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

    init(handshakeTimeout: Duration = .seconds(10)) throws {
        var configuration = HTTPServerConfiguration(host: "127.0.0.1", port: 0)
        configuration.tls = TLSConfiguration(
            certificateChainPath: "/nonexistent", privateKeyPath: "/nonexistent", handshakeTimeout: handshakeTimeout)
        let context = ServerContext(
            configuration: configuration, responder: echoResponder, observer: nil, logger: Logger(label: "test"))
        listenFD = try Sockets.listen(host: "127.0.0.1", port: 0, backlog: 1).fd
        loop = try EventLoop(index: 0, listenFD: listenFD, context: context, listenerReleased: WaitableCounter())
        connection = Connection(
            fd: -1, transport: transport, token: 1, peer: "test", loop: loop, context: context)
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
