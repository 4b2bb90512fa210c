import Domain
import HTTPServer
import Metrics
import Synchronization

/// Connection-level HTTP events as metrics; per-route request metrics are recorded by the API.
struct HTTPMetrics: HTTPServerObserver {
    private let opened = Metrics.Counter(label: "stovepipe_http_connections_total")
    private let closed = Metrics.Counter(label: "stovepipe_http_connections_closed_total")
    private let refused = Metrics.Counter(label: "stovepipe_http_connections_refused_total")
    private let shed = Metrics.Counter(label: "stovepipe_http_requests_shed_total")
    private let acceptFailures = Metrics.Counter(label: "stovepipe_http_accept_failures_total")
    private let open = OpenConnections(gauge: Metrics.Gauge(label: "stovepipe_http_open_connections"))
    // Every kind from the start, at 0: a series that first appears at 1 is lost to rate() and increase().
    private let protocolErrors = Dictionary(
        uniqueKeysWithValues: HTTPProtocolError.allCases.map { kind in
            // The enum case name is a bounded label value.
            (kind, Metrics.Counter(label: "stovepipe_http_protocol_errors_total", dimensions: [("kind", "\(kind)")]))
        })

    func connectionOpened(peer: String) {
        opened.increment()
        open.add(1)
    }

    func connectionClosed(peer: String) {
        closed.increment()
        open.add(-1)
    }

    func connectionRefused(peer: String) { refused.increment() }

    func requestShed() { shed.increment() }

    func acceptFailed(errno: Int32) { acceptFailures.increment() }

    func protocolError(_ error: HTTPProtocolError) { protocolErrors[error]?.increment() }
}


/// The number of open connections, shared by the event-loop threads, and its gauge.
final class OpenConnections: Sendable {
    private let count = Mutex<Int>(0)
    private let record: @Sendable (Int) -> Void

    /// Records every new count with `record`.
    init(record: @escaping @Sendable (Int) -> Void) { self.record = record }

    /// Records every new count as the gauge's value.
    convenience init(gauge: Metrics.Gauge) { self.init(record: { gauge.record($0) }) }

    /// Adds `delta` and records the new count.
    func add(_ delta: Int) {
        // Recorded under the lock that changes the count: with an atomic add and the record after it, one loop
        // thread could record 1 after another had recorded 2 for a later change, and the gauge showed 1 with
        // two connections open until the next change. Under the lock, records happen in the order of the
        // changes, so the last value recorded is the true count.
        count.withLock { count in
            count += delta
            record(count)
        }
    }

    /// The current count.
    var value: Int { count.withLock { $0 } }
}

/// Times one store operation as `stovepipe_store_operation_duration_seconds{store, operation}`; each
/// wrapper keeps one per operation, so a call looks up no timer by name.
struct StoreTimer: Sendable {
    private let timer: Metrics.Timer

    init(store: String, operation: String) {
        timer = Metrics.Timer(
            label: "stovepipe_store_operation_duration_seconds", dimensions: [("store", store), ("operation", operation)])
    }

    func time<Result>(_ body: () throws(BackendError) -> Result) throws(BackendError) -> Result {
        let started = BootClock.nanoseconds()
        defer { timer.recordNanoseconds(BootClock.nanoseconds() - started) }
        return try body()
    }
}

/// A RequestStore that records how long each operation takes.
struct InstrumentedRequestStore: RequestStore {
    let base: any RequestStore
    private let createTimer = StoreTimer(store: "requests", operation: "create")
    private let getTimer = StoreTimer(store: "requests", operation: "get")
    private let updateTimer = StoreTimer(store: "requests", operation: "update")
    private let listTimer = StoreTimer(store: "requests", operation: "list")

    init(_ base: any RequestStore) { self.base = base }

    func create(_ request: Request) throws(BackendError) { try createTimer.time { () throws(BackendError) in try base.create(request) } }

    func get(_ id: RequestID) throws(BackendError) -> Request { try getTimer.time { () throws(BackendError) in try base.get(id) } }

    func update(_ request: Request, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        try updateTimer.time { () throws(BackendError) in try base.update(request, oldVersion: oldVersion, newVersion: newVersion) }
    }

