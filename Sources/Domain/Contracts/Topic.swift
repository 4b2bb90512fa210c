/// The name of a topic of the pipeline's internal messages.
public struct TopicName: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The topic ingest publishes accepted requests to.
    public static let process = TopicName("process")

    /// The topic name.
    public let rawValue: String

    /// Names a topic.
    public init(_ rawValue: String) { self.rawValue = rawValue }

    public var description: String { rawValue }
}

/// A message as published: idempotent on (topic, id), ordered within (topic, partitionKey).
public struct Message: Sendable, Equatable {
    public let topic: TopicName
    /// Messages with one key are delivered serially and in publish order; keys run in parallel.
    public let partitionKey: String
    /// Publishing an id that the topic already holds is a no-op.
    public let id: String
    public let payload: [UInt8]

    /// Makes a message.
    public init(topic: TopicName, partitionKey: String, id: String, payload: [UInt8]) {
        self.topic = topic
        self.partitionKey = partitionKey
        self.id = id
        self.payload = payload
    }
}

/// One delivery of a message to a handler.
public struct Delivery: Sendable, Equatable {
    public let message: Message
    /// 1 for the first delivery; postponements do not count.
    public let attempt: Int

    /// Makes a delivery.
    public init(message: Message, attempt: Int) {
        self.message = message
        self.attempt = attempt
    }
}

/// How a handler ends a delivery.
public enum DeliveryOutcome: Sendable, Equatable {
    /// Done; the message is removed.
    case ack
    /// Failed for now; redelivered after a backoff, dead-lettered past the maximum attempts.
    case retry(reason: String)
    /// Can never succeed; dead-lettered now with the reason.
    case reject(reason: String)
    /// Not yet; redelivered after `delay` without counting an attempt.
    case postpone(Duration)
}

/// A message that will not be delivered again until an operator re-drives it.
public struct DeadLetter: Sendable, Equatable {
    public let message: Message
    /// Attempts made before it was dead-lettered.
    public let attempts: Int
    /// The last error: a reject or retry reason.
    public let reason: String

    /// Makes a dead letter.
    public init(message: Message, attempts: Int, reason: String) {
        self.message = message
        self.attempts = attempts
        self.reason = reason
    }
}

/// What an operator sees of one topic.
public struct TopicStats: Sendable, Equatable {
    public var topic: TopicName
    /// Messages waiting to be delivered, in flight excluded.
    public var backlog: Int
    /// Messages delivered and not yet ended by their handler.
    public var inFlight: Int
    /// Messages in the dead-letter set.
    public var deadLetters: Int
    /// Seconds since the oldest waiting or in-flight message was published; nil when there is none.
    public var oldestPendingAgeSeconds: Double?

    /// Makes stats.
    public init(topic: TopicName, backlog: Int, inFlight: Int, deadLetters: Int, oldestPendingAgeSeconds: Double?) {
        self.topic = topic
        self.backlog = backlog
        self.inFlight = inFlight
        self.deadLetters = deadLetters
        self.oldestPendingAgeSeconds = oldestPendingAgeSeconds
    }
}

/// How often a delivery is retried and how long it waits between tries.
public struct RetryPolicy: Sendable, Equatable {
    /// Deliveries before a retried message is dead-lettered.
    public var maxAttempts: Int
    /// The wait after the first failed attempt; it doubles with each further attempt.
    public var backoffBase: Duration
    /// The longest wait between attempts.
    public var backoffCap: Duration

    /// Makes a policy.
    public init(maxAttempts: Int = 10, backoffBase: Duration = .milliseconds(200), backoffCap: Duration = .seconds(60)) {
        self.maxAttempts = max(1, maxAttempts)
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
    }

    /// The wait before attempt `attempt + 1`: base * 2^(attempt-1), capped, with "equal jitter"
    /// (half fixed, half random) so retries of many partitions do not line up.
    public func backoff(afterAttempt attempt: Int, random: Double = Double.random(in: 0..<1)) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let factor = 1 << exponent
        // Compared before multiplying: a base near Duration's range would overflow (and trap) when doubled.
        let capped = backoffBase > backoffCap / factor ? backoffCap : min(backoffBase * factor, backoffCap)
        let half = capped / 2
        // Duration * Double rounds through Double, which can land just past `capped`.
        return min(half + half * min(max(random, 0), 1), capped)
    }
}

/// Publishes to topics.
public protocol TopicPublisher: Sendable {
    /// Durably enqueues `message`; returns only once it is committed. Idempotent on (topic, id), except that
    /// publishing a dead-lettered id again puts it back with a fresh attempt count, as `redrive` does.
    func publish(_ message: Message) throws(BackendError)
}

/// A durable or in-memory topic system: publish, consume with ack/retry/reject, dead letters.
public protocol MessageBroker: TopicPublisher {
    /// Registers the handler of `topic`; call before `start`. Handlers run on the broker's threads.
    func subscribe(_ topic: TopicName, handler: @escaping @Sendable (Delivery) -> DeliveryOutcome)
    /// Starts delivering to the subscribed handlers.
    func start() throws(BackendError)
    /// Stops delivering: handlers in progress finish and their outcomes are recorded, then it returns.
    func shutdown()
    /// As `shutdown()`, but waits for handlers in progress only until `deadline`; the messages of those still
    /// running then are redelivered after their visibility timeout by a durable broker, and lost by an in-memory one.
    func shutdown(waitingUntil deadline: ContinuousClock.Instant)
    /// The dead letters of `topic`, oldest first.
    func deadLetters(_ topic: TopicName, limit: Int) throws(BackendError) -> [DeadLetter]
    /// Puts the dead letter `messageID` back on `topic` with a fresh attempt count; `notFound` when none.
    func redrive(_ topic: TopicName, messageID: String) throws(BackendError)
    /// Backlog, in-flight, dead-letter counts and the oldest pending age of `topic`.
    func stats(_ topic: TopicName) throws(BackendError) -> TopicStats
}
