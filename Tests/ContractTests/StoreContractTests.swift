import Domain
import Foundation
import Synchronization
import TestSupport
import Testing

private let created = Date(timeIntervalSince1970: 1_700_000_000)
private let later = Date(timeIntervalSince1970: 1_700_000_600)

private func queueName(_ raw: String) throws -> QueueName { try QueueName(raw) }

private func request(_ queue: QueueName, _ number: UInt64, uri: String? = nil) -> Request {
    Request(
        id: RequestID(queue: queue, number: number), uri: SourceURI(uri ?? "git://\(queue)/c\(number)"),
        createdAt: created.addingTimeInterval(Double(number))
    )
}

@Suite("RequestStore contract")
struct RequestStoreContractTests {
    @Test("create then get returns the same request", arguments: allFixtures)
    func createThenGet(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let original = Request(
                id: RequestID(queue: try queueName("team/main"), number: 7), uri: SourceURI("git://x/abc"),
                state: .processing, buildStrategy: .incrementalSinceGreen, baseURI: SourceURI("git://x/base"),
                version: 3, createdAt: created, updatedAt: later
            )
            try backend.stores.requests.create(original)
            #expect(try backend.stores.requests.get(original.id) == original)
        }
    }

    @Test("get of an unknown id is notFound", arguments: allFixtures)
    func getUnknown(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let id = RequestID(queue: try queueName("q"), number: 1)
            #expect(throws: BackendError.notFound) { try backend.stores.requests.get(id) }
        }
    }

    @Test("a second create of one id is alreadyExists and keeps the first", arguments: allFixtures)
    func duplicateID(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let first = request(try queueName("q"), 1, uri: "git://q/first")
            try backend.stores.requests.create(first)
            let second = request(try queueName("q"), 1, uri: "git://q/second")
            #expect(throws: BackendError.alreadyExists) { try backend.stores.requests.create(second) }
            #expect(try backend.stores.requests.get(first.id) == first)
        }
    }

    @Test("update with the stored version writes the mutable fields and the new version", arguments: allFixtures)
    func updateCASSuccess(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let original = request(try queueName("q"), 1)
            try backend.stores.requests.create(original)
            var changed = original
            changed.state = .succeeded
            changed.buildStrategy = .full
            changed.baseURI = SourceURI("git://q/base")
            changed.updatedAt = later
            try backend.stores.requests.update(changed, oldVersion: 1, newVersion: 2)

            let stored = try backend.stores.requests.get(original.id)
            #expect(stored.state == .succeeded)
            #expect(stored.buildStrategy == .full)
            #expect(stored.baseURI == SourceURI("git://q/base"))
            #expect(stored.updatedAt == later)
            #expect(stored.version == 2)
            #expect(stored.uri == original.uri)
            #expect(stored.createdAt == original.createdAt)
        }
    }

    @Test("update with a stale version is versionMismatch and changes nothing", arguments: allFixtures)
    func updateStale(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let original = request(try queueName("q"), 1)
            try backend.stores.requests.create(original)
            var first = original
            first.state = .processing
            try backend.stores.requests.update(first, oldVersion: 1, newVersion: 2)

            var stale = original
            stale.state = .cancelled
            #expect(throws: BackendError.versionMismatch) {
                try backend.stores.requests.update(stale, oldVersion: 1, newVersion: 2)
            }
            let stored = try backend.stores.requests.get(original.id)
            #expect(stored.state == .processing)
            #expect(stored.version == 2)
        }
    }

    @Test("update of a missing row is versionMismatch and creates nothing", arguments: allFixtures)
    func updateMissing(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let ghost = request(try queueName("q"), 5)
            #expect(throws: BackendError.versionMismatch) {
                try backend.stores.requests.update(ghost, oldVersion: 1, newVersion: 2)
            }
            #expect(throws: BackendError.notFound) { try backend.stores.requests.get(ghost.id) }
        }
    }

    @Test("an update that does not advance the version is refused as final and changes nothing", arguments: allFixtures)
    func updateMustAdvanceVersion(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let original = request(try queueName("q"), 1)
            try backend.stores.requests.create(original)
            var changed = original
            changed.state = .succeeded
            changed.updatedAt = later
            // A strong ETag derives from the version: a write that keeps it would leave a cached body looking fresh.
            for newVersion: UInt64 in [1, 0] {
                let refused = refusal { () throws(BackendError) in
                    try backend.stores.requests.update(changed, oldVersion: 1, newVersion: newVersion)
                }
                #expect(refused == .some(.unavailable(retryable: false, detail: versionNotAdvanced)), "\(newVersion)")
            }
            #expect(try backend.stores.requests.get(original.id) == original)
        }
    }

    @Test("list is newest first by n (numerically), honours before and limit, one queue only", arguments: allFixtures)
    func listOrdering(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let queue = try queueName("team/main")
            let other = try queueName("team/other")
            // Created out of order so neither insertion order nor text order (10 < 9) can pass.
            for number: UInt64 in [3, 10, 1, 12, 9, 2, 11, 4, 8, 5, 7, 6] {
                try backend.stores.requests.create(request(queue, number))
            }
            try backend.stores.requests.create(request(other, 100))

            let all = try backend.stores.requests.list(queue: queue, before: nil, limit: 100)
            #expect(all.map(\.id.number) == [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
            #expect(try backend.stores.requests.list(queue: queue, before: nil, limit: 2).map(\.id.number) == [12, 11])
            #expect(try backend.stores.requests.list(queue: queue, before: 10, limit: 3).map(\.id.number) == [9, 8, 7])
            #expect(try backend.stores.requests.list(queue: queue, before: 3, limit: 10).map(\.id.number) == [2, 1])
            #expect(try backend.stores.requests.list(queue: queue, before: 1, limit: 10).isEmpty)
            #expect(try backend.stores.requests.list(queue: other, before: nil, limit: 10).map(\.id.number) == [100])
            #expect(try backend.stores.requests.list(queue: try queueName("empty"), before: nil, limit: 10).isEmpty)
            #expect(all.first == request(queue, 12))
        }
    }

    @Test("list without before includes the largest n, which every UInt64 counter value may be", arguments: allFixtures)
    func listWithoutBeforeIncludesTheLargestNumber(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let queue = try queueName("team/main")
            let largest = Request(id: RequestID(queue: queue, number: UInt64.max), uri: SourceURI("git://x/max"), createdAt: created)
            try backend.stores.requests.create(largest)
            try backend.stores.requests.create(request(queue, 1))

            #expect(try backend.stores.requests.list(queue: queue, before: nil, limit: 10).map(\.id.number) == [UInt64.max, 1])
            #expect(try backend.stores.requests.list(queue: queue, before: UInt64.max, limit: 10).map(\.id.number) == [1])
        }
    }
}

