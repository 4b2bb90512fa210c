import Foundation
import Logging
import MySQLBackend
import MySQLClient
import TestSupport

/// Databases for the topic tests, on the live test server (see TestSupport.LiveDatabase).
enum TopicTestDatabase {
    /// Creates a fresh database, with the topic tables unless told otherwise; returns a configuration pointing at it.
    static func create(withTopicTables: Bool = true) throws -> MySQLConfiguration {
        let configuration = try LiveDatabase.createDatabase()
        guard withTopicTables else { return configuration }
        let connection = try MySQLConnection(configuration: configuration)
        defer { connection.close() }
        for statement in MySQLBroker.schema {
            try connection.executeScript(unsafeSQL: statement)
        }
        return configuration
    }

    /// Drops the database of `configuration`, best effort.
    static func drop(_ configuration: MySQLConfiguration) { LiveDatabase.drop(configuration) }
}

/// A logger that drops everything; tests assert behaviour, not log lines.
let quietLogger = Logger(label: "mysql-topic-tests", factory: { _ in SwiftLogNoOpLogHandler() })
