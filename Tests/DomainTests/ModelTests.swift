import Backends
import Domain
import Foundation
import Logging
import Synchronization
import Testing

// A model-based test of ingest and process: random, seeded sequences of branch moves, ingests, deliveries in any
// order, redeliveries, injected store failures with retries, green commits and concurrent ingests, driven through
// the real controllers over the in-memory stores. After every step the stores are read back into an abstract
// state and compared with a reference model (the README's and the controllers' documented rules, written out
// plainly), and these invariants are checked:
//
// - One request per (queue, URI): the index maps each head to one request, the newest of that URI; ingesting an
//   unchanged head again returns that request without minting; concurrent ingests of one head all return one
//   request, and exactly one of them reports it minted when the model says a request is minted.
// - Numbers: a fault-free ingest that mints takes the counter's next value, so numbers follow mint order; every
//   request's number came from the counter, and a number without a request was drawn by an ingest that failed
//   (a failure may burn the number it drew) or lost a race (concurrent ingests); no number is used twice.
// - States move only accepted -> processing or accepted -> superseded (and processing -> succeeded, which only
//   the test writes when it marks a commit green); once a request leaves accepted nothing the domain does
//   changes it again, so redeliveries and retries never change a recorded outcome.
// - A request is superseded only below its queue's latest request (so a newer request exists).
// - Strategy: a request moving to processing is incremental with base = the queue's last green exactly when
//   that commit is an ancestor of the request's commit at decision time, and full with no base otherwise.
// - A failed step (an injected `unavailable`, before or after the call takes effect) leaves every piece of
//   state either as it was or as the same step without the failure would have left it.
// - Concurrency: ingests of one head at once, alone or alongside deliveries (the same message twice at once
//   too), converge on one request and keep every invariant above but the exact model.
// - Quiescence: once every queue's head is ingested again without faults and every message is delivered, no
//   request of a current head is accepted, and any request still accepted was written by an ingest that failed
//   (README, "Known limitations": such a request waits for a newer one to start processing).

/// One request as the model sees it.
struct RowState: Equatable, CustomStringConvertible {
    var uri: SourceURI
    var state: RequestState
    var strategy: BuildStrategy
    var base: SourceURI?
    var version: UInt64

    static func fresh(_ uri: SourceURI) -> RowState {
        RowState(uri: uri, state: .accepted, strategy: .undecided, base: nil, version: 1)
    }

    var description: String {
        "\(uri.rawValue) \(state.rawValue)\(strategy == .undecided ? "" : " \(strategy.rawValue)")"
            + "\(base.map { " base=\($0.rawValue)" } ?? "") v\(version)"
    }
}

/// One queue as the model sees it.
struct QueueState: Equatable {
    var rows: [UInt64: RowState] = [:]
    var index: [SourceURI: UInt64] = [:]
    var latest: UInt64?
    var lastGreen: SourceURI?
    var counter: UInt64 = 0
}

/// Everything the invariants look at.
struct WorldState: Equatable {
    var queues: [QueueState]
    var pending: Set<String>
}

/// A violated invariant, with the step it was seen after.
struct Violation: Error, CustomStringConvertible {
    var invariant: String
    var detail: String
    var step = -1

    var description: String { "step \(step): \(invariant): \(detail)" }
}

/// One step of a sequence; picks are resolved against the lists at run time (modulo their length), so a
/// shrunk sequence stays runnable.
enum Op: CustomStringConvertible {
    /// A new commit on top of the head (with a second parent when `merge` is given).
    case advance(queue: Int, merge: Int?)
    /// A new head that does not descend from the current one: a root, or forked from an older commit.
    case rewrite(queue: Int, fork: Int?)
    /// The head moves back to a commit that was the head before.
    case moveBack(queue: Int, pick: Int)
    case ingest(queue: Int, times: Int)
    /// Delivers one waiting message.
    case deliver(pick: Int)
    /// Delivers any message ever published again (at-least-once).
    case redeliver(pick: Int)
    /// A processing request succeeds and its commit becomes the queue's last green.
    case green(queue: Int, pick: Int)
    /// An ingest whose `call`th contract call fails; then, with `retry`, the same ingest again.
    case faultyIngest(queue: Int, call: Int, mode: FaultPlan.Mode, retry: Bool)
    /// A delivery whose `call`th contract call fails; then, with `retry`, the same message again.
    case faultyDeliver(pick: Int, call: Int, mode: FaultPlan.Mode, retry: Bool)
    /// `threads` ingests of the queue's head at once.
    case concurrentIngest(queue: Int, threads: Int)
    /// `ingests` ingests of the queue's head and `deliveries` deliveries of waiting messages (the same one
    /// twice when they are few: at-least-once allows a redelivery while the first is still running), at once.
    case concurrentMix(queue: Int, ingests: Int, deliveries: Int, pick: Int)

