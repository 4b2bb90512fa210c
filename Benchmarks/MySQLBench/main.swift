import Foundation
import MySQLClient
import Synchronization

// The raw ceiling for scripts/bench-mysql: the statements the MySQL stores run for one API call, looped on
// MySQLClient connections with nothing else around them (no pool, no domain, no HTTP).
//
//   MySQLBench --url mysql://USER:PASS@127.0.0.1:PORT/DB --scenario SCENARIO --threads N --seconds S
//
// The database must be migrated (stovepipe migrate). Scenarios:
//   get               the SELECT of GET /requests/{id} (MySQLRequestStore.get), on one row
//   ingest-new-queue  one ingest of the first head of a queue never seen: the URI lookup (a miss), the
//                     counter upsert (an insert), the URI insert, the request insert, the queue lookup (a miss)
//                     and the queue insert; what scripts/bench-mysql's API ingest does, one queue per POST
//   ingest-new-queue+publish
//                     ingest-new-queue followed by the publish INSERT into the MySQL `process` topic: every
//                     statement an API ingest runs before it answers (the consumer's work comes later)
//   ingest-new-head   one ingest of a new head of an existing queue: the same, with the counter upsert
//                     updating and the queue row read and updated under its version
//   ingest-new-queue+process
//                     ingest-new-queue followed by what the process consumer then runs for the request:
//                     the request read, the queue read and the request update to `processing`; the database
//                     work one API ingest causes with an in-memory `process` topic
//   ingest-new-queue+topic+process
//                     the same with the MySQL `process` topic's statements for one message on a new partition:
//                     the publish INSERT, the partition row and lease, the head read, the delivery mark, the
//                     completion, the empty head read and the lease release (not the consumer's polls)
// Each thread owns one connection. Prints one line of `key=value` fields; cpu_us_per_op is this process's
// user plus system time per operation while the threads ran.

/// The scenarios `--scenario` accepts.
let scenarios = [
    "get", "ingest-new-queue", "ingest-new-queue+publish", "ingest-new-head", "ingest-new-queue+process",
    "ingest-new-queue+topic+process",
]

/// What the command line asked for.
struct Options {
    var url = ""
    var scenario = "get"
    var threads = 1
    var seconds = 10.0

    static func parse(_ arguments: [String]) -> Options? {
        var options = Options()
        var index = 0
        while index + 1 < arguments.count {
            let value = arguments[index + 1]
            switch arguments[index] {
            case "--url": options.url = value
            case "--scenario": options.scenario = value
            case "--threads": options.threads = Int(value) ?? 0
            case "--seconds": options.seconds = Double(value) ?? 0
            default: return nil
            }
            index += 2
        }
        guard index == arguments.count, !options.url.isEmpty, options.threads > 0, options.seconds > 0,
            scenarios.contains(options.scenario)
        else { return nil }
        return options
    }
}

/// One thread's count and latencies.
struct ThreadResult: Sendable {
    var operations = 0
    var latenciesNanoseconds: [Int64] = []
    var failure: String?
}

/// The statements of the stores, written exactly as MySQLStores.swift writes them so the server sees the
/// same prepared statement text.
enum Statements {
    static func getRequest(_ connection: MySQLConnection, queue: String, n: UInt64) throws -> [MySQLRow] {
        try connection.query(
            """
            SELECT queue, n, uri, state, build_strategy, base_uri, version, created_at, updated_at
            FROM requests WHERE queue = \(queue) AND n = \(n)
            """)
    }

    static func createRequest(_ connection: MySQLConnection, queue: String, n: UInt64, uri: String, now: Date) throws {
        let baseURI: String? = nil
        try connection.execute(
            """
            INSERT INTO requests (queue, n, uri, state, build_strategy, base_uri, version, created_at, updated_at)
            VALUES (\(queue), \(n), \(uri),
                    \("accepted"), \("undecided"), \(baseURI),
                    \(UInt64(1)), \(now), \(now))
            """)
    }

    static func uriID(_ connection: MySQLConnection, queue: String, uri: String) throws -> [MySQLRow] {
        try connection.query(
            "SELECT request_n FROM request_uris WHERE queue = \(queue) AND uri = \(uri)")
    }

    static func createURI(_ connection: MySQLConnection, queue: String, uri: String, n: UInt64) throws {
        try connection.execute(
            "INSERT INTO request_uris (queue, uri, request_n) VALUES (\(queue), \(uri), \(n))")
    }

