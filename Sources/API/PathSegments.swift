/// Percent-decoding of path segments and query components (RFC 3986 §2.1).
enum PercentDecoding {
    /// Decodes `%XX` escapes; nil for a malformed escape or bytes that are not UTF-8.
    static func decode(_ text: Substring, plusAsSpace: Bool = false) -> String? {
        // A Substring of a native string has its bytes in place, which is all but always.
        if let decoded = text.utf8.withContiguousStorageIfAvailable({ decode($0, plusAsSpace: plusAsSpace) }) {
            return decoded
        }
        return Array(text.utf8).withUnsafeBufferPointer { decode($0, plusAsSpace: plusAsSpace) }
    }

    /// Decodes `%XX` escapes in the UTF-8 `text`; nil for a malformed escape or bytes that are not UTF-8.
    static func decode(_ text: UnsafeBufferPointer<UInt8>, plusAsSpace: Bool = false) -> String? {
        let isEscape = { (byte: UInt8) in byte == UInt8(ascii: "%") || (plusAsSpace && byte == UInt8(ascii: "+")) }
        // Most segments are ASCII with nothing to decode: they become the string as they are, and ASCII needs none
        // of the validation (a generic, slower call) that other bytes get.
        if text.allSatisfy({ $0 < 0x80 && !isEscape($0) }) { return String(decoding: text, as: UTF8.self) }
        guard text.contains(where: isEscape) else { return String(validating: text, as: UTF8.self) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count)
        var iterator = text.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    return nil
                }
                bytes.append(high << 4 | low)
            } else if plusAsSpace && byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The undecoded path split on `/`, without the leading empty segment.
    static func rawSegments(_ rawPath: String) -> [Substring] {
        var segments = rawPath.split(separator: "/", omittingEmptySubsequences: false)
        if segments.first == "" { segments.removeFirst() }
        return segments
    }

    /// `name=value` pairs of a query string, decoded; nil when an escape is malformed.
    static func queryItems(_ query: String) -> [(String, String)]? {
        var items: [(String, String)] = []
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decode(parts[0], plusAsSpace: true),
                let value = decode(parts.count > 1 ? parts[1] : "", plusAsSpace: true)
            else { return nil }
            items.append((name, value))
        }
        return items
    }
}
