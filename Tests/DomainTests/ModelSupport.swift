import Backends
import Domain
import Foundation
import Synchronization

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator, so that a seed names one sequence on any toolchain.
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in 0..<bound (bound > 0), by multiply-high: no modulo bias worth the name for these bounds.
    mutating func below(_ bound: Int) -> Int {
        Int(next().multipliedFullWidth(by: UInt64(bound)).high)
    }

    /// A value in `range`.
    mutating func inRange(_ range: ClosedRange<Int>) -> Int { range.lowerBound + below(range.count) }

    /// True with probability `numerator / denominator`.
    mutating func chance(_ numerator: Int, in denominator: Int) -> Bool { below(denominator) < numerator }
}

/// One repository's commit DAG, whose commits and head the test sets; answers ancestry by walking parents.
final class DAGSourceControl: SourceControl {
    struct State {
        var parents: [SourceURI: [SourceURI]] = [:]
        /// Commits in creation order; each was the head when it was made.
        var commits: [SourceURI] = []
        var head: SourceURI?
    }

    let prefix: String
    let state = Mutex(State())

    init(prefix: String) { self.prefix = prefix }

    /// Adds a commit with `parents` and makes it the head.
    @discardableResult
    func commit(parents: [SourceURI]) -> SourceURI {
        state.withLock { state in
            let uri = SourceURI("\(prefix)/c\(state.commits.count + 1)")
            state.parents[uri] = parents
            state.commits.append(uri)
            state.head = uri
            return uri
        }
    }

    func moveHead(to uri: SourceURI) { state.withLock { $0.head = uri } }

    var head: SourceURI? { state.withLock { $0.head } }
    var commits: [SourceURI] { state.withLock { $0.commits } }

    func latest() throws(BackendError) -> SourceURI {
        guard let head = state.withLock({ $0.head }) else { throw .notFound }
        return head
    }

    func isAncestor(_ ancestor: SourceURI, of descendant: SourceURI) throws(BackendError) -> Bool {
        let parents = state.withLock { $0.parents }
        return try Self.isAncestor(ancestor, of: descendant, parents: parents)
    }

    /// Reachability over `parents`, the reference answer the model uses too.
    static func isAncestor(
        _ ancestor: SourceURI, of descendant: SourceURI, parents: [SourceURI: [SourceURI]]
    ) throws(BackendError) -> Bool {
        guard parents[ancestor] != nil, parents[descendant] != nil else { throw .notFound }
        var seen: Set<SourceURI> = [descendant]
        var frontier = [descendant]
        while let next = frontier.popLast() {
            if next == ancestor { return true }
            for parent in parents[next] ?? [] where seen.insert(parent).inserted { frontier.append(parent) }
        }
        return false
    }

    func history(cursor: String, limit: Int) throws(BackendError) -> HistoryPage {
        HistoryPage(uris: [], nextCursor: "")
    }
}

/// Queue name -> DAG; unknown names are `notFound`.
final class DAGSources: SourceControlFactory {
    let controls: [QueueName: DAGSourceControl]

    init(_ controls: [QueueName: DAGSourceControl]) { self.controls = controls }

    func sourceControl(for queue: QueueName) throws(BackendError) -> any SourceControl {
        guard let control = controls[queue] else { throw .notFound }
        return control
    }
}

/// Fails the k-th contract call (stores, counter and topic together) after it is armed, once.
///
/// `.before` fails the call without doing it; `.after` does it and then reports failure, as a MySQL commit
/// whose answer is lost does: the caller cannot tell the two apart and must be safe to retry either way.
final class FaultPlan: Sendable {
    enum Mode: String, Sendable { case before, after }

    static let injected = BackendError.unavailable(retryable: true, detail: "injected by the model test")

    private struct State {
        var countdown = 0
        var mode = Mode.before
        var fired: String?
    }

    private let state = Mutex(State())

    /// Arms the plan: the `call`th call from now fails.
    func arm(call: Int, mode: Mode) { state.withLock { $0 = State(countdown: call, mode: mode, fired: nil) } }

    /// Disarms the plan; the name of the call that failed, nil when none did.
    func disarm() -> String? {
        state.withLock { state in
            defer { state = State() }
            return state.fired
        }
    }

    /// Runs `body` as the contract call `name`, failing it when it is the armed one.
    func around<T>(_ name: String, _ body: () throws(BackendError) -> T) throws(BackendError) -> T {
        let mode: Mode? = state.withLock { state in
            guard state.countdown > 0 else { return nil }
            state.countdown -= 1
            guard state.countdown == 0 else { return nil }
            state.fired = "\(name) (\(state.mode.rawValue))"
            return state.mode
        }
        if mode == .before { throw Self.injected }
        let value: T
        do {
            value = try body()
        } catch {
            // The call's own answer (notFound, alreadyExists, ...) is lost as well.
            throw mode == .after ? Self.injected : error
        }
        if mode == .after { throw Self.injected }
        return value
    }
}

