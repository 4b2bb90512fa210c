-- Requests by (queue, n): the id request/<queue>/<n> split into its parts, so a queue's listing is a key range.
CREATE TABLE IF NOT EXISTS requests (
    queue          VARCHAR(200) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    n              BIGINT UNSIGNED NOT NULL,
    uri            VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    state          VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    build_strategy VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    base_uri       VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    version        BIGINT UNSIGNED NOT NULL,
    created_at     DATETIME(6) NOT NULL,
    updated_at     DATETIME(6) NOT NULL,
    PRIMARY KEY (queue, n)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
