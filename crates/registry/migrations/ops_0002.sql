-- The ops service's database, version 2: the operator's grants of extra
-- mobile budget to a set of homes (a cabinet, a cell, a list), each with
-- its homes as resolved from the inventory when it was made.
CREATE TABLE IF NOT EXISTS grants (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,           -- "cabinet:NAME", "cell:ID" or "homes"
    extra_bytes INTEGER NOT NULL CHECK (extra_bytes > 0),
    from_ms INTEGER NOT NULL,
    until_ms INTEGER NOT NULL,
    note TEXT,
    revoked_ms INTEGER
);
CREATE INDEX IF NOT EXISTS grants_until ON grants (until_ms);

CREATE TABLE IF NOT EXISTS grant_homes (
    grant_id INTEGER NOT NULL REFERENCES grants (id),
    subscriber TEXT NOT NULL,
    PRIMARY KEY (grant_id, subscriber)
) WITHOUT ROWID;
