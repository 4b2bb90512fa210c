import Foundation
import Glibc
import HTTPServer
import Logging
import Testing

/// Echoes like `echoResponder`, and answers `/big` with `bigBody`.
private let bulkResponder = ClosureResponder { request in
    if request.path == "/big" { return HTTPResponse(status: 200, body: bigBody) }
    return try echoResponder.respond(to: request)
}

/// 8 MiB of a 251-byte cycle: more than loopback socket buffers hold, so TLS writes back up.
private let bigBody: [UInt8] = [UInt8](unsafeUninitializedCapacity: 8 * 1024 * 1024) { buffer, count in
    for index in buffer.indices { buffer[index] = UInt8(index % 251) }
    count = buffer.count
}

/// A handshake record header announcing 512 bytes of ClientHello, then only its first bytes.
private let partialClientHello: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03]

/// Starts a server that is expected to fail to start and returns the error.
private func startFailure(_ configuration: HTTPServerConfiguration) -> HTTPServerError? {
    var logger = Logger(label: "http-test")
    logger.logLevel = .critical
    let server = HTTPServer(configuration: configuration, responder: echoResponder, logger: logger)
    defer { server.shutdown() }
    do {
        try server.start()
        return nil
    } catch {
        #expect(server.port == 0, "nothing should be bound")
        return error
    }
}

