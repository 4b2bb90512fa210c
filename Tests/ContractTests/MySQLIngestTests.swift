import Backends
import Domain
import Foundation
import MySQLBackend
import MySQLClient
import Synchronization
import Testing

/// Whether the live MySQL suites run: with the URL, or under CI=true (where a missing URL fails them).
private let mysqlIngestSuiteRuns =
    ProcessInfo.processInfo.environment["STOVEPIPE_TEST_MYSQL_URL"].map { !$0.isEmpty } ?? false
    || ProcessInfo.processInfo.environment["CI"] == "true"

/// Records every published message; never fails.
private final class RecordingTopicPublisher: TopicPublisher {
    private let published = Mutex<[Message]>([])

    func publish(_ message: Message) throws(BackendError) {
        published.withLock { $0.append(message) }
    }

    var messages: [Message] { published.withLock { $0 } }
}

/// One queue whose head the test moves; it knows no history.
private final class MovableHead: SourceControlFactory, SourceControl {
    let head: Mutex<SourceURI>

    init(_ head: SourceURI) { self.head = Mutex(head) }

    func sourceControl(for queue: QueueName) throws(BackendError) -> any SourceControl { self }
    func latest() throws(BackendError) -> SourceURI { head.withLock { $0 } }
    func isAncestor(_ ancestor: SourceURI, of descendant: SourceURI) throws(BackendError) -> Bool { true }
    func history(cursor: String, limit: Int) throws(BackendError) -> HistoryPage { HistoryPage(uris: [], nextCursor: "") }
}

@Suite("MySQL ingest through the real controller", .enabled(if: mysqlIngestSuiteRuns), .serialized)
struct MySQLIngestTests {
    /// A fresh database, and storage on it whose pool is `poolWidth` wide, so that every ingest step of that
    /// many threads can race on its own connection.
    static func storage(poolWidth: Int) async throws -> (MySQLTestBackend, MySQLStorage) {
        guard let fixture = MySQLFixture.fromEnvironment() else {
            throw FixtureUnavailable("STOVEPIPE_TEST_MYSQL_URL is not set")
        }
        guard let backend = try await offPool({ try fixture.makeBackend() }) as? MySQLTestBackend else {
            throw FixtureUnavailable("the MySQL fixture did not make a MySQL backend")
        }
        let storage = MySQLStorage(
            configuration: backend.storage.pool.connectionConfiguration,
            poolConfiguration: MySQLPool.Configuration(maxConnections: poolWidth, acquireTimeout: .seconds(30)),
            logger: silentLogger)
        return (backend, storage)
    }

