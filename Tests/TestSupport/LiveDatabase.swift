import Foundation
import MySQLClient

/// The live MySQL test environment: `STOVEPIPE_TEST_MYSQL_URL` (a base URL without database, as
/// scripts/test exports) and `CI`. Without the URL the live suites skip, except under CI=true, where
/// they run and fail, so CI cannot pass without MySQL.
public enum LiveDatabase {
    /// The environment variable with the test server's URL.
    public static let urlVariable = "STOVEPIPE_TEST_MYSQL_URL"

    /// The test server's URL, if set.
    public static var baseURL: String? {
        guard let url = ProcessInfo.processInfo.environment[urlVariable], !url.isEmpty else { return nil }
        return url
    }

    /// Whether this is a CI run.
    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Whether the live suites run at all: always under CI (so a missing URL fails), else only with a URL.
    public static var shouldRun: Bool { baseURL != nil || isCI }

    /// Why a live test cannot run.
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String

        /// Says why.
        public init(description: String) { self.description = description }
    }

    /// The server's configuration without a database; refuses anything but a loopback server, because
    /// tests create and drop databases.
    public static func baseConfiguration() throws -> MySQLConfiguration {
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

    /// Creates a fresh, empty database `<prefix><random>` and returns a configuration pointing at it.
    public static func createDatabase(prefix: String = "t_") throws -> MySQLConfiguration {
        let base = try baseConfiguration()
        let name = prefix + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let admin = try MySQLConnection(configuration: base)
        defer { admin.close() }
        try admin.execute("CREATE DATABASE \(identifier: name) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        var configuration = base
        configuration.database = name
        return configuration
    }

    /// Drops the database of `configuration`, best effort.
    public static func drop(_ configuration: MySQLConfiguration) {
        guard let name = configuration.database, var base = try? baseConfiguration() else { return }
        base.database = nil
        guard let admin = try? MySQLConnection(configuration: base) else { return }
        defer { admin.close() }
        _ = try? admin.execute("DROP DATABASE IF EXISTS \(identifier: name)")
    }
}
