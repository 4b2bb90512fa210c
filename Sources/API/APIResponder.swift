import Domain
import Foundation
import HTTPServer
import Logging
import Metrics
import Synchronization

/// One named dependency check of `/readyz`.
public struct ReadinessCheck: Sendable, Equatable {
    public let name: String
    public let ok: Bool
    /// Why it failed, or a note on a check that passed (a schema newer than the binary); often empty when ok.
    public let detail: String

    /// Makes a check result.
    public init(name: String, ok: Bool, detail: String = "") {
        self.name = name
        self.ok = ok
        self.detail = detail
    }
}

/// What a configuration reload replaces as a whole. A request reads it once, so one in flight during a reload
/// finishes with the configuration it started with.
public struct ReloadableSettings: Sendable {
    /// Whether a queue is configured (a queue that is not is unknown even if rows exist).
    public var isConfigured: @Sendable (QueueName) -> Bool
    /// When set, ingest requires a valid signature.
    public var signature: SignatureVerifier?

    /// Groups the settings.
    public init(isConfigured: @escaping @Sendable (QueueName) -> Bool, signature: SignatureVerifier? = nil) {
        self.isConfigured = isConfigured
        self.signature = signature
    }
}

/// What the API reads and calls; the executable wires it.
public struct APIDependencies: Sendable {
    public var ingest: IngestController
    public var requests: any RequestStore
    public var queues: any QueueStore
    /// The configured queues and the ingest signature in force now, read once by each request that needs them.
    public var settings: @Sendable () -> ReloadableSettings
    /// The topic system, for `/topics`; nil hides those endpoints' data.
    public var broker: (any MessageBroker)?
    /// The topics `/topics` reports on.
    public var topics: [TopicName]
    /// The dependency checks of `/readyz`, which the event loop answers: must not block (a `ReadinessMonitor`'s
    /// `current` runs blocking checks on a thread of its own).
    public var readiness: @Sendable () -> [ReadinessCheck]
    /// True once shutdown began: `/healthz` and `/readyz` answer 503.
    public var isDraining: @Sendable () -> Bool
    /// The Prometheus text exposition for `/metrics`.
    public var metrics: @Sendable () -> [UInt8]
    /// When set, browser pages of the origins it allows may read the API (CORS); nil sends no CORS fields.
    public var cors: CORSPolicy?

    /// Groups the dependencies, with settings that a reload may replace.
    public init(
        ingest: IngestController, requests: any RequestStore, queues: any QueueStore,
        settings: @escaping @Sendable () -> ReloadableSettings, broker: (any MessageBroker)? = nil,
        topics: [TopicName] = [.process], readiness: @escaping @Sendable () -> [ReadinessCheck] = { [] },
        isDraining: @escaping @Sendable () -> Bool = { false }, metrics: @escaping @Sendable () -> [UInt8] = { [] },
        cors: CORSPolicy? = nil
    ) {
        self.ingest = ingest
        self.requests = requests
        self.queues = queues
        self.settings = settings
        self.broker = broker
        self.topics = topics
        self.readiness = readiness
        self.isDraining = isDraining
        self.metrics = metrics
        self.cors = cors
    }

    /// Groups the dependencies, with settings that never change.
    public init(
        ingest: IngestController, requests: any RequestStore, queues: any QueueStore,
        isConfigured: @escaping @Sendable (QueueName) -> Bool, broker: (any MessageBroker)? = nil,
        topics: [TopicName] = [.process], readiness: @escaping @Sendable () -> [ReadinessCheck] = { [] },
        isDraining: @escaping @Sendable () -> Bool = { false }, metrics: @escaping @Sendable () -> [UInt8] = { [] },
        signature: SignatureVerifier? = nil, cors: CORSPolicy? = nil
    ) {
        let settings = ReloadableSettings(isConfigured: isConfigured, signature: signature)
        self.init(
            ingest: ingest, requests: requests, queues: queues, settings: { settings }, broker: broker, topics: topics,
            readiness: readiness, isDraining: isDraining, metrics: metrics, cors: cors)
    }
}

/// The REST API: routes, JSON bodies, problem+json errors and per-route metrics.
public final class APIResponder: HTTPResponder {
    /// The page size of `/queues/{queue}/requests` when no limit is given.
    public static let defaultPageSize = 50
    /// The largest page size; a larger limit is capped to it.
    public static let maxPageSize = 200

