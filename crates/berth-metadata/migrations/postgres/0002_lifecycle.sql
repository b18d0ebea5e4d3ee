-- PostgreSQL translation of sqlite/0002_lifecycle.sql (same version number).
-- Blob lifecycle for online garbage collection: a blob row is `committing`
-- (state 1) while its content is being written, under a lease, and
-- `present` (state 0) once the content is in place. `last_used` moves on
-- push, link, mount and (throttled) reads: GC only takes blobs idle past the
-- grace period.
ALTER TABLE blobs ADD COLUMN state BIGINT NOT NULL DEFAULT 0;
ALTER TABLE blobs ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE blobs ADD COLUMN last_used BIGINT NOT NULL DEFAULT 0;
UPDATE blobs SET last_used = created_at;
CREATE INDEX blobs_last_used ON blobs(last_used);

-- When a tag was last pulled (retention: "not pushed or pulled for ...").
ALTER TABLE tags ADD COLUMN pulled_at BIGINT NOT NULL DEFAULT 0;
