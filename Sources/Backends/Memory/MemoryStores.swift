public import Domain
import Synchronization

/// Requests in a dictionary: the embedded default and the contract suites' reference.
public final class MemoryRequestStore: RequestStore {
    private let rows = Mutex<[RequestID: Request]>([:])

    /// Makes an empty store.
    public init() {}

    public func create(_ request: Request) throws(BackendError) {
        try rows.withLock { rows throws(BackendError) in
            guard rows[request.id] == nil else { throw .alreadyExists }
            rows[request.id] = request
        }
    }

    public func get(_ id: RequestID) throws(BackendError) -> Request {
        guard let request = rows.withLock({ $0[id] }) else { throw .notFound }
        return request
    }

    public func update(_ request: Request, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        guard newVersion > oldVersion else { throw .versionNotAdvanced }
        try rows.withLock { rows throws(BackendError) in
            guard var stored = rows[request.id], stored.version == oldVersion else { throw .versionMismatch }
            stored.state = request.state
            stored.buildStrategy = request.buildStrategy
            stored.baseURI = request.baseURI
            stored.updatedAt = request.updatedAt
            stored.version = newVersion
            rows[request.id] = stored
        }
    }

    public func list(queue: QueueName, before: UInt64?, limit: Int) throws(BackendError) -> [Request] {
        return rows.withLock { rows in
            rows.values
                // Without `before` no bound at all: UInt64.max as one would leave out the request numbered UInt64.max.
                .filter { request in request.queue == queue && before.map { request.id.number < $0 } ?? true }
                .sorted { $0.id.number > $1.id.number }
                .prefix(max(limit, 0))
                .map { $0 }
        }
    }
}

/// The (queue, URI) -> request id index in a dictionary.
public final class MemoryRequestURIStore: RequestURIStore {
    private struct Key: Hashable {
        let queue: QueueName
        // The URI's bytes, not the String: String equality is Unicode canonical equivalence, which would
        // dedup distinct opaque URIs (é composed and decomposed) that MySQL's utf8mb4_bin keeps apart.
        let uri: [UInt8]

        init(queue: QueueName, uri: SourceURI) {
            self.queue = queue
            self.uri = Array(uri.rawValue.utf8)
        }
    }

    private let rows = Mutex<[Key: RequestID]>([:])

    /// Makes an empty index.
    public init() {}

    public func create(queue: QueueName, uri: SourceURI, id: RequestID) throws(BackendError) {
        let key = Key(queue: queue, uri: uri)
        try rows.withLock { rows throws(BackendError) in
            guard rows[key] == nil else { throw .alreadyExists }
            rows[key] = id
        }
    }

    public func id(queue: QueueName, uri: SourceURI) throws(BackendError) -> RequestID {
        guard let id = rows.withLock({ $0[Key(queue: queue, uri: uri)] }) else { throw .notFound }
        return id
    }

    public func replace(
        queue: QueueName, uri: SourceURI, expected: RequestID, with replacement: RequestID
    ) throws(BackendError) {
        let key = Key(queue: queue, uri: uri)
        try rows.withLock { rows throws(BackendError) in
            guard let current = rows[key] else { throw .notFound }
            guard current == expected else { throw .versionMismatch }
            rows[key] = replacement
        }
    }
}

/// Queues in a dictionary.
public final class MemoryQueueStore: QueueStore {
    private let rows = Mutex<[QueueName: Queue]>([:])

    /// Makes an empty store.
    public init() {}

    public func create(_ queue: Queue) throws(BackendError) {
        try rows.withLock { rows throws(BackendError) in
            guard rows[queue.name] == nil else { throw .alreadyExists }
            rows[queue.name] = queue
        }
    }

    public func get(_ name: QueueName) throws(BackendError) -> Queue {
        guard let queue = rows.withLock({ $0[name] }) else { throw .notFound }
        return queue
    }

    public func update(_ queue: Queue, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        guard newVersion > oldVersion else { throw .versionNotAdvanced }
        try rows.withLock { rows throws(BackendError) in
            guard let stored = rows[queue.name], stored.version == oldVersion else { throw .versionMismatch }
            var updated = queue
            updated.version = newVersion
            rows[queue.name] = updated
        }
    }
}

/// Per-(queue, domain) sequences in a dictionary; not durable across restarts.
public final class MemoryCounter: Counter {
    private struct Key: Hashable {
        let queue: QueueName
        let domain: String
    }

    private let values = Mutex<[Key: UInt64]>([:])

    /// Makes counters that all start at 1.
    public init() {}

    public func next(queue: QueueName, domain: String) throws(BackendError) -> UInt64 {
        values.withLock { values in
            let value = (values[Key(queue: queue, domain: domain)] ?? 0) + 1
            values[Key(queue: queue, domain: domain)] = value
            return value
        }
    }
}
