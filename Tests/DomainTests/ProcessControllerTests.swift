import Domain
import Foundation
import Testing

@Suite struct ProcessControllerTests {
    /// Request 1 processing, then request 2 written but its publish failed, so it has no message: the
    /// branch moves on before anyone retries it. Returns the ids of both.
    private func strandSecondRequest(in world: World) throws -> (first: RequestID, stranded: RequestID) {
        let first = try world.ingest.ingest(queue: "q")
        #expect(try world.deliver(first.request.id) == .ack)
        world.setHead("git://q/c2")
        world.publisher.failure.withLock { $0 = BackendError.unavailable(retryable: true, detail: "down") }
        #expect(throws: IngestError.self) { try world.ingest.ingest(queue: "q") }
        world.publisher.failure.withLock { $0 = nil }
        let stranded = try RequestID(parsing: "request/q/2")
        #expect(try world.requests.base.get(stranded).state == .accepted)
        return (first.request.id, stranded)
    }

    @Test func aRequestStartingToProcessSupersedesOlderOnesLeftAccepted() throws {
        let world = World()
        let (first, stranded) = try strandSecondRequest(in: world)
        world.setHead("git://q/c3")
        let third = try world.ingest.ingest(queue: "q")

        #expect(try world.deliver(third.request.id) == .ack)
        #expect(try world.requests.base.get(third.request.id).state == .processing)
        #expect(try world.requests.base.get(stranded).state == .superseded)
        #expect(try world.requests.base.get(first).state == .processing, "only accepted ones are superseded")
        // The sweep is counted apart from deliveries: request 2 never had one.
        #expect(try world.metrics.expectCounter("stovepipe_process_swept_total").totalValue == 1)
        #expect(try world.metrics.expectCounter("stovepipe_process_total", [("outcome", "processing")]).totalValue == 2)
        #expect(try world.metrics.expectCounter("stovepipe_process_total", [("outcome", "superseded")]).totalValue == 0)
    }

