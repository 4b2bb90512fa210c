/// A validated queue name such as `monorepo/main`: a repo+ref validation namespace.
public struct QueueName: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The longest name accepted, in bytes.
    public static let maxLength = 200

    /// The name as written.
    public let rawValue: String

    /// Validates `rawValue`: 1...200 bytes, `/`-joined segments of `[A-Za-z0-9._-]+`, none `.` or `..`.
    public init(_ rawValue: String) throws(ValidationError) {
        var text = rawValue
        if let reason = text.withUTF8(Self.violation) { throw .invalidQueueName(rawValue, reason: reason) }
        self.rawValue = rawValue
    }

    /// Why `bytes` is not a queue name, reporting the first fault from the left; nil when it is one.
    private static func violation(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        guard !bytes.isEmpty else { return "must not be empty" }
        guard bytes.count <= Self.maxLength else { return "longer than \(Self.maxLength) bytes" }
        var segmentLength = 0
        var segmentDots = 0
        for byte in bytes {
            if byte == UInt8(ascii: "/") {
                if let fault = segmentFault(length: segmentLength, dots: segmentDots) { return fault }
                segmentLength = 0
                segmentDots = 0
                continue
            }
            guard isSegmentByte(byte) else { return "only A-Z a-z 0-9 . _ - and / are allowed" }
            segmentLength += 1
            if byte == UInt8(ascii: ".") { segmentDots += 1 }
        }
        return segmentFault(length: segmentLength, dots: segmentDots)
    }

    private static func segmentFault(length: Int, dots: Int) -> String? {
        if length == 0 { return "empty segment" }
        if dots == length && length <= 2 { return "segment '.' or '..'" }
        return nil
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
