import Domain
import Foundation
import Synchronization
import Testing

@Suite struct IngestControllerTests {
    let q: QueueName

    init() throws { q = try QueueName("q") }

    @Test func mintsPersistsAndPublishes() throws {
        let world = World()
        let result = try world.ingest.ingest(queue: "q")
        #expect(result.minted)
        #expect(result.request.id.description == "request/q/1")
        #expect(result.request.uri == SourceURI("git://q/c1"))
        #expect(result.request.state == .accepted)
        #expect(result.request.version == 1)
        #expect(result.request.buildStrategy == .undecided)
        #expect(try world.requests.base.get(result.request.id) == result.request)
        #expect(try world.uris.base.id(queue: q, uri: SourceURI("git://q/c1")) == result.request.id)
        #expect(try world.queues.base.get(q).latestRequestID == result.request.id)
        let message = try #require(world.publisher.messages.first)
        #expect(world.publisher.messages.count == 1)
        #expect(message.topic == .process)
        #expect(message.partitionKey == "q")
        #expect(message.id == "request/q/1")
        #expect(try JSONDecoder().decode(ProcessMessage.self, from: Data(message.payload)) == ProcessMessage(id: result.request.id))
    }

    @Test func reingestOfAcceptedRepublishesWithoutMinting() throws {
        let world = World()
        let first = try world.ingest.ingest(queue: "q")
        let second = try world.ingest.ingest(queue: "q")
        #expect(!second.minted)
        #expect(second.request == first.request)
        #expect(world.publisher.messages.map(\.id) == ["request/q/1", "request/q/1"])
        #expect(try world.counter.base.next(queue: q, domain: requestCounterDomain) == 2)
    }

    @Test func reingestAfterProcessingDoesNotPublish() throws {
        let world = World()
        let first = try world.ingest.ingest(queue: "q")
        #expect(try world.deliver(first.request.id) == .ack)
        let again = try world.ingest.ingest(queue: "q")
        #expect(again.request.state == .processing)
        #expect(world.publisher.messages.count == 1)
    }

    @Test func newHeadMintsTheNextIDAndAdvancesTheQueue() throws {
        let world = World()
        _ = try world.ingest.ingest(queue: "q")
        world.setHead("git://q/c2")
        let second = try world.ingest.ingest(queue: "q")
        #expect(second.minted)
        #expect(second.request.id.number == 2)
        #expect(try world.queues.base.get(q).latestRequestID == second.request.id)
    }

    @Test func mappingWithoutRowIsHealed() throws {
        let world = World()
        let orphan = RequestID(queue: q, number: 5)
        try world.uris.base.create(queue: q, uri: SourceURI("git://q/c1"), id: orphan)
        let result = try world.ingest.ingest(queue: "q")
        #expect(result.request.id == orphan)
        #expect(try world.requests.base.get(orphan).state == .accepted)
        #expect(world.publisher.messages.map(\.id) == [orphan.description])
    }

    @Test func lostClaimRaceReturnsTheWinnersID() throws {
        let world = World()
        let winner = RequestID(queue: q, number: 77)
        let uris = world.uris
        let queue = q
        world.uris.beforeCreate.withLock {
            $0 = { try? uris.base.create(queue: queue, uri: SourceURI("git://q/c1"), id: winner) }
        }
        let result = try world.ingest.ingest(queue: "q")
        #expect(result.request.id == winner)
        #expect(throws: BackendError.notFound) { try world.requests.base.get(RequestID(queue: queue, number: 1)) }
        #expect(try world.requests.base.list(queue: q, before: nil, limit: 10).map(\.id) == [winner])
    }

