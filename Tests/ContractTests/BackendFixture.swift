import Backends
import Domain
import Logging
import Testing

// How to add a backend to every contract suite:
//   1. In a new file (e.g. MySQLFixture.swift), write a `struct XFixture: BackendFixture` whose
//      `makeBackend()` returns a fresh, empty, isolated `TestBackend` (MySQL: a new database per call, on
//      the server of `STOVEPIPE_TEST_MYSQL_URL`); that backend's `tearDown()` releases it (drops the database).
//   2. Append it to `allFixtures` below, only when its environment is available, e.g.
//      `+ (MySQLFixture.fromEnvironment().map { [$0] } ?? [])`.
// Each contract test calls `makeBackend()` once and `tearDown()` at its end (after shutting down any broker it
// made), and tests run in parallel. Brokers need at least 2 delivery threads: one test proves partitions run
// concurrently. Nothing else changes: every `@Test(arguments: allFixtures)` picks the new fixture up.

/// The four stores of one backend.
struct StoreSet: Sendable {
    let requests: any RequestStore
    let uris: any RequestURIStore
    let queues: any QueueStore
    let counter: any Counter
}

/// One fresh, empty backend instance, owned by one test.
protocol TestBackend: Sendable {
    /// The stores, empty when the backend is made.
    var stores: StoreSet { get }
    /// A new broker over this backend's topic storage; the test starts and shuts it down.
    func makeBroker(policy: RetryPolicy) throws -> any MessageBroker
    /// Releases everything the backend holds; called once, after every broker is shut down.
    func tearDown()
}

/// A kind of backend the contract suites run against.
protocol BackendFixture: Sendable, CustomTestStringConvertible {
    /// The name shown in test results.
    var name: String { get }
    /// Whether `makeBroker` works; the topic suites run only fixtures that provide a broker.
    var providesBroker: Bool { get }
    /// A fresh, empty, isolated backend.
    func makeBackend() throws -> any TestBackend
}

extension BackendFixture {
    var testDescription: String { name }
    var providesBroker: Bool { true }
}

/// Every backend the contract suites run against.
let allFixtures: [any BackendFixture] = [MemoryFixture()] + (MySQLFixture.fromEnvironment().map { [$0] } ?? [])

/// The backends the topic suites run against.
let brokerFixtures: [any BackendFixture] = allFixtures.filter(\.providesBroker)

/// Runs `body` on a fresh backend of `fixture` and tears it down afterwards.
func withBackend<Result>(
    _ fixture: any BackendFixture, _ body: (any TestBackend) async throws -> Result
) async throws -> Result {
    let backend = try fixture.makeBackend()
    defer { backend.tearDown() }
    return try await body(backend)
}

/// A logger that drops everything.
let silentLogger = Logger(label: "contract-tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// The error `body` throws, nil when it returns: a store call's outcome to assert on.
func backendError(_ body: () throws(BackendError) -> Void) -> BackendError? {
    do {
        try body()
        return nil
    } catch {
        return error
    }
}
