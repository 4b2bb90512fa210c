import Domain
import Foundation
import Logging
import MySQLBackend
import MySQLClient
import Synchronization

// Measures the MySQL topic: publish+consume throughput and backlog drain on one and two replicas, and
// publish-to-handler latency at a steady rate. Usage:
//   TopicBench --url mysql://user:pass@127.0.0.1:port/ [--messages N] [--partitions P] [--publishers K]
//              [--rate R] [--seconds S] [--workers W]
// It creates a database bench_<random> on the server, runs, and drops it.

struct Options {
    var url = ProcessInfo.processInfo.environment["STOVEPIPE_BENCH_MYSQL_URL"] ?? ""
    var messages = 5_000
    var partitions = 20
    var publishers = 4
    var rate = 200
    var seconds = 10
    var workers = 4

    init(_ arguments: [String]) throws {
        var iterator = arguments.makeIterator()
        while let flag = iterator.next() {
            guard let value = iterator.next() else { throw BenchError("missing value after \(flag)") }
            switch flag {
            case "--url": url = value
            case "--messages": messages = try Self.number(value, flag)
            case "--partitions": partitions = try Self.number(value, flag)
            case "--publishers": publishers = try Self.number(value, flag)
            case "--rate": rate = try Self.number(value, flag)
            case "--seconds": seconds = try Self.number(value, flag)
            case "--workers": workers = try Self.number(value, flag)
            default: throw BenchError("unknown option \(flag)")
            }
        }
        guard !url.isEmpty else { throw BenchError("--url (or STOVEPIPE_BENCH_MYSQL_URL) is required") }
    }

