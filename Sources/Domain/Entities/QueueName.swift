/// A validated queue name such as `monorepo/main`: a repo+ref validation namespace.
public struct QueueName: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The longest name accepted, in bytes.
    public static let maxLength = 200

    /// The name as written.
    public let rawValue: String

    /// Validates `rawValue`: 1...200 bytes, `/`-joined segments of `[A-Za-z0-9._-]+`, none `.` or `..`.
    public init(_ rawValue: String) throws(ValidationError) {
        let utf8 = rawValue.utf8
        let count = utf8.count
        guard count > 0 else { throw .invalidQueueName(rawValue, reason: "must not be empty") }
        guard count <= Self.maxLength else {
            throw .invalidQueueName(rawValue, reason: "longer than \(Self.maxLength) bytes")
        }
        var segmentLength = 0
        var segmentDots = 0
        for byte in utf8 {
            if byte == UInt8(ascii: "/") {
                try Self.checkSegment(rawValue, length: segmentLength, dots: segmentDots)
                segmentLength = 0
                segmentDots = 0
                continue
            }
            guard Self.isSegmentByte(byte) else {
                throw .invalidQueueName(rawValue, reason: "only A-Z a-z 0-9 . _ - and / are allowed")
            }
            segmentLength += 1
            if byte == UInt8(ascii: ".") { segmentDots += 1 }
        }
        try Self.checkSegment(rawValue, length: segmentLength, dots: segmentDots)
        self.rawValue = rawValue
    }

    private static func checkSegment(_ rawValue: String, length: Int, dots: Int) throws(ValidationError) {
        if length == 0 { throw .invalidQueueName(rawValue, reason: "empty segment") }
        if dots == length && length <= 2 { throw .invalidQueueName(rawValue, reason: "segment '.' or '..'") }
    }

    private static func isSegmentByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    public var description: String { rawValue }

    public static func < (lhs: QueueName, rhs: QueueName) -> Bool { lhs.rawValue < rhs.rawValue }
}

extension QueueName: Codable {
    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        self = try QueueName(raw)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// Input that does not satisfy a naming rule; always the caller's mistake.
public enum ValidationError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidQueueName(String, reason: String)
    case invalidRequestID(String, reason: String)

    public var description: String {
        switch self {
        case .invalidQueueName(_, let reason): "invalid queue name: \(reason)"
        case .invalidRequestID(_, let reason): "invalid request id: \(reason)"
        }
    }
}