@Suite("RequestURIStore contract")
struct RequestURIStoreContractTests {
    @Test("a claimed (queue, uri) maps back to its request id", arguments: allFixtures)
    func roundTrip(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let queue = try queueName("q")
            let id = RequestID(queue: queue, number: 4)
            try backend.stores.uris.create(queue: queue, uri: SourceURI("git://q/c4"), id: id)
            #expect(try backend.stores.uris.id(queue: queue, uri: SourceURI("git://q/c4")) == id)
            #expect(throws: BackendError.notFound) { try backend.stores.uris.id(queue: queue, uri: SourceURI("git://q/c5")) }
        }
    }

    @Test("a second claim of one (queue, uri) is alreadyExists and keeps the first id", arguments: allFixtures)
    func duplicateClaim(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let queue = try queueName("q")
            let uri = SourceURI("git://q/c1")
            try backend.stores.uris.create(queue: queue, uri: uri, id: RequestID(queue: queue, number: 1))
            #expect(throws: BackendError.alreadyExists) {
                try backend.stores.uris.create(queue: queue, uri: uri, id: RequestID(queue: queue, number: 2))
            }
            #expect(try backend.stores.uris.id(queue: queue, uri: uri) == RequestID(queue: queue, number: 1))
        }
    }

    @Test("uris that differ only in Unicode normalization are distinct claims", arguments: allFixtures)
    func urisCompareByCodePoint(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let queue = try queueName("q")
            let composed = SourceURI("git://q/caf\u{E9}")
            let decomposed = SourceURI("git://q/cafe\u{301}")
            try backend.stores.uris.create(queue: queue, uri: composed, id: RequestID(queue: queue, number: 1))
            try backend.stores.uris.create(queue: queue, uri: decomposed, id: RequestID(queue: queue, number: 2))
            #expect(try backend.stores.uris.id(queue: queue, uri: composed) == RequestID(queue: queue, number: 1))
            #expect(try backend.stores.uris.id(queue: queue, uri: decomposed) == RequestID(queue: queue, number: 2))
        }
    }

    @Test("the same uri in two queues is claimed independently", arguments: allFixtures)
    func sameURITwoQueues(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let first = try queueName("a/main")
            let second = try queueName("b/main")
            let uri = SourceURI("git://shared/c1")
            try backend.stores.uris.create(queue: first, uri: uri, id: RequestID(queue: first, number: 1))
            try backend.stores.uris.create(queue: second, uri: uri, id: RequestID(queue: second, number: 9))
            #expect(try backend.stores.uris.id(queue: first, uri: uri) == RequestID(queue: first, number: 1))
            #expect(try backend.stores.uris.id(queue: second, uri: uri) == RequestID(queue: second, number: 9))
        }
    }

    @Test("replace from the held id re-points the entry", arguments: allFixtures)
    func replaceFromHeld(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let queue = try queueName("q")
            let uri = SourceURI("git://q/c1")
            try backend.stores.uris.create(queue: queue, uri: uri, id: RequestID(queue: queue, number: 1))
            try backend.stores.uris.replace(
                queue: queue, uri: uri, expected: RequestID(queue: queue, number: 1), with: RequestID(queue: queue, number: 3))
            #expect(try backend.stores.uris.id(queue: queue, uri: uri) == RequestID(queue: queue, number: 3))
        }
    }

    @Test("replace from an id the entry does not hold is versionMismatch and changes nothing", arguments: allFixtures)
    func replaceFromStale(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let queue = try queueName("q")
            let uri = SourceURI("git://q/c1")
            try backend.stores.uris.create(queue: queue, uri: uri, id: RequestID(queue: queue, number: 2))
            #expect(throws: BackendError.versionMismatch) {
                try backend.stores.uris.replace(
                    queue: queue, uri: uri, expected: RequestID(queue: queue, number: 1), with: RequestID(queue: queue, number: 3))
            }
            #expect(try backend.stores.uris.id(queue: queue, uri: uri) == RequestID(queue: queue, number: 2))
        }
    }

    @Test("replace from a stale id is versionMismatch even when the entry already holds the replacement", arguments: allFixtures)
    func replaceFromStaleToHeld(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let queue = try queueName("q")
            let uri = SourceURI("git://q/c1")
            try backend.stores.uris.create(queue: queue, uri: uri, id: RequestID(queue: queue, number: 3))
            #expect(throws: BackendError.versionMismatch) {
                try backend.stores.uris.replace(
                    queue: queue, uri: uri, expected: RequestID(queue: queue, number: 1), with: RequestID(queue: queue, number: 3))
            }
            // Replacing the held id with itself is a CAS that holds, and a no-op.
            try backend.stores.uris.replace(
                queue: queue, uri: uri, expected: RequestID(queue: queue, number: 3), with: RequestID(queue: queue, number: 3))
            #expect(try backend.stores.uris.id(queue: queue, uri: uri) == RequestID(queue: queue, number: 3))
        }
    }

    @Test("replace of a missing entry is notFound and creates nothing", arguments: allFixtures)
    func replaceMissing(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let queue = try queueName("q")
            let other = try queueName("other")
            let uri = SourceURI("git://q/c1")
            // The same uri held in another queue must not count as an entry of this one.
            try backend.stores.uris.create(queue: other, uri: uri, id: RequestID(queue: other, number: 1))
            #expect(throws: BackendError.notFound) {
                try backend.stores.uris.replace(
                    queue: queue, uri: uri, expected: RequestID(queue: queue, number: 1), with: RequestID(queue: queue, number: 3))
            }
            #expect(throws: BackendError.notFound) { try backend.stores.uris.id(queue: queue, uri: uri) }
            #expect(try backend.stores.uris.id(queue: other, uri: uri) == RequestID(queue: other, number: 1))
        }
    }

    @Test("32 concurrent replaces from one held id: exactly one wins, the rest are versionMismatch", arguments: allFixtures)
    func concurrentReplace(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let uris = backend.stores.uris
            let queue = try queueName("q")
            let uri = SourceURI("git://q/c1")
            let held = RequestID(queue: queue, number: 1)
            try uris.create(queue: queue, uri: uri, id: held)
            let winners = Recorder<RequestID>()
            let failures = Recorder<BackendError>()
            let finished = await onThreads(32) { index in
                let replacement = RequestID(queue: queue, number: UInt64(index) + 2)
                do throws(BackendError) {
                    try uris.replace(queue: queue, uri: uri, expected: held, with: replacement)
                    winners.append(replacement)
                } catch {
                    failures.append(error)
                }
            }
            #expect(finished)
            #expect(winners.values.count == 1)
            #expect(failures.values.count == 31)
            #expect(failures.values.allSatisfy { $0 == .versionMismatch })
            #expect(try uris.id(queue: queue, uri: uri) == winners.values.first)
        }
    }
}

