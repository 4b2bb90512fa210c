import Foundation
import Logging
import MySQLBackend
import MySQLClient

/// The live-test environment, after MySQLClientTests' `LiveDatabase`: `STOVEPIPE_TEST_MYSQL_URL` (a base URL
/// without database) and `CI`. Without the URL the suites skip, except under CI=true, where they fail.
enum TopicTestDatabase {
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
        return configuration
    }

    /// Creates a fresh database `t_<random>`, with the topic tables unless told otherwise; returns a
    /// configuration pointing at it.
    static func create(withTopicTables: Bool = true) throws -> MySQLConfiguration {
        let base = try baseConfiguration()
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let admin = try MySQLConnection(configuration: base)
        defer { admin.close() }
        try admin.execute("CREATE DATABASE \(identifier: name) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        var configuration = base
        configuration.database = name
        guard withTopicTables else { return configuration }
        let connection = try MySQLConnection(configuration: configuration)
        defer { connection.close() }
        for statement in MySQLBroker.schema {
            try connection.executeScript(unsafeSQL: statement)
        }
        return configuration
    }

    /// Drops the database of `configuration`, best effort.
    static func drop(_ configuration: MySQLConfiguration) {
        guard let name = configuration.database, var base = try? baseConfiguration() else { return }
        base.database = nil
        guard let admin = try? MySQLConnection(configuration: base) else { return }
        _ = try? admin.execute("DROP DATABASE IF EXISTS \(identifier: name)")
        admin.close()
    }
}

/// A logger that drops everything; tests assert behaviour, not log lines.
let quietLogger = Logger(label: "mysql-topic-tests", factory: { _ in SwiftLogNoOpLogHandler() })