    var description: String {
        switch self {
        case .advance(let q, let merge): "advance(q\(q)\(merge.map { ", merge: \($0)" } ?? ""))"
        case .rewrite(let q, let fork): "rewrite(q\(q)\(fork.map { ", fork: \($0)" } ?? ", root"))"
        case .moveBack(let q, let pick): "moveBack(q\(q), \(pick))"
        case .ingest(let q, let times): "ingest(q\(q)) x\(times)"
        case .deliver(let pick): "deliver(\(pick))"
        case .redeliver(let pick): "redeliver(\(pick))"
        case .green(let q, let pick): "green(q\(q), \(pick))"
        case .faultyIngest(let q, let call, let mode, let retry):
            "faultyIngest(q\(q), call: \(call), \(mode.rawValue)\(retry ? ", retry" : ""))"
        case .faultyDeliver(let pick, let call, let mode, let retry):
            "faultyDeliver(\(pick), call: \(call), \(mode.rawValue)\(retry ? ", retry" : ""))"
        case .concurrentIngest(let q, let threads): "concurrentIngest(q\(q), threads: \(threads))"
        case .concurrentMix(let q, let ingests, let deliveries, let pick):
            "concurrentMix(q\(q), ingests: \(ingests), deliveries: \(deliveries), \(pick))"
        }
    }

    /// A sequence of 4 to 36 steps over two queues, fixed by `seed`.
    static func sequence(seed: UInt64) -> [Op] {
        var rng = SplitMix64(seed: seed)
        return (0..<rng.inRange(4...36)).map { _ in
            let q = rng.below(2)
            let pick = rng.below(1000)
            let mode: FaultPlan.Mode = rng.chance(1, in: 2) ? .before : .after
            switch rng.below(100) {
            case 0..<14: return .advance(queue: q, merge: rng.chance(1, in: 5) ? pick : nil)
            case 14..<19: return .rewrite(queue: q, fork: rng.chance(1, in: 2) ? pick : nil)
            case 19..<27: return .moveBack(queue: q, pick: pick)
            case 27..<45: return .ingest(queue: q, times: rng.inRange(1...3))
            case 45..<60: return .deliver(pick: pick)
            case 60..<65: return .redeliver(pick: pick)
            case 65..<71: return .green(queue: q, pick: pick)
            case 71..<81: return .faultyIngest(queue: q, call: rng.inRange(1...10), mode: mode, retry: rng.chance(1, in: 2))
            case 81..<89: return .faultyDeliver(pick: pick, call: rng.inRange(1...6), mode: mode, retry: rng.chance(1, in: 2))
            case 89..<95: return .concurrentIngest(queue: q, threads: rng.inRange(2...6))
            default:
                return .concurrentMix(queue: q, ingests: rng.inRange(1...3), deliveries: rng.inRange(1...3), pick: pick)
            }
        }
    }
}

/// The reference model: what each step should do to the abstract state, from the documented rules.
enum Model {
    /// The process controller's window and budget (README: "looking at least 20 below it ... up to 2,000").
    static let sweepWindow = 20
    static let sweepBudget = 2_000

    /// A fault-free ingest of `head`: the head's request when it has one that is not older than the queue's
    /// latest (healing a claim whose row is missing), else a fresh number (a new head, or a reset to an old one);
    /// published while accepted; the latest moves up to it. `mintNumber` stands for a racing mint's number.
    static func ingest(
        _ state: WorldState, queue q: Int, name: QueueName, head: SourceURI, mintNumber: UInt64? = nil
    ) -> (state: WorldState, number: UInt64, minted: Bool, mints: Bool) {
        var state = state
        var queue = state.queues[q]
        let number: UInt64
        let minted: Bool
        var mints = false
        if let existing = queue.index[head], !(queue.latest.map { existing < $0 } ?? false) {
            number = existing
            minted = queue.rows[existing] == nil
            if minted { queue.rows[existing] = .fresh(head) }
        } else {
            queue.counter += 1
            number = mintNumber ?? queue.counter
            mints = true
            minted = true
            queue.index[head] = number
            queue.rows[number] = .fresh(head)
        }
        if queue.rows[number]?.state == .accepted {
            state.pending.insert(RequestID(queue: name, number: number).description)
        }
        queue.latest = max(queue.latest ?? 0, number)
        state.queues[q] = queue
        return (state, number, minted, mints)
    }

    /// What a delivery of request `number` decides: untouched unless accepted; superseded below the latest;
    /// else processing with `strategy`, and the older accepted requests below min(latest, number) swept.
    static func deliver(
        _ state: WorldState, queue q: Int, name: QueueName, number: UInt64, parents: [SourceURI: [SourceURI]]
    ) -> (state: WorldState, outcome: DeliveryOutcome) {
        var state = state
        var queue = state.queues[q]
        state.pending.remove(RequestID(queue: name, number: number).description)
        guard var row = queue.rows[number] else { return (state, .reject(reason: "request not found")) }
        guard row.state == .accepted else { return (state, .ack) }
        row.version += 1
        if let latest = queue.latest, number < latest {
            row.state = .superseded
            queue.rows[number] = row
        } else {
            (row.strategy, row.base) = strategy(green: queue.lastGreen, head: row.uri, parents: parents)
            row.state = .processing
            queue.rows[number] = row
            if let latest = queue.latest { sweep(&queue, below: min(latest, number)) }
        }
        state.queues[q] = queue
        return (state, .ack)
    }