    private static func number(_ text: String, _ flag: String) throws -> Int {
        guard let value = Int(text), value > 0 else { throw BenchError("\(flag) needs a positive integer") }
        return value
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

let topic = TopicName("process")
let logger = Logger(label: "topic-bench", factory: { _ in SwiftLogNoOpLogHandler() })

/// A fresh database with the topic tables, dropped by `drop()`.
struct BenchDatabase {
    let base: MySQLConfiguration
    let configuration: MySQLConfiguration

    init(url: String) throws {
        var base = try MySQLConfiguration(url: url)
        base.database = nil
        let name = "bench_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let admin = try MySQLConnection(configuration: base)
        defer { admin.close() }
        try admin.execute("CREATE DATABASE \(identifier: name) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        var configuration = base
        configuration.database = name
        let setup = try MySQLConnection(configuration: configuration)
        defer { setup.close() }
        for statement in MySQLBroker.schema { try setup.executeScript(unsafeSQL: statement) }
        self.base = base
        self.configuration = configuration
    }

    func pool() -> MySQLPool {
        MySQLPool(connection: configuration, configuration: .init(maxConnections: 16), logger: logger)
    }

    func drop() {
        guard let name = configuration.database, let admin = try? MySQLConnection(configuration: base) else { return }
        _ = try? admin.execute("DROP DATABASE IF EXISTS \(identifier: name)")
        admin.close()
    }
}

/// Counts handled messages and keeps handler-start latencies.
final class Tally: Sendable {
    private let state = Mutex<(handled: Int, ids: Set<String>, latencies: [Duration])>((0, [], []))
    private let publishedAt = Mutex<[String: ContinuousClock.Instant]>([:])

    func published(_ id: String, at instant: ContinuousClock.Instant) {
        publishedAt.withLock { $0[id] = instant }
    }

    func handled(_ id: String) {
        let now = ContinuousClock.now
        let start = publishedAt.withLock { $0[id] }
        state.withLock { state in
            state.handled += 1
            if state.ids.insert(id).inserted, let start { state.latencies.append(now - start) }
        }
    }

    var distinct: Int { state.withLock { $0.ids.count } }
    var deliveries: Int { state.withLock { $0.handled } }
    var latencies: [Duration] { state.withLock { $0.latencies } }
}

func milliseconds(_ duration: Duration) -> Double {
    let (seconds, attoseconds) = duration.components
    return Double(seconds) * 1_000 + Double(attoseconds) / 1e15
}

func percentile(_ sorted: [Duration], _ fraction: Double) -> Duration {
    guard !sorted.isEmpty else { return .zero }
    let index = min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)
    return sorted[max(0, index)]
}

/// Starts `replicas` brokers on their own pools, all acking into `tally`.
func startReplicas(_ database: BenchDatabase, count: Int, workers: Int, tally: Tally) throws -> [(MySQLBroker, MySQLPool)] {
    try (0..<count).map { _ in
        let pool = database.pool()
        let broker = MySQLBroker(
            pool: pool, configuration: .init(workerThreads: workers, pollInterval: .milliseconds(200)), logger: logger)
        broker.subscribe(topic) { delivery in
            tally.handled(delivery.message.id)
            return .ack
        }
        try broker.start()
        return (broker, pool)
    }
}

func waitUntil(_ deadline: Duration, _ condition: () -> Bool) -> Bool {
    let end = ContinuousClock.now + deadline
    while !condition() {
        if ContinuousClock.now >= end { return false }
        Thread.sleep(forTimeInterval: 0.002)
    }
    return true
}

/// Publishes `messages` from `publishers` threads through the first replica while all replicas consume.
func throughput(_ options: Options, replicas replicaCount: Int) throws {
    let database = try BenchDatabase(url: options.url)
    defer { database.drop() }
    let tally = Tally()
    let replicas = try startReplicas(database, count: replicaCount, workers: options.workers, tally: tally)
    let publisher = replicas[0].0
    let started = ContinuousClock.now
    let failures = Mutex(0)
    let group = DispatchGroup()
    for thread in 0..<options.publishers {
        group.enter()
        Thread {
            for index in stride(from: thread, to: options.messages, by: options.publishers) {
                let key = "queue-\(index % options.partitions)"
                do {
                    try publisher.publish(Message(topic: topic, partitionKey: key, id: "m\(index)", payload: Array("{\"n\":\(index)}".utf8)))
                } catch {
                    failures.withLock { $0 += 1 }
                }
            }
            group.leave()
        }.start()
    }
    group.wait()
    let published = ContinuousClock.now - started
    let finished = waitUntil(.seconds(600)) { tally.distinct >= options.messages }
    let elapsed = ContinuousClock.now - started
    for (broker, pool) in replicas {
        broker.shutdown()
        pool.close()
    }
    let seconds = milliseconds(elapsed) / 1_000
    print(
        String(
            format: "throughput, %d replica(s): %d messages on %d partitions, %d publisher threads, %d workers each: "
                + "published in %.2f s, all handled in %.2f s = %.0f msg/s (deliveries %d, publish failures %d%@)",
            replicaCount, options.messages, options.partitions, options.publishers, options.workers,
            milliseconds(published) / 1_000, seconds, Double(tally.distinct) / seconds, tally.deliveries,
            failures.withLock { $0 }, finished ? "" : ", INCOMPLETE"))
}

/// Publishes `messages` first, then starts the replicas and times how long they take to drain the backlog.
func drain(_ options: Options, replicas replicaCount: Int) throws {
    let database = try BenchDatabase(url: options.url)
    defer { database.drop() }
    let pool = database.pool()
    defer { pool.close() }
    let publisher = MySQLBroker(pool: pool, logger: logger)
    for index in 0..<options.messages {
        let key = "queue-\(index % options.partitions)"
        try publisher.publish(Message(topic: topic, partitionKey: key, id: "d\(index)", payload: Array("{}".utf8)))
    }
    let tally = Tally()
    let started = ContinuousClock.now
    let replicas = try startReplicas(database, count: replicaCount, workers: options.workers, tally: tally)
    let finished = waitUntil(.seconds(600)) { tally.distinct >= options.messages }
    let elapsed = ContinuousClock.now - started
    for (broker, pool) in replicas {
        broker.shutdown()
        pool.close()
    }
    let seconds = milliseconds(elapsed) / 1_000
    print(
        String(
            format: "drain, %d replica(s): a backlog of %d messages on %d partitions, %d workers each: "
                + "handled in %.2f s = %.0f msg/s (deliveries %d%@)",
            replicaCount, options.messages, options.partitions, options.workers, seconds,
            Double(tally.distinct) / seconds, tally.deliveries, finished ? "" : ", INCOMPLETE"))
}

/// Publishes at a steady `rate` for `seconds` from one thread through the first replica; reports the
/// time from the publish call to the handler's start.
func latency(_ options: Options, replicas replicaCount: Int) throws {
    let database = try BenchDatabase(url: options.url)
    defer { database.drop() }
    let tally = Tally()
    let replicas = try startReplicas(database, count: replicaCount, workers: options.workers, tally: tally)
    let publisher = replicas[0].0
    let total = options.rate * options.seconds
    let interval = Duration.seconds(1) / options.rate
    let start = ContinuousClock.now
    for index in 0..<total {
        let due = start + interval * index
        let wait = due - .now
        if wait > .zero { Thread.sleep(forTimeInterval: milliseconds(wait) / 1_000) }
        let id = "l\(index)"
        let key = "queue-\(index % options.partitions)"
        tally.published(id, at: .now)
        try publisher.publish(Message(topic: topic, partitionKey: key, id: id, payload: Array("{}".utf8)))
    }
    let finished = waitUntil(.seconds(120)) { tally.distinct >= total }
    for (broker, pool) in replicas {
        broker.shutdown()
        pool.close()
    }
    let sorted = tally.latencies.sorted()
    print(
        String(
            format: "latency, %d replica(s): %d msg/s for %d s on %d partitions: publish->handler p50 %.1f ms, "
                + "p90 %.1f ms, p99 %.1f ms, max %.1f ms (%d samples%@)",
            replicaCount, options.rate, options.seconds, options.partitions, milliseconds(percentile(sorted, 0.5)),
            milliseconds(percentile(sorted, 0.9)), milliseconds(percentile(sorted, 0.99)),
            milliseconds(sorted.last ?? .zero), sorted.count, finished ? "" : ", INCOMPLETE"))
}

do {
    let options = try Options(Array(CommandLine.arguments.dropFirst()))
    try MySQLLibrary.initialize()
    defer { MySQLLibrary.end() }
    try throughput(options, replicas: 1)
    try throughput(options, replicas: 2)
    try drain(options, replicas: 1)
    try drain(options, replicas: 2)
    try latency(options, replicas: 1)
    try latency(options, replicas: 2)
} catch {
    FileHandle.standardError.write(Data("topic-bench: \(error)\n".utf8))
    exit(1)
}
