@testable import API
import Backends
import Domain
import Foundation
import HTTPServer
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A request store whose reads wait on a gate: the worker that reads from it is held, as by a row lock.
final class GatedRequestStore: RequestStore {
    private let base = MemoryRequestStore()
    private let state = Mutex((waiting: 0, released: false))

    var waiting: Int { state.withLock { $0.waiting } }

    func release() { state.withLock { $0.released = true } }

    func create(_ request: Request) throws(BackendError) { try base.create(request) }

    func get(_ id: RequestID) throws(BackendError) -> Request {
        state.withLock { $0.waiting += 1 }
        // At most 30 s, so a failing test cannot hold its worker forever.
        let deadline = ContinuousClock.now + .seconds(30)
        while !state.withLock({ $0.released }) && ContinuousClock.now < deadline { usleep(1000) }
        state.withLock { $0.waiting -= 1 }
        return try base.get(id)
    }

    func update(_ request: Request, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        try base.update(request, oldVersion: oldVersion, newVersion: newVersion)
    }

    func list(queue: QueueName, before: UInt64?, limit: Int) throws(BackendError) -> [Request] {
        try base.list(queue: queue, before: before, limit: limit)
    }
}

/// One `GET` over a fresh loopback connection; throws if no complete answer comes within `seconds`.
func wireGET(_ path: String, port: Int, seconds: Int) throws -> (status: Int, body: String) {
    struct NoAnswer: Error {}
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw NoAnswer() }
    defer { close(fd) }
    var timeout = timeval(tv_sec: seconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw NoAnswer() }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
        throw NoAnswer()
    }
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16 * 1024)
    while true {
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count == 0 { break }
        // A timeout (EAGAIN) is no answer, as is a reset.
        guard count > 0 else { throw NoAnswer() }
        received += buffer[0..<count]
    }
    let text = String(decoding: received, as: UTF8.self)
    guard let headEnd = text.range(of: "\r\n\r\n") else { throw NoAnswer() }
    let statusLine = text[..<headEnd.lowerBound].prefix { $0 != "\r" }.split(separator: " ")
    guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw NoAnswer() }
    return (status, String(text[headEnd.upperBound...]))
}

@Suite struct ProbeTests {
    /// A server of one worker, reading requests from `requests`, ready as `readiness` says.
    static func server(
        requests: GatedRequestStore, readiness: @escaping @Sendable () -> [ReadinessCheck]
    ) throws -> HTTPServer {
        let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let ingest = IngestController(
            requests: requests, uris: MemoryRequestURIStore(), queues: MemoryQueueStore(), counter: MemoryCounter(),
            sources: MovableSource(), publisher: NullPublisher(), logger: quiet)
        let responder = APIResponder(
            dependencies: APIDependencies(
                ingest: ingest, requests: requests, queues: MemoryQueueStore(), isConfigured: { _ in true },
                readiness: readiness),
            logger: quiet)
        // One worker, and a queue timeout far beyond the probes' patience: a probe that waits for the worker fails.
        let configuration = HTTPServerConfiguration(
            port: 0, eventLoopThreads: 1, workerThreads: 1, workerKeepAliveWait: .zero, queueTimeout: .seconds(60))
        return HTTPServer(configuration: configuration, responder: responder, logger: quiet)
    }

    @Test("with every worker held, /healthz answers 200 and /readyz reports readiness at once")
    func probesDoNotWaitForWorkers() throws {
        let requests = GatedRequestStore()
        let database = Mutex(true)
        let server = try Self.server(requests: requests) {
            let up = database.withLock { $0 }
            return [ReadinessCheck(name: "database", ok: up, detail: up ? "" : "the database does not answer")]
        }
        let port = try server.start()
        defer { server.shutdown() }
        // Before the shutdown (defers run last first), so it does not wait for the held request.
        defer { requests.release() }
        let held = Thread { _ = try? wireGET("/requests/request/demo/main/1", port: port, seconds: 60) }
        held.start()
        #expect(eventually { requests.waiting == 1 })
        // And one more, queued behind the held one: what a probe would otherwise wait behind.
        let queued = Thread { _ = try? wireGET("/requests/request/demo/main/2", port: port, seconds: 60) }
        queued.start()

        let live = try wireGET("/healthz", port: port, seconds: 5)
        #expect(live.status == 200)
        let ready = try wireGET("/readyz", port: port, seconds: 5)
        #expect(ready.status == 200)
        #expect(ready.body.contains(#""status":"ready""#), "\(ready.body)")
        // Readiness still tells the database's state while the worker is held.
        database.withLock { $0 = false }
        let unready = try wireGET("/readyz", port: port, seconds: 5)
        #expect(unready.status == 503)
        #expect(unready.body.contains("the database does not answer"), "\(unready.body)")
    }
}

