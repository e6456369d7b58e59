-- The ops service's database (ops.db).
-- Tokens: each CPE, HAG and operator has one; only the key derived from it
-- is kept (telemetry::key), never the token.
CREATE TABLE IF NOT EXISTS tokens (
    kind TEXT NOT NULL CHECK (kind IN ('cpe', 'hag', 'operator')),
    name TEXT NOT NULL,
    key BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;

-- Telemetry history, pruned past the retention; (subscriber, boot_id, seq)
-- is a report's identity.
CREATE TABLE IF NOT EXISTS reports (
    subscriber TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (subscriber, boot_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reports_received ON reports (received_ms);

-- Incidents: open -> dispatched -> resolved, or open -> cleared (gone
-- before anyone went) or merged (into a cabinet, cell or core incident).
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    group_key TEXT NOT NULL,
    location TEXT NOT NULL,
    dispatch TEXT NOT NULL,
    fault TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    dispatched_ms INTEGER,
    resolved_ms INTEGER,
    finding TEXT,
    note TEXT,
    diagnosis TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_state ON incidents (state, group_key);

CREATE TABLE IF NOT EXISTS incident_homes (
    incident INTEGER NOT NULL REFERENCES incidents (id),
    subscriber TEXT NOT NULL,
    added_ms INTEGER NOT NULL,
    PRIMARY KEY (incident, subscriber)
) WITHOUT ROWID;
