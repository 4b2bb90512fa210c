import Foundation
import Logging

/// Why an ingest did not return a request.
public enum IngestError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The queue name breaks the naming rules; the caller's mistake.
    case invalidQueueName(reason: String)
    /// No queue of that name is configured, or its repository or ref does not exist.
    case unknownQueue(QueueName)
    /// Storage, the topic or SourceControl could not answer; the same call may succeed later.
    case unavailable(detail: String)

    public var description: String {
        switch self {
        case .invalidQueueName(let reason): "invalid queue name: \(reason)"
        case .unknownQueue(let name): "unknown queue \(name)"
        case .unavailable(let detail): "unavailable: \(detail)"
        }
    }
}

/// What an ingest returns: the head's request, and whether this call created it.
public struct IngestResult: Sendable, Equatable {
    public let request: Request
    /// True when this call created the request; false when the head already had one.
    public let minted: Bool

    /// Makes a result.
    public init(request: Request, minted: Bool) {
        self.request = request
        self.minted = minted
    }
}

/// Mints exactly one request per (queue, head commit), persists it and hands it to `process`.
///
/// Every step tolerates having run before, so a retried or concurrent ingest of the same head
/// converges on one request; the call returns only after every write it reports is durable.
public final class IngestController: Sendable {
    private let requests: any RequestStore
    private let uris: any RequestURIStore
    private let queues: any QueueStore
    private let counter: any Counter
    private let sources: any SourceControlFactory
    private let publisher: any TopicPublisher
    private let clock: WallClock
    private let logger: Logger
    private let maxQueueUpdateAttempts: Int
    private let metrics = OutcomeMetrics(
        counter: "stovepipe_ingest_total", timer: "stovepipe_ingest_duration_seconds",
        outcomes: ["minted", "deduplicated", "user_error", "unavailable"])

    /// Wires the controller to its stores, SourceControl and the `process` publisher.
    public init(
        requests: any RequestStore, uris: any RequestURIStore, queues: any QueueStore, counter: any Counter,
        sources: any SourceControlFactory, publisher: any TopicPublisher, clock: WallClock = .system,
        logger: Logger, maxQueueUpdateAttempts: Int = 32
    ) {
        self.requests = requests
        self.uris = uris
        self.queues = queues
        self.counter = counter
        self.sources = sources
        self.publisher = publisher
        self.clock = clock
        self.logger = logger
        self.maxQueueUpdateAttempts = max(1, maxQueueUpdateAttempts)
    }

    /// Ingests the current head of `queue`; its log lines also carry `logMetadata` (a caller's own ids).
    public func ingest(queue rawName: String, logMetadata: Logger.Metadata = [:]) throws(IngestError) -> IngestResult {
        let started = ContinuousClock.now
        do {
            let result = try run(rawName, logMetadata: logMetadata)
            metrics.record(result.minted ? "minted" : "deduplicated", since: started)
            return result
        } catch {
            switch error {
            case .invalidQueueName, .unknownQueue: metrics.record("user_error", since: started)
            case .unavailable: metrics.record("unavailable", since: started)
            }
            throw error
        }
    }

    private func run(_ rawName: String, logMetadata: Logger.Metadata) throws(IngestError) -> IngestResult {
        let name: QueueName
        do {
            name = try QueueName(rawName)
        } catch {
            guard case .invalidQueueName(_, let reason) = error else { throw .invalidQueueName(reason: "invalid") }
            throw .invalidQueueName(reason: reason)
        }
        var log = logger
        for (key, value) in logMetadata { log[metadataKey: key] = value }
        log[metadataKey: "queue"] = "\(name)"
        return try ingest(name, try head(of: name, log: log), rereadIfOld: true, log: log)
    }

