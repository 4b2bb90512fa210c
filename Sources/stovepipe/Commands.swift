import API
import ArgumentParser
import CEpoll
import Domain
import Foundation
import HTTPServer
import Logging
import Metrics
import MySQLBackend
import MySQLClient
import Prometheus

@main
struct Stovepipe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stovepipe",
        abstract: "At which commit is this branch green?",
        subcommands: [Serve.self, Migrate.self, Topics.self, Healthcheck.self],
        defaultSubcommand: Serve.self)

    /// Parses the arguments and runs the command they name, `serve` with SIGHUP held from the start.
    static func main() {
        // SIGHUP reloads the configuration once `serve` has its handler; before that its default action would
        // end the process. Held before any thread starts, it stays blocked on every thread (pthread_sigmask:
        // threads inherit the mask), so one that comes during start-up waits for the handler. Other commands
        // get the mask they started with back before they run, and with it SIGHUP's default action.
        let previous = SignalWaiter.hold([SIGHUP])
        var parsed: (any ParsableCommand.Type)?
        do {
            var command = try parseAsRoot()
            parsed = type(of: command)
            // ArgumentParser takes an option given twice at its last value. Neither is more plainly meant than the
            // other (as with a secret and a secret file together), so `--mysql-url A ... --mysql-url B` is refused.
            let repeatable: Set<String> =
                switch parsed {
                case is Topics.List.Type: ["--topic"]
                case is Serve.Type: ["--cors-allow-origin"]
                default: []
                }
            if let repeated = repeatedOption(in: CommandLine.arguments.dropFirst(), repeatable: repeatable) {
                throw ValidationError("\(repeated) is given more than once: give it once")
            }
            if !(command is Serve) { SignalWaiter.release(previous) }
            try command.run()
        } catch let error as ArgumentParser.ValidationError {
            // With JSON logs (the image's setting) the reason a command stopped goes to the same pipeline as its
            // other lines: one JSON line, not ArgumentParser's text and usage, which a log shipper cannot parse.
            if LogSink.standardError.writesJSON { exitLoggingAsJSON(error.message, code: .validationFailure) }
            guard let parsed, parsed != Self.self else { exit(withError: error) }
            // ArgumentParser pairs an error thrown by run() with the root's usage; the subcommand's is the one
            // that helps.
            let usage = usageString(for: parsed)
            let command = usage.split(separator: " ").prefix { word in
                !word.hasPrefix("<") && !word.hasPrefix("[") && !word.hasPrefix("-")
            }
            let text = """
                Error: \(error.message)
                Usage: \(usage)
                  See '\(command.joined(separator: " ")) --help' for more information.

                """
            FileHandle.standardError.write(Data(text.utf8))
            Glibc.exit(ExitCode.validationFailure.rawValue)
        } catch {
            // ExitCode and CleanExit are outcomes (healthcheck's exit 1, --help), not failures to report.
            if LogSink.standardError.writesJSON, !(error is ExitCode), !(error is CleanExit) {
                exitLoggingAsJSON(message(for: error), code: exitCode(for: error))
            }
            exit(withError: error)
        }
    }

    /// The first option (`--name` or `--name=value`) that `arguments` give more than once, other than `repeatable`
    /// ones; nil when none is. What follows `--` is not an option.
    static func repeatedOption(in arguments: some Sequence<String>, repeatable: Set<String>) -> String? {
        var seen: Set<Substring> = []
        for argument in arguments {
            if argument == "--" { break }
            // A value is never taken for an option's value when it starts with "--", so such a word is an option.
            guard argument.hasPrefix("--") else { continue }
            let name = argument.prefix { $0 != "=" }
            guard !repeatable.contains(String(name)), name != "--help" else { continue }
            if !seen.insert(name).inserted { return String(name) }
        }
        return nil
    }

    /// Writes `message` as one critical JSON log line on stderr and exits with `code`.
    private static func exitLoggingAsJSON(_ message: String, code: ExitCode) -> Never {
        let logger = Logger(label: "stovepipe", factory: { label in StderrLogHandler(label: label, format: .json, logLevel: .critical) })
        logger.critical("\(message)")
        Glibc.exit(code.rawValue)
    }
}

/// Options shared by the commands that log.
struct LoggingOptions: ParsableArguments {
    @Option(help: "trace, debug, info, notice, warning, error or critical (env STOVEPIPE_LOG_LEVEL). (default: info)")
    var logLevel: String?

    @Option(help: "text or json lines (env STOVEPIPE_LOG_FORMAT). (default: text)")
    var logFormat: String?

