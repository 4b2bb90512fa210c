import Backends
import Domain
import MetricsTestKit
import Foundation
import Logging
import Synchronization
import Testing

/// A SourceControl whose head, ancestry answers and failures the test sets.
final class ScriptedSourceControl: SourceControl {
    struct State {
        var head: SourceURI?
        var latestError: BackendError?
        var ancestry: Result<Bool, BackendError> = .success(true)
        var ancestryCalls: [(SourceURI, SourceURI)] = []
        /// Heads the next reads return, first to last, before `head` again.
        var upcoming: [SourceURI] = []
        var reads = 0
    }

    let state = Mutex(State())

    init(head: String?) { state.withLock { $0.head = head.map(SourceURI.init) } }

    func latest() throws(BackendError) -> SourceURI {
        let (head, error) = state.withLock { state in
            state.reads += 1
            let head = state.upcoming.isEmpty ? state.head : state.upcoming.removeFirst()
            return (head, state.latestError)
        }
        if let error { throw error }
        guard let head else { throw .notFound }
        return head
    }

    func isAncestor(_ ancestor: SourceURI, of descendant: SourceURI) throws(BackendError) -> Bool {
        try state.withLock { state throws(BackendError) in
            state.ancestryCalls.append((ancestor, descendant))
            return try state.ancestry.get()
        }
    }

    func history(cursor: String, limit: Int) throws(BackendError) -> HistoryPage {
        HistoryPage(uris: [], nextCursor: "")
    }
}

/// Queue name -> scripted SourceControl; unknown names are `notFound`.
final class ScriptedSources: SourceControlFactory {
    let controls: [String: ScriptedSourceControl]

    init(_ controls: [String: ScriptedSourceControl]) { self.controls = controls }

    func sourceControl(for queue: QueueName) throws(BackendError) -> any SourceControl {
        guard let control = controls[queue.rawValue] else { throw .notFound }
        return control
    }
}

/// Records what was published; fails while `failure` is set.
final class RecordingPublisher: TopicPublisher {
    let published = Mutex<[Message]>([])
    let failure = Mutex<BackendError?>(nil)

    func publish(_ message: Message) throws(BackendError) {
        if let error = failure.withLock({ $0 }) { throw error }
        published.withLock { $0.append(message) }
    }

    var messages: [Message] { published.withLock { $0 } }
}

/// Named faults the wrappers below inject, each for a number of calls.
final class Faults: Sendable {
    private let pending = Mutex<[String: (BackendError, Int)]>([:])

    func inject(_ operation: String, _ error: BackendError, times: Int = 1) {
        pending.withLock { $0[operation] = (error, times) }
    }

    func check(_ operation: String) throws(BackendError) {
        let error: BackendError? = pending.withLock { pending in
            guard let (error, times) = pending[operation], times > 0 else { return nil }
            pending[operation] = times == 1 ? nil : (error, times - 1)
            return error
        }
        if let error { throw error }
    }
}

final class FaultyRequestStore: RequestStore {
    let base = MemoryRequestStore()
    let faults = Faults()

    func create(_ request: Request) throws(BackendError) {
        try faults.check("create")
        try base.create(request)
    }

    func get(_ id: RequestID) throws(BackendError) -> Request {
        try faults.check("get")
        return try base.get(id)
    }

    func update(_ request: Request, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        try faults.check("update")
        try base.update(request, oldVersion: oldVersion, newVersion: newVersion)
    }

    func list(queue: QueueName, before: UInt64?, limit: Int) throws(BackendError) -> [Request] {
        try faults.check("list")
        return try base.list(queue: queue, before: before, limit: limit)
    }
}

final class FaultyURIStore: RequestURIStore {
    let base = MemoryRequestURIStore()
    let faults = Faults()
    /// Runs before a claim is stored: lets a test slip a rival's claim in between lookup and create.
    let beforeCreate = Mutex<(@Sendable () -> Void)?>(nil)
    /// Runs before an entry is re-pointed: lets a test slip a rival's re-point in between lookup and replace.
    let beforeReplace = Mutex<(@Sendable () -> Void)?>(nil)

    func create(queue: QueueName, uri: SourceURI, id: RequestID) throws(BackendError) {
        try faults.check("create")
        if let hook = beforeCreate.withLock({ hook in defer { hook = nil }; return hook }) { hook() }
        try base.create(queue: queue, uri: uri, id: id)
    }

    func id(queue: QueueName, uri: SourceURI) throws(BackendError) -> RequestID {
        try faults.check("id")
        return try base.id(queue: queue, uri: uri)
    }

    func replace(queue: QueueName, uri: SourceURI, expected: RequestID, with replacement: RequestID) throws(BackendError) {
        try faults.check("replace")
        if let hook = beforeReplace.withLock({ hook in defer { hook = nil }; return hook }) { hook() }
        try base.replace(queue: queue, uri: uri, expected: expected, with: replacement)
    }
}

final class FaultyQueueStore: QueueStore {
    let base = MemoryQueueStore()
    let faults = Faults()

    func create(_ queue: Queue) throws(BackendError) {
        try faults.check("create")
        try base.create(queue)
    }

    func get(_ name: QueueName) throws(BackendError) -> Queue {
        try faults.check("get")
        return try base.get(name)
    }

    func update(_ queue: Queue, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        try faults.check("update")
        try base.update(queue, oldVersion: oldVersion, newVersion: newVersion)
    }
}

final class FaultyCounter: Counter {
    let base = MemoryCounter()
    let faults = Faults()

    func next(queue: QueueName, domain: String) throws(BackendError) -> UInt64 {
        try faults.check("next")
        return try base.next(queue: queue, domain: domain)
    }
}

/// One queue `q` (and `other`) over faulty in-memory stores, with both controllers wired.
struct World {
    let requests = FaultyRequestStore()
    let uris = FaultyURIStore()
    let queues = FaultyQueueStore()
    let counter = FaultyCounter()
    let source = ScriptedSourceControl(head: "git://q/c1")
    let publisher = RecordingPublisher()
    let metrics = TestMetrics()
    let ingest: IngestController
    let process: ProcessController

    init() {
        let sources = ScriptedSources(["q": source, "other": ScriptedSourceControl(head: "git://q/c1")])
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        ingest = IngestController(
            requests: requests, uris: uris, queues: queues, counter: counter, sources: sources, publisher: publisher,
            logger: logger)
        process = ProcessController(
            requests: requests, queues: queues, sources: sources, logger: logger, metricsFactory: metrics)
    }

    func setHead(_ uri: String) { source.state.withLock { $0.head = SourceURI(uri) } }

    /// Makes the next reads of the head return `uris` in order, then the set head again.
    func scriptReads(_ uris: [String]) { source.state.withLock { $0.upcoming = uris.map(SourceURI.init) } }

    /// How many times the head of `q` was read.
    var headReads: Int { source.state.withLock { $0.reads } }

    /// Delivers the newest published message for `id` to the process controller.
    func deliver(_ id: RequestID, attempt: Int = 1) throws -> DeliveryOutcome {
        let message = try #require(publisher.messages.last { $0.id == id.description })
        return process.handle(Delivery(message: message, attempt: attempt))
    }

    func setLastGreen(_ uri: String) throws {
        let name = try QueueName("q")
        var queue = try queues.base.get(name)
        let version = queue.version
        queue.lastGreenURI = SourceURI(uri)
        try queues.base.update(queue, oldVersion: version, newVersion: version + 1)
    }
}
