import Foundation
import Logging
import MySQLClient
import Synchronization
import Testing

/// The live-test environment: `STOVEPIPE_TEST_MYSQL_URL` (a base URL without database, as scripts/test exports)
/// and `CI`. Without the URL the live suites skip, except under CI=true, where they run and fail.
enum LiveDatabase {
    static let urlVariable = "STOVEPIPE_TEST_MYSQL_URL"

    static var baseURL: String? {
        guard let url = ProcessInfo.processInfo.environment[urlVariable], !url.isEmpty else { return nil }
        return url
    }

    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Whether the live suites run at all: always under CI (so a missing URL fails), else only with a URL.
    static var shouldRun: Bool { baseURL != nil || isCI }

    struct Unavailable: Error, CustomStringConvertible {
        let description: String
    }

    /// The base configuration; refuses anything but a loopback server, because tests create and drop databases.
    static func baseConfiguration() throws -> MySQLConfiguration {
        guard let baseURL else {
            throw Unavailable(description: "\(urlVariable) is not set, and CI=true requires the MySQL suites to run")
        }
        var configuration = try MySQLConfiguration(url: baseURL)
        let loopback: Set<String> = ["127.0.0.1", "::1", "localhost"]
        guard configuration.socketPath != nil || loopback.contains(configuration.host ?? "") else {
            throw Unavailable(description: "refusing to run the live MySQL tests against a non-loopback server")
        }
        configuration.database = nil
        configuration.connectTimeoutSeconds = 5
        configuration.readTimeoutSeconds = 30
        configuration.writeTimeoutSeconds = 30
        return configuration
    }

    /// Creates a fresh database `t_<random>`, runs `body` with a configuration pointing at it, then drops it.
    static func withFreshDatabase<Result: Sendable>(
        _ body: @escaping @Sendable (MySQLConfiguration) throws -> Result
    ) async throws -> Result {
        let base = try baseConfiguration()
        return try await onThread {
            let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
            let admin = try MySQLConnection(configuration: base)
            try admin.execute("CREATE DATABASE \(identifier: name) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            defer { _ = try? admin.execute("DROP DATABASE IF EXISTS \(identifier: name)") }
            var configuration = base
            configuration.database = name
            return try body(configuration)
        }
    }
}

/// Runs blocking work on a new thread, so the MySQL C calls never block Swift's cooperative pool.
func onThread<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Swift.Result { try body() })
        }
        thread.name = "mysql-test"
        thread.start()
    }
}

/// Starts `body` on a new thread now; `join` waits for its result.
final class BackgroundWork<Result: Sendable>: Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let outcome = Mutex<Swift.Result<Result, any Error>?>(nil)

    init(_ body: @escaping @Sendable () throws -> Result) {
        let thread = Thread { self.finish(Swift.Result { try body() }) }
        thread.start()
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