    func makeLogger(label: String) throws -> Logger {
        let environment = ProcessInfo.processInfo.environment
        // A refusal names where the value came from: an operator looking for a flag that is not on the command line
        // would not think of the environment.
        let levelText = logLevel ?? environment["STOVEPIPE_LOG_LEVEL"] ?? "info"
        guard let level = Logger.Level(rawValue: levelText) else {
            let source = logLevel == nil ? "STOVEPIPE_LOG_LEVEL" : "--log-level"
            throw ValidationError("\(source) must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let formatText = logFormat ?? environment["STOVEPIPE_LOG_FORMAT"] ?? "text"
        guard let format = LogFormat(rawValue: formatText) else {
            throw ValidationError("\(logFormat == nil ? "STOVEPIPE_LOG_FORMAT" : "--log-format") must be text or json")
        }
        var logger = Logger(label: label, factory: { label in StderrLogHandler(label: label, format: format, logLevel: level) })
        logger.logLevel = level
        return logger
    }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the service (the default command).")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on; 0 picks a free one.") var port = 8080
    @Option(help: "mysql://USER[:PASS]@HOST[:PORT]/DB (env STOVEPIPE_MYSQL_URL); in-memory when absent.")
    var mysqlURL: String?
    @Option(help: "The queues file (env STOVEPIPE_QUEUES), read again on SIGHUP; a demo queue demo/main when absent.")
    var queues: String?
    @Option(help: "Require HMAC-SHA256 signed ingest bodies with this secret, or with any of its lines (env STOVEPIPE_INGEST_SECRET); other users see it in ps.")
    var ingestSecret: String?
    @Option(help: "Read the ingest secrets from this file, one per line, at start-up and on SIGHUP (env STOVEPIPE_INGEST_SECRET_FILE).")
    var ingestSecretFile: String?
    @Option(help: "HTTP worker threads (handlers may block on storage), 1...4096. (default: twice the cores, at least 4: \(HTTPServerConfiguration.defaultWorkerThreads) here)")
    var workers: Int?
    @Option(help: "Event-loop threads that read and write sockets, 1...256. (default: one per two cores, 1 or 2: \(HTTPServerConfiguration.defaultEventLoopThreads) here)")
    var eventLoops: Int?
    @Option(help: "Milliseconds a worker with nothing queued waits for a keep-alive connection's next request itself, 0...1000; 0 never. (default: 1)")
    var workerKeepAliveWaitMs: Double?
    @Option(help: "Most open connections; a connection beyond it is answered 503 and closed. \(Self.defaultText(\.maxConnections))")
    var maxConnections: Int?
    @Option(help: "Seconds a request may wait for a worker; one that waited longer is answered 503 unhandled. \(Self.defaultText(\.queueTimeout))")
    var queueTimeout: Double?
    @Option(help: "Largest request body in bytes (413 beyond). \(Self.defaultText(\.maxBodyBytes))") var maxBodyBytes: Int?
    @Option(help: "Largest request line in bytes (414 beyond). \(Self.defaultText(\.maxRequestLineBytes))")
    var maxRequestLineBytes: Int?
    @Option(help: "Largest header section in bytes (431 beyond). \(Self.defaultText(\.maxHeaderBytes))") var maxHeaderBytes: Int?
    @Option(help: "Most header fields (431 beyond). \(Self.defaultText(\.maxHeaderFields))") var maxHeaderFields: Int?
    @Option(help: "Seconds a client has to send the complete header section (408 beyond). \(Self.defaultText(\.headerTimeout))")
    var headerTimeout: Double?
    @Option(help: "Seconds a client has to send a request's body once its header section is in (408 beyond). \(Self.defaultText(\.bodyTimeout))")
    var bodyTimeout: Double?
    @Option(help: "Seconds an idle keep-alive connection stays open. \(Self.defaultText(\.idleTimeout))") var idleTimeout: Double?
    @Option(help: "Requests served on one connection before it is closed. \(Self.defaultText(\.maxRequestsPerConnection))")
    var maxRequestsPerConnection: Int?
    @Option(help: "Seconds graceful shutdown waits for in-flight work.") var shutdownTimeout: Double = 10
    @Option(help: "Serve HTTPS with this PEM certificate chain; needs --tls-key (env STOVEPIPE_TLS_CERT).")
    var tlsCert: String?
    @Option(help: "The PEM private key of --tls-cert; SIGHUP reloads both (env STOVEPIPE_TLS_KEY).")
    var tlsKey: String?
    @Option(help: "Threads that consume the process topic, at most 256; 0 for a replica that only publishes (needs --mysql-url).")
    var consumerThreads = 4
    @Option(help: "Deliveries of a message before it is dead-lettered.") var topicMaxAttempts = 10
    @Option(help: "Milliseconds before the first redelivery of a failed message; doubles per attempt.")
    var topicBackoffBaseMs = 200
    @Option(help: "Most milliseconds between redeliveries, at most 86400000 (a day).") var topicBackoffCapMs = 60_000
    @Option(help: "Seconds a partition lease lasts without renewal (MySQL topic): a dead replica's work moves after it.")
    var topicLeaseSeconds: Double = 15
    @Option(help: "Seconds after which a delivery whose consumer died is redelivered (MySQL topic).")
    var topicVisibilitySeconds: Double = 15
    @Option(help: "Milliseconds between polls for work published by other replicas (MySQL topic).")
    var topicPollIntervalMs = 200
    @Option(help: "MySQL connections the stores and topic share, 1...1024; readiness opens 1 more.") var mysqlPoolSize = 16
    @Option(help: "Seconds after which a MySQL connection is closed and opened anew when next used, so that a failover or a DNS change reaches every connection, at most 86400; 0 keeps connections open.")
    var mysqlMaxLifetimeSeconds = 1800
    @Option(help: "Where private mirrors of remote git repositories are kept. (default: \(ServeConfiguration.defaultGitCacheDirectory))")
    var gitCacheDirectory: String?
    @Option(help: "Let browser pages from this origin (scheme://host[:port], or * for any) read the API: CORS; repeatable (env STOVEPIPE_CORS_ALLOW_ORIGIN, comma-separated). (default: none, no CORS fields)")
    var corsAllowOrigin: [String] = []
    @OptionGroup var logging: LoggingOptions

    /// "(default: N)" for an HTTP setting's help, read from the server's own defaults so that the two cannot differ.
    private static func defaultText(_ setting: KeyPath<HTTPServerConfiguration, Int>) -> String {
        "(default: \(HTTPServerConfiguration()[keyPath: setting]))"
    }

    /// "(default: N)" in seconds for an HTTP timeout's help.
    private static func defaultText(_ setting: KeyPath<HTTPServerConfiguration, Duration>) -> String {
        let (seconds, attoseconds) = HTTPServerConfiguration()[keyPath: setting].components
        let text = attoseconds == 0 ? "\(seconds)" : "\(Double(seconds) + Double(attoseconds) / 1e18)"
        return "(default: \(text))"
    }

    func run() throws {
        let logger = try logging.makeLogger(label: "stovepipe")
        // A line per request: batched off the request threads; warnings and worse still go out at once.
        LogSink.standardError.startBackgroundWriter()
        defer { LogSink.standardError.stopBackgroundWriter() }
        let environment = ProcessInfo.processInfo.environment
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        ]
        MetricsSystem.bootstrap(DescribedMetricsFactory(factory))

        let queuesFile = try queuesPath(environment["STOVEPIPE_QUEUES"])
        var configuration = ServeConfiguration(queues: try loadQueues(queuesFile))
        // Parsing a large queues file leaves its freed pages in glibc's heap below what the queues keep (a 60,000-queue
        // file: 410 MB resident); malloc_trim(3) hands them back to the system once, before the server starts.
        _ = malloc_trim(0)
        configuration.mysqlURL = mysqlURL ?? environment["STOVEPIPE_MYSQL_URL"]
        if mysqlURL == nil, environment["STOVEPIPE_MYSQL_URL"]?.isEmpty == true {
            // Empty is more likely a deployment template's gap than a wish for in-memory storage that a restart loses.
            throw ValidationError("STOVEPIPE_MYSQL_URL is set but empty: unset it for in-memory storage, or give a mysql:// URL")
        }
        // Checked here, before anything starts, so that a bad URL is refused as the setting it came from.
        _ = try mysqlConfiguration(flag: mysqlURL, environment: environment)
        let (ingestSecrets, ingestSecretsFile) = try resolveIngestSecrets(environment: environment)
        configuration.ingestSecrets = ingestSecrets
        if ingestSecret != nil {
            logger.warning(
                """
                --ingest-secret on the command line is visible to other users of this machine (ps, /proc/PID/cmdline): \
                give it in a file with --ingest-secret-file, or in STOVEPIPE_INGEST_SECRET
                """)
        }
        warnIfPasswordInArguments(mysqlURL, logger: logger)
        if let gitCacheDirectory, gitCacheDirectory.allSatisfy(\.isWhitespace) {
            // Taken as a relative path, it would put the mirrors of private repositories in the working directory.
            throw ValidationError(
                "--git-cache-directory is set but empty or blank: leave it out for $TMPDIR/stovepipe-git-mirrors, or give a directory")
        }
        guard (0...256).contains(consumerThreads) else { throw ValidationError("--consumer-threads must be 0...256") }
        if consumerThreads == 0, configuration.mysqlURL == nil {
            throw ValidationError(
                "--consumer-threads 0 needs --mysql-url: in-memory storage has no other replica to process what this one publishes")
        }
        configuration.consumerThreads = consumerThreads
        guard topicMaxAttempts > 0, topicBackoffBaseMs > 0, topicBackoffCapMs >= topicBackoffBaseMs, topicPollIntervalMs > 0,
            topicLeaseSeconds > 0, topicVisibilitySeconds > 0
        else {
            throw ValidationError("topic settings must be positive, and the backoff cap at least the base")
        }
        guard topicBackoffCapMs <= Self.maxTopicBackoffMs else {
            throw ValidationError("--topic-backoff-cap-ms must be at most \(Self.maxTopicBackoffMs) (a day)")
        }
        configuration.retryPolicy = RetryPolicy(
            maxAttempts: topicMaxAttempts, backoffBase: .milliseconds(topicBackoffBaseMs), backoffCap: .milliseconds(topicBackoffCapMs))
        configuration.topicLease = try Self.milliseconds(topicLeaseSeconds, "--topic-lease-seconds")
        configuration.topicVisibility = try Self.milliseconds(topicVisibilitySeconds, "--topic-visibility-seconds")
        configuration.topicPollInterval = .milliseconds(topicPollIntervalMs)
        guard (1...1024).contains(mysqlPoolSize) else { throw ValidationError("--mysql-pool-size must be 1...1024") }
        configuration.mysqlPoolSize = mysqlPoolSize
        guard (0...86_400).contains(mysqlMaxLifetimeSeconds) else {
            throw ValidationError("--mysql-max-lifetime-seconds must be 0...86400 (0: no limit)")
        }
        configuration.mysqlMaxLifetime = mysqlMaxLifetimeSeconds == 0 ? nil : .seconds(mysqlMaxLifetimeSeconds)
        if configuration.mysqlURL != nil {
            // mysql_library_init is not thread-safe and must run before any other thread starts (C API docs).
            try MySQLLibrary.initialize()
        }
        if let gitCacheDirectory { configuration.gitCacheDirectory = gitCacheDirectory }
        configuration.http = try httpConfiguration(environment: environment)
        configuration.cors = try corsPolicy(environment: environment)

        let application = try Application(configuration: configuration, logger: logger) {
            var buffer: [UInt8] = []
            registry.emit(into: &buffer)
            // The text exposition format ends every line, the last one included, with a line feed.
            if let last = buffer.last, last != UInt8(ascii: "\n") { buffer.append(UInt8(ascii: "\n")) }
            return buffer
        }
        let signals = SignalWaiter(signals: [SIGTERM, SIGINT])
        let reloads = ReloadMetrics()
        let hasTLS = configuration.http.tls != nil
        if queuesFile != nil || ingestSecretsFile != nil || hasTLS {
            // Changes without a restart: each file is read and checked whole, and replaces what is in force only if it
            // can be used; one that cannot leaves the others to reload.
            signals.onEvery(SIGHUP) {
                if let queuesFile { Self.reloadQueues(queuesFile, into: application, reloads: reloads, logger: logger) }
                if let ingestSecretsFile {
                    Self.reloadIngestSecrets(ingestSecretsFile, into: application, reloads: reloads, logger: logger)
                }
                if hasTLS {
                    // Certificate rotation: new connections get the reloaded files.
                    do {
                        try application.reloadTLS()
                        reloads.record(.tls, ok: true)
                        logger.notice("TLS certificate reloaded")
                        Self.warnIfOutsideValidity(application.tlsCertificateValidity, logger: logger)
                    } catch {
                        reloads.record(.tls, ok: false)
                        logger.error("TLS reload failed; keeping the current certificate", metadata: ["error": "\(error)"])
                    }
                }
            }
        } else {
            // SIGHUP's default action ends the process with no drain; a hang-up or a reload habit must not.
            signals.onEvery(SIGHUP) {
                logger.notice("SIGHUP ignored: nothing to reload without --queues, --ingest-secret-file or TLS")
            }
        }
        let boundPort = try application.start()
        Self.warnIfOutsideValidity(application.tlsCertificateValidity, logger: logger)
        let scheme = configuration.http.tls == nil ? "http" : "https"
        // Exactly one line on stdout, written unbuffered so a supervisor reading the pipe sees it at once.
        // RFC 3986 §3.2.2: an IPv6 literal goes in brackets, so that the line is a URL clients can use.
        let authorityHost = host.contains(":") ? "[\(host)]" : host
        let line = Array("listening on \(scheme)://\(authorityHost):\(boundPort)\n".utf8)
        _ = line.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
        logger.notice("listening", metadata: ["host": "\(host)", "port": "\(boundPort)", "queues": "\(configuration.queues.entries.count)"])
        let received = signals.wait()
        logger.notice("shutting down", metadata: ["signal": "\(received)"])
        signals.onSecondSignal {
            logger.warning("second signal: exiting now")
            Foundation.exit(1)
        }
        application.shutdown()
        logger.notice("stopped")
    }

