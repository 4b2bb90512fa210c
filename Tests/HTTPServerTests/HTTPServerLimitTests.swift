import Foundation
import Glibc
import HTTPServer
import Logging
import Synchronization
import Testing

/// Asserts the next response is `status` with `Connection: close` and a length, and the server closes.
private func expectRejected(_ client: TestClient, status: Int, sourceLocation: SourceLocation = #_sourceLocation) throws
{
    let response = try client.readResponse()
    #expect(response.status == status, sourceLocation: sourceLocation)
    #expect(response.header("Connection") == "close", sourceLocation: sourceLocation)
    #expect(response.header("Content-Length") == String(response.body.count), sourceLocation: sourceLocation)
    #expect(client.waitForClose(), "the server should close", sourceLocation: sourceLocation)
}

/// Sends `bytes` one at a time, `interval` apart (well inside the idle timeout), until the server answers; nil if it
/// never does.
private func trickle(_ bytes: String, to client: TestClient, every interval: Duration) throws -> ClientResponse? {
    for byte in Array(bytes.utf8) {
        try client.send([byte])
        do {
            return try client.readResponse(timeout: interval)
        } catch ClientError.timedOut(_) {
            continue
        }
    }
    return nil
}

@Suite("HTTP server limits, timeouts and protocol errors")
struct HTTPServerLimitTests {
    @Test("a request line over the limit is 414")
    func requestLineLimit() throws {
        let observer = RecordingObserver()
        try withServer(observer: observer) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/" + String(repeating: "a", count: 9000)))
            try expectRejected(client, status: 414)
            #expect(eventually { observer.errors == [.requestLineTooLong] })
        }
    }

    @Test("limits as large as Int allows start a server that answers, instead of overflowing")
    func hugeLimits() throws {
        let configuration = testConfiguration {
            $0.maxRequestLineBytes = .max
            $0.maxHeaderBytes = .max
            $0.maxHeaderFields = .max
            $0.maxBodyBytes = .max
        }
        try withServer(configuration) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/"))
            #expect(try client.readResponse().status == 200)
        }
    }

    @Test("a header section over the byte limit is 431")
    func headerBytesLimit() throws {
        try withServer(testConfiguration { $0.maxHeaderBytes = 1024 }) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/", "X-Big: \(String(repeating: "b", count: 2000))\r\n"))
            try expectRejected(client, status: 431)
        }
    }

    @Test("more header fields than the limit is 431")
    func headerFieldLimit() throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            let fields = (0..<101).map { "X-\($0): v\r\n" }.joined()
            try client.send(get("/", fields))
            try expectRejected(client, status: 431)
        }
    }

    @Test("a Content-Length over the body limit is 413 before the body is read")
    func bodyLimitByLength() throws {
        try withServer(testConfiguration { $0.maxBodyBytes = 1000 }) { port, _ in
            let client = try TestClient(port: port)
            try client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n")
            try expectRejected(client, status: 413)
        }
    }

    @Test("a chunked body over the body limit is 413 while decoding")
    func bodyLimitChunked() throws {
        try withServer(testConfiguration { $0.maxBodyBytes = 1000 }) { port, _ in
            let client = try TestClient(port: port)
            let chunk = "200\r\n" + String(repeating: "x", count: 512) + "\r\n"
            try client.send("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + chunk)
            try expectRejected(client, status: 413)
        }
    }

    @Test("Expect: 100-continue with a body over the limit gets 413 instead of 100")
    func continueOverLimit() throws {
        try withServer(testConfiguration { $0.maxBodyBytes = 1000 }) { port, _ in
            let client = try TestClient(port: port)
            try client.send("PUT / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
            try expectRejected(client, status: 413)
        }
    }

    @Test("a body of exactly the limit is accepted")
    func bodyAtLimit() throws {
        try withServer(testConfiguration { $0.maxBodyBytes = 1000 }) { port, _ in
            let client = try TestClient(port: port)
            try client.send(
                "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + String(repeating: "y", count: 1000))
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.body.count == 1000)
        }
    }

    @Test(
        "smuggling-shaped and malformed requests get an error, Connection: close and a close",
        arguments: [
            ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: t/evil\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),
            ("G(T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
            ("GET / HTTP/3.0\r\nHost: t\r\n\r\n", 505),
            ("GET / HTTP/1.1\r\nHost: t\r\nExpect: something\r\n\r\n", 417),
        ])
    func protocolErrors(request: String, status: Int) throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            try client.send(request)
            try expectRejected(client, status: status)
        }
    }

    @Test(
        "a request whose framing is rejected is answered once, and a request smuggled behind it never is",
        arguments: [
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a b\r\nhello\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : y\r\n\r\n",
            "GET http://user@t/ HTTP/1.1\r\nHost: t\r\n\r\n",
        ])
    func smuggledBehindRejected(request: String) throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            try client.send(request + "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
            try expectRejected(client, status: 400)
            #expect(!client.hasBufferedBytes, "nothing may follow the error response")
        }
    }

    @Test("a NUL inside a header value is 400")
    func nulInValue() throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            try client.send(Array("GET / HTTP/1.1\r\nHost: t\r\nX-A: a".utf8) + [0] + Array("b\r\n\r\n".utf8))
            try expectRejected(client, status: 400)
        }
    }

    @Test("binary garbage gets a 400 and the server keeps serving")
    func garbage() throws {
        try withServer { port, _ in
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<20 {
                let client = try TestClient(port: port)
                try client.send(
                    (0..<512).map { _ in UInt8.random(in: 0...255, using: &generator) } + Array("\r\n\r\n".utf8))
                _ = client.waitForClose()
            }
            let client = try TestClient(port: port)
            try client.send(get("/still-alive"))
            #expect(try client.readResponse().status == 200)
        }
    }

    @Test("headers not complete within the header timeout get 408 and a close")
    func headerTimeout() throws {
        let observer = RecordingObserver()
        try withServer(testConfiguration { $0.headerTimeout = .milliseconds(300) }, observer: observer) { port, _ in
            // Taken before the first byte is sent, when the server's clock for the head starts: a stall of this
            // thread after sending cannot then shorten the interval the bound below measures.
            let started = ContinuousClock.now
            let client = try TestClient(port: port)
            try client.send("GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            try expectRejected(client, status: 408)
            #expect(ContinuousClock.now - started >= .milliseconds(200))
            #expect(eventually { observer.errors == [.headerTimeout] })
        }
    }

    @Test("a slow-header client trickling bytes still times out")
    func slowloris() throws {
        try withServer(testConfiguration { $0.headerTimeout = .milliseconds(300) }) { port, _ in
            let client = try TestClient(port: port)
            try client.send("GET / HTTP/1.1\r\n")
            for index in 0..<5 {
                usleep(100_000)
                try? client.send("X-\(index): v\r\n")
            }
            try expectRejected(client, status: 408)
        }
    }

    @Test("empty lines instead of a request line run the header clock, after the one RFC 9112 §2.2 lets pass")
    func emptyLinesSlowloris() throws {
        let configuration = testConfiguration {
            $0.headerTimeout = .milliseconds(300)
            $0.idleTimeout = .seconds(30)
        }
        try withServer(configuration) { port, _ in
            // Before, each empty line was consumed and left nothing buffered, so only the idle timeout applied:
            // one CRLF per idle timeout, up to the request-line limit's worth, held the connection.
            let client = try TestClient(port: port)
            try client.send("\r\n\r\n")
            #expect(client.waitForClose(timeout: .seconds(5)), "closed by the header timeout, not the 30 s idle one")
            #expect(!client.hasBufferedBytes, "no request began, so nothing is answered")

            // One empty line, as some clients send after a body, is not the start of a head.
            let lenient = try TestClient(port: port)
            try lenient.send(get("/first") + "\r\n")
            #expect(try lenient.readResponse().status == 200)
            #expect(!lenient.waitForClose(timeout: .milliseconds(900)), "a single empty line leaves the connection idle")
            try lenient.send(get("/second"))
            #expect(try lenient.readResponse().header("X-Path") == "/second")
        }
    }

    @Test("an idle keep-alive connection is closed after the idle timeout")
    func idleTimeout() throws {
        try withServer(testConfiguration { $0.idleTimeout = .milliseconds(300) }) { port, _ in
            let client = try TestClient(port: port)
            // Taken before the request, so before the server's last activity on the connection (writing the
            // response), which is where its idle timeout starts; taken after reading the response, a stall of
            // this thread would count against the bound below.
            let started = ContinuousClock.now
            try client.send(get("/"))
            #expect(try client.readResponse().status == 200)
            #expect(client.waitForClose(timeout: .seconds(5)))
            #expect(ContinuousClock.now - started >= .milliseconds(200))
        }
    }

    @Test("a body that stops arriving gets 408")
    func bodyTimeout() throws {
        try withServer(testConfiguration { $0.idleTimeout = .milliseconds(300) }) { port, _ in
            let client = try TestClient(port: port)
            try client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            try expectRejected(client, status: 408)
        }
    }

    static let slowBodyConfiguration = testConfiguration {
        $0.bodyTimeout = .milliseconds(300)
        $0.idleTimeout = .seconds(1)
    }

    @Test(
        "a body trickled inside the idle timeout but never finished gets 408 at the body timeout",
        arguments: [
            ("Content-Length: 1000\r\n", String(repeating: "x", count: 100)),
            ("Transfer-Encoding: chunked\r\n", String(repeating: "1\r\nx\r\n", count: 20)),
            ("Expect: 100-continue\r\nContent-Length: 1000\r\n", String(repeating: "x", count: 100)),
        ])
    func slowBody(framing: String, body: String) throws {
        let observer = RecordingObserver()
        try withServer(Self.slowBodyConfiguration, observer: observer) { port, _ in
            // Before, only the idle timeout bounded a body: a byte every 50 ms held the connection forever.
            let started = ContinuousClock.now
            let client = try TestClient(port: port)
            try client.send("POST / HTTP/1.1\r\nHost: t\r\n\(framing)\r\n")
            if framing.hasPrefix("Expect") { #expect(try client.readResponse().status == 100) }
            let response = try #require(try trickle(body, to: client, every: .milliseconds(50)), "never answered")
            #expect(response.status == 408)
            #expect(response.header("Connection") == "close")
            #expect(ContinuousClock.now - started >= .milliseconds(200))
            #expect(client.waitForClose(), "the server should close")
            #expect(eventually { observer.errors == [.bodyTimeout] })
        }
    }

    @Test("a body pipelined behind a busy worker gets the whole body timeout once the server reads it")
    func slowBodyBehindBusyWorker() throws {
        let gate = Gate()
        let observer = RecordingObserver()
        let responder = ClosureResponder { request in
            if request.path == "/block" { gate.wait() }
            return HTTPResponse(status: 200)
        }
        try withServer(Self.slowBodyConfiguration, responder: responder, observer: observer) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/block") + "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nab")
            #expect(eventually { gate.waiting == 1 })
            // Twice the body timeout: the POST's body waits on our backlog here, not on the client.
            #expect(!client.waitForClose(timeout: .milliseconds(600)), "not timed out while the worker is busy")
            #expect(!client.hasBufferedBytes)
            // Taken before the release, so before the server reads the POST and starts its body clock.
            let released = ContinuousClock.now
            gate.release()
            #expect(try client.readResponse().status == 200)
            let body = String(repeating: "x", count: 98)
            let response = try #require(try trickle(body, to: client, every: .milliseconds(50)), "never answered")
            #expect(response.status == 408)
            #expect(ContinuousClock.now - released >= .milliseconds(200))
            #expect(client.waitForClose(), "the server should close")
            #expect(eventually { observer.errors == [.bodyTimeout] })
        }
    }

    @Test("the last request allowed on a connection is answered with Connection: close")
    func requestsPerConnection() throws {
        try withServer(testConfiguration { $0.maxRequestsPerConnection = 3 }) { port, _ in
            let client = try TestClient(port: port)
            for _ in 0..<2 {
                try client.send(get("/"))
                #expect(try client.readResponse().header("Connection") == nil)
            }
            try client.send(get("/") + get("/too-many"))
            #expect(try client.readResponse().header("Connection") == "close")
            #expect(client.waitForClose())
            #expect(!client.hasBufferedBytes)
        }
    }

    @Test("connections beyond the maximum get 503 and are closed")
    func connectionLimit() throws {
        let observer = RecordingObserver()
        try withServer(testConfiguration { $0.maxConnections = 2 }, observer: observer) { port, _ in
            let first = try TestClient(port: port)
            let second = try TestClient(port: port)
            #expect(eventually { observer.opened == 2 })
            let third = try TestClient(port: port)
            let refused = try third.readResponse()
            #expect(refused.status == 503)
            #expect(refused.header("Connection") == "close")
            #expect(refused.header("Retry-After") == "1")
            #expect(third.waitForClose())
            #expect(eventually { observer.refused == 1 })

            try first.send(get("/"))
            #expect(try first.readResponse().status == 200)
            second.reset()
            #expect(eventually { observer.closed == 1 })
            let fourth = try TestClient(port: port)
            try fourth.send(get("/"))
            #expect(try fourth.readResponse().status == 200)
        }
    }

    @Test("a client refused beyond the maximum that keeps sending its body still reads the whole 503 (RFC 9112 §9.6)")
    func refusalSurvivesAClientStillSending() throws {
        let observer = RecordingObserver()
        try withServer(testConfiguration { $0.maxConnections = 1 }, observer: observer) { port, _ in
            let first = try TestClient(port: port)
            #expect(eventually { observer.opened == 1 })
            let refused = try TestClient(port: port)
            #expect(eventually { observer.refused == 1 })
            // The request arrives after the 503, and the client sends its whole body before it reads, as most do. A
            // socket already closed answers it with a reset, failing these sends before the client reads the 503.
            let bodySize = 1024 * 1024
            try refused.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: \(bodySize)\r\n\r\n")
            let chunk = [UInt8](repeating: 0x61, count: 64 * 1024)
            for _ in 0..<(bodySize / chunk.count) {
                try refused.send(chunk)
            }
            let response = try refused.readResponse()
            #expect(response.status == 503)
            #expect(response.header("Retry-After") == "1")
            #expect(refused.waitForClose())
            try first.send(get("/"))
            #expect(try first.readResponse().status == 200)
        }
    }

    static let oneWorkerOneQueueSlot = testConfiguration {
        $0.workerThreads = 1
        $0.workerQueueCapacity = 1
    }

    /// Holds the only worker on `/block` (until `gate` opens) and fills the one queue slot with `/queued`.
    static func blockWorkerAndFillQueue(port: Int, gate: Gate) throws -> (busy: TestClient, queued: TestClient) {
        let busy = try TestClient(port: port)
        try busy.send(get("/block"))
        #expect(eventually { gate.waiting == 1 })
        let queued = try TestClient(port: port)
        try queued.send(get("/queued"))
        return (busy, queued)
    }

    @Test("a full worker queue sheds requests with 503")
    func workerQueueFull() throws {
        let gate = Gate()
        let observer = RecordingObserver()
        let responder = ClosureResponder { request in
            if request.path == "/block" { gate.wait() }
            return HTTPResponse(status: 200)
        }
        try withServer(Self.oneWorkerOneQueueSlot, responder: responder, observer: observer) { port, _ in
            let (busy, queued) = try Self.blockWorkerAndFillQueue(port: port, gate: gate)
            let shed = try TestClient(port: port)
            #expect(eventually { observer.opened == 3 })
            try shed.send(get("/shed"))
            let response = try shed.readResponse()
            #expect(response.status == 503)
            #expect(response.header("Connection") == "close")
            #expect(eventually { observer.shed == 1 })
            gate.release()
            #expect(try busy.readResponse().status == 200)
            #expect(try queued.readResponse().status == 200)
        }
    }

    @Test("inline paths are answered while every worker is busy and the queue is full")
    func inlinePathsBypassTheWorkerQueue() throws {
        let gate = Gate()
        let observer = RecordingObserver()
        let responder = ClosureResponder(inlinePaths: ["/live"]) { request in
            if request.path == "/block" { gate.wait() }
            return HTTPResponse(status: 200, body: Array(request.path.utf8))
        }
        try withServer(Self.oneWorkerOneQueueSlot, responder: responder, observer: observer) { port, _ in
            let (busy, queued) = try Self.blockWorkerAndFillQueue(port: port, gate: gate)
            let live = try TestClient(port: port)
            // The only worker is blocked: these answers can only come from the event loop.
            for _ in 0..<2 {
                try live.send(get("/live"))
                let response = try live.readResponse()
                #expect(response.status == 200)
                #expect(response.bodyText == "/live")
            }
            // Any other path still goes through the full queue, and is shed.
            try live.send(get("/other"))
            #expect(try live.readResponse().status == 503)
            #expect(eventually { observer.shed == 1 })
            gate.release()
            #expect(try busy.readResponse().bodyText == "/block")
            #expect(try queued.readResponse().bodyText == "/queued")
        }
    }

    @Test("a request that waited in the worker queue past the queue timeout gets 503 unhandled and keeps its connection")
    func queueTimeout() throws {
        let (gate, observer, handled) = (Gate(), RecordingObserver(), HandledPaths())
        try withOneGatedWorker(gate: gate, observer: observer, handled: handled) { port in
            let busy = try TestClient(port: port)
            try busy.send(get("/block"))
            #expect(eventually { gate.waiting == 1 })
            let stale = try TestClient(port: port)
            let staleHead = try TestClient(port: port)
            let queuedAt = ContinuousClock.now
            try stale.send(get("/stale"))
            try staleHead.send("HEAD /stale-head HTTP/1.1\r\nHost: test\r\n\r\n")
            // Only the clock can say the queue timeout has passed for them: twice it, for the loop to queue them.
            #expect(eventually { ContinuousClock.now - queuedAt >= .seconds(1) })
            let fresh = try TestClient(port: port)
            try fresh.send(get("/fresh"))
            gate.release()
            #expect(try busy.readResponse().status == 200)
            let response = try stale.readResponse()
            #expect(response.status == 503)
            #expect(response.header("Retry-After") == "1")
            #expect(response.header("Connection") == nil)
            let headResponse = try staleHead.readResponse(head: true)
            #expect(headResponse.status == 503)
            #expect(headResponse.header("Connection") == nil)
            #expect(try fresh.readResponse().status == 200)
            #expect(observer.shed == 2)
            #expect(!observer.completed.contains(503))
            // The shed connections still serve, the HEAD one with no stray body before its next response.
            for client in [stale, staleHead] {
                try client.send(get("/again"))
                #expect(try client.readResponse().status == 200)
            }
            #expect(handled.paths == ["/block", "/fresh", "/again", "/again"])
        }
    }

    @Test("a queued request is shed once it passes the queue timeout even while every worker stays blocked")
    func queueTimeoutWhileWorkersBlocked() throws {
        let (gate, observer, handled) = (Gate(), RecordingObserver(), HandledPaths())
        try withOneGatedWorker(gate: gate, observer: observer, handled: handled) { port in
            defer { gate.release() }
            let busy = try TestClient(port: port)
            try busy.send(get("/block"))
            #expect(eventually { gate.waiting == 1 })
            let stale = try TestClient(port: port)
            try stale.send(get("/stale"))
            // The only worker stays blocked: the 503 must come without it, within a tick or so of the deadline.
            let response = try stale.readResponse(timeout: .milliseconds(500) + .seconds(2))
            #expect(response.status == 503)
            #expect(response.header("Retry-After") == "1")
            #expect(response.header("Connection") == nil)
            #expect(observer.shed == 1)
            #expect(handled.paths == ["/block"])
            gate.release()
            #expect(try busy.readResponse().status == 200)
            // The shed request left the queue: the freed worker takes the next request, never the shed one.
            try stale.send(get("/again"))
            #expect(try stale.readResponse().status == 200)
            #expect(handled.paths == ["/block", "/again"])
            #expect(observer.shed == 1)
            #expect(!observer.completed.contains(503))
        }
    }

    @Test("a client that resets mid-body does not disturb the server")
    func resetMidBody() throws {
        let observer = RecordingObserver()
        try withServer(observer: observer) { port, _ in
            for _ in 0..<10 {
                let client = try TestClient(port: port)
                try client.send(
                    "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + String(repeating: "z", count: 5000)
                )
                client.reset()
            }
            #expect(eventually { observer.closed == 10 })
            #expect(observer.completed.isEmpty)
            let client = try TestClient(port: port)
            try client.send(get("/after"))
            #expect(try client.readResponse().status == 200)
        }
    }

    @Test("a client that resets while its request is handled does not disturb the server")
    func resetDuringHandler() throws {
        let gate = Gate()
        let responder = ClosureResponder { _ in
            gate.wait()
            return HTTPResponse(status: 200, body: [UInt8](repeating: 1, count: 100_000))
        }
        let observer = RecordingObserver()
        try withServer(responder: responder, observer: observer) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/"))
            #expect(eventually { gate.waiting == 1 })
            client.reset()
            #expect(eventually { observer.closed == 1 })
            gate.release()
            #expect(eventually { observer.completed == [200] })
            let next = try TestClient(port: port)
            try next.send(get("/"))
            #expect(try next.readResponse().body.count == 100_000)
        }
    }

    @Test("a half-closed client still gets its answer")
    func halfClose() throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/half"))
            client.shutdownWrite()
            #expect(try client.readResponse().header("X-Path") == "/half")
            #expect(client.waitForClose())
        }
    }

    @Test("a large response to a slow reader is delivered completely")
    func slowReader() throws {
        let size = 8 * 1024 * 1024
        let responder = ClosureResponder { _ in HTTPResponse(status: 200, body: [UInt8](repeating: 7, count: size)) }
        try withServer(responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/big"))
            usleep(200_000)
            let response = try client.readResponse(timeout: .seconds(20))
            #expect(response.body.count == size)
            try client.send(get("/again"))
            #expect(try client.readResponse(timeout: .seconds(20)).body.count == size)
        }
    }
}

