import Foundation
import Logging
import MySQLClient
import Synchronization
import TestSupport
import Testing

extension LiveDatabase {
    /// Creates a fresh database, runs `body` with a configuration pointing at it on its own thread, then drops it.
    static func withFreshDatabase<Result: Sendable>(
        _ body: @escaping @Sendable (MySQLConfiguration) throws -> Result
    ) async throws -> Result {
        _ = try baseConfiguration()
        return try await onThread {
            let configuration = try createDatabase()
            defer { drop(configuration) }
            return try body(configuration)
        }
    }
}

/// Runs blocking work on a new thread, so the MySQL C calls never block Swift's cooperative pool.
func onThread<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
    try await onOwnThread(named: "mysql-test", body)
}

/// Starts `body` on a new thread now, as part of the calling test; `join` waits for its result.
final class BackgroundWork<Result: Sendable>: Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let outcome = Mutex<Swift.Result<Result, any Error>?>(nil)

    init(_ body: @escaping @Sendable () throws -> Result) {
        // A task started here inherits the test's task locals, so an expectation failing in `body` is the test's
        // (from a bare Thread it is «unknown» test's, and the test passes); its executor owns the thread.
        let executor = ThreadExecutor(name: "mysql-test-background")
        Task(executorPreference: executor) {
            defer { executor.finish() }
            self.finish(Swift.Result { try body() })
        }
    }

    private func finish(_ result: Swift.Result<Result, any Error>) {
        outcome.withLock { $0 = result }
        done.signal()
    }

    /// Waits up to `timeout` for the result; throws if the work failed or did not finish.
    func join(timeout: DispatchTimeInterval = .seconds(60)) throws -> Result {
        guard done.wait(timeout: .now() + timeout) == .success else {
            throw LiveDatabase.Unavailable(description: "background work did not finish in time")
        }
        guard let result = outcome.withLock({ $0 }) else {
            throw LiveDatabase.Unavailable(description: "background work finished without a result")
        }
        return try result.get()
    }
}

/// A one-shot signal between test threads with a deadline, so a broken test fails instead of hanging.
final class Signal: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)

    func fire() { semaphore.signal() }

    func wait(seconds: Int = 30) throws {
        guard semaphore.wait(timeout: .now() + .seconds(seconds)) == .success else {
            throw LiveDatabase.Unavailable(description: "a test signal never fired")
        }
    }
}

/// A logger that drops everything; tests assert behaviour, not log lines.
let quietLogger = Logger(label: "mysql-client-tests", factory: { _ in SwiftLogNoOpLogHandler() })