    /// Warns when the TLS certificate just loaded has expired or is not valid yet: it is served anyway, and every
    /// client that verifies it refuses the handshake, so a wrong file copied before a SIGHUP must not pass as fine.
    private static func warnIfOutsideValidity(_ validity: TLSCertificateValidity?, logger: Logger) {
        guard let validity else { return }
        let now = Int64(Date().timeIntervalSince1970)
        let formatter = ISO8601DateFormatter()
        func instant(_ seconds: Int64) -> String { formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds))) }
        if now > validity.notAfter {
            logger.warning(
                "TLS certificate expired: clients that verify it refuse to connect",
                metadata: ["not_after": "\(instant(validity.notAfter))"])
        } else if now < validity.notBefore {
            logger.warning(
                "TLS certificate not valid yet: clients that verify it refuse to connect",
                metadata: ["not_before": "\(instant(validity.notBefore))"])
        }
    }

    /// The CORS policy of `--cors-allow-origin`, else of `STOVEPIPE_CORS_ALLOW_ORIGIN` (comma-separated); nil when
    /// neither is given. A value that is not an origin or `*`, an empty one included, is refused naming it.
    private func corsPolicy(environment: [String: String]) throws -> CORSPolicy? {
        let (values, source): ([String], String)
        if !corsAllowOrigin.isEmpty {
            (values, source) = (corsAllowOrigin, "--cors-allow-origin")
        } else if let variable = environment["STOVEPIPE_CORS_ALLOW_ORIGIN"] {
            let items = variable.split(separator: ",", omittingEmptySubsequences: false)
            (values, source) = (items.map { $0.trimmingCharacters(in: .whitespaces) }, "STOVEPIPE_CORS_ALLOW_ORIGIN")
        } else {
            return nil
        }
        do {
            return try CORSPolicy(allowing: values)
        } catch {
            throw ValidationError("\(source) \(error)")
        }
    }

    /// Reads the queues file at `path` again and swaps it in whole, or keeps the queues in force and says why.
    private static func reloadQueues(_ path: String, into application: Application, reloads: ReloadMetrics, logger: Logger) {
        let changes: QueueChanges
        do {
            let queues = try QueueConfiguration.load(path: path)
            do {
                changes = try application.reloader.replaceQueues(with: queues)
            } catch {
                throw QueueConfiguration.Invalid(place: path, problem: error.description)
            }
        } catch {
            reloads.record(.queues, ok: false)
            logger.error(
                "queues reload failed; keeping the queues in force", metadata: ["file": "\(path)", "error": "\(error)"])
            return
        }
        // As at start-up: parsing a large file leaves freed pages in glibc's heap that malloc_trim(3) hands back.
        _ = malloc_trim(0)
        reloads.record(.queues, ok: true)
        logger.notice(
            "queues reloaded",
            metadata: [
                "file": "\(path)", "queues": "\(application.reloader.live.load().queues.entries.count)",
                "added": "\(changes.added.map(\.rawValue).joined(separator: ","))",
                "removed": "\(changes.removed.map(\.rawValue).joined(separator: ","))",
            ])
    }

    /// Reads the ingest secret file at `path` again and swaps its secrets in, or keeps those in force and says why;
    /// the log names the file and counts the secrets, never shows one.
    private static func reloadIngestSecrets(_ path: String, into application: Application, reloads: ReloadMetrics, logger: Logger) {
        let secrets: [String]
        do {
            secrets = try readIngestSecrets(path: path)
        } catch {
            reloads.record(.ingestSecret, ok: false)
            logger.error(
                "ingest secret reload failed; keeping the secrets in force", metadata: ["file": "\(path)", "error": "\(error)"])
            return
        }
        let changed = application.reloader.replaceSecrets(with: secrets)
        reloads.record(.ingestSecret, ok: true)
        logger.notice(
            "ingest secrets reloaded", metadata: ["file": "\(path)", "secrets": "\(secrets.count)", "changed": "\(changed)"])
    }

    /// The longest wait between redeliveries `--topic-backoff-cap-ms` may ask for: a day.
    private static let maxTopicBackoffMs = 86_400_000

    /// `seconds` as a whole number of milliseconds; a value that has none (infinite, or beyond Int64) is a usage error.
    private static func milliseconds(_ seconds: Double, _ flag: String) throws -> Duration {
        // Int64(_:) traps on such a value instead of failing.
        guard let milliseconds = Int64(exactly: (seconds * 1000).rounded(.towardZero)) else {
            throw ValidationError("\(flag) must be a finite number of seconds below 9e15")
        }
        return .milliseconds(milliseconds)
    }

    /// The largest ingest secret file read: a secret is some dozens of bytes, so more is a wrong path.
    private static let maxIngestSecretFileBytes = 4096

    /// The ingest secrets from --ingest-secret or --ingest-secret-file (or their environment variables), nil when none
    /// is set, with the file's path when they came from one (it is read again on SIGHUP); both set, no secret (empty or
    /// blank), or a file that cannot be read is a usage error.
    private func resolveIngestSecrets(environment: [String: String]) throws -> (secrets: [String]?, file: String?) {
        let secret = ingestSecret ?? environment["STOVEPIPE_INGEST_SECRET"]
        let file = ingestSecretFile ?? environment["STOVEPIPE_INGEST_SECRET_FILE"]
        switch (secret, file) {
        case (nil, nil):
            return (nil, nil)
        case (let given?, nil):
            // A Kubernetes secret made from a file reaches the environment with the file's line breaks, as the file
            // itself would: it is read by the same rules.
            let secrets = Self.ingestSecrets(in: Array(given.utf8))
            // Like an empty STOVEPIPE_MYSQL_URL, more likely a template's gap than a wish: treated as no secret it
            // would accept unsigned ingests, and a blank key is no secret either.
            guard !secrets.isEmpty else {
                throw ValidationError(
                    "the ingest secret is set but empty or blank: unset --ingest-secret and STOVEPIPE_INGEST_SECRET, or give a secret")
            }
            if let problem = Self.severalSecretsProblem(secrets) { throw ValidationError("the ingest secret: \(problem)") }
            return (secrets, nil)
        case (nil, let path?):
            guard !path.isEmpty else {
                throw ValidationError(
                    "the ingest secret file is set but empty: unset --ingest-secret-file and STOVEPIPE_INGEST_SECRET_FILE, or give a path")
            }
            do {
                return (try Self.readIngestSecrets(path: path), path)
            } catch {
                throw ValidationError(error.description)
            }
        case (.some, .some):
            // Neither is more plainly meant than the other: taking one would verify with a secret the sender may not use.
            throw ValidationError(
                "--ingest-secret (STOVEPIPE_INGEST_SECRET) and --ingest-secret-file (STOVEPIPE_INGEST_SECRET_FILE) are both set: give one")
        }
    }

    /// Why the ingest secret file cannot be used; names the path and the reason, never the content.
    struct IngestSecretFileProblem: Error, CustomStringConvertible {
        let description: String
    }

    /// The secrets of the ingest secret file at `path`, one per line (see `ingestSecrets(in:)`).
    static func readIngestSecrets(path: String) throws(IngestSecretFileProblem) -> [String] {
        func failure(_ reason: String) -> IngestSecretFileProblem {
            IngestSecretFileProblem(description: "cannot read the ingest secret file \(path): \(reason)")
        }
        let limit = Self.maxIngestSecretFileBytes
        let bytes: [UInt8]
        do throws(BoundedFile.Failure) {
            bytes = try BoundedFile.read(path, maxBytes: limit, regularFileOnly: true)
        } catch {
            switch error {
            case .system(let code): throw failure(String(cString: strerror(code)))
            case .notRegularFile: throw failure("not a regular file")
            case .tooLarge(let size): throw failure("is \(size) bytes; at most \(limit) are read")
            case .grewPastLimit: throw failure("has more than \(limit) bytes")
            }
        }
        // The HMAC key is the secret's UTF-8: bytes that are not UTF-8 would be replaced, and the key would differ from the file.
        guard String(validating: bytes, as: UTF8.self) != nil else { throw failure("not UTF-8 text") }
        let secrets = ingestSecrets(in: bytes)
        guard !secrets.isEmpty else {
            throw IngestSecretFileProblem(
                description: "the ingest secret is set but empty or blank in \(path): put a secret in it, or unset --ingest-secret-file and STOVEPIPE_INGEST_SECRET_FILE")
        }
        if let problem = severalSecretsProblem(secrets) { throw failure(problem) }
        return secrets
    }

    /// The shortest secret accepted among several: 128 bits, the least an HMAC key should carry (NIST SP 800-107 §5.3.4).
    static let minimumSecretBytesAmongSeveral = 16

    /// Why `secrets`, read one per line, cannot be used, or nil. One secret may be as short as before; among several, a
    /// short one is refused: a secret wrapped over lines (`openssl rand -base64 48` writes 64 characters a line) would
    /// otherwise become its lines, each a key, the last perhaps of a few characters that anyone could guess.
    static func severalSecretsProblem(_ secrets: [String]) -> String? {
        guard secrets.count > 1 else { return nil }
        for (index, secret) in secrets.enumerated() where secret.utf8.count < minimumSecretBytesAmongSeveral {
            return "secret \(index + 1) of \(secrets.count) (one per line) has \(secret.utf8.count) bytes; with several "
                + "secrets each needs at least \(minimumSecretBytesAmongSeveral): write a wrapped secret on one line"
        }
        return nil
    }

    /// The secrets in `bytes`, one per line: a line ends at "\n" or "\r\n" (which editors and `echo` add, and which are
    /// not part of the secret; the last line may have none), a blank line is skipped, every other byte is the secret's.
    /// A file of one line, with or without its line break, is the one secret it always was.
    static func ingestSecrets(in bytes: [UInt8]) -> [String] {
        var secrets: [String] = []
        for var line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            if line.last == UInt8(ascii: "\r"), line.endIndex < bytes.endIndex { line.removeLast() }
            let secret = String(decoding: line, as: UTF8.self)
            if !secret.allSatisfy(\.isWhitespace), !secrets.contains(secret) { secrets.append(secret) }
        }
        return secrets
    }

    /// The queues file from --queues or STOVEPIPE_QUEUES, nil for the demo queue; set but empty is a usage error.
    private func queuesPath(_ fromEnvironment: String?) throws -> String? {
        guard let path = queues ?? fromEnvironment else { return nil }
        // Like an empty STOVEPIPE_MYSQL_URL, more likely a template's gap than a wish for the demo queue.
        guard !path.isEmpty else {
            throw ValidationError(
                "the queues file is set but empty: unset --queues and STOVEPIPE_QUEUES for the demo queue, or give a path")
        }
        return path
    }

    private func loadQueues(_ path: String?) throws -> QueueConfiguration {
        guard let path else { return try QueueConfiguration.demo() }
        do {
            return try QueueConfiguration.load(path: path)
        } catch {
            throw ValidationError("invalid queues file: \(error)")
        }
    }

    /// The most HTTP worker threads `--workers` may ask for.
    static let maxWorkers = 4096
    /// The most event-loop threads `--event-loops` may ask for.
    static let maxEventLoops = 256

    private func httpConfiguration(environment: [String: String]) throws -> HTTPServerConfiguration {
        var http = HTTPServerConfiguration()
        http.host = host
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535") }
        http.port = port
        func positive(_ value: Int?, _ flag: String, _ apply: (Int) -> Void) throws {
            guard let value else { return }
            guard value > 0 else { throw ValidationError("\(flag) must be positive") }
            apply(value)
        }
        func seconds(_ value: Double?, _ flag: String, _ apply: (Duration) -> Void) throws {
            guard let value else { return }
            guard value > 0 else { throw ValidationError("\(flag) must be a positive number of seconds") }
            apply(try Self.milliseconds(value, flag))
        }
        // Each is a thread started at once; far past these, start-up only exhausts the machine's threads or memory.
        guard workers.map({ (1...Self.maxWorkers).contains($0) }) ?? true else {
            throw ValidationError("--workers must be 1...\(Self.maxWorkers)")
        }
        guard eventLoops.map({ (1...Self.maxEventLoops).contains($0) }) ?? true else {
            throw ValidationError("--event-loops must be 1...\(Self.maxEventLoops)")
        }
        if let workers { http.workerThreads = workers }
        if let eventLoops { http.eventLoopThreads = eventLoops }
        if let wait = workerKeepAliveWaitMs {
            guard wait >= 0, wait <= 1000, wait.isFinite else {
                throw ValidationError("--worker-keep-alive-wait-ms must be 0...1000")
            }
            http.workerKeepAliveWait = .microseconds(Int64(wait * 1000))
        }
        try positive(maxConnections, "--max-connections") { http.maxConnections = $0 }
        try positive(maxBodyBytes, "--max-body-bytes") { http.maxBodyBytes = $0 }
        try positive(maxRequestLineBytes, "--max-request-line-bytes") { http.maxRequestLineBytes = $0 }
        try positive(maxHeaderBytes, "--max-header-bytes") { http.maxHeaderBytes = $0 }
        try positive(maxHeaderFields, "--max-header-fields") { http.maxHeaderFields = $0 }
        try positive(maxRequestsPerConnection, "--max-requests-per-connection") { http.maxRequestsPerConnection = $0 }
        try seconds(queueTimeout, "--queue-timeout") { http.queueTimeout = $0 }
        try seconds(headerTimeout, "--header-timeout") { http.headerTimeout = $0 }
        try seconds(bodyTimeout, "--body-timeout") { http.bodyTimeout = $0 }
        try seconds(idleTimeout, "--idle-timeout") { http.idleTimeout = $0 }
        try seconds(shutdownTimeout, "--shutdown-timeout") { http.shutdownTimeout = $0 }
        // Set but empty is refused, as for the other paths: a template that left them empty would otherwise serve
        // plain HTTP where TLS was meant.
        func path(_ flag: String?, _ flagName: String, _ variable: String) throws -> String? {
            guard let value = flag ?? environment[variable] else { return nil }
            guard !value.allSatisfy(\.isWhitespace) else {
                throw ValidationError("\(flag == nil ? variable : flagName) is set but empty or blank: unset --tls-cert, "
                    + "--tls-key, STOVEPIPE_TLS_CERT and STOVEPIPE_TLS_KEY for plain HTTP, or give a path")
            }
            return value
        }
        let certificate = try path(tlsCert, "--tls-cert", "STOVEPIPE_TLS_CERT")
        let key = try path(tlsKey, "--tls-key", "STOVEPIPE_TLS_KEY")
        switch (certificate, key) {
        case (nil, nil):
            break
        case (let certificate?, let key?):
            http.tls = TLSConfiguration(certificateChainPath: certificate, privateKeyPath: key)
        default:
            throw ValidationError("--tls-cert and --tls-key (STOVEPIPE_TLS_CERT, STOVEPIPE_TLS_KEY) go together: give both or neither")
        }
        return http
    }
}