    private let dependencies: APIDependencies
    private let logger: Logger
    /// The logger's handler when it takes sorted fields and no metadata provider adds to each line.
    private let requestLineHandler: (any SortedFieldsLogHandler)?
    private let openAPIDocument: [UInt8]
    private let requestMetrics = RequestMetrics()
    private static let jsonHeaders = HTTPHeaders([("Content-Type", "application/json")])

    /// Makes the responder.
    public init(dependencies: APIDependencies, logger: Logger) {
        self.dependencies = dependencies
        self.logger = logger
        self.requestLineHandler = logger.metadataProvider == nil ? logger.handler as? any SortedFieldsLogHandler : nil
        self.openAPIDocument = OpenAPIDocument.bytes
    }

    public func respond(to request: HTTPRequest) -> HTTPResponse {
        let started = BootClock.nanoseconds()
        var template = RouteTemplate.unmatched
        var response: HTTPResponse
        /// The route's methods, for a CORS preflight; read only when CORS is on.
        var methods: [String]?
        do {
            let route = try Route.match(rawPath: request.rawPath)
            template = route.template
            if dependencies.cors != nil { methods = route.handledMethods }
            response = route.handles(request.method)
                ? try handle(route, request) : try Self.answerUnhandled(request.method, allowing: route.allowedMethods)
        } catch let failure as Route.Failure {
            response = Self.unroutable(failure, method: request.method).response()
        } catch let problem as Problem {
            response = problem.response()
        } catch {
            logger.error(
                "unexpected error", metadata: ["http.request_id": "\(request.requestID)", "http.route": "\(template.label)"])
            response = Problem.internalError.response()
        }
        dependencies.cors?.apply(to: &response, request: request, methods: methods)
        let elapsed = BootClock.nanoseconds() - started
        let method = request.method
        let status = response.status
        let fields = RequestLogFields(
            bytes: response.body.count, nanoseconds: elapsed, method: method, route: template.label, status: status,
            requestID: request.requestID)
        // The metrics and the log line wait until the response is on its way.
        response.afterSend = { [self, template] in
            requestMetrics.record(template: template, method: MethodLabel(method), status: status, nanoseconds: elapsed)
            logRequest(fields)
        }
        return response
    }

    private func logRequest(_ fields: RequestLogFields) {
        guard logger.logLevel <= .info else { return }
        guard let requestLineHandler else {
            var metadata = Logger.Metadata()
            for field in RequestLogFields.Field.allCases { metadata[field.key] = .string(fields.value(of: field)) }
            logger.info("request", metadata: metadata)
            return
        }
        requestLineHandler.log(level: .info, message: "request", sortedFields: fields)
    }

    /// `/healthz`, `/readyz` (from results checked off the loop) and `/metrics` block on nothing, so the event loop
    /// answers them: probes and scrapes keep working when every worker waits on storage and the worker queue is full,
    /// which is when they are needed.
    public func respondsInline(method: String, rawPath: String) -> Bool {
        // A scrape renders a few hundred series (under a millisecond here), once per scrape interval.
        (method == "GET" || method == "HEAD") && (rawPath == "/healthz" || rawPath == "/readyz" || rawPath == "/metrics")
    }

    /// The problem of a request whose path matches no route.
    private static func unroutable(_ failure: Route.Failure, method: String) -> Problem {
        // RFC 9110 §15.6.2: a method the server does not recognise is 501 whatever the target.
        guard MethodLabel(method).isRecognised else { return .notImplemented(method) }
        return failure == .notFound
            ? .notFound("no resource at this path") : .badRequest("malformed-path", "the path has a malformed percent-escape")
    }

    /// The answer to a method the route's handler does not take: OPTIONS lists `allowed`, any other is refused.
    private static func answerUnhandled(_ method: String, allowing allowed: [String]) throws(Problem) -> HTTPResponse {
        // RFC 9110 §15.6.2: 501 for a method the server does not recognise; §15.5.6: 405 for one the target lacks.
        guard MethodLabel(method).isRecognised else { throw .notImplemented(method) }
        guard method == "OPTIONS" else { throw .methodNotAllowed(allowed) }
        // RFC 9110 §9.3.7: a successful OPTIONS without content is 204 with the Allow field.
        return HTTPResponse(status: 204, headers: HTTPHeaders([("Allow", allowed.joined(separator: ", "))]))
    }

