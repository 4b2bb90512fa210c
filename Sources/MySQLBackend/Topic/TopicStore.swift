import Domain
import MySQLClient

/// A (topic, partition key): the unit of ordering and of leases.
struct PartitionID: Hashable, Sendable {
    let topic: TopicName
    let key: String
}

/// The pending message with the smallest seq of a partition.
struct PartitionHead: Sendable {
    let seq: UInt64
    let messageID: String
    let payload: [UInt8]
    /// Counted attempts so far; the next delivery is attempt `attempts + 1`.
    let attempts: Int
    /// Microseconds until it may be delivered, by the database clock; zero or less when due.
    let dueInMicroseconds: Int64
}

/// A partition that has pending messages, as one poll sees it.
struct PartitionWithWork: Sendable {
    let key: String
    /// Microseconds until its head may be delivered; zero or less when due.
    let headDueInMicroseconds: Int64
    /// The lease holder, nil when the partition was never leased or was released.
    let owner: String?
    /// Whether `owner`'s lease is still running.
    let leaseRunning: Bool
    /// Whether the partition has a lease row yet.
    let hasLeaseRow: Bool
}

/// The outcome of a delivery as written to its row.
enum CompletionWrite: Sendable {
    case acked
    case retryLater(afterMicroseconds: Int64, reason: String)
    case deadLettered(reason: String)
    case postponed(afterMicroseconds: Int64)
}

/// The SQL of the topic tables. Every time is the database's UTC_TIMESTAMP(6), so replicas with skewed
/// clocks agree on leases and due times; nothing here holds a transaction open across calls.
enum TopicStore {
    static let pending = "pending"
    static let acked = "acked"
    static let dead = "dead"
    /// The most UTF-8 bytes of a reason kept; longer reasons are cut (at a character boundary) rather than refused.
    static let maxReasonBytes = 8_000

    // MARK: publishing

    /// The key whose duplicate makes a publish of an existing (topic, message id) a no-op.
    static let messageKey = ExpectedDuplicate(table: "topic_messages", key: "topic_messages_id", columns: ["topic", "message_id"])

    /// Inserts `message` as pending at the tail of its partition; false when (topic, id) already exists. A duplicate
    /// on another unique key (one added by hand) is thrown as it is, never taken for that no-op.
    static func insert(_ message: Message, on connection: MySQLConnection) throws(MySQLError) -> Bool {
        do throws(MySQLError) {
            // A plain INSERT (not INSERT IGNORE, which would also turn a too-long value into a silent
            // truncation): ER_DUP_ENTRY on (topic, message_id) is the idempotent no-op.
            try connection.execute(
                """
                INSERT INTO topic_messages
                    (topic, partition_key, message_id, payload, state, attempts, available_at, enqueued_at)
                VALUES (\(message.topic.rawValue), \(message.partitionKey), \(message.id), \(message.payload),
                        \(pending), 0, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))
                """)
            return true
        } catch {
            guard error.code == .duplicateEntry, try messageKey.matches(error, on: connection) else { throw error }
            return false
        }
    }

    // MARK: consuming

    /// The partitions of `topic` with pending messages, their heads' due times and their lease holders.
    ///
    /// One query per poll, whatever the number of partitions: the grouped MIN(seq) reads the
    /// (topic, state, partition_key, seq) index only.
    static func partitionsWithWork(_ topic: TopicName, on connection: MySQLConnection) throws(MySQLError) -> [PartitionWithWork] {
        let rows = try connection.query(
            """
            SELECT h.partition_key,
                   TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), m.available_at) AS due_in,
                   p.owner,
                   COALESCE(p.lease_expires_at > UTC_TIMESTAMP(6), 0) AS lease_running,
                   p.topic IS NOT NULL AS has_row
            FROM (SELECT partition_key, MIN(seq) AS head FROM topic_messages
                  WHERE topic = \(topic.rawValue) AND state = \(pending) GROUP BY topic, state, partition_key) h
            JOIN topic_messages m ON m.seq = h.head
            LEFT JOIN topic_partitions p ON p.topic = \(topic.rawValue) AND p.partition_key = h.partition_key
            """)
        return rows.compactMap { row in
            guard let key = row.string(0), let dueIn = row.int64(1) else { return nil }
            return PartitionWithWork(key: key, headDueInMicroseconds: dueIn, owner: row.string(2), leaseRunning: row.bool(3) ?? false,
                hasLeaseRow: row.bool(4) ?? false)
        }
    }

