public import Domain
import Foundation
public import Logging

/// Where one queue's commits come from.
public enum SourceConfig: Sendable, Equatable {
    /// A fixed history, newest first.
    case staticHistory([SourceURI])
    /// A ref of a git repository given by local path or URL.
    case git(repository: String, ref: String)
}

/// The SourceControl of every configured queue, built from configuration, and grown by each reload.
public struct SourceControlRegistry: SourceControlFactory {
    private let controls: [QueueName: any SourceControl]
    // Apart from the controls: a lookup then copies no source.
    private let sources: [QueueName: SourceConfig]
    private let gitCacheDirectory: String
    private let gitTimeout: Duration
    private let onGitHousekeeping: @Sendable (_ succeeded: Bool) -> Void
    private let logger: Logger

    /// A queue given another source than the one it has in this registry.
    public struct SourceChanged: Error, CustomStringConvertible {
        /// The queue.
        public let queue: QueueName
        /// What changed, in words that never hold a repository URL (it may carry a password).
        public let change: String

        public var description: String {
            "queue '\(queue)': its source changed (\(change)); a queue keeps its source while the process runs: restart to "
                + "change it, or give the new source a new queue name"
        }
    }

    /// Builds a SourceControl per queue; git remotes are mirrored under `gitCacheDirectory`, and `onGitHousekeeping`
    /// hears whether each housekeeping run of a mirror succeeded.
    public init(
        _ sources: [QueueName: SourceConfig],
        gitCacheDirectory: String = NSTemporaryDirectory() + "stovepipe-git-mirrors",
        gitTimeout: Duration = .seconds(10),
        logger: Logger,
        onGitHousekeeping: @escaping @Sendable (_ succeeded: Bool) -> Void = { _ in }
    ) {
        self.gitCacheDirectory = gitCacheDirectory
        self.gitTimeout = gitTimeout
        self.onGitHousekeeping = onGitHousekeeping
        self.logger = logger
        var controls: [QueueName: any SourceControl] = [:]
        for (queue, source) in sources {
            controls[queue] = Self.control(queue, source, gitCacheDirectory, gitTimeout, logger, onGitHousekeeping)
        }
        self.controls = controls
        self.sources = sources
    }

    private init(_ base: SourceControlRegistry, controls: [QueueName: any SourceControl], sources: [QueueName: SourceConfig]) {
        self.gitCacheDirectory = base.gitCacheDirectory
        self.gitTimeout = base.gitTimeout
        self.onGitHousekeeping = base.onGitHousekeeping
        self.logger = base.logger
        self.controls = controls
        self.sources = sources
    }

    private static func control(
        _ queue: QueueName, _ source: SourceConfig, _ gitCacheDirectory: String, _ gitTimeout: Duration, _ logger: Logger,
        _ onGitHousekeeping: @escaping @Sendable (_ succeeded: Bool) -> Void
    ) -> any SourceControl {
        switch source {
        case .staticHistory(let uris):
            return StaticSourceControl(uris)
        case .git(let repository, let ref):
            var queueLogger = logger
            queueLogger[metadataKey: "queue"] = "\(queue)"
            // Set up lazily: nothing runs git until the queue is first used.
            return GitSourceControl(
                repository: repository, ref: ref, cacheDirectory: gitCacheDirectory, timeout: gitTimeout, logger: queueLogger,
                onHousekeeping: onGitHousekeeping)
        }
    }

    /// This registry with a SourceControl for every queue of `sources` it lacks. A queue it has keeps its SourceControl
    /// (a git mirror and its fetches), removed from the configuration or not, so that work in flight for it finishes;
    /// a queue given another source is refused, the first in `sources` order named.
    public func adding(_ sources: [(QueueName, SourceConfig)]) throws(SourceChanged) -> SourceControlRegistry {
        var (controls, known) = (self.controls, self.sources)
        for (queue, source) in sources {
            if let old = known[queue] {
                guard old == source else { throw SourceChanged(queue: queue, change: Self.change(from: old, to: source)) }
                continue
            }
            controls[queue] = Self.control(queue, source, gitCacheDirectory, gitTimeout, logger, onGitHousekeeping)
            known[queue] = source
        }
        return SourceControlRegistry(self, controls: controls, sources: known)
    }

    private static func change(from old: SourceConfig, to new: SourceConfig) -> String {
        switch (old, new) {
        case (.git(let oldRepository, _), .git(let newRepository, _)) where oldRepository != newRepository: return "its repository"
        case (.git, .git): return "its ref"
        case (.staticHistory, .staticHistory): return "its static history"
        case (.git, .staticHistory): return "git to static"
        case (.staticHistory, .git): return "static to git"
        }
    }

    /// The SourceControl of `queue`; `notFound` when it is not configured.
    public func sourceControl(for queue: QueueName) throws(BackendError) -> any SourceControl {
        guard let control = controls[queue] else { throw .notFound }
        return control
    }
}
