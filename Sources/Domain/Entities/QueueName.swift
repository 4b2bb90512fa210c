/// A validated queue name such as `monorepo/main`: a repo+ref validation namespace.
public struct QueueName: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The longest name accepted, in bytes.
    public static let maxLength = 200

    /// The name as written.
    public let rawValue: String

    /// Validates `rawValue`: 1...200 bytes, `/`-joined segments of `[A-Za-z0-9._-]+`, none `.` or `..`.
    public init(_ rawValue: String) throws(ValidationError) {
        let bytes = Array(rawValue.utf8)
        guard !bytes.isEmpty else { throw .invalidQueueName(rawValue, reason: "must not be empty") }
        guard bytes.count <= Self.maxLength else {
            throw .invalidQueueName(rawValue, reason: "longer than \(Self.maxLength) bytes")
        }
        var segmentStart = 0
        for index in 0...bytes.count {
            if index == bytes.count || bytes[index] == UInt8(ascii: "/") {
                let segment = bytes[segmentStart..<index]
                if segment.isEmpty { throw .invalidQueueName(rawValue, reason: "empty segment") }
                if segment.elementsEqual([UInt8(ascii: ".")]) || segment.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                    throw .invalidQueueName(rawValue, reason: "segment '.' or '..'")
                }
                segmentStart = index + 1
                continue
            }
            guard Self.isSegmentByte(bytes[index]) else {
                throw .invalidQueueName(rawValue, reason: "only A-Z a-z 0-9 . _ - and / are allowed")
            }
        }
        self.rawValue = rawValue
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
