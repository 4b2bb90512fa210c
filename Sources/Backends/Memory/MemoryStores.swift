public import Domain
import Synchronization

/// Requests per queue in arrays ordered by n: the embedded default and the contract suites' reference.
public final class MemoryRequestStore: RequestStore {
    // Ascending n, so that a page of `list` is a binary search for `before` and a copy of `limit` rows, whatever the
    // queue's size; a counter hands out n in ascending order, so a create is nearly always an append.
    private let queues = Mutex<[QueueName: [Request]]>([:])

    /// Makes an empty store.
    public init() {}

    public func create(_ request: Request) throws(BackendError) {
        try queues.withLock { queues throws(BackendError) in
            let index = Self.firstIndex(notBelow: request.id.number, in: queues[request.queue] ?? [])
            if let rows = queues[request.queue], index < rows.count, rows[index].id.number == request.id.number {
                throw .alreadyExists
            }
            queues[request.queue, default: []].insert(request, at: index)
        }
    }

    public func get(_ id: RequestID) throws(BackendError) -> Request {
        let request = queues.withLock { queues -> Request? in
            guard let index = Self.find(id, in: queues) else { return nil }
            return queues[id.queue]?[index]
        }
        guard let request else { throw .notFound }
        return request
    }

    public func update(_ request: Request, oldVersion: UInt64, newVersion: UInt64) throws(BackendError) {
        guard newVersion > oldVersion else { throw .versionNotAdvanced }
        try queues.withLock { queues throws(BackendError) in
            guard let index = Self.find(request.id, in: queues), var stored = queues[request.queue]?[index],
                stored.version == oldVersion
            else { throw .versionMismatch }
            stored.state = request.state
            stored.buildStrategy = request.buildStrategy
            stored.baseURI = request.baseURI
            stored.updatedAt = request.updatedAt
            stored.version = newVersion
            queues[request.queue]?[index] = stored
        }
    }

    public func list(queue: QueueName, before: UInt64?, limit: Int) throws(BackendError) -> [Request] {
        return queues.withLock { queues in
            guard limit > 0, let rows = queues[queue] else { return [] }
            // Without `before` no bound at all: UInt64.max as one would leave out the request numbered UInt64.max.
            let end = before.map { Self.firstIndex(notBelow: $0, in: rows) } ?? rows.count
            return Array(rows[max(0, end - limit)..<end].reversed())
        }
    }

    /// The index of `id` in its queue's rows, if stored.
    private static func find(_ id: RequestID, in queues: [QueueName: [Request]]) -> Int? {
        guard let rows = queues[id.queue] else { return nil }
        let index = firstIndex(notBelow: id.number, in: rows)
        return index < rows.count && rows[index].id.number == id.number ? index : nil
    }

    /// The first index of ascending `rows` whose n is `number` or more; `rows.count` when there is none.
    private static func firstIndex(notBelow number: UInt64, in rows: [Request]) -> Int {
        // The common case, a create of the queue's newest n, without a search.
        if let last = rows.last, last.id.number < number { return rows.count }
        var low = 0
        var high = rows.count
        while low < high {
            let middle = low + (high - low) / 2
            if rows[middle].id.number < number { low = middle + 1 } else { high = middle }
        }
        return low
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
