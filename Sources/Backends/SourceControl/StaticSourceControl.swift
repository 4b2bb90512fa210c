public import Domain

/// A fixed, newest-first history from configuration: the head is the first URI.
///
/// Cursors are the decimal offset of the next page's first URI; any other text is `notFound`.
public struct StaticSourceControl: SourceControl {
    /// The history, newest first.
    public let uris: [SourceURI]
    private let positions: [SourceURI: Int]

    /// Makes a history from `uris`, newest first; a repeated URI keeps its newest position.
    public init(_ uris: [SourceURI]) {
        self.uris = uris
        var positions: [SourceURI: Int] = [:]
        for (index, uri) in uris.enumerated() where positions[uri] == nil {
            positions[uri] = index
        }
        self.positions = positions
    }

    /// The first URI; `notFound` when the history is empty.
    public func latest() throws(BackendError) -> SourceURI {
        guard let head = uris.first else { throw .notFound }
        return head
    }

    /// True when `ancestor` is `descendant` or older; `notFound` when either is not in the history.
    public func isAncestor(_ ancestor: SourceURI, of descendant: SourceURI) throws(BackendError) -> Bool {
        guard let ancestorIndex = positions[ancestor], let descendantIndex = positions[descendant] else {
            throw .notFound
        }
        return ancestorIndex >= descendantIndex
    }

    /// At most `limit` (at least 1) URIs from `cursor`; `notFound` for a cursor this history did not mint.
    public func history(cursor: String, limit: Int) throws(BackendError) -> HistoryPage {
        let start = try offset(of: cursor)
        // Not `start + limit`: that overflows for a limit near Int.max.
        let end = start + min(max(limit, 1), uris.count - start)
        let nextCursor = end < uris.count ? String(end) : ""
        return HistoryPage(uris: Array(uris[start..<end]), nextCursor: nextCursor)
    }

    private func offset(of cursor: String) throws(BackendError) -> Int {
        if cursor.isEmpty { return 0 }
        // Only the canonical decimal form `history` mints: digits, no sign, no leading zero.
        guard let first = cursor.utf8.first, first != UInt8(ascii: "0"),
            cursor.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let offset = Int(cursor), offset < uris.count
        else { throw .notFound }
        return offset
    }
}