    /// Ingests `uri` as the head of `name`; `rereadIfOld` allows the one second read of the head that
    /// tells a stale first read from a branch reset.
    private func ingest(
        _ name: QueueName, _ uri: SourceURI, rereadIfOld: Bool, log baseLog: Logger
    ) throws(IngestError) -> IngestResult {
        var log = baseLog
        log[metadataKey: "uri"] = "\(uri)"

        var (id, claimed) = try claim(name, uri, log: log)
        log[metadataKey: "request.id"] = "\(id)"

        // Decided before the claim's row is read or healed: on a stale read or a reset that request is left
        // behind, and healing it would write a row (accepted, never published) that nothing processes.
        if !claimed, rereadIfOld, let latest = try latestRequestID(of: name), id.isOlder(than: latest) {
            // The head's request is older than the queue's latest: either this read of the head was stale,
            // or the branch was reset to an old commit. Only the ref's value now tells the two apart.
            let again = try head(of: name, log: log)
            guard again == uri else {
                log.info("head moved while ingesting, ingesting the newer head", metadata: ["uri.newer": "\(again)"])
                return try ingest(name, again, rereadIfOld: false, log: baseLog)
            }
            (id, claimed) = try reclaim(name, uri, from: id, log: log)
            log[metadataKey: "request.id"] = "\(id)"
            log.info("branch reset to an older head", metadata: ["request.latest": "\(latest)"])
        }
        let (request, minted) = try ensureRequest(id, uri, expectExisting: !claimed)
        // Published before it becomes the queue's latest: if publishing fails, the older requests still
        // waiting are not superseded by one that nothing will process until this head is ingested again.
        if request.state == .accepted {
            try publish(request)
        }
        try advanceLatest(of: name, to: id)
        log.info("ingested", metadata: ["minted": "\(minted)", "state": "\(request.state.rawValue)"])
        return IngestResult(request: request, minted: minted)
    }

    private func head(of name: QueueName, log: Logger) throws(IngestError) -> SourceURI {
        let source: any SourceControl
        do {
            source = try sources.sourceControl(for: name)
        } catch .notFound {
            throw .unknownQueue(name)
        } catch {
            throw .unavailable(detail: "source control: \(error)")
        }
        let uri: SourceURI
        do {
            uri = try source.latest()
        } catch .notFound {
            // A configured queue whose repository or ref is gone (a deleted branch, a wrong path): the caller sees a
            // 404 like an unknown queue's, so the operator needs this line to tell the two apart.
            log.warning("the queue's repository or ref does not exist; its ingests are refused as unknown until it does")
            throw .unknownQueue(name)
        } catch {
            throw .unavailable(detail: "source control: \(error)")
        }
        // Refused before anything is written: no store could keep it faithfully, and MySQL would refuse a long one midway.
        if let problem = SourceURI.storageProblem(uri.rawValue) {
            throw .unavailable(detail: "source control: the head's URI is \(problem)")
        }
        return uri
    }

    /// The request id that holds (queue, uri): an existing claim, ours, or the winner's of a race;
    /// and whether this call made the claim.
    private func claim(_ name: QueueName, _ uri: SourceURI, log: Logger) throws(IngestError) -> (RequestID, Bool) {
        do {
            return (try uris.id(queue: name, uri: uri), false)
        } catch .notFound {
            // Fall through and mint.
        } catch {
            throw .unavailable(detail: "request index: \(error)")
        }
        let candidate = try mint(name)
        do {
            try uris.create(queue: name, uri: uri, id: candidate)
            return (candidate, true)
        } catch .alreadyExists {
            // Lost a race for this head: only the counter value is spent, no row was written.
            log.debug("lost the claim race", metadata: ["request.candidate": "\(candidate)"])
        } catch {
            throw .unavailable(detail: "request index: \(error)")
        }
        return (try raceWinner(name, uri), false)
    }

