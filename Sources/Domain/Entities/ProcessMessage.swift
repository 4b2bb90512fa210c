/// The payload of a `process` message: `{"id": ..., "queue": ...}`.
public struct ProcessMessage: Sendable, Equatable, Codable {
    public let id: String
    public let queue: String

    /// Makes the payload for `request`.
    public init(id: RequestID) {
        self.id = id.description
        self.queue = id.queue.rawValue
    }
}