    /// Incremental since the last green exactly when it is an ancestor of the head; full otherwise.
    static func strategy(
        green: SourceURI?, head: SourceURI, parents: [SourceURI: [SourceURI]]
    ) -> (BuildStrategy, SourceURI?) {
        guard let green, (try? DAGSourceControl.isAncestor(green, of: head, parents: parents)) == true else {
            return (.full, nil)
        }
        return (.incrementalSinceGreen, green)
    }

    private static func sweep(_ queue: inout QueueState, below bound: UInt64) {
        var looked = 0
        for number in queue.rows.keys.filter({ $0 < bound }).sorted(by: >) {
            guard looked < sweepBudget, var row = queue.rows[number] else { return }
            looked += 1
            switch row.state {
            case .accepted:
                row.state = .superseded
                row.version += 1
                queue.rows[number] = row
            case .superseded:
                continue
            case .processing, .succeeded, .failed, .cancelled:
                if looked > sweepWindow { return }
            }
        }
    }
}

/// One run of a sequence against fresh controllers and stores.
final class ModelRun {
    static let queueNames = ["q0", "repo/q1"]

    let plan = FaultPlan()
    let requests: PlannedRequestStore
    let uris: PlannedURIStore
    let queues: PlannedQueueStore
    let counter: PlannedCounter
    let topic: ModelTopic
    let names: [QueueName]
    let dags: [DAGSourceControl]
    let ingest: IngestController
    let process: ProcessController

    /// Numbers drawn by failed or racing ingests, which may stay without a request.
    private var spendable: [Set<UInt64>]
    /// Requests written by an ingest that then failed, which may stay accepted (a documented limitation).
    private var writtenByFailedIngest: [Set<UInt64>]
    private var attempts: [String: Int] = [:]
    /// What happened, one line per step, for the failure report.
    private(set) var trace: [String] = []
    private var step = 0

    init() throws {
        requests = PlannedRequestStore(plan: plan)
        uris = PlannedURIStore(plan: plan)
        queues = PlannedQueueStore(plan: plan)
        counter = PlannedCounter(plan: plan)
        topic = ModelTopic(plan: plan)
        names = try Self.queueNames.map { try QueueName($0) }
        dags = Self.queueNames.map { DAGSourceControl(prefix: "git://\($0)") }
        for dag in dags { dag.commit(parents: []) }
        let sources = DAGSources(Dictionary(uniqueKeysWithValues: zip(names, dags)))
        let logger = Logger(label: "model", factory: { _ in SwiftLogNoOpLogHandler() })
        ingest = IngestController(
            requests: requests, uris: uris, queues: queues, counter: counter, sources: sources, publisher: topic,
            logger: logger)
        process = ProcessController(
            requests: requests, queues: queues, sources: sources, logger: logger)
        spendable = names.map { _ in [] }
        writtenByFailedIngest = names.map { _ in [] }
    }

    /// Runs `ops`, then brings every queue to rest; the first violation, nil when none.
    static func run(_ ops: [Op]) -> (violation: Violation?, trace: [String]) {
        let run: ModelRun
        do {
            run = try ModelRun()
        } catch {
            return (Violation(invariant: "harness", detail: "\(error)"), [])
        }
        do {
            for (index, op) in ops.enumerated() {
                run.step = index
                run.trace.append("\(index): \(op)")
                try run.apply(op)
            }
            run.step = ops.count
            run.trace.append("\(ops.count): quiesce")
            try run.quiesce()
            return (nil, run.trace)
        } catch var violation as Violation {
            violation.step = run.step
            return (violation, run.trace)
        } catch {
            return (Violation(invariant: "harness", detail: "\(error)", step: run.step), run.trace)
        }
    }

    private func note(_ line: String) { trace.append("    \(line)") }

