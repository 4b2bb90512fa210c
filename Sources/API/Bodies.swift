import Domain
import Foundation

/// JSON encoding shared by every response: RFC 3339 UTC dates, stable key order.
enum JSONBodies {
    static func encode(_ value: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }
}

/// A request plus whether ingest found it already there.
struct IngestBody: Encodable {
    let request: Request
    let deduplicated: Bool

    private enum CodingKeys: String, CodingKey { case deduplicated }

    func encode(to encoder: any Encoder) throws {
        try request.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(deduplicated, forKey: .deduplicated)
    }
}

/// The queue as dashboards see it: absent values are null.
struct QueueBody: Encodable {
    let queue: Queue

    init(_ queue: Queue) { self.queue = queue }

    private enum CodingKeys: String, CodingKey {
        case name
        case latestRequestID = "latest_request_id"
        case lastGreenURI = "last_green_uri"
        case lastGreenRequestID = "last_green_request_id"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(queue.name, forKey: .name)
        try container.encode(queue.latestRequestID, forKey: .latestRequestID)
        try container.encode(queue.lastGreenURI, forKey: .lastGreenURI)
        try container.encode(queue.lastGreenRequestID, forKey: .lastGreenRequestID)
    }
}

/// One page of a queue's requests.
struct RequestPage: Encodable {
    let requests: [Request]
    let nextCursor: String?

    private enum CodingKeys: String, CodingKey {
        case requests
        case nextCursor = "next_cursor"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(requests, forKey: .requests)
        try container.encodeIfPresent(nextCursor, forKey: .nextCursor)
    }
}

/// `/readyz` when every check passes.
struct ReadinessBody: Encodable {
    let status: String
    let checks: [Check]

    struct Check: Encodable {
        let name: String
        let ok: Bool
        let detail: String
    }

    init(status: String, checks: [ReadinessCheck]) {
        self.status = status
        self.checks = checks.map { Check(name: $0.name, ok: $0.ok, detail: $0.detail) }
    }
}

/// One topic's operator view.
struct TopicBody: Encodable {
    let topic: String
    let backlog: Int
    let inFlight: Int
    let deadLetters: Int
    let oldestPendingAgeSeconds: Double?

    init(_ stats: TopicStats) {
        topic = stats.topic.rawValue
        backlog = stats.backlog
        inFlight = stats.inFlight
        deadLetters = stats.deadLetters
        oldestPendingAgeSeconds = stats.oldestPendingAgeSeconds
    }

    private enum CodingKeys: String, CodingKey {
        case topic, backlog
        case inFlight = "in_flight"
        case deadLetters = "dead_letters"
        case oldestPendingAgeSeconds = "oldest_pending_age_seconds"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(topic, forKey: .topic)
        try container.encode(backlog, forKey: .backlog)
        try container.encode(inFlight, forKey: .inFlight)
        try container.encode(deadLetters, forKey: .deadLetters)
        try container.encode(oldestPendingAgeSeconds, forKey: .oldestPendingAgeSeconds)
    }
}

/// Opaque page cursors: base64url of `v1 <queue> <before>`, checked against the queue on use.
enum PageCursor {
    static func encode(queue: QueueName, before: UInt64) -> String {
        Data("v1 \(queue.rawValue) \(before)".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ cursor: String, queue: QueueName) -> UInt64? {
        guard !cursor.isEmpty, cursor.count <= 512 else { return nil }
        var base64 = cursor.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64), let text = String(data: data, encoding: .utf8) else { return nil }
        let parts = text.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "v1", parts[1] == queue.rawValue,
            let before = UInt64(parts[2]), before > 0, String(before) == parts[2]
        else { return nil }
        return before
    }
}
