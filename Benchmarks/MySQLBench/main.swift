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
//   ingest-new-head   one ingest of a new head of an existing queue: the same, with the counter upsert
//                     updating and the queue row read and updated under its version
//   ingest-new-queue+process
//                     ingest-new-queue followed by what the process consumer then runs for the request:
//                     the request read, the queue read and the request update to `processing`; the database
//                     work one API ingest causes in all
// Each thread owns one connection. Prints one line of `key=value` fields.

/// The scenarios `--scenario` accepts.
let scenarios = ["get", "ingest-new-queue", "ingest-new-head", "ingest-new-queue+process"]

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

/// Runs one scenario's operation `index` on `connection`.
func operation(_ scenario: String, _ connection: MySQLConnection, thread: Int, index: Int, run: String) throws {
    switch scenario {
    case "get":
        let rows = try Statements.getRequest(connection, queue: "bench/raw", n: 1)
        guard rows.count == 1 else { throw BenchError("the seeded request is missing") }
    case "ingest-new-queue", "ingest-new-queue+process":
        let queue = "bench/\(run)-\(thread)-\(index)"
        let uri = "git://bench/\(queue)/head"
        guard try Statements.uriID(connection, queue: queue, uri: uri).isEmpty else { throw BenchError("URI exists") }
        let n = try Statements.nextCounter(connection, queue: queue)
        try Statements.createURI(connection, queue: queue, uri: uri, n: n)
        try Statements.createRequest(connection, queue: queue, n: n, uri: uri, now: Date())
        guard try Statements.getQueue(connection, name: queue).isEmpty else { throw BenchError("queue exists") }
        try Statements.createQueue(connection, name: queue, latest: "request/\(queue)/\(n)")
        guard scenario == "ingest-new-queue+process" else { return }
        guard try Statements.getRequest(connection, queue: queue, n: n).count == 1,
            try Statements.getQueue(connection, name: queue).count == 1
        else { throw BenchError("the ingested rows are missing") }
        try Statements.updateRequestToProcessing(connection, queue: queue, n: n, now: Date())
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
    let started = ContinuousClock.now
    go.store(true, ordering: .releasing)
    ready.lock()
    while results.withLock({ $0.count }) < options.threads {
        _ = ready.wait(until: Date(timeIntervalSinceNow: 1))
    }
    ready.unlock()
    let elapsed = started.duration(to: .now)
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
        + " p99_us=\(String(format: "%.0f", percentile(latencies, 0.99)))\n"
    FileHandle.standardOutput.write(Data(line.utf8))
    return 0
}

exit(main())
