import Domain
import Foundation
import Synchronization

/// Appends JSON (RFC 8259) to a byte buffer without building an intermediate tree: the hot response
/// bodies and log lines are written field by field. Callers write object keys in sorted order.
public struct JSONWriter {
    /// The JSON text written so far, UTF-8.
    public private(set) var bytes: [UInt8] = []
    private var needsComma = false

    /// Starts an empty buffer with room for `capacity` bytes.
    public init(capacity: Int = 256) {
        if capacity > 0 { bytes.reserveCapacity(capacity) }
    }

    /// Opens an object.
    public mutating func beginObject() {
        separate()
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    /// Closes an object.
    public mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    /// Opens an array.
    public mutating func beginArray() {
        separate()
        bytes.append(UInt8(ascii: "["))
        needsComma = false
    }

    /// Closes an array.
    public mutating func endArray() {
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    /// Writes an object key; the value written next belongs to it.
    public mutating func key(_ name: String) {
        separate()
        appendQuoted(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    /// Writes an object key spelled in the code: printable ASCII without `"` or `\`, so it is copied, not escaped.
    public mutating func knownKey(_ name: StaticString) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { utf8 in
            assert(utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") })
            bytes.append(contentsOf: utf8)
        }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    /// Writes a string value.
    public mutating func string(_ value: String) {
        separate()
        appendQuoted(value)
        needsComma = true
    }

    /// Writes a string value whose UTF-8 text `appendText` appends, escaped as `string(_:)` escapes a string:
    /// a value made of parts (numbers, timestamps) needs no `String` of its own.
    public mutating func string(appending appendText: (inout [UInt8]) -> Void) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        let start = bytes.count
        appendText(&bytes)
        if bytes[start...].contains(where: Self.needsEscape) {
            let text = Array(bytes[start...])
            bytes.removeSubrange(start...)
            text.withUnsafeBufferPointer { Self.appendEscaped($0, to: &bytes) }
        }
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// Writes `json`, a complete JSON value, as the next value.
    mutating func rawValue(_ json: [UInt8]) {
        separate()
        bytes.append(contentsOf: json)
        needsComma = true
    }

    /// Writes a string value, or null.
    public mutating func string(_ value: String?) {
        guard let value else { return null() }
        string(value)
    }

    /// Writes an integer value.
    public mutating func integer(_ value: some BinaryInteger) {
        separate()
        if let unsigned = UInt64(exactly: value) {
            Self.appendDecimal(unsigned, to: &bytes)
        } else {
            bytes.append(contentsOf: String(value).utf8)
        }
        needsComma = true
    }

    /// Writes a request id as the string `id.description`, without building that string first.
    public mutating func string(_ id: RequestID) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        Self.appendEscaped(RequestID.prefix, to: &bytes)
        Self.appendEscaped(id.queue.rawValue, to: &bytes)
        bytes.append(UInt8(ascii: "/"))
        Self.appendDecimal(id.number, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// Appends `text`'s UTF-8 bytes as they are, unescaped (for text lines, not JSON strings).
    public static func appendUTF8(_ text: String, to bytes: inout [UInt8]) {
        // Native strings are contiguous; reading them in place spares copying `text` for `withUTF8`.
        if text.utf8.withContiguousStorageIfAvailable({ bytes.append(contentsOf: $0) }) == nil {
            bytes.append(contentsOf: text.utf8)
        }
    }

    /// Appends `text`'s UTF-8 bytes for a text log line: as they are, but with control characters (U+0000...U+001F,
    /// U+007F and the C1 controls U+0080...U+009F) escaped as a JSON string escapes them (`\n`, `\u009b`) and a
    /// backslash doubled, so that no value ends the line or reaches a terminal as an escape, and each escape reads back one way.
    public static func appendTextEscaped(_ text: String, to bytes: inout [UInt8]) {
        if text.utf8.withContiguousStorageIfAvailable({ appendTextEscaped($0, to: &bytes) }) == nil {
            var text = text
            text.withUTF8 { appendTextEscaped($0, to: &bytes) }
        }
    }

    /// Escapes, as `appendTextEscaped` does, the text appended to `bytes` from `start` on.
    public static func textEscapeAppended(_ bytes: inout [UInt8], from start: Int) {
        guard bytes[start...].contains(where: mayNeedTextEscape) else { return }
        let text = Array(bytes[start...])
        bytes.removeSubrange(start...)
        text.withUnsafeBufferPointer { appendTextEscaped($0, to: &bytes) }
    }

    /// True for a byte that starts what `appendTextEscaped` escapes: a C0 control, DEL, `\`, or 0xC2, the first
    /// byte of U+0080...U+00BF in UTF-8 (the C1 controls among them).
    static func mayNeedTextEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "\\") || byte == 0xC2
    }

    static func appendTextEscaped(_ utf8: UnsafeBufferPointer<UInt8>, to bytes: inout [UInt8]) {
        guard utf8.contains(where: mayNeedTextEscape) else { return bytes.append(contentsOf: utf8) }
        var start = 0
        var index = 0
        while index < utf8.count {
            let byte = utf8[index]
            // The bytes escaped from `index` on: one, two for a C1 control (0xC2 0x80...0x9F), none for anything else.
            let length: Int
            if byte < 0x20 || byte == 0x7F || byte == UInt8(ascii: "\\") {
                length = 1
            } else if byte == 0xC2, index + 1 < utf8.count, (0x80...0x9F).contains(utf8[index + 1]) {
                length = 2
            } else {
                index += 1
                continue
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<index]))
            if byte == UInt8(ascii: "\\") {
                bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            } else {
                appendControlEscape(utf8[index + length - 1], to: &bytes)
            }
            index += length
            start = index
        }
        bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
    }

    /// Appends the escape of the control character `byte` (a C1 control as its code point, 0x80...0x9F): the short
    /// form RFC 8259 §7 has for it, else `\u00XX`.
    private static func appendControlEscape(_ byte: UInt8, to bytes: inout [UInt8]) {
        switch byte {
        case 0x0A: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
        case 0x0D: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
        case 0x09: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
        case 0x08: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
        case 0x0C: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
        default:
            bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
            bytes.append(hexDigits[Int(byte >> 4)])
            bytes.append(hexDigits[Int(byte & 0x0F)])
        }
    }

    /// Appends the decimal digits of `value`, as `String(value)` spells them, with leading zeros up to
    /// `minimumDigits` (at most 20).
    public static func appendDecimal(_ value: UInt64, minimumDigits: Int = 1, to bytes: inout [UInt8]) {
        // Least significant digit first into a stack buffer, then one append: an append per digit costs more.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            let lowestStart = digits.count - min(max(minimumDigits, 1), digits.count)
            var start = digits.count
            var rest = value
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0 || start > lowestStart
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: digits[start...]))
        }
    }

    /// Writes a finite number the way Swift prints it (shortest round-trip form); null if not finite.
    public mutating func number(_ value: Double) {
        guard value.isFinite else { return null() }
        separate()
        bytes.append(contentsOf: value.description.utf8)
        needsComma = true
    }

    /// Writes true or false.
    public mutating func bool(_ value: Bool) {
        separate()
        bytes.append(contentsOf: value ? Self.trueLiteral : Self.falseLiteral)
        needsComma = true
    }

    /// Writes null.
    public mutating func null() {
        separate()
        bytes.append(contentsOf: Self.nullLiteral)
        needsComma = true
    }

    /// Writes an RFC 3339 UTC timestamp at whole seconds (`2026-11-29T11:11:55Z`), as JSONEncoder's
    /// `.iso8601` strategy does.
    public mutating func date(_ value: Date) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        RFC3339.append(value, fractionDigits: 0, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    private static let trueLiteral = Array("true".utf8)
    private static let falseLiteral = Array("false".utf8)
    private static let nullLiteral = Array("null".utf8)
    private static let hexDigits = Array("0123456789abcdef".utf8)

    private mutating func appendQuoted(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        Self.appendEscaped(text, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    /// Appends `text` escaped for the inside of a JSON string: RFC 8259 §7 requires `"`, `\` and
    /// U+0000...U+001F to be escaped; everything else, `/` included, goes out as UTF-8.
    public static func appendEscaped(_ text: String, to bytes: inout [UInt8]) {
        // Native strings are contiguous; reading them in place spares the copy that `withUTF8` makes of `text`.
        if text.utf8.withContiguousStorageIfAvailable({ appendEscaped($0, to: &bytes) }) == nil {
            var text = text
            text.withUTF8 { appendEscaped($0, to: &bytes) }
        }
    }

    /// True when `utf8` can go inside a JSON string as it is.
    static func needsNoEscaping(_ utf8: UnsafeBufferPointer<UInt8>) -> Bool {
        !utf8.contains(where: needsEscape)
    }

    static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }

    static func appendEscaped(_ utf8: UnsafeBufferPointer<UInt8>, to bytes: inout [UInt8]) {
        if !utf8.contains(where: needsEscape) {
            bytes.append(contentsOf: utf8)
            return
        }
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x00..<0x20: appendControlEscape(byte, to: &bytes)
            default: bytes.append(byte)
            }
        }
    }
}

