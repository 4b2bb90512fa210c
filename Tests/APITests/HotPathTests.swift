@testable import API
import Backends
import Domain
import Foundation
import HTTPServer
import Logging
import Synchronization
import Testing

/// Keeps every event logged through it.
final class CapturingLogs: Sendable {
    let events = Mutex<[(message: String, metadata: Logger.Metadata)]>([])

    var handler: CapturingLogHandler { CapturingLogHandler(logs: self) }
}

/// A log handler that keeps its events in `logs`.
protocol CapturesEvents: LogHandler {
    var logs: CapturingLogs { get }
}

extension CapturesEvents {
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        logs.events.withLock { $0.append((event.message.description, event.metadata ?? [:])) }
    }
}

struct CapturingLogHandler: CapturesEvents {
    let logs: CapturingLogs
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
}

/// Records lines given as sorted fields.
struct SortedFieldsCapturingHandler: CapturesEvents, SortedFieldsLogHandler {
    let logs: CapturingLogs
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    func log(level: Logger.Level, message: String, sortedFields: RequestLogFields) {
        let metadata = Logger.Metadata(
            uniqueKeysWithValues: RequestLogFields.Field.allCases.map { ($0.key, .string(sortedFields.value(of: $0))) })
        logs.events.withLock { $0.append(("sorted:" + message, metadata)) }
    }
}

@Suite struct RequestLogTests {
    static func responder(_ requests: MemoryRequestStore, _ logs: CapturingLogs) -> APIResponder {
        responder(requests, logger: Logger(label: "test", factory: { _ in logs.handler }))
    }

    static func responder(_ requests: MemoryRequestStore, logger: Logger) -> APIResponder {
        let ingest = IngestController(
            requests: requests, uris: MemoryRequestURIStore(), queues: MemoryQueueStore(), counter: MemoryCounter(),
            sources: MovableSource(), publisher: NullPublisher(), logger: Logger(label: "quiet", factory: { _ in SwiftLogNoOpLogHandler() }))
        return APIResponder(
            dependencies: APIDependencies(ingest: ingest, requests: requests, queues: MemoryQueueStore(), isConfigured: { _ in true }),
            logger: logger)
    }

    @Test(arguments: [
        ("GET", "/requests/request/demo/main/1", "/requests/{id}", 200),
        ("DELETE", "/requests/request/demo/main/1", "/requests/{id}", 405),
        ("GET", "/requests/request/demo/main/2", "/requests/{id}", 404),
        ("GET", "/nowhere", "unmatched", 404),
        ("FOO", "/nowhere", "unmatched", 501),
        ("OPTIONS", "*", "*", 204),
        ("OPTIONS", "/requests/request/demo/main/1", "/requests/{id}", 204),
        ("GET", "/requests/request%2Fdemo%2Fmain%2F1", "/requests/{id}", 200),
    ])
    func everyRequestLogsOneLineWithItsFields(_ method: String, _ path: String, _ route: String, _ status: Int) throws {
        let requests = MemoryRequestStore()
        try requests.create(Request(
            id: RequestID(queue: try QueueName("demo/main"), number: 1), uri: SourceURI("git://demo/c1"),
            createdAt: Date(timeIntervalSince1970: 1_795_950_715)))
        let logs = CapturingLogs()
        let response = Self.responder(requests, logs).respond(to: HTTPRequest(
            method: method, target: path, path: path, rawPath: path, query: "", headers: HTTPHeaders([]), body: [],
            requestID: "r-42"))
        #expect(response.status == status)
        #expect(logs.events.withLock { $0 }.isEmpty, "the line waits until the response is sent")
        response.afterSend?()
        let events = logs.events.withLock { $0 }
        #expect(events.count == 1)
        let event = try #require(events.first)
        #expect(event.message == "request")
        #expect(Set(event.metadata.keys) == ["http.request_id", "http.method", "http.route", "http.status", "duration.ms", "bytes"])
        #expect(event.metadata["http.request_id"] == .string("r-42"))
        #expect(event.metadata["http.method"] == .string(method))
        #expect(event.metadata["http.route"] == .string(route))
        #expect(event.metadata["http.status"] == .string("\(status)"))
        #expect(event.metadata["bytes"] == .string("\(response.body.count)"))
        guard case .string(let duration) = event.metadata["duration.ms"] else {
            Issue.record("duration.ms is not a string")
            return
        }
        let milliseconds = try #require(Double(duration))
        #expect(milliseconds >= 0)
        #expect("\(milliseconds)" == duration, "spelled as Swift prints the Double")
    }