    /// The next message of `partition`: its pending row with the smallest seq, due or not.
    static func head(of partition: PartitionID, on connection: MySQLConnection) throws(MySQLError) -> PartitionHead? {
        let rows = try connection.query(
            """
            SELECT seq, message_id, payload, attempts, TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), available_at)
            FROM topic_messages
            WHERE topic = \(partition.topic.rawValue) AND state = \(pending) AND partition_key = \(partition.key)
            ORDER BY seq LIMIT 1
            """)
        guard let row = rows.first, let seq = row.uint64(0), let id = row.string(1), let payload = row.bytes(2),
            let attempts = row.int64(3), let dueIn = row.int64(4)
        else { return nil }
        return PartitionHead(seq: seq, messageID: id, payload: payload, attempts: Int(attempts), dueInMicroseconds: dueIn)
    }

    /// Starts a delivery: counts the attempt and hides the row until the visibility deadline, only if it is
    /// still pending and due, still has the `attempts` the head read found, and `replica` holds the
    /// partition's lease. False when any of that fails.
    static func beginDelivery(
        seq: UInt64, attempts: Int, token: UInt64, of partition: PartitionID, replica: String, visibilityMicroseconds: Int64,
        on connection: MySQLConnection
    ) throws(MySQLError) -> Bool {
        // The attempts are compared so that the attempt number handed to the handler (and the dead-letter
        // decision made on it) is the one counted here, whatever ended a delivery since the read.
        let result = try connection.execute(
            """
            UPDATE topic_messages m
            JOIN topic_partitions p ON p.topic = m.topic AND p.partition_key = m.partition_key
            SET m.attempts = m.attempts + 1, m.delivery_token = \(token), m.finished_at = NULL,
                m.available_at = UTC_TIMESTAMP(6) + INTERVAL \(visibilityMicroseconds) MICROSECOND
            WHERE m.seq = \(seq) AND m.state = \(pending) AND m.attempts = \(attempts) AND m.available_at <= UTC_TIMESTAMP(6)
              AND p.topic = \(partition.topic.rawValue) AND p.partition_key = \(partition.key) AND p.owner = \(replica)
            """)
        return result.affectedRows > 0
    }

    /// Dead-letters the head `seq` instead of delivering it again, fenced as `beginDelivery` is (pending,
    /// due, still `attempts`, `replica`'s lease); the attempt count stays, and `token` is left for `finished` to find.
    /// False when any of that fails.
    static func deadLetterUndelivered(
        seq: UInt64, attempts: Int, token: UInt64, of partition: PartitionID, replica: String, reason: String,
        on connection: MySQLConnection
    ) throws(MySQLError) -> Bool {
        let result = try connection.execute(
            """
            UPDATE topic_messages m
            JOIN topic_partitions p ON p.topic = m.topic AND p.partition_key = m.partition_key
            SET m.state = \(dead), m.delivery_token = \(token), m.last_error = \(truncated(reason)),
                m.finished_at = UTC_TIMESTAMP(6)
            WHERE m.seq = \(seq) AND m.state = \(pending) AND m.attempts = \(attempts) AND m.available_at <= UTC_TIMESTAMP(6)
              AND p.topic = \(partition.topic.rawValue) AND p.partition_key = \(partition.key) AND p.owner = \(replica)
            """)
        return result.affectedRows > 0
    }

    /// Pushes the visibility deadline of a delivery still in progress; false when it is no longer current.
    static func extendDelivery(
        seq: UInt64, token: UInt64, visibilityMicroseconds: Int64, on connection: MySQLConnection
    ) throws(MySQLError) -> Bool {
        let result = try connection.execute(
            """
            UPDATE topic_messages SET available_at = UTC_TIMESTAMP(6) + INTERVAL \(visibilityMicroseconds) MICROSECOND
            WHERE seq = \(seq) AND delivery_token = \(token) AND state = \(pending) AND finished_at IS NULL
            """)
        return result.affectedRows > 0
    }

