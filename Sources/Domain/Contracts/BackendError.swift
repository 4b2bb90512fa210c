/// The closed error type of every storage, counter, SourceControl and topic contract.
public enum BackendError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The key (row, queue, ref, URI, cursor) does not exist.
    case notFound
    /// A create collided with an existing key; for the URI index this is the dedup signal.
    case alreadyExists
    /// A conditional write found another version, or no row at all.
    case versionMismatch
    /// The backend could not answer; `retryable` says whether the same call may succeed later.
    /// `detail` is for logs and never carries user data or bound values.
    case unavailable(retryable: Bool, detail: String)

    public var description: String {
        switch self {
        case .notFound: "not found"
        case .alreadyExists: "already exists"
        case .versionMismatch: "version mismatch"
        case .unavailable(let retryable, let detail): "unavailable (\(retryable ? "retryable" : "final")): \(detail)"
        }
    }
}

extension BackendError {
    /// An update whose new version is not above the old one: a caller's mistake, refused before any write, never
    /// retried. A version that stays would keep a strong ETag derived from it while the record changes.
    public static let versionNotAdvanced = BackendError.unavailable(
        retryable: false, detail: "an update must advance the version (newVersion > oldVersion)")
}