/// The database named by `--mysql-url`, else by `STOVEPIPE_MYSQL_URL`, nil when neither is given; an empty
/// variable counts as not given. A URL that does not parse is refused naming where it came from.
func mysqlConfiguration(flag: String?, environment: [String: String]) throws -> MySQLConfiguration? {
    let (url, source): (String, String)
    if let flag {
        (url, source) = (flag, "--mysql-url")
    } else if let variable = environment["STOVEPIPE_MYSQL_URL"], !variable.isEmpty {
        (url, source) = (variable, "STOVEPIPE_MYSQL_URL")
    } else {
        return nil
    }
    do { return try MySQLConfiguration(url: url) } catch { throw ValidationError("\(source): \(error)") }
}

/// Warns when `--mysql-url` carries a password: arguments are readable by every user (`ps`, /proc/PID/cmdline).
func warnIfPasswordInArguments(_ mysqlURL: String?, logger: Logger) {
    guard let mysqlURL, (try? MySQLConfiguration(url: mysqlURL))?.password != nil else { return }
    logger.warning(
        """
        --mysql-url with a password on the command line is visible to other users of this machine \
        (ps, /proc/PID/cmdline): give the URL in STOVEPIPE_MYSQL_URL
        """)
}

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply Schema/ to a MySQL database, idempotently.")

    @Option(help: "mysql://USER[:PASS]@HOST[:PORT]/DB (env STOVEPIPE_MYSQL_URL).") var mysqlURL: String?
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        let logger = try logging.makeLogger(label: "stovepipe")
        guard let connection = try mysqlConfiguration(flag: mysqlURL, environment: ProcessInfo.processInfo.environment) else {
            throw ValidationError("migrate needs --mysql-url or STOVEPIPE_MYSQL_URL")
        }
        warnIfPasswordInArguments(mysqlURL, logger: logger)
        try MySQLLibrary.initialize()
        let storage = MySQLStorage(configuration: connection, logger: logger.with(component: "mysql"))
        defer { storage.close() }
        let applied: [UInt32]
        let unknown: [UInt32]
        do {
            applied = try storage.migrator.migrate()
            // The shape only: a migrating user may hold DDL privileges and none to write the application's rows.
            unknown = try storage.migrator.requireUpToDate(checkingWrites: false)
        } catch {
            // Named as serve names it: an operator with several databases sees which URL was used.
            throw StartupError("the database at \(connection.redactedURL): \(error)")
        }
        var summary = applied.isEmpty ? "schema already current" : "applied migrations \(applied.map(String.init).joined(separator: ", "))"
        // An older release's migrate (a rollback) leaves a newer release's migrations in place.
        if !unknown.isEmpty { summary += "; also applied, by a newer release: \(unknown.map(String.init).joined(separator: ", "))" }
        print("\(connection.redactedURL): \(summary)")
    }
}
