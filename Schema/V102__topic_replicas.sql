-- Consuming replicas and their heartbeats: those heard from within a lease period share the partitions.
CREATE TABLE IF NOT EXISTS topic_replicas (
    replica_id   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    heartbeat_at DATETIME(6) NOT NULL,
    started_at   DATETIME(6) NOT NULL,
    PRIMARY KEY (replica_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
