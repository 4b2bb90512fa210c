/// Writes bytes into memory sized beforehand, as the per-request log line is written: no growth and none of an
/// array's per-append bookkeeping. A write that does not fit is dropped and sets `overflowed`, so that a size
/// estimate that falls short costs the caller a retry with more room, never a write past the end.
public struct FixedByteWriter {
    @usableFromInline let buffer: UnsafeMutableBufferPointer<UInt8>
    @usableFromInline var written = 0
    @usableFromInline var didOverflow = false

    /// Writes into `buffer` from its start.
    @inlinable public init(_ buffer: UnsafeMutableBufferPointer<UInt8>) {
        self.buffer = buffer
    }

    /// How many bytes have been written, from the start of the buffer.
    @inlinable public var count: Int { written }

    /// A write did not fit: the bytes written are not the whole text.
    @inlinable public var overflowed: Bool { didOverflow }

    /// Writes one byte.
    @inlinable public mutating func write(_ byte: UInt8) {
        guard written < buffer.count else {
            didOverflow = true
            return
        }
        buffer[written] = byte
        written += 1
    }

    /// Writes `bytes` as they are.
    @inlinable public mutating func write(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        guard bytes.count <= buffer.count - written, let base = buffer.baseAddress else {
            didOverflow = true
            return
        }
        (base + written).initialize(from: source, count: bytes.count)
        written += bytes.count
    }

    /// Writes `text`'s UTF-8 bytes as they are, unescaped.
    @inlinable public mutating func write(_ text: String) {
        // Native strings are contiguous; reading them in place spares a copy.
        if text.utf8.withContiguousStorageIfAvailable({ write($0) }) == nil {
            for byte in text.utf8 { write(byte) }
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
        // Text that needs escaping is rare in a log line: one escaping implementation, JSONWriter's, at the price of a copy.
        var escaped: [UInt8] = []
        JSONWriter.appendEscaped(utf8, to: &escaped)
        escaped.withUnsafeBufferPointer { write($0) }
    }

    /// Writes the decimal digits of `value` as `String(value)` spells them, with leading zeros up to
    /// `minimumDigits` (at most 20).
    public mutating func writeDecimal(_ value: UInt64, minimumDigits: Int = 1) {
        var digits = 1
        var rest = value / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        let width = max(digits, min(minimumDigits, 20))
        guard width <= buffer.count - written, let base = buffer.baseAddress else {
            didOverflow = true
            return
        }
        // Least significant digit first, straight into place.
        var position = base + written + width
        var remaining = value
        for _ in 0..<width {
            position -= 1
            position.initialize(to: UInt8(ascii: "0") + UInt8(remaining % 10))
            remaining /= 10
        }
        written += width
    }

    /// Writes `String(value)`'s text: at most 20 bytes.
    public mutating func writeInteger(_ value: Int) {
        if value < 0 { write(UInt8(ascii: "-")) }
        writeDecimal(UInt64(value.magnitude))
    }
}
