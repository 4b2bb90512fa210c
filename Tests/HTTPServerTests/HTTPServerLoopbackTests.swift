import Foundation
import Glibc
import HTTPServer
import Synchronization
import Testing

@Suite("HTTP server over loopback")
struct HTTPServerLoopbackTests {
    @Test("every response carries Date, Server and Content-Length")
    func standardHeaders() throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/hello?x=1"))
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.header("Server") == "stovepipe")
            #expect(response.header("Content-Length") == "0")
            let date = try #require(response.header("Date"))
            #expect(date.hasSuffix(" GMT") && date.count == 29)
            #expect(response.header("X-Path") == "/hello")
            #expect(response.header("X-Query") == "x=1")
            #expect(response.header("X-Peer")?.hasPrefix("127.0.0.1:") == true)
            #expect(response.header("Connection") == nil)
        }
    }

    @Test("afterSend runs once the response is out: a client reads it while afterSend is still blocked")
    func afterSendRunsAfterTheResponseIsSent() throws {
        let gate = Gate()
        let ran = Mutex(0)
        let responder = ClosureResponder { request in
            HTTPResponse(status: 200, body: Array(request.path.utf8)) {
                gate.wait()
                ran.withLock { $0 += 1 }
            }
        }
        try withServer(responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/first"))
            // Were afterSend run before the response was handed over, this read would time out behind the gate.
            let response = try client.readResponse(timeout: .seconds(3))
            #expect(response.status == 200)
            #expect(eventually { gate.waiting == 1 })
            #expect(ran.withLock { $0 } == 0)
            gate.release()
            #expect(eventually { ran.withLock { $0 } == 1 })
            try client.send(get("/second"))
            #expect(try client.readResponse().status == 200)
            #expect(eventually { ran.withLock { $0 } == 2 })
        }
    }

    @Test("keep-alive serves several requests on one connection")
    func keepAlive() throws {
        let observer = RecordingObserver()
        try withServer(observer: observer) { port, _ in
            let client = try TestClient(port: port)
            for index in 0..<5 {
                try client.send(get("/n/\(index)"))
                let response = try client.readResponse()
                #expect(response.status == 200)
                #expect(response.header("X-Path") == "/n/\(index)")
            }
            #expect(observer.opened == 1)
            #expect(eventually { observer.completed.count == 5 })
        }
    }

    @Test("pipelined requests are answered in order")
    func pipelining() throws {
        let responder = ClosureResponder { request in
            // The first request is the slowest, so out-of-order answers would show.
            if request.path == "/0" { usleep(50_000) }
            return HTTPResponse(status: 200, body: Array(request.path.utf8))
        }
        try withServer(testConfiguration { $0.workerThreads = 4 }, responder: responder) { port, _ in
            let client = try TestClient(port: port)
            let requests = (0..<10).map { get("/\($0)") }.joined()
            try client.send(requests + "POST /last HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
            for index in 0..<10 {
                #expect(try client.readResponse().bodyText == "/\(index)")
            }
            #expect(try client.readResponse().bodyText == "/last")
        }
    }

    @Test("a pipelined flood larger than the read limit is paused, resumed and answered in order")
    func pipelinedFlood() throws {
        let responder = ClosureResponder { request in
            if request.path == "/0" { usleep(100_000) }
            return HTTPResponse(status: 200, body: Array(request.path.utf8))
        }
        try withServer(testConfiguration { $0.maxRequestsPerConnection = 10_000 }, responder: responder) { port, _ in
            let client = try TestClient(port: port)
            let count = 4000
            let flood = (0..<count).map { get("/\($0)") }.joined()
            #expect(flood.utf8.count > 8 * 1024 + 64 * 1024 + 4096)
            // Sent from another thread: the server stops reading until responses are read here.
            let fd = client.fd
            let bytes = Array(flood.utf8)
            let writer = Thread {
                var sent = 0
                while sent < bytes.count {
                    let count = bytes[sent...].withUnsafeBytes {
                        send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                    }
                    if count <= 0 { return }
                    sent += count
                }
            }
            writer.start()
            var inOrder = true
            for index in 0..<count where try client.readResponse(timeout: .seconds(20)).bodyText != "/\(index)" {
                inOrder = false
            }
            #expect(inOrder)
        }
    }

    @Test("HTTP/1.0 closes after the response unless it asks for keep-alive")
    func http10() throws {
        try withServer { port, _ in
            let closing = try TestClient(port: port)
            try closing.send("GET /old HTTP/1.0\r\n\r\n")
            let first = try closing.readResponse()
            #expect(first.status == 200)
            #expect(first.header("Connection") == "close")
            #expect(closing.waitForClose())

            let persistent = try TestClient(port: port)
            for _ in 0..<2 {
                try persistent.send("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let response = try persistent.readResponse()
                #expect(response.status == 200)
                #expect(response.header("Connection") == "keep-alive")
            }
        }
    }

    @Test("Connection: close is honoured")
    func connectionClose() throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/", "Connection: close\r\n") + get("/never"))
            let response = try client.readResponse()
            #expect(response.header("Connection") == "close")
            #expect(client.waitForClose())
            #expect(!client.hasBufferedBytes)
        }
    }

    @Test("HEAD gets the length but no body")
    func head() throws {
        let responder = ClosureResponder { _ in HTTPResponse(status: 200, body: Array("twelve bytes".utf8)) }
        try withServer(responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
            let response = try client.readResponse(head: true)
            #expect(response.header("Content-Length") == "12")
            #expect(response.body.isEmpty)
            try client.send(get("/"))
            #expect(try client.readResponse().bodyText == "twelve bytes")
        }
    }

    @Test("Expect: 100-continue gets 100 Continue before the body is sent")
    func expectContinue() throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            try client.send("PUT /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            let interim = try client.readResponse()
            #expect(interim.status == 100)
            try client.send("hello")
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.bodyText == "hello")
        }
    }

    @Test("a chunked request body reaches the responder decoded")
    func chunkedBody() throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            try client.send("POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n")
            try client.send("5\r\npedia\r\n0\r\n\r\n")
            #expect(try client.readResponse().bodyText == "Wikipedia")
        }
    }

    @Test("a sane X-Request-ID is used and echoed; others are replaced")
    func requestID() throws {
        try withServer { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/", "X-Request-ID: abc.DEF_123-x\r\n"))
            let sane = try client.readResponse()
            #expect(sane.header("X-Request-ID") == "abc.DEF_123-x")
            #expect(sane.header("X-Seen-Request-ID") == "abc.DEF_123-x")

            try client.send(get("/", "X-Request-ID: has spaces; and semicolons\r\n"))
            let insane = try client.readResponse()
            let generated = try #require(insane.header("X-Request-ID"))
            #expect(generated != "has spaces; and semicolons")
            #expect(insane.header("X-Seen-Request-ID") == generated)

            try client.send(get("/", "X-Request-ID: \(String(repeating: "a", count: 129))\r\n"))
            #expect(try client.readResponse().header("X-Request-ID")?.count != 129)

            try client.send(get("/"))
            let other = try #require(try client.readResponse().header("X-Request-ID"))
            #expect(other != generated)
        }
    }

    @Test("a responder's own X-Request-ID is kept")
    func responderRequestID() throws {
        let responder = ClosureResponder { _ in
            HTTPResponse(status: 200, headers: HTTPHeaders([("X-Request-ID", "mine")]))
        }
        try withServer(responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/", "X-Request-ID: theirs\r\n"))
            let response = try client.readResponse()
            #expect(response.headers.filter { $0.name.lowercased() == "x-request-id" }.map(\.value) == ["mine"])
        }
    }

    @Test("a throwing responder gives 500 and the connection stays usable")
    func responderThrows() throws {
        struct Boom: Error {}
        let responder = ClosureResponder { request in
            if request.path == "/boom" { throw Boom() }
            return HTTPResponse(status: 204)
        }
        try withServer(responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/boom"))
            #expect(try client.readResponse().status == 500)
            try client.send(get("/ok"))
            let response = try client.readResponse()
            #expect(response.status == 204)
            #expect(response.header("Content-Length") == nil)
        }
    }

    @Test("a responder header that would split the response becomes a 500")
    func responseSplitting() throws {
        let responder = ClosureResponder { _ in
            HTTPResponse(status: 200, headers: HTTPHeaders([("X-Evil", "a\r\nSet-Cookie: x=1")]))
        }
        try withServer(responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/"))
            let response = try client.readResponse()
            #expect(response.status == 500)
            #expect(response.header("Set-Cookie") == nil)
        }
    }

    @Test("the server manages framing headers a responder sets")
    func managedHeaders() throws {
        let responder = ClosureResponder { _ in
            HTTPResponse(
                status: 200,
                headers: HTTPHeaders([
                    ("Content-Length", "999"), ("Transfer-Encoding", "chunked"), ("Server", "custom"),
                ]),
                body: Array("abc".utf8)
            )
        }
        try withServer(responder: responder) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/"))
            let response = try client.readResponse()
            #expect(response.header("Content-Length") == "3")
            #expect(response.header("Transfer-Encoding") == nil)
            #expect(response.header("Server") == "custom")
            #expect(response.bodyText == "abc")
        }
    }

    @Test("hundreds of concurrent connections are all answered")
    func manyConnections() throws {
        let observer = RecordingObserver()
        try withServer(observer: observer) { port, _ in
            let clients = try (0..<300).map { _ in try TestClient(port: port) }
            for (index, client) in clients.enumerated() { try client.send(get("/c/\(index)")) }
            for (index, client) in clients.enumerated() {
                let response = try client.readResponse(timeout: .seconds(10))
                #expect(response.header("X-Path") == "/c/\(index)")
            }
            #expect(observer.opened == 300)
        }
    }

    @Test("many connections from several threads at once")
    func concurrentClients() throws {
        let failures = Mutex(0)
        try withServer(testConfiguration { $0.eventLoopThreads = 2 }) { port, _ in
            let done = DispatchGroup()
            for thread in 0..<8 {
                done.enter()
                Thread {
                    defer { done.leave() }
                    do {
                        for round in 0..<20 {
                            let client = try TestClient(port: port)
                            for request in 0..<5 {
                                try client.send(get("/t\(thread)/r\(round)/\(request)"))
                                let response = try client.readResponse()
                                if response.header("X-Path") != "/t\(thread)/r\(round)/\(request)" {
                                    failures.withLock { $0 += 1 }
                                }
                            }
                        }
                    } catch {
                        failures.withLock { $0 += 1 }
                    }
                }.start()
            }
            #expect(done.wait(timeout: .now() + 30) == .success)
            #expect(failures.withLock { $0 } == 0)
        }
    }

    @Test("start returns the bound port, and start twice throws")
    func startTwice() throws {
        try withServer { port, server in
            #expect(port > 0)
            #expect(server.port == port)
            #expect(throws: HTTPServerError.alreadyStarted) { try server.start() }
        }
    }

    @Test("an invalid host is reported")
    func invalidHost() {
        let server = HTTPServer(
            configuration: testConfiguration { $0.host = "not-an-address" }, responder: echoResponder,
            logger: .init(label: "test")
        )
        #expect(throws: HTTPServerError.invalidHost("not-an-address")) { try server.start() }
    }
}
