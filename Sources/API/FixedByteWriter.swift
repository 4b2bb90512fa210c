/// Writes bytes into memory sized beforehand, as the request bodies and the per-request log line are written: no
/// growth and none of an array's per-append bookkeeping. A write that does not fit is dropped, sets `overflowed`
/// and is still counted in `needed`, and nothing is written after it, so that the bytes written stay a prefix of
/// the text; a size estimate that falls short costs the caller a retry with more room, never a write past the end.
public struct FixedByteWriter {
    @usableFromInline let buffer: UnsafeMutableBufferPointer<UInt8>
    @usableFromInline var written = 0
    @usableFromInline var requested = 0

    /// Writes into `buffer` from its start.
    @inlinable public init(_ buffer: UnsafeMutableBufferPointer<UInt8>) {
        self.buffer = buffer
    }

    /// How many bytes have been written, from the start of the buffer.
    @inlinable public var count: Int { written }

    /// How many bytes the writes so far asked for: more than `count` once one did not fit.
    @inlinable public var needed: Int { requested }

    /// A write did not fit: the bytes written are not the whole text.
    @inlinable public var overflowed: Bool { requested > written }

    /// The bytes `write` writes, in an array allocated with `capacity` bytes or, when they do not fit, with as
    /// many as they asked for (`write` then runs again).
    public static func bytes(capacity: Int, _ write: (inout FixedByteWriter) -> Void) -> [UInt8] {
        var needed = 0
        let bytes = [UInt8](unsafeUninitializedCapacity: max(capacity, 0)) { buffer, initializedCount in
            var writer = FixedByteWriter(buffer)
            write(&writer)
            initializedCount = writer.count
            needed = writer.needed
        }
        guard needed > bytes.count else { return bytes }
        return [UInt8](unsafeUninitializedCapacity: needed) { buffer, initializedCount in
            var writer = FixedByteWriter(buffer)
            write(&writer)
            initializedCount = writer.count
        }
    }

    /// The number of decimal digits of `value`.
    @inlinable public static func decimalLength(_ value: UInt64) -> Int {
        var length = 1
        var rest = value
        while rest >= 10 {
            rest /= 10
            length += 1
        }
        return length
    }

    /// Reserves `count` bytes and returns where they start, or nil when they do not fit or an earlier write did
    /// not; counts them in `needed` either way.
    @inlinable mutating func claim(_ count: Int) -> UnsafeMutablePointer<UInt8>? {
        let fits = requested == written && count <= buffer.count - written
        requested += count
        guard fits, let base = buffer.baseAddress else { return nil }
        defer { written += count }
        return base + written
    }

    /// Writes one byte.
    @inlinable public mutating func write(_ byte: UInt8) {
        claim(1)?.initialize(to: byte)
    }

    /// Writes `bytes` as they are.
    @inlinable public mutating func write(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let source = bytes.baseAddress, !bytes.isEmpty, let destination = claim(bytes.count) else { return }
        destination.initialize(from: source, count: bytes.count)
    }

    /// Writes `text`'s UTF-8 bytes as they are, unescaped.
    @inlinable public mutating func write(_ text: String) {
        // Native strings are contiguous; reading them in place spares a copy.
        if text.utf8.withContiguousStorageIfAvailable({ write($0) }) == nil {
            var text = text
            text.withUTF8 { write($0) }
        }
    }

    /// Writes `text`, spelled in the code, as it is.
    @inlinable public mutating func write(_ text: StaticString) {
        text.withUTF8Buffer { write($0) }
    }

    /// Writes `text` escaped for the inside of a JSON string, as `JSONWriter.appendEscaped` escapes it: at most
    /// six bytes per byte of `text`.
    public mutating func writeEscaped(_ text: String) {
        if text.utf8.withContiguousStorageIfAvailable({ writeEscaped($0) }) == nil {
            var text = text
            text.withUTF8 { writeEscaped($0) }
        }
    }

    /// Writes `utf8` escaped for the inside of a JSON string.
    public mutating func writeEscaped(_ utf8: UnsafeBufferPointer<UInt8>) {
        guard utf8.contains(where: JSONWriter.needsEscape) else { return write(utf8) }
        // Text that needs escaping is rare in bodies and log lines: one escaping implementation, JSONWriter's, at
        // the price of a copy.
        var escaped: [UInt8] = []
        JSONWriter.appendEscaped(utf8, to: &escaped)
        escaped.withUnsafeBufferPointer { write($0) }
    }

    /// Writes `text`'s UTF-8 bytes with only its control characters and backslashes escaped, as
    /// `JSONWriter.appendTextEscaped` escapes them.
    public mutating func writeTextEscaped(_ text: String) {
        if text.utf8.withContiguousStorageIfAvailable({ writeTextEscaped($0) }) == nil {
            var text = text
            text.withUTF8 { writeTextEscaped($0) }
        }
    }

    /// Writes `utf8` with only its control characters and backslashes escaped.
    public mutating func writeTextEscaped(_ utf8: UnsafeBufferPointer<UInt8>) {
        guard utf8.contains(where: JSONWriter.mayNeedTextEscape) else { return write(utf8) }
        // As for writeEscaped: rare text, one implementation, a copy.
        var escaped: [UInt8] = []
        JSONWriter.appendTextEscaped(utf8, to: &escaped)
        escaped.withUnsafeBufferPointer { write($0) }
    }

    /// Writes the decimal digits of `value` as `String(value)` spells them, with leading zeros up to
    /// `minimumDigits` (at most 20).
    public mutating func writeDecimal(_ value: UInt64, minimumDigits: Int = 1) {
        let width = max(Self.decimalLength(value), min(minimumDigits, 20))
        guard let start = claim(width) else { return }
        // Least significant digit first, straight into place.
        var position = start + width
        var remaining = value
        for _ in 0..<width {
            position -= 1
            position.initialize(to: UInt8(ascii: "0") + UInt8(truncatingIfNeeded: remaining % 10))
            remaining /= 10
        }
    }

    /// Writes `String(value)`'s text: at most 20 bytes.
    public mutating func writeInteger(_ value: Int) {
        if value < 0 { write(UInt8(ascii: "-")) }
        writeDecimal(UInt64(value.magnitude))
    }
}
