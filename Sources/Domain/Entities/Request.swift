import struct Foundation.Date

/// An opaque commit reference that only the SourceControl backend that minted it interprets.
public struct SourceURI: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The URI text.
    public let rawValue: String

    /// The longest URI, in Unicode scalars (what MySQL counts as characters), that Stovepipe keeps.
    public static let maxLength = 512

    /// Wraps `rawValue` without interpreting it.
    public init(_ rawValue: String) { self.rawValue = rawValue }

    /// Why `text` cannot be kept as a URI (empty, longer than `maxLength`, or ending in a space); nil when it can.
    public static func storageProblem(_ text: String) -> String? {
        guard let last = text.utf8.last else { return "empty" }
        guard text.unicodeScalars.count <= maxLength else { return "longer than \(maxLength) characters" }
        // MySQL's utf8mb4_bin is a PAD SPACE collation: keys that differ only in trailing spaces compare equal,
        // so such a URI would be deduplicated onto another commit's request.
        guard last != UInt8(ascii: " ") else { return "ends in a space" }
        return nil
    }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }
}

/// Where a request is in its life; the raw values are the wire names.
public enum RequestState: String, Sendable, Codable, CaseIterable {
    case accepted
    case processing
    case superseded
    case succeeded
    case failed
    case cancelled

    /// True for states no stage moves a request out of.
    public var isTerminal: Bool {
        switch self {
        case .accepted, .processing: false
        case .superseded, .succeeded, .failed, .cancelled: true
        }
    }
}

/// How a commit is validated; the raw values are the wire names.
public enum BuildStrategy: String, Sendable, Codable, CaseIterable {
    case undecided = ""
    case full
    case incrementalSinceGreen = "incremental_since_green"
}

/// One head commit of one queue to validate.
public struct Request: Sendable, Equatable, Codable {
    public let id: RequestID
    public var queue: QueueName { id.queue }
    public let uri: SourceURI
    public var state: RequestState
    public var buildStrategy: BuildStrategy
    /// The last-green commit an incremental build is relative to; nil otherwise.
    public var baseURI: SourceURI?
    /// The optimistic-lock version; 1 when created.
    public var version: UInt64
    public let createdAt: Date
    public var updatedAt: Date

    /// Makes a request with every field given.
    public init(
        id: RequestID, uri: SourceURI, state: RequestState = .accepted, buildStrategy: BuildStrategy = .undecided,
        baseURI: SourceURI? = nil, version: UInt64 = 1, createdAt: Date, updatedAt: Date? = nil
    ) {
        self.id = id
        self.uri = uri
        self.state = state
        self.buildStrategy = buildStrategy
        self.baseURI = baseURI
        self.version = version
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }

    private enum CodingKeys: String, CodingKey {
        case id, queue, uri, state, version
        case buildStrategy = "build_strategy"
        case baseURI = "base_uri"
        case createdAt = "created_at"
        case updatedAt = "updated_at"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(RequestID.self, forKey: .id)
        uri = try container.decode(SourceURI.self, forKey: .uri)
        state = try container.decode(RequestState.self, forKey: .state)
        buildStrategy = try container.decode(BuildStrategy.self, forKey: .buildStrategy)
        let base = try container.decodeIfPresent(String.self, forKey: .baseURI) ?? ""
        baseURI = base.isEmpty ? nil : SourceURI(base)
        version = try container.decode(UInt64.self, forKey: .version)
        createdAt = try container.decode(Date.self, forKey: .createdAt)
        updatedAt = try container.decode(Date.self, forKey: .updatedAt)
    }

    /// Encodes the wire shape: snake_case keys, `queue` included, `base_uri` empty when there is none.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(queue, forKey: .queue)
        try container.encode(uri, forKey: .uri)
        try container.encode(state, forKey: .state)
        try container.encode(version, forKey: .version)
        try container.encode(buildStrategy, forKey: .buildStrategy)
        try container.encode(baseURI?.rawValue ?? "", forKey: .baseURI)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(updatedAt, forKey: .updatedAt)
    }
}

/// What Stovepipe knows of one queue.
public struct Queue: Sendable, Equatable, Codable {
    private enum CodingKeys: String, CodingKey {
        case name, version
        case latestRequestID = "latest_request_id"
        case lastGreenURI = "last_green_uri"
        case lastGreenRequestID = "last_green_request_id"
    }

    public let name: QueueName
    /// The newest ingested head's request.
    public var latestRequestID: RequestID?
    /// The newest commit known green.
    public var lastGreenURI: SourceURI?
    /// The request that proved `lastGreenURI` green.
    public var lastGreenRequestID: RequestID?
    /// The optimistic-lock version; 1 when created.
    public var version: UInt64

    /// Makes a queue with every field given.
    public init(
        name: QueueName, latestRequestID: RequestID? = nil, lastGreenURI: SourceURI? = nil,
        lastGreenRequestID: RequestID? = nil, version: UInt64 = 1
    ) {
        self.name = name
        self.latestRequestID = latestRequestID
        self.lastGreenURI = lastGreenURI
        self.lastGreenRequestID = lastGreenRequestID
        self.version = version
    }
}
