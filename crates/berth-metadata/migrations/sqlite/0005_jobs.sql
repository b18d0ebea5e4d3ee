-- Jobs an administrator asked for (a collection, a retention run): what was
-- asked, where it stands, and what it did. The work itself goes through the
-- queue (kind `admin`, the job's id as payload), so any instance may run it
-- and a crash hands it to another; this row is what `/_berth/jobs/<id>`
-- answers on every instance.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    progress TEXT,
    result TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX jobs_created ON jobs(created_at);
