import Logging

/// A log handler that also takes the per-request line's fields as they are, already in key order: building,
/// hashing and sorting a metadata dictionary (or even the fields' strings) per request costs more than the line.
public protocol SortedFieldsLogHandler: LogHandler {
    /// Writes `message` at `level` (the caller checked `logLevel`) with `sortedFields`, merged with the handler's
    /// own metadata exactly as `log(event:)` would merge that metadata with the fields as `.string` values.
    func log(level: Logger.Level, message: String, sortedFields: RequestLogFields)
}

/// The fields of the per-request log line, kept as numbers and strings until a handler writes their text.
public struct RequestLogFields: Sendable {
    /// One field of the line; the cases are in the ascending order of their keys.
    public enum Field: CaseIterable, Sendable {
        case bytes
        case duration
        case method
        case requestID
        case route
        case status

        /// The metadata key.
        public var key: String {
            switch self {
            case .bytes: "bytes"
            case .duration: "duration.ms"
            case .method: "http.method"
            case .requestID: "http.request_id"
            case .route: "http.route"
            case .status: "http.status"
            }
        }
    }

    let bytes: Int
    let nanoseconds: Int64
    let method: String
    let requestID: String
    let route: String
    let status: Int

    /// Groups one request's fields; `nanoseconds` is how long the response took to make.
    public init(bytes: Int, nanoseconds: Int64, method: String, route: String, status: Int, requestID: String) {
        self.bytes = bytes
        self.nanoseconds = nanoseconds
        self.method = method
        self.route = route
        self.status = status
        self.requestID = requestID
    }

    /// Appends the UTF-8 text of `field`, unescaped.
    public func appendValue(of field: Field, to line: inout [UInt8]) {
        switch field {
        case .bytes: Self.appendInteger(bytes, to: &line)
        case .duration: Self.appendMilliseconds(nanoseconds: nanoseconds, to: &line)
        case .method: JSONWriter.appendUTF8(method, to: &line)
        case .requestID: JSONWriter.appendUTF8(requestID, to: &line)
        case .route: JSONWriter.appendUTF8(route, to: &line)
        case .status: Self.appendInteger(status, to: &line)
        }
    }

    /// The most bytes `writeValue(of:escaped:to:)` writes for `field`.
    public func maxValueLength(of field: Field, escaped: Bool) -> Int {
        // An escape, in JSON or of a control character in text, is at most six bytes per byte (`\u001f`); numbers
        // never need one.
        let stringFactor = 6
        switch field {
        case .bytes, .status: return 20
        case .duration: return Self.maxMillisecondsLength
        case .method: return method.utf8.count * stringFactor
        case .requestID: return requestID.utf8.count * stringFactor
        case .route: return route.utf8.count * stringFactor
        }
    }

    /// Writes the UTF-8 text of `field`, escaped for the inside of a JSON string when `escaped`, else with its control
    /// characters escaped for a text line.
    public func writeValue(of field: Field, escaped: Bool, to writer: inout FixedByteWriter) {
        switch field {
        case .bytes: writer.writeInteger(bytes)
        case .duration: Self.writeMilliseconds(nanoseconds: nanoseconds, to: &writer)
        case .method: escaped ? writer.writeEscaped(method) : writer.writeTextEscaped(method)
        case .requestID: escaped ? writer.writeEscaped(requestID) : writer.writeTextEscaped(requestID)
        case .route: escaped ? writer.writeEscaped(route) : writer.writeTextEscaped(route)
        case .status: writer.writeInteger(status)
        }
    }

    /// The longest text of a duration: `Double.description` spells any double in at most 24 bytes
    /// (`-2.2250738585072014e-308`), the positional form below in at most 17.
    private static var maxMillisecondsLength: Int { 24 }

    private static func writeMilliseconds(nanoseconds: Int64, to writer: inout FixedByteWriter) {
        // From 100 ns up to 10^15 ns the shortest round-trip spelling of n / 10^6 is that decimal itself
        // (at most 15 significant digits, which a Double tells apart), in positional notation; outside
        // that range Swift may switch to exponent notation, so the Double prints itself.
        guard nanoseconds >= 100, nanoseconds < 1_000_000_000_000_000 else {
            writer.write("\(Double(nanoseconds) / 1_000_000)")
            return
        }
        var fraction = nanoseconds % 1_000_000
        var width = 6
        while width > 1 && fraction % 10 == 0 {
            fraction /= 10
            width -= 1
        }
        writer.writeDecimal(UInt64(nanoseconds / 1_000_000))
        writer.write(UInt8(ascii: "."))
        writer.writeDecimal(UInt64(fraction), minimumDigits: width)
    }

    /// The text of `field`, as a metadata value.
    public func value(of field: Field) -> String {
        var text: [UInt8] = []
        appendValue(of: field, to: &text)
        return String(decoding: text, as: UTF8.self)
    }

    /// `nanoseconds` in milliseconds, spelled as `"\(Double(nanoseconds) / 1_000_000)"` spells it.
    static func milliseconds(nanoseconds: Int64) -> String {
        var text: [UInt8] = []
        appendMilliseconds(nanoseconds: nanoseconds, to: &text)
        return String(decoding: text, as: UTF8.self)
    }

    private static func appendMilliseconds(nanoseconds: Int64, to line: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: maxMillisecondsLength) { buffer in
            var writer = FixedByteWriter(buffer)
            writeMilliseconds(nanoseconds: nanoseconds, to: &writer)
            line.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<writer.count]))
        }
    }

    /// Appends `String(value)`'s text.
    private static func appendInteger(_ value: Int, to line: inout [UInt8]) {
        if value >= 0 {
            JSONWriter.appendDecimal(UInt64(value), to: &line)
        } else {
            line.append(contentsOf: String(value).utf8)
        }
    }
}