    @Test(arguments: ["", "a//b", "/a", "a/../b", "a b"])
    func invalidNamesAreUserErrors(_ name: String) {
        let world = World()
        #expect {
            try world.ingest.ingest(queue: name)
        } throws: { error in
            guard case IngestError.invalidQueueName = error else { return false }
            return true
        }
        #expect(world.publisher.messages.isEmpty)
    }

    @Test func unknownQueueIsAUserError() throws {
        let world = World()
        #expect(throws: IngestError.unknownQueue(try QueueName("nope"))) { try world.ingest.ingest(queue: "nope") }
    }

    @Test func unknownRefIsAnUnknownQueue() {
        let world = World()
        world.source.state.withLock { $0.head = nil }
        #expect(throws: IngestError.unknownQueue(q)) { try world.ingest.ingest(queue: "q") }
    }

    @Test func sourceControlFailureIsUnavailable() {
        let world = World()
        world.source.state.withLock { $0.latestError = .unavailable(retryable: true, detail: "git timed out") }
        do {
            _ = try world.ingest.ingest(queue: "q")
            Issue.record("ingest succeeded while source control was down")
        } catch {
            guard case .unavailable = error else {
                Issue.record("expected unavailable, got \(error)")
                return
            }
        }
    }

    @Test func aHeadURILongerThanStoresKeepIsRefusedBeforeAnyWrite() throws {
        let world = World()
        world.setHead("git://q/" + String(repeating: "c", count: SourceURI.maxLength - 7))
        #expect {
            try world.ingest.ingest(queue: "q")
        } throws: { error in
            guard case .unavailable(let detail) = error as? IngestError else { return false }
            return detail.contains("longer than \(SourceURI.maxLength)")
        }
        #expect(try world.requests.base.list(queue: q, before: nil, limit: 10).isEmpty)
        #expect(world.publisher.messages.isEmpty)
        #expect(try world.counter.base.next(queue: q, domain: requestCounterDomain) == 1, "no id was minted")

        world.setHead("git://q/" + String(repeating: "c", count: SourceURI.maxLength - 8))
        #expect(try world.ingest.ingest(queue: "q").minted, "a URI of exactly the limit is kept")
    }

    @Test func aHeadWhosePublishFailedDoesNotSupersedeTheRequestBeforeIt() throws {
        let world = World()
        let first = try world.ingest.ingest(queue: "q")
        world.setHead("git://q/c2")
        world.publisher.failure.withLock { $0 = Self.outage }
        #expect(throws: IngestError.self) { try world.ingest.ingest(queue: "q") }
        world.publisher.failure.withLock { $0 = nil }

        // Nothing will process request 2 until its head is ingested again, so request 1 is validated.
        #expect(try world.queues.base.get(q).latestRequestID == first.request.id)
        #expect(try world.deliver(first.request.id) == .ack)
        #expect(try world.requests.base.get(first.request.id).state == .processing)

        let retried = try world.ingest.ingest(queue: "q")
        #expect(retried.request.id.number == 2)
        #expect(try world.queues.base.get(q).latestRequestID == retried.request.id)
        #expect(world.publisher.messages.last?.id == retried.request.id.description)
    }

    static let outage = BackendError.unavailable(retryable: true, detail: "down")

    @Test(arguments: ["counter", "uri.id", "uri.create", "request.create", "queue.get", "queue.update", "publish"])
    func infrastructureFailuresSurfaceAsUnavailable(_ failing: String) throws {
        let world = World()
        if failing == "queue.update" {
            try world.queues.base.create(Queue(name: q))
        }
        switch failing {
        case "counter": world.counter.faults.inject("next", Self.outage)
        case "uri.id": world.uris.faults.inject("id", Self.outage)
        case "uri.create": world.uris.faults.inject("create", Self.outage)
        case "request.create": world.requests.faults.inject("create", Self.outage)
        case "queue.get": world.queues.faults.inject("get", Self.outage)
        case "queue.update": world.queues.faults.inject("update", Self.outage)
        default: world.publisher.failure.withLock { $0 = Self.outage }
        }
        do {
            _ = try world.ingest.ingest(queue: "q")
            Issue.record("ingest succeeded despite a failing \(failing)")
        } catch {
            guard case .unavailable = error else {
                Issue.record("expected unavailable, got \(error)")
                return
            }
        }
        // A retry once the dependency is back converges on one request.
        world.publisher.failure.withLock { $0 = nil }
        let retried = try world.ingest.ingest(queue: "q")
        #expect(retried.request.state == .accepted)
        #expect(try world.requests.base.list(queue: q, before: nil, limit: 10).count == 1)
        #expect(world.publisher.messages.last?.id == retried.request.id.description)
    }

    @Test func queueVersionRaceIsRetried() throws {
        let world = World()
        _ = try world.ingest.ingest(queue: "q")
        world.setHead("git://q/c2")
        world.queues.faults.inject("update", .versionMismatch, times: 3)
        let result = try world.ingest.ingest(queue: "q")
        #expect(try world.queues.base.get(q).latestRequestID == result.request.id)
    }

    @Test func latestNeverMovesBackwards() throws {
        let world = World()
        let newer = RequestID(queue: q, number: 9)
        try world.queues.base.create(Queue(name: q, latestRequestID: newer))
        _ = try world.ingest.ingest(queue: "q")
        #expect(try world.queues.base.get(q).latestRequestID == newer)
    }

    @Test func sixtyFourThreadsIngestingOneHeadConverge() throws {
        let world = World()
        let results = Mutex<[Result<IngestResult, IngestError>]>([])
        let threads = (0..<64).map { _ in
            Thread {
                let result = Result { () throws(IngestError) in try world.ingest.ingest(queue: "q") }
                results.withLock { $0.append(result) }
            }
        }
        threads.forEach { $0.start() }
        let deadline = Date().addingTimeInterval(30)
        while results.withLock({ $0.count }) < 64 && Date() < deadline { usleep(1000) }
        let outcomes = try results.withLock { try $0.map { try $0.get() } }
        #expect(outcomes.count == 64)
        #expect(Set(outcomes.map(\.request.id)).count == 1)
        #expect(outcomes.filter(\.minted).count == 1)
        #expect(try world.requests.base.list(queue: q, before: nil, limit: 100).count == 1)
    }
}