    /// Records how a delivery ended, only if it is still the current delivery of its row (fenced by its
    /// token): a delivery that was given up and redelivered elsewhere changes nothing. False in that case.
    ///
    /// Every outcome keeps the token of the delivery that wrote it and sets `finished_at`: a pending row is in flight
    /// only while `finished_at` is NULL (a retried or postponed one waits with it set, until `beginDelivery` clears
    /// it), so that `finished` can tell that delivery's own write from another's and no write applies twice.
    static func complete(seq: UInt64, token: UInt64, _ write: CompletionWrite, on connection: MySQLConnection) throws(MySQLError) -> Bool {
        let query: MySQLQuery
        switch write {
        case .acked:
            query = """
                UPDATE topic_messages SET state = \(acked), finished_at = UTC_TIMESTAMP(6)
                WHERE seq = \(seq) AND delivery_token = \(token) AND state = \(pending) AND finished_at IS NULL
                """
        case .retryLater(let after, let reason):
            query = """
                UPDATE topic_messages
                SET finished_at = UTC_TIMESTAMP(6), last_error = \(truncated(reason)),
                    available_at = UTC_TIMESTAMP(6) + INTERVAL \(after) MICROSECOND
                WHERE seq = \(seq) AND delivery_token = \(token) AND state = \(pending) AND finished_at IS NULL
                """
        case .deadLettered(let reason):
            query = """
                UPDATE topic_messages
                SET state = \(dead), last_error = \(truncated(reason)), finished_at = UTC_TIMESTAMP(6)
                WHERE seq = \(seq) AND delivery_token = \(token) AND state = \(pending) AND finished_at IS NULL
                """
        case .postponed(let after):
            query = """
                UPDATE topic_messages
                SET finished_at = UTC_TIMESTAMP(6), attempts = GREATEST(attempts, 1) - 1,
                    available_at = UTC_TIMESTAMP(6) + INTERVAL \(after) MICROSECOND
                WHERE seq = \(seq) AND delivery_token = \(token) AND state = \(pending) AND finished_at IS NULL
                """
        }
        return try connection.execute(query).affectedRows > 0
    }

    /// Whether `write` is what the delivery `token` left on row `seq`: an earlier `complete` of that delivery committed
    /// though its caller saw an error (the connection lost after the commit, 2013). False when another delivery
    /// finished the row, or began since (a retried or postponed row then carries the new delivery's token).
    static func finished(seq: UInt64, token: UInt64, _ write: CompletionWrite, on connection: MySQLConnection) throws(MySQLError) -> Bool {
        let state: String
        switch write {
        case .acked: state = acked
        case .deadLettered: state = dead
        case .retryLater, .postponed: state = pending
        }
        let rows = try connection.query(
            """
            SELECT 1 FROM topic_messages
            WHERE seq = \(seq) AND delivery_token = \(token) AND state = \(state) AND finished_at IS NOT NULL
            """)
        return !rows.isEmpty
    }

    // MARK: leases

    /// Makes the lease row of `partition` if there is none yet.
    static func ensurePartitionRow(_ partition: PartitionID, on connection: MySQLConnection) throws(MySQLError) {
        try connection.execute(
            """
            INSERT INTO topic_partitions (topic, partition_key) VALUES (\(partition.topic.rawValue), \(partition.key))
            ON DUPLICATE KEY UPDATE topic = topic
            """)
    }

    /// Takes or renews the lease of `partition` if it is free, already `replica`'s, or expired.
    static func acquireLease(
        _ partition: PartitionID, replica: String, leaseMicroseconds: Int64, on connection: MySQLConnection
    ) throws(MySQLError) -> Bool {
        let result = try connection.execute(
            """
            UPDATE topic_partitions
            SET owner = \(replica), lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL \(leaseMicroseconds) MICROSECOND
            WHERE topic = \(partition.topic.rawValue) AND partition_key = \(partition.key)
              AND (owner IS NULL OR owner = \(replica) OR lease_expires_at < UTC_TIMESTAMP(6))
            """)
        return result.affectedRows > 0
    }

