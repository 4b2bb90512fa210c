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

/// The SourceControl of every configured queue, built once from configuration.
public struct SourceControlRegistry: SourceControlFactory {
    private let controls: [QueueName: any SourceControl]

    /// Builds a SourceControl per queue; git remotes are mirrored under `gitCacheDirectory`.
    public init(
        _ sources: [QueueName: SourceConfig],
        gitCacheDirectory: String = NSTemporaryDirectory() + "stovepipe-git-mirrors",
        gitTimeout: Duration = .seconds(10),
        logger: Logger
    ) {
        var controls: [QueueName: any SourceControl] = [:]
        for (queue, source) in sources {
            switch source {
            case .staticHistory(let uris):
                controls[queue] = StaticSourceControl(uris)
            case .git(let repository, let ref):
                var queueLogger = logger
                queueLogger[metadataKey: "queue"] = "\(queue)"
                controls[queue] = GitSourceControl(
                    repository: repository, ref: ref, cacheDirectory: gitCacheDirectory, timeout: gitTimeout,
                    logger: queueLogger
                )
            }
        }
        self.controls = controls
    }

    /// The SourceControl of `queue`; `notFound` when it is not configured.
    public func sourceControl(for queue: QueueName) throws(BackendError) -> any SourceControl {
        guard let control = controls[queue] else { throw .notFound }
        return control
    }
}
