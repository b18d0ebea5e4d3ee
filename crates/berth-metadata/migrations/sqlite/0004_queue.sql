-- Durable work: one row per item (a notification to deliver, a torrent to
-- brew, a job an administrator asked for). A claimer takes ready items under
-- a lease (`lease_until`, `lease_token`) and deletes them when done; a
-- failure puts an item back with a later `not_before`; after too many
-- attempts it is dead-lettered (`dead_at`), kept for inspection and replay.
CREATE TABLE queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    not_before BIGINT NOT NULL,
    lease_until BIGINT NOT NULL DEFAULT 0,
    lease_token TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    dead_at BIGINT
);
CREATE INDEX queue_ready ON queue(kind, not_before, id) WHERE dead_at IS NULL;
CREATE INDEX queue_dead ON queue(kind, dead_at) WHERE dead_at IS NOT NULL;