    private func apply(_ op: Op) throws {
        switch op {
        case .advance(let q, let merge):
            let dag = dags[q]
            var parents = dag.head.map { [$0] } ?? []
            if let merge {
                let commits = dag.commits
                let other = commits[merge % commits.count]
                if !parents.contains(other) { parents.append(other) }
            }
            note("head \(dag.commit(parents: parents)) on \(parents.map(\.rawValue))")
        case .rewrite(let q, let fork):
            let dag = dags[q]
            var parents: [SourceURI] = []
            if let fork, let head = dag.head {
                let commits = dag.commits
                let base = commits[fork % commits.count]
                // Forking from the head or a descendant of it would not rewrite anything: a root instead.
                if try !dag.isAncestor(head, of: base) { parents = [base] }
            }
            note("head \(dag.commit(parents: parents)) on \(parents.map(\.rawValue))")
        case .moveBack(let q, let pick):
            let commits = dags[q].commits
            dags[q].moveHead(to: commits[pick % commits.count])
            note("head \(commits[pick % commits.count])")
        case .ingest(let q, let times):
            for _ in 0..<times { try ingestStep(q) }
        case .deliver(let pick):
            let ids = topic.pendingIDs
            if !ids.isEmpty { try deliverStep(ids[pick % ids.count]) }
        case .redeliver(let pick):
            let ids = topic.publishedIDs
            if !ids.isEmpty { try deliverStep(ids[pick % ids.count]) }
        case .green(let q, let pick):
            try green(q, pick: pick)
        case .faultyIngest(let q, let call, let mode, let retry):
            try ingestStep(q, fault: (call, mode))
            if retry { try ingestStep(q) }
        case .faultyDeliver(let pick, let call, let mode, let retry):
            let ids = topic.pendingIDs
            guard !ids.isEmpty else { return }
            let id = ids[pick % ids.count]
            try deliverStep(id, fault: (call, mode))
            if retry { try deliverStep(id) }
        case .concurrentIngest(let q, let threads):
            try concurrentIngest(q, threads: threads)
        case .concurrentMix(let q, let ingests, let deliveries, let pick):
            try concurrentMix(q, ingests: ingests, deliveries: deliveries, pick: pick)
        }
    }

    // MARK: Steps

    private func ingestStep(_ q: Int, fault: (call: Int, mode: FaultPlan.Mode)? = nil) throws {
        let before = try current()
        let head = try #require(dags[q].head)
        let expected = Model.ingest(before, queue: q, name: names[q], head: head)
        if let fault { plan.arm(call: fault.call, mode: fault.mode) }
        let result = Result { () throws(IngestError) in try ingest.ingest(queue: names[q].rawValue) }
        let fired = plan.disarm()
        let after = try snapshot()
        note("ingest \(head): \(Self.describe(result))\(fired.map { ", failed \($0)" } ?? "")")
        try checkTransitions(before, after)

        if fired != nil {
            guard case .failure(.unavailable) = result else {
                throw Violation(invariant: "a failed store call surfaces", detail: "ingest answered \(Self.describe(result))")
            }
            try checkBetween(before, after, expected.state, what: "a failed ingest")
            for number in (before.queues[q].counter + 1)...max(after.queues[q].counter, before.queues[q].counter + 1)
            where number <= after.queues[q].counter {
                spendable[q].insert(number)
            }
            for number in after.queues[q].rows.keys where before.queues[q].rows[number] == nil {
                writtenByFailedIngest[q].insert(number)
            }
            try checkState(after)
            return
        }
        let outcome: IngestResult
        switch result {
        case .success(let value): outcome = value
        case .failure(let error): throw Violation(invariant: "ingest without faults succeeds", detail: "\(error)")
        }
        try checkState(after)
        guard outcome.request.id == RequestID(queue: names[q], number: expected.number), outcome.minted == expected.minted,
            outcome.request.uri == head
        else {
            throw Violation(
                invariant: "ingest returns the model's request",
                detail: "got \(outcome.request.id) minted=\(outcome.minted), model request/\(names[q])/\(expected.number) minted=\(expected.minted)")
        }
        try expectEqual(after, expected.state, what: "ingest of \(head)")
    }

    private func deliverStep(_ id: String, fault: (call: Int, mode: FaultPlan.Mode)? = nil) throws {
        let before = try current()
        let message = try #require(topic.message(id))
        let requestID = try RequestID(parsing: id)
        let q = try #require(names.firstIndex(of: requestID.queue))
        let parents = dags[q].state.withLock { $0.parents }
        let expected = Model.deliver(before, queue: q, name: names[q], number: requestID.number, parents: parents)
        attempts[id, default: 0] += 1
        if let fault { plan.arm(call: fault.call, mode: fault.mode) }
        let outcome = process.handle(Delivery(message: message, attempt: attempts[id, default: 1]))
        let fired = plan.disarm()
        topic.settle(id, outcome)
        let after = try snapshot()
        note("deliver \(id): \(outcome)\(fired.map { ", failed \($0)" } ?? "")")
        try checkTransitions(before, after)
        try checkState(after)

        if fired != nil {
            var allowed = expected.state
            allowed.pending = before.pending
            if case .ack = outcome { allowed.pending.remove(id) }
            switch outcome {
            case .ack:
                // Acked despite the failure only when the request's own decision was written (the sweep is best effort).
                guard after.queues[q].rows[requestID.number] == expected.state.queues[q].rows[requestID.number] else {
                    throw Violation(invariant: "an ack records the decision", detail: "\(id) acked but not decided")
                }
            case .retry: break
            default:
                throw Violation(invariant: "a failed store call is retried", detail: "\(id): \(outcome)")
            }
            try checkBetween(before, after, allowed, what: "a failed delivery")
            return
        }
        guard outcome == expected.outcome else {
            throw Violation(invariant: "delivery outcome", detail: "\(id): \(outcome), model \(expected.outcome)")
        }
        try expectEqual(after, expected.state, what: "delivery of \(id)")
    }

