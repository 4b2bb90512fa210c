import Domain
import Foundation
import MySQLClient

/// Requests in the `requests` table, keyed by (queue, n).
public final class MySQLRequestStore: RequestStore {
    private let database: MySQLDatabase

    /// Makes a store on `pool`; the schema must be migrated.
    public init(pool: MySQLPool) {
        database = MySQLDatabase(pool: pool)
    }

    private static let primaryKey = ExpectedDuplicate(table: "requests", key: "PRIMARY", columns: ["queue", "n"])

    public func create(_ request: Request) throws(BackendError) {
        try database.run(duplicate: .alreadyExists) { connection in
            try Self.primaryKey.guarding(connection) { connection throws(MySQLError) in
                try connection.execute(
                    """
                    INSERT INTO requests (queue, n, uri, state, build_strategy, base_uri, version, created_at, updated_at)
                    VALUES (\(request.queue.rawValue), \(request.id.number), \(request.uri.rawValue),
                            \(request.state.rawValue), \(request.buildStrategy.rawValue), \(request.baseURI?.rawValue),
                            \(request.version), \(request.createdAt), \(request.updatedAt))
                    """)
            }
        }
    }

    public func get(_ id: RequestID) throws(BackendError) -> Request {
        let rows = try database.run { connection in
            try connection.query(
                """
                SELECT queue, n, uri, state, build_strategy, base_uri, version, created_at, updated_at
                FROM requests WHERE queue = \(id.queue.rawValue) AND n = \(id.number)
                """)
        }
        guard let row = rows.first else { throw .notFound }
        return try Self.request(from: row, queue: id.queue)
    }

    public func update(_ request: Request, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        // A new version changes the row, so affected rows count the match even without CLIENT_FOUND_ROWS.
        guard newVersion > oldVersion else { throw .versionNotAdvanced }
        let matched = try database.run { connection in
            let result = try connection.execute(
                """
                UPDATE requests
                SET state = \(request.state.rawValue), build_strategy = \(request.buildStrategy.rawValue),
                    base_uri = \(request.baseURI?.rawValue), updated_at = \(request.updatedAt), version = \(newVersion)
                WHERE queue = \(request.queue.rawValue) AND n = \(request.id.number) AND version = \(oldVersion)
                """)
            return result.affectedRows > 0
        }
        guard matched else { throw .versionMismatch }
    }

    public func list(queue: QueueName, before: UInt64?, limit: Int) throws(BackendError) -> [Request] {
        guard limit > 0 else { return [] }
        let rows = try database.run { connection in
            // Without `before` no bound at all: `n < 18446744073709551615` would leave out the request numbered so.
            guard let before else {
                return try connection.query(
                    """
                    SELECT queue, n, uri, state, build_strategy, base_uri, version, created_at, updated_at
                    FROM requests WHERE queue = \(queue.rawValue)
                    ORDER BY n DESC LIMIT \(limit)
                    """)
            }
            return try connection.query(
                """
                SELECT queue, n, uri, state, build_strategy, base_uri, version, created_at, updated_at
                FROM requests WHERE queue = \(queue.rawValue) AND n < \(before)
                ORDER BY n DESC LIMIT \(limit)
                """)
        }
        var requests: [Request] = []
        requests.reserveCapacity(rows.count)
        for row in rows {
            requests.append(try Self.request(from: row, queue: queue))
        }
        return requests
    }

    // Reads by position in the select list that `get` and `list` share (queue, n, uri, state,
    // build_strategy, base_uri, version, created_at, updated_at): no search of the column names per field.
    // `selected` is the queue the query asked for: a row holding exactly its name reuses the validated value.
    private static func request(from row: MySQLRow, queue selected: QueueName) throws(BackendError) -> Request {
        guard row.columns.count == 9, let queueText = row.string(0),
            let queue = queueText == selected.rawValue ? selected : try? QueueName(queueText),
            let number = row.uint64(1), let uri = row.string(2),
            let stateText = row.string(3), let state: RequestState = Self.named(stateText),
            let strategyText = row.string(4), let strategy: BuildStrategy = Self.named(strategyText),
            let version = row.uint64(6), let createdAt = row.date(7),
            let updatedAt = row.date(8)
        else { throw MySQLErrorTranslation.corruptRow("requests") }
        return Request(
            id: RequestID(queue: queue, number: number), uri: SourceURI(uri), state: state, buildStrategy: strategy,
            baseURI: row.string(5).map(SourceURI.init), version: version, createdAt: createdAt,
            updatedAt: updatedAt)
    }

    /// The case whose raw value is `text`, as `init(rawValue:)` finds it, but by comparing each case's raw
    /// value in turn: cheaper than the generic string switch for the few cases these enums have.
    private static func named<Value: RawRepresentable & CaseIterable>(_ text: String) -> Value?
    where Value.RawValue == String {
        Value.allCases.first { $0.rawValue == text }
    }
}

/// The (queue, URI) -> request index in the `request_uris` table.
public final class MySQLRequestURIStore: RequestURIStore {
    private let database: MySQLDatabase

    /// Makes an index on `pool`; the schema must be migrated.
    public init(pool: MySQLPool) {
        database = MySQLDatabase(pool: pool)
    }

    private static let primaryKey = ExpectedDuplicate(table: "request_uris", key: "PRIMARY", columns: ["queue", "uri"])

    public func create(queue: QueueName, uri: SourceURI, id: RequestID) throws(BackendError) {
        try database.run(duplicate: .alreadyExists) { connection in
            try Self.primaryKey.guarding(connection) { connection throws(MySQLError) in
                try connection.execute(
                    "INSERT INTO request_uris (queue, uri, request_n) VALUES (\(queue.rawValue), \(uri.rawValue), \(id.number))")
            }
        }
    }

