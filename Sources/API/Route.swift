/// The endpoints of the API, matched on the undecoded path so that `%2F` inside one segment
/// (`/queues/monorepo%2Fmain`) and raw segments (`/queues/monorepo/main`) both address a queue.
enum Route: Equatable {
    case ingest(queue: String)
    case request(id: String)
    case queue(String)
    case queueRequests(queue: String)
    case healthz
    case readyz
    case metrics
    case openapi
    case topics
    case topic(String)

    /// The template used as the metrics label and in logs: bounded, never a raw path.
    var template: RouteTemplate {
        switch self {
        case .ingest: .ingest
        case .request: .request
        case .queue: .queue
        case .queueRequests: .queueRequests
        case .healthz: .healthz
        case .readyz: .readyz
        case .metrics: .metrics
        case .openapi: .openapi
        case .topics: .topics
        case .topic: .topic
        }
    }

    /// The methods the route answers; HEAD goes with GET.
    var methods: [String] {
        switch self {
        case .ingest: ["POST"]
        default: ["GET", "HEAD"]
        }
    }

    /// Whether the route answers `method`, as `methods.contains(method)` without building the list.
    func allows(_ method: String) -> Bool {
        switch self {
        case .ingest: method == "POST"
        default: method == "GET" || method == "HEAD"
        }
    }

    /// Why a path cannot be routed.
    enum Failure: Error, Equatable {
        case notFound
        case malformedEscape
    }

    /// Matches a raw path such as `/queues/a%2Fb/ingest`.
    static func match(rawPath: String) throws(Failure) -> Route {
        // The HTTP parser lets only ASCII through (RFC 9112 §3.2); any other text takes the
        // Character-wise split, where a `/` followed by a combining mark is no separator.
        let isASCII = rawPath.utf8.withContiguousStorageIfAvailable { $0.allSatisfy { $0 < 0x80 } }
            ?? rawPath.utf8.allSatisfy { $0 < 0x80 }
        guard isASCII else { return try match(segments: PercentDecoding.rawSegments(rawPath)) }
        let utf8 = rawPath.utf8
        guard !utf8.isEmpty else { throw .notFound }
        var headStart = utf8.startIndex
        if utf8[headStart] == UInt8(ascii: "/") { headStart = utf8.index(after: headStart) }
        let headEnd = utf8[headStart...].firstIndex(of: UInt8(ascii: "/")) ?? utf8.endIndex
        let head = rawPath[headStart..<headEnd]
        // `rest` is every segment after the head, still joined by `/`; nil when there is none.
        let rest = headEnd == utf8.endIndex ? nil : rawPath[utf8.index(after: headEnd)...]
        switch head {
        case "healthz" where rest == nil: return .healthz
        case "readyz" where rest == nil: return .readyz
        case "metrics" where rest == nil: return .metrics
        case "openapi.yaml" where rest == nil: return .openapi
        case "topics" where rest == nil: return .topics
        case "topics":
            guard let rest, !rest.utf8.contains(UInt8(ascii: "/")) else { throw .notFound }
            return .topic(try decoded(rest))
        case "requests":
            guard let rest else { throw .notFound }
            return .request(id: try decoded(rest))
        case "queues":
            guard let rest else { throw .notFound }
            if let slash = rest.utf8.lastIndex(of: UInt8(ascii: "/")) {
                let last = rest[rest.utf8.index(after: slash)...]
                if last == "ingest" { return .ingest(queue: try decoded(rest[..<slash])) }
                if last == "requests" { return .queueRequests(queue: try decoded(rest[..<slash])) }
            }
            return .queue(try decoded(rest))
        default:
            throw .notFound
        }
    }

    /// `/`-joined segments decoded at once: as no escape spans a `/` (it is no hex digit) and a `/`
    /// ends any UTF-8 sequence, this is decoding each segment and joining them with `/`.
    private static func decoded(_ segments: Substring) throws(Failure) -> String {
        guard let text = PercentDecoding.decode(segments) else { throw .malformedEscape }
        return text
    }

    /// Matches a path already split into raw segments.
    private static func match(segments raw: [Substring]) throws(Failure) -> Route {
        guard let head = raw.first else { throw .notFound }
        let rest = raw.dropFirst()
        switch head {
        case "healthz" where rest.isEmpty: return .healthz
        case "readyz" where rest.isEmpty: return .readyz
        case "metrics" where rest.isEmpty: return .metrics
        case "openapi.yaml" where rest.isEmpty: return .openapi
        case "topics" where rest.isEmpty: return .topics
        case "topics" where rest.count == 1: return .topic(try joined(rest))
        case "requests" where !rest.isEmpty: return .request(id: try joined(rest))
        case "queues" where !rest.isEmpty:
            if rest.count >= 2, rest.last == "ingest" { return .ingest(queue: try joined(rest.dropLast())) }
            if rest.count >= 2, rest.last == "requests" { return .queueRequests(queue: try joined(rest.dropLast())) }
            return .queue(try joined(rest))
        default:
            throw .notFound
        }
    }

    private static func joined(_ segments: ArraySlice<Substring>) throws(Failure) -> String {
        var joined = ""
        for (index, segment) in segments.enumerated() {
            guard let text = PercentDecoding.decode(segment) else { throw .malformedEscape }
            if index > 0 { joined.append("/") }
            joined.append(text)
        }
        return joined
    }
}

/// A route's template (or `unmatched`), numbered so that per-route state can live in an array.
enum RouteTemplate: Int, CaseIterable {
    case ingest
    case request
    case queue
    case queueRequests
    case healthz
    case readyz
    case metrics
    case openapi
    case topics
    case topic
    case unmatched

    /// The text used as the metrics label and in logs.
    var label: String {
        switch self {
        case .ingest: "/queues/{queue}/ingest"
        case .request: "/requests/{id}"
        case .queue: "/queues/{queue}"
        case .queueRequests: "/queues/{queue}/requests"
        case .healthz: "/healthz"
        case .readyz: "/readyz"
        case .metrics: "/metrics"
        case .openapi: "/openapi.yaml"
        case .topics: "/topics"
        case .topic: "/topics/{topic}"
        case .unmatched: "unmatched"
        }
    }
}
