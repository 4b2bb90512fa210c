-- Topic messages, one row per (topic, message id). A partition's next message is its pending row with the
-- smallest seq: no high-water mark, so a row whose AUTO_INCREMENT seq is smaller but commits later is still
-- delivered. In flight: pending, delivery_token set, finished_at NULL and available_at (the visibility deadline) in the
-- future. Every outcome keeps the delivery_token of the delivery that wrote it and sets finished_at, also on a row left
-- pending (retried or postponed) until its next delivery begins.
CREATE TABLE IF NOT EXISTS topic_messages (
    seq            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    topic          VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    partition_key  VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    message_id     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    payload        MEDIUMBLOB NOT NULL,
    state          VARCHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    attempts       INT UNSIGNED NOT NULL DEFAULT 0,
    available_at   DATETIME(6) NOT NULL,
    delivery_token BIGINT UNSIGNED NULL,
    last_error     TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    enqueued_at    DATETIME(6) NOT NULL,
    finished_at    DATETIME(6) NULL,
    PRIMARY KEY (seq),
    UNIQUE KEY topic_messages_id (topic, message_id),
    KEY topic_messages_head (topic, state, partition_key, seq),
    KEY topic_messages_finished (state, finished_at),
    KEY topic_messages_delivery (delivery_token)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
