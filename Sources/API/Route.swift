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
    /// `*`, the server as a whole: the asterisk-form target, which the HTTP parser admits only with OPTIONS.
    case server

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
        case .server: .server
        }
    }

    /// The methods the route's handler answers; HEAD goes with GET. OPTIONS is answered apart, for every route.
    var handledMethods: [String] {
        switch self {
        case .ingest: ["POST"]
        case .server: []
        default: ["GET", "HEAD"]
        }
    }

    /// Whether the route's handler answers `method`, as `handledMethods.contains(method)` without building the list.
    func handles(_ method: String) -> Bool {
        switch self {
        case .ingest: method == "POST"
        case .server: false
        default: method == "GET" || method == "HEAD"
        }
    }

    /// The methods of the route's `Allow` field.
    var allowedMethods: [String] {
        switch self {
        // RFC 9110 §9.3.7: `OPTIONS *` asks about the server in general, so it lists what any route answers.
        case .server: ["GET", "HEAD", "POST", "OPTIONS"]
        // RFC 9110 §10.2.1: Allow lists every method the target supports, and every route answers OPTIONS.
        default: handledMethods + ["OPTIONS"]
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
        let matched = rawPath.utf8.withContiguousStorageIfAvailable { utf8 -> Result<Route, Failure>? in
            guard utf8.allSatisfy({ $0 < 0x80 }) else { return nil }
            return Result { () throws(Failure) in try match(ascii: utf8) }
        }
        if let matched = matched ?? nil { return try matched.get() }
        return try match(segments: PercentDecoding.rawSegments(rawPath))
    }

    /// Matches an ASCII path byte by byte, comparing segments with the routes' names as bytes.
    private static func match(ascii utf8: UnsafeBufferPointer<UInt8>) throws(Failure) -> Route {
        guard !utf8.isEmpty else { throw .notFound }
        let headStart = utf8[0] == UInt8(ascii: "/") ? 1 : 0
        let headEnd = utf8[headStart...].firstIndex(of: UInt8(ascii: "/")) ?? utf8.endIndex
        let head = UnsafeBufferPointer(rebasing: utf8[headStart..<headEnd])
        // `rest` is every segment after the head, still joined by `/`; nil when there is none.
        guard headEnd < utf8.endIndex else {
            if head.spells("healthz") { return .healthz }
            if head.spells("readyz") { return .readyz }
            if head.spells("metrics") { return .metrics }
            if head.spells("openapi.yaml") { return .openapi }
            if head.spells("topics") { return .topics }
            if headStart == 0, head.spells("*") { return .server }
            throw .notFound
        }
        let rest = UnsafeBufferPointer(rebasing: utf8[(headEnd + 1)...])
        if head.spells("requests") { return .request(id: try decoded(rest)) }
        if head.spells("topics") {
            guard !rest.contains(UInt8(ascii: "/")) else { throw .notFound }
            return .topic(try decoded(rest))
        }
        if head.spells("queues") {
            if let slash = rest.lastIndex(of: UInt8(ascii: "/")) {
                let last = UnsafeBufferPointer(rebasing: rest[(slash + 1)...])
                let queue = UnsafeBufferPointer(rebasing: rest[..<slash])
                if last.spells("ingest") { return .ingest(queue: try decoded(queue)) }
                if last.spells("requests") { return .queueRequests(queue: try decoded(queue)) }
            }
            return .queue(try decoded(rest))
        }
        throw .notFound
    }

    /// `/`-joined segments decoded at once: as no escape spans a `/` (it is no hex digit) and a `/`
    /// ends any UTF-8 sequence, this is decoding each segment and joining them with `/`.
    private static func decoded(_ segments: UnsafeBufferPointer<UInt8>) throws(Failure) -> String {
        guard let text = PercentDecoding.decode(segments) else { throw .malformedEscape }
        return text
    }

    /// Matches a path already split into raw segments; internal so that scripts/fuzz can check that it agrees
    /// with the byte-wise match on ASCII paths.
    static func match(segments raw: [Substring]) throws(Failure) -> Route {
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
    case server
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
        case .server: "*"
        case .unmatched: "unmatched"
        }
    }
}

extension UnsafeBufferPointer<UInt8> {
    /// Whether these bytes are exactly `word`'s UTF-8.
    fileprivate func spells(_ word: StaticString) -> Bool {
        count == word.utf8CodeUnitCount && word.withUTF8Buffer { elementsEqual($0) }
    }
}
