import ArgumentParser
import Domain
import Foundation
import Logging
import MySQLBackend
import MySQLClient

/// `stovepipe topics`: what an operator sees of the durable topics, and re-driving dead letters.
struct Topics: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect the durable topics in MySQL and re-drive dead letters.",
        subcommands: [List.self, Redrive.self],
        defaultSubcommand: List.self)

    /// The topics serve has: GET /topics/{topic} answers 404 for any other.
    static let known: [TopicName] = [.process]

    /// Refuses a name that is not a topic: the database has no rows for it, so it would read as an empty topic.
    static func requireKnown(_ name: String) throws {
        guard known.contains(TopicName(name)) else {
            throw ValidationError("no topic '\(name)'; the topics are: \(known.map(\.rawValue).joined(separator: ", "))")
        }
    }

    /// `text` for a terminal: control characters (C0, DEL, C1, line and paragraph separators) written as `\u{..}`,
    /// so a reason quoting a remote's words can neither send escape sequences nor start a line of its own.
    static func printable(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            let category = scalar.properties.generalCategory
            if category == .control || category == .lineSeparator || category == .paragraphSeparator || scalar == "\\" {
                result += scalar == "\\" ? "\\\\" : "\\u{\(String(scalar.value, radix: 16, uppercase: true))}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// The database options every topics subcommand takes.
    struct Database: ParsableArguments {
        @Option(help: "mysql://USER[:PASS]@HOST[:PORT]/DB (env STOVEPIPE_MYSQL_URL).") var mysqlURL: String?

        /// A broker over the database, not consuming: for stats, dead letters and redrive only.
        func withBroker<Result>(_ body: (MySQLBroker) throws -> Result) throws -> Result {
            guard let connection = try mysqlConfiguration(flag: mysqlURL, environment: ProcessInfo.processInfo.environment) else {
                throw ValidationError("topics needs --mysql-url or STOVEPIPE_MYSQL_URL (the in-memory topic lives inside serve: see GET /topics)")
            }
            try MySQLLibrary.initialize()
            let logger = Logger(label: "stovepipe", factory: { label in StderrLogHandler(label: label, format: .text, logLevel: .warning) })
            warnIfPasswordInArguments(mysqlURL, logger: logger)
            let pool = MySQLPool(connection: connection, configuration: MySQLPool.Configuration(maxConnections: 2), logger: logger)
            defer { pool.close() }
            do {
                return try body(MySQLBroker(pool: pool, logger: logger))
            } catch let error as BackendError {
                // Named as serve names it: an operator with several databases sees which URL was used.
                throw StartupError("the database at \(connection.redactedURL): \(error)")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Backlog, in flight, dead letters and oldest pending age per topic.")

        @OptionGroup var database: Database
        @Option(help: "The topics to show.") var topic: [String] = [TopicName.process.rawValue]
        @Option(help: "Dead letters to list per topic.") var deadLetters = 20

        func validate() throws {
            for name in topic { try Topics.requireKnown(name) }
            guard deadLetters >= 0 else { throw ValidationError("--dead-letters must be 0 or more") }
        }

        func run() throws {
            try database.withBroker { broker in
                for name in topic.map(TopicName.init) {
                    let stats = try broker.stats(name)
                    let age = stats.oldestPendingAgeSeconds.map { String(format: "%.1fs", $0) } ?? "-"
                    print("topic \(name): backlog \(stats.backlog), in flight \(stats.inFlight), dead letters \(stats.deadLetters), oldest pending \(age)")
                    for letter in try broker.deadLetters(name, limit: deadLetters) {
                        print(
                            "  dead \(Topics.printable(letter.message.id)) partition \(Topics.printable(letter.message.partitionKey))"
                                + " after \(letter.attempts) attempts: \(Topics.printable(letter.reason))")
                    }
                }
            }
        }
    }

    struct Redrive: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Put a dead letter back on its topic with a fresh attempt count.")

        @OptionGroup var database: Database
        @Option(help: "The topic of the dead letter.") var topic = TopicName.process.rawValue
        @Argument(help: "The message id, e.g. request/monorepo/main/7.") var messageID: String

        func validate() throws { try Topics.requireKnown(topic) }

        func run() throws {
            try database.withBroker { broker in
                do {
                    try broker.redrive(TopicName(topic), messageID: messageID)
                } catch let error as BackendError where error == .notFound {
                    throw StartupError("no dead letter '\(messageID)' on topic '\(topic)'")
                }
                print("re-drove \(messageID) onto \(topic)")
            }
        }
    }
}