    private func handle(_ route: Route, _ request: HTTPRequest) throws -> HTTPResponse {
        switch route {
        case .ingest(let queue): return try ingest(queue, request)
        case .request(let id): return try getRequest(id, request.headers, requestID: request.requestID)
        case .queue(let name): return try getQueue(name, request.headers, requestID: request.requestID)
        case .queueRequests(let name): return try listRequests(name, query: request.query, requestID: request.requestID)
        case .healthz:
            if dependencies.isDraining() {
                return json(503, StatusBody(status: "draining"))
            }
            return json(200, StatusBody(status: "ok"))
        case .readyz: return readiness()
        case .metrics:
            return HTTPResponse(status: 200, headers: HTTPHeaders([("Content-Type", "text/plain; version=0.0.4; charset=utf-8")]),
                body: dependencies.metrics())
        case .openapi:
            return HTTPResponse(status: 200, headers: HTTPHeaders([("Content-Type", "application/yaml")]), body: openAPIDocument)
        case .topics: return try topics(dependencies.topics)
        case .topic(let name):
            let topic = TopicName(name)
            guard dependencies.topics.contains(topic) else { throw Problem.notFound("no topic '\(Problem.echoed(name))'") }
            return try topics([topic])
        case .server:
            // Unreachable: `*` handles no method, so `answerUnhandled` answers it.
            throw Problem.methodNotAllowed(route.allowedMethods)
        }
    }

    private func ingest(_ rawQueue: String, _ request: HTTPRequest) throws -> HTTPResponse {
        let settings = dependencies.settings()
        let signatures = SignatureVerifier.headerNames.compactMap { request.headers[$0] }
        if let verifier = settings.signature {
            guard let header = signatures.first, verifier.verify(header: header, body: request.body) else {
                throw Problem(status: 401, slug: "bad-signature", title: "Unauthorized",
                    detail: "missing or wrong X-Stovepipe-Signature-256 (sha256=<hex HMAC-SHA256 of the body>)",
                    headers: [("WWW-Authenticate", "HMAC-SHA256")])
            }
        }
        if !request.body.isEmpty {
            guard (try? JSONSerialization.jsonObject(with: Data(request.body))) is [String: Any] else {
                throw Problem.badRequest("invalid-body", "the body must be empty or a JSON object")
            }
        }
        if let name = try? QueueName(rawQueue), !settings.isConfigured(name) {
            throw Problem(IngestError.unknownQueue(name))
        }
        let result: IngestResult
        do {
            result = try dependencies.ingest.ingest(
                queue: rawQueue, logMetadata: ["http.request_id": .string(request.requestID)])
        } catch {
            if case .unavailable(let detail) = error {
                // rawQueue is a configured queue here (the check above), so the line names a queue, never arbitrary text.
                logger.warning(
                    "ingest unavailable",
                    metadata: ["http.request_id": "\(request.requestID)", "queue": "\(rawQueue)", "error": "\(detail)"])
            }
            throw Problem(error)
        }
        var response = json(result.minted ? 202 : 200, IngestBody(request: result.request, deduplicated: !result.minted))
        if result.minted {
            response.headers.add("Location", "/requests/\(result.request.id)")
        }
        return response
    }

    private func getRequest(_ rawID: String, _ headers: HTTPHeaders, requestID: String) throws -> HTTPResponse {
        let id: RequestID
        do { id = try RequestID(parsing: rawID) } catch { throw Problem(error) }
        let found: Request
        do {
            found = try dependencies.requests.get(id)
        } catch {
            if case .unavailable(_, let detail) = error {
                // Any client can name any queue in an id: the line names it only if it is configured.
                let configured = dependencies.settings().isConfigured(id.queue)
                logUnavailable(
                    detail, route: .request, requestID: requestID, queue: configured ? id.queue : nil,
                    request: configured ? id : nil)
            }
            throw Problem(error, notFound: "no request '\(id)'")
        }
        return Self.conditional(found.jsonBytes, tag: ConditionalRead.tag(of: found), headers)
    }