    /// Renews every lease `replica` holds; returns how many.
    @discardableResult
    static func renewLeases(replica: String, leaseMicroseconds: Int64, on connection: MySQLConnection) throws(MySQLError) -> UInt64 {
        try connection.execute(
            """
            UPDATE topic_partitions SET lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL \(leaseMicroseconds) MICROSECOND
            WHERE owner = \(replica)
            """
        ).affectedRows
    }

    /// Gives up `replica`'s lease of `partition`, if it still holds it.
    static func releaseLease(_ partition: PartitionID, replica: String, on connection: MySQLConnection) throws(MySQLError) {
        try connection.execute(
            """
            UPDATE topic_partitions SET owner = NULL, lease_expires_at = NULL
            WHERE topic = \(partition.topic.rawValue) AND partition_key = \(partition.key) AND owner = \(replica)
            """)
    }

    /// Gives up every lease `replica` holds.
    static func releaseAllLeases(replica: String, on connection: MySQLConnection) throws(MySQLError) {
        try connection.execute("UPDATE topic_partitions SET owner = NULL, lease_expires_at = NULL WHERE owner = \(replica)")
    }

    /// The current lease holder of `partition`, nil when none.
    static func leaseOwner(of partition: PartitionID, on connection: MySQLConnection) throws(MySQLError) -> String? {
        let rows = try connection.query(
            """
            SELECT owner FROM topic_partitions
            WHERE topic = \(partition.topic.rawValue) AND partition_key = \(partition.key)
            """)
        return rows.first?.string(0)
    }

    // MARK: replicas

    /// Records that `replica` is alive now.
    static func heartbeat(replica: String, on connection: MySQLConnection) throws(MySQLError) {
        try connection.execute(
            """
            INSERT INTO topic_replicas (replica_id, heartbeat_at, started_at)
            VALUES (\(replica), UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))
            ON DUPLICATE KEY UPDATE heartbeat_at = UTC_TIMESTAMP(6)
            """)
    }

    /// Replicas heard from within `windowMicroseconds`.
    static func liveReplicaCount(windowMicroseconds: Int64, on connection: MySQLConnection) throws(MySQLError) -> Int {
        let rows = try connection.query(
            """
            SELECT COUNT(*) FROM topic_replicas
            WHERE heartbeat_at > UTC_TIMESTAMP(6) - INTERVAL \(windowMicroseconds) MICROSECOND
            """)
        return Int(rows.first?.int64(0) ?? 0)
    }

    /// Forgets `replica`, so the others' fair shares grow at once.
    static func removeReplica(_ replica: String, on connection: MySQLConnection) throws(MySQLError) {
        try connection.execute("DELETE FROM topic_replicas WHERE replica_id = \(replica)")
    }

    /// Forgets replicas silent for longer than `silenceMicroseconds`.
    static func removeSilentReplicas(silenceMicroseconds: Int64, on connection: MySQLConnection) throws(MySQLError) {
        try connection.execute(
            """
            DELETE FROM topic_replicas WHERE heartbeat_at < UTC_TIMESTAMP(6) - INTERVAL \(silenceMicroseconds) MICROSECOND
            """)
    }

    // MARK: retention

    /// Deletes up to `limit` messages acked more than `retentionMicroseconds` ago; returns how many.
    static func deleteAcked(olderThanMicroseconds retentionMicroseconds: Int64, limit: Int, on connection: MySQLConnection) throws(MySQLError) -> UInt64 {
        try connection.execute(
            """
            DELETE FROM topic_messages
            WHERE state = \(acked) AND finished_at < UTC_TIMESTAMP(6) - INTERVAL \(retentionMicroseconds) MICROSECOND
            ORDER BY finished_at LIMIT \(limit)
            """
        ).affectedRows
    }

    // MARK: operators