@Suite("HTTP server graceful shutdown")
struct HTTPServerShutdownTests {
    @Test("shutdown lets in-flight requests finish with Connection: close and closes idle connections")
    func shutdownWithRequestsInFlight() throws {
        let gate = Gate()
        let responder = ClosureResponder { request in
            if request.path == "/slow" { gate.wait() }
            return HTTPResponse(status: 200, body: Array(request.path.utf8))
        }
        let configuration = testConfiguration { $0.shutdownTimeout = .seconds(10) }
        var logger = Logger(label: "shutdown-test")
        logger.logLevel = .warning
        let server = HTTPServer(configuration: configuration, responder: responder, logger: logger)
        let port = try server.start()

        let idle = try TestClient(port: port)
        try idle.send(get("/warm"))
        #expect(try idle.readResponse().status == 200)
        let busy = try (0..<3).map { _ in try TestClient(port: port) }
        for client in busy { try client.send(get("/slow")) }
        #expect(eventually { gate.waiting == 2 })

        let finished = Mutex(false)
        let shutdownThread = Thread {
            server.shutdown()
            finished.withLock { $0 = true }
        }
        shutdownThread.start()

        #expect(idle.waitForClose(timeout: .seconds(5)))
        #expect(eventually { (try? TestClient(port: port)) == nil }, "new connections are refused")
        #expect(!finished.withLock { $0 })
        gate.release()
        for client in busy {
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.bodyText == "/slow")
            #expect(response.header("Connection") == "close")
            #expect(client.waitForClose())
        }
        #expect(eventually(timeout: .seconds(5)) { finished.withLock { $0 } })
    }

    @Test("shutdown gives up on a stuck request after the deadline")
    func shutdownDeadline() throws {
        let gate = Gate()
        let responder = ClosureResponder { _ in
            gate.wait(timeout: .seconds(30))
            return HTTPResponse(status: 200)
        }
        let configuration = testConfiguration { $0.shutdownTimeout = .milliseconds(300) }
        let server = HTTPServer(
            configuration: configuration, responder: responder, logger: .init(label: "deadline-test"))
        let port = try server.start()
        let client = try TestClient(port: port)
        try client.send(get("/stuck"))
        #expect(eventually { gate.waiting == 1 })
        let started = ContinuousClock.now
        server.shutdown()
        let elapsed = ContinuousClock.now - started
        #expect(elapsed < .seconds(5))
        #expect(client.waitForClose())
        gate.release()
    }

    @Test("shutdown is idempotent and works before start")
    func shutdownTwice() throws {
        let unstarted = HTTPServer(
            configuration: testConfiguration(), responder: echoResponder, logger: .init(label: "t"))
        unstarted.shutdown()
        #expect(throws: HTTPServerError.alreadyStarted) { try unstarted.start() }
        let server = HTTPServer(configuration: testConfiguration(), responder: echoResponder, logger: .init(label: "t"))
        _ = try server.start()
        server.shutdown()
        server.shutdown()
    }
}

/// The paths a responder was asked for, in order.
private final class HandledPaths: Sendable {
    private let storage = Mutex<[String]>([])

    func append(_ path: String) { storage.withLock { $0.append(path) } }
    var paths: [String] { storage.withLock { $0 } }
}

/// Runs `body` against a server with one worker and a 500 ms queue timeout whose responder records each path in
/// `handled` and blocks on `/block` until `gate` opens.
private func withOneGatedWorker(
    gate: Gate, observer: RecordingObserver, handled: HandledPaths, _ body: (Int) throws -> Void
) throws {
    let responder = ClosureResponder { request in
        handled.append(request.path)
        if request.path == "/block" { gate.wait() }
        return HTTPResponse(status: 200)
    }
    let configuration = testConfiguration {
        $0.workerThreads = 1
        $0.queueTimeout = .milliseconds(500)
    }
    try withServer(configuration, responder: responder, observer: observer) { port, _ in try body(port) }
}
