import Domain
import Foundation
import Testing

@Suite struct QueueNameTests {
    @Test(arguments: ["monorepo/main", "web", "org/repo/release-1.2", "a", "A.b_c-d/e", String(repeating: "x", count: 200)])
    func accepts(_ name: String) throws {
        #expect(try QueueName(name).rawValue == name)
    }

    @Test(arguments: ["", "a//b", "/a", "a/", "a/../b", "a b", ".", "..", "a/./b", "ä", "a\u{0}b", "a\nb", "a%2Fb",
        String(repeating: "x", count: 201)])
    func rejects(_ name: String) {
        #expect(throws: ValidationError.self) { try QueueName(name) }
    }

    @Test(arguments: [
        ("", "must not be empty"), (String(repeating: "x", count: 201), "longer than 200 bytes"),
        ("a//b", "empty segment"), ("/a", "empty segment"), ("a/", "empty segment"), ("a/../b", "segment '.' or '..'"),
        (".", "segment '.' or '..'"), ("a/.", "segment '.' or '..'"), ("a b", "only A-Z a-z 0-9 . _ - and / are allowed"),
        // The first fault from the left is the one reported.
        ("a//b c", "empty segment"), ("a c//b", "only A-Z a-z 0-9 . _ - and / are allowed"),
    ])
    func rejectsWithTheReason(_ name: String, _ reason: String) {
        #expect(throws: ValidationError.invalidQueueName(name, reason: reason)) { try QueueName(name) }
    }

    @Test(arguments: ["...", ".a", "a.", "..a/b", "a/...", "a/.b."])
    func acceptsSegmentsThatAreNotOnlyOneOrTwoDots(_ name: String) throws {
        #expect(try QueueName(name).rawValue == name)
    }
}

@Suite struct RequestIDTests {
    @Test func parsesAndFormats() throws {
        let id = try RequestID(parsing: "request/monorepo/main/7")
        #expect(id.queue.rawValue == "monorepo/main")
        #expect(id.number == 7)
        #expect(id.description == "request/monorepo/main/7")
    }

    @Test(arguments: ["", "request/", "request/a", "request/a/0", "request/a/07", "request/a/-1", "request/a/1x",
        "request//1", "requests/a/1", "request/a b/1", "request/a/18446744073709551616", "request/a/+1"])
    func rejects(_ text: String) {
        #expect(throws: ValidationError.self) { try RequestID(parsing: text) }
    }

    @Test(arguments: [
        ("request/a/1", "a", UInt64(1)), ("request/monorepo/main/18446744073709551615", "monorepo/main", UInt64.max),
        ("request/a/b/c/42", "a/b/c", UInt64(42)), ("request/A.b_c-d/e/10", "A.b_c-d/e", UInt64(10)),
    ])
    func parsesEveryPartOfTheId(_ text: String, _ queue: String, _ number: UInt64) throws {
        let id = try RequestID(parsing: text)
        #expect(id.queue.rawValue == queue)
        #expect(id.number == number)
        #expect(id.description == text)
    }

    @Test(arguments: [
        ("", "must start with 'request/'"), ("request", "must start with 'request/'"),
        ("request/", "must be request/<queue>/<n>"), ("request/a", "must be request/<queue>/<n>"),
        ("request/a/", "n must be a positive decimal without leading zeros"),
        ("request/a/0", "n must be a positive decimal without leading zeros"),
        ("request/a/18446744073709551616", "n must be a positive decimal without leading zeros"),
        ("request//1", "invalid queue name: must not be empty"), ("request/a//1", "invalid queue name: empty segment"),
        ("request/../1", "invalid queue name: segment '.' or '..'"),
        ("request/a b/1", "invalid queue name: only A-Z a-z 0-9 . _ - and / are allowed"),
        // A combining mark joins the `/` into one Character, so the Character-wise prefix does not match.
        ("request/\u{301}a/1", "must start with 'request/'"),
        ("request/ä/1", "invalid queue name: only A-Z a-z 0-9 . _ - and / are allowed"),
    ])
    func rejectsWithTheReason(_ text: String, _ reason: String) {
        #expect(throws: ValidationError.invalidRequestID(text, reason: reason)) { try RequestID(parsing: text) }
    }