    @Test func aHandlerThatTakesSortedFieldsGetsTheSameFieldsInKeyOrder() throws {
        // Asserted here, not in the handler: a handler runs wherever the logging does, maybe off the test's task.
        let fieldKeys = RequestLogFields.Field.allCases.map(\.key)
        #expect(fieldKeys == fieldKeys.sorted(), "keys ascending")
        let requests = MemoryRequestStore()
        let dictionaryLogs = CapturingLogs()
        let sortedLogs = CapturingLogs()
        let request = HTTPRequest(
            method: "GET", target: "/nowhere", path: "/nowhere", rawPath: "/nowhere", query: "", headers: HTTPHeaders([]),
            body: [], requestID: "r-7")
        Self.responder(requests, dictionaryLogs).respond(to: request).afterSend?()
        let logger = Logger(label: "test", factory: { _ in SortedFieldsCapturingHandler(logs: sortedLogs) })
        Self.responder(requests, logger: logger).respond(to: request).afterSend?()
        let viaDictionary = try #require(dictionaryLogs.events.withLock { $0.first })
        let viaFields = try #require(sortedLogs.events.withLock { $0.first })
        #expect(viaFields.message == "sorted:request")
        let keys = Array(viaFields.metadata.keys)
        #expect(Set(keys) == Set(viaDictionary.metadata.keys))
        for key in keys where key != "duration.ms" {
            #expect(viaFields.metadata[key] == viaDictionary.metadata[key], "\(key)")
        }
    }

    static let nanosecondSamples: [Int64] = {
        var samples: [Int64] = [0, 1, 9, 10, 99, 100, 101, 999, 1_000, 1_001, 10_000, 99_999, 100_000, 123_456, 999_999,
            1_000_000, 1_000_001, 1_500_000, 9_999_999, 10_000_000, 12_345_678, 100_000_000, 999_999_999, 1_000_000_000,
            86_400_000_000_000, 999_999_999_999_999, 1_000_000_000_000_000, 1_000_000_000_000_001, Int64.max, -1, -1_500_000]
        // A fixed linear congruential sequence: many magnitudes, the same every run.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<20_000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let digits = Int(state >> 60) + 1
            var modulus: UInt64 = 1
            for _ in 0..<digits { modulus *= 10 }
            samples.append(Int64((state >> 8) % modulus))
        }
        return samples
    }()

    @Test func requestLogFieldsAreSpelledAsStringsSpellThem() {
        for (bytes, status) in [(0, 200), (311, 404), (1_234_567, 503), (-1, -20), (Int.max, Int.min)] {
            let fields = RequestLogFields(
                bytes: bytes, nanoseconds: 12_500, method: "GET", route: "/requests/{id}", status: status, requestID: "r-ü")
            #expect(fields.value(of: .bytes) == String(bytes))
            #expect(fields.value(of: .status) == String(status))
            #expect(fields.value(of: .duration) == "0.0125")
            #expect(fields.value(of: .method) == "GET")
            #expect(fields.value(of: .route) == "/requests/{id}")
            #expect(fields.value(of: .requestID) == "r-ü")
        }
    }

    @Test func writtenFieldValuesAreTheAppendedOnesAndFitTheirBound() {
        let texts = JSONWriterTests.awkwardTexts
        for (index, nanoseconds) in Self.nanosecondSamples.enumerated() {
            let text = texts[index % texts.count]
            let fields = RequestLogFields(
                bytes: [0, 311, Int.max][index % 3], nanoseconds: nanoseconds, method: text, route: texts[(index + 1) % texts.count],
                status: [200, -1, Int.min][index % 3], requestID: text)
            for field in RequestLogFields.Field.allCases {
                for escaped in [false, true] {
                    var overflowed = false
                    let written = [UInt8](unsafeUninitializedCapacity: fields.maxValueLength(of: field, escaped: escaped)) {
                        buffer, count in
                        var writer = FixedByteWriter(buffer)
                        fields.writeValue(of: field, escaped: escaped, to: &writer)
                        overflowed = writer.overflowed
                        count = writer.count
                    }
                    var expected: [UInt8] = []
                    if escaped {
                        JSONWriter.appendEscaped(fields.value(of: field), to: &expected)
                    } else {
                        JSONWriter.appendTextEscaped(fields.value(of: field), to: &expected)
                    }
                    #expect(!overflowed, "\(field) of \(nanoseconds) ns, \(text.debugDescription)")
                    #expect(written == expected, "\(field) of \(nanoseconds) ns, \(text.debugDescription)")
                }
            }
        }
    }

    @Test func aFixedByteWriterDropsWhatDoesNotFitAndSaysSo() {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4) { buffer in
            var writer = FixedByteWriter(buffer)
            writer.write("abc")
            #expect(!writer.overflowed && writer.count == 3)
            writer.write("de")
            #expect(writer.overflowed && writer.count == 3)
            writer.writeEscaped("\"")
            #expect(writer.count == 3)
            #expect(Array(buffer[..<writer.count]) == Array("abc".utf8))
        }
    }

    @Test func durationIsSpelledAsTheDoubleWouldBe() {
        for nanoseconds in Self.nanosecondSamples {
            let expected = "\(Double(nanoseconds) / 1_000_000)"
            #expect(RequestLogFields.milliseconds(nanoseconds: nanoseconds) == expected, "\(nanoseconds) ns")
        }
    }
}

