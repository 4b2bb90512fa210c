/// A request id, `request/<queue>/<n>`, where n is minted from the queue's durable counter.
public struct RequestID: Hashable, Sendable, CustomStringConvertible {
    /// The prefix every request id starts with.
    public static let prefix = "request/"

    /// The queue the request belongs to.
    public let queue: QueueName
    /// The per-queue sequence number, 1 or more.
    public let number: UInt64

    /// Makes the id of the `number`th request of `queue`.
    public init(queue: QueueName, number: UInt64) {
        self.queue = queue
        self.number = max(number, 1)
    }

    /// Parses `request/<queue>/<n>`; n is a positive decimal without leading zeros.
    public init(parsing text: String) throws(ValidationError) {
        if let parsed = Self.parseASCII(text) {
            self = parsed
            return
        }
        guard text.hasPrefix(Self.prefix) else { throw .invalidRequestID(text, reason: "must start with 'request/'") }
        let rest = text.dropFirst(Self.prefix.count)
        guard let slash = rest.lastIndex(of: "/") else {
            throw .invalidRequestID(text, reason: "must be request/<queue>/<n>")
        }
        let digits = rest[rest.index(after: slash)...]
        guard let first = digits.utf8.first, first != UInt8(ascii: "0"),
            digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let number = UInt64(digits)
        else {
            throw .invalidRequestID(text, reason: "n must be a positive decimal without leading zeros")
        }
        let queue: QueueName
        do {
            queue = try QueueName(String(rest[..<slash]))
        } catch {
            throw .invalidRequestID(text, reason: error.description)
        }
        self.init(queue: queue, number: number)
    }

    /// The id in `text` when it is ASCII and well formed, read byte by byte; nil sends every other text
    /// through the Character-wise parse, which also words the error.
    private static func parseASCII(_ text: String) -> RequestID? {
        var text = text
        let parts: (queue: String, number: UInt64)? = text.withUTF8 { bytes in
            let prefixCount = 8
            guard bytes.count > prefixCount, bytes.allSatisfy({ $0 < 0x80 }),
                bytes[0] == UInt8(ascii: "r"), bytes[1] == UInt8(ascii: "e"), bytes[2] == UInt8(ascii: "q"),
                bytes[3] == UInt8(ascii: "u"), bytes[4] == UInt8(ascii: "e"), bytes[5] == UInt8(ascii: "s"),
                bytes[6] == UInt8(ascii: "t"), bytes[7] == UInt8(ascii: "/"),
                let slash = bytes.lastIndex(of: UInt8(ascii: "/")), slash >= prefixCount,
                slash + 1 < bytes.count, bytes[slash + 1] != UInt8(ascii: "0")
            else { return nil }
            var number: UInt64 = 0
            for byte in bytes[(slash + 1)...] {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                let (shifted, overflowShift) = number.multipliedReportingOverflow(by: 10)
                let (sum, overflowAdd) = shifted.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
                guard !overflowShift, !overflowAdd else { return nil }
                number = sum
            }
            return (String(decoding: UnsafeBufferPointer(rebasing: bytes[prefixCount..<slash]), as: UTF8.self), number)
        }
        guard let parts, let queue = try? QueueName(parts.queue) else { return nil }
        return RequestID(queue: queue, number: parts.number)
    }

    public var description: String { "\(Self.prefix)\(queue.rawValue)/\(number)" }

    /// True when both ids name the same queue and this one was minted before `other`.
    public func isOlder(than other: RequestID) -> Bool {
        queue == other.queue && number < other.number
    }
}

extension RequestID: Codable {
    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        self = try RequestID(parsing: raw)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
