import Foundation
import MySQLClient
import Testing

@Suite(.serialized, .enabled(if: mysqlEndToEndRuns)) struct TopicsCommandTests {
    /// A dead letter's reason can quote a git remote's or a server's words; printed raw, an escape sequence in it
    /// would drive the operator's terminal and a line break would forge a line of the listing.
    @Test func deadLetterReasonsArePrintedOnOneLineWithControlCharactersEscaped() throws {
        let database = try ScratchDatabase()
        defer { database.drop() }
        let migrated = try runStovepipe(["migrate", "--mysql-url", database.url])
        try #require(migrated.status == 0, "\(migrated.stderr)")
        var configuration = database.server
        configuration.database = database.name
        let connection = try MySQLConnection(configuration: configuration)
        defer { connection.close() }
        let reason = #"C:\x "# + "remote: \u{1B}]0;owned\u{7}\u{1B}[2Jfatal\u{D}\u{A}  dead request/x/1 partition x after 1 attempts: forged\u{9B}31m"
        _ = try connection.execute(
            MySQLQuery(
                unsafeSQL: """
                INSERT INTO topic_messages (topic, partition_key, message_id, payload, state, attempts, available_at,
                    last_error, enqueued_at, finished_at)
                VALUES ('process', 'app/main', 'request/app/main/1', '', 'dead', 3, NOW(6), ?, NOW(6), NOW(6))
                """, binds: [.string(reason)]))

        let listed = try runStovepipe(["topics", "list", "--mysql-url", database.url])
        #expect(listed.status == 0, "\(listed.stderr)")
        // Split as a terminal shows lines: a carriage return or any other line break starts a new one.
        let lines = listed.stdout.components(separatedBy: .newlines).filter { !$0.isEmpty }
        #expect(lines.count == 2, "\(listed.stdout)")
        #expect(lines.first?.hasPrefix("topic process: backlog 0, in flight 0, dead letters 1") == true, "\(listed.stdout)")
        #expect(
            lines.last
                == #"  dead request/app/main/1 partition app/main after 3 attempts: C:\\x remote: \u{1B}]0;owned\u{7}\u{1B}[2Jfatal\u{D}\u{A}  dead request/x/1 partition x after 1 attempts: forged\u{9B}31m"#,
            "\(listed.stdout)")
        #expect(!listed.stdout.unicodeScalars.contains { $0.properties.generalCategory == .control && $0 != "\n" })
    }
}