    /// Backlog, in-flight and dead-letter counts and the oldest pending age of `topic`.
    ///
    /// Counts read indexes only, in-flight rows are found through their delivery token, and the oldest
    /// pending message is the oldest partition head, so the cost grows with partitions, not with payloads.
    static func stats(_ topic: TopicName, on connection: MySQLConnection) throws(MySQLError) -> TopicStats {
        let rows = try connection.query(
            """
            SELECT
              (SELECT COUNT(*) FROM topic_messages WHERE topic = \(topic.rawValue) AND state = \(pending)),
              (SELECT COUNT(*) FROM topic_messages
               WHERE delivery_token IS NOT NULL AND topic = \(topic.rawValue) AND state = \(pending)
                 AND finished_at IS NULL AND available_at > UTC_TIMESTAMP(6)),
              (SELECT COUNT(*) FROM topic_messages WHERE topic = \(topic.rawValue) AND state = \(dead)),
              (SELECT TIMESTAMPDIFF(MICROSECOND, MIN(m.enqueued_at), UTC_TIMESTAMP(6))
               FROM (SELECT MIN(seq) AS head FROM topic_messages WHERE topic = \(topic.rawValue) AND state = \(pending)
                     GROUP BY topic, state, partition_key) h
               JOIN topic_messages m ON m.seq = h.head)
            """)
        let row = rows.first
        let pendingCount = Int(row?.int64(0) ?? 0)
        let inFlight = Int(row?.int64(1) ?? 0)
        let oldest = row?.int64(3).map { max(0, Double($0) / 1_000_000) }
        return TopicStats(
            topic: topic, backlog: max(0, pendingCount - inFlight), inFlight: inFlight,
            deadLetters: Int(row?.int64(2) ?? 0), oldestPendingAgeSeconds: oldest)
    }

    /// Whether `topic` holds `messageID` as a dead letter; a plain read that locks nothing.
    static func isDeadLetter(_ topic: TopicName, messageID: String, on connection: MySQLConnection) throws(MySQLError) -> Bool {
        let rows = try connection.query(
            "SELECT 1 FROM topic_messages WHERE topic = \(topic.rawValue) AND message_id = \(messageID) AND state = \(dead)")
        return !rows.isEmpty
    }

    /// The dead letters of `topic` in the order they died, at most `limit`.
    static func deadLetters(_ topic: TopicName, limit: Int, on connection: MySQLConnection) throws(MySQLError) -> [DeadLetter] {
        let rows = try connection.query(
            """
            SELECT partition_key, message_id, payload, attempts, last_error FROM topic_messages
            WHERE topic = \(topic.rawValue) AND state = \(dead)
            ORDER BY finished_at, seq LIMIT \(limit)
            """)
        return rows.compactMap { row in
            guard let key = row.string(0), let id = row.string(1), let payload = row.bytes(2), let attempts = row.int64(3) else {
                return nil
            }
            let message = Message(topic: topic, partitionKey: key, id: id, payload: payload)
            return DeadLetter(message: message, attempts: Int(attempts), reason: row.string(4) ?? "")
        }
    }

    /// Moves the dead letter `messageID` to the tail of its partition with no attempts; returns its
    /// partition, or nil when `topic` has no such dead letter. Runs inside the caller's transaction.
    static func redrive(_ topic: TopicName, messageID: String, on connection: MySQLConnection) throws(MySQLError) -> PartitionID? {
        let rows = try connection.query(
            """
            SELECT seq, partition_key, payload FROM topic_messages
            WHERE topic = \(topic.rawValue) AND message_id = \(messageID) AND state = \(dead) FOR UPDATE
            """)
        guard let row = rows.first, let seq = row.uint64(0), let key = row.string(1), let payload = row.bytes(2) else {
            return nil
        }
        // A new row (and so a new seq) puts the message behind everything already waiting in its partition.
        try connection.execute("DELETE FROM topic_messages WHERE seq = \(seq)")
        let message = Message(topic: topic, partitionKey: key, id: messageID, payload: payload)
        _ = try insert(message, on: connection)
        return PartitionID(topic: topic, key: key)
    }

    private static func truncated(_ reason: String) -> String {
        // Counted in bytes: TEXT holds 65,535 of them, and 8,000 characters could exceed it (one grapheme can take
        // dozens of bytes), which strict mode refuses (1406) on every attempt to write the outcome.
        guard reason.utf8.count > maxReasonBytes else { return reason }
        var kept = ""
        var bytes = 0
        for character in reason {
            bytes += character.utf8.count
            guard bytes <= maxReasonBytes else { break }
            kept.append(character)
        }
        return kept
    }
}
