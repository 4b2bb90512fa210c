import API
import Backends
import Domain
import Foundation
import HTTPServer
import Testing

/// `ETag` and `If-None-Match` on the single-resource reads (RFC 9110 §8.8.3, §13.1.2, §15.4.5).
@Suite struct ConditionalGetTests {
    private static let requestPath = "/requests/request/demo/main/1"
    private static let queuePath = "/queues/demo/main"

    /// An API with one ingested request, and the strong tag its GET sends.
    private func ingested() throws -> (API, String) {
        let api = API()
        #expect(api.call("POST", "/queues/demo/main/ingest").status == 202)
        let response = api.call("GET", Self.requestPath)
        #expect(response.status == 200)
        let tag = try #require(response.etag)
        return (api, tag)
    }

    @Test func aRequestAndAQueueCarryAStrongTagOnGetAndHead() throws {
        let (api, tag) = try ingested()
        // RFC 9110 §8.8.3: a strong tag is a quoted string without the W/ prefix.
        #expect(tag.hasPrefix("\"") && tag.hasSuffix("\"") && tag.count >= 3, "\(tag)")
        #expect(api.call("HEAD", Self.requestPath).etag == tag)
        #expect(api.call("GET", Self.requestPath).etag == tag, "the same record, the same tag")
        let queue = api.call("GET", Self.queuePath)
        let queueTag = try #require(queue.etag)
        #expect(queueTag.hasPrefix("\"") && queueTag.hasSuffix("\""), "\(queueTag)")
        #expect(api.call("HEAD", Self.queuePath).etag == queueTag)
    }

    @Test(arguments: ["GET", "HEAD"])
    func aMatchingTagIs304WithTheTagAndNoBody(_ method: String) throws {
        let (api, tag) = try ingested()
        for condition in [tag, "W/\(tag)", "\"other\", \(tag)", "\"a\",,\t\(tag) ,", "*"] {
            let response = api.call(method, Self.requestPath, headers: [("If-None-Match", condition)])
            #expect(response.status == 304, "\(condition)")
            #expect(response.body.isEmpty, "\(condition)")
            #expect(response.etag == tag, "\(condition)")
        }
        // A list may come as several field lines (RFC 9110 §5.3).
        let split = api.call(method, Self.requestPath, headers: [("If-None-Match", "\"other\""), ("if-none-match", tag)])
        #expect(split.status == 304)
    }

    @Test func aTagThatDoesNotMatchGetsTheBody() throws {
        let (api, tag) = try ingested()
        let plain = api.call("GET", Self.requestPath)
        for condition in ["\"other\"", "W/\"other\", \"\"", String(tag.dropLast()) + "0\"", ""] {
            let response = api.call("GET", Self.requestPath, headers: [("If-None-Match", condition)])
            #expect(response.status == 200, "\(condition)")
            #expect(response.body == plain.body, "\(condition)")
            #expect(response.etag == tag, "\(condition)")
        }
    }

    /// A field that is not `*` or a list of entity tags is ignored, as if absent: the client gets the body.
    @Test func aMalformedConditionIsIgnored() throws {
        let (api, tag) = try ingested()
        let bare = String(tag.dropFirst().dropLast())
        for condition in [bare, "W/\(bare)", "\"unterminated", "*, \(tag)", "\(tag) *", "\(tag) x", "w/\(tag)", "\(tag)\"\"",
            "\"a\" \(tag)", "\"\u{7F}\", \(tag)"]
        {
            let response = api.call("GET", Self.requestPath, headers: [("If-None-Match", condition)])
            #expect(response.status == 200, "\(condition)")
            #expect(!response.body.isEmpty, "\(condition)")
        }
        // One malformed line makes the whole field malformed.
        let mixed = api.call("GET", Self.requestPath, headers: [("If-None-Match", tag), ("If-None-Match", "junk")])
        #expect(mixed.status == 200)
    }

    @Test func anUpdateChangesTheTag() throws {
        let (api, tag) = try ingested()
        let id = try RequestID(parsing: "request/demo/main/1")
        var request = try api.requests.get(id)
        request.state = .processing
        try api.requests.update(request, oldVersion: 1, newVersion: 2)
        let response = api.call("GET", Self.requestPath, headers: [("If-None-Match", tag)])
        #expect(response.status == 200)
        #expect(response.json["state"] as? String == "processing")
        let newTag = try #require(response.etag)
        #expect(newTag != tag)
        #expect(api.call("GET", Self.requestPath, headers: [("If-None-Match", newTag)]).status == 304)
    }

    /// In memory a restart starts the ids and versions again: the same id and version then name another commit's
    /// request, which must not pass for the one a dashboard cached.
    @Test func anotherRecordWithTheSameIdAndVersionHasAnotherTag() throws {
        let id = try RequestID(parsing: "request/demo/main/1")
        let created = Date(timeIntervalSince1970: 1_700_000_000)
        let first = API()
        try first.requests.create(Request(id: id, uri: SourceURI("git://demo/c1"), createdAt: created))
        let second = API()
        try second.requests.create(Request(id: id, uri: SourceURI("git://demo/c2"), createdAt: created + 60))
        let tag = try #require(first.call("GET", Self.requestPath).etag)
        let response = second.call("GET", Self.requestPath, headers: [("If-None-Match", tag)])
        #expect(response.status == 200)
        #expect(response.json["uri"] as? String == "git://demo/c2")
    }

    /// A configured queue never ingested is answered as an empty queue; the row ingest then creates is version 1,
    /// so the empty answer must not share that version's tag.
    @Test func aQueueNeverIngestedHasAnotherTagThanItsFirstRow() throws {
        let api = API()
        let empty = api.call("GET", Self.queuePath)
        #expect(empty.status == 200)
        let emptyTag = try #require(empty.etag)
        #expect(api.call("GET", Self.queuePath, headers: [("If-None-Match", emptyTag)]).status == 304)
        #expect(api.call("POST", "/queues/demo/main/ingest").status == 202)
        let response = api.call("GET", Self.queuePath, headers: [("If-None-Match", emptyTag)])
        #expect(response.status == 200)
        #expect(response.json["latest_request_id"] as? String == "request/demo/main/1")
        let tag = try #require(response.etag)
        #expect(tag != emptyTag)
        let notModified = api.call("HEAD", Self.queuePath, headers: [("If-None-Match", tag)])
        #expect(notModified.status == 304)
        #expect(notModified.etag == tag)
    }

    /// RFC 9110 §13.2.1: a condition is evaluated only where the answer would otherwise be 2xx; `*` matches only a
    /// current representation.
    @Test func errorsAreNotTurnedInto304() throws {
        let (api, _) = try ingested()
        let missing = api.call("GET", "/requests/request/demo/main/2", headers: [("If-None-Match", "*")])
        #expect(missing.status == 404)
        let unknown = api.call("GET", "/queues/nowhere", headers: [("If-None-Match", "*")])
        #expect(unknown.status == 404)
        let malformed = api.call("GET", "/requests/request/demo/main/01", headers: [("If-None-Match", "*")])
        #expect(malformed.status == 400)
    }

    /// Representations without a version (lists, health, topics) carry no tag and ignore the condition.
    @Test func otherReadsCarryNoTag() throws {
        let (api, _) = try ingested()
        for path in ["/queues/demo/main/requests", "/healthz", "/topics"] {
            let response = api.call("GET", path, headers: [("If-None-Match", "*")])
            #expect(response.status == 200, "\(path)")
            #expect(response.etag == nil, "\(path)")
        }
    }
}