    @Test("64 threads ingesting one head mint one id and write one row per table")
    func concurrentIngestOfOneHead() async throws {
        let threadCount = 64
        let (backend, storage) = try await Self.storage(poolWidth: threadCount)
        defer { backend.tearDown() }
        defer { storage.close() }

        let queue = try QueueName("app/main")
        let head = SourceURI("git://app/main/0123456789abcdef0123456789abcdef01234567")
        let sources = SourceControlRegistry([queue: .staticHistory([head])], logger: silentLogger)
        let publisher = RecordingTopicPublisher()
        let controller = IngestController(
            requests: storage.requests, uris: storage.requestURIs, queues: storage.queues, counter: storage.counter,
            sources: sources, publisher: publisher, logger: silentLogger)

        let results = Mutex<[Result<IngestResult, IngestError>]>([])
        let finished = await onThreads(threadCount, timeout: .seconds(120)) { _ in
            let outcome: Result<IngestResult, IngestError>
            do throws(IngestError) {
                outcome = .success(try controller.ingest(queue: queue.rawValue))
            } catch {
                outcome = .failure(error)
            }
            results.withLock { $0.append(outcome) }
        }
        #expect(finished, "not every ingest returned within the deadline")

        let outcomes = results.withLock { $0 }
        let failures = outcomes.compactMap { outcome -> IngestError? in
            if case .failure(let error) = outcome { return error }
            return nil
        }
        let successes = outcomes.compactMap { try? $0.get() }
        #expect(failures.isEmpty, "\(failures)")
        #expect(successes.count == threadCount)
        let ids = Set(successes.map(\.request.id))
        #expect(ids.count == 1, "\(ids)")
        #expect(successes.filter(\.minted).count == 1)
        #expect(successes.allSatisfy { $0.request.uri == head })
        guard let id = ids.first else { return }

        let (requestRows, uriRows, queueRows, counterValue) = try await offPool {
            try storage.pool.withConnection { connection in
                (
                    try connection.query("SELECT COUNT(*) FROM requests").first?.int64(0),
                    try connection.query("SELECT COUNT(*) FROM request_uris").first?.int64(0),
                    try connection.query("SELECT COUNT(*) FROM queues").first?.int64(0),
                    try connection.query(
                        "SELECT value FROM counters WHERE queue = \(queue.rawValue) AND domain = \(requestCounterDomain)"
                    ).first?.uint64(0)
                )
            }
        }
        #expect(requestRows == 1)
        #expect(uriRows == 1)
        #expect(queueRows == 1)
        // Threads that lost the claim race spent a counter value each; the id is one of the values handed out.
        #expect(counterValue.map { $0 >= id.number && $0 <= UInt64(threadCount) } == true, "\(String(describing: counterValue))")

        let (stored, indexed, queueRow) = try await offPool {
            (try storage.requests.get(id), try storage.requestURIs.id(queue: queue, uri: head), try storage.queues.get(queue))
        }
        #expect(stored.uri == head)
        #expect(stored.state == .accepted)
        #expect(indexed == id)
        #expect(queueRow.latestRequestID == id)

        let published = publisher.messages
        #expect(!published.isEmpty)
        #expect(Set(published.map(\.id)) == [id.description])
        #expect(published.allSatisfy { $0.topic == .process && $0.partitionKey == queue.rawValue })
    }

    @Test("32 threads ingesting a head the branch was reset to mint one fresh request and re-point its index row")
    func concurrentIngestOfAResetHead() async throws {
        let threadCount = 32
        let (backend, storage) = try await Self.storage(poolWidth: threadCount)
        defer { backend.tearDown() }
        defer { storage.close() }

        let queue = try QueueName("app/main")
        let old = SourceURI("git://app/main/1111111111111111111111111111111111111111")
        let newer = SourceURI("git://app/main/2222222222222222222222222222222222222222")
        let sources = MovableHead(old)
        let controller = IngestController(
            requests: storage.requests, uris: storage.requestURIs, queues: storage.queues, counter: storage.counter,
            sources: sources, publisher: RecordingTopicPublisher(), logger: silentLogger)
        let (first, second) = try await offPool { () -> (IngestResult, IngestResult) in
            let first = try controller.ingest(queue: queue.rawValue)
            sources.head.withLock { $0 = newer }
            let second = try controller.ingest(queue: queue.rawValue)
            sources.head.withLock { $0 = old }
            return (first, second)
        }
        #expect(first.request.id.number == 1)
        #expect(second.request.id.number == 2)

        let results = Mutex<[Result<IngestResult, IngestError>]>([])
        let finished = await onThreads(threadCount, timeout: .seconds(120)) { _ in
            let outcome = Result { () throws(IngestError) in try controller.ingest(queue: queue.rawValue) }
            results.withLock { $0.append(outcome) }
        }
        #expect(finished, "not every ingest returned within the deadline")
        let outcomes = try results.withLock { try $0.map { try $0.get() } }
        #expect(outcomes.count == threadCount)
        let ids = Set(outcomes.map(\.request.id))
        #expect(ids.count == 1, "\(ids)")
        #expect(outcomes.filter(\.minted).count == 1)
        let id = try #require(ids.first)
        #expect(second.request.id.isOlder(than: id))

        let (uriRows, indexed, latest, requests) = try await offPool {
            (
                try storage.pool.withConnection { try $0.query("SELECT COUNT(*) FROM request_uris").first?.int64(0) },
                try storage.requestURIs.id(queue: queue, uri: old), try storage.queues.get(queue).latestRequestID,
                try storage.requests.list(queue: queue, before: nil, limit: 10)
            )
        }
        #expect(uriRows == 2)
        #expect(indexed == id)
        #expect(latest == id)
        #expect(requests.map(\.id) == [id, second.request.id, first.request.id])
        #expect(requests.first?.uri == old)
    }
}
