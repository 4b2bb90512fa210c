import Domain
import Foundation

/// A response body that writes itself as JSON, keys in sorted order.
protocol JSONBody {
    func write(to json: inout JSONWriter)
    /// The body as UTF-8 JSON text.
    var jsonBytes: [UInt8] { get }
}

extension JSONBody {
    /// The body as UTF-8 JSON text, written through a `JSONWriter`.
    var jsonBytes: [UInt8] {
        var json = JSONWriter()
        write(to: &json)
        return json.bytes
    }
}

extension Request: JSONBody {
    func write(to json: inout JSONWriter) {
        json.rawValue(jsonObjectBytes(deduplicated: nil))
    }

    /// The body of `GET /requests/{id}`, written straight into an array of its length.
    var jsonBytes: [UInt8] { jsonObjectBytes(deduplicated: nil) }

    /// The wire shape of `Request.encode(to:)` as one JSON object, with `deduplicated` in its sorted place when given.
    fileprivate func jsonObjectBytes(deduplicated: Bool?) -> [UInt8] {
        let base = baseURI?.rawValue ?? ""
        let queueName = queue.rawValue
        let idOpening: StaticString =
            switch deduplicated {
            case nil: #"","id":"request/"#
            case true?: #"","deduplicated":true,"id":"request/"#
            case false?: #"","deduplicated":false,"id":"request/"#
            }
        // Exact unless a URI needs escaping or a date lies outside 1970-9999; then a second pass writes
        // into the length the first one found it needed.
        let length = Self.fixedLength + idOpening.utf8CodeUnitCount + base.utf8.count + buildStrategy.rawValue.utf8.count
            + 2 * RFC3339.wholeSecondLength + 2 * queueName.utf8.count + FixedByteWriter.decimalLength(id.number)
            + state.rawValue.utf8.count + uri.rawValue.utf8.count + FixedByteWriter.decimalLength(version)
        return FixedByteWriter.bytes(capacity: length) { cursor in
            cursor.write(Self.baseURIOpening)
            cursor.writeEscaped(base)
            cursor.write(Self.buildStrategyOpening)
            // Enum raw values and validated queue names are printable ASCII without `"` or `\`: nothing to escape.
            cursor.write(buildStrategy.rawValue)
            cursor.write(Self.createdAtOpening)
            cursor.writeTimestamp(createdAt)
            cursor.write(idOpening)
            cursor.write(queueName)
            cursor.write(Self.numberOpening)
            cursor.writeDecimal(id.number)
            cursor.write(Self.queueOpening)
            cursor.write(queueName)
            cursor.write(Self.stateOpening)
            cursor.write(state.rawValue)
            cursor.write(Self.updatedAtOpening)
            cursor.writeTimestamp(updatedAt)
            cursor.write(Self.uriOpening)
            cursor.writeEscaped(uri.rawValue)
            cursor.write(Self.versionOpening)
            cursor.writeDecimal(version)
            cursor.write(Self.closing)
        }
    }

    private static let baseURIOpening: StaticString = #"{"base_uri":""#
    private static let buildStrategyOpening: StaticString = #"","build_strategy":""#
    private static let createdAtOpening: StaticString = #"","created_at":""#
    private static let numberOpening: StaticString = "/"
    private static let queueOpening: StaticString = #"","queue":""#
    private static let stateOpening: StaticString = #"","state":""#
    private static let updatedAtOpening: StaticString = #"","updated_at":""#
    private static let uriOpening: StaticString = #"","uri":""#
    private static let versionOpening: StaticString = #"","version":"#
    private static let closing: StaticString = "}"

    /// The bytes of the object besides the field values and the id's opening.
    private static let fixedLength = [
        baseURIOpening, buildStrategyOpening, createdAtOpening, numberOpening, queueOpening, stateOpening,
        updatedAtOpening, uriOpening, versionOpening, closing,
    ].reduce(0) { $0 + $1.utf8CodeUnitCount }
}

extension FixedByteWriter {
    /// Writes `date` as `JSONWriter.date` writes it, without its quotes.
    mutating func writeTimestamp(_ date: Date) {
        guard let seconds = RFC3339.fastWholeSeconds(date) else {
            var text: [UInt8] = []
            RFC3339.append(date, fractionDigits: 0, to: &text)
            text.withUnsafeBufferPointer { write($0) }
            return
        }
        guard let destination = claim(RFC3339.wholeSecondLength) else { return }
        RFC3339.writeWholeSeconds(seconds, to: destination)
    }
}

/// A request plus whether ingest found it already there.
struct IngestBody: JSONBody {
    let request: Request
    let deduplicated: Bool

    func write(to json: inout JSONWriter) {
        json.rawValue(request.jsonObjectBytes(deduplicated: deduplicated))
    }

    /// The body of an ingest answer, written straight into an array of its length.
    var jsonBytes: [UInt8] { request.jsonObjectBytes(deduplicated: deduplicated) }
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

/// Opaque page cursors: base64url of `v2 <queue> <before> .`, checked against the queue on use.
enum PageCursor {
    static func encode(queue: QueueName, before: UInt64) -> String {
        // The closing field makes a cursor cut short invalid. Without it (v1) a cut that ended on a byte within the
        // number read as an earlier request's cursor (123 as 12 or 1): a page that skipped requests, or an empty
        // last page, for what the README promises is a 400.
        Data("v2 \(queue.rawValue) \(before) .".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ cursor: String, queue: QueueName) -> UInt64? {
        guard !cursor.isEmpty, cursor.count <= 512 else { return nil }
        var base64 = cursor.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64), let text = String(data: data, encoding: .utf8) else { return nil }
        let parts = text.split(separator: " ", omittingEmptySubsequences: false)
        switch parts.count {
        case 4 where parts[0] == "v2" && parts[3] == ".": break
        // v1 cursors, which replicas not yet upgraded still hand out, are read as before.
        case 3 where parts[0] == "v1": break
        default: return nil
        }
        guard parts[1] == queue.rawValue, let before = UInt64(parts[2]), before > 0, String(before) == parts[2]
        else { return nil }
        return before
    }
}
