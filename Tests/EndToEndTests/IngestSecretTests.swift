import API
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A temporary file holding `contents`; the caller removes it.
private func secretFile(_ contents: [UInt8]) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-secret-\(UUID().uuidString)").path
    try Data(contents).write(to: URL(fileURLWithPath: path))
    return path
}

extension EndToEndTests {
    /// Docker and Kubernetes secrets are files, and an editor or `echo` ends one with a line break: "\n" or "\r\n" ends a
    /// secret's line and is not part of it, a blank line is no secret, anything else is, and every line is a secret (a
    /// rotation lists the old and the new one), whether the file is read or its content reaches the environment (a
    /// Kubernetes secret made from a file, given as STOVEPIPE_INGEST_SECRET).
    @Test(arguments: [
        ("hush\n", "hush"), ("hush\r\n", "hush"), ("hush", "hush"), (" hush\n\n", " hush"),
        ("old-secret-of-16+\nhush-hush-hush-hush\n", "hush-hush-hush-hush"),
        ("old-secret-of-16+\r\n\n \t\nhush-hush-hush-hush", "hush-hush-hush-hush"),
    ], [false, true])
    func anIngestSecretFromAFileSignsIngestsWithoutItsLastLineBreak(_ file: (String, String), viaEnvironment: Bool) throws {
        let (contents, secret) = file
        let repository = try TemporaryRepository()
        defer { repository.remove() }
        try repository.commit("one")
        let path = try secretFile(Array(contents.utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let queues = ["--queues", try gitQueuesFile(repository).path]
        let server = try viaEnvironment
            ? RunningServer(arguments: queues, environment: ["STOVEPIPE_INGEST_SECRET": contents])
            : RunningServer(arguments: queues + ["--ingest-secret-file", path])
        let body = #"{"ref":"refs/heads/main"}"#
        let withFileBytes = SignatureVerifier(secret: Array(contents.utf8)).signature(for: Array(body.utf8))
        if contents != secret {
            let refused = try http("POST", "/queues/app/main/ingest", port: server.port, body: body,
                headers: [("X-Stovepipe-Signature-256", withFileBytes)])
            #expect(refused.status == 401, "the line break was taken as part of the secret")
        }
        let signature = SignatureVerifier(secret: Array(secret.utf8)).signature(for: Array(body.utf8))
        let accepted = try http("POST", "/queues/app/main/ingest", port: server.port, body: body,
            headers: [("X-Stovepipe-Signature-256", signature)])
        #expect(accepted.status == 202, "\(accepted.text)")
        #expect(try http("POST", "/queues/app/main/ingest", port: server.port, body: body).status == 401)
        #expect(server.terminate() == 0)
        #expect(!server.log.contains("hush"))
        #expect(!server.log.contains("visible to other users"), "a secret from a file is not on the command line")
    }

    /// `$FILE` in the arguments or the environment stands for a file holding `contents`.
    @Test(arguments: [
        ([UInt8](), [String](), ["STOVEPIPE_INGEST_SECRET_FILE": "$FILE"], "the ingest secret is set but empty or blank in $FILE"),
        (Array("\n".utf8), ["--ingest-secret-file", "$FILE"], [:], "the ingest secret is set but empty or blank in $FILE"),
        (Array(" \t\r\n".utf8), ["--ingest-secret-file", "$FILE"], [:], "the ingest secret is set but empty or blank in $FILE"),
        (Array("hush".utf8), ["--ingest-secret", "hush", "--ingest-secret-file", "$FILE"], [:],
         "--ingest-secret (STOVEPIPE_INGEST_SECRET) and --ingest-secret-file (STOVEPIPE_INGEST_SECRET_FILE) are both set"),
        (Array("hush".utf8), ["--ingest-secret-file", "$FILE"], ["STOVEPIPE_INGEST_SECRET": "hush"], "are both set: give one"),
        (Array("hush".utf8), [], ["STOVEPIPE_INGEST_SECRET_FILE": ""], "the ingest secret file is set but empty"),
        (Array("hush".utf8), ["--ingest-secret-file", "$FILE.missing"], [:],
         "cannot read the ingest secret file $FILE.missing: No such file or directory"),
        (Array("hush".utf8), ["--ingest-secret-file", "/tmp"], [:], "cannot read the ingest secret file /tmp: not a regular file"),
        (Array(repeating: UInt8(ascii: "h"), count: 4097), ["--ingest-secret-file", "$FILE"], [:],
         "cannot read the ingest secret file $FILE: is 4097 bytes; at most 4096 are read"),
        ([0x68, 0xFF, 0x68], ["--ingest-secret-file", "$FILE"], [:], "cannot read the ingest secret file $FILE: not UTF-8 text"),
        // A secret wrapped over two lines would be two keys, the second guessable.
        (Array("hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh\nhh==\n".utf8), ["--ingest-secret-file", "$FILE"], [:],
         "cannot read the ingest secret file $FILE: secret 2 of 2 (one per line) has 4 bytes; with several secrets each needs at least 16"),
        (Array("hush".utf8), [], ["STOVEPIPE_INGEST_SECRET": "hhhhhhhhhhhhhhhhhhhh\nhushhush"],
         "the ingest secret: secret 2 of 2 (one per line) has 8 bytes"),
    ])
    func aMissingUnreadableEmptyOrSecondIngestSecretIsAUsageError(
        _ contents: [UInt8], _ arguments: [String], _ environment: [String: String], _ message: String
    ) throws {
        let path = try secretFile(contents)
        defer { try? FileManager.default.removeItem(atPath: path) }
        func resolved(_ text: String) -> String { text.replacingOccurrences(of: "$FILE", with: path) }
        let (listened, status, output) = try Self.runUntilListeningOrExit(
            ["serve", "--port", "0"] + arguments.map(resolved), environment: environment.mapValues(resolved))
        #expect(!listened, "started")
        #expect(status == 64, "\(output)")
        #expect(output.contains(resolved(message)), "\(output)")
        #expect(!output.contains("hh") && !output.contains("hush"), "the secret is printed")
    }

    /// Arguments are readable by every user (`ps`, /proc/PID/cmdline); the environment and files are not.
    @Test(arguments: [(["--ingest-secret", "hush"], [String: String](), true), ([], ["STOVEPIPE_INGEST_SECRET": "hush"], false)])
    func anIngestSecretOnTheCommandLineIsWarnedAboutOnce(_ arguments: [String], _ environment: [String: String], _ warned: Bool) throws {
        let (listened, _, output) = try Self.runUntilListeningOrExit(["serve", "--port", "0"] + arguments, environment: environment)
        #expect(listened, "\(output)")
        let warnings = output.split(separator: "\n").filter { $0.contains("visible to other users") }
        #expect(warnings.count == (warned ? 1 : 0), "\(output)")
        #expect(warnings.allSatisfy { $0.contains("WARNING") && $0.contains("--ingest-secret-file") }, "\(output)")
        #expect(!output.contains("hush"))
    }

    /// The MySQL URL's password is as readable on the command line as the ingest secret; the environment is not.
    @Test(arguments: [
        (["serve", "--port", "0", "--mysql-url", "mysql://u:hush@127.0.0.1:1/db?connect-timeout=1"], [String: String](), true),
        (["migrate", "--mysql-url", "mysql://u:hush@127.0.0.1:1/db?connect-timeout=1"], [:], true),
        (["topics", "--mysql-url", "mysql://u:hush@127.0.0.1:1/db?connect-timeout=1"], [:], true),
        (["serve", "--port", "0", "--mysql-url", "mysql://u@127.0.0.1:1/db?connect-timeout=1"], [:], false),
        (["serve", "--port", "0"], ["STOVEPIPE_MYSQL_URL": "mysql://u:hush@127.0.0.1:1/db?connect-timeout=1"], false),
    ])
    func aMySQLPasswordOnTheCommandLineIsWarnedAboutOnce(
        _ arguments: [String], _ environment: [String: String], _ warned: Bool
    ) throws {
        let (_, status, output) = try Self.runUntilListeningOrExit(arguments, environment: environment)
        #expect(status != 0, "the database at port 1 does not answer: \(output)")
        let warnings = output.split(separator: "\n").filter { $0.contains("visible to other users") }
        #expect(warnings.count == (warned ? 1 : 0), "\(output)")
        #expect(warnings.allSatisfy { $0.contains("WARNING") && $0.contains("STOVEPIPE_MYSQL_URL") }, "\(output)")
        #expect(!output.contains("hush"))
    }

    /// A URL that does not parse is refused before anything starts, naming the setting it came from.
    @Test(arguments: [
        (["serve", "--port", "0", "--mysql-url", "mysql://u:hush@127.0.0.1:1/db?read-timeout=never"], [String: String](), "--mysql-url"),
        (["serve", "--port", "0"], ["STOVEPIPE_MYSQL_URL": "mysql://u:hush@127.0.0.1:1/db?read-timeout=never"], "STOVEPIPE_MYSQL_URL"),
        (["migrate"], ["STOVEPIPE_MYSQL_URL": "mysql://u:hush@127.0.0.1:1/db?read-timeout=never"], "STOVEPIPE_MYSQL_URL"),
        (["topics"], ["STOVEPIPE_MYSQL_URL": "mysql://u:hush@127.0.0.1:1/db?read-timeout=never"], "STOVEPIPE_MYSQL_URL"),
        (["migrate", "--mysql-url", "mysql://u:hush@127.0.0.1:1/db?read-timeout=never"], ["STOVEPIPE_MYSQL_URL": "mysql://u@h/db"], "--mysql-url"),
    ])
    func anInvalidMySQLURLIsRefusedNamingItsSource(
        _ arguments: [String], _ environment: [String: String], _ source: String
    ) throws {
        let (listened, status, output) = try Self.runUntilListeningOrExit(arguments, environment: environment)
        #expect(!listened && status != 0, "\(output)")
        #expect(
            output.contains("\(source): invalid MySQL URL: bad value for parameter 'read-timeout' (whole seconds, 1 to 86400)"),
            "\(output)")
        #expect(!output.contains("hush"))
    }
}