    private func configuredQueue(_ rawName: String) throws -> QueueName {
        let name: QueueName
        do { name = try QueueName(rawName) } catch { throw Problem(error) }
        guard dependencies.settings().isConfigured(name) else { throw Problem(IngestError.unknownQueue(name)) }
        return name
    }

    private func getQueue(_ rawName: String, _ headers: HTTPHeaders, requestID: String) throws -> HTTPResponse {
        let name = try configuredQueue(rawName)
        let queue: Queue
        let version: UInt64
        do {
            queue = try dependencies.queues.get(name)
            version = queue.version
        } catch .notFound {
            // Configured but never ingested: the queue exists, with no request and no green commit yet, as its
            // request list (200, empty) says too. Version 0: the row ingest creates starts at 1.
            queue = Queue(name: name)
            version = 0
        } catch {
            if case .unavailable(_, let detail) = error {
                logUnavailable(detail, route: .queue, requestID: requestID, queue: name)
            }
            throw Problem(error, notFound: "queue '\(name)' not found")
        }
        return Self.conditional(QueueBody(queue).jsonBytes, tag: ConditionalRead.tag(ofQueueVersion: version), headers)
    }

    /// Logs a read that storage could not answer (answered 503) as ingest logs one: a warning with the HTTP request's
    /// id, the route template, a configured queue (and request id), and the error, whose detail carries no SQL values.
    private func logUnavailable(
        _ detail: String, route: RouteTemplate, requestID: String, queue: QueueName?, request: RequestID? = nil
    ) {
        var metadata: Logger.Metadata = [
            "http.request_id": "\(requestID)", "http.route": "\(route.label)", "error": "\(detail)",
        ]
        if let queue { metadata["queue"] = "\(queue)" }
        if let request { metadata["request.id"] = "\(request)" }
        logger.warning("storage unavailable", metadata: metadata)
    }

    /// A 200 of `body` with its strong `tag`, or 304 when `headers`' If-None-Match matches the tag (RFC 9110 §13.1.2).
    private static func conditional(_ body: @autoclosure () -> [UInt8], tag: EntityTag, _ headers: HTTPHeaders) -> HTTPResponse {
        if ConditionalRead.noneMatch(headers, matches: tag) {
            // RFC 9110 §15.4.5: no content, and the ETag the 200 would have had (Date comes from the server, Vary
            // from CORS); the client keeps the Content-Type it has.
            return HTTPResponse(status: 304, entityTag: tag)
        }
        // The tag goes as numbers, which the server writes: no text and no header list of its own per request.
        return HTTPResponse(status: 200, headers: jsonHeaders, body: body(), entityTag: tag)
    }

    private func listRequests(_ rawName: String, query: String, requestID: String) throws -> HTTPResponse {
        let name = try configuredQueue(rawName)
        guard let items = PercentDecoding.queryItems(query) else {
            throw Problem.badRequest("invalid-query", "the query has a malformed percent-escape")
        }
        var limit = Self.defaultPageSize
        if let text = items.first(where: { $0.0 == "limit" })?.1 {
            let digits = text.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
            guard digits, text.utf8.contains(where: { $0 != UInt8(ascii: "0") }) else {
                throw Problem.badRequest("invalid-limit", "limit must be a positive integer")
            }
            // A positive integer too large for Int is still a valid limit; it is capped like any other.
            limit = min(Int(text) ?? Self.maxPageSize, Self.maxPageSize)
        }
        var before: UInt64?
        if let text = items.first(where: { $0.0 == "cursor" })?.1 {
            guard let value = PageCursor.decode(text, queue: name) else {
                throw Problem.badRequest("invalid-cursor", "the cursor is not a page cursor of this queue's requests")
            }
            before = value
        }
        let page: [Request]
        do {
            // One extra row tells whether another page exists without a second query.
            page = try dependencies.requests.list(queue: name, before: before, limit: limit + 1)
        } catch {
            if case .unavailable(_, let detail) = error {
                // Not the query: its cursor and limit are the client's text.
                logUnavailable(detail, route: .queueRequests, requestID: requestID, queue: name)
            }
            throw Problem(error, notFound: "queue '\(name)' has no requests")
        }
        let shown = Array(page.prefix(limit))
        let next = page.count > limit ? shown.last.map { PageCursor.encode(queue: name, before: $0.id.number) } : nil
        return json(200, RequestPage(requests: shown, nextCursor: next))
    }

