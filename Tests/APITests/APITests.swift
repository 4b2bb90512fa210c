import API
import Backends
import Domain
import Foundation
import HTTPServer
import Logging
import Synchronization
import Testing

/// A SourceControl with a settable head, for queues `demo/main` and `q`.
final class MovableSource: SourceControl, SourceControlFactory {
    let head = Mutex<SourceURI?>(SourceURI("git://demo/c1"))
    let failure = Mutex<BackendError?>(nil)

    func latest() throws(BackendError) -> SourceURI {
        if let error = failure.withLock({ $0 }) { throw error }
        guard let head = head.withLock({ $0 }) else { throw .notFound }
        return head
    }

    func isAncestor(_ ancestor: SourceURI, of descendant: SourceURI) throws(BackendError) -> Bool { true }

    func history(cursor: String, limit: Int) throws(BackendError) -> HistoryPage { HistoryPage(uris: [], nextCursor: "") }

    func sourceControl(for queue: QueueName) throws(BackendError) -> any SourceControl {
        guard Self.configured.contains(queue.rawValue) else { throw .notFound }
        return self
    }

    static let configured: Set<String> = ["demo/main", "q"]
}

final class Flag: Sendable {
    private let value: Mutex<Bool>
    init(_ value: Bool) { self.value = Mutex(value) }
    func set(_ new: Bool) { value.withLock { $0 = new } }
    var isSet: Bool { value.withLock { $0 } }
}

final class NullPublisher: TopicPublisher {
    let count = Mutex(0)
    func publish(_ message: Message) throws(BackendError) { count.withLock { $0 += 1 } }
}

struct API {
    let source = MovableSource()
    let requests = MemoryRequestStore()
    let queues = MemoryQueueStore()
    let publisher = NullPublisher()
    let responder: APIResponder
    let draining = Flag(false)
    let ready = Flag(true)

    /// With `logs`, the responder's own lines (not the controllers') are kept there.
    init(secret: String? = nil, cors: CORSPolicy? = nil, logs: CapturingLogs? = nil) {
        let settings = ReloadableSettings(
            isConfigured: { MovableSource.configured.contains($0.rawValue) },
            signature: secret.map { SignatureVerifier(secret: Array($0.utf8)) })
        self.init(settings: { settings }, cors: cors, logs: logs)
    }

    /// With the reloadable settings read from `settings` on every request.
    init(settings: @escaping @Sendable () -> ReloadableSettings, cors: CORSPolicy? = nil, logs: CapturingLogs? = nil) {
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let ingest = IngestController(
            requests: requests, uris: MemoryRequestURIStore(), queues: queues, counter: MemoryCounter(), sources: source,
            publisher: publisher, logger: logger)
        let (draining, ready) = (self.draining, self.ready)
        responder = APIResponder(
            dependencies: APIDependencies(
                ingest: ingest, requests: requests, queues: queues, settings: settings,
                readiness: { [ReadinessCheck(name: "database", ok: ready.isSet, detail: "down")] },
                isDraining: { draining.isSet },
                metrics: { Array("# metrics\n".utf8) }, cors: cors),
            logger: logs.map { logs in Logger(label: "test", factory: { _ in logs.handler }) } ?? logger)
    }

    func call(_ method: String, _ target: String, body: String = "", headers: [(String, String)] = []) -> HTTPResponse {
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let rawPath = String(parts[0])
        let request = HTTPRequest(
            method: method, target: target, path: rawPath.removingPercentEncoding ?? rawPath, rawPath: rawPath,
            query: parts.count > 1 ? String(parts[1]) : "", headers: HTTPHeaders(headers), body: Array(body.utf8))
        let response = responder.respond(to: request)
        // As the server does once the response is sent.
        response.afterSend?()
        return response
    }
}

