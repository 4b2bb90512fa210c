import Domain
import Foundation
import MySQLBackend
import MySQLClient
import TestSupport
import Testing

/// What one store call did while the server was down.
private struct OutageCall: Sendable {
    let operation: String
    let error: BackendError?
    let elapsed: Duration
}

@Suite("MySQL outage and recovery", .enabled(if: privateServerSuitesRun), .serialized)
struct MySQLOutageTests {
    private static let connectTimeoutSeconds: UInt32 = 2

    @Test("stopped server: store calls are unavailable within the connect timeout; restarted: the same pool recovers")
    func outageAndRecovery() async throws {
        try await withPrivateServer { server, url in try await Self.exercise(server, url: url) }
    }

    private static func exercise(_ server: PrivateServer, url: String) async throws {
        var configuration = try MySQLConfiguration(url: url)
        configuration.database = nil
        configuration.connectTimeoutSeconds = connectTimeoutSeconds
        configuration.readTimeoutSeconds = 5
        configuration.writeTimeoutSeconds = 5
        let base = configuration
        configuration.database = "outage"
        let storage = MySQLStorage(
            configuration: configuration,
            poolConfiguration: MySQLPool.Configuration(maxConnections: 4, acquireTimeout: .seconds(5)),
            logger: silentLogger)
        defer { storage.close() }

        let queue = try QueueName("app/main")
        let request = Request(
            id: RequestID(queue: queue, number: 1), uri: SourceURI("git://app/main/1"),
            createdAt: Date(timeIntervalSince1970: 1_700_000_000))
        let firstValue = try await offPool {
            let admin = try MySQLConnection(configuration: base)
            try admin.execute("CREATE DATABASE outage CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            admin.close()
            try storage.migrator.migrate()
            try storage.requests.create(request)
            return try storage.counter.next(queue: queue, domain: requestCounterDomain)
        }
        #expect(firstValue == 1)
        #expect(storage.pool.statistics.idle >= 1, "the pool should hold an idle connection that the outage breaks")

        try await offPool { try server.stop() }

        // The first calls meet the idle connection the stop broke; later ones must connect and are refused.
        let calls = try await offPool { () -> [OutageCall] in
            var calls: [OutageCall] = []
            for round in 0..<3 {
                calls.append(Self.measure("requests.get #\(round)") { () throws(BackendError) in _ = try storage.requests.get(request.id) })
                calls.append(Self.measure("counter.next #\(round)") { () throws(BackendError) in
                    _ = try storage.counter.next(queue: queue, domain: requestCounterDomain)
                })
                calls.append(Self.measure("queues.get #\(round)") { () throws(BackendError) in _ = try storage.queues.get(queue) })
            }
            return calls
        }
        let bound = Duration.seconds(Int(connectTimeoutSeconds) + 3)
        for call in calls {
            guard case .unavailable(let retryable, _)? = call.error else {
                Issue.record("\(call.operation) during the outage: expected unavailable, got \(String(describing: call.error))")
                continue
            }
            #expect(retryable, "\(call.operation)")
            #expect(call.elapsed < bound, "\(call.operation) took \(call.elapsed), beyond \(bound)")
        }

        let restartedURL = try await offPool { try server.start() }
        #expect(restartedURL == url, "a restart must come back on the same port with the same credentials")

        // The same storage object, with no new pool: poll until a call succeeds.
        let deadline = ContinuousClock.now + .seconds(60)
        var recovered: Request?
        while recovered == nil && ContinuousClock.now < deadline {
            recovered = try? await offPool { try storage.requests.get(request.id) }
            if recovered == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(recovered == request, "the pool did not recover within 60 s of the server's restart")
        let nextValue = try await offPool { try storage.counter.next(queue: queue, domain: requestCounterDomain) }
        #expect(nextValue == 2, "the counter row written before the outage is durable, and failed calls spent nothing")
        #expect(storage.pool.statistics.totalDiscarded >= 1, "the connection the outage broke was discarded")
    }

    // On a server of its own: max_prepared_stmt_count is global, so lowering it on the shared test server made the
    // suites running beside this one fail their prepares, and their statements coming and going left this one's
    // limit unreached.
    @Test("a prepare refused for max_prepared_stmt_count makes room by closing this connection's oldest statement")
    func preparedStatementLimit() async throws {
        try await withPrivateServer { _, url in try await offPool { try Self.exercisePreparedStatementLimit(url: url) } }
    }

    private static func exercisePreparedStatementLimit(url: String) throws {
        var configuration = try MySQLConfiguration(url: url)
        configuration.database = nil
        let admin = try MySQLConnection(configuration: configuration)
        defer { admin.close() }
        let connection = try MySQLConnection(configuration: configuration, statementCacheCapacity: 16)
        defer { connection.close() }
        #expect(try connection.query("SELECT \(1) AS a").first?.int64(0) == 1)
        let open = try #require(
            try admin.query(
                "SELECT VARIABLE_VALUE AS n FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'PREPARED_STMT_COUNT'"
            ).first?.string("n").flatMap { Int($0) })
        // Room for exactly one more statement on the whole server.
        try admin.executeScript(unsafeSQL: "SET GLOBAL max_prepared_stmt_count = \(open + 1)")
        #expect(try connection.query("SELECT \(2) AS b").first?.int64(0) == 2)
        #expect(try connection.query("SELECT \(3) AS c").first?.int64(0) == 3)
        #expect(try connection.query("SELECT \(4) AS d").first?.int64(0) == 4)
        #expect(connection.cachedStatementCount == 2)
        #expect(connection.isUsable)
    }

    private static func measure(_ operation: String, _ body: () throws(BackendError) -> Void) -> OutageCall {
        let started = ContinuousClock.now
        do {
            try body()
            return OutageCall(operation: operation, error: nil, elapsed: started.duration(to: .now))
        } catch {
            return OutageCall(operation: operation, error: error, elapsed: started.duration(to: .now))
        }
    }
}

@Suite("scripts/mysql-test-db")
struct TestDatabaseScriptTests {
    @Test("stop leaves alone a process that took the pid of a server that died, and forgets the stale pid file")
    func stopLeavesAReusedPidAlone() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-stale-pid-\(UUID().uuidString)")
        try FileManager.default.createDirectory(
            at: directory.appendingPathComponent("data"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // Stands in for whatever process the kernel gave the dead server's pid to.
        let bystander = Process()
        bystander.executableURL = URL(fileURLWithPath: "/bin/sleep")
        bystander.arguments = ["60"]
        try bystander.run()
        defer { if bystander.isRunning { bystander.terminate() } }
        try "\(bystander.processIdentifier)\n".write(
            to: directory.appendingPathComponent("pid"), atomically: true, encoding: .utf8)

        let stop = Process()
        stop.executableURL = try testDatabaseScript()
        stop.arguments = ["stop", directory.path]
        let errors = Pipe()
        stop.standardError = errors
        try stop.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        stop.waitUntilExit()

        #expect(stop.terminationStatus == 0)
        #expect(message.contains("another process"), "\(message)")
        #expect(bystander.isRunning, "the script signalled a process that is not its server")
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("pid").path))
    }
}