@Suite("QueueStore contract")
struct QueueStoreContractTests {
    @Test("create then get, duplicate name, unknown name", arguments: allFixtures)
    func createGet(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let name = try queueName("team/main")
            let queue = Queue(name: name)
            try backend.stores.queues.create(queue)
            #expect(try backend.stores.queues.get(name) == queue)
            #expect(throws: BackendError.alreadyExists) {
                try backend.stores.queues.create(Queue(name: name, lastGreenURI: SourceURI("git://x"), version: 5))
            }
            #expect(try backend.stores.queues.get(name) == queue)
            #expect(throws: BackendError.notFound) { try backend.stores.queues.get(try queueName("team/other")) }
        }
    }

    @Test("update is a compare-and-set on the version", arguments: allFixtures)
    func updateCAS(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let name = try queueName("team/main")
            try backend.stores.queues.create(Queue(name: name))
            let latest = RequestID(queue: name, number: 3)
            let green = RequestID(queue: name, number: 2)
            let changed = Queue(
                name: name, latestRequestID: latest, lastGreenURI: SourceURI("git://x/c2"), lastGreenRequestID: green,
                version: 1
            )
            try backend.stores.queues.update(changed, oldVersion: 1, newVersion: 2)
            #expect(
                try backend.stores.queues.get(name)
                    == Queue(
                        name: name, latestRequestID: latest, lastGreenURI: SourceURI("git://x/c2"),
                        lastGreenRequestID: green, version: 2
                    )
            )

            let stale = Queue(name: name, latestRequestID: RequestID(queue: name, number: 9), version: 1)
            #expect(throws: BackendError.versionMismatch) { try backend.stores.queues.update(stale, oldVersion: 1, newVersion: 2) }
            #expect(try backend.stores.queues.get(name).latestRequestID == latest)

            let missing = Queue(name: try queueName("ghost"))
            #expect(throws: BackendError.versionMismatch) { try backend.stores.queues.update(missing, oldVersion: 1, newVersion: 2) }
            #expect(throws: BackendError.notFound) { try backend.stores.queues.get(try queueName("ghost")) }
        }
    }
    @Test("an update that does not advance the version is refused as final and changes nothing", arguments: allFixtures)
    func updateMustAdvanceVersion(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let name = try queueName("team/main")
            try backend.stores.queues.create(Queue(name: name, version: 3))
            let changed = Queue(name: name, lastGreenURI: SourceURI("git://x/c2"), version: 3)
            for newVersion: UInt64 in [3, 2] {
                let refused = refusal { () throws(BackendError) in
                    try backend.stores.queues.update(changed, oldVersion: 3, newVersion: newVersion)
                }
                #expect(refused == .some(.unavailable(retryable: false, detail: versionNotAdvanced)), "\(newVersion)")
            }
            #expect(try backend.stores.queues.get(name) == Queue(name: name, version: 3))
        }
    }
}

