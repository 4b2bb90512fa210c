import Foundation
import HTTPServer
import Logging
import Synchronization
import Testing

/// The worker that answered a keep-alive connection waits on it for the next request. The waits here
/// are 30 s, far beyond every client timeout, so a request the waiting worker failed to take, or a
/// wait nothing ended, fails the test instead of passing late.
@Suite("HTTP server: the worker's wait for a keep-alive connection's next request")
struct WorkerKeepAliveWaitTests {
    static func configuration() -> HTTPServerConfiguration {
        testConfiguration {
            $0.workerThreads = 1
            $0.workerKeepAliveWait = .seconds(30)
        }
    }

    @Test("the waiting worker answers the next request, a request split across reads, and pipelined requests")
    func nextRequestsOnTheSameConnection() throws {
        let observer = RecordingObserver()
        try withServer(Self.configuration(), observer: observer) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/one"))
            #expect(try client.readResponse().header("X-Path") == "/one")
            try client.send(get("/two"))
            #expect(try client.readResponse().header("X-Path") == "/two")

            try client.send("GET /three HTTP/1.1\r\n")
            try client.send("Host: test\r\n\r\n")
            #expect(try client.readResponse().header("X-Path") == "/three")

            try client.send(get("/four") + get("/five"))
            #expect(try client.readResponse().header("X-Path") == "/four")
            #expect(try client.readResponse().header("X-Path") == "/five")

            try client.send("POST /six HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello")
            let posted = try client.readResponse()
            #expect(posted.header("X-Path") == "/six")
            #expect(posted.bodyText == "hello")
            // The observer hears of a response after it is sent, so the client may read it first.
            #expect(eventually { observer.completed == [200, 200, 200, 200, 200, 200] })
        }
    }

    @Test("a request on another connection ends the wait instead of waiting behind it")
    func otherConnectionsAreNotHeldUp() throws {
        try withServer(Self.configuration()) { port, _ in
            let first = try TestClient(port: port)
            try first.send(get("/first"))
            #expect(try first.readResponse().status == 200)
            let second = try TestClient(port: port)
            try second.send(get("/second"))
            #expect(try second.readResponse().header("X-Path") == "/second")
            try first.send(get("/first-again"))
            #expect(try first.readResponse().header("X-Path") == "/first-again")
        }
    }

    @Test("a malformed request read by the waiting worker gets a 400 and a close")
    func malformedRequestWhileWaiting() throws {
        let observer = RecordingObserver()
        try withServer(Self.configuration(), observer: observer) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/ok"))
            #expect(try client.readResponse().status == 200)
            try client.send("GET /bad HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
            #expect(try client.readResponse().status == 400)
            #expect(client.waitForClose())
            #expect(eventually { observer.errors.count == 1 && observer.closed == 1 })
        }
    }

    @Test("a client that hangs up while a worker waits on its connection is closed")
    func hangUpWhileWaiting() throws {
        let observer = RecordingObserver()
        try withServer(Self.configuration(), observer: observer) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/ok"))
            #expect(try client.readResponse().status == 200)
            client.shutdownWrite()
            #expect(client.waitForClose())
            #expect(eventually { observer.closed == 1 })
            let next = try TestClient(port: port)
            try next.send(get("/next"))
            #expect(try next.readResponse().status == 200)
        }
    }

    @Test("shutdown ends the wait: the idle connection is closed and shutdown returns")
    func shutdownEndsTheWait() throws {
        var logger = Logger(label: "keep-alive-wait-shutdown-test")
        logger.logLevel = .warning
        let server = HTTPServer(configuration: Self.configuration(), responder: echoResponder, logger: logger)
        let port = try server.start()
        let client = try TestClient(port: port)
        try client.send(get("/ok"))
        #expect(try client.readResponse().status == 200)
        let finished = Mutex(false)
        let shutdownThread = Thread {
            server.shutdown()
            finished.withLock { $0 = true }
        }
        shutdownThread.start()
        #expect(client.waitForClose(timeout: .seconds(3)))
        // The configuration's shutdown timeout is 5 s: returning before it means nothing waited it out.
        #expect(eventually(timeout: .seconds(4)) { finished.withLock { $0 } })
    }
}
