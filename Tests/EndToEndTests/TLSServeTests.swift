import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs a helper program found on PATH with an argument vector; returns its exit status and stderr, and its stdout
/// when `keepingOutput` (else it goes nowhere).
@discardableResult
private func run(_ name: String, _ arguments: [String], keepingOutput: Bool = false) throws
    -> (status: Int32, stderr: String, stdout: String)
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [name] + arguments
    let errors = Pipe()
    process.standardError = errors
    // Both pipes read at once would need two readers; the helpers here print little on the stream not kept.
    let output = keepingOutput ? Pipe() : nil
    process.standardOutput = output ?? FileHandle.nullDevice
    try process.run()
    let printed = output.map { String(decoding: $0.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) } ?? ""
    let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, stderr, printed)
}

/// The subject curl saw on a fresh HTTPS connection to /healthz, or nil if the request failed.
private func subject(port: Int, trusting bundle: String) throws -> String? {
    let (status, log, _) = try run(
        "curl", ["-sS", "-v", "--max-time", "10", "-o", "/dev/null", "--cacert", bundle, "https://127.0.0.1:\(port)/healthz"])
    guard status == 0 else { return nil }
    return log.split(separator: "\n").first { $0.contains("subject:") }.map { String($0.split(separator: "subject:").last ?? "").trimmingCharacters(in: .whitespaces) }
}

/// The value of `stovepipe_config_reloads_total{file="tls",result=...}` read over HTTPS with curl; nil if it is absent.
private func tlsReloads(_ result: String, port: Int, trusting bundle: String) throws -> Double? {
    let text = try run(
        "curl", ["-sS", "--max-time", "10", "--cacert", bundle, "https://127.0.0.1:\(port)/metrics"], keepingOutput: true
    ).stdout
    return try PrometheusExposition(text).value("stovepipe_config_reloads_total", ["file": "tls", "result": result])
}

@Suite(.serialized) struct TLSServeTests {
    @Test func tlsFlagsServeHTTPSAndSIGHUPReloadsTheCertificate() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-e2e-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        for name in ["first", "second"] {
            let made = try run("openssl", [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(name)", "-addext", "subjectAltName=IP:127.0.0.1",
                "-days", "1", "-keyout", path("\(name).key"), "-out", path("\(name).crt"),
            ])
            #expect(made.status == 0, "\(made.stderr)")
        }
        let files = FileManager.default
        try files.copyItem(atPath: path("first.crt"), toPath: path("live.crt"))
        try files.copyItem(atPath: path("first.key"), toPath: path("live.key"))
        let bundle = try String(contentsOfFile: path("first.crt"), encoding: .utf8) + String(contentsOfFile: path("second.crt"), encoding: .utf8)
        try bundle.write(toFile: path("both.pem"), atomically: true, encoding: .utf8)

        let server = try RunningServer(arguments: [], environment: ["STOVEPIPE_TLS_CERT": path("live.crt"), "STOVEPIPE_TLS_KEY": path("live.key")])
        #expect(server.scheme == "https")
        #expect(try subject(port: server.port, trusting: path("both.pem")) == "CN=first")

        try files.removeItem(atPath: path("live.crt"))
        try files.removeItem(atPath: path("live.key"))
        try files.copyItem(atPath: path("second.crt"), toPath: path("live.crt"))
        try files.copyItem(atPath: path("second.key"), toPath: path("live.key"))
        #expect(try tlsReloads("ok", port: server.port, trusting: path("both.pem")) == 0)
        kill(server.process.processIdentifier, SIGHUP)
        #expect(try eventually { try subject(port: server.port, trusting: path("both.pem")) == "CN=second" })
        #expect(try eventually { try tlsReloads("ok", port: server.port, trusting: path("both.pem")) == 1 })

        // A reload that fails is logged and counted, and keeps the certificate in use.
        try Data("not a key".utf8).write(to: URL(fileURLWithPath: path("live.key")))
        kill(server.process.processIdentifier, SIGHUP)
        #expect(eventually { server.log.contains("TLS reload failed") }, "\(server.log)")
        #expect(try subject(port: server.port, trusting: path("both.pem")) == "CN=second")
        #expect(try eventually { try tlsReloads("failed", port: server.port, trusting: path("both.pem")) == 1 })
        #expect(try tlsReloads("ok", port: server.port, trusting: path("both.pem")) == 1)
        #expect(server.terminate() == 0)
    }

    @Test func anExpiredCertificateIsServedWithAWarningAtStartAndOnReload() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-e2e-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        let current = try run("openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=current", "-days", "1",
            "-keyout", path("current.key"), "-out", path("current.crt"),
        ])
        #expect(current.status == 0, "\(current.stderr)")
        // `openssl req` cannot backdate a certificate; `openssl ca` can, given a database and a policy.
        let request = try run("openssl", [
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=expired", "-keyout", path("expired.key"),
            "-out", path("expired.csr"),
        ])
        #expect(request.status == 0, "\(request.stderr)")
        try Data().write(to: URL(fileURLWithPath: path("index.txt")))
        try "01\n".write(toFile: path("serial"), atomically: true, encoding: .utf8)
        try """
            [ca]
            default_ca = local
            [local]
            database = \(path("index.txt"))
            serial = \(path("serial"))
            new_certs_dir = \(directory.path)
            default_md = sha256
            policy = any
            [any]
            commonName = supplied
            """.write(toFile: path("ca.cnf"), atomically: true, encoding: .utf8)
        let expired = try run("openssl", [
            "ca", "-batch", "-config", path("ca.cnf"), "-selfsign", "-keyfile", path("expired.key"), "-in", path("expired.csr"),
            "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-out", path("expired.crt"),
        ])
        #expect(expired.status == 0, "\(expired.stderr)")

        let startedExpired = try RunningServer(arguments: ["--tls-cert", path("expired.crt"), "--tls-key", path("expired.key")])
        #expect(eventually { startedExpired.log.contains("TLS certificate expired") }, "\(startedExpired.log)")
        #expect(startedExpired.log.contains("2020-01-02T00:00:00Z"), "\(startedExpired.log)")
        #expect(startedExpired.terminate() == 0)

        let files = FileManager.default
        try files.copyItem(atPath: path("current.crt"), toPath: path("live.crt"))
        try files.copyItem(atPath: path("current.key"), toPath: path("live.key"))
        let server = try RunningServer(arguments: ["--tls-cert", path("live.crt"), "--tls-key", path("live.key")])
        try files.removeItem(atPath: path("live.crt"))
        try files.removeItem(atPath: path("live.key"))
        try files.copyItem(atPath: path("expired.crt"), toPath: path("live.crt"))
        try files.copyItem(atPath: path("expired.key"), toPath: path("live.key"))
        kill(server.process.processIdentifier, SIGHUP)
        #expect(eventually { server.log.contains("TLS certificate reloaded") }, "\(server.log)")
        #expect(eventually { server.log.contains("TLS certificate expired") }, "\(server.log)")
        let lines = server.log.split(separator: "\n")
        #expect(lines.filter { $0.contains("TLS certificate expired") }.count == 1, "only the reload warns: \(server.log)")
        #expect(server.terminate() == 0)
    }

    @Test func tlsCertificateWithoutKeyIsRejected() throws {
        let process = Process()
        process.executableURL = RunningServer.binary
        process.arguments = ["serve", "--port", "0", "--tls-cert", "/nonexistent.crt"]
        process.environment = RunningServer.environment()
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let output = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        #expect(output.contains("--tls-cert and --tls-key"), "\(output)")
    }
}
