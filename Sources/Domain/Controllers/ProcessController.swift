import Foundation
import Logging
import Metrics

/// Consumes `process`: decides how each accepted request will be validated, or supersedes it.
///
/// Redelivery is safe: a request that left `accepted` is acked untouched, and the strategy is
/// written once with a version-guarded update and never re-derived.
public final class ProcessController: Sendable {
    private let requests: any RequestStore
    private let queues: any QueueStore
    private let sources: any SourceControlFactory
    private let clock: WallClock
    private let logger: Logger
    private let metrics: OutcomeMetrics
    /// Older requests left `accepted` that a newer one's start of processing superseded (not deliveries).
    private let swept: Metrics.Counter

    /// Wires the controller to the stores and SourceControl.
    public init(
        requests: any RequestStore, queues: any QueueStore, sources: any SourceControlFactory,
        clock: WallClock = .system, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.requests = requests
        self.queues = queues
        self.sources = sources
        self.clock = clock
        self.logger = logger
        self.metrics = OutcomeMetrics(
            counter: "stovepipe_process_total", timer: "stovepipe_process_duration_seconds",
            outcomes: ["processing", "superseded", "redelivered", "rejected", "conflict", "unavailable"],
            factory: metricsFactory)
        self.swept = Metrics.Counter(label: "stovepipe_process_swept_total", factory: metricsFactory)
    }

    /// Subscribes the controller to `process` on `broker`.
    public func subscribe(to broker: any MessageBroker) {
        broker.subscribe(.process) { [self] delivery in handle(delivery) }
    }

    /// Handles one delivery of a `process` message.
    public func handle(_ delivery: Delivery) -> DeliveryOutcome {
        let started = ContinuousClock.now
        let (outcome, label) = decide(delivery)
        metrics.record(label, since: started)
        return outcome
    }

    private func decide(_ delivery: Delivery) -> (DeliveryOutcome, String) {
        var log = logger
        log[metadataKey: "message.id"] = "\(delivery.message.id)"
        log[metadataKey: "message.attempt"] = "\(delivery.attempt)"

        guard let message = try? JSONDecoder().decode(ProcessMessage.self, from: Data(delivery.message.payload)),
            let id = try? RequestID(parsing: message.id), id.queue.rawValue == message.queue
        else {
            log.error("malformed process message: rejected")
            return (.reject(reason: "malformed payload"), "rejected")
        }
        log[metadataKey: "request.id"] = "\(id)"
        log[metadataKey: "queue"] = "\(id.queue)"

        var request: Request
        do {
            request = try requests.get(id)
        } catch .notFound {
            log.error("process message names a request that does not exist: rejected")
            return (.reject(reason: "request \(id) not found"), "rejected")
        } catch {
            log.warning("request store unavailable: retrying", metadata: ["error": "\(error)"])
            return (.retry(reason: "request store: \(error)"), "unavailable")
        }
        log[metadataKey: "uri"] = "\(request.uri)"
        guard request.state == .accepted else {
            log.debug("already past accepted: redelivery acked", metadata: ["state": "\(request.state.rawValue)"])
            return (.ack, "redelivered")
        }

        let queue: Queue
        do {
            queue = try queues.get(id.queue)
        } catch .notFound {
            queue = Queue(name: id.queue)
        } catch {
            log.warning("queue store unavailable: retrying", metadata: ["error": "\(error)"])
            return (.retry(reason: "queue store: \(error)"), "unavailable")
        }

        if let latest = queue.latestRequestID, id.isOlder(than: latest) {
            request.state = .superseded
            if let failure = write(request, log: log) { return failure }
            log.info("superseded", metadata: ["request.latest": "\(latest)"])
            return (.ack, "superseded")
        }

        switch strategy(for: request, queue: queue, log: log) {
        case .success(let (strategy, base)):
            request.state = .processing
            request.buildStrategy = strategy
            request.baseURI = base
            if let failure = write(request, log: log) { return failure }
            log.info("processing", metadata: ["build.strategy": "\(strategy.rawValue)", "base.uri": "\(base?.rawValue ?? "")"])
            if let latest = queue.latestRequestID {
                // Only what its own delivery would supersede: below the latest request as well as below this one.
                supersedeOlderAccepted(than: latest.isOlder(than: id) ? latest : id, log: log)
            }
            return (.ack, "processing")
        case .failure(let error):
            log.warning("source control unavailable: retrying", metadata: ["error": "\(error)"])
            return (.retry(reason: "source control: \(error)"), "unavailable")
        }
    }