    /// The test's stand-in for a build that passed: a processing request succeeds, its commit becomes green.
    private func green(_ q: Int, pick: Int) throws {
        let before = try current()
        let processing = before.queues[q].rows.filter { $0.value.state == .processing }.keys.sorted()
        guard !processing.isEmpty else { return }
        let id = RequestID(queue: names[q], number: processing[pick % processing.count])
        var request = try requests.base.get(id)
        let version = request.version
        request.state = .succeeded
        try requests.base.update(request, oldVersion: version, newVersion: version + 1)
        if var queue = try? queues.base.get(names[q]) {
            let queueVersion = queue.version
            queue.lastGreenURI = request.uri
            queue.lastGreenRequestID = id
            try queues.base.update(queue, oldVersion: queueVersion, newVersion: queueVersion + 1)
        } else {
            try queues.base.create(Queue(name: names[q], lastGreenURI: request.uri, lastGreenRequestID: id))
        }
        note("green \(id) \(request.uri)")
        let after = try snapshot()
        try checkTransitions(before, after, green: (q, id.number))
        try checkState(after)
    }

    /// The answers of concurrent ingests, or a violation naming the first that failed.
    private static func succeeded(_ results: borrowing Mutex<[Result<IngestResult, IngestError>]>) throws -> [IngestResult] {
        try results.withLock { results in
            try results.map { result in
                switch result {
                case .success(let value): return value
                case .failure(let error): throw Violation(invariant: "concurrent ingests succeed", detail: "\(error)")
                }
            }
        }
    }
    private func concurrentIngest(_ q: Int, threads count: Int) throws {
        let before = try current()
        let head = try #require(dags[q].head)
        let predicted = Model.ingest(before, queue: q, name: names[q], head: head)
        let results = Mutex<[Result<IngestResult, IngestError>]>([])
        let group = DispatchGroup()
        let controller = ingest
        let name = names[q].rawValue
        for _ in 0..<count {
            group.enter()
            Thread {
                let result = Result { () throws(IngestError) in try controller.ingest(queue: name) }
                results.withLock { $0.append(result) }
                group.leave()
            }.start()
        }
        group.wait()
        let outcomes = try Self.succeeded(results)
        let after = try snapshot()
        let ids = Set(outcomes.map(\.request.id))
        note("\(count) ingests of \(head) at once: \(ids.map(\.description)), minted \(outcomes.filter(\.minted).count)")
        try checkTransitions(before, after)
        guard ids.count == 1, let id = ids.first else {
            throw Violation(invariant: "concurrent ingests of one head converge", detail: "\(ids)")
        }
        guard outcomes.filter(\.minted).count == (predicted.minted ? 1 : 0) else {
            throw Violation(
                invariant: "exactly one concurrent ingest mints",
                detail: "\(outcomes.filter(\.minted).count) reported minted, model minted=\(predicted.minted)")
        }
        let drawn = after.queues[q].counter - before.queues[q].counter
        if predicted.mints {
            guard id.number > before.queues[q].counter, id.number <= after.queues[q].counter, drawn <= UInt64(count) else {
                throw Violation(invariant: "racing mints draw fresh numbers", detail: "\(id), drew \(drawn)")
            }
            for number in (before.queues[q].counter + 1)...after.queues[q].counter { spendable[q].insert(number) }
        }
        var expected = Model.ingest(before, queue: q, name: names[q], head: head, mintNumber: id.number).state
        expected.queues[q].counter = after.queues[q].counter
        try checkState(after)
        try expectEqual(after, expected, what: "\(count) concurrent ingests of \(head)")
    }