/// RFC 3339 §5.6 UTC timestamps, formatted by calendar arithmetic (`gmtime_r` outside 1970-9999) instead of a date formatter per call.
public enum RFC3339 {
    /// The length of `YYYY-MM-DDTHH:MM:SSZ`, a whole-second timestamp from 1970 through 9999.
    static let wholeSecondLength = 20

    /// Appends `date` as `YYYY-MM-DDTHH:MM:SS[.fff]Z`, truncated (not rounded) to `fractionDigits` (0...6).
    public static func append(_ date: Date, fractionDigits: Int, to bytes: inout [UInt8]) {
        let interval = date.timeIntervalSince1970
        let wholeSeconds = interval.rounded(.down)
        let seconds = Int64(exactly: wholeSeconds) ?? 0
        let digits = min(max(fractionDigits, 0), 6)
        var scale = 1
        for _ in 0..<digits { scale *= 10 }
        let scaledFraction = ((interval - wholeSeconds) * Double(scale)).rounded(.down)
        let fraction = scaledFraction.isFinite ? min(max(Int(clamping: Int64(scaledFraction)), 0), scale - 1) : 0
        guard (0..<latestFastSecond).contains(seconds) else {
            appendThroughGmtime(seconds, fraction: fraction, digits: digits, to: &bytes)
            return
        }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 28) { buffer in
            guard let start = buffer.baseAddress else { return }
            writeDateTime(UInt64(seconds), to: start)
            var end = 19
            if digits > 0 {
                buffer[end] = UInt8(ascii: ".")
                var remaining = fraction
                for position in stride(from: end + digits, to: end, by: -1) {
                    buffer[position] = UInt8(ascii: "0") + UInt8(truncatingIfNeeded: remaining % 10)
                    remaining /= 10
                }
                end += 1 + digits
            }
            buffer[end] = UInt8(ascii: "Z")
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[0...end]))
        }
    }

    /// A wall-clock instant: whole seconds since 1970-01-01T00:00:00Z and the nanoseconds past them.
    public struct Instant: Sendable, Equatable {
        public let seconds: Int64
        public let nanoseconds: Int

        /// The instant `nanoseconds` (0..<1_000_000_000) past `seconds`.
        public init(seconds: Int64, nanoseconds: Int) {
            self.seconds = seconds
            self.nanoseconds = nanoseconds
        }

        /// The current time of CLOCK_REALTIME, the clock `Date()` reads, without `Date`'s conversions to and from
        /// a floating-point interval.
        public static func now() -> Instant {
            var time = timespec()
            clock_gettime(CLOCK_REALTIME, &time)
            return Instant(seconds: Int64(time.tv_sec), nanoseconds: Int(time.tv_nsec))
        }
    }

    /// The most bytes `writeMilliseconds(_:to:cache:)` writes: 24 up to 9999-12-31, more for a year of more digits.
    public static var maxMillisecondsLength: Int { 32 }

    /// Writes `instant` as `YYYY-MM-DDTHH:MM:SS.fffZ`, milliseconds truncated: as `append(_:fractionDigits: 3, to:)`
    /// writes the `Date` of that instant. The date and time up to the second come from `cache` when it holds them.
    public static func writeMilliseconds(
        _ instant: Instant, to writer: inout FixedByteWriter, cache: SecondCache? = .shared
    ) {
        let milliseconds = min(max(instant.nanoseconds, 0), 999_999_999) / 1_000_000
        guard (0..<latestFastSecond).contains(instant.seconds) else {
            var bytes: [UInt8] = []
            appendThroughGmtime(instant.seconds, fraction: milliseconds, digits: 3, to: &bytes)
            bytes.withUnsafeBufferPointer { writer.write($0) }
            return
        }
        // Word-aligned, so that the cache copies the date and time as three words.
        withUnsafeTemporaryAllocation(byteCount: 24, alignment: 8) { raw in
            let text = raw.bindMemory(to: UInt8.self)
            guard let start = text.baseAddress else { return }
            if let cache {
                cache.writeDateTime(instant.seconds, to: start)
            } else {
                writeDateTime(UInt64(instant.seconds), to: start)
            }
            text[19] = UInt8(ascii: ".")
            text[20] = UInt8(ascii: "0") + UInt8(milliseconds / 100)
            text[21] = UInt8(ascii: "0") + UInt8(milliseconds / 10 % 10)
            text[22] = UInt8(ascii: "0") + UInt8(milliseconds % 10)
            text[23] = UInt8(ascii: "Z")
            writer.write(UnsafeBufferPointer(text))
        }
    }

    /// Appends `instant` as `writeMilliseconds(_:to:cache:)` writes it.
    public static func appendMilliseconds(_ instant: Instant, to bytes: inout [UInt8], cache: SecondCache? = .shared) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: maxMillisecondsLength) { buffer in
            var writer = FixedByteWriter(buffer)
            writeMilliseconds(instant, to: &writer, cache: cache)
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<writer.count]))
        }
    }

    /// The text of the latest second formatted, `YYYY-MM-DDTHH:MM:SS`, for the lines stamped within that second.
    /// Shared by every worker thread, it is read without a lock and without a write to shared memory (a sequence
    /// lock), so that readers do not bounce its cache line between cores; the first thread to format a later
    /// second replaces it, once a second.
    public final class SecondCache: Sendable {
        /// The cache of the process's log lines.
        public static let shared = SecondCache()

        /// `2 * (second + 1)` while the words hold that second's text, odd while a thread replaces them, 0 before
        /// the first second: it only grows, so an unchanged value means unchanged words.
        private let sequence = Atomic<UInt64>(0)
        private let word0 = Atomic<UInt64>(0)
        private let word1 = Atomic<UInt64>(0)
        private let word2 = Atomic<UInt64>(0)

        /// An empty cache.
        public init() {}

        /// Writes `seconds` (0..<latestFastSecond) as `YYYY-MM-DDTHH:MM:SS` into the first 19 of the 24 word-aligned
        /// bytes at `start`; the other 5 are left undefined.
        func writeDateTime(_ seconds: Int64, to text: UnsafeMutablePointer<UInt8>) {
            let start = UnsafeMutableRawPointer(text)
            let version = UInt64(seconds + 1) << 1
            let cached = sequence.load(ordering: .acquiring)
            if cached == version {
                let words = (word0.load(ordering: .relaxed), word1.load(ordering: .relaxed), word2.load(ordering: .relaxed))
                // The words were read before the sequence is read again: unchanged, it vouches for them.
                atomicMemoryFence(ordering: .acquiring)
                if sequence.load(ordering: .relaxed) == version {
                    start.storeBytes(of: words.0, toByteOffset: 0, as: UInt64.self)
                    start.storeBytes(of: words.1, toByteOffset: 8, as: UInt64.self)
                    start.storeBytes(of: words.2, toByteOffset: 16, as: UInt64.self)
                    return
                }
            }
            start.storeBytes(of: 0, toByteOffset: 16, as: UInt64.self)
            RFC3339.writeDateTime(UInt64(seconds), to: text)
            // Only a later second replaces the cached one, and only by one thread at a time: a thread that loses
            // the race, or stamps a line with a second already past, keeps the text it wrote for itself.
            guard cached & 1 == 0, cached < version,
                sequence.compareExchange(expected: cached, desired: cached | 1, ordering: .acquiringAndReleasing).exchanged
            else { return }
            atomicMemoryFence(ordering: .releasing)
            word0.store(start.load(fromByteOffset: 0, as: UInt64.self), ordering: .relaxed)
            word1.store(start.load(fromByteOffset: 8, as: UInt64.self), ordering: .relaxed)
            word2.store(start.load(fromByteOffset: 16, as: UInt64.self), ordering: .relaxed)
            sequence.store(version, ordering: .releasing)
        }
    }

    /// The whole seconds since 1970 of `date`, rounded down, when it lies in 1970 through 9999: the
    /// dates `writeWholeSeconds` writes.
    static func fastWholeSeconds(_ date: Date) -> UInt64? {
        guard let seconds = Int64(exactly: date.timeIntervalSince1970.rounded(.down)),
            (0..<latestFastSecond).contains(seconds)
        else { return nil }
        return UInt64(seconds)
    }

    /// Writes the `wholeSecondLength` bytes of `YYYY-MM-DDTHH:MM:SSZ` for `seconds` from `fastWholeSeconds`.
    static func writeWholeSeconds(_ seconds: UInt64, to destination: UnsafeMutablePointer<UInt8>) {
        writeDateTime(seconds, to: destination)
        destination[19] = UInt8(ascii: "Z")
    }

    /// Writes the 19 bytes of `YYYY-MM-DDTHH:MM:SS` for `seconds` since 1970 (below `latestFastSecond`).
    static func writeDateTime(_ seconds: UInt64, to destination: UnsafeMutablePointer<UInt8>) {
        // The civil date from the day count (H. Hinnant's civil_from_days), unsigned: every value here is
        // non-negative, and unsigned division by a constant is a multiply and a shift. Below year 10000
        // nothing here comes near UInt32's range, so the arithmetic wraps instead of checking.
        let days = UInt32(truncatingIfNeeded: seconds / 86_400)
        let secondOfDay = UInt32(truncatingIfNeeded: seconds % 86_400)
        let shifted = days &+ 719_468
        let era = shifted / 146_097
        let dayOfEra = shifted &- era &* 146_097
        let yearOfEra = (dayOfEra &- dayOfEra / 1_460 &+ dayOfEra / 36_524 &- dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra &- (365 &* yearOfEra &+ yearOfEra / 4 &- yearOfEra / 100)
        let shiftedMonth = (5 &* dayOfYear &+ 2) / 153
        let day = dayOfYear &- (153 &* shiftedMonth &+ 2) / 5 &+ 1
        let month = shiftedMonth < 10 ? shiftedMonth &+ 3 : shiftedMonth &- 9
        let year = yearOfEra &+ era &* 400 &+ (month <= 2 ? 1 : 0)
        let minuteOfDay = secondOfDay / 60
        twoDigits.withUnsafeBytes { table in
            func writeTwoDigits(_ value: UInt32, at offset: Int) {
                let pair = table.loadUnaligned(fromByteOffset: Int(value % 100) * 2, as: UInt16.self)
                UnsafeMutableRawPointer(destination).storeBytes(of: pair, toByteOffset: offset, as: UInt16.self)
            }
            writeTwoDigits(year / 100, at: 0)
            writeTwoDigits(year % 100, at: 2)
            writeTwoDigits(month, at: 5)
            writeTwoDigits(day, at: 8)
            writeTwoDigits(minuteOfDay / 60, at: 11)
            writeTwoDigits(minuteOfDay % 60, at: 14)
            writeTwoDigits(secondOfDay % 60, at: 17)
        }
        destination[4] = UInt8(ascii: "-")
        destination[7] = UInt8(ascii: "-")
        destination[10] = UInt8(ascii: "T")
        destination[13] = UInt8(ascii: ":")
        destination[16] = UInt8(ascii: ":")
    }

    /// `00` through `99`: the two ASCII digits of each value below 100, at twice the value.
    private static let twoDigits: [UInt8] = (0..<100).flatMap { value in
        [UInt8(ascii: "0") + UInt8(value / 10), UInt8(ascii: "0") + UInt8(value % 10)]
    }

    /// 10000-01-01T00:00:00Z: later (and earlier than 1970) dates take gmtime_r.
    static var latestFastSecond: Int64 { 253_402_300_800 }

    private static func appendThroughGmtime(_ wholeSeconds: Int64, fraction: Int, digits: Int, to bytes: inout [UInt8]) {
        var seconds = time_t(clamping: wholeSeconds)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        appendDigits(Int(parts.tm_year) + 1900, width: 4, to: &bytes)
        bytes.append(UInt8(ascii: "-"))
        appendDigits(Int(parts.tm_mon) + 1, width: 2, to: &bytes)
        bytes.append(UInt8(ascii: "-"))
        appendDigits(Int(parts.tm_mday), width: 2, to: &bytes)
        bytes.append(UInt8(ascii: "T"))
        appendDigits(Int(parts.tm_hour), width: 2, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        appendDigits(Int(parts.tm_min), width: 2, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        appendDigits(Int(parts.tm_sec), width: 2, to: &bytes)
        if digits > 0 {
            bytes.append(UInt8(ascii: "."))
            appendDigits(fraction, width: digits, to: &bytes)
        }
        bytes.append(UInt8(ascii: "Z"))
    }

    /// `date` as an RFC 3339 string.
    public static func string(_ date: Date, fractionDigits: Int) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        append(date, fractionDigits: fractionDigits, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func appendDigits(_ value: Int, width: Int, to bytes: inout [UInt8]) {
        var divisor = 1
        for _ in 1..<max(1, width) { divisor *= 10 }
        let value = max(0, value)
        // A year past 9999 keeps all its digits rather than being cut to the width.
        while value / divisor >= 10 { divisor *= 10 }
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
            divisor /= 10
        }
    }
}
