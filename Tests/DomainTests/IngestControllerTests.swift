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

    @Test func aHeadURIEndingInASpaceIsRefusedBeforeAnyWrite() throws {
        let world = World()
        world.setHead("git://q/c1 ")
        #expect {
            try world.ingest.ingest(queue: "q")
        } throws: { error in
            guard case .unavailable(let detail) = error as? IngestError else { return false }
            return detail.contains("ends in a space")
        }
        #expect(try world.requests.base.list(queue: q, before: nil, limit: 10).isEmpty)
        #expect(world.publisher.messages.isEmpty)
        #expect(try world.counter.base.next(queue: q, domain: requestCounterDomain) == 1, "no id was minted")

        world.setHead("git://q/c1")
        #expect(try world.ingest.ingest(queue: "q").minted)
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

    /// Runs `threads` ingests of q at once, each on its own thread; their results, once all are in (30 s at most).
    static func ingestConcurrently(_ world: World, threads count: Int) throws -> [IngestResult] {
        let results = Mutex<[Result<IngestResult, IngestError>]>([])
        let threads = (0..<count).map { _ in
            Thread {
                let result = Result { () throws(IngestError) in try world.ingest.ingest(queue: "q") }
                results.withLock { $0.append(result) }
            }
        }
        threads.forEach { $0.start() }
        let deadline = Date().addingTimeInterval(30)
        while results.withLock({ $0.count }) < count && Date() < deadline { usleep(1000) }
        return try results.withLock { try $0.map { try $0.get() } }
    }

    @Test func sixtyFourThreadsIngestingOneHeadConverge() throws {
        let world = World()
        let outcomes = try Self.ingestConcurrently(world, threads: 64)
        #expect(outcomes.count == 64)
        #expect(Set(outcomes.map(\.request.id)).count == 1)
        #expect(outcomes.filter(\.minted).count == 1)
        #expect(try world.requests.base.list(queue: q, before: nil, limit: 100).count == 1)
    }

    /// A -> B -> A: request 1 is superseded by 2, then the branch is reset to A.
    private func resetToFirstHead(_ world: World) throws -> (first: IngestResult, second: IngestResult) {
        let first = try world.ingest.ingest(queue: "q")
        world.setHead("git://q/c2")
        let second = try world.ingest.ingest(queue: "q")
        #expect(try world.deliver(first.request.id) == .ack)
        #expect(try world.requests.base.get(first.request.id).state == .superseded)
        world.setHead("git://q/c1")
        return (first, second)
    }

    @Test func aResetToAnOldHeadMintsAFreshRequestForIt() throws {
        let world = World()
        let (first, second) = try resetToFirstHead(world)

        let reset = try world.ingest.ingest(queue: "q")
        #expect(reset.minted)
        #expect(reset.request.id == RequestID(queue: q, number: 3))
        #expect(reset.request.uri == SourceURI("git://q/c1"))
        #expect(reset.request.state == .accepted)
        #expect(try world.requests.base.get(reset.request.id) == reset.request)
        #expect(try world.uris.base.id(queue: q, uri: SourceURI("git://q/c1")) == reset.request.id)
        #expect(try world.queues.base.get(q).latestRequestID == reset.request.id)
        #expect(world.publisher.messages.last?.id == reset.request.id.description)
        #expect(try world.requests.base.get(first.request.id).state == .superseded, "the old request is left as it was")

        let again = try world.ingest.ingest(queue: "q")
        #expect(!again.minted)
        #expect(again.request.id == reset.request.id)
        #expect(try world.requests.base.list(queue: q, before: nil, limit: 10).count == 3)
        #expect(try world.deliver(second.request.id) == .ack)
        #expect(try world.requests.base.get(second.request.id).state == .superseded)
        #expect(try world.deliver(reset.request.id) == .ack)
        #expect(try world.requests.base.get(reset.request.id).state == .processing)
    }

    @Test func aResetToAHeadWhoseRequestIsStillAcceptedMintsAFreshRequest() throws {
        let world = World()
        let first = try world.ingest.ingest(queue: "q")
        world.setHead("git://q/c2")
        _ = try world.ingest.ingest(queue: "q")
        world.setHead("git://q/c1")

        let reset = try world.ingest.ingest(queue: "q")
        #expect(reset.minted)
        #expect(reset.request.id.number == 3)
        #expect(try world.queues.base.get(q).latestRequestID == reset.request.id)
        // The republished old request would only be superseded; the fresh one is what gets validated.
        #expect(try world.deliver(first.request.id) == .ack)
        #expect(try world.requests.base.get(first.request.id).state == .superseded)
    }

    @Test func aStaleFirstReadIngestsTheNewerHeadAndMintsNothing() throws {
        let world = World()
        _ = try world.ingest.ingest(queue: "q")
        world.setHead("git://q/c2")
        let second = try world.ingest.ingest(queue: "q")
        world.scriptReads(["git://q/c1"])
        let readsBefore = world.headReads

        let result = try world.ingest.ingest(queue: "q")
        #expect(!result.minted)
        #expect(result.request.id == second.request.id)
        #expect(world.headReads == readsBefore + 2)
        #expect(try world.queues.base.get(q).latestRequestID == second.request.id)
        #expect(try world.uris.base.id(queue: q, uri: SourceURI("git://q/c1")) == RequestID(queue: q, number: 1))
        #expect(try world.counter.base.next(queue: q, domain: requestCounterDomain) == 3, "no id was minted")
    }

    @Test func aClaimedRequestThatIsTheLatestOrNewerIsAnsweredAfterOneRead() throws {
        let world = World()
        let first = try world.ingest.ingest(queue: "q")
        let again = try world.ingest.ingest(queue: "q")
        #expect(!again.minted)
        #expect(again.request.id == first.request.id)
        #expect(world.headReads == 2)

        // An index entry newer than the queue's latest (an ingest that stopped before advancing it).
        let ahead = RequestID(queue: q, number: 5)
        try world.uris.base.create(queue: q, uri: SourceURI("git://q/c9"), id: ahead)
        world.setHead("git://q/c9")
        let healed = try world.ingest.ingest(queue: "q")
        #expect(healed.request.id == ahead)
        #expect(world.headReads == 3)
        #expect(try world.queues.base.get(q).latestRequestID == ahead)
        #expect(try world.counter.base.next(queue: q, domain: requestCounterDomain) == 2, "no id was minted")
    }

    @Test func aResetThatLosesTheIndexRaceAnswersWithTheWinnersRequest() throws {
        let world = World()
        _ = try resetToFirstHead(world)
        let winner = RequestID(queue: q, number: 40)
        let uris = world.uris
        let queue = q
        world.uris.beforeReplace.withLock {
            $0 = {
                try? uris.base.replace(
                    queue: queue, uri: SourceURI("git://q/c1"), expected: RequestID(queue: queue, number: 1), with: winner)
            }
        }

        let result = try world.ingest.ingest(queue: "q")
        #expect(result.request.id == winner)
        #expect(result.request.state == .accepted)
        #expect(try world.uris.base.id(queue: q, uri: SourceURI("git://q/c1")) == winner)
        #expect(try world.queues.base.get(q).latestRequestID == winner)
        #expect(throws: BackendError.notFound) { try world.requests.base.get(RequestID(queue: queue, number: 3)) }
    }

    @Test func aResetWhoseIndexWriteFailsIsUnavailableAndARetryConverges() throws {
        let world = World()
        _ = try resetToFirstHead(world)
        world.uris.faults.inject("replace", Self.outage)
        #expect(throws: IngestError.self) { try world.ingest.ingest(queue: "q") }
        #expect(try world.uris.base.id(queue: q, uri: SourceURI("git://q/c1")) == RequestID(queue: q, number: 1))

        let retried = try world.ingest.ingest(queue: "q")
        #expect(retried.minted)
        #expect(retried.request.uri == SourceURI("git://q/c1"))
        #expect(try world.queues.base.get(q).latestRequestID == retried.request.id)
    }

    /// c1's first ingest stopped after claiming request 1 in the index and before writing its row; c2 came next.
    private func orphanFirstClaimThenMoveOn(_ world: World) throws -> IngestResult {
        world.requests.faults.inject("create", Self.outage)
        #expect(throws: IngestError.self) { try world.ingest.ingest(queue: "q") }
        #expect(try world.uris.base.id(queue: q, uri: SourceURI("git://q/c1")) == RequestID(queue: q, number: 1))
        world.setHead("git://q/c2")
        return try world.ingest.ingest(queue: "q")
    }

    @Test func aResetOntoAClaimWhoseRowWasNeverWrittenWritesOnlyTheFreshRequest() throws {
        let world = World()
        let second = try orphanFirstClaimThenMoveOn(world)
        world.setHead("git://q/c1")

        let reset = try world.ingest.ingest(queue: "q")
        #expect(reset.minted)
        #expect(reset.request.id == RequestID(queue: q, number: 3))
        // One request for c1: the abandoned claim's row is not written on the way to the fresh one, where it
        // would sit accepted with no message until some sweep found it.
        #expect(try world.requests.base.list(queue: q, before: nil, limit: 10).map(\.id) == [reset.request.id, second.request.id])
        #expect(world.publisher.messages.map(\.id) == [second.request.id.description, reset.request.id.description])
    }

    @Test func aStaleReadOfAClaimWhoseRowWasNeverWrittenWritesNothing() throws {
        let world = World()
        let second = try orphanFirstClaimThenMoveOn(world)
        world.scriptReads(["git://q/c1"])

        let result = try world.ingest.ingest(queue: "q")
        #expect(!result.minted)
        #expect(result.request.id == second.request.id)
        #expect(try world.requests.base.list(queue: q, before: nil, limit: 10).map(\.id) == [second.request.id])
    }

    @Test func aRefDeletedBetweenTheTwoReadsIsAnUnknownQueueThatWroteNothing() throws {
        let world = World()
        let second = try orphanFirstClaimThenMoveOn(world)
        world.source.state.withLock { $0.head = nil }
        world.scriptReads(["git://q/c1"])

        #expect(throws: IngestError.unknownQueue(q)) { try world.ingest.ingest(queue: "q") }
        // A 404 changes nothing: no row for the abandoned claim, no id minted, the index and the queue as they were.
        #expect(try world.requests.base.list(queue: q, before: nil, limit: 10).map(\.id) == [second.request.id])
        #expect(try world.uris.base.id(queue: q, uri: SourceURI("git://q/c1")) == RequestID(queue: q, number: 1))
        #expect(try world.queues.base.get(q).latestRequestID == second.request.id)
        #expect(try world.counter.base.next(queue: q, domain: requestCounterDomain) == 3)
    }

    @Test func sixtyFourThreadsIngestingAResetHeadConvergeOnOneFreshRequest() throws {
        let world = World()
        let (first, second) = try resetToFirstHead(world)
        let outcomes = try Self.ingestConcurrently(world, threads: 64)
        #expect(outcomes.count == 64)
        let ids = Set(outcomes.map(\.request.id))
        #expect(ids.count == 1, "\(ids)")
        let id = try #require(ids.first)
        #expect(second.request.id.isOlder(than: id))
        #expect(outcomes.filter(\.minted).count == 1)
        #expect(try world.uris.base.id(queue: q, uri: SourceURI("git://q/c1")) == id)
        #expect(try world.queues.base.get(q).latestRequestID == id)
        #expect(try world.requests.base.list(queue: q, before: nil, limit: 100).map(\.id) == [id, second.request.id, first.request.id])
        #expect(world.publisher.messages.contains { $0.id == id.description })
    }
}
