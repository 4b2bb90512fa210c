import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A throw-away directory with a self-signed certificate made by the openssl CLI.
private struct SelfSignedCertificate {
    let directory: URL
    var certificate: String { directory.appendingPathComponent("server.crt").path }
    var key: String { directory.appendingPathComponent("server.key").path }

    /// A certificate for `subjectAltName` (for example `IP:127.0.0.1`), valid for a day.
    init(subjectAltName: String) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-e2e-hc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=stovepipe-test",
            "-addext", "subjectAltName=\(subjectAltName)", "-days", "1",
            "-keyout", directory.appendingPathComponent("server.key").path,
            "-out", directory.appendingPathComponent("server.crt").path,
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw WireError.malformed("openssl req failed") }
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }
}

/// Runs `stovepipe healthcheck` with `arguments`; it must finish well within the test's patience.
private func healthcheck(_ arguments: [String]) throws -> Finished {
    try runStovepipe(["healthcheck", "--timeout", "3"] + arguments, timeout: 20)
}

@Suite(.serialized) struct HealthcheckTests {
    @Test func httpsHealthcheckVerifiesTheCertificateUnlessTold() throws {
        let certificate = try SelfSignedCertificate(subjectAltName: "IP:127.0.0.1")
        defer { certificate.remove() }
        let server = try RunningServer(arguments: ["--tls-cert", certificate.certificate, "--tls-key", certificate.key])
        #expect(server.scheme == "https")
        let url = "https://127.0.0.1:\(server.port)/healthz"

        let trusted = try healthcheck(["--url", url, "--ca-file", certificate.certificate])
        #expect(trusted.status == 0, "\(trusted.stdout) \(trusted.stderr)")
        #expect(trusted.stdout == "healthy\n")

        // The system trust store does not know a self-signed certificate.
        let untrusted = try healthcheck(["--url", url])
        #expect(untrusted.status == 1)
        #expect(untrusted.stdout.hasPrefix("unhealthy: certificate verification failed for 127.0.0.1: self-signed certificate"),
            "\(untrusted.stdout)")
        #expect(untrusted.stdout.split(separator: "\n").count == 1)

        let insecure = try healthcheck(["--url", url, "--insecure"])
        #expect(insecure.status == 0, "\(insecure.stdout) \(insecure.stderr)")
        #expect(insecure.stdout == "healthy\n")