    static func nextCounter(_ connection: MySQLConnection, queue: String) throws -> UInt64 {
        let result = try connection.execute(
            """
            INSERT INTO counters (queue, domain, value) VALUES (\(queue), \("request"), 1)
            ON DUPLICATE KEY UPDATE value = LAST_INSERT_ID(value + 1)
            """)
        return result.affectedRows == 1 ? 1 : result.lastInsertID
    }

    static func getQueue(_ connection: MySQLConnection, name: String) throws -> [MySQLRow] {
        try connection.query(
            """
            SELECT latest_request_id, last_green_uri, last_green_request_id, version
            FROM queues WHERE name = \(name)
            """)
    }

    static func createQueue(_ connection: MySQLConnection, name: String, latest: String) throws {
        let none: String? = nil
        try connection.execute(
            """
            INSERT INTO queues (name, latest_request_id, last_green_uri, last_green_request_id, version)
            VALUES (\(name), \(latest), \(none),
                    \(none), \(UInt64(1)))
            """)
    }

    static func updateRequestToProcessing(_ connection: MySQLConnection, queue: String, n: UInt64, now: Date) throws {
        let baseURI: String? = nil
        try connection.execute(
            """
            UPDATE requests
            SET state = \("processing"), build_strategy = \("full"),
                base_uri = \(baseURI), updated_at = \(now), version = \(UInt64(2))
            WHERE queue = \(queue) AND n = \(n) AND version = \(UInt64(1))
            """)
    }

    static func updateQueue(_ connection: MySQLConnection, name: String, latest: String, oldVersion: UInt64) throws {
        let none: String? = nil
        try connection.execute(
            """
            UPDATE queues
            SET latest_request_id = \(latest),
                last_green_uri = \(none),
                last_green_request_id = \(none), version = \(oldVersion + 1)
            WHERE name = \(name) AND version = \(oldVersion)
            """)
    }
}

/// The MySQL topic's statements for one message, as Sources/MySQLBackend/Topic/TopicStore.swift writes them.
enum Topic {
    static let topic = "process"

