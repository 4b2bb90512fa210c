import Foundation
import MySQLClient
import TestSupport
import Testing

/// The URL's `ssl-mode` and `ssl-ca` against a MariaDB of the test's own that speaks TLS with a certificate for IP
/// 127.0.0.1, issued by a CA the test makes; a second CA stands for the wrong one.
@Suite("MySQL TLS against a live server", .enabled(if: privateServerSuitesRun), .serialized)
struct MySQLTLSTests {
    @Test("REQUIRED encrypts; VERIFY_IDENTITY connects only with the issuing CA and the certificate's host")
    func sslModes() async throws {
        try await withPrivateServer(preparing: Self.makeCertificates) { server, url in try await Self.checkModes(server, url: url) }
    }

    private static func checkModes(_ server: PrivateServer, url: String) async throws {
        let tls = server.directory.appendingPathComponent("tls")
        let issuer = tls.appendingPathComponent("ca.pem").path
        let stranger = tls.appendingPathComponent("other-ca.pem").path

        #expect(try await cipher(url, "ssl-mode=DISABLED") == "", "no TLS unless asked")
        #expect(try await cipher(url, "ssl-mode=REQUIRED") != "", "REQUIRED without a CA encrypts")
        #expect(try await cipher(url, "ssl-mode=VERIFY_IDENTITY&ssl-ca=\(issuer)") != "")

        // The certificate names IP 127.0.0.1: another CA fails the chain, another host name fails the identity.
        await expectTLSRefused { try await cipher(url, "ssl-mode=VERIFY_IDENTITY&ssl-ca=\(stranger)") }
        let byName = url.replacingOccurrences(of: "@127.0.0.1:", with: "@localhost:")
        await expectTLSRefused { try await cipher(byName, "ssl-mode=VERIFY_IDENTITY&ssl-ca=\(issuer)") }

        // Connector/C verifies the chain whenever a CA is given (SSL_VERIFY_PEER), REQUIRED only skips the host name.
        await expectTLSRefused { try await cipher(url, "ssl-mode=REQUIRED&ssl-ca=\(stranger)") }
        #expect(try await cipher(byName, "ssl-mode=REQUIRED&ssl-ca=\(issuer)") != "")
    }

    /// Expects `body` to fail as a refused TLS set-up (2026), not as any other connection error.
    private static func expectTLSRefused(
        _ body: () async throws -> String, sourceLocation: SourceLocation = #_sourceLocation
    ) async {
        do {
            let cipher = try await body()
            Issue.record("connected with cipher \(cipher)", sourceLocation: sourceLocation)
        } catch {
            #expect((error as? MySQLError)?.code == .sslConnectionError, "\(error)", sourceLocation: sourceLocation)
        }
    }

    /// The session's TLS cipher on a new connection made with `parameters`, or "" without TLS.
    private static func cipher(_ url: String, _ parameters: String) async throws -> String {
        let configuration = try MySQLConfiguration(url: url + "?connect-timeout=5&" + parameters)
        return try await offPool {
            let connection = try MySQLConnection(configuration: configuration)
            defer { connection.close() }
            let rows = try connection.query(MySQLQuery(unsafeSQL: "SHOW SESSION STATUS LIKE 'Ssl_cipher'"))
            return rows.first?.string(1) ?? ""
        }
    }

    /// A CA, a server certificate it issues for IP 127.0.0.1, and an unrelated CA, in `directory`/tls.
    private static func makeCertificates(_ directory: URL) throws {
        let tls = directory.appendingPathComponent("tls")
        try FileManager.default.createDirectory(at: tls, withIntermediateDirectories: true)
        try "subjectAltName=IP:127.0.0.1\n".write(to: tls.appendingPathComponent("server.ext"), atomically: true, encoding: .utf8)
        for arguments in [
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=stovepipe test CA", "-days", "2",
             "-keyout", "ca-key.pem", "-out", "ca.pem"],
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=stovepipe other CA", "-days", "2",
             "-keyout", "other-ca-key.pem", "-out", "other-ca.pem"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server-key.pem", "-out", "server.csr"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "2",
             "-extfile", "server.ext", "-out", "server-cert.pem"],
        ] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["openssl"] + arguments
            process.currentDirectoryURL = tls
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw LiveDatabase.Unavailable(description: "openssl \(arguments[0]) exited \(process.terminationStatus)")
            }
        }
    }
}