extension HTTPResponse {
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
    }

    var contentType: String? { headers["Content-Type"] }

    /// The `ETag` the server writes for this response.
    var etag: String? { entityTag?.text }

    /// Checks the problem+json shape and returns the problem's type URN.
    func problemType(sourceLocation: SourceLocation = #_sourceLocation) -> String? {
        #expect(contentType == "application/problem+json", sourceLocation: sourceLocation)
        let object = json
        #expect(object["status"] as? Int == status, sourceLocation: sourceLocation)
        #expect(object["title"] is String, sourceLocation: sourceLocation)
        #expect(object["detail"] is String, sourceLocation: sourceLocation)
        return object["type"] as? String
    }
}

@Suite struct IngestRouteTests {
    @Test func mintsThenDeduplicates() {
        let api = API()
        let first = api.call("POST", "/queues/demo/main/ingest")
        #expect(first.status == 202)
        #expect(first.headers["Location"] == "/requests/request/demo/main/1")
        #expect(first.json["id"] as? String == "request/demo/main/1")
        #expect(first.json["deduplicated"] as? Bool == false)
        #expect(first.json["state"] as? String == "accepted")
        #expect(first.json["queue"] as? String == "demo/main")
        #expect(first.json["uri"] as? String == "git://demo/c1")
        #expect(first.json["build_strategy"] as? String == "")
        #expect(first.json["base_uri"] as? String == "")
        #expect(first.json["version"] as? Int == 1)
        #expect((first.json["created_at"] as? String)?.hasSuffix("Z") == true)
        let second = api.call("POST", "/queues/demo%2Fmain/ingest", body: #"{"ref": "refs/heads/main"}"#)
        #expect(second.status == 200)
        #expect(second.headers["Location"] == nil)
        #expect(second.json["id"] as? String == "request/demo/main/1")
        #expect(second.json["deduplicated"] as? Bool == true)
    }

    @Test(arguments: ["[]", "\"x\"", "12", "not json", "{"])
    func nonObjectBodiesAreRejected(_ body: String) {
        let api = API()
        let response = api.call("POST", "/queues/demo/main/ingest", body: body)
        #expect(response.status == 400)
        #expect(response.problemType() == "urn:stovepipe:problem:invalid-body")
        #expect(api.publisher.count.withLock { $0 } == 0)
    }

    @Test(arguments: ["/queues/a%2F%2Fb/ingest", "/queues/a%20b/ingest", "/queues/..%2Fa/ingest", "/queues/a/../b/ingest"])
    func invalidQueueNamesAre400(_ path: String) {
        let response = API().call("POST", path)
        #expect(response.status == 400)
        #expect(response.problemType() == "urn:stovepipe:problem:invalid-queue-name")
    }

    @Test func unconfiguredQueueIs404() {
        let response = API().call("POST", "/queues/other/main/ingest")
        #expect(response.status == 404)
        #expect(response.problemType() == "urn:stovepipe:problem:unknown-queue")
    }

    @Test func unavailableSourceControlIs503WithRetryAfter() {
        let api = API()
        api.source.failure.withLock { $0 = .unavailable(retryable: true, detail: "SELECT secret FROM x") }
        let response = api.call("POST", "/queues/demo/main/ingest")
        #expect(response.status == 503)
        #expect(response.headers["Retry-After"] == "1")
        #expect(response.problemType() == "urn:stovepipe:problem:unavailable")
        #expect(!String(decoding: response.body, as: UTF8.self).contains("SELECT"))
    }

    @Test func unavailableIngestLogsOneWarningNamingItsQueueAndHTTPRequest() throws {
        let logs = CapturingLogs()
        let api = API(logs: logs)
        api.source.failure.withLock { $0 = .unavailable(retryable: true, detail: "git fetch exited with status 128") }
        let response = api.call("POST", "/queues/demo/main/ingest")
        #expect(response.status == 503)
        let warnings = logs.events.withLock { $0 }.filter { $0.message == "ingest unavailable" }
        #expect(warnings.count == 1)
        let warning = try #require(warnings.first)
        // The access line names the route template only: without the queue, nothing says whose source failed.
        #expect(warning.metadata["queue"] == "demo/main")
        #expect(warning.metadata["http.request_id"] != nil)
    }

    @Test func signatureIsRequiredWhenASecretIsSet() {
        let api = API(secret: "s3cret")
        let body = #"{"after": "abc"}"#
        let good = SignatureVerifier(secret: Array("s3cret".utf8)).signature(for: Array(body.utf8))
        #expect(good.count == 7 + 64)
        #expect(api.call("POST", "/queues/demo/main/ingest", body: body).status == 401)
        #expect(api.call("POST", "/queues/demo/main/ingest", body: body, headers: [("X-Stovepipe-Signature-256", "sha256=" + String(repeating: "0", count: 64))]).status == 401)
        #expect(api.call("POST", "/queues/demo/main/ingest", body: body + " ", headers: [("X-Stovepipe-Signature-256", good)]).status == 401)
        let refused = api.call("POST", "/queues/demo/main/ingest", body: body, headers: [("X-Stovepipe-Signature-256", "sha256=zz")])
        #expect(refused.problemType() == "urn:stovepipe:problem:bad-signature")
        #expect(!String(decoding: refused.body, as: UTF8.self).contains("s3cret"))
        #expect(api.publisher.count.withLock { $0 } == 0)
        #expect(api.call("POST", "/queues/demo/main/ingest", body: body, headers: [("X-Stovepipe-Signature-256", good)]).status == 202)
        #expect(api.call("POST", "/queues/demo/main/ingest", body: body, headers: [("X-Hub-Signature-256", good.uppercased().replacingOccurrences(of: "SHA256=", with: "sha256="))]).status == 200)
    }

    @Test func knownHMACVector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let verifier = SignatureVerifier(secret: Array("Jefe".utf8))
        #expect(verifier.signature(for: Array("what do ya want for nothing?".utf8))
            == "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    /// During a rotation both secrets sign: each is checked, and only a whole HMAC by one of them passes.
    @Test func aVerifierOfSeveralSecretsAcceptsASignatureByAnyOfThem() {
        let body = Array(#"{"after": "abc"}"#.utf8)
        let (old, new) = (Array("old-secret".utf8), Array("new-secret".utf8))
        let both = SignatureVerifier(secrets: [old, new])
        #expect(both.secretCount == 2)
        #expect(both.verify(header: SignatureVerifier(secret: old).signature(for: body), body: body))
        #expect(both.verify(header: SignatureVerifier(secret: new).signature(for: body), body: body))
        #expect(!both.verify(header: SignatureVerifier(secret: Array("other".utf8)).signature(for: body), body: body))
        #expect(!both.verify(header: SignatureVerifier(secret: old + [10] + new).signature(for: body), body: body))
        #expect(!both.verify(header: nil, body: body))
        #expect(both.signature(for: body) == SignatureVerifier(secret: old).signature(for: body), "signs with the first")
        #expect(SignatureVerifier(secrets: [old, old]).secretCount == 1, "a secret given twice is checked once")
    }

    /// A request reads the reloadable settings once: one whose ingest straddles a reload is signed and routed by the
    /// same configuration, never the secret of one and the queues of the other.
    @Test func anIngestReadsTheReloadableSettingsOnce() {
        let reads = Mutex(0)
        let first = ReloadableSettings(
            isConfigured: { $0.rawValue == "demo/main" }, signature: SignatureVerifier(secret: Array("first".utf8)))
        let second = ReloadableSettings(isConfigured: { _ in false }, signature: SignatureVerifier(secret: Array("second".utf8)))
        let api = API(settings: {
            reads.withLock { count in
                count += 1
                return count % 2 == 1 ? first : second
            }
        })
        let body = "{}"
        let signature = SignatureVerifier(secret: Array("first".utf8)).signature(for: Array(body.utf8))
        let response = api.call("POST", "/queues/demo/main/ingest", body: body, headers: [("X-Stovepipe-Signature-256", signature)])
        #expect(response.status == 202, "\(String(decoding: response.body, as: UTF8.self))")
        #expect(reads.withLock { $0 } == 1)
    }

    @Test func wrongMethodIs405WithAllow() {
        let response = API().call("GET", "/queues/demo/main/ingest")
        #expect(response.status == 405)
        #expect(response.headers["Allow"] == "POST, OPTIONS")
        #expect(response.problemType() == "urn:stovepipe:problem:method-not-allowed")
    }
}

@Suite struct MethodTests {
    @Test(arguments: ["FOO", "get", "PROPFIND"])
    func unrecognisedMethodIs501OnAnyPath(_ method: String) {
        let api = API()
        for path in ["/healthz", "/requests/request/demo/main/1", "/queues/demo/main/ingest", "/nope", "/requests/a%2", "*"] {
            let response = api.call(method, path)
            #expect(response.status == 501, "\(method) \(path)")
            #expect(response.problemType() == "urn:stovepipe:problem:not-implemented", "\(method) \(path)")
            #expect(response.headers["Allow"] == nil, "\(method) \(path)")
        }
        #expect(api.publisher.count.withLock { $0 } == 0)
    }

    @Test(arguments: [
        ("DELETE", "/requests/request/demo/main/1", "GET, HEAD, OPTIONS"),
        ("PUT", "/queues/demo/main", "GET, HEAD, OPTIONS"),
        ("TRACE", "/healthz", "GET, HEAD, OPTIONS"),
        ("CONNECT", "/metrics", "GET, HEAD, OPTIONS"),
        ("PATCH", "/queues/demo/main/ingest", "POST, OPTIONS"),
        ("GET", "/queues/demo/main/ingest", "POST, OPTIONS"),
    ])
    func recognisedMethodTheRouteLacksIs405WithAllowIncludingOptions(_ method: String, _ path: String, _ allow: String) {
        let response = API().call(method, path)
        #expect(response.status == 405)
        #expect(response.headers["Allow"] == allow)
        #expect(response.problemType() == "urn:stovepipe:problem:method-not-allowed")
    }

    @Test func problemDetailsEchoOnlyABoundedPrefixOfAMethodOrTopicName() {
        let api = API()
        // As long as the request line allows (8 KiB by default, more when an operator raises it).
        let method = String(repeating: "X", count: 8000)
        let topic = String(repeating: "%01", count: 2600)
        for response in [api.call(method, "/healthz"), api.call("GET", "/topics/\(topic)")] {
            _ = response.problemType()
            let detail = response.json["detail"] as? String ?? ""
            #expect(detail.utf8.count <= 200, "\(response.status): \(detail.utf8.count) bytes of detail")
            #expect(response.body.count <= 600, "\(response.status): \(response.body.count) bytes of body")
        }
        #expect((api.call(method, "/healthz").json["detail"] as? String)?.contains("XXXXXXXX…") == true)
        #expect(api.call("BREW", "/healthz").json["detail"] as? String == "the server does not recognise the method 'BREW'")
        #expect(api.call("GET", "/topics/x%22y").json["detail"] as? String == "no topic 'x\"y'")
    }

    @Test func recognisedMethodOnAnUnknownPathIs404() {
        for method in ["DELETE", "OPTIONS", "TRACE"] {
            let response = API().call(method, "/nope")
            #expect(response.status == 404, "\(method)")
            #expect(response.problemType() == "urn:stovepipe:problem:not-found", "\(method)")
        }
    }

    @Test(arguments: [
        ("/requests/request/demo/main/1", "GET, HEAD, OPTIONS"),
        ("/queues/demo/main/ingest", "POST, OPTIONS"),
        ("/queues/demo%2Fmain/requests", "GET, HEAD, OPTIONS"),
        ("/healthz", "GET, HEAD, OPTIONS"),
        ("/readyz", "GET, HEAD, OPTIONS"),
        ("/metrics", "GET, HEAD, OPTIONS"),
        ("*", "GET, HEAD, POST, OPTIONS"),
    ])
    func optionsIs204WithTheAllowedMethodsAndNoBody(_ path: String, _ allow: String) {
        let api = API()
        let response = api.call("OPTIONS", path)
        #expect(response.status == 204)
        #expect(response.headers["Allow"] == allow)
        #expect(response.body.isEmpty)
        #expect(response.contentType == nil)
        // OPTIONS only describes the target: it neither ingests nor reads.
        #expect(api.publisher.count.withLock { $0 } == 0)
    }
}

@Suite struct ReadRouteTests {
    @Test func requestByEitherSpelling() {
        let api = API()
        _ = api.call("POST", "/queues/demo/main/ingest")
        for path in ["/requests/request/demo/main/1", "/requests/request%2Fdemo%2Fmain%2F1"] {
            let response = api.call("GET", path)
            #expect(response.status == 200)
            #expect(response.contentType == "application/json")
            #expect(response.json["id"] as? String == "request/demo/main/1")
        }
        #expect(api.call("GET", "/requests/request/demo/main/2").status == 404)
        #expect(api.call("GET", "/requests/request/demo/main/2").problemType() == "urn:stovepipe:problem:not-found")
        for bad in ["/requests/request/demo/main/01", "/requests/nope", "/requests/request/demo/main/x", "/requests/request%2"] {
            #expect(api.call("GET", bad).status == 400, "\(bad)")
        }
        #expect(api.call("POST", "/requests/request/demo/main/1").status == 405)
    }

    @Test func requestNumbersRunToTheUnsignedCounterMaximumInTheServerAndInTheSpec() throws {
        let api = API()
        let largest = "request/demo/main/\(UInt64.max)"
        let beyond = "request/demo/main/18446744073709551616"
        let malformed = api.call("GET", "/requests/request/demo/main/x")
        // The counter is BIGINT UNSIGNED, so every UInt64 is an id that may exist: absent, it is not found.
        #expect(api.call("GET", "/requests/\(largest)").status == 404)
        #expect(api.call("GET", "/requests/\(largest)").problemType() == "urn:stovepipe:problem:not-found")
        #expect(api.call("GET", "/requests/\(beyond)").status == malformed.status)
        #expect(api.call("GET", "/requests/\(beyond)").problemType() == malformed.problemType())

        // openapi.yaml, as served, draws the same line: the fuzzer sends what its pattern allows and expects no 400.
        let spec = String(decoding: api.call("GET", "/openapi.yaml").body, as: UTF8.self)
        let line = try #require(spec.split(separator: "\n").first { $0.contains("pattern: '^request/") })
        let quoted = line.split(separator: "'", omittingEmptySubsequences: false)
        let pattern = try NSRegularExpression(pattern: String(try #require(quoted.dropFirst().first)))
        func allowed(_ id: String) -> Bool {
            pattern.firstMatch(in: id, range: NSRange(id.startIndex..., in: id)) != nil
        }
        #expect(allowed("request/demo/main/1"))
        #expect(allowed(largest))
        #expect(allowed("request/demo/main/\(UInt64.max - 1)"))
        #expect(!allowed(beyond))
        #expect(!allowed("request/demo/main/99999999999999999999"))
        #expect(!allowed("request/demo/main/01"))
    }

    @Test func theSpecsRequestIDPatternHoldsTheQueuePartToTheQueueNameLimit() throws {
        let api = API()
        let spec = String(decoding: api.call("GET", "/openapi.yaml").body, as: UTF8.self)
        let line = try #require(spec.split(separator: "\n").first { $0.contains("pattern: '^request/") })
        let pattern = try NSRegularExpression(pattern: String(try #require(line.split(separator: "'").dropFirst().first)))
        func allowed(_ id: String) -> Bool {
            pattern.firstMatch(in: id, range: NSRange(id.startIndex..., in: id)) != nil
        }
        // Both within the spec's maxLength of 229; only the queue part's length differs.
        let longest = "request/" + String(repeating: "a", count: QueueName.maxLength) + "/1"
        let tooLong = "request/" + String(repeating: "a", count: QueueName.maxLength + 1) + "/1"
        let split = "request/" + String(repeating: "a", count: 100) + "/" + String(repeating: "b", count: 99) + "/1"
        #expect(api.call("GET", "/requests/\(longest)").status == 404)
        #expect(api.call("GET", "/requests/\(split)").status == 404)
        #expect(api.call("GET", "/requests/\(tooLong)").status == 400)
        #expect(allowed(longest))
        #expect(allowed(split))
        #expect(!allowed(tooLong), "the spec admits an id the server refuses as malformed")
    }

    @Test func queueView() {
        let api = API()
        // Configured, never ingested: the queue, with nothing in it yet.
        let fresh = api.call("GET", "/queues/demo/main")
        #expect(fresh.status == 200)
        #expect(fresh.json["name"] as? String == "demo/main")
        for key in ["latest_request_id", "last_green_uri", "last_green_request_id"] {
            #expect(fresh.json[key] is NSNull, "\(key)")
        }
        #expect(api.call("GET", "/queues/unknown").status == 404)
        #expect(api.call("GET", "/queues/a%20b").status == 400)
        _ = api.call("POST", "/queues/demo/main/ingest")
        for path in ["/queues/demo/main", "/queues/demo%2Fmain"] {
            let response = api.call("GET", path)
            #expect(response.status == 200)
            #expect(response.json["name"] as? String == "demo/main")
            #expect(response.json["latest_request_id"] as? String == "request/demo/main/1")
            #expect(response.json["last_green_uri"] is NSNull)
            #expect(response.json["last_green_request_id"] is NSNull)
        }
    }

    @Test func pagesNewestFirst() throws {
        let api = API()
        for n in 1...12 {
            api.source.head.withLock { $0 = SourceURI("git://demo/c\(n)") }
            #expect(api.call("POST", "/queues/demo/main/ingest").status == 202)
        }
        var seen: [String] = []
        var cursor: String?
        var pages = 0
        repeat {
            let target = "/queues/demo/main/requests?limit=5" + (cursor.map { "&cursor=\($0)" } ?? "")
            let response = api.call("GET", target)
            #expect(response.status == 200)
            let requests = try #require(response.json["requests"] as? [[String: Any]])
            seen += requests.compactMap { $0["id"] as? String }
            cursor = response.json["next_cursor"] as? String
            pages += 1
        } while cursor != nil && pages < 10
        #expect(pages == 3)
        #expect(seen == (1...12).reversed().map { "request/demo/main/\($0)" })
        let all = api.call("GET", "/queues/demo%2Fmain/requests")
        #expect((all.json["requests"] as? [Any])?.count == 12)
        #expect(all.json["next_cursor"] == nil)
        let capped = api.call("GET", "/queues/demo/main/requests?limit=100000")
        #expect(capped.status == 200)
    }

    @Test(arguments: ["limit=0", "limit=-1", "limit=abc", "limit=1.5", "limit=", "cursor=garbage", "cursor=", "cursor=%zz"])
    func badPagingIs400(_ query: String) {
        let response = API().call("GET", "/queues/demo/main/requests?\(query)")
        #expect(response.status == 400)
        _ = response.problemType()
    }

    @Test func cursorOfAnotherQueueIsRejected() throws {
        let api = API()
        for n in 1...3 {
            api.source.head.withLock { $0 = SourceURI("git://demo/c\(n)") }
            _ = api.call("POST", "/queues/q/ingest")
        }
        let cursor = try #require(api.call("GET", "/queues/q/requests?limit=1").json["next_cursor"] as? String)
        #expect(api.call("GET", "/queues/q/requests?limit=1&cursor=\(cursor)").status == 200)
        #expect(api.call("GET", "/queues/demo/main/requests?cursor=\(cursor)").status == 400)
    }

    @Test func aTruncatedCursorIs400NotAnotherPage() throws {
        let api = API()
        for n in 1...123 {
            api.source.head.withLock { $0 = SourceURI("git://demo/c\(n)") }
            #expect(api.call("POST", "/queues/demo/main/ingest").status == 202)
        }
        let cursor = try #require(api.call("GET", "/queues/demo/main/requests?limit=1").json["next_cursor"] as? String)
        #expect(api.call("GET", "/queues/demo/main/requests?limit=1&cursor=\(cursor)").status == 200)
        // A cursor cut short (a length limit, a bad copy) could read as the cursor of an earlier request: 12 or 1 for
        // 123, a page that skips requests or an empty last page, where the client must be told its cursor is bad.
        for cut in 1..<cursor.count {
            let truncated = String(cursor.dropLast(cut))
            let response = api.call("GET", "/queues/demo/main/requests?limit=1&cursor=\(truncated)")
            #expect(response.status == 400, "\(truncated): \(response.json["requests"].map { "\($0)" } ?? "")")
            #expect(response.problemType() == "urn:stovepipe:problem:invalid-cursor", "\(truncated)")
        }
        // A v1 cursor, as a replica not yet upgraded hands out, still reads.
        let v1 = Data("v1 demo/main 3".utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
        let page = api.call("GET", "/queues/demo/main/requests?limit=5&cursor=\(v1)")
        #expect(page.status == 200)
        #expect((page.json["requests"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
            == ["request/demo/main/2", "request/demo/main/1"])
    }

    @Test func unknownPathIs404() {
        let api = API()
        for path in ["/", "/nope", "/queues", "/requests", "/healthz/x"] {
            let response = api.call("GET", path)
            #expect(response.status == 404, "\(path)")
            #expect(response.problemType() == "urn:stovepipe:problem:not-found")
        }
    }
}

@Suite struct OperationalRouteTests {
    @Test func onlyTheProbesAndTheScrapeAreAnsweredOnTheEventLoop() {
        let responder = API().responder
        for path in ["/healthz", "/readyz", "/metrics"] {
            #expect(responder.respondsInline(method: "GET", rawPath: path), "\(path)")
            #expect(responder.respondsInline(method: "HEAD", rawPath: path), "\(path)")
            // OPTIONS and methods the server does not recognise get the same answers as on any other route.
            for method in ["POST", "OPTIONS", "FOO"] {
                #expect(!responder.respondsInline(method: method, rawPath: path), "\(method) \(path)")
            }
        }
        // Everything that may touch storage or the topic goes to the workers.
        for path in ["/requests/request/q/1", "/queues/q", "/topics", "/healthz/x", "/Healthz", "/metrics/x", "/readyz/x"] {
            #expect(!responder.respondsInline(method: "GET", rawPath: path), "\(path)")
        }
    }

    @Test func healthAndReadiness() {
        let api = API()
        #expect(api.call("GET", "/healthz").status == 200)
        #expect(api.call("GET", "/healthz").json["status"] as? String == "ok")
        #expect(api.call("GET", "/readyz").status == 200)
        api.ready.set(false)
        let notReady = api.call("GET", "/readyz")
        #expect(notReady.status == 503)
        #expect((notReady.json["detail"] as? String)?.contains("database") == true)
        api.ready.set(true)
        api.draining.set(true)
        #expect(api.call("GET", "/healthz").status == 503)
        #expect(api.call("GET", "/readyz").status == 503)
    }

    @Test func metricsAndOpenAPI() {
        let api = API()
        let metrics = api.call("GET", "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.contentType?.hasPrefix("text/plain") == true)
        let spec = api.call("GET", "/openapi.yaml")
        #expect(spec.status == 200)
        #expect(String(decoding: spec.body, as: UTF8.self).hasPrefix("openapi: 3.1"))
        #expect(api.call("HEAD", "/healthz").status == 200)
    }
}
