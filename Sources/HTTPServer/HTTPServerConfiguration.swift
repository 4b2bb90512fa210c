import Glibc

/// Where the server listens, how many threads it runs, and every limit it enforces on clients.
public struct HTTPServerConfiguration: Sendable {
    /// The IPv4 or IPv6 address to bind, e.g. `127.0.0.1`, `0.0.0.0` or `::`.
    public var host: String
    /// The TCP port; 0 picks an ephemeral port, which `HTTPServer.start()` returns.
    public var port: Int
    /// Threads that run epoll, accept, read and parse; they never run a responder.
    public var eventLoopThreads: Int
    /// Threads that run the responder; it may block (e.g. on MySQL).
    public var workerThreads: Int
    /// After answering on a keep-alive connection, how long a worker with nothing queued waits for that
    /// connection's next request itself before handing the connection back to its event loop; zero
    /// never waits. A queued request ends the wait at once.
    public var workerKeepAliveWait: Duration
    /// Complete requests that may wait for a worker; beyond it a request is answered 503 and its
    /// connection closed.
    public var workerQueueCapacity: Int
    /// A request that waits in the worker queue longer than this is answered 503 with `Retry-After: 1` within about
    /// a second (its event loop's tick), even while every worker is busy, without the responder; its connection stays open.
    public var queueTimeout: Duration
    /// The kernel's queue of connections not yet accepted (capped by `net.core.somaxconn`).
    public var listenBacklog: Int
    /// A longer request line is answered 414.
    public var maxRequestLineBytes: Int
    /// A larger header section (field lines after the request line) is answered 431.
    public var maxHeaderBytes: Int
    /// More header fields than this are answered 431.
    public var maxHeaderFields: Int
    /// A larger body, by Content-Length or while decoding chunks, is answered 413.
    public var maxBodyBytes: Int
    /// The header section must be complete this long after its first byte, else 408 and close.
    public var headerTimeout: Duration
    /// A request's body must be complete this long after its header section (or its 100 Continue), else 408 and close.
    public var bodyTimeout: Duration
    /// A connection with no request in progress is closed after this long; also the longest a body
    /// read or a response write may go without progress.
    public var idleTimeout: Duration
    /// The response to the last request a connection may carry says `Connection: close`.
    public var maxRequestsPerConnection: Int
    /// Connections open at once; a connection accepted beyond it gets a `503` with
    /// `Connection: close` and `Retry-After: 1` (best effort) and is closed, lingering: what it still
    /// sends is read and dropped for up to 2 s, so its request is not answered with a reset.
    public var maxConnections: Int
    /// The value of the `Server` header on every response.
    public var serverName: String
    /// How long `HTTPServer.shutdown()` lets in-flight requests finish before it closes every
    /// connection and stops waiting for threads.
    public var shutdownTimeout: Duration
    /// Serve HTTPS with this certificate and key; nil serves plain HTTP.
    public var tls: TLSConfiguration?

    /// A configuration with the documented defaults, overridable one by one.
    public init(
        host: String = "127.0.0.1",
        port: Int = 8080,
        eventLoopThreads: Int = HTTPServerConfiguration.defaultEventLoopThreads,
        workerThreads: Int = HTTPServerConfiguration.defaultWorkerThreads,
        workerKeepAliveWait: Duration = .milliseconds(1),
        workerQueueCapacity: Int = 4096,
        queueTimeout: Duration = .seconds(10),
        listenBacklog: Int = 4096,
        maxRequestLineBytes: Int = 8 * 1024,
        maxHeaderBytes: Int = 64 * 1024,
        maxHeaderFields: Int = 100,
        maxBodyBytes: Int = 1024 * 1024,
        headerTimeout: Duration = .seconds(10),
        bodyTimeout: Duration = .seconds(60),
        idleTimeout: Duration = .seconds(60),
        maxRequestsPerConnection: Int = 1000,
        maxConnections: Int = 10_000,
        serverName: String = "stovepipe",
        shutdownTimeout: Duration = .seconds(10),
        tls: TLSConfiguration? = nil
    ) {
        self.host = host
        self.port = port
        self.eventLoopThreads = eventLoopThreads
        self.workerThreads = workerThreads
        self.workerKeepAliveWait = workerKeepAliveWait
        self.workerQueueCapacity = workerQueueCapacity
        self.queueTimeout = queueTimeout
        self.listenBacklog = listenBacklog
        self.maxRequestLineBytes = maxRequestLineBytes
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderFields = maxHeaderFields
        self.maxBodyBytes = maxBodyBytes
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.idleTimeout = idleTimeout
        self.maxRequestsPerConnection = maxRequestsPerConnection
        self.maxConnections = maxConnections
        self.serverName = serverName
        self.shutdownTimeout = shutdownTimeout
        self.tls = tls
    }

    /// One event loop per two cores, between 1 and 2.
    public static var defaultEventLoopThreads: Int { min(2, max(1, onlineCores / 2)) }

    /// Twice the cores, at least 4: responders block on I/O, so more workers than cores pay off.
    public static var defaultWorkerThreads: Int { max(4, 2 * onlineCores) }

    private static var onlineCores: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    var parserLimits: HTTPParserLimits {
        HTTPParserLimits(
            maxRequestLineBytes: max(16, maxRequestLineBytes), maxHeaderBytes: max(0, maxHeaderBytes),
            maxHeaderFields: max(0, maxHeaderFields), maxBodyBytes: max(0, maxBodyBytes)
        )
    }
}

extension Duration {
    /// Whole nanoseconds, saturating; negative durations count as zero.
    var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        let cap = UInt64.max / 2
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        let fraction = UInt64(max(0, attoseconds) / 1_000_000_000)
        guard !overflow, whole < cap - fraction else { return cap }
        return whole + fraction
    }
}
