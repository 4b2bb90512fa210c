import API
import Backends
import Conditions
import Domain
import Foundation
import HTTPServer
import Logging
import Synchronization

/// Everything `serve` needs to know, from flags, environment and files.
struct ServeConfiguration: Sendable {
    var http = HTTPServerConfiguration()
    var mysqlURL: String?
    var queues: QueueConfiguration
    /// The secrets an ingest may be signed with; nil takes unsigned ingests.
    var ingestSecrets: [String]?
    var retryPolicy = RetryPolicy()
    /// Threads consuming the `process` topic; 0 makes a publish-only replica (MySQL topic only), whose
    /// messages the replicas with consumers process.
    var consumerThreads = 4
    var topicLease: Duration = .seconds(15)
    var topicVisibility: Duration = .seconds(15)
    var topicPollInterval: Duration = .milliseconds(200)
    var gitCacheDirectory = ServeConfiguration.defaultGitCacheDirectory
    var gitTimeout: Duration = .seconds(30)
    var mysqlPoolSize = 16
    var mysqlMaxLifetime: Duration? = .seconds(1800)
    /// The origins whose pages may read the API; nil sends no CORS fields.
    var cors: CORSPolicy?

    static let defaultGitCacheDirectory = NSTemporaryDirectory() + "stovepipe-git-mirrors"
}

/// The composition root: builds stores, topic, SourceControl, controllers, API and HTTP server,
/// starts them in order and stops them in reverse.
final class Application: Sendable {
    let configuration: ServeConfiguration
    let logger: Logger
    private let server: HTTPServer
    private let broker: any MessageBroker
    /// False on a publish-only replica (`--consumer-threads 0`): its broker is never started.
    private let consumes: Bool
    private let draining = DrainFlag()
    private let consumerRunning = DrainFlag()
    private let closers: [@Sendable () -> Void]
    private let storageReadiness: ReadinessMonitor
    /// Replaces the queues and the ingest secrets in force.
    let reloader: ConfigurationReloader

    /// Builds every part from `configuration`; nothing listens or runs until `start`.
    init(configuration: ServeConfiguration, logger: Logger, metrics: @escaping @Sendable () -> [UInt8] = { [] }) throws {
        self.configuration = configuration
        self.logger = logger
        let draining = self.draining

        var storage = try Storage.make(configuration, logger: logger)
        storage.requests = InstrumentedRequestStore(storage.requests)
        storage.uris = InstrumentedRequestURIStore(storage.uris)
        storage.queues = InstrumentedQueueStore(storage.queues)
        storage.counter = InstrumentedCounter(storage.counter)
        broker = storage.broker
        closers = storage.closers

        var sources: [QueueName: SourceConfig] = [:]
        for entry in configuration.queues.entries { sources[entry.name] = entry.source }
        let housekeeping = GitHousekeepingMetrics()
        let registry = SourceControlRegistry(
            sources, gitCacheDirectory: configuration.gitCacheDirectory, gitTimeout: configuration.gitTimeout, logger: logger,
            onGitHousekeeping: { housekeeping.record(succeeded: $0) })
        let live = SwappableReference(
            LiveConfiguration(queues: configuration.queues, registry: registry, secrets: configuration.ingestSecrets))
        reloader = ConfigurationReloader(live: live)

        let ingest = IngestController(
            requests: storage.requests, uris: storage.uris, queues: storage.queues, counter: storage.counter,
            sources: CurrentSources(live: live), publisher: storage.broker, logger: logger.with(component: "ingest"))
        let process = ProcessController(
            requests: storage.requests, queues: storage.queues, sources: CurrentSources(live: live),
            logger: logger.with(component: "process"))
        let consumes = configuration.consumerThreads > 0
        self.consumes = consumes
        if consumes {
            process.subscribe(to: storage.broker)
        }

        // Storage is checked on the monitor's thread: /readyz is answered on the event loop, from its latest results.
        let storageReadiness = ReadinessMonitor(name: storage.readinessName, check: storage.readiness)
        self.storageReadiness = storageReadiness
        let consumerRunning = self.consumerRunning
        let readiness: @Sendable () -> [ReadinessCheck] = {
            let consumer =
                consumes
                ? ReadinessCheck(name: "topic consumer", ok: consumerRunning.isSet, detail: consumerRunning.isSet ? "" : "not running")
                : ReadinessCheck(name: "topic consumer", ok: true, detail: "off: this replica only publishes")
            return storageReadiness.current() + [consumer]
        }
        let refreshGauges = storage.refreshGauges
        let scrape: @Sendable () -> [UInt8] = {
            refreshGauges()
            return metrics()
        }
        let responder = APIResponder(
            dependencies: APIDependencies(
                ingest: ingest, requests: storage.requests, queues: storage.queues,
                settings: { live.load().settings }, broker: storage.broker, topics: [.process],
                readiness: readiness, isDraining: { draining.isSet }, metrics: scrape, cors: configuration.cors),
            logger: logger.with(component: "http"))
        server = HTTPServer(
            configuration: configuration.http, responder: responder, logger: logger.with(component: "http"), observer: HTTPMetrics())
    }