// Serialized: each test runs openssl, curl or python3 children, and the machine has two cores.
@Suite("HTTPS on the server's own event loops", .serialized)
struct HTTPServerTLSTests {
    @Test("curl sends several requests over one TLS connection and verifies the certificate")
    func curlKeepAlive() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        let observer = RecordingObserver()
        try withServer(fixture.configuration(certificate), observer: observer) { port, _ in
            let urls = ["/a", "/b?x=1", "/c"].map { "https://127.0.0.1:\(port)\($0)" }
            let output = try fixture.curl(
                ["--cacert", certificate.certificate, "--write-out", "%{http_code} %{num_connects} %{ssl_verify_result}\n"]
                    + urls
            )
            #expect(output.status == 0, "\(output.stderr)")
            let lines = output.stdoutLines
            #expect(lines.count == 3)
            for line in lines {
                let fields = line.split(separator: " ")
                #expect(fields.first == "200", "\(line)")
                #expect(fields.last == "0", "certificate verification: \(line)")
            }
            let connects = lines.compactMap { line in line.split(separator: " ").dropFirst().first.flatMap { Int($0) } }
            #expect(connects.reduce(0, +) == 1, "\(lines)")
            #expect(observer.opened == 1)
            #expect(eventually { observer.completed == [200, 200, 200] })
            #expect(observer.errors.isEmpty)
        }
    }

    @Test("three requests in one TLS write are answered in order")
    func pipelining() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        try withServer(fixture.configuration(certificate)) { port, _ in
            let output = try fixture.startPython("pipeline", port: port, trusting: certificate.certificate).wait()
            #expect(output.status == 0, "\(output.stderr)")
            #expect(output.stdoutLines == ["200 /p/0", "200 /p/1", "200 /p/2"])
        }
    }

    @Test("a body of many TLS records and a response larger than the socket buffers")
    func bulkTransfer() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        try withServer(fixture.configuration(certificate), responder: bulkResponder) { port, _ in
            let output = try fixture.startPython("bulk", port: port, trusting: certificate.certificate, ["600000"]).wait()
            #expect(output.status == 0, "\(output.stderr)")
            #expect(output.stdoutLines == ["echo 200 600000 True", "big 200 \(bigBody.count) True", "after 200 /after"])
        }
    }

    @Test("a client that stalls in the handshake is closed after the handshake timeout")
    func stalledHandshake() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        let observer = RecordingObserver()
        let configuration = fixture.configuration(certificate) { $0.tls?.handshakeTimeout = .milliseconds(300) }
        try withServer(configuration, observer: observer) { port, _ in
            // The server's handshake clock starts at accept, after this: the closes can only come 300 ms later.
            // (A fixed 100 ms look right after connecting would fail whenever this thread stalls for 200 ms.)
            let connecting = ContinuousClock.now
            let silent = try TestClient(port: port)
            let partial = try TestClient(port: port)
            try partial.send(partialClientHello)
            #expect(silent.waitForClose())
            #expect(ContinuousClock.now - connecting >= .milliseconds(250), "closed before the handshake timeout")
            #expect(partial.waitForClose())
            #expect(eventually { observer.errors == [.tlsHandshakeTimeout, .tlsHandshakeTimeout] })
            #expect(eventually { observer.opened == 2 && observer.closed == 2 })
        }
    }

    @Test("the idle clock starts when the handshake completes: a handshake slower than the idle timeout is not closed under the first request")
    func idleClockStartsAfterHandshake() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        let observer = RecordingObserver()
        // The handshake starts 3 s after the connect, past the 2 s idle timeout (and within the 10 s handshake
        // timeout); the request follows 0.8 s after it, well inside the idle timeout counted from the handshake.
        try withServer(fixture.configuration(certificate) { $0.idleTimeout = .seconds(2) }, observer: observer) { port, _ in
            let output = try fixture.startPython("late", port: port, trusting: certificate.certificate, ["3", "0.8"]).wait()
            #expect(output.stdoutLines == ["status 200"], "\(output.stderr)")
            #expect(eventually { observer.completed == [200] })
        }
    }

    @Test("stalled handshakes do not hold up other clients on the same event loop")
    func stalledHandshakeDoesNotBlock() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        let observer = RecordingObserver()
        // A handshake timeout far beyond curl's 20 s limit, so the stalled clients are still open when curl
        // is done however slowly it ran.
        let configuration = fixture.configuration(certificate) {
            $0.eventLoopThreads = 1
            $0.tls?.handshakeTimeout = .seconds(120)
        }
        try withServer(configuration, observer: observer) { port, _ in
            let silent = try TestClient(port: port)
            let partial = try TestClient(port: port)
            try partial.send(partialClientHello)
            let output = try fixture.curl(
                ["--cacert", certificate.certificate, "--write-out", "%{http_code}", "https://127.0.0.1:\(port)/meanwhile"]
            )
            #expect(output.stdout == "200", "\(output.stderr)")
            #expect(eventually { observer.completed == [200] })
            #expect(!silent.waitForClose(timeout: .milliseconds(10)), "still waiting for its 120 s handshake timeout")
            #expect(!partial.waitForClose(timeout: .milliseconds(10)))
            #expect(observer.errors.isEmpty)
        }
    }

    @Test("plain HTTP to the TLS port gets a plain 400 and a close; the server stays healthy")
    func plainHTTPOnTLSPort() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        let observer = RecordingObserver()
        try withServer(fixture.configuration(certificate), observer: observer) { port, _ in
            let client = try TestClient(port: port)
            try client.send(get("/plain"))
            let response = try client.readResponse()
            #expect(response.status == 400)
            #expect(response.header("Connection") == "close")
            #expect(response.bodyText.contains("HTTPS"))
            #expect(client.waitForClose())
            #expect(eventually { observer.errors == [.tlsHandshakeFailed] })

            // A TCP probe that connects and leaves is no protocol error.
            try TestClient(port: port).shutdownWrite()
            #expect(eventually { observer.opened == 2 && observer.closed == 2 })

            let output = try fixture.curl(
                ["--cacert", certificate.certificate, "--write-out", "%{http_code}", "https://127.0.0.1:\(port)/after"]
            )
            #expect(output.stdout == "200", "\(output.stderr)")
            #expect(observer.errors == [.tlsHandshakeFailed])
        }
    }

    @Test("an idle connection closed at the idle timeout or at shutdown gets close_notify first")
    func closeNotifyOnIdleClose() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        try withServer(fixture.configuration(certificate) { $0.idleTimeout = .milliseconds(300) }) { port, _ in
            let output = try fixture.startPython("closed", port: port, trusting: certificate.certificate, [fixture.path("idle")])
                .wait()
            #expect(output.stdoutLines == ["status 200", "close_notify"], "\(output.stderr)")
        }
        try withServer(fixture.configuration(certificate)) { port, server in
            let ready = fixture.path("ready")
            let child = try fixture.startPython("closed", port: port, trusting: certificate.certificate, [ready])
            #expect(eventually(timeout: .seconds(20)) { FileManager.default.fileExists(atPath: ready) })
            server.shutdown()
            let output = child.wait()
            #expect(output.stdoutLines == ["status 200", "close_notify"], "\(output.stderr)")
        }
    }

    @Test("over TLS: a stalled head or body gets 408 and a close, nothing behind Connection: close is answered, a half-close is")
    func timeoutsOverTLS() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        let configuration = fixture.configuration(certificate) {
            $0.headerTimeout = .milliseconds(500)
            $0.bodyTimeout = .milliseconds(500)
        }
        try withServer(configuration) { port, _ in
            let cases: [(send: String, expected: [String])] = [
                ("GET / HTTP/1.1\\r\\nHost: t\\r\\n", ["408 close", "closed"]),
                ("POST / HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: 10\\r\\n\\r\\nabc", ["408 close", "closed"]),
                (
                    "GET /1 HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\nGET /2 HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n",
                    ["200 close", "closed"]
                ),
            ]
            for (send, expected) in cases {
                let output = try fixture.startPython("raw", port: port, trusting: certificate.certificate, [send]).wait()
                #expect(output.stdoutLines == expected, "\(send): \(output.stderr)")
            }
            // A client that half-closes after its requests still gets every answer.
            let halfClosed = try fixture.startPython(
                "raw", port: port, trusting: certificate.certificate,
                ["GET /a HTTP/1.1\\r\\nHost: t\\r\\n\\r\\nGET /b HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n", "half-close"]
            ).wait()
            #expect(halfClosed.stdoutLines == ["200 -", "200 -", "closed"], "\(halfClosed.stderr)")
        }
    }

    @Test("reloadTLS serves the new certificate to new connections; open ones keep theirs")
    func reload() throws {
        let fixture = try TLSFixture()
        let first = try fixture.makeCertificate("stovepipe-a")
        let second = try fixture.makeCertificate("stovepipe-b")
        let live = (certificate: fixture.path("live.crt"), key: fixture.path("live.key"))
        let files = FileManager.default
        try files.copyItem(atPath: first.certificate, toPath: live.certificate)
        try files.copyItem(atPath: first.key, toPath: live.key)
        let both = fixture.path("both.pem")
        let bundle = try String(contentsOfFile: first.certificate, encoding: .utf8)
            + String(contentsOfFile: second.certificate, encoding: .utf8)
        try bundle.write(toFile: both, atomically: true, encoding: .utf8)

        try withServer(fixture.configuration(live)) { port, server in
            let ready = fixture.path("ready")
            let go = fixture.path("go")
            let child = try fixture.startPython("reload", port: port, trusting: both, [ready, go])
            #expect(eventually(timeout: .seconds(20)) { files.fileExists(atPath: ready) })
            try files.removeItem(atPath: live.certificate)
            try files.removeItem(atPath: live.key)
            try files.copyItem(atPath: second.certificate, toPath: live.certificate)
            try files.copyItem(atPath: second.key, toPath: live.key)
            try server.reloadTLS()
            #expect(files.createFile(atPath: go, contents: nil))
            let output = child.wait()
            #expect(output.status == 0, "\(output.stderr)")
            #expect(
                output.stdoutLines == ["first stovepipe-a 200", "second stovepipe-b 200", "first-again stovepipe-a 200"])

            // A reload that fails leaves the certificate in use alone.
            try Data("not a key".utf8).write(to: URL(fileURLWithPath: live.key))
            do throws(HTTPServerError) {
                try server.reloadTLS()
                Issue.record("a reload with a broken key should throw")
            } catch {
                guard case .tlsPrivateKeyUnusable(let path, _) = error else {
                    Issue.record("unexpected error \(error)")
                    return
                }
                #expect(path == live.key)
            }
            let after = try fixture.startPython("subject", port: port, trusting: both).wait()
            #expect(after.stdoutLines == ["stovepipe-b 200"], "\(after.stderr)")
        }
    }

    @Test("reloadTLS on a plain-HTTP server throws tlsNotConfigured")
    func reloadWithoutTLS() throws {
        try withServer { _, server in
            #expect(throws: HTTPServerError.tlsNotConfigured) { try server.reloadTLS() }
        }
    }

    @Test("unusable certificate or key files fail start() with a clear error")
    func startFailures() throws {
        let fixture = try TLSFixture()
        let first = try fixture.makeCertificate("stovepipe-a")
        let second = try fixture.makeCertificate("stovepipe-b")

        let missing = fixture.path("missing.crt")
        let noCertificate = startFailure(fixture.configuration((missing, first.key)))
        guard case .tlsCertificateUnusable(let path, let reason) = noCertificate else {
            Issue.record("expected tlsCertificateUnusable, got \(String(describing: noCertificate))")
            return
        }
        #expect(path == missing)
        #expect(!reason.isEmpty)
        #expect(noCertificate?.description.contains(missing) == true)

        let garbage = fixture.path("garbage.key")
        try Data("-----BEGIN PRIVATE KEY-----\nnot base64\n".utf8).write(to: URL(fileURLWithPath: garbage))
        let badKey = startFailure(fixture.configuration((first.certificate, garbage)))
        guard case .tlsPrivateKeyUnusable(let keyPath, _) = badKey else {
            Issue.record("expected tlsPrivateKeyUnusable, got \(String(describing: badKey))")
            return
        }
        #expect(keyPath == garbage)

        #expect(startFailure(fixture.configuration((first.certificate, second.key))) == .tlsKeyDoesNotMatchCertificate)
    }

    @Test("a passphrase-protected key fails start() and a reload as encrypted, naming the file, without blocking")
    func encryptedKey() throws {
        let fixture = try TLSFixture()
        let plain = try fixture.makeCertificate("127.0.0.1")
        let encrypted = fixture.path("encrypted.key")
        try ChildProcess.run(
            "openssl", ["pkey", "-in", plain.key, "-aes256", "-passout", "pass:secret", "-out", encrypted],
            directory: fixture.directory
        )
        #expect(startFailure(fixture.configuration((plain.certificate, encrypted))) == .tlsPrivateKeyEncrypted(path: encrypted))
        #expect(HTTPServerError.tlsPrivateKeyEncrypted(path: encrypted).description.contains("encrypted"))

        let live = fixture.path("live.key")
        try FileManager.default.copyItem(atPath: plain.key, toPath: live)
        try withServer(fixture.configuration((plain.certificate, live))) { _, server in
            try FileManager.default.removeItem(atPath: live)
            try FileManager.default.copyItem(atPath: encrypted, toPath: live)
            #expect(throws: HTTPServerError.tlsPrivateKeyEncrypted(path: live)) { try server.reloadTLS() }
        }
    }

    @Test("ALPN: http/1.1 is selected when offered; a client offering only other protocols gets no_application_protocol")
    func applicationProtocolNegotiation() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        let observer = RecordingObserver()
        try withServer(fixture.configuration(certificate), observer: observer) { port, _ in
            let offers: [(offer: String, expected: String)] = [
                ("h2,http/1.1", "selected http/1.1 200"),
                ("http/1.1", "selected http/1.1 200"),
                ("h2", "refused no application protocol"),
                ("h2,h3,spdy/3", "refused no application protocol"),
            ]
            for (offer, expected) in offers {
                let output = try fixture.startPython("alpn", port: port, trusting: certificate.certificate, [offer]).wait()
                #expect(output.stdoutLines == [expected], "\(offer): \(output.stderr)")
            }
            // A client without ALPN is served as before.
            let none = try fixture.startPython("subject", port: port, trusting: certificate.certificate).wait()
            #expect(none.stdoutLines == ["127.0.0.1 200"], "\(none.stderr)")
            #expect(eventually { observer.errors == [.tlsHandshakeFailed, .tlsHandshakeFailed] })
        }
    }

    @Test("TLS 1.1 is refused; a TLS 1.3 minimum refuses TLS 1.2 and accepts TLS 1.3")
    func protocolVersions() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        let observer = RecordingObserver()
        try withServer(fixture.configuration(certificate), observer: observer) { port, _ in
            let old = try fixture.startPython("versions", port: port, trusting: certificate.certificate, ["1.1"]).wait()
            let verdict = old.stdoutLines.first ?? ""
            if verdict.hasPrefix("unavailable") {
                // This machine's OpenSSL cannot even offer TLS 1.1 as a client; TLS 1.2 below still
                // shows the server negotiates, and the TLS 1.3 minimum shows it refuses older versions.
            } else {
                // The server answers a protocol_version alert (RFC 8446 §4.2.1), not just any failure.
                #expect(verdict.hasPrefix("refused") && verdict.contains("PROTOCOL"), "\(old.stdout) \(old.stderr)")
                #expect(eventually { observer.errors == [.tlsHandshakeFailed] })
            }
            let current = try fixture.startPython("versions", port: port, trusting: certificate.certificate, ["1.2"]).wait()
            #expect(current.stdoutLines == ["accepted TLSv1.2 200"], "\(current.stderr)")
        }

        let strictObserver = RecordingObserver()
        let strict = fixture.configuration(certificate) { $0.tls?.minimumVersion = .tls13 }
        try withServer(strict, observer: strictObserver) { port, _ in
            let older = try fixture.startPython("versions", port: port, trusting: certificate.certificate, ["1.2"]).wait()
            let refusal = older.stdoutLines.first ?? ""
            #expect(refusal.hasPrefix("refused") && refusal.contains("PROTOCOL"), "\(older.stdout) \(older.stderr)")
            #expect(eventually { strictObserver.errors == [.tlsHandshakeFailed] })
            let newest = try fixture.startPython("versions", port: port, trusting: certificate.certificate, ["min1.3"])
                .wait()
            #expect(newest.stdoutLines == ["accepted TLSv1.3 200"], "\(newest.stderr)")
        }
    }

    @Test("TLS 1.2 offers only ECDHE with AEAD: static RSA and CBC suites are refused, ECDHE with GCM or ChaCha20 is accepted")
    func tls12CipherSuites() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        try withServer(fixture.configuration(certificate)) { port, _ in
            for weak in ["AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384"] {
                let output = try fixture.startPython("cipher", port: port, trusting: certificate.certificate, [weak]).wait()
                let verdict = output.stdoutLines.first ?? ""
                #expect(verdict.hasPrefix("refused") || verdict.hasPrefix("unavailable"), "\(weak): \(output.stdout) \(output.stderr)")
            }
            for strong in ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"] {
                let output = try fixture.startPython("cipher", port: port, trusting: certificate.certificate, [strong]).wait()
                #expect(output.stdoutLines == ["accepted \(strong) 200"], "\(output.stdout) \(output.stderr)")
            }
        }
    }

    @Test("TLS 1.2 issues no session ticket (its key would live as long as the process); resumption by session id still works")
    func noTLS12SessionTickets() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        try withServer(fixture.configuration(certificate)) { port, _ in
            let output = try fixture.startPython("ticket", port: port, trusting: certificate.certificate).wait()
            #expect(output.stdoutLines == ["status 200", "ticket False", "resumed True 200"], "\(output.stdout) \(output.stderr)")
        }
    }

    @Test("soak: 32 TLS connections x 100 keep-alive requests, all answered, none left open")
    func soak() throws {
        let fixture = try TLSFixture()
        let certificate = try fixture.makeCertificate("127.0.0.1")
        let observer = RecordingObserver()
        let configuration = fixture.configuration(certificate) { $0.eventLoopThreads = 2 }
        try withServer(configuration, observer: observer) { port, _ in
            let output = try fixture.startPython("soak", port: port, trusting: certificate.certificate, ["32", "100"])
                .wait(timeout: .seconds(120))
            #expect(!output.timedOut)
            #expect(output.stdoutLines.prefix(2) == ["answered 3200", "errors 0"], "\(output.stdout) \(output.stderr)")
            #expect(eventually { observer.completed.count == 3200 })
            #expect(observer.completed.allSatisfy { $0 == 200 })
            #expect(observer.opened == 32)
            #expect(eventually(timeout: .seconds(10)) { observer.closed == 32 })
            #expect(observer.errors.isEmpty)
        }
    }
}
