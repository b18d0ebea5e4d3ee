-- Repositories are created on first write. `listed` is set by the first
-- manifest (distribution's _manifests directory) and shows the repository in
-- the catalog from then on, even after its manifests are deleted.
CREATE TABLE repositories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    listed BIGINT NOT NULL DEFAULT 0
);

-- Every blob in the store, manifests included (manifests are blobs too).
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A blob linked into a repository (distribution's _layers links).
CREATE TABLE repository_blobs (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs(digest);

-- A manifest revision in a repository (distribution's _manifests/revisions links).
CREATE TABLE manifests (
    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_subject ON manifests(repository_id, subject);
CREATE INDEX manifests_digest ON manifests(digest);

-- What a manifest references: blobs (config, layers) and child manifests.
CREATE TABLE manifest_references (
    repository_id BIGINT NOT NULL,
    parent TEXT NOT NULL,
    child TEXT NOT NULL,
    child_is_manifest BIGINT NOT NULL,
    PRIMARY KEY (repository_id, parent, child),
    FOREIGN KEY (repository_id, parent) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_child ON manifest_references(child);

CREATE TABLE tags (
    repository_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX tags_digest ON tags(repository_id, digest);

-- Upload sessions: how many bytes are durably stored and the hash state at that point.
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    repository TEXT NOT NULL,
    size BIGINT NOT NULL,
    hash_state BLOB NOT NULL,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX uploads_updated ON uploads(updated_at);

CREATE TABLE berth_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
