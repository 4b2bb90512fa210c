import Foundation
import MySQLClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized, .enabled(if: mysqlEndToEndRuns)) struct MySQLEndToEndTests {
    @Test func migrateServeRestartAndIngestAgainOverMySQL() throws {
        let database = try ScratchDatabase()
        defer { database.drop() }
        let repository = try TemporaryRepository()
        defer { repository.remove() }
        let queues = try gitQueuesFile(repository)
        defer { try? FileManager.default.removeItem(at: queues) }

        let migrated = try runStovepipe(["migrate", "--mysql-url", database.url])
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(migrated.stdout.contains("applied migrations"), "\(migrated.stdout)")
        #expect(!migrated.stdout.contains(database.server.password ?? "\u{0}"), "migrate printed the password")
        let again = try runStovepipe(["migrate", "--mysql-url", database.url])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.contains("schema already current"), "\(again.stdout)")

        let first = try repository.commit("one")
        let arguments = ["--mysql-url", database.url, "--queues", queues.path]
        let server = try RunningServer(arguments: arguments)
        let minted = try http("POST", "/queues/app/main/ingest", port: server.port)
        #expect(minted.status == 202, "\(minted.text)")
        #expect(minted.json["id"] as? String == "request/app/main/1")
        #expect((minted.json["uri"] as? String)?.hasSuffix(first) == true)
        let duplicate = try http("POST", "/queues/app/main/ingest", port: server.port)
        #expect(duplicate.status == 200, "\(duplicate.text)")
        #expect(duplicate.json["id"] as? String == "request/app/main/1")
        #expect(duplicate.json["deduplicated"] as? Bool == true)
        let processing = try eventually {
            try http("GET", "/requests/request/app/main/1", port: server.port).json["state"] as? String == "processing"
        }
        #expect(processing, "request 1 did not reach processing")
        let ready = try http("GET", "/readyz", port: server.port)
        #expect(ready.status == 200, "\(ready.text)")
        #expect(server.terminate() == 0, "\(server.log)")
        #expect(!server.log.contains(database.server.password ?? "\u{0}"), "the log carries the password")

        // A new process on the same database: what the first one wrote is still there.
        let restarted = try RunningServer(arguments: arguments)
        let durable = try http("POST", "/queues/app/main/ingest", port: restarted.port)
        #expect(durable.status == 200, "\(durable.text)")
        #expect(durable.json["id"] as? String == "request/app/main/1")
        #expect(durable.json["deduplicated"] as? Bool == true)
        #expect(try http("GET", "/requests/request/app/main/1", port: restarted.port).json["state"] as? String == "processing")

        let second = try repository.commit("two")
        let next = try http("POST", "/queues/app/main/ingest", port: restarted.port)
        #expect(next.status == 202, "\(next.text)")
        #expect(next.json["id"] as? String == "request/app/main/2")
        #expect((next.json["uri"] as? String)?.hasSuffix(second) == true)
        let queue = try http("GET", "/queues/app/main", port: restarted.port)
        #expect(queue.json["latest_request_id"] as? String == "request/app/main/2")
        #expect(restarted.terminate() == 0, "\(restarted.log)")
    }

    @Test func aPublishOnlyReplicaLeavesTheProcessTopicToReplicasThatConsume() throws {
        let setup = try MigratedQueueSetup()
        defer { setup.remove() }
        _ = try setup.repository.commit("one")
        let publisher = try RunningServer(arguments: setup.serveArguments + ["--consumer-threads", "0"])
        let published = #"stovepipe_topic_published_total{topic="process"}"#
        // Exported at 0 before the first publish, as every counter, so that rate() sees the first one.
        let before = try http("GET", "/metrics", port: publisher.port).text
        #expect(before.contains("\n\(published) 0\n"), "\(before)")
        let minted = try http("POST", "/queues/app/main/ingest", port: publisher.port)
        #expect(minted.status == 202, "\(minted.text)")
        let after = try http("GET", "/metrics", port: publisher.port).text
        #expect(after.contains("\n\(published) 1\n"), "\(after)")
        let ready = try http("GET", "/readyz", port: publisher.port)
        #expect(ready.status == 200, "\(ready.text)")
        #expect(ready.text.contains("only publishes"), "\(ready.text)")
        // A consuming replica announces itself before its listener opens; this one never does, so the
        // consumers share every partition among themselves.
        #expect(try Self.announcedReplicas(setup.database) == 0)
        let topics = try http("GET", "/topics", port: publisher.port)
        #expect(topics.text.contains(#""backlog":1"#), "\(topics.text)")

        let consumer = try RunningServer(arguments: setup.serveArguments)
        #expect(try Self.announcedReplicas(setup.database) == 1)
        let processed = try eventually {
            try http("GET", "/requests/request/app/main/1", port: publisher.port).json["state"] as? String == "processing"
        }
        #expect(processed, "the consuming replica did not process what the publisher published")
        #expect(consumer.terminate() == 0, "\(consumer.log)")
        #expect(publisher.terminate() == 0, "\(publisher.log)")
        #expect(publisher.log.contains("topic consumer off"), "\(publisher.log)")
        #expect(!publisher.log.contains("mysql broker started"), "\(publisher.log)")
    }

    @Test func sigtermWithTheConsumerBlockedOnALockExitsWithinTheShutdownTimeoutAndTheMessageIsProcessedLater() throws {
        let setup = try MigratedQueueSetup()
        defer { setup.remove() }
        _ = try setup.repository.commit("one")
        let publisher = try RunningServer(arguments: setup.serveArguments + ["--consumer-threads", "0"])
        #expect(try http("POST", "/queues/app/main/ingest", port: publisher.port).status == 202)
        // Another session holds the request's row, so the consumer's state update waits on the lock (up to the
        // 30 s read timeout) with its delivery in flight.
        var configuration = setup.database.server
        configuration.database = setup.database.name
        let locker = try MySQLConnection(configuration: configuration)
        try locker.execute("START TRANSACTION")
        _ = try locker.query("SELECT n FROM requests WHERE queue = \("app/main") AND n = \(UInt64(1)) FOR UPDATE")
        var locked = true
        defer { if locked { _ = try? locker.execute("ROLLBACK") } }

        let consumer = try RunningServer(
            arguments: setup.serveArguments + ["--shutdown-timeout", "1", "--topic-visibility-seconds", "2", "--topic-lease-seconds", "2"])
        let inFlight = try eventually { try http("GET", "/topics", port: publisher.port).text.contains(#""in_flight":1"#) }
        #expect(inFlight, "the consumer did not begin the delivery")
        let signalled = ContinuousClock.now
        kill(consumer.process.processIdentifier, SIGTERM)
        consumer.process.waitUntilExit()
        let took = ContinuousClock.now - signalled
        #expect(consumer.process.terminationStatus == 0, "\(consumer.log)")
        // --shutdown-timeout 1: the HTTP drain and the consumer share it, with a second's grace for threads.
        #expect(took < .seconds(8), "exit took \(took); log: \(consumer.log)")

        try locker.execute("ROLLBACK")
        locked = false
        // The message given back (or left to its visibility timeout) is processed by the next consumer.
        let next = try RunningServer(arguments: setup.serveArguments)
        let processed = try eventually(within: 30) {
            try http("GET", "/requests/request/app/main/1", port: publisher.port).json["state"] as? String == "processing"
        }
        #expect(processed, "the message was lost")
        let drained = try eventually {
            let topics = try http("GET", "/topics", port: publisher.port).text
            return topics.contains(#""backlog":0"#) && topics.contains(#""in_flight":0"#) && topics.contains(#""dead_letters":0"#)
        }
        let topics = (try? http("GET", "/topics", port: publisher.port).text) ?? ""
        #expect(drained, "\(topics)")
        #expect(next.terminate() == 0, "\(next.log)")
        #expect(publisher.terminate() == 0, "\(publisher.log)")
    }

    /// Rows of the replica table: the replicas that announced themselves as consumers.
    private static func announcedReplicas(_ database: ScratchDatabase) throws -> Int {
        let connection = try MySQLConnection(configuration: try MySQLConfiguration(url: database.url))
        let rows = try connection.query("SELECT COUNT(*) FROM topic_replicas")
        return Int(rows.first?.int64(0) ?? -1)
    }

    @Test func serveRefusesAnUnmigratedDatabaseAndSaysToRunMigrate() throws {
        let database = try ScratchDatabase()
        defer { database.drop() }
        let finished = try runStovepipe(["serve", "--port", "0", "--mysql-url", database.url])
        #expect(finished.status != 0)
        #expect(!finished.stdout.contains("listening on"), "\(finished.stdout)")
        #expect(finished.stderr.contains("stovepipe migrate"), "\(finished.stderr)")
        #expect(!finished.stderr.contains(database.server.password ?? "\u{0}"), "stderr carries the password")
    }

    @Test func aSchemaNewerThanTheBinaryIsServedAndLeftAloneByMigrate() throws {
        let database = try ScratchDatabase()
        defer { database.drop() }
        let migrated = try runStovepipe(["migrate", "--mysql-url", database.url])
        #expect(migrated.status == 0, "\(migrated.stderr)")
        var configuration = database.server
        configuration.database = database.name
        let connection = try MySQLConnection(configuration: configuration)
        try connection.execute("INSERT INTO schema_migrations (version, name) VALUES (\(UInt32(999)), \("future"))")

        // A rolling deploy or a rollback: the older release's migrate applies nothing and says why.
        let again = try runStovepipe(["migrate", "--mysql-url", database.url])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.contains("schema already current; also applied, by a newer release: 999"), "\(again.stdout)")

        // ... and its replicas keep serving and stay ready, saying so.
        let server = try RunningServer(arguments: ["--mysql-url", database.url])
        #expect(eventually { server.log.contains("newer than this binary") }, "\(server.log)")
        let ready = try http("GET", "/readyz", port: server.port)
        #expect(ready.status == 200, "\(ready.text)")
        #expect(ready.text.contains("the database is newer than this binary"), "\(ready.text)")
        #expect(server.terminate() == 0)
    }
}
