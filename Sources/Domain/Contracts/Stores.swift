/// Requests by id; every write is a create or a version-guarded update.
public protocol RequestStore: Sendable {
    /// Stores a new request; `alreadyExists` when the id is taken.
    func create(_ request: Request) throws(BackendError)
    /// Reads one request; `notFound` when there is none.
    func get(_ id: RequestID) throws(BackendError) -> Request
    /// Writes the mutable fields (state, strategy, base URI, updatedAt) and sets the version to `newVersion`
    /// only if the stored version equals `oldVersion`; any miss, a missing row included, is `versionMismatch`.
    /// `newVersion` must be above `oldVersion`: otherwise `BackendError.versionNotAdvanced` and nothing is written.
    func update(_ request: Request, oldVersion: UInt64, newVersion: UInt64) throws(BackendError)
    /// A queue's requests newest first by n, those with n below `before` when given, at most `limit`.
    func list(queue: QueueName, before: UInt64?, limit: Int) throws(BackendError) -> [Request]
}

/// The reverse index (queue, URI) -> request id, whose create is the dedup signal of ingest.
public protocol RequestURIStore: Sendable {
    /// Claims (queue, uri) for `id`; `alreadyExists` when another request holds it.
    func create(queue: QueueName, uri: SourceURI, id: RequestID) throws(BackendError)
    /// The request that holds (queue, uri); `notFound` when none does.
    func id(queue: QueueName, uri: SourceURI) throws(BackendError) -> RequestID
    /// Re-points (queue, uri) to `replacement` if it holds `expected`: `notFound` without an entry, else `versionMismatch`.
    func replace(queue: QueueName, uri: SourceURI, expected: RequestID, with replacement: RequestID) throws(BackendError)
}

/// Queues by name, with the same create / get / CAS-update rules as requests.
public protocol QueueStore: Sendable {
    /// Stores a new queue row; `alreadyExists` when the name is taken.
    func create(_ queue: Queue) throws(BackendError)
    /// Reads one queue; `notFound` when it was never stored.
    func get(_ name: QueueName) throws(BackendError) -> Queue
    /// Writes every field but the name if the stored version equals `oldVersion`, else `versionMismatch`;
    /// `newVersion` must be above `oldVersion`, as for requests.
    func update(_ queue: Queue, oldVersion: UInt64, newVersion: UInt64) throws(BackendError)
}

/// Durable sequences 1, 2, 3, ... per (queue, domain), unique under concurrency.
public protocol Counter: Sendable {
    /// The next value of the (queue, domain) sequence; the first call returns 1.
    func next(queue: QueueName, domain: String) throws(BackendError) -> UInt64
}

/// The counter domain request ids are minted from.
public let requestCounterDomain = "request"