@Suite struct RouteMatchingTests {
    /// The split the router used before it went byte by byte.
    static func characterSegments(_ rawPath: String) -> [Substring] {
        var segments = rawPath.split(separator: "/", omittingEmptySubsequences: false)
        if segments.first == "" { segments.removeFirst() }
        return segments
    }

    @Test(arguments: [
        ("/requests/request/demo/main/1", Route.request(id: "request/demo/main/1")),
        ("/requests/request%2Fdemo%2Fmain/1", Route.request(id: "request/demo/main/1")),
        ("/requests/", Route.request(id: "")),
        ("/requests//x/", Route.request(id: "/x/")),
        ("/queues/a/b/ingest", Route.ingest(queue: "a/b")),
        ("/queues/a/b/requests", Route.queueRequests(queue: "a/b")),
        ("/queues/a%2Fb", Route.queue("a/b")),
        ("/queues/ingest", Route.queue("ingest")),
        ("/topics/process", Route.topic("process")),
        ("/healthz", Route.healthz),
    ])
    func pathsMatchTheirRoute(_ path: String, _ route: Route) throws {
        #expect(try Route.match(rawPath: path) == route)
    }

    /// The matcher the router used before it went byte by byte: Character-wise segments, each decoded.
    static func referenceMatch(_ rawPath: String) -> Result<Route, Route.Failure> {
        func joined(_ segments: ArraySlice<Substring>) -> String? {
            var parts: [String] = []
            for segment in segments {
                guard let text = PercentDecoding.decode(segment) else { return nil }
                parts.append(text)
            }
            return parts.joined(separator: "/")
        }
        func decoded(_ segments: ArraySlice<Substring>, _ make: (String) -> Route) -> Result<Route, Route.Failure> {
            joined(segments).map { .success(make($0)) } ?? .failure(.malformedEscape)
        }
        let raw = characterSegments(rawPath)
        guard let head = raw.first else { return .failure(.notFound) }
        let rest = raw.dropFirst()
        switch head {
        case "healthz" where rest.isEmpty: return .success(.healthz)
        case "readyz" where rest.isEmpty: return .success(.readyz)
        case "metrics" where rest.isEmpty: return .success(.metrics)
        case "openapi.yaml" where rest.isEmpty: return .success(.openapi)
        case "topics" where rest.isEmpty: return .success(.topics)
        case "topics" where rest.count == 1: return decoded(rest) { .topic($0) }
        case "requests" where !rest.isEmpty: return decoded(rest) { .request(id: $0) }
        case "queues" where !rest.isEmpty:
            if rest.count >= 2, rest.last == "ingest" { return decoded(rest.dropLast()) { .ingest(queue: $0) } }
            if rest.count >= 2, rest.last == "requests" { return decoded(rest.dropLast()) { .queueRequests(queue: $0) } }
            return decoded(rest) { .queue($0) }
        default:
            return .failure(.notFound)
        }
    }

    @Test func everyPathMatchesAsTheSegmentWiseMatcherDid() {
        let vocabulary = ["", "healthz", "readyz", "metrics", "openapi.yaml", "topics", "requests", "queues", "ingest",
            "a", "b%2Fc", "%", "%2", "%zz", "%C3%A9", "%C3", "%A9", "x+y", "\u{301}", "é"]
        var paths: [String] = [""]
        var layer = [""]
        for _ in 0..<3 {
            layer = layer.flatMap { prefix in vocabulary.map { prefix.isEmpty ? $0 : prefix + "/" + $0 } }
            paths += layer
        }
        paths += ["requests/a/b/c/d/e", "queues/a/b/c/ingest", "queues/a/%2/requests", "topics/a/b"]
        var checked = 0
        for path in paths {
            for candidate in [path, "/" + path, "//" + path] {
                let expected = Self.referenceMatch(candidate)
                let actual = Result { () throws(Route.Failure) in try Route.match(rawPath: candidate) }
                #expect(actual == expected, "\(candidate)")
                checked += 1
            }
        }
        #expect(checked > 20_000)
    }