    /// Re-points (queue, uri) from `old` to a freshly numbered request, or to the id a concurrent reset
    /// re-pointed it to first; and whether this call re-pointed it.
    private func reclaim(
        _ name: QueueName, _ uri: SourceURI, from old: RequestID, log: Logger
    ) throws(IngestError) -> (RequestID, Bool) {
        let candidate = try mint(name)
        // The index is re-pointed before the request row exists, as a claim is: a lost race then leaves only a
        // spent counter value, and a crash in between is healed by ensureRequest on the next ingest.
        do {
            try uris.replace(queue: name, uri: uri, expected: old, with: candidate)
            return (candidate, true)
        } catch .versionMismatch {
            log.debug("lost the reset race", metadata: ["request.candidate": "\(candidate)"])
        } catch {
            throw .unavailable(detail: "request index: \(error)")
        }
        return (try raceWinner(name, uri), false)
    }

    /// A fresh request id from the queue's durable counter.
    private func mint(_ name: QueueName) throws(IngestError) -> RequestID {
        do {
            return RequestID(queue: name, number: try counter.next(queue: name, domain: requestCounterDomain))
        } catch {
            throw .unavailable(detail: "counter: \(error)")
        }
    }

    /// The id that holds (queue, uri) after this call lost a race to claim or re-point it.
    private func raceWinner(_ name: QueueName, _ uri: SourceURI) throws(IngestError) -> RequestID {
        do {
            return try uris.id(queue: name, uri: uri)
        } catch {
            throw .unavailable(detail: "request index after a lost race: \(error)")
        }
    }

    /// The queue's latest request, nil before its first ingest.
    private func latestRequestID(of name: QueueName) throws(IngestError) -> RequestID? {
        do {
            return try queues.get(name).latestRequestID
        } catch .notFound {
            return nil
        } catch {
            throw .unavailable(detail: "queue store: \(error)")
        }
    }

    /// Creates the request row, or reads it when a previous or concurrent call already did.
    ///
    /// When the claim already existed the row almost always does too, so it is read first and only
    /// created (healing a crash between claim and create) when missing.
    private func ensureRequest(
        _ id: RequestID, _ uri: SourceURI, expectExisting: Bool
    ) throws(IngestError) -> (Request, Bool) {
        if expectExisting {
            do {
                return (try requests.get(id), false)
            } catch .notFound {
                // Heal below.
            } catch {
                throw .unavailable(detail: "request store: \(error)")
            }
        }
        let fresh = Request(id: id, uri: uri, createdAt: clock.now())
        do {
            try requests.create(fresh)
            return (fresh, true)
        } catch .alreadyExists {
            // Falls through to the read below.
        } catch {
            throw .unavailable(detail: "request store: \(error)")
        }
        do {
            return (try requests.get(id), false)
        } catch {
            throw .unavailable(detail: "request store: \(error)")
        }
    }

    /// Moves Queue.latestRequestID forward to `id` (never back), creating the queue row the first time.
    private func advanceLatest(of name: QueueName, to id: RequestID) throws(IngestError) {
        for _ in 0..<maxQueueUpdateAttempts {
            do {
                var queue = try queues.get(name)
                if let latest = queue.latestRequestID, !latest.isOlder(than: id) { return }
                let oldVersion = queue.version
                queue.latestRequestID = id
                try queues.update(queue, oldVersion: oldVersion, newVersion: oldVersion + 1)
                return
            } catch .notFound {
                do {
                    try queues.create(Queue(name: name, latestRequestID: id))
                    return
                } catch .alreadyExists {
                    continue
                } catch {
                    throw .unavailable(detail: "queue store: \(error)")
                }
            } catch .versionMismatch {
                continue
            } catch {
                throw .unavailable(detail: "queue store: \(error)")
            }
        }
        throw .unavailable(detail: "queue store: too much contention on the queue row")
    }

    private func publish(_ request: Request) throws(IngestError) {
        let payload: [UInt8]
        do {
            payload = Array(try JSONEncoder().encode(ProcessMessage(id: request.id)))
        } catch {
            throw .unavailable(detail: "encoding the process message")
        }
        do {
            try publisher.publish(
                Message(topic: .process, partitionKey: request.queue.rawValue, id: request.id.description, payload: payload)
            )
        } catch {
            throw .unavailable(detail: "process topic: \(error)")
        }
    }
}