    private func readiness() -> HTTPResponse {
        var checks = dependencies.readiness()
        if dependencies.isDraining() {
            checks.append(ReadinessCheck(name: "shutdown", ok: false, detail: "the server is draining"))
        }
        let failing = checks.filter { !$0.ok }
        if failing.isEmpty {
            return json(200, ReadinessBody(status: "ready", checks: checks, problem: nil))
        }
        let problem = Problem.unavailable("not ready: " + failing.map { "\($0.name) (\($0.detail))" }.joined(separator: ", "))
        var response = json(503, ReadinessBody(status: "not ready", checks: checks, problem: problem))
        response.headers.set("Content-Type", "application/problem+json")
        response.headers.set("Retry-After", "1")
        return response
    }

    private func topics(_ names: [TopicName]) throws -> HTTPResponse {
        guard let broker = dependencies.broker else { return json(200, TopicsBody(topics: [])) }
        var stats: [TopicStats] = []
        for name in names {
            do {
                stats.append(try broker.stats(name))
            } catch {
                throw Problem(error, notFound: "no topic '\(name)'")
            }
        }
        return json(200, TopicsBody(topics: stats))
    }

    private func json(_ status: Int, _ body: some JSONBody) -> HTTPResponse {
        HTTPResponse(status: status, headers: Self.jsonHeaders, body: body.jsonBytes)
    }
}

/// The method label of the request metrics: methods outside the known set share `other`, so a
/// client cannot mint label values.
struct MethodLabel: Equatable {
    /// The position of the label in `labels`.
    let index: Int

    // The known set is the server's recognised methods: RFC 9110 §9.3's and PATCH (RFC 5789).
    static let labels = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other"]

    init(_ method: String) {
        index = switch method {
        case "GET": 0
        case "HEAD": 1
        case "POST": 2
        case "PUT": 3
        case "DELETE": 4
        case "PATCH": 5
        case "OPTIONS": 6
        case "CONNECT": 7
        case "TRACE": 8
        default: 9
        }
    }

    /// The label value.
    var text: String { Self.labels[index] }

    /// Whether the method is one the server recognises, whether or not any resource supports it.
    var isRecognised: Bool { index != Self.labels.count - 1 }
}

/// Per-route request counters and timers, made on first use and kept: asking the metrics factory for
/// a handle is a locked lookup that does not belong on every request. The label sets are bounded
/// (route templates, known methods, statuses), so the cache is too; it is indexed by numbers, not by
/// label text, so that a request hashes nothing.
private final class RequestMetrics: Sendable {
    /// One status's counter of one route and method.
    private struct StatusCounter {
        let status: Int
        let counter: Metrics.Counter
    }

    private struct Handles {
        /// By `slot(template:method:)`: the few statuses a route and method answered, found by a scan,
        /// which costs less than hashing a key.
        var counters = [[StatusCounter]](repeating: [], count: RouteTemplate.allCases.count * MethodLabel.labels.count)
        var timers = [Metrics.Timer?](repeating: nil, count: RouteTemplate.allCases.count)
    }

    private let handles = Mutex(Handles())

    private static func slot(template: RouteTemplate, method: MethodLabel) -> Int {
        template.rawValue * MethodLabel.labels.count + method.index
    }

    func record(template: RouteTemplate, method: MethodLabel, status: Int, nanoseconds: Int64) {
        let slot = Self.slot(template: template, method: method)
        let (counter, timer) = handles.withLock { handles in
            let counter: Metrics.Counter
            if let cached = handles.counters[slot].first(where: { $0.status == status }) {
                counter = cached.counter
            } else {
                counter = Metrics.Counter(
                    label: "stovepipe_http_requests_total",
                    dimensions: [("route", template.label), ("method", method.text), ("status", String(status))])
                handles.counters[slot].append(StatusCounter(status: status, counter: counter))
            }
            let timer: Metrics.Timer
            if let cached = handles.timers[template.rawValue] {
                timer = cached
            } else {
                timer = Metrics.Timer(label: "stovepipe_http_request_duration_seconds", dimensions: [("route", template.label)])
                handles.timers[template.rawValue] = timer
            }
            return (counter, timer)
        }
        counter.increment()
        timer.recordNanoseconds(nanoseconds)
    }
}