        // Trusted but issued for 127.0.0.1 only: the name in the URL is checked too.
        let otherName = try healthcheck(["--url", "https://localhost:\(server.port)/healthz", "--ca-file", certificate.certificate])
        #expect(otherName.status == 1)
        #expect(otherName.stdout.hasPrefix("unhealthy: certificate verification failed for localhost: hostname mismatch"),
            "\(otherName.stdout)")

        let missing = try healthcheck(["--url", "https://127.0.0.1:\(server.port)/nope", "--ca-file", certificate.certificate])
        #expect(missing.status == 1)
        #expect(missing.stdout == "unhealthy: HTTP 404\n")

        // Plain HTTP to the TLS port: the server's plain-text 400, at once rather than a hang.
        let plain = try healthcheck(["--url", "http://127.0.0.1:\(server.port)/healthz"])
        #expect(plain.status == 1)
        #expect(plain.stdout == "unhealthy: HTTP 400\n")

        let unusableCA = try healthcheck(["--url", url, "--ca-file", certificate.directory.appendingPathComponent("absent.pem").path])
        #expect(unusableCA.status == 1)
        #expect(unusableCA.stdout.hasPrefix("unhealthy: cannot use --ca-file "), "\(unusableCA.stdout)")

        #expect(server.terminate() == 0)
        let stopped = try healthcheck(["--url", url, "--insecure"])
        #expect(stopped.status == 1)
        #expect(stopped.stdout.hasPrefix("unhealthy: cannot connect to 127.0.0.1:\(server.port)"), "\(stopped.stdout)")
    }

    @Test func serverNameVerifiesTheCertificateOfAPublicNameOverLoopback() throws {
        let certificate = try SelfSignedCertificate(subjectAltName: "DNS:stovepipe.internal")
        defer { certificate.remove() }
        let server = try RunningServer(arguments: ["--tls-cert", certificate.certificate, "--tls-key", certificate.key])
        let url = "https://127.0.0.1:\(server.port)/healthz"

        let named = try healthcheck(["--url", url, "--ca-file", certificate.certificate, "--server-name", "stovepipe.internal"])
        #expect(named.status == 0, "\(named.stdout) \(named.stderr)")
        #expect(named.stdout == "healthy\n")

        let byAddress = try healthcheck(["--url", url, "--ca-file", certificate.certificate])
        #expect(byAddress.status == 1)
        #expect(byAddress.stdout.hasPrefix("unhealthy: certificate verification failed for 127.0.0.1: "), "\(byAddress.stdout)")
        #expect(byAddress.stdout.contains("--server-name"), "\(byAddress.stdout)")

        let otherName = try healthcheck(["--url", url, "--ca-file", certificate.certificate, "--server-name", "other.internal"])
        #expect(otherName.status == 1)
        #expect(otherName.stdout.hasPrefix("unhealthy: certificate verification failed for other.internal: hostname mismatch"),
            "\(otherName.stdout)")
        #expect(server.terminate() == 0)
    }

    @Test func httpsHealthcheckAgainstAPlainPortFailsTheHandshake() throws {
        let server = try RunningServer(arguments: [])
        let finished = try healthcheck(["--url", "https://127.0.0.1:\(server.port)/healthz", "--insecure"])
        #expect(finished.status == 1)
        #expect(finished.stdout.hasPrefix("unhealthy: TLS handshake with 127.0.0.1:\(server.port) failed: "), "\(finished.stdout)")
        #expect(server.terminate() == 0)
    }

    @Test func healthcheckGivesUpOnASilentServerWithinItsTimeout() throws {
        let (listener, port) = try silentListener()
        defer { close(listener) }
        let plain = try runStovepipe(["healthcheck", "--timeout", "1", "--url", "http://127.0.0.1:\(port)/healthz"], timeout: 20)
        #expect(plain.status == 1)
        #expect(plain.stdout == "unhealthy: no answer from 127.0.0.1:\(port) within 1 s\n")
        // The ClientHello goes out, the ServerHello never comes: the handshake's read times out.
        let tls = try runStovepipe(
            ["healthcheck", "--timeout", "1", "--url", "https://127.0.0.1:\(port)/healthz", "--insecure"], timeout: 20)
        #expect(tls.status == 1)
        #expect(tls.stdout == "unhealthy: no answer from 127.0.0.1:\(port) within 1 s\n")
    }

    @Test func aTimeoutBelowAMicrosecondStillTimesOut() throws {
        let (listener, port) = try silentListener()
        defer { close(listener) }
        // A zero SO_RCVTIMEO means no timeout at all (socket(7)): the probe would wait forever.
        let finished = try runStovepipe(["healthcheck", "--timeout", "0.0000001", "--url", "http://127.0.0.1:\(port)/healthz"], timeout: 20)
        #expect(finished.status == 1)
        #expect(finished.stdout.hasPrefix("unhealthy: no answer from 127.0.0.1:\(port) within "), "\(finished.stdout)")
    }

    @Test func healthcheckRejectsContradictoryOptions() throws {
        let both = try runStovepipe(["healthcheck", "--url", "https://127.0.0.1:1/healthz", "--insecure", "--ca-file", "/x.pem"])
        #expect(both.status != 0 && both.status != 1)
        #expect(both.stderr.contains("--ca-file and --insecure exclude each other"), "\(both.stderr)")
        let plain = try runStovepipe(["healthcheck", "--url", "http://127.0.0.1:1/healthz", "--insecure"])
        #expect(plain.status != 0 && plain.status != 1)
        #expect(plain.stderr.contains("apply to https:// URLs only"), "\(plain.stderr)")
        let namedPlain = try runStovepipe(["healthcheck", "--url", "http://127.0.0.1:1/healthz", "--server-name", "a.example"])
        #expect(namedPlain.status != 0 && namedPlain.status != 1)
        #expect(namedPlain.stderr.contains("apply to https:// URLs only"), "\(namedPlain.stderr)")
        for badName in ["", "two words", "a/b", String(repeating: "a", count: 254)] {
            let named = try runStovepipe(["healthcheck", "--url", "https://127.0.0.1:1/healthz", "--server-name", badName])
            #expect(named.status != 0 && named.status != 1)
            #expect(named.stderr.contains("--server-name must be a DNS name or an IP address"), "\(named.stderr)")
        }
        let scheme = try runStovepipe(["healthcheck", "--url", "ftp://127.0.0.1/healthz"])
        #expect(scheme.status != 0 && scheme.status != 1)
    }
}

/// A listener on 127.0.0.1 that accepts (the kernel completes the handshake) but never answers; its descriptor and port.
func silentListener() throws -> (Int32, Int) {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    try #require(listener >= 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(listener, pointer, length) == 0 && listen(listener, 4) == 0 && getsockname(listener, pointer, &length) == 0
        }
    }
    guard bound else {
        close(listener)
        throw SilentListenerError()
    }
    return (listener, Int(UInt16(bigEndian: address.sin_port)))
}

private struct SilentListenerError: Error {}
