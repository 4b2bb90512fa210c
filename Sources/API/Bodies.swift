import Domain
import Foundation

/// A response body that writes itself as JSON, keys in sorted order.
protocol JSONBody {
    func write(to json: inout JSONWriter)
}

extension JSONBody {
    /// The body as UTF-8 JSON text.
    var jsonBytes: [UInt8] {
        var json = JSONWriter()
        write(to: &json)
        return json.bytes
    }
}

extension Request: JSONBody {
    func write(to json: inout JSONWriter) {
        json.beginObject()
        writeFields(to: &json, deduplicated: nil)
        json.endObject()
    }

    /// The wire shape of `Request.encode(to:)`, with `deduplicated` in its sorted place when given.
    fileprivate func writeFields(to json: inout JSONWriter, deduplicated: Bool?) {
        json.knownKey("base_uri")
        json.string(baseURI?.rawValue ?? "")
        json.knownKey("build_strategy")
        json.string(buildStrategy.rawValue)
        json.knownKey("created_at")
        json.date(createdAt)
        if let deduplicated {
            json.knownKey("deduplicated")
            json.bool(deduplicated)
        }
        json.knownKey("id")
        json.string(id)
        json.knownKey("queue")
        json.string(queue.rawValue)
        json.knownKey("state")
        json.string(state.rawValue)
        json.knownKey("updated_at")
        json.date(updatedAt)
        json.knownKey("uri")
        json.string(uri.rawValue)
        json.knownKey("version")
        json.integer(version)
    }
}

/// A request plus whether ingest found it already there.
struct IngestBody: JSONBody {
    let request: Request
    let deduplicated: Bool

    func write(to json: inout JSONWriter) {
        json.beginObject()
        request.writeFields(to: &json, deduplicated: deduplicated)
        json.endObject()
    }
}

/// The queue as dashboards see it: absent values are null.
struct QueueBody: JSONBody {
    let queue: Queue

    init(_ queue: Queue) { self.queue = queue }

    func write(to json: inout JSONWriter) {
        json.beginObject()
        json.knownKey("last_green_request_id")
        json.string(queue.lastGreenRequestID?.description)
        json.knownKey("last_green_uri")
        json.string(queue.lastGreenURI?.rawValue)
        json.knownKey("latest_request_id")
        json.string(queue.latestRequestID?.description)
        json.knownKey("name")
        json.string(queue.name.rawValue)
        json.endObject()
    }
}

/// One page of a queue's requests.
struct RequestPage: JSONBody {
    let requests: [Request]
    let nextCursor: String?

    func write(to json: inout JSONWriter) {
        json.beginObject()
        if let nextCursor {
            json.knownKey("next_cursor")
            json.string(nextCursor)
        }
        json.knownKey("requests")
        json.beginArray()
        for request in requests { request.write(to: &json) }
        json.endArray()
        json.endObject()
    }
}

/// `{"status": ...}` of `/healthz`.
struct StatusBody: JSONBody {
    let status: String

    func write(to json: inout JSONWriter) {
        json.beginObject()
        json.knownKey("status")
        json.string(status)
        json.endObject()
    }
}

/// `/readyz`: the overall status and every check; as a problem when one fails.
struct ReadinessBody: JSONBody {
    let status: String
    let checks: [ReadinessCheck]
    /// Set when not ready: the body is then an RFC 9457 problem with the checks as an extension member.
    let problem: Problem?

    func write(to json: inout JSONWriter) {
        json.beginObject()
        json.knownKey("checks")
        json.beginArray()
        for check in checks {
            json.beginObject()
            json.knownKey("detail")
            json.string(check.detail)
            json.knownKey("name")
            json.string(check.name)
            json.knownKey("ok")
            json.bool(check.ok)
            json.endObject()
        }
        json.endArray()
        if let problem {
            json.knownKey("detail")
            json.string(problem.detail)
            json.knownKey("status")
            json.integer(problem.status)
            json.knownKey("title")
            json.string(problem.title)
            json.knownKey("type")
            json.string(problem.typeURN)
        } else {
            json.knownKey("status")
            json.string(status)
        }
        json.endObject()
    }
}

/// The operator view of some topics.
struct TopicsBody: JSONBody {
    let topics: [TopicStats]

    func write(to json: inout JSONWriter) {
        json.beginObject()
        json.knownKey("topics")
        json.beginArray()
        for stats in topics {
            json.beginObject()
            json.knownKey("backlog")
            json.integer(stats.backlog)
            json.knownKey("dead_letters")
            json.integer(stats.deadLetters)
            json.knownKey("in_flight")
            json.integer(stats.inFlight)
            json.knownKey("oldest_pending_age_seconds")
            if let age = stats.oldestPendingAgeSeconds { json.number(age) } else { json.null() }
            json.knownKey("topic")
            json.string(stats.topic.rawValue)
            json.endObject()
        }
        json.endArray()
        json.endObject()
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