    static func publish(_ connection: MySQLConnection, partition: String, id: String) throws {
        let payload = Array(#"{"id":"\#(id)"}"#.utf8)
        try connection.execute(
            """
            INSERT INTO topic_messages
                (topic, partition_key, message_id, payload, state, attempts, available_at, enqueued_at)
            VALUES (\(topic), \(partition), \(id), \(payload),
                    \("pending"), 0, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))
            """)
    }

    static func ensurePartitionRow(_ connection: MySQLConnection, partition: String) throws {
        try connection.execute(
            """
            INSERT INTO topic_partitions (topic, partition_key) VALUES (\(topic), \(partition))
            ON DUPLICATE KEY UPDATE topic = topic
            """)
    }

    static func acquireLease(_ connection: MySQLConnection, partition: String, replica: String) throws -> Bool {
        try connection.execute(
            """
            UPDATE topic_partitions
            SET owner = \(replica), lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL \(Int64(30_000_000)) MICROSECOND
            WHERE topic = \(topic) AND partition_key = \(partition)
              AND (owner IS NULL OR owner = \(replica) OR lease_expires_at < UTC_TIMESTAMP(6))
            """
        ).affectedRows > 0
    }

    static func head(_ connection: MySQLConnection, partition: String) throws -> UInt64? {
        try connection.query(
            """
            SELECT seq, message_id, payload, attempts, TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), available_at)
            FROM topic_messages
            WHERE topic = \(topic) AND state = \("pending") AND partition_key = \(partition)
            ORDER BY seq LIMIT 1
            """
        ).first?.uint64(0)
    }

    static func beginDelivery(
        _ connection: MySQLConnection, seq: UInt64, token: UInt64, partition: String, replica: String
    ) throws -> Bool {
        try connection.execute(
            """
            UPDATE topic_messages m
            JOIN topic_partitions p ON p.topic = m.topic AND p.partition_key = m.partition_key
            SET m.attempts = m.attempts + 1, m.delivery_token = \(token),
                m.available_at = UTC_TIMESTAMP(6) + INTERVAL \(Int64(30_000_000)) MICROSECOND
            WHERE m.seq = \(seq) AND m.state = \("pending") AND m.available_at <= UTC_TIMESTAMP(6)
              AND p.topic = \(topic) AND p.partition_key = \(partition) AND p.owner = \(replica)
            """
        ).affectedRows > 0
    }

    static func complete(_ connection: MySQLConnection, seq: UInt64, token: UInt64) throws -> Bool {
        try connection.execute(
            """
            UPDATE topic_messages SET state = \("acked"), delivery_token = NULL, finished_at = UTC_TIMESTAMP(6)
            WHERE seq = \(seq) AND delivery_token = \(token) AND state = \("pending")
            """
        ).affectedRows > 0
    }

    static func releaseLease(_ connection: MySQLConnection, partition: String, replica: String) throws {
        try connection.execute(
            """
            UPDATE topic_partitions SET owner = NULL, lease_expires_at = NULL
            WHERE topic = \(topic) AND partition_key = \(partition) AND owner = \(replica)
            """)
    }
}

/// Runs one scenario's operation `index` on `connection`.
func operation(_ scenario: String, _ connection: MySQLConnection, thread: Int, index: Int, run: String) throws {
    switch scenario {
    case "get":
        let rows = try Statements.getRequest(connection, queue: "bench/raw", n: 1)
        guard rows.count == 1 else { throw BenchError("the seeded request is missing") }
    case "ingest-new-queue", "ingest-new-queue+publish", "ingest-new-queue+process", "ingest-new-queue+topic+process":
        let queue = "bench/\(run)-\(thread)-\(index)"
        let uri = "git://bench/\(queue)/head"
        guard try Statements.uriID(connection, queue: queue, uri: uri).isEmpty else { throw BenchError("URI exists") }
        let n = try Statements.nextCounter(connection, queue: queue)
        try Statements.createURI(connection, queue: queue, uri: uri, n: n)
        try Statements.createRequest(connection, queue: queue, n: n, uri: uri, now: Date())
        guard try Statements.getQueue(connection, name: queue).isEmpty else { throw BenchError("queue exists") }
        try Statements.createQueue(connection, name: queue, latest: "request/\(queue)/\(n)")
        guard scenario != "ingest-new-queue" else { return }
        guard scenario != "ingest-new-queue+publish" else {
            try Topic.publish(connection, partition: queue, id: "request/\(queue)/\(n)")
            return
        }
        let withTopic = scenario == "ingest-new-queue+topic+process"
        let token = UInt64(index + 2)
        if withTopic {
            try Topic.publish(connection, partition: queue, id: "request/\(queue)/\(n)")
            try Topic.ensurePartitionRow(connection, partition: queue)
            guard try Topic.acquireLease(connection, partition: queue, replica: run) else { throw BenchError("no lease") }
            guard let seq = try Topic.head(connection, partition: queue),
                try Topic.beginDelivery(connection, seq: seq, token: token, partition: queue, replica: run)
            else { throw BenchError("no delivery") }
        }
        guard try Statements.getRequest(connection, queue: queue, n: n).count == 1,
            try Statements.getQueue(connection, name: queue).count == 1
        else { throw BenchError("the ingested rows are missing") }
        try Statements.updateRequestToProcessing(connection, queue: queue, n: n, now: Date())
        if withTopic {
            guard let seq = try Topic.head(connection, partition: queue),
                try Topic.complete(connection, seq: seq, token: token)
            else { throw BenchError("no completion") }
            guard try Topic.head(connection, partition: queue) == nil else { throw BenchError("partition not empty") }
            try Topic.releaseLease(connection, partition: queue, replica: run)
        }
    default:
        let queue = "bench/\(run)-head-\(thread)"
        let uri = "git://bench/\(queue)/\(index)"
        guard try Statements.uriID(connection, queue: queue, uri: uri).isEmpty else { throw BenchError("URI exists") }
        let n = try Statements.nextCounter(connection, queue: queue)
        try Statements.createURI(connection, queue: queue, uri: uri, n: n)
        try Statements.createRequest(connection, queue: queue, n: n, uri: uri, now: Date())
        guard let row = try Statements.getQueue(connection, name: queue).first, let version = row.uint64("version") else {
            throw BenchError("the queue row is missing")
        }
        try Statements.updateQueue(connection, name: queue, latest: "request/\(queue)/\(n)", oldVersion: version)
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Seeds what a scenario reads: the request GET fetches, or each thread's queue row.
func seed(_ options: Options, configuration: MySQLConfiguration, run: String) throws {
    let connection = try MySQLConnection(configuration: configuration)
    switch options.scenario {
    case "get":
        if try Statements.getRequest(connection, queue: "bench/raw", n: 1).isEmpty {
            try Statements.createRequest(connection, queue: "bench/raw", n: 1, uri: "git://bench/raw/1", now: Date())
        }
    case "ingest-new-head":
        for thread in 0..<options.threads {
            try Statements.createQueue(connection, name: "bench/\(run)-head-\(thread)", latest: "request/none/1")
        }
    default:
        break
    }
}

/// User plus system CPU time of this process so far, in microseconds (getrusage(2)).
func processCPUMicroseconds() -> Double {
    var usage = rusage()
    guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
    func microseconds(_ time: timeval) -> Double { Double(time.tv_sec) * 1e6 + Double(time.tv_usec) }
    return microseconds(usage.ru_utime) + microseconds(usage.ru_stime)
}

func percentile(_ sorted: [Int64], _ fraction: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let index = min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.down)))
    return Double(sorted[index]) / 1000
}