    /// Full without a last green; incremental when the last green is an ancestor of the head;
    /// full when history was rewritten or ancestry cannot be established.
    private func strategy(
        for request: Request, queue: Queue, log: Logger
    ) -> Result<(BuildStrategy, SourceURI?), BackendError> {
        guard let green = queue.lastGreenURI else { return .success((.full, nil)) }
        do {
            let source = try sources.sourceControl(for: request.queue)
            if try source.isAncestor(green, of: request.uri) {
                return .success((.incrementalSinceGreen, green))
            }
            log.info("last green is not an ancestor of the head (history rewritten): full build")
            return .success((.full, nil))
        } catch .notFound {
            log.warning("ancestry unknown (commit or queue not found): full build", metadata: ["green.uri": "\(green)"])
            return .success((.full, nil))
        } catch {
            return .failure(error)
        }
    }

    /// Supersedes the queue's requests older than `id` that are still `accepted`, as their own deliveries
    /// would: a request whose ingest failed after writing it, and whose head nobody ingested again before
    /// the branch moved on, has no message and would otherwise stay `accepted`. The sweep reads newest first
    /// past superseded requests and stops at the first one that reached processing (whose own sweep looked
    /// below it), but never before `supersedeSweepWindow` requests. Best effort: a failure is logged, and
    /// the next request to start processing looks again.
    private func supersedeOlderAccepted(than id: RequestID, log: Logger) {
        var before = id.number
        var looked = 0
        while looked < Self.supersedeSweepBudget {
            let page: [Request]
            do {
                page = try requests.list(queue: id.queue, before: before, limit: Self.supersedeSweepPage)
            } catch {
                log.warning("could not list older requests to supersede", metadata: ["error": "\(error)"])
                return
            }
            for request in page {
                looked += 1
                switch request.state {
                case .accepted:
                    guard supersede(request, log: log) else { return }
                case .superseded:
                    continue
                case .processing, .succeeded, .failed, .cancelled:
                    if looked > Self.supersedeSweepWindow { return }
                }
            }
            guard page.count == Self.supersedeSweepPage, let oldest = page.last else { return }
            before = oldest.id.number
        }
        log.notice("stopped looking for older accepted requests", metadata: ["looked": "\(looked)"])
    }

    /// Moves one `accepted` request to `superseded`; false when the store failed.
    private func supersede(_ request: Request, log: Logger) -> Bool {
        var superseded = request
        superseded.state = .superseded
        superseded.updatedAt = clock.now()
        do {
            try requests.update(superseded, oldVersion: request.version, newVersion: request.version + 1)
            swept.increment()
            log.info("superseded an older request still accepted", metadata: ["request.older": "\(request.id)"])
        } catch .versionMismatch {
            // Its own delivery got to it first.
        } catch {
            log.warning("could not supersede an older request", metadata: ["request.older": "\(request.id)", "error": "\(error)"])
            return false
        }
        return true
    }

    /// How many requests below the one starting to process are always looked at for `accepted` leftovers.
    static let supersedeSweepWindow = 20
    /// How many requests one sweep reads at most, in pages of `supersedeSweepPage`.
    static let supersedeSweepBudget = 2_000
    /// How many requests one read of the sweep asks for.
    static let supersedeSweepPage = 50

    /// CAS-writes `request` one version up; returns the outcome to end the delivery with on failure.
    private func write(_ request: Request, log: Logger) -> (DeliveryOutcome, String)? {
        var updated = request
        updated.updatedAt = clock.now()
        do {
            try requests.update(updated, oldVersion: request.version, newVersion: request.version + 1)
            return nil
        } catch .versionMismatch {
            log.info("request changed concurrently: retrying")
            return (.retry(reason: "version mismatch"), "conflict")
        } catch {
            log.warning("request store unavailable: retrying", metadata: ["error": "\(error)"])
            return (.retry(reason: "request store: \(error)"), "unavailable")
        }
    }
}
