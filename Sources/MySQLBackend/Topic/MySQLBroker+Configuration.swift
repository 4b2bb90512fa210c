public import Domain
import Foundation

extension MySQLBroker {
    /// How a MySQL broker consumes: retries, threads, timings, retention and its replica identity.
    public struct Configuration: Sendable, Equatable {
        /// Attempts before a retried message is dead-lettered, and the backoff between attempts.
        public var retryPolicy: RetryPolicy
        /// Threads running handlers: how many partitions this replica delivers in parallel (at least 1).
        public var workerThreads: Int
        /// How often an idle replica looks for work published elsewhere: one query per subscribed topic.
        public var pollInterval: Duration
        /// How long a partition lease lasts unless renewed; a dead replica's partitions move after this.
        public var leaseDuration: Duration
        /// How long a delivery stays hidden from other consumers; renewed while its handler runs, so it is
        /// the redelivery delay after the consumer died, not a limit on how long a handler may take.
        public var visibilityTimeout: Duration
        /// A handler running longer than this is presumed hung: its visibility is no longer renewed and its
        /// partition's lease is released, so another replica redelivers the message.
        public var maxHandlingTime: Duration
        /// How long acked messages are kept (publishing their ids again is a no-op meanwhile).
        public var ackedRetention: Duration
        /// How often acked messages past retention and long-silent replicas are deleted.
        public var maintenanceInterval: Duration
        /// The broker's identity in leases, unique per running broker; nil (the default) makes a fresh one
        /// for each broker (see `makeReplicaID()`), so one configuration can serve several brokers.
        public var replicaID: String?

        /// Makes a configuration; see each property for the defaults' meaning.
        public init(
            retryPolicy: RetryPolicy = RetryPolicy(), workerThreads: Int = 4, pollInterval: Duration = .milliseconds(200),
            leaseDuration: Duration = .seconds(15), visibilityTimeout: Duration = .seconds(15),
            maxHandlingTime: Duration = .seconds(300), ackedRetention: Duration = .seconds(600),
            maintenanceInterval: Duration = .seconds(30), replicaID: String? = nil
        ) {
            self.retryPolicy = retryPolicy
            self.workerThreads = max(1, workerThreads)
            self.pollInterval = max(pollInterval, .milliseconds(1))
            self.leaseDuration = max(leaseDuration, .milliseconds(10))
            self.visibilityTimeout = max(visibilityTimeout, .milliseconds(10))
            self.maxHandlingTime = max(maxHandlingTime, .milliseconds(10))
            self.ackedRetention = max(ackedRetention, .zero)
            self.maintenanceInterval = max(maintenanceInterval, .milliseconds(10))
            self.replicaID = replicaID
        }

        /// How often leases and in-progress deliveries are renewed: a third of the shorter of the lease and
        /// the visibility timeout, so two renewals can fail before anything expires.
        var renewalInterval: Duration { min(leaseDuration, visibilityTimeout) / 3 }
    }

    /// A fresh replica identity: host name, process id and a random suffix, so a restarted process (or a
    /// second one on the host) never inherits the leases of the one before it.
    public static func makeReplicaID() -> String {
        let host = ProcessInfo.processInfo.hostName.prefix(150)
        let pid = ProcessInfo.processInfo.processIdentifier
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        return "\(host)-\(pid)-\(suffix)"
    }
}

extension Duration {
    /// The duration in whole microseconds, for `INTERVAL ? MICROSECOND`.
    var wholeMicroseconds: Int64 { nanoseconds / 1_000 }

}
