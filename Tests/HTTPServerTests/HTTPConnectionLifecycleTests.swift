import Foundation
import Glibc
import HTTPServer
import Logging
import Synchronization
import Testing

/// Records the paths a responder saw, in order.
private final class PathLog: Sendable {
    private let paths = Mutex<[String]>([])

    func append(_ path: String) { paths.withLock { $0.append(path) } }

    var all: [String] { paths.withLock { $0 } }
}

/// A flag one thread sets and others poll.
private final class Flag: Sendable {
    private let value = Mutex(false)

    func set() { value.withLock { $0 = true } }

    var isSet: Bool { value.withLock { $0 } }
}

@Suite("HTTP connection lifecycle: pipelining, half-close, resets, slow peers, shutdown")
struct HTTPConnectionLifecycleTests {
    @Test("pipelined requests whose handlers take different times are answered in request order")
    func pipelinedOrderWithUnevenHandlers() throws {
        let responder = ClosureResponder { request in
            // The first is the slowest: any second worker would finish the others before it.
            if request.path == "/slow" { usleep(300_000) }
            if request.path == "/medium" { usleep(100_000) }
            return HTTPResponse(status: 200, body: Array(request.path.utf8))
        }
        try withServer(testConfiguration { $0.workerThreads = 4 }, responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/slow") + get("/fast") + get("/medium") + get("/fast2"))
            for path in ["/slow", "/fast", "/medium", "/fast2"] {
                #expect(try client.readResponse(timeout: .seconds(20)).bodyText == path)
            }
        }
    }

    @Test("a request pipelined behind Connection: close is never handled or answered")
    func pipelinedAfterClose() throws {
        let log = PathLog()
        let responder = ClosureResponder { request in
            log.append(request.path)
            return HTTPResponse(status: 200, body: Array(request.path.utf8))
        }
        try withServer(responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/first", "Connection: close\r\n") + get("/second"))
            let response = try client.readResponse(timeout: .seconds(20))
            #expect(response.bodyText == "/first")
            #expect(response.header("Connection") == "close")
            #expect(client.waitForClose(timeout: .seconds(20)))
            #expect(!client.hasBufferedBytes)
            #expect(log.all == ["/first"])
        }
    }

    @Test("a malformed first request with more requests behind it gets one 400 and a close")
    func errorWithBytesBehind() throws {
        let log = PathLog()
        let responder = ClosureResponder { request in
            log.append(request.path)
            return HTTPResponse(status: 200)
        }
        try withServer(responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send("GET /bad HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n" + get("/behind") + get("/behind2"))
            let response = try client.readResponse(timeout: .seconds(20))
            #expect(response.status == 400)
            #expect(response.header("Connection") == "close")
            #expect(client.waitForClose(timeout: .seconds(20)))
            #expect(!client.hasBufferedBytes)
            #expect(log.all.isEmpty)
        }
    }

    @Test("the last request a connection may carry closes it; requests pipelined behind it are not answered")
    func requestLimitWithPipelining() throws {
        let log = PathLog()
        let responder = ClosureResponder { request in
            log.append(request.path)
            return HTTPResponse(status: 200, body: Array(request.path.utf8))
        }
        try withServer(testConfiguration { $0.maxRequestsPerConnection = 2 }, responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/1") + get("/2") + get("/3"))
            let first = try client.readResponse(timeout: .seconds(20))
            #expect(first.bodyText == "/1")
            #expect(first.header("Connection") == nil)
            let second = try client.readResponse(timeout: .seconds(20))
            #expect(second.bodyText == "/2")
            #expect(second.header("Connection") == "close")
            #expect(client.waitForClose(timeout: .seconds(20)))
            #expect(!client.hasBufferedBytes)
            #expect(log.all == ["/1", "/2"])
        }
    }