/// The detail both backends give an update whose new version is not above the old one.
private let versionNotAdvanced = "an update must advance the version (newVersion > oldVersion)"

/// The error `body` throws; nil when it succeeds.
private func refusal(_ body: () throws(BackendError) -> Void) -> BackendError? {
    do throws(BackendError) {
        try body()
        return nil
    } catch {
        return error
    }
}

@Suite("Counter contract")
struct CounterContractTests {
    @Test("each (queue, domain) sequence starts at 1 and counts up on its own", arguments: allFixtures)
    func startsAtOne(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let counter = backend.stores.counter
            let first = try queueName("a/main")
            let second = try queueName("b/main")
            #expect(try counter.next(queue: first, domain: "request") == 1)
            #expect(try counter.next(queue: first, domain: "request") == 2)
            #expect(try counter.next(queue: first, domain: "other") == 1)
            #expect(try counter.next(queue: second, domain: "request") == 1)
            #expect(try counter.next(queue: first, domain: "request") == 3)
        }
    }

    @Test("100 concurrent next calls on threads get 1...100, each once", arguments: allFixtures)
    func concurrentNext(_ fixture: any BackendFixture) async throws {
        try await withBackend(fixture) { backend in
            let counter = backend.stores.counter
            let queue = try queueName("busy/main")
            let values = Recorder<UInt64>()
            let failures = Recorder<BackendError>()
            let finished = await onThreads(100) { _ in
                do throws(BackendError) {
                    values.append(try counter.next(queue: queue, domain: "request"))
                } catch {
                    failures.append(error)
                }
            }
            #expect(finished)
            #expect(failures.values.isEmpty)
            #expect(values.values.sorted() == Array(1...100))
        }
    }
}
