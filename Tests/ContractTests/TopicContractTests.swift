import Domain
import Foundation
import TestSupport
import Testing

private let topic = TopicName("contract")

/// Short waits so retries and postponements finish quickly.
private func fastPolicy(maxAttempts: Int = 3) -> RetryPolicy {
    RetryPolicy(maxAttempts: maxAttempts, backoffBase: .milliseconds(2), backoffCap: .milliseconds(10))
}

private func message(_ id: String, key: String = "k", payload: String = "") -> Message {
    Message(topic: topic, partitionKey: key, id: id, payload: Array(payload.utf8))
}

/// A delivery as the handler saw it.
private struct Seen: Sendable, Equatable {
    let id: String
    let attempt: Int
}

/// Runs `body` with a broker of a fresh backend; the broker is shut down before the backend is torn down.
private func withBroker(
    _ fixture: any BackendFixture, policy: RetryPolicy = fastPolicy(),
    _ body: (any MessageBroker) async throws -> Void
) async throws {
    try await withBackend(fixture) { backend in
        let broker = try backend.makeBroker(policy: policy)
        defer { broker.shutdown() }
        try await body(broker)
    }
}

@Suite("MessageBroker contract")
struct TopicContractTests {
    @Test("messages of one partition arrive serially in publish order", arguments: brokerFixtures)
    func orderWithinPartition(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture) { broker in
            let seen = Recorder<String>()
            let overlaps = Recorder<String>()
            let busy = Latch()
            broker.subscribe(topic) { delivery in
                // Serial: nobody else of this partition may be inside the handler now.
                busy.arrive()
                if busy.arrivals != seen.count + 1 { overlaps.append(delivery.message.id) }
                seen.append(delivery.message.id)
                return .ack
            }
            let ids = (1...30).map { "m\($0)" }
            for id in ids { try broker.publish(message(id)) }
            try broker.start()
            #expect(await eventually { seen.count == ids.count })
            #expect(seen.values == ids)
            #expect(overlaps.values.isEmpty)
        }
    }

    @Test("different partitions are delivered in parallel", arguments: brokerFixtures)
    func parallelAcrossPartitions(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture) { broker in
            let started = Latch()
            let sawOther = Recorder<Bool>()
            broker.subscribe(topic) { _ in
                // Each handler waits for the other to start: only concurrent delivery lets both return true.
                // The other's start takes database round trips on the MySQL broker, so the wait allows for a
                // loaded machine; serial delivery still fails, as the first handler gives up alone.
                started.arrive()
                sawOther.append(started.wait(for: 2, timeout: .seconds(20)))
                return .ack
            }
            try broker.publish(message("a1", key: "a"))
            try broker.publish(message("b1", key: "b"))
            try broker.start()
            #expect(await eventually(timeout: .seconds(60)) { sawOther.count == 2 })
            #expect(sawOther.values == [true, true])
        }
    }

    @Test("retry redelivers with attempts 1, 2, 3 until ack, and later messages wait", arguments: brokerFixtures)
    func retryThenSuccess(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture, policy: fastPolicy(maxAttempts: 5)) { broker in
            let seen = Recorder<Seen>()
            broker.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                if delivery.message.id == "first" && delivery.attempt < 3 { return .retry(reason: "not yet") }
                return .ack
            }
            try broker.publish(message("first"))
            try broker.publish(message("second"))
            try broker.start()
            #expect(await eventually { seen.count == 4 })
            #expect(
                seen.values == [
                    Seen(id: "first", attempt: 1), Seen(id: "first", attempt: 2), Seen(id: "first", attempt: 3),
                    Seen(id: "second", attempt: 1),
                ]
            )
            #expect(try broker.deadLetters(topic, limit: 10).isEmpty)
        }
    }

    @Test("after maxAttempts retries the message is dead-lettered with the last reason; the partition goes on", arguments: brokerFixtures)
    func deadLetterAfterMaxAttempts(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture, policy: fastPolicy(maxAttempts: 3)) { broker in
            let seen = Recorder<Seen>()
            broker.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                if delivery.message.id == "doomed" { return .retry(reason: "failed on attempt \(delivery.attempt)") }
                return .ack
            }
            let doomed = message("doomed", payload: "body")
            try broker.publish(doomed)
            try broker.publish(message("next"))
            try broker.start()
            #expect(await eventually { seen.count == 4 })
            #expect(seen.values.map(\.id) == ["doomed", "doomed", "doomed", "next"])
            #expect(seen.values.map(\.attempt) == [1, 2, 3, 1])
            let letters = try broker.deadLetters(topic, limit: 10)
            #expect(letters == [DeadLetter(message: doomed, attempts: 3, reason: "failed on attempt 3")])
        }
    }

    @Test("reject dead-letters at once with its reason", arguments: brokerFixtures)
    func rejectDeadLettersAtOnce(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture, policy: fastPolicy(maxAttempts: 5)) { broker in
            let seen = Recorder<Seen>()
            broker.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                return delivery.message.id == "bad" ? .reject(reason: "malformed payload") : .ack
            }
            let bad = message("bad")
            try broker.publish(bad)
            try broker.publish(message("good"))
            try broker.start()
            #expect(await eventually { seen.count == 2 })
            #expect(seen.values == [Seen(id: "bad", attempt: 1), Seen(id: "good", attempt: 1)])
            #expect(try broker.deadLetters(topic, limit: 10) == [DeadLetter(message: bad, attempts: 1, reason: "malformed payload")])
        }
    }

    @Test("postpone redelivers without counting an attempt, and nothing overtakes it", arguments: brokerFixtures)
    func postponeDoesNotCount(_ fixture: any BackendFixture) async throws {
        // maxAttempts 1: a counted attempt past the first would dead-letter instead of redelivering.
        try await withBroker(fixture, policy: fastPolicy(maxAttempts: 1)) { broker in
            let seen = Recorder<Seen>()
            let postponements = Latch()
            broker.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                if delivery.message.id == "later" && postponements.arrivals < 3 {
                    postponements.arrive()
                    return .postpone(.milliseconds(3))
                }
                return .ack
            }
            try broker.publish(message("later"))
            try broker.publish(message("after"))
            try broker.start()
            #expect(await eventually { seen.count == 5 })
            #expect(seen.values.map(\.id) == ["later", "later", "later", "later", "after"])
            #expect(seen.values.map(\.attempt) == [1, 1, 1, 1, 1])
            #expect(try broker.deadLetters(topic, limit: 10).isEmpty)
        }
    }

    @Test("publishing an id the topic holds is a no-op; a dead-lettered id is re-driven", arguments: brokerFixtures)
    func idempotentPublish(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture) { broker in
            let seen = Recorder<String>()
            broker.subscribe(topic) { delivery in
                seen.append(delivery.message.id)
                return delivery.message.id == "dead" ? .reject(reason: "no") : .ack
            }
            try broker.publish(message("twice", payload: "first"))
            try broker.publish(message("twice", payload: "second"))
            try broker.publish(message("dead"))
            try broker.publish(message("sentinel"))
            try broker.start()
            #expect(await eventually { seen.values.contains("sentinel") })
            #expect(try broker.deadLetters(topic, limit: 10).map(\.message.id) == ["dead"])

            // Published again, the dead letter goes back to the tail of its partition with a fresh attempt count.
            try broker.publish(message("dead", payload: "ignored"))
            try broker.publish(message("sentinel-2"))
            #expect(await eventually { seen.values.contains("sentinel-2") })
            #expect(seen.values == ["twice", "dead", "sentinel", "dead", "sentinel-2"])
            #expect(try await eventually { try broker.deadLetters(topic, limit: 10).map(\.message.id) == ["dead"] })
            let letter = try #require(try broker.deadLetters(topic, limit: 10).first)
            #expect(letter.attempts == 1)
            #expect(letter.message.payload.isEmpty, "the payload first published is kept")
        }
    }

    @Test("an acked id stays held within the retention: publishing it again is a no-op", arguments: brokerFixtures)
    func ackedIDIsHeld(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture) { broker in
            let seen = Recorder<String>()
            broker.subscribe(topic) { delivery in
                seen.append(delivery.message.id)
                return .ack
            }
            try broker.start()
            try broker.publish(message("done"))
            #expect(await eventually { seen.values == ["done"] })
            #expect(try await eventually { try broker.stats(topic).inFlight == 0 && broker.stats(topic).backlog == 0 })
            try broker.publish(message("done"))
            try broker.publish(message("sentinel"))
            #expect(await eventually { seen.values.contains("sentinel") })
            #expect(seen.values == ["done", "sentinel"])
        }
    }

    @Test("the first publish of an id wins: its payload is the one delivered", arguments: brokerFixtures)
    func firstPublishWins(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture) { broker in
            let payloads = Recorder<[UInt8]>()
            broker.subscribe(topic) { delivery in
                payloads.append(delivery.message.payload)
                return .ack
            }
            try broker.publish(message("one", payload: "first"))
            try broker.publish(message("one", payload: "second"))
            try broker.publish(message("end"))
            try broker.start()
            #expect(await eventually { payloads.count == 2 })
            #expect(payloads.values == [Array("first".utf8), []])
        }
    }

    @Test("redrive puts a dead letter back with a fresh attempt count; unknown ids are notFound", arguments: brokerFixtures)
    func redrive(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture, policy: fastPolicy(maxAttempts: 2)) { broker in
            let seen = Recorder<Seen>()
            let healed = Latch()
            broker.subscribe(topic) { delivery in
                seen.append(Seen(id: delivery.message.id, attempt: delivery.attempt))
                return healed.arrivals > 0 ? .ack : .retry(reason: "broken")
            }
            try broker.publish(message("job"))
            try broker.start()
            #expect(try await eventually { try broker.deadLetters(topic, limit: 10).count == 1 })
            #expect(try broker.deadLetters(topic, limit: 10).first?.attempts == 2)

            healed.arrive()
            try broker.redrive(topic, messageID: "job")
            #expect(await eventually { seen.count == 3 })
            #expect(seen.values.map(\.attempt) == [1, 2, 1])
            #expect(try broker.deadLetters(topic, limit: 10).isEmpty)
            #expect(try await eventually { try broker.stats(topic).backlog == 0 && broker.stats(topic).inFlight == 0 })

            #expect(throws: BackendError.notFound) { try broker.redrive(topic, messageID: "job") }
            #expect(throws: BackendError.notFound) { try broker.redrive(topic, messageID: "never-published") }
            #expect(throws: BackendError.notFound) { try broker.redrive(TopicName("other"), messageID: "job") }
        }
    }

    @Test("dead letters are listed oldest first, at most limit", arguments: brokerFixtures)
    func deadLettersOldestFirst(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture) { broker in
            broker.subscribe(topic) { delivery in .reject(reason: "no \(delivery.message.id)") }
            for id in ["d1", "d2", "d3"] { try broker.publish(message(id)) }
            try broker.start()
            #expect(try await eventually { try broker.deadLetters(topic, limit: 10).count == 3 })
            #expect(try broker.deadLetters(topic, limit: 10).map(\.message.id) == ["d1", "d2", "d3"])
            #expect(try broker.deadLetters(topic, limit: 2).map(\.reason) == ["no d1", "no d2"])
            #expect(try broker.deadLetters(TopicName("other"), limit: 10).isEmpty)
        }
    }

    @Test("stats count backlog, in-flight and dead letters, and age the oldest pending message", arguments: brokerFixtures)
    func stats(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture) { broker in
            let empty = try broker.stats(topic)
            #expect(empty == TopicStats(topic: topic, backlog: 0, inFlight: 0, deadLetters: 0, oldestPendingAgeSeconds: nil))

            let entered = Latch()
            let release = Latch()
            broker.subscribe(topic) { delivery in
                entered.arrive()
                _ = release.wait(for: 1, timeout: .seconds(60))
                return delivery.message.id == "m3" ? .reject(reason: "no") : .ack
            }
            for id in ["m1", "m2", "m3"] { try broker.publish(message(id)) }
            let waiting = try broker.stats(topic)
            #expect(waiting.backlog == 3)
            #expect(waiting.inFlight == 0)
            #expect(waiting.deadLetters == 0)
            #expect((waiting.oldestPendingAgeSeconds ?? -1) >= 0)

            try broker.start()
            #expect(await eventually { entered.arrivals == 1 })
            let busy = try broker.stats(topic)
            #expect(busy.backlog == 2)
            #expect(busy.inFlight == 1)
            #expect(busy.oldestPendingAgeSeconds != nil)

            release.arrive()
            #expect(try await eventually { try broker.stats(topic).deadLetters == 1 })
            #expect(try await eventually { try broker.stats(topic).inFlight == 0 })
            #expect(try broker.stats(topic) == TopicStats(topic: topic, backlog: 0, inFlight: 0, deadLetters: 1, oldestPendingAgeSeconds: nil))
        }
    }

    @Test(
        "shutdown, or shutdown with a deadline not yet reached, lets the handler in progress finish and records its outcome",
        arguments: brokerFixtures, [false, true])
    func shutdownDrains(_ fixture: any BackendFixture, withDeadline: Bool) async throws {
        try await withBroker(fixture) { broker in
            let entered = Latch()
            let release = Latch()
            let finished = Latch()
            broker.subscribe(topic) { _ in
                entered.arrive()
                _ = release.wait(for: 1, timeout: .seconds(60))
                finished.arrive()
                return .ack
            }
            try broker.publish(message("slow"))
            try broker.start()
            #expect(await eventually { entered.arrivals == 1 })

            let calling = Latch()
            let finishedWhenShutdownReturned = Recorder<Bool>()
            Thread {
                calling.arrive()
                if withDeadline {
                    broker.shutdown(waitingUntil: .now + .seconds(60))
                } else {
                    broker.shutdown()
                }
                finishedWhenShutdownReturned.append(finished.arrivals == 1)
            }.start()
            #expect(await eventually { calling.arrivals == 1 })
            #expect(finishedWhenShutdownReturned.count == 0)
            release.arrive()
            #expect(await eventually { finishedWhenShutdownReturned.count == 1 })
            #expect(finishedWhenShutdownReturned.values == [true])
            let after = try broker.stats(topic)
            #expect(after.backlog == 0)
            #expect(after.inFlight == 0)
            #expect(after.deadLetters == 0)
            broker.shutdown()
        }
    }

    @Test("two handlers shutting the broker down at once both return", arguments: brokerFixtures)
    func concurrentShutdownFromHandlers(_ fixture: any BackendFixture) async throws {
        try await withBroker(fixture) { broker in
            let entered = Latch()
            let returned = Latch()
            broker.subscribe(topic) { _ in
                // Both handlers are in progress, on two partitions, before either shuts the broker down.
                entered.arrive()
                _ = entered.wait(for: 2, timeout: .seconds(10))
                broker.shutdown()
                returned.arrive()
                return .ack
            }
            try broker.publish(message("a", key: "a"))
            try broker.publish(message("b", key: "b"))
            try broker.start()
            #expect(await eventually(timeout: .seconds(20)) { returned.arrivals == 2 })
        }
    }
}