/// Waits until `condition` holds, up to 20 s; whether it held.
func eventually(_ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + .seconds(20)
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(5000)
    }
    return condition()
}
/// Stores whose every call fails as with a database that does not answer.
final class UnavailableStore: RequestStore, QueueStore {
    static let failure = BackendError.unavailable(retryable: true, detail: "mysql unavailable (error 2013)")

    func create(_ request: Request) throws(BackendError) { throw Self.failure }
    func get(_ id: RequestID) throws(BackendError) -> Request { throw Self.failure }
    func update(_ request: Request, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) { throw Self.failure }
    func list(queue: QueueName, before: UInt64?, limit: Int) throws(BackendError) -> [Request] { throw Self.failure }
    func create(_ queue: Queue) throws(BackendError) { throw Self.failure }
    func get(_ name: QueueName) throws(BackendError) -> Queue { throw Self.failure }
    func update(_ queue: Queue, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) { throw Self.failure }
}

@Suite struct UnavailableReadTests {
    static func call(_ responder: APIResponder, _ target: String) -> HTTPResponse {
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let request = HTTPRequest(
            method: "GET", target: target, path: String(parts[0]), query: parts.count > 1 ? String(parts[1]) : "",
            requestID: "probe-1")
        let response = responder.respond(to: request)
        response.afterSend?()
        return response
    }

    @Test(arguments: [
        ("/requests/request/demo/main/7", "/requests/{id}", "request/demo/main/7"),
        ("/queues/demo/main", "/queues/{queue}", nil),
        ("/queues/demo/main/requests?limit=5&note=c2VjcmV0", "/queues/{queue}/requests", nil),
    ])
    func aReadStorageCannotAnswerLogsOneWarning(_ target: String, _ route: String, _ requestID: String?) throws {
        let logs = CapturingLogs()
        let store = UnavailableStore()
        let ingest = IngestController(
            requests: store, uris: MemoryRequestURIStore(), queues: store, counter: MemoryCounter(),
            sources: MovableSource(), publisher: NullPublisher(),
            logger: Logger(label: "quiet", factory: { _ in SwiftLogNoOpLogHandler() }))
        let responder = APIResponder(
            dependencies: APIDependencies(
                ingest: ingest, requests: store, queues: store, isConfigured: { $0.rawValue == "demo/main" }),
            logger: Logger(label: "test", factory: { _ in logs.handler }))
        let response = Self.call(responder, target)
        #expect(response.status == 503)
        let warnings = logs.events.withLock { $0 }.filter { $0.message == "storage unavailable" }
        #expect(warnings.count == 1)
        let warning = try #require(warnings.first)
        #expect(warning.metadata["http.request_id"] == "probe-1")
        #expect(warning.metadata["http.route"] == .string(route))
        #expect(warning.metadata["queue"] == "demo/main")
        #expect(warning.metadata["request.id"] == requestID.map { .string($0) })
        #expect(warning.metadata["error"] == "mysql unavailable (error 2013)")
        // The query (a cursor, a limit) is the client's: never logged.
        #expect(!"\(warning.metadata)".contains("c2VjcmV0"))
        #expect(!"\(warning.metadata)".contains("limit"))
    }

    @Test func aRequestOfAQueueNotConfiguredIsLoggedWithoutItsId() throws {
        let logs = CapturingLogs()
        let store = UnavailableStore()
        let ingest = IngestController(
            requests: store, uris: MemoryRequestURIStore(), queues: store, counter: MemoryCounter(),
            sources: MovableSource(), publisher: NullPublisher(),
            logger: Logger(label: "quiet", factory: { _ in SwiftLogNoOpLogHandler() }))
        let responder = APIResponder(
            dependencies: APIDependencies(ingest: ingest, requests: store, queues: store, isConfigured: { _ in false }),
            logger: Logger(label: "test", factory: { _ in logs.handler }))
        #expect(Self.call(responder, "/requests/request/anything-at-all/1").status == 503)
        let warning = try #require(logs.events.withLock { $0 }.first { $0.message == "storage unavailable" })
        // Any client can name any queue in an id: only a configured one is logged.
        #expect(warning.metadata["queue"] == nil)
        #expect(warning.metadata["request.id"] == nil)
        #expect(!"\(warning.metadata)".contains("anything-at-all"))
    }
}