    @Test("a client that half-closes after pipelined requests gets every answer, then a close")
    func halfCloseAfterPipelined() throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/a") + get("/b") + get("/c"))
            client.shutdownWrite()
            for path in ["/a", "/b", "/c"] {
                #expect(try client.readResponse(timeout: .seconds(20)).header("X-Path") == path)
            }
            #expect(client.waitForClose(timeout: .seconds(20)))
        }
    }

    @Test("a client that half-closes mid-headers is closed without an answer")
    func halfCloseMidHeaders() throws {
        let observer = RecordingObserver()
        try withServer(observer: observer) { port, _ in
            let client = try TestClient(port: port)
            try client.send("GET /partial HTTP/1.1\r\nHost: t\r\nX-Half: ")
            client.shutdownWrite()
            #expect(client.waitForClose(timeout: .seconds(20)))
            #expect(!client.hasBufferedBytes)
            #expect(eventually(timeout: .seconds(20)) { observer.closed == 1 })
            #expect(observer.completed.isEmpty)
        }
    }

    @Test("a client that half-closes right after its next request, while a worker waits on it, gets the answer")
    func halfCloseDuringWorkerWait() throws {
        let configuration = testConfiguration { $0.workerKeepAliveWait = .milliseconds(1000) }
        try withServer(configuration) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/first"))
            #expect(try client.readResponse(timeout: .seconds(20)).header("X-Path") == "/first")
            try client.send(get("/second"))
            client.shutdownWrite()
            #expect(try client.readResponse(timeout: .seconds(20)).header("X-Path") == "/second")
            #expect(client.waitForClose(timeout: .seconds(20)))
        }
    }

    @Test("a client that resets while a worker waits on its connection is closed and the worker serves others")
    func resetDuringWorkerWait() throws {
        let observer = RecordingObserver()
        let configuration = testConfiguration {
            $0.workerThreads = 1
            $0.workerKeepAliveWait = .milliseconds(1000)
        }
        try withServer(configuration, observer: observer) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/first"))
            #expect(try client.readResponse(timeout: .seconds(20)).status == 200)
            client.reset()
            #expect(eventually(timeout: .seconds(20)) { observer.closed == 1 })
            let other = try TestClient(port: port)
            try other.send(get("/other"))
            #expect(try other.readResponse(timeout: .seconds(20)).status == 200)
        }
    }

    @Test("a client that resets while its request waits for a worker is closed; the worker answers the rest")
    func resetWhileQueued() throws {
        let gate = Gate()
        let log = PathLog()
        let observer = RecordingObserver()
        let responder = ClosureResponder { request in
            log.append(request.path)
            if request.path == "/block" { gate.wait(timeout: .seconds(30)) }
            return HTTPResponse(status: 200)
        }
        try withServer(testConfiguration { $0.workerThreads = 1 }, responder: responder, observer: observer) { port, _ in
            let busy = try TestClient(port: port)
            try busy.send(get("/block"))
            #expect(eventually(timeout: .seconds(20)) { gate.waiting == 1 })
            let queued = try TestClient(port: port)
            try queued.send(get("/queued"))
            #expect(eventually(timeout: .seconds(20)) { observer.opened == 2 })
            queued.reset()
            #expect(eventually(timeout: .seconds(20)) { observer.closed == 1 })
            gate.release()
            #expect(try busy.readResponse(timeout: .seconds(20)).status == 200)
            try busy.send(get("/after"))
            #expect(try busy.readResponse(timeout: .seconds(20)).status == 200)
        }
    }

    @Test("a client that never reads a large response is closed at the idle timeout; the worker is not held")
    func neverReadingClient() throws {
        let observer = RecordingObserver()
        let size = 16 * 1024 * 1024
        let responder = ClosureResponder { request in
            HTTPResponse(status: 200, body: request.path == "/big" ? [UInt8](repeating: 7, count: size) : [])
        }
        let configuration = testConfiguration {
            $0.workerThreads = 1
            $0.idleTimeout = .seconds(1)
        }
        try withServer(configuration, responder: responder, observer: observer) { port, _ in
            let stuck = try TestClient(port: port)
            try stuck.send(get("/big"))
            // The only worker answers someone else while the big response sits unsent.
            #expect(eventually(timeout: .seconds(20)) { observer.completed == [200] })
            let other = try TestClient(port: port)
            try other.send(get("/small", "Connection: close\r\n"))
            #expect(try other.readResponse(timeout: .seconds(20)).status == 200)
            #expect(other.waitForClose(timeout: .seconds(20)))
            // The other connection, and the stuck one once its writes made no progress for the idle timeout.
            #expect(eventually(timeout: .seconds(20)) { observer.closed == 2 })
        }
    }

    @Test("a client that resets with a large response half sent is closed, and the server keeps serving")
    func resetMidResponse() throws {
        let observer = RecordingObserver()
        let responder = ClosureResponder { request in
            HTTPResponse(status: 200, body: request.path == "/big" ? [UInt8](repeating: 7, count: 16 * 1024 * 1024) : [])
        }
        try withServer(responder: responder, observer: observer) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/big"))
            #expect(eventually(timeout: .seconds(20)) { observer.completed == [200] })
            client.readSlowly(for: .milliseconds(50))
            client.reset()
            #expect(eventually(timeout: .seconds(20)) { observer.closed == 1 })
            let next = try TestClient(port: port)
            try next.send(get("/small"))
            #expect(try next.readResponse(timeout: .seconds(20)).status == 200)
        }
    }

    @Test("the idle timeout runs from the end of a slow response, not from when the worker handed it over")
    func idleClockAfterSlowResponse() throws {
        // More than loopback socket buffers hold, so the last bytes go out only after the slow reading.
        let size = 32 * 1024 * 1024
        let responder = ClosureResponder { request in
            HTTPResponse(status: 200, body: request.path == "/big" ? [UInt8](repeating: 7, count: size) : [])
        }
        try withServer(testConfiguration { $0.idleTimeout = .seconds(2) }, responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/big"))
            // Read for longer than the idle timeout, making progress all along.
            let started = ContinuousClock.now
            client.readSlowly(for: .seconds(3))
            let response = try client.readResponse(timeout: .seconds(30))
            #expect(response.body.count == size)
            #expect(ContinuousClock.now - started >= .seconds(3))
            // RFC 9112 §9.5: the connection is idle only from here on.
            #expect(!client.waitForClose(timeout: .seconds(1)))
            try client.send(get("/next"))
            #expect(try client.readResponse(timeout: .seconds(20)).status == 200)
        }
    }

    @Test("Expect: 100-continue with the body sent at once is answered, and the connection keeps serving")
    func continueBodyWithoutWaiting() throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            try client.send(
                "POST /c HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello" + get("/after"))
            var response = try client.readResponse(timeout: .seconds(20))
            if response.status == 100 { response = try client.readResponse(timeout: .seconds(20)) }
            #expect(response.status == 200)
            #expect(response.bodyText == "hello")
            #expect(try client.readResponse(timeout: .seconds(20)).header("X-Path") == "/after")
        }
    }

    @Test("a 413 to Expect: 100-continue never reads the body sent anyway as a request (RFC 9110 §10.1.1)")
    func continueRejectedBodySentAnyway() throws {
        let log = PathLog()
        let responder = ClosureResponder { request in
            log.append(request.path)
            return HTTPResponse(status: 200)
        }
        try withServer(testConfiguration { $0.maxBodyBytes = 100 }, responder: responder) { port, _ in
            let client = try TestClient(port: port)
            let smuggled = get("/smuggled")
            let body = smuggled + String(repeating: "x", count: 200 - smuggled.utf8.count)
            try client.send("PUT /big HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 200\r\n\r\n" + body)
            let response = try client.readResponse(timeout: .seconds(20))
            #expect(response.status == 413)
            #expect(response.header("Connection") == "close")
            #expect(client.waitForClose(timeout: .seconds(20)))
            #expect(!client.hasBufferedBytes)
            #expect(log.all.isEmpty)
        }
    }

    @Test("a responder's 401 to Expect: 100-continue is followed by the next request, not by the body")
    func continueResponderRejects() throws {
        let responder = ClosureResponder { request in
            if request.path == "/protected" { return HTTPResponse(status: 401) }
            return HTTPResponse(status: 200, body: Array(request.path.utf8))
        }
        try withServer(responder: responder) { port, _ in
            let client = try TestClient(port: port)
            let smuggled = get("/smuggled")
            try client.send(
                "POST /protected HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: \(smuggled.utf8.count)\r\n\r\n"
                    + smuggled + get("/next"))
            var response = try client.readResponse(timeout: .seconds(20))
            if response.status == 100 { response = try client.readResponse(timeout: .seconds(20)) }
            #expect(response.status == 401)
            #expect(try client.readResponse(timeout: .seconds(20)).bodyText == "/next")
        }
    }

    @Test("requests the loop answers inline, pipelined behind one another, bypass a full worker queue too")
    func pipelinedInlineRequests() throws {
        let gate = Gate()
        let responder = ClosureResponder(inlinePaths: ["/live"]) { request in
            if request.path == "/block" { gate.wait(timeout: .seconds(30)) }
            return HTTPResponse(status: 200, body: Array(request.path.utf8))
        }
        try withServer(HTTPServerLimitTests.oneWorkerOneQueueSlot, responder: responder) { port, _ in
            let (busy, queued) = try HTTPServerLimitTests.blockWorkerAndFillQueue(port: port, gate: gate)
            let live = try TestClient(port: port)
            try live.send(get("/live") + get("/live"))
            for _ in 0..<2 {
                let response = try live.readResponse(timeout: .seconds(20))
                #expect(response.status == 200)
                #expect(response.header("Connection") == nil)
            }
            gate.release()
            #expect(try busy.readResponse(timeout: .seconds(20)).status == 200)
            #expect(try queued.readResponse(timeout: .seconds(20)).status == 200)
        }
    }
}