    @Test func theSweepReachesAStrandedRequestBelowManySupersededOnes() throws {
        let world = World()
        let (first, stranded) = try strandSecondRequest(in: world)

        // A busy branch: 78 heads, more than a page of the sweep (50), come in before the consumer catches up,
        // and the deliveries of all but the newest supersede themselves.
        var ids: [RequestID] = []
        for commit in 3...80 {
            world.setHead("git://q/c\(commit)")
            ids.append(try world.ingest.ingest(queue: "q").request.id)
        }
        let newest = try #require(ids.last)
        ids.removeLast()
        for id in ids { #expect(try world.deliver(id) == .ack) }
        #expect(try ids.allSatisfy { try world.requests.base.get($0).state == .superseded })

        #expect(try world.deliver(newest) == .ack)
        #expect(try world.requests.base.get(newest).state == .processing)
        #expect(try world.requests.base.get(stranded).state == .superseded)
        #expect(try world.requests.base.get(first).state == .processing)
        #expect(try world.metrics.expectCounter("stovepipe_process_swept_total").totalValue == 1)
    }

    @Test func theSweepLeavesAloneWhatTheQueuesLatestRequestIsNotNewerThan() throws {
        let world = World()
        let first = try world.ingest.ingest(queue: "q")
        // Request 2 is written and published, but the queue's latest stays at 1.
        world.setHead("git://q/c2")
        world.queues.faults.inject("update", BackendError.unavailable(retryable: true, detail: "down"))
        #expect(throws: IngestError.self) { try world.ingest.ingest(queue: "q") }
        let second = try RequestID(parsing: "request/q/2")
        #expect(try world.queues.base.get(QueueName("q")).latestRequestID == first.request.id)

        #expect(try world.deliver(second) == .ack)
        #expect(try world.requests.base.get(second).state == .processing)
        // Request 1 is still the queue's latest: its own delivery would process it, so the sweep must not
        // supersede it.
        #expect(try world.requests.base.get(first.request.id).state == .accepted)
        #expect(try world.deliver(first.request.id) == .ack)
        #expect(try world.requests.base.get(first.request.id).state == .processing)
        #expect(try world.metrics.expectCounter("stovepipe_process_swept_total").totalValue == 0)
    }

    @Test func fullBuildWithoutALastGreen() throws {
        let world = World()
        let id = try world.ingest.ingest(queue: "q").request.id
        #expect(try world.deliver(id) == .ack)
        let request = try world.requests.base.get(id)
        #expect(request.state == .processing)
        #expect(request.buildStrategy == .full)
        #expect(request.baseURI == nil)
        #expect(request.version == 2)
        #expect(world.source.state.withLock { $0.ancestryCalls.isEmpty })
    }

    @Test func incrementalWhenTheLastGreenIsAnAncestor() throws {
        let world = World()
        let id = try world.ingest.ingest(queue: "q").request.id
        try world.setLastGreen("git://q/c0")
        #expect(try world.deliver(id) == .ack)
        let request = try world.requests.base.get(id)
        #expect(request.buildStrategy == .incrementalSinceGreen)
        #expect(request.baseURI == SourceURI("git://q/c0"))
        let calls = world.source.state.withLock { $0.ancestryCalls }
        #expect(calls.map(\.0) == [SourceURI("git://q/c0")])
        #expect(calls.map(\.1) == [SourceURI("git://q/c1")])
    }

    @Test func rewrittenHistoryBuildsFull() throws {
        let world = World()
        let id = try world.ingest.ingest(queue: "q").request.id
        try world.setLastGreen("git://q/c0")
        world.source.state.withLock { $0.ancestry = .success(false) }
        #expect(try world.deliver(id) == .ack)
        let request = try world.requests.base.get(id)
        #expect(request.buildStrategy == .full)
        #expect(request.baseURI == nil)
    }

    @Test func unknownAncestryBuildsFull() throws {
        let world = World()
        let id = try world.ingest.ingest(queue: "q").request.id
        try world.setLastGreen("git://q/gone")
        world.source.state.withLock { $0.ancestry = .failure(.notFound) }
        #expect(try world.deliver(id) == .ack)
        #expect(try world.requests.base.get(id).buildStrategy == .full)
    }

    @Test func sourceControlOutageIsRetried() throws {
        let world = World()
        let id = try world.ingest.ingest(queue: "q").request.id
        try world.setLastGreen("git://q/c0")
        world.source.state.withLock { $0.ancestry = .failure(.unavailable(retryable: true, detail: "git timed out")) }
        guard case .retry = try world.deliver(id) else {
            Issue.record("expected a retry")
            return
        }
        #expect(try world.requests.base.get(id).state == .accepted)
    }

    @Test func olderHeadsAreSuperseded() throws {
        let world = World()
        let first = try world.ingest.ingest(queue: "q").request.id
        world.setHead("git://q/c2")
        let second = try world.ingest.ingest(queue: "q").request.id
        #expect(try world.deliver(first) == .ack)
        #expect(try world.requests.base.get(first).state == .superseded)
        #expect(try world.deliver(second) == .ack)
        #expect(try world.requests.base.get(second).state == .processing)
    }

    @Test func redeliveryAfterProcessingChangesNothing() throws {
        let world = World()
        let id = try world.ingest.ingest(queue: "q").request.id
        #expect(try world.deliver(id) == .ack)
        let before = try world.requests.base.get(id)
        try world.setLastGreen("git://q/c0")
        #expect(try world.deliver(id, attempt: 2) == .ack)
        #expect(try world.requests.base.get(id) == before)
    }

    @Test(arguments: [#"not json"#, #"{"id": "request/q/1"}"#, #"{"id": "request/q/0", "queue": "q"}"#,
        #"{"id": "request/q/1", "queue": "other"}"#, #"[]"#])
    func malformedPayloadIsRejected(_ payload: String) {
        let world = World()
        let message = Message(topic: .process, partitionKey: "q", id: "x", payload: Array(payload.utf8))
        guard case .reject = world.process.handle(Delivery(message: message, attempt: 1)) else {
            Issue.record("expected a reject")
            return
        }
    }

    @Test func missingRequestIsRejectedNotRetried() throws {
        let world = World()
        let id = RequestID(queue: try QueueName("q"), number: 3)
        let payload = try JSONEncoder().encode(ProcessMessage(id: id))
        let message = Message(topic: .process, partitionKey: "q", id: id.description, payload: Array(payload))
        guard case .reject = world.process.handle(Delivery(message: message, attempt: 1)) else {
            Issue.record("expected a reject")
            return
        }
    }

    @Test func versionRaceIsRetriedAndConverges() throws {
        let world = World()
        let id = try world.ingest.ingest(queue: "q").request.id
        world.requests.faults.inject("update", .versionMismatch)
        guard case .retry = try world.deliver(id) else {
            Issue.record("expected a retry")
            return
        }
        #expect(try world.requests.base.get(id).state == .accepted)
        #expect(try world.deliver(id, attempt: 2) == .ack)
        let request = try world.requests.base.get(id)
        #expect(request.state == .processing)
        #expect(request.version == 2)
    }

    @Test func storeOutageIsRetried() throws {
        let world = World()
        let id = try world.ingest.ingest(queue: "q").request.id
        world.requests.faults.inject("get", .unavailable(retryable: true, detail: "down"))
        guard case .retry = try world.deliver(id) else {
            Issue.record("expected a retry")
            return
        }
        #expect(try world.deliver(id, attempt: 2) == .ack)
    }
}