    /// Starts the topic consumer (unless this replica only publishes), then the listener; returns the bound port.
    func start() throws -> Int {
        // Waits up to its timeout for the first results, so /readyz is not 503 for want of a check once listening.
        storageReadiness.start()
        if consumes {
            try broker.start()
            consumerRunning.set()
        } else {
            // An unstarted MySQL broker still publishes, and is not announced as a replica, so the replicas
            // that consume share the partitions among themselves and none is left to this one.
            logger.notice("topic consumer off (--consumer-threads 0): replicas with consumers process what this one publishes")
        }
        let port = try server.start()
        warnIfOpenFilesLimitIsBelowMaxConnections()
        return port
    }

    /// Descriptors the server holds besides client connections: the listener, event loops and workers, MySQL
    /// connections, git's pipes, files. A rough allowance: the warning is about an order of magnitude, not a count.
    static let descriptorsBesidesConnections = 256

    /// Past the open files limit accept(2) fails (EMFILE): new connections get a 503 through a reserved descriptor,
    /// but nothing else can open a file, socket or MySQL connection either, so a limit that comes first is said once,
    /// at start-up.
    private func warnIfOpenFilesLimitIsBelowMaxConnections() {
        var limit = rlimit()
        // Read after start(), which raised the soft limit to the hard one; RLIM_INFINITY is all ones.
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return }
        let maxConnections = configuration.http.maxConnections
        let (needed, overflow) = maxConnections.addingReportingOverflow(Self.descriptorsBesidesConnections)
        guard overflow || UInt64(needed) > UInt64(limit.rlim_cur) else { return }
        logger.warning(
            "the open files limit is below --max-connections: past it new connections are refused 503 and the server cannot open files, sockets or MySQL connections; raise the limit (ulimit -n, LimitNOFILE=) or lower --max-connections",
            metadata: [
                "open_files_limit": "\(limit.rlim_cur)", "max_connections": "\(maxConnections)",
                "descriptors_besides_connections": "\(Self.descriptorsBesidesConnections)",
            ])
    }

    /// Reads the TLS certificate and key files again for new connections; throws and keeps the
    /// current ones if they cannot be used.
    func reloadTLS() throws {
        try server.reloadTLS()
    }

    /// The validity period of the TLS certificate in use; nil without TLS.
    var tlsCertificateValidity: TLSCertificateValidity? { server.tlsCertificateValidity }

    /// Graceful shutdown: health turns 503, HTTP drains, the consumer finishes its message, storage closes;
    /// the HTTP drain and the consumer's wait share `--shutdown-timeout`, after which a message still being
    /// handled is left behind: redelivered with MySQL, lost in memory (in-memory stores have nothing to close
    /// under a handler still running).
    func shutdown() {
        // The HTTP drain gives its threads one second past the timeout; the consumer gets what is left of the same.
        let deadline = ContinuousClock.now + configuration.http.shutdownTimeout + .seconds(1)
        draining.set()
        server.shutdown()
        // Before storage closes: no check runs on a closed pool.
        storageReadiness.stop()
        broker.shutdown(waitingUntil: deadline)
        consumerRunning.clear()
        for close in closers { close() }
    }
}

/// A flag set and read across threads: shutdown begun, consumer running.
final class DrainFlag: Sendable {
    private let value = Atomic<Bool>(false)

    var isSet: Bool { value.load(ordering: .acquiring) }

    func set() { value.store(true, ordering: .releasing) }

    func clear() { value.store(false, ordering: .releasing) }
}

extension Logger {
    /// The same logger with a `component` metadata field, so lines say which part wrote them.
    func with(component: String) -> Logger {
        var copy = self
        copy[metadataKey: "component"] = "\(component)"
        return copy
    }
}

/// The stores and topic of one storage choice, with their readiness checks and closers.
struct Storage: Sendable {
    var requests: any RequestStore
    var uris: any RequestURIStore
    var queues: any QueueStore
    var counter: any Counter
    var broker: any MessageBroker
    /// The readiness checks of storage; may block.
    var readiness: @Sendable () -> [ReadinessCheck]
    /// The check `/readyz` reports failing when they do not finish in time.
    var readinessName: String
    /// Brings gauges that are read rather than pushed (pool sizes) up to date before a scrape.
    var refreshGauges: @Sendable () -> Void = {}
    var closers: [@Sendable () -> Void]

    static func make(_ configuration: ServeConfiguration, logger: Logger) throws -> Storage {
        if let url = configuration.mysqlURL {
            return try mysql(url: url, configuration, logger: logger)
        }
        logger.notice("storage is in memory: state is NOT durable and is lost when the process exits")
        let broker = MemoryBroker(
            policy: configuration.retryPolicy, workerThreads: configuration.consumerThreads, logger: logger.with(component: "topic"))
        return Storage(
            requests: MemoryRequestStore(), uris: MemoryRequestURIStore(), queues: MemoryQueueStore(), counter: MemoryCounter(),
            broker: broker,
            readiness: { [ReadinessCheck(name: "storage", ok: true, detail: "in memory")] }, readinessName: "storage",
            closers: [])
    }
}

/// A start-up failure with a message for the operator.
struct StartupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