@Suite("HTTP shutdown with connections in every state")
struct HTTPConnectionShutdownTests {
    /// Starts `server.shutdown()` on its own thread; the flag turns true once it returned.
    private static func shutDownInBackground(_ server: HTTPServer) -> Flag {
        let finished = Flag()
        Thread {
            server.shutdown()
            finished.set()
        }.start()
        return finished
    }

    private static func makeServer(
        _ configuration: HTTPServerConfiguration, responder: any HTTPResponder, observer: RecordingObserver? = nil
    ) -> HTTPServer {
        var logger = Logger(label: "shutdown-test")
        logger.logLevel = .warning
        return HTTPServer(configuration: configuration, responder: responder, logger: logger, observer: observer)
    }

    @Test("shutdown with pipelined requests: the one in flight is answered with close, the rest are not")
    func shutdownPipelined() throws {
        let gate = Gate()
        let log = PathLog()
        let responder = ClosureResponder { request in
            log.append(request.path)
            if request.path == "/slow" { gate.wait(timeout: .seconds(30)) }
            return HTTPResponse(status: 200, body: Array(request.path.utf8))
        }
        let server = Self.makeServer(testConfiguration { $0.shutdownTimeout = .seconds(20) }, responder: responder)
        let port = try server.start()
        let client = try TestClient(port: port)
        try client.send(get("/slow") + get("/behind"))
        #expect(eventually(timeout: .seconds(20)) { gate.waiting == 1 })
        let finished = Self.shutDownInBackground(server)
        #expect(eventually(timeout: .seconds(20)) { (try? TestClient(port: port)) == nil })
        gate.release()
        let response = try client.readResponse(timeout: .seconds(20))
        #expect(response.bodyText == "/slow")
        #expect(response.header("Connection") == "close")
        #expect(client.waitForClose(timeout: .seconds(20)))
        #expect(!client.hasBufferedBytes)
        #expect(eventually(timeout: .seconds(20)) { finished.isSet })
        #expect(log.all == ["/slow"])
    }

