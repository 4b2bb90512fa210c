import Foundation
import TestSupport
import Synchronization
import Testing

/// Runs `body(i)` for i in 0..<count, each on a thread of its own as part of the calling test, released together;
/// waits for all until `timeout` and returns whether they all finished.
func onThreads(
    _ count: Int, timeout: Duration = .seconds(10), _ body: @escaping @Sendable (Int) -> Void
) async -> Bool {
    let start = Latch()
    let done = Latch()
    for index in 0..<count {
        // A task inherits the test's task locals, so an expectation failing in `body` is the test's (from a bare
        // Thread it is «unknown» test's, and the test passes). Not awaited: a body that never returns leaves
        // `finished` false instead of hanging the test.
        let executor = ThreadExecutor(name: "on-threads-\(index)")
        Task(executorPreference: executor) {
            defer { executor.finish() }
            _ = start.wait(for: 1, timeout: .seconds(10))
            body(index)
            done.arrive()
        }
    }
    start.arrive()
    return await eventually(timeout: timeout) { done.arrivals == count }
}

/// Runs blocking work (MySQL, subprocesses) on its own Foundation thread, off Swift's cooperative pool.
func offPool<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
    try await onOwnThread(body)
}

/// Runs `body` against a MariaDB of its own (see `PrivateServer.start`), which is stopped and removed afterwards,
/// whether `body` throws or not.
func withPrivateServer(
    preparing prepare: @escaping @Sendable (URL) throws -> Void = { _ in },
    _ body: (PrivateServer, String) async throws -> Void
) async throws {
    try #require(mariadbdInstalled, "mariadbd is not installed; CI=true requires this test to run")
    let (server, url) = try await offPool { try PrivateServer.start(preparing: prepare) }
    do {
        try await body(server, url)
    } catch {
        _ = try? await offPool { server.stopAndRemove() }
        throw error
    }
    try await offPool { server.stopAndRemove() }
}