func main() -> Int32 {
    guard let options = Options.parse(Array(CommandLine.arguments.dropFirst())) else {
        FileHandle.standardError.write(
            Data("usage: MySQLBench --url URL --scenario \(scenarios.joined(separator: "|")) --threads N --seconds S\n".utf8))
        return 2
    }
    var configuration: MySQLConfiguration
    do {
        try MySQLLibrary.initialize()
        configuration = try MySQLConfiguration(url: options.url)
    } catch {
        FileHandle.standardError.write(Data("MySQLBench: \(error)\n".utf8))
        return 1
    }
    // The stores' connections set CLIENT_FOUND_ROWS; so do these, so UPDATE reports the same counts.
    configuration.reportsMatchedRows = true
    let run = String(UUID().uuidString.prefix(8)).lowercased()
    let connectionConfiguration = configuration
    do {
        try seed(options, configuration: configuration, run: run)
    } catch {
        FileHandle.standardError.write(Data("MySQLBench: seeding failed: \(error)\n".utf8))
        return 1
    }

    let results = Mutex<[ThreadResult]>([])
    let ready = NSCondition()
    let connected = Atomic<Int>(0)
    let go = Atomic<Bool>(false)
    let startBarrier = ContinuousClock.now
    for thread in 0..<options.threads {
        Thread {
            var result = ThreadResult()
            result.latenciesNanoseconds.reserveCapacity(200_000)
            do {
                let connection = try MySQLConnection(configuration: connectionConfiguration)
                // Prepares every statement once before the clock starts, as a warm pool would have.
                try operation(options.scenario, connection, thread: thread, index: -1, run: run)
                connected.add(1, ordering: .releasing)
                while !go.load(ordering: .acquiring) { usleep(100) }
                let deadline = ContinuousClock.now + .milliseconds(Int64(options.seconds * 1000))
                var index = 0
                while true {
                    let started = ContinuousClock.now
                    if started >= deadline { break }
                    try operation(options.scenario, connection, thread: thread, index: index, run: run)
                    let elapsed = started.duration(to: .now)
                    result.latenciesNanoseconds.append(
                        elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
                    result.operations += 1
                    index += 1
                }
            } catch {
                result.failure = "\(error)"
                connected.add(1, ordering: .releasing)
            }
            results.withLock { $0.append(result) }
            ready.lock()
            ready.signal()
            ready.unlock()
        }.start()
    }
    while connected.load(ordering: .acquiring) < options.threads {
        if startBarrier.duration(to: .now) > .seconds(60) {
            FileHandle.standardError.write(Data("MySQLBench: threads did not connect within 60 s\n".utf8))
            return 1
        }
        usleep(1000)
    }
    let cpuBefore = processCPUMicroseconds()
    let started = ContinuousClock.now
    go.store(true, ordering: .releasing)
    ready.lock()
    while results.withLock({ $0.count }) < options.threads {
        _ = ready.wait(until: Date(timeIntervalSinceNow: 1))
    }
    ready.unlock()
    let elapsed = started.duration(to: .now)
    let cpuUsed = processCPUMicroseconds() - cpuBefore
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18

    let all = results.withLock { $0 }
    if let failure = all.compactMap(\.failure).first {
        FileHandle.standardError.write(Data("MySQLBench: a thread failed: \(failure)\n".utf8))
        return 1
    }
    let operations = all.reduce(0) { $0 + $1.operations }
    let latencies = all.flatMap(\.latenciesNanoseconds).sorted()
    let rate = Double(operations) / seconds
    let line =
        "scenario=\(options.scenario) threads=\(options.threads) operations=\(operations)"
        + " seconds=\(String(format: "%.2f", seconds)) ops_per_sec=\(String(format: "%.1f", rate))"
        + " p50_us=\(String(format: "%.0f", percentile(latencies, 0.50)))"
        + " p99_us=\(String(format: "%.0f", percentile(latencies, 0.99)))"
        + " cpu_us_per_op=\(String(format: "%.1f", operations > 0 ? cpuUsed / Double(operations) : 0))\n"
    FileHandle.standardOutput.write(Data(line.utf8))
    return 0
}

exit(main())