    @Test(arguments: [
        ("plain", "plain", "plain"), ("", "", ""), ("a%2Fb", "a/b", "a/b"), ("%C3%A9t%C3%A9", "été", "été"),
        ("été", "été", "été"), ("a+b", "a+b", "a b"), ("a+%2B", "a++", "a +"), ("%41%42c", "ABc", "ABc"),
    ])
    func percentDecodingDecodesEscapesOnly(_ text: String, _ decoded: String, _ decodedPlusAsSpace: String) {
        #expect(PercentDecoding.decode(Substring(text)) == decoded)
        #expect(PercentDecoding.decode(Substring(text), plusAsSpace: true) == decodedPlusAsSpace)
        // The bytes of a Substring in the middle of a string, as the router passes them.
        let embedded = "x/" + text + "/y"
        #expect(PercentDecoding.decode(embedded.dropFirst(2).dropLast(2)) == decoded)
        #expect(Array(text.utf8).withUnsafeBufferPointer { PercentDecoding.decode($0) } == decoded)
    }

    @Test(arguments: ["%", "%2", "%zz", "a%G1", "%C3", "%FF", "%C3%28"])
    func percentDecodingRejectsMalformedEscapesAndNonUTF8(_ text: String) {
        #expect(PercentDecoding.decode(Substring(text)) == nil)
        #expect(Array(text.utf8).withUnsafeBufferPointer { PercentDecoding.decode($0) } == nil)
    }

    @Test func percentDecodingRejectsBytesThatAreNotUTF8() {
        #expect([0x61, 0xFF, 0x62].withUnsafeBufferPointer { PercentDecoding.decode($0) } == nil)
        #expect([0x61, 0xC3, 0xA9].withUnsafeBufferPointer { PercentDecoding.decode($0) } == "aé")
    }

    @Test func malformedEscapesAndUnknownPathsFail() {
        #expect(throws: Route.Failure.malformedEscape) { try Route.match(rawPath: "/requests/a%2") }
        #expect(throws: Route.Failure.notFound) { try Route.match(rawPath: "/healthz/x") }
        #expect(throws: Route.Failure.notFound) { try Route.match(rawPath: "") }
    }

    static let routes: [Route] = [.ingest(queue: "q"), .request(id: "i"), .queue("q"), .queueRequests(queue: "q"), .healthz,
        .readyz, .metrics, .openapi, .topics, .topic("t"), .server]

    @Test func handledMethodsAreTheListedOnes() throws {
        for route in Self.routes {
            for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get", "BREW", ""] {
                #expect(route.handles(method) == route.handledMethods.contains(method), "\(route) \(method)")
            }
        }
    }

    @Test func theServerAllowsWhatAnyRouteAllows() {
        let everyRoutesMethods = Set(Self.routes.filter { $0 != .server }.flatMap(\.allowedMethods))
        #expect(Set(Route.server.allowedMethods) == everyRoutesMethods)
        #expect(Route.server.allowedMethods.count == everyRoutesMethods.count)
    }

    @Test func onlyTheBareAsteriskIsTheServer() throws {
        #expect(try Route.match(rawPath: "*") == .server)
        for path in ["/*", "**", "*/x", "/healthz/*"] {
            #expect(throws: Route.Failure.notFound, "\(path)") { try Route.match(rawPath: path) }
        }
    }

    @Test func templatesAreTheMetricsLabels() {
        #expect(Route.request(id: "x").template.label == "/requests/{id}")
        #expect(Route.ingest(queue: "q").template.label == "/queues/{queue}/ingest")
        #expect(Route.topic("t").template.label == "/topics/{topic}")
        #expect(RouteTemplate.unmatched.label == "unmatched")
        #expect(Set(RouteTemplate.allCases.map(\.label)).count == RouteTemplate.allCases.count)
    }

    @Test func unknownMethodsShareOneLabel() {
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"] {
            #expect(MethodLabel(method).text == method)
            #expect(MethodLabel(method).isRecognised)
        }
        for method in ["get", "BREW", "", "Connect", "PROPFIND"] {
            #expect(MethodLabel(method).text == "other")
            #expect(!MethodLabel(method).isRecognised)
        }
    }
}