    @Test func comparesByNumberNotText() throws {
        let nine = try RequestID(parsing: "request/q/9")
        let ten = try RequestID(parsing: "request/q/10")
        #expect(nine.isOlder(than: ten))
        #expect(!ten.isOlder(than: nine))
        #expect(!nine.isOlder(than: nine))
        let otherQueue = try RequestID(parsing: "request/r/10")
        #expect(!nine.isOlder(than: otherQueue))
    }

    @Test func jsonRoundTrip() throws {
        let id = try RequestID(parsing: "request/a/b/c/42")
        let data = try JSONEncoder().encode([id])
        #expect(String(decoding: data, as: UTF8.self) == #"["request\/a\/b\/c\/42"]"#)
        #expect(try JSONDecoder().decode([RequestID].self, from: data) == [id])
        #expect(throws: (any Error).self) { try JSONDecoder().decode([RequestID].self, from: Data(#"["request/a/0"]"#.utf8)) }
    }
}

@Suite struct RequestCodingTests {
    @Test func requestRoundTripsWithWireNames() throws {
        let request = Request(
            id: try RequestID(parsing: "request/q/3"), uri: SourceURI("git://q/c3"), state: .processing,
            buildStrategy: .incrementalSinceGreen, baseURI: SourceURI("git://q/c1"), version: 2,
            createdAt: Date(timeIntervalSince1970: 1_700_000_000), updatedAt: Date(timeIntervalSince1970: 1_700_000_001))
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(request)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["build_strategy"] as? String == "incremental_since_green")
        #expect(object["base_uri"] as? String == "git://q/c1")
        #expect(object["queue"] as? String == "q")
        #expect(object["state"] as? String == "processing")
        #expect(object["created_at"] as? String == "2023-11-14T22:13:20Z")
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        #expect(try decoder.decode(Request.self, from: data) == request)
    }

    @Test func emptyBaseURIIsAbsent() throws {
        let request = Request(id: try RequestID(parsing: "request/q/1"), uri: SourceURI("u"), createdAt: Date(timeIntervalSince1970: 0))
        let data = try JSONEncoder().encode(request)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["base_uri"] as? String == "")
        #expect(object["build_strategy"] as? String == "")
        #expect(try JSONDecoder().decode(Request.self, from: data).baseURI == nil)
    }

    @Test func queueRoundTrips() throws {
        let queue = Queue(name: try QueueName("q"), latestRequestID: try RequestID(parsing: "request/q/2"),
            lastGreenURI: SourceURI("g"), lastGreenRequestID: try RequestID(parsing: "request/q/1"), version: 4)
        let data = try JSONEncoder().encode(queue)
        #expect(String(decoding: data, as: UTF8.self).contains("\"latest_request_id\""))
        #expect(try JSONDecoder().decode(Queue.self, from: data) == queue)
    }

    @Test func statesHaveWireNames() {
        #expect(RequestState.allCases.map(\.rawValue) == ["accepted", "processing", "superseded", "succeeded", "failed", "cancelled"])
        #expect(BuildStrategy.allCases.map(\.rawValue) == ["", "full", "incremental_since_green"])
    }
}

@Suite struct RetryPolicyTests {
    @Test func backoffDoublesAndCaps() {
        let policy = RetryPolicy(maxAttempts: 5, backoffBase: .milliseconds(100), backoffCap: .seconds(1))
        #expect(policy.backoff(afterAttempt: 1, random: 1) == .milliseconds(100))
        #expect(policy.backoff(afterAttempt: 2, random: 1) == .milliseconds(200))
        #expect(policy.backoff(afterAttempt: 3, random: 0) == .milliseconds(200))
        #expect(policy.backoff(afterAttempt: 10, random: 1) == .seconds(1))
        #expect(policy.backoff(afterAttempt: 1000, random: 0.5) == .milliseconds(750))
    }

    @Test func backoffOfAHugeBaseIsTheCapWithoutOverflow() {
        let policy = RetryPolicy(maxAttempts: 40, backoffBase: .seconds(Int64.max / 4), backoffCap: .seconds(Int64.max / 2))
        // Doubling the base would overflow Duration; the wait is the cap instead (within Double's precision).
        let cap = policy.backoffCap
        let wait = policy.backoff(afterAttempt: 31, random: 1)
        #expect(wait <= cap && wait > cap * 0.99)
        #expect(policy.backoff(afterAttempt: 1, random: 1) <= policy.backoffBase)
    }
}
