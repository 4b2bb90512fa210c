-- Partition leases: a replica delivers a partition only while it owns the row's lease; a lease not renewed
-- by lease_expires_at may be taken by any replica. Rows are made by consumers when they first lease a key.
CREATE TABLE IF NOT EXISTS topic_partitions (
    topic            VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    partition_key    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    owner            VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    lease_expires_at DATETIME(6) NULL,
    PRIMARY KEY (topic, partition_key),
    KEY topic_partitions_owner (owner)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
