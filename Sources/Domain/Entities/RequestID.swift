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
        let utf8 = text.utf8
        let prefix = Self.prefix.utf8
        guard utf8.count > prefix.count, utf8.starts(with: prefix),
            let slash = utf8.lastIndex(of: UInt8(ascii: "/")), utf8.allSatisfy({ $0 < 0x80 })
        else { return nil }
        let queueStart = utf8.index(utf8.startIndex, offsetBy: prefix.count)
        guard slash >= queueStart else { return nil }
        var number: UInt64 = 0
        var digitIndex = utf8.index(after: slash)
        guard digitIndex != utf8.endIndex, utf8[digitIndex] != UInt8(ascii: "0") else { return nil }
        while digitIndex != utf8.endIndex {
            let byte = utf8[digitIndex]
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let (shifted, overflowShift) = number.multipliedReportingOverflow(by: 10)
            let (sum, overflowAdd) = shifted.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
            guard !overflowShift, !overflowAdd else { return nil }
            number = sum
            digitIndex = utf8.index(after: digitIndex)
        }
        guard let queue = try? QueueName(String(text[queueStart..<slash])) else { return nil }
        return RequestID(queue: queue, number: number)
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
