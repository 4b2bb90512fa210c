import API
import Backends
import Conditions
import Domain
import Synchronization

/// The configuration in force: the queues with their sources, and the ingest secrets. A reload replaces it whole,
/// so that a request reads one of them, never a mix.
final class LiveConfiguration: Sendable {
    let queues: QueueConfiguration
    /// A SourceControl for every queue configured since start-up: a removed queue's requests still process.
    let registry: SourceControlRegistry
    /// nil when ingest takes unsigned bodies.
    let secrets: [String]?
    /// What the API reads per request.
    let settings: ReloadableSettings

    init(queues: QueueConfiguration, registry: SourceControlRegistry, secrets: [String]?) {
        self.queues = queues
        self.registry = registry
        self.secrets = secrets
        let configured = Set(queues.entries.map(\.name))
        settings = ReloadableSettings(
            isConfigured: { configured.contains($0) },
            signature: secrets.map { SignatureVerifier(secrets: $0.map { Array($0.utf8) }) })
    }
}

/// The SourceControl of a queue in the configuration in force when asked; a queue keeps its SourceControl across
/// reloads, so which configuration a request started with does not change the answer for its queue.
struct CurrentSources: SourceControlFactory {
    let live: SwappableReference<LiveConfiguration>

    func sourceControl(for queue: QueueName) throws(BackendError) -> any SourceControl {
        try live.load().registry.sourceControl(for: queue)
    }
}

/// What a reload of the queues file changed.
struct QueueChanges: Equatable {
    var added: [QueueName]
    var removed: [QueueName]
}

/// Replaces the live configuration one part at a time: reloads are serialised, and each builds the next whole from the
/// current before swapping it in.
final class ConfigurationReloader: Sendable {
    let live: SwappableReference<LiveConfiguration>
    // SIGHUP handlers run one at a time on their queue; the lock keeps that true for any other caller.
    private let reloading = Mutex<Void>(())

    init(live: SwappableReference<LiveConfiguration>) { self.live = live }

    /// Swaps in `queues` and returns the queue names added and removed; refuses a queue whose source changed.
    func replaceQueues(with queues: QueueConfiguration) throws(SourceControlRegistry.SourceChanged) -> QueueChanges {
        try reloading.withLock { _ throws(SourceControlRegistry.SourceChanged) in
            let current = live.load()
            let registry = try current.registry.adding(queues.entries.map { ($0.name, $0.source) })
            live.store(LiveConfiguration(queues: queues, registry: registry, secrets: current.secrets))
            let before = Set(current.queues.entries.map(\.name))
            let after = Set(queues.entries.map(\.name))
            return QueueChanges(
                added: queues.entries.map(\.name).filter { !before.contains($0) },
                removed: current.queues.entries.map(\.name).filter { !after.contains($0) })
        }
    }

    /// Swaps in `secrets`; true when they differ from the ones replaced.
    func replaceSecrets(with secrets: [String]) -> Bool {
        reloading.withLock { _ in
            let current = live.load()
            live.store(LiveConfiguration(queues: current.queues, registry: current.registry, secrets: secrets))
            return current.secrets != secrets
        }
    }
}
