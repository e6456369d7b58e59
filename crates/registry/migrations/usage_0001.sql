-- Tandem per-subscriber usage (the billing count), schema version 1.
-- IF NOT EXISTS: files written before the schema was versioned (user_version
-- 0) already hold this table and move to version 1 unchanged.
CREATE TABLE IF NOT EXISTS usage (
    subscriber TEXT NOT NULL,
    period     TEXT NOT NULL,   -- calendar month, UTC: YYYY-MM
    link       TEXT NOT NULL,   -- access link name ("dsl", "lte")
    up_bytes   INTEGER NOT NULL DEFAULT 0,
    down_bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subscriber, period, link)
);