    public func id(queue: QueueName, uri: SourceURI) throws(BackendError) -> RequestID {
        let rows = try database.run { connection in
            try connection.query(
                "SELECT request_n FROM request_uris WHERE queue = \(queue.rawValue) AND uri = \(uri.rawValue)")
        }
        guard let row = rows.first else { throw .notFound }
        guard let number = row.uint64("request_n") else { throw MySQLErrorTranslation.corruptRow("request_uris") }
        return RequestID(queue: queue, number: number)
    }

    public func replace(
        queue: QueueName, uri: SourceURI, expected: RequestID, with replacement: RequestID
    ) throws(BackendError) {
        let held: UInt64?? = try database.run { connection in
            let result = try connection.execute(
                """
                UPDATE request_uris SET request_n = \(replacement.number)
                WHERE queue = \(queue.rawValue) AND uri = \(uri.rawValue) AND request_n = \(expected.number)
                """)
            if result.affectedRows > 0 { return .some(expected.number) }
            // Zero rows is a miss, a missing entry, or (without CLIENT_FOUND_ROWS) a write of the value it already holds.
            let rows = try connection.query(
                "SELECT request_n FROM request_uris WHERE queue = \(queue.rawValue) AND uri = \(uri.rawValue)")
            guard let row = rows.first else { return nil }
            return .some(row.uint64("request_n"))
        }
        guard let held else { throw .notFound }
        guard let number = held else { throw MySQLErrorTranslation.corruptRow("request_uris") }
        // Only an entry that held `expected` matched; one already holding the replacement is a miss unless they are equal.
        guard number == expected.number else { throw .versionMismatch }
    }
}

/// Queues in the `queues` table.
public final class MySQLQueueStore: QueueStore {
    private let database: MySQLDatabase

    /// Makes a store on `pool`; the schema must be migrated.
    public init(pool: MySQLPool) {
        database = MySQLDatabase(pool: pool)
    }

    private static let primaryKey = ExpectedDuplicate(table: "queues", key: "PRIMARY", columns: ["name"])

    public func create(_ queue: Queue) throws(BackendError) {
        try database.run(duplicate: .alreadyExists) { connection in
            try Self.primaryKey.guarding(connection) { connection throws(MySQLError) in
                try connection.execute(
                    """
                    INSERT INTO queues (name, latest_request_id, last_green_uri, last_green_request_id, version)
                    VALUES (\(queue.name.rawValue), \(queue.latestRequestID?.description), \(queue.lastGreenURI?.rawValue),
                            \(queue.lastGreenRequestID?.description), \(queue.version))
                    """)
            }
        }
    }

    public func get(_ name: QueueName) throws(BackendError) -> Queue {
        let rows = try database.run { connection in
            try connection.query(
                """
                SELECT latest_request_id, last_green_uri, last_green_request_id, version
                FROM queues WHERE name = \(name.rawValue)
                """)
        }
        guard let row = rows.first else { throw .notFound }
        guard let version = row.uint64("version"),
            let latest = Self.requestID(row, "latest_request_id"),
            let lastGreen = Self.requestID(row, "last_green_request_id")
        else { throw MySQLErrorTranslation.corruptRow("queues") }
        return Queue(
            name: name, latestRequestID: latest, lastGreenURI: row.string("last_green_uri").map(SourceURI.init),
            lastGreenRequestID: lastGreen, version: version)
    }

    public func update(_ queue: Queue, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        // See MySQLRequestStore.update: the new version makes every match a changed row.
        guard newVersion > oldVersion else { throw .versionNotAdvanced }
        let matched = try database.run { connection in
            let result = try connection.execute(
                """
                UPDATE queues
                SET latest_request_id = \(queue.latestRequestID?.description),
                    last_green_uri = \(queue.lastGreenURI?.rawValue),
                    last_green_request_id = \(queue.lastGreenRequestID?.description), version = \(newVersion)
                WHERE name = \(queue.name.rawValue) AND version = \(oldVersion)
                """)
            return result.affectedRows > 0
        }
        guard matched else { throw .versionMismatch }
    }

    /// The request id in column `name`: `.some(nil)` for NULL, nil when the text does not parse.
    private static func requestID(_ row: MySQLRow, _ name: String) -> RequestID?? {
        guard let text = row.string(name) else { return .some(nil) }
        guard let id = try? RequestID(parsing: text) else { return nil }
        return .some(id)
    }
}

/// Durable per-(queue, domain) sequences in the `counters` table.
public final class MySQLCounter: Counter {
    private let database: MySQLDatabase

    /// Makes counters on `pool`; the schema must be migrated.
    public init(pool: MySQLPool) {
        database = MySQLDatabase(pool: pool)
    }

    public func next(queue: QueueName, domain: String) throws(BackendError) -> UInt64 {
        // One atomic statement: the first call inserts 1; later calls add one, and LAST_INSERT_ID(expr)
        // hands the new value back on this connection without a second query (MySQL manual, LAST_INSERT_ID).
        let result = try database.run { connection in
            try connection.execute(
                """
                INSERT INTO counters (queue, domain, value) VALUES (\(queue.rawValue), \(domain), 1)
                ON DUPLICATE KEY UPDATE value = LAST_INSERT_ID(value + 1)
                """)
        }
        // Affected rows is 1 for an insert and 2 for an update of an existing row.
        if result.affectedRows == 1 { return 1 }
        guard result.lastInsertID > 1 else { throw MySQLErrorTranslation.corruptRow("counters") }
        return result.lastInsertID
    }
}