    /// Ingests and deliveries at once: no exact model, but every invariant, and the ingests' convergence.
    private func concurrentMix(_ q: Int, ingests: Int, deliveries: Int, pick: Int) throws {
        let before = try current()
        let head = try #require(dags[q].head)
        let predicted = Model.ingest(before, queue: q, name: names[q], head: head)
        let waiting = topic.pendingIDs
        let chosen = waiting.isEmpty ? [] : (0..<deliveries).map { waiting[(pick + $0) % waiting.count] }
        var messages: [(String, Message, Int)] = []
        for id in chosen {
            attempts[id, default: 0] += 1
            messages.append((id, try #require(topic.message(id)), attempts[id, default: 1]))
        }
        let results = Mutex<[Result<IngestResult, IngestError>]>([])
        let outcomes = Mutex<[String]>([])
        let group = DispatchGroup()
        let (controller, processor, topic) = (ingest, process, topic)
        let name = names[q].rawValue
        for _ in 0..<ingests {
            group.enter()
            Thread {
                let result = Result { () throws(IngestError) in try controller.ingest(queue: name) }
                results.withLock { $0.append(result) }
                group.leave()
            }.start()
        }
        for (id, message, attempt) in messages {
            group.enter()
            Thread {
                let outcome = processor.handle(Delivery(message: message, attempt: attempt))
                topic.settle(id, outcome)
                outcomes.withLock { $0.append("\(id) \(outcome)") }
                group.leave()
            }.start()
        }
        group.wait()
        let answers = try Self.succeeded(results)
        let after = try snapshot()
        let ids = Set(answers.map(\.request.id))
        note("\(ingests) ingests of \(head) at once: \(ids.map(\.description)); deliveries \(outcomes.withLock { $0 })")
        for outcome in outcomes.withLock({ $0 }) where outcome.contains("reject") {
            throw Violation(invariant: "no delivery is rejected", detail: outcome)
        }
        try checkTransitions(before, after)
        guard ids.count == 1, let id = ids.first else {
            throw Violation(invariant: "concurrent ingests of one head converge", detail: "\(ids)")
        }
        guard answers.filter(\.minted).count == (predicted.minted ? 1 : 0), after.queues[q].index[head] == id.number,
            (after.queues[q].latest ?? 0) >= id.number
        else {
            throw Violation(invariant: "concurrent ingests of one head converge", detail: "\(id), index and latest")
        }
        if after.queues[q].counter > before.queues[q].counter {
            for number in (before.queues[q].counter + 1)...after.queues[q].counter { spendable[q].insert(number) }
        }
        try checkState(after)
    }

    /// Every queue's head ingested again without faults, then every waiting message delivered.
    private func quiesce() throws {
        for q in names.indices { try ingestStep(q) }
        var deliveries = 0
        while let id = topic.pendingIDs.first {
            deliveries += 1
            guard deliveries < 10_000 else { throw Violation(invariant: "the topic drains", detail: "still \(id)") }
            try deliverStep(id)
        }
        let state = try snapshot()
        for (q, queue) in state.queues.enumerated() {
            let head = try #require(dags[q].head)
            guard let number = queue.index[head], let row = queue.rows[number],
                row.state == .processing || row.state == .succeeded
            else {
                throw Violation(
                    invariant: "at rest a queue's head is processing",
                    detail: "\(names[q]) head \(head): \(queue.index[head].map { "\($0) \(queue.rows[$0]?.description ?? "no row")" } ?? "no request")")
            }
            let leftovers = queue.rows.filter { $0.value.state == .accepted }.keys
            guard leftovers.allSatisfy(writtenByFailedIngest[q].contains) else {
                throw Violation(
                    invariant: "at rest only requests of failed ingests stay accepted",
                    detail: "\(names[q]): \(leftovers.sorted()), failed ingests wrote \(writtenByFailedIngest[q].sorted())")
            }
        }
    }

    // MARK: Reading and checking the state

    /// The state after the last step: only steps write the stores (a new commit has no index entry yet).
    private var last: WorldState?

    private func current() throws -> WorldState {
        if let last { return last }
        return try snapshot()
    }

    func snapshot() throws -> WorldState {
        var queueStates: [QueueState] = []
        for (q, name) in names.enumerated() {
            var state = QueueState()
            for request in try requests.base.list(queue: name, before: nil, limit: 100_000) {
                state.rows[request.id.number] = RowState(
                    uri: request.uri, state: request.state, strategy: request.buildStrategy, base: request.baseURI,
                    version: request.version)
            }
            for uri in dags[q].commits {
                if let id = try? uris.base.id(queue: name, uri: uri) { state.index[uri] = id.number }
            }
            if let queue = try? queues.base.get(name) {
                state.latest = queue.latestRequestID?.number
                state.lastGreen = queue.lastGreenURI
            }
            state.counter = counter.value(name)
            queueStates.append(state)
        }
        let state = WorldState(queues: queueStates, pending: Set(topic.pendingIDs))
        last = state
        return state
    }

    /// What must hold of any state the system reaches.
    private func checkState(_ state: WorldState) throws {
        for (q, queue) in state.queues.enumerated() {
            let name = names[q]
            for (number, row) in queue.rows {
                guard number <= queue.counter else {
                    throw Violation(invariant: "numbers come from the counter", detail: "\(name) \(number) > \(queue.counter)")
                }
                guard let indexed = queue.index[row.uri], indexed >= number else {
                    throw Violation(
                        invariant: "the index holds the newest request of each URI",
                        detail: "\(name) \(number) \(row.uri): index \(queue.index[row.uri].map(String.init) ?? "none")")
                }
                switch row.state {
                case .accepted, .superseded:
                    guard row.strategy == .undecided, row.base == nil else {
                        throw Violation(invariant: "only processing decides a strategy", detail: "\(name) \(number) \(row)")
                    }
                    if row.state == .superseded {
                        guard let latest = queue.latest, number < latest, queue.rows[latest] != nil else {
                            throw Violation(
                                invariant: "superseded only below a newer request",
                                detail: "\(name) \(number), latest \(queue.latest.map(String.init) ?? "none")")
                        }
                    }
                case .processing, .succeeded, .failed, .cancelled:
                    guard (row.strategy == .full && row.base == nil) || (row.strategy == .incrementalSinceGreen && row.base != nil)
                    else {
                        throw Violation(invariant: "a decided request has a consistent strategy", detail: "\(name) \(number) \(row)")
                    }
                }
            }
            for (uri, number) in queue.index {
                if let row = queue.rows[number], row.uri != uri {
                    throw Violation(invariant: "the index names its URI's request", detail: "\(name) \(uri) -> \(number) \(row)")
                }
            }
            if let latest = queue.latest, queue.rows[latest] == nil {
                throw Violation(invariant: "the latest request exists", detail: "\(name) \(latest)")
            }
            if queue.counter > 0 {
                let gaps = Set(1...queue.counter).subtracting(queue.rows.keys)
                guard gaps.isSubset(of: spendable[q]) else {
                    throw Violation(
                        invariant: "numbers have no gaps but those of failed or racing ingests",
                        detail: "\(name) missing \(gaps.subtracting(spendable[q]).sorted())")
                }
            }
        }
        for id in state.pending {
            let requestID = try RequestID(parsing: id)
            guard let q = names.firstIndex(of: requestID.queue), state.queues[q].rows[requestID.number] != nil else {
                throw Violation(invariant: "a message names a stored request", detail: id)
            }
        }
    }

    /// What must hold of every step: no request vanishes or leaves a terminal state, states move only along
    /// accepted -> processing | superseded (processing -> succeeded by the test's `green`), the strategy is the
    /// model's at decision time, and the latest, the counter and the index never move back.
    private func checkTransitions(_ before: WorldState, _ after: WorldState, green: (queue: Int, number: UInt64)? = nil) throws {
        for q in names.indices {
            let (old, new) = (before.queues[q], after.queues[q])
            let name = names[q]
            let parents = dags[q].state.withLock { $0.parents }
            for (number, was) in old.rows {
                guard let now = new.rows[number] else {
                    throw Violation(invariant: "requests are never deleted", detail: "\(name) \(number)")
                }
                guard now != was else { continue }
                guard now.uri == was.uri, now.version == was.version + 1 else {
                    throw Violation(invariant: "a change is one version up", detail: "\(name) \(number): \(was) -> \(now)")
                }
                if let green, green.queue == q, green.number == number {
                    guard was.state == .processing, now.state == .succeeded, now.strategy == was.strategy, now.base == was.base else {
                        throw Violation(invariant: "green", detail: "\(name) \(number): \(was) -> \(now)")
                    }
                    continue
                }
                switch (was.state, now.state) {
                case (.accepted, .superseded):
                    break
                case (.accepted, .processing):
                    let (strategy, base) = Model.strategy(green: old.lastGreen, head: now.uri, parents: parents)
                    guard now.strategy == strategy, now.base == base else {
                        throw Violation(
                            invariant: "incremental exactly when the last green is an ancestor",
                            detail: "\(name) \(number): \(now), last green \(old.lastGreen?.rawValue ?? "none")")
                    }
                default:
                    throw Violation(
                        invariant: "a recorded outcome never changes (only accepted -> processing | superseded)",
                        detail: "\(name) \(number): \(was) -> \(now)")
                }
            }
            for (number, now) in new.rows where old.rows[number] == nil && now != .fresh(now.uri) {
                throw Violation(invariant: "a request is created accepted", detail: "\(name) \(number): \(now)")
            }
            guard (new.latest ?? 0) >= (old.latest ?? 0), new.counter >= old.counter else {
                throw Violation(invariant: "the latest and the counter never move back", detail: "\(name)")
            }
            for (uri, number) in old.index where (new.index[uri] ?? 0) < number {
                throw Violation(invariant: "the index only moves to newer requests", detail: "\(name) \(uri)")
            }
            if green?.queue != q && new.lastGreen != old.lastGreen {
                throw Violation(invariant: "the domain never writes the last green", detail: "\(name)")
            }
        }
    }

    /// Each piece of `after` is as it was `before` or as `expected` (the same step without the failure).
    private func checkBetween(_ before: WorldState, _ after: WorldState, _ expected: WorldState, what: String) throws {
        func between<T: Equatable>(_ part: String, _ pick: (WorldState) -> T) throws {
            let now = pick(after)
            guard now == pick(before) || now == pick(expected) else {
                throw Violation(
                    invariant: "a failed step leaves each piece as before or as done",
                    detail: "\(what): \(part) is \(now), was \(pick(before)), would be \(pick(expected))")
            }
        }
        for q in names.indices {
            let numbers = Set(before.queues[q].rows.keys).union(after.queues[q].rows.keys).union(expected.queues[q].rows.keys)
            for number in numbers.sorted() { try between("\(names[q]) \(number)") { $0.queues[q].rows[number] } }
            let uris = Set(before.queues[q].index.keys).union(after.queues[q].index.keys)
            for uri in uris.sorted(by: { $0.rawValue < $1.rawValue }) { try between("\(names[q]) index \(uri)") { $0.queues[q].index[uri] } }
            try between("\(names[q]) latest") { $0.queues[q].latest }
            try between("\(names[q]) counter") { $0.queues[q].counter }
        }
        try between("waiting messages") { $0.pending }
    }

    private func expectEqual(_ actual: WorldState, _ expected: WorldState, what: String) throws {
        guard actual != expected else { return }
        var differences: [String] = []
        for q in names.indices {
            let (a, e) = (actual.queues[q], expected.queues[q])
            for number in Set(a.rows.keys).union(e.rows.keys).sorted() where a.rows[number] != e.rows[number] {
                differences.append(
                    "\(names[q]) \(number): \(a.rows[number]?.description ?? "none"), model \(e.rows[number]?.description ?? "none")")
            }
            if a.index != e.index { differences.append("\(names[q]) index \(a.index), model \(e.index)") }
            if a.latest != e.latest { differences.append("\(names[q]) latest \(String(describing: a.latest)), model \(String(describing: e.latest))") }
            if a.counter != e.counter { differences.append("\(names[q]) counter \(a.counter), model \(e.counter)") }
            if a.lastGreen != e.lastGreen { differences.append("\(names[q]) last green differs") }
        }
        if actual.pending != expected.pending {
            differences.append("waiting \(actual.pending.sorted()), model \(expected.pending.sorted())")
        }
        throw Violation(invariant: "the state is the model's", detail: "\(what): " + differences.joined(separator: "; "))
    }

    private static func describe(_ result: Result<IngestResult, IngestError>) -> String {
        switch result {
        case .success(let value): "\(value.request.id)\(value.minted ? " minted" : "") \(value.request.state.rawValue)"
        case .failure(let error): "\(error)"
        }
    }
}

/// Removes steps while the same invariant still fails: halves, quarters, ... down to single steps.
func shrink(_ ops: [Op], failing invariant: String) -> [Op] {
    var current = ops
    var chunk = max(1, current.count / 2)
    while true {
        var removed = false
        var start = 0
        while start < current.count {
            var candidate = current
            candidate.removeSubrange(start..<min(start + chunk, current.count))
            if ModelRun.run(candidate).violation?.invariant == invariant {
                current = candidate
                removed = true
            } else {
                start += chunk
            }
        }
        if chunk == 1 && !removed { return current }
        if !removed { chunk = max(1, chunk / 2) }
    }
}

@Suite struct ModelTests {
    /// Sequences per run: STOVEPIPE_MODEL_SEQUENCES (default 2000); STOVEPIPE_MODEL_SEED replays from that seed.
    @Test func randomSequencesKeepTheInvariants() throws {
        let environment = ProcessInfo.processInfo.environment
        let seedText = environment["STOVEPIPE_MODEL_SEED"]
        let firstSeed = try seedText.map { text in try #require(UInt64(text, radix: 16), "STOVEPIPE_MODEL_SEED is hex") }
        let count = try environment["STOVEPIPE_MODEL_SEQUENCES"].map { text in
            try #require(Int(text), "STOVEPIPE_MODEL_SEQUENCES is a number")
        } ?? (firstSeed == nil ? 2_000 : 1)
        let base = firstSeed ?? 0x5709_E000_0000
        for index in 0..<count {
            let seed = base &+ UInt64(index)
            let ops = Op.sequence(seed: seed)
            guard let violation = ModelRun.run(ops).violation else { continue }
            let shrunk = shrink(ops, failing: violation.invariant)
            let (shrunkViolation, trace) = ModelRun.run(shrunk)
            let report = """
                model test failed, seed \(String(seed, radix: 16)) (replay: STOVEPIPE_MODEL_SEED=\(String(seed, radix: 16)))
                \(violation)
                full sequence (\(ops.count) steps): \(ops.map(\.description).joined(separator: "; "))
                shrunk sequence (\(shrunk.count) steps): \(shrunk.map(\.description).joined(separator: "; "))
                shrunk run: \(shrunkViolation.map(\.description) ?? "passed this time (a race)")
                \(trace.joined(separator: "\n"))
                """
            print(report)
            Issue.record(Comment(rawValue: report))
            return
        }
    }
}