final class PlannedRequestStore: RequestStore {
    let base = MemoryRequestStore()
    let plan: FaultPlan

    init(plan: FaultPlan) { self.plan = plan }

    func create(_ request: Request) throws(BackendError) {
        try plan.around("requests.create") { () throws(BackendError) in try base.create(request) }
    }

    func get(_ id: RequestID) throws(BackendError) -> Request {
        try plan.around("requests.get") { () throws(BackendError) in try base.get(id) }
    }

    func update(_ request: Request, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        try plan.around("requests.update") { () throws(BackendError) in
            try base.update(request, oldVersion: oldVersion, newVersion: newVersion)
        }
    }

    func list(queue: QueueName, before: UInt64?, limit: Int) throws(BackendError) -> [Request] {
        try plan.around("requests.list") { () throws(BackendError) in try base.list(queue: queue, before: before, limit: limit) }
    }
}

final class PlannedURIStore: RequestURIStore {
    let base = MemoryRequestURIStore()
    let plan: FaultPlan

    init(plan: FaultPlan) { self.plan = plan }

    func create(queue: QueueName, uri: SourceURI, id: RequestID) throws(BackendError) {
        try plan.around("uris.create") { () throws(BackendError) in try base.create(queue: queue, uri: uri, id: id) }
    }

    func id(queue: QueueName, uri: SourceURI) throws(BackendError) -> RequestID {
        try plan.around("uris.id") { () throws(BackendError) in try base.id(queue: queue, uri: uri) }
    }

    func replace(queue: QueueName, uri: SourceURI, expected: RequestID, with replacement: RequestID) throws(BackendError) {
        try plan.around("uris.replace") { () throws(BackendError) in
            try base.replace(queue: queue, uri: uri, expected: expected, with: replacement)
        }
    }
}

final class PlannedQueueStore: QueueStore {
    let base = MemoryQueueStore()
    let plan: FaultPlan

    init(plan: FaultPlan) { self.plan = plan }

    func create(_ queue: Queue) throws(BackendError) {
        try plan.around("queues.create") { () throws(BackendError) in try base.create(queue) }
    }

    func get(_ name: QueueName) throws(BackendError) -> Queue {
        try plan.around("queues.get") { () throws(BackendError) in try base.get(name) }
    }

    func update(_ queue: Queue, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        try plan.around("queues.update") { () throws(BackendError) in
            try base.update(queue, oldVersion: oldVersion, newVersion: newVersion)
        }
    }
}

/// The memory counter, whose current values the test can read without advancing them.
final class PlannedCounter: Counter {
    let base = MemoryCounter()
    let plan: FaultPlan
    private let current = Mutex<[QueueName: UInt64]>([:])

    init(plan: FaultPlan) { self.plan = plan }

    func next(queue: QueueName, domain: String) throws(BackendError) -> UInt64 {
        try plan.around("counter.next") { () throws(BackendError) in
            let value = try base.next(queue: queue, domain: domain)
            // Racing calls may record out of order; the counter's value is the largest handed out.
            current.withLock { $0[queue] = max($0[queue] ?? 0, value) }
            return value
        }
    }

    /// The last value handed out for `queue`, 0 before the first.
    func value(_ queue: QueueName) -> UInt64 { current.withLock { $0[queue] ?? 0 } }
}

/// The `process` topic as the model sees it: messages waiting for delivery, and every message ever published.
///
/// Publishing an id that is waiting is a no-op, as the contract says; an id delivered and acked is put back,
/// which the contract allows only after its retention and is the harsher case for the consumer.
final class ModelTopic: TopicPublisher {
    private struct State {
        var pending: [String: Message] = [:]
        var published: [String: Message] = [:]
    }

    let plan: FaultPlan
    private let state = Mutex(State())

    init(plan: FaultPlan) { self.plan = plan }

    func publish(_ message: Message) throws(BackendError) {
        try plan.around("topic.publish") { () throws(BackendError) in
            state.withLock { state in
                if state.pending[message.id] == nil { state.pending[message.id] = message }
                state.published[message.id] = message
            }
        }
    }

    /// Waiting ids, sorted so that a pick is deterministic.
    var pendingIDs: [String] { state.withLock { $0.pending.keys.sorted() } }
    /// Every id ever published, sorted.
    var publishedIDs: [String] { state.withLock { $0.published.keys.sorted() } }

    func message(_ id: String) -> Message? { state.withLock { $0.published[id] } }

    /// Ends a delivery of `id`: an ack or a reject removes it, a retry leaves it waiting.
    func settle(_ id: String, _ outcome: DeliveryOutcome) {
        switch outcome {
        case .ack, .reject: state.withLock { _ = $0.pending.removeValue(forKey: id) }
        case .retry, .postpone: break
        }
    }
}