    @Test("shutdown: a partial head and a partial body get 503 and a close at once; the request in flight still finishes")
    func shutdownPartialRequests() throws {
        let gate = Gate()
        let log = PathLog()
        let responder = ClosureResponder { request in
            log.append(request.path)
            if request.path == "/slow" { gate.wait(timeout: .seconds(60)) }
            return HTTPResponse(status: 200, body: request.body)
        }
        // The drain deadline and the header and body timeouts are far beyond the waits below: only closing partial
        // requests at once lets the two stalled clients see the end of their connection in time.
        let server = Self.makeServer(
            testConfiguration {
                $0.shutdownTimeout = .seconds(60)
                $0.headerTimeout = .seconds(60)
                $0.bodyTimeout = .seconds(60)
            }, responder: responder)
        let port = try server.start()
        let inFlight = try TestClient(port: port)
        try inFlight.send(get("/slow"))
        #expect(eventually(timeout: .seconds(20)) { gate.waiting == 1 })
        // A complete request with the start of the next head behind it in one write: once the first is answered,
        // the connection holds a partial head.
        let midHead = try TestClient(port: port)
        try midHead.send(get("/first") + "GET /never HTTP/1.1\r\nHost: t\r\n")
        #expect(try midHead.readResponse(timeout: .seconds(20)).status == 200)
        // The 100 Continue shows the head was parsed: the connection now waits for the rest of the body.
        let midBody = try TestClient(port: port)
        try midBody.send("POST /upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n")
        #expect(try midBody.readResponse(timeout: .seconds(20)).status == 100)
        try midBody.send("hello")

        let finished = Self.shutDownInBackground(server)
        for client in [midHead, midBody] {
            let response = try client.readResponse(timeout: .seconds(10))
            #expect(response.status == 503)
            #expect(response.header("Connection") == "close")
            #expect(response.header("Retry-After") == "1")
            #expect(client.waitForClose(timeout: .seconds(10)))
        }
        #expect(!finished.isSet)
        gate.release()
        let answered = try inFlight.readResponse(timeout: .seconds(20))
        #expect(answered.status == 200)
        #expect(answered.header("Connection") == "close")
        #expect(inFlight.waitForClose(timeout: .seconds(20)))
        #expect(eventually(timeout: .seconds(20)) { finished.isSet })
        #expect(log.all == ["/slow", "/first"])
    }

    @Test("shutdown does not wait past its timeout for a client stalled mid-head")
    func shutdownStalledHead() throws {
        let server = Self.makeServer(
            testConfiguration {
                $0.shutdownTimeout = .milliseconds(500)
                $0.headerTimeout = .seconds(60)
            }, responder: echoResponder)
        let port = try server.start()
        let client = try TestClient(port: port)
        try client.send("GET /never-finished HTTP/1.1\r\nHost: t\r\n")
        let started = ContinuousClock.now
        server.shutdown()
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(client.waitForClose(timeout: .seconds(20)))
    }
}