    func list(queue: QueueName, before: UInt64?, limit: Int) throws(BackendError) -> [Request] {
        try listTimer.time { () throws(BackendError) in try base.list(queue: queue, before: before, limit: limit) }
    }
}

/// A RequestURIStore that records how long each operation takes.
struct InstrumentedRequestURIStore: RequestURIStore {
    let base: any RequestURIStore
    private let createTimer = StoreTimer(store: "request_uris", operation: "create")
    private let getTimer = StoreTimer(store: "request_uris", operation: "get")
    private let replaceTimer = StoreTimer(store: "request_uris", operation: "replace")

    init(_ base: any RequestURIStore) { self.base = base }

    func create(queue: QueueName, uri: SourceURI, id: RequestID) throws(BackendError) {
        try createTimer.time { () throws(BackendError) in try base.create(queue: queue, uri: uri, id: id) }
    }

    func id(queue: QueueName, uri: SourceURI) throws(BackendError) -> RequestID {
        try getTimer.time { () throws(BackendError) in try base.id(queue: queue, uri: uri) }
    }

    func replace(queue: QueueName, uri: SourceURI, expected: RequestID, with replacement: RequestID) throws(BackendError) {
        try replaceTimer.time { () throws(BackendError) in
            try base.replace(queue: queue, uri: uri, expected: expected, with: replacement)
        }
    }
}

/// A QueueStore that records how long each operation takes.
struct InstrumentedQueueStore: QueueStore {
    let base: any QueueStore
    private let createTimer = StoreTimer(store: "queues", operation: "create")
    private let getTimer = StoreTimer(store: "queues", operation: "get")
    private let updateTimer = StoreTimer(store: "queues", operation: "update")

    init(_ base: any QueueStore) { self.base = base }

    func create(_ queue: Queue) throws(BackendError) { try createTimer.time { () throws(BackendError) in try base.create(queue) } }

    func get(_ name: QueueName) throws(BackendError) -> Queue { try getTimer.time { () throws(BackendError) in try base.get(name) } }

    func update(_ queue: Queue, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        try updateTimer.time { () throws(BackendError) in try base.update(queue, oldVersion: oldVersion, newVersion: newVersion) }
    }
}

/// A Counter that records how long each `next` takes.
struct InstrumentedCounter: Domain.Counter {
    let base: any Domain.Counter
    private let nextTimer = StoreTimer(store: "counter", operation: "next")

    init(_ base: any Domain.Counter) { self.base = base }

    func next(queue: QueueName, domain: String) throws(BackendError) -> UInt64 {
        try nextTimer.time { () throws(BackendError) in try base.next(queue: queue, domain: domain) }
    }
}

/// SIGHUP reloads by file and result, as `stovepipe_config_reloads_total`.
struct ReloadMetrics: Sendable {
    /// A file SIGHUP reads again; the raw value is its `file` label.
    enum File: String, CaseIterable {
        case queues
        case ingestSecret = "ingest_secret"
        case tls
    }

    // Every file and result from the start, at 0: a series that first appears at 1 is lost to rate() and increase().
    private let counters: [String: Metrics.Counter] = Dictionary(
        uniqueKeysWithValues: File.allCases.flatMap { file in
            ["ok", "failed"].map { result in
                ("\(file.rawValue) \(result)",
                 Metrics.Counter(label: "stovepipe_config_reloads_total", dimensions: [("file", file.rawValue), ("result", result)]))
            }
        })

    /// Counts one reload of `file`.
    func record(_ file: File, ok: Bool) {
        counters["\(file.rawValue) \(ok ? "ok" : "failed")"]?.increment()
    }
}

/// Housekeeping runs of git mirrors (`git gc --auto` after a fetch) by result, as `stovepipe_git_housekeeping_total`.
struct GitHousekeepingMetrics: Sendable {
    // Both results from the start, at 0, as for the reloads.
    private let ok = Metrics.Counter(label: "stovepipe_git_housekeeping_total", dimensions: [("result", "ok")])
    private let failed = Metrics.Counter(label: "stovepipe_git_housekeeping_total", dimensions: [("result", "failed")])

    /// Counts one run.
    func record(succeeded: Bool) {
        (succeeded ? ok : failed).increment()
    }
}
