-- Tandem per-subscriber usage, schema version 2: the bytes a subscriber's
-- mobile link carried while the operator waived its budget (an open line or
-- cabinet incident: the home ran on mobile through no fault of its own).
-- Recorded apart, not billed: up_bytes/down_bytes stay the billed count.
ALTER TABLE usage ADD COLUMN waived_up_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN waived_down_bytes INTEGER NOT NULL DEFAULT 0;
