-- Tandem HAG subscriber registry, schema version 1.
CREATE TABLE subscribers (
    id              INTEGER PRIMARY KEY,          -- carried in the cookie (u32)
    name            TEXT NOT NULL UNIQUE,         -- operator's reference (line id, contract)
    created_unix    INTEGER NOT NULL,
    revoked_unix    INTEGER,                      -- NULL while active
    source_prefixes TEXT NOT NULL DEFAULT '',     -- optional ACL, comma-separated CIDRs
    cookie_expires  INTEGER NOT NULL DEFAULT 0    -- expiry of the last cookie issued
);
