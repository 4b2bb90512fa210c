/// One page of a ref's first-parent history, newest first.
public struct HistoryPage: Sendable, Equatable {
    /// The commits on this page, newest first.
    public var uris: [SourceURI]
    /// Pass to the next `history` call; empty at the end.
    public var nextCursor: String

    /// Makes a page.
    public init(uris: [SourceURI], nextCursor: String) {
        self.uris = uris
        self.nextCursor = nextCursor
    }
}

/// One queue's repository and ref. Only the backend parses the URIs it returns.
public protocol SourceControl: Sendable {
    /// The commit the ref points at now; `notFound` when the repository or ref is unknown.
    func latest() throws(BackendError) -> SourceURI
    /// Whether `ancestor` is an ancestor of (or equal to) `descendant`; `notFound` for an unknown URI.
    func isAncestor(_ ancestor: SourceURI, of descendant: SourceURI) throws(BackendError) -> Bool
    /// A page of history from `cursor` (empty = the head); `notFound` for an unknown cursor.
    func history(cursor: String, limit: Int) throws(BackendError) -> HistoryPage
}

/// Binds queues to their SourceControl.
public protocol SourceControlFactory: Sendable {
    /// The SourceControl of `queue`; `notFound` when the queue is not configured.
    func sourceControl(for queue: QueueName) throws(BackendError) -> any SourceControl
}
