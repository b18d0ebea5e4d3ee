//! The metadata index: repositories, blobs and their links, manifests and what
//! they reference, tags, referrers (manifests by subject) and upload sessions.
//! Storage holds the content and a distribution-layout mirror of this; listing,
//! referrers and validation read from here.
//!
//! Queries are written once with `$N` placeholders, which both SQLite and
//! PostgreSQL accept, and run through sqlx's `Any` driver. SQLite writes go
//! through a one-connection pool so writers never contend for the lock.
//!
//! On PostgreSQL several Berth instances write at once (READ COMMITTED), so
//! transactions lock the rows whose state they check (`FOR KEY SHARE` to keep
//! a row, `FOR UPDATE` to delete one, parents before children), and a delete
//! rechecks its condition in the statement that deletes. The read cache is
//! off there.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Connection, Executor, Row, Transaction};

mod cache;
mod lifecycle;
use cache::{Cache, Kind};
pub use lifecycle::{GcVictim, ManifestNode, RepositoryGraph, TagInfo};

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

impl MetadataError {
    /// Whether the database could not write for want of disk space
    /// (SQLite's SQLITE_FULL, PostgreSQL's disk_full).
    pub fn is_full(&self) -> bool {
        match self {
            MetadataError::Database(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("13") | Some("53100")) || e.message().contains("disk is full")
            }
            MetadataError::Database(sqlx::Error::Io(e)) => e.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}

pub type Result<T, E = MetadataError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch, the unit of every timestamp column.
pub fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerRow {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    /// JSON object text, when the manifest has annotations.
    pub annotations: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub id: String,
    pub repository: String,
    pub size: i64,
    pub hash_state: Vec<u8>,
    /// The storage driver's state of the unfinished upload data, if it keeps any.
    pub storage_state: Option<String>,
    pub started_at: i64,
    pub updated_at: i64,
}

/// A manifest to record, with everything it references.
#[derive(Debug, Clone)]
pub struct NewManifest<'a> {
    pub repository: &'a str,
    pub digest: &'a str,
    pub media_type: &'a str,
    pub size: i64,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub annotations: Option<String>,
    /// Blobs (config, layers) that must be linked in the repository.
    pub blobs: Vec<&'a str>,
    /// Child manifests that must exist in the repository.
    pub children: Vec<&'a str>,
    pub tag: Option<&'a str>,
    /// Skip the presence checks (import, where children may come later).
    pub trust_references: bool,
}

/// Everything found for one repository of an existing store.
#[derive(Debug, Clone, Default)]
pub struct ImportedRepository<'a> {
    pub repository: &'a str,
    pub blobs: Vec<(&'a str, i64)>,
    pub manifests: Vec<NewManifest<'a>>,
    pub tags: Vec<(&'a str, &'a str)>,
    /// Whether the repository has a manifests directory (shows in the catalog).
    pub listed: bool,
}

/// The outcome of [`Metadata::claim_blob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobClaim {
    Present,
    Write,
}

/// How long a blob may stay `committing` before garbage collection may take it.
const COMMIT_LEASE_MS: i64 = 15 * 60 * 1000;

/// Why a manifest could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutManifestOutcome {
    Stored,
    MissingBlob(String),
    MissingManifest(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A query with a row-locking clause on PostgreSQL; SQLite has no row locks
/// and needs none, its writers being serialised.
macro_rules! locking {
    ($backend:expr, $sql:literal, $lock:literal) => {
        match $backend {
            Backend::Sqlite => $sql,
            Backend::Postgres => concat!($sql, " ", $lock),
        }
    };
}
pub(crate) use locking;

/// How many times a write retries when a concurrent delete removed the row
/// it had just found (PostgreSQL only; SQLite writers are serialised).
const RACE_RETRIES: usize = 5;

#[derive(Clone)]
pub struct Metadata {
    read: AnyPool,
    write: AnyPool,
    // Upload progress: a chunk is not fsynced either, so its row need not
    // be (SQLite: synchronous=NORMAL, durable against a crash of the process,
    // not of the machine). Committed data goes through `write`.
    uploads: AnyPool,
    backend: Backend,
    cache: Arc<Cache>,
    /// PostgreSQL: connections that hold repository locks (see
    /// [`Metadata::lock_repository`]), apart from the pool the holders query
    /// through, so holders never wait on each other for a connection.
    locks: Option<AnyPool>,
}

/// A repository locked across every instance sharing the database, until
/// dropped (its transaction then rolls back, releasing the lock).
pub struct RepositoryLock {
    _tx: Option<Transaction<'static, Any>>,
}

/// First key of repository advisory locks (the second is the name's hash).
const REPOSITORY_LOCK_SPACE: i32 = 0x6265_7274;

/// Listings longer than this are not cached, but paged from the database.
const MAX_CACHED_LIST: i64 = 100_000;

type SetupFuture<'c> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

fn sqlite_setup(conn: &mut sqlx::AnyConnection, _meta: sqlx::pool::PoolConnectionMetadata) -> SetupFuture<'_> {
    Box::pin(async move {
        // WAL lets readers run beside the writer; FULL makes each commit durable.
        conn.execute("PRAGMA journal_mode=WAL").await?;
        conn.execute("PRAGMA synchronous=FULL").await?;
        conn.execute("PRAGMA busy_timeout=30000").await?;
        conn.execute("PRAGMA foreign_keys=ON").await?;
        Ok(())
    })
}

fn sqlite_setup_relaxed(conn: &mut sqlx::AnyConnection, meta: sqlx::pool::PoolConnectionMetadata) -> SetupFuture<'_> {
    Box::pin(async move {
        sqlite_setup(conn, meta).await?;
        conn.execute("PRAGMA synchronous=NORMAL").await?;
        Ok(())
    })
}

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_initial.sql")),
    (2, include_str!("../migrations/sqlite/0002_lifecycle.sql")),
    (3, include_str!("../migrations/sqlite/0003_storage_state.sql")),
];

const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_initial.sql")),
    (2, include_str!("../migrations/postgres/0002_lifecycle.sql")),
    (3, include_str!("../migrations/postgres/0003_storage_state.sql")),
];

/// The advisory lock instances take while migrating a shared PostgreSQL
/// database, so that several starting at once apply each migration once.
const MIGRATION_LOCK: i64 = 0x6265_7274_686d_6967; // "berthmig"

impl Metadata {
    /// Opens (creating if needed) the embedded SQLite database at `path`.
    /// Returns the handle and whether the database was created just now.
    pub async fn open_sqlite(path: &Path) -> Result<(Self, bool)> {
        sqlx::any::install_default_drivers();
        let created = !path.exists();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| MetadataError::Corrupt(format!("{}: {e}", dir.display())))?;
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let opts = AnyConnectOptions::from_str(&url)?;
        let setup = sqlite_setup;
        let write = AnyPoolOptions::new().max_connections(1).after_connect(setup).connect_with(opts.clone()).await?;
        // This process is the embedded database's only writer, so it may cache reads.
        let md = Metadata {
            read: write.clone(),
            uploads: write.clone(),
            write,
            backend: Backend::Sqlite,
            cache: Arc::new(Cache::new(true)),
            locks: None,
        };
        migrate(&mut *md.write.acquire().await?, SQLITE_MIGRATIONS).await?;
        let read = AnyPoolOptions::new().max_connections(8).after_connect(setup).connect_with(opts.clone()).await?;
        let uploads =
            AnyPoolOptions::new().max_connections(1).after_connect(sqlite_setup_relaxed).connect_with(opts).await?;
        Ok((Metadata { read, uploads, ..md }, created))
    }

    /// Opens a PostgreSQL database shared by any number of Berth instances,
    /// applying missing migrations under an advisory lock. Returns the handle
    /// and whether the schema was created just now. `url` is a libpq-style
    /// URL (`postgres://user:password@host:5432/db`); it is never logged.
    pub async fn open_postgres(url: &str, max_connections: u32) -> Result<(Self, bool)> {
        sqlx::any::install_default_drivers();
        let opts = AnyConnectOptions::from_str(url)?;
        let created = {
            // A connection of its own: if migrating fails, closing it releases the lock.
            let mut conn = sqlx::AnyConnection::connect_with(&opts).await?;
            sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut conn).await?;
            let created = migrate(&mut conn, POSTGRES_MIGRATIONS).await?;
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut conn).await?;
            conn.close().await?;
            created
        };
        let pool = AnyPoolOptions::new().max_connections(max_connections.max(1)).connect_with(opts.clone()).await?;
        let md = Metadata {
            read: pool.clone(),
            uploads: pool.clone(),
            write: pool,
            backend: Backend::Postgres,
            // Other instances write too: a cached read could be stale.
            cache: Arc::new(Cache::new(false)),
            locks: Some(
                AnyPoolOptions::new().max_connections((max_connections / 2).clamp(2, 16)).connect_with(opts).await?,
            ),
        };
        Ok((md, created))
    }

    /// Starts a write transaction. SQLite takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that read first could not
    /// upgrade after the other writing connection committed (SQLITE_BUSY_SNAPSHOT).
    /// PostgreSQL transactions are READ COMMITTED and lock the rows they rely on.
    async fn begin<'p>(&self, pool: &'p AnyPool) -> Result<Transaction<'p, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        })
    }

    /// Locks `repo` for changes whose storage links and rows must agree
    /// (tags, manifest deletion, repository deletion) across all instances.
    /// With SQLite the process is the only writer and its own locks suffice.
    pub async fn lock_repository(&self, repo: &str) -> Result<RepositoryLock> {
        let Some(pool) = &self.locks else { return Ok(RepositoryLock { _tx: None }) };
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(REPOSITORY_LOCK_SPACE)
            .bind(repo)
            .execute(&mut *tx)
            .await?;
        Ok(RepositoryLock { _tx: Some(tx) })
    }

    pub async fn close(&self) {
        if let Some(l) = &self.locks {
            l.close().await;
        }
        self.read.close().await;
        self.uploads.close().await;
        self.write.close().await;
    }

    // ---- key/value ----

    pub async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM berth_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.read)
            .await?)
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO berth_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The value stored under `key`, storing `value` first if there is none:
    /// of several instances racing, all get the one that was stored first.
    pub async fn meta_or_insert(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO berth_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.write)
            .await?;
        let stored: Option<String> = sqlx::query_scalar("SELECT value FROM berth_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.write)
            .await?;
        stored.ok_or_else(|| MetadataError::Corrupt(format!("berth_meta {key} vanished after it was written")))
    }

    // ---- repositories ----

    /// The repository's id, creating it if needed. On PostgreSQL the row is
    /// locked (`FOR KEY SHARE`) until the transaction ends, so a concurrent
    /// repository deletion waits for what this transaction adds to it.
    async fn ensure_repository(backend: Backend, tx: &mut Transaction<'_, Any>, name: &str) -> Result<i64> {
        let select = locking!(backend, "SELECT id FROM repositories WHERE name = $1", "FOR KEY SHARE");
        for _ in 0..RACE_RETRIES {
            sqlx::query("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(now_millis())
                .execute(&mut **tx)
                .await?;
            // None only if a deletion committed between the two statements.
            if let Some(id) = sqlx::query_scalar(select).bind(name).fetch_optional(&mut **tx).await? {
                return Ok(id);
            }
        }
        Err(MetadataError::Corrupt(format!("repository {name} keeps being deleted while written")))
    }

    /// Repositories that ever held a manifest, in name order, after `last`.
    pub async fn list_repositories(&self, last: Option<&str>, limit: i64) -> Result<Vec<String>> {
        let all = match self.cache.catalog() {
            Some(all) => Some(all),
            // Without a cache to keep it in, reading everything would be wasted.
            None if !self.cache.enabled() => None,
            None => {
                let token = self.cache.catalog_token();
                let names: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM repositories WHERE listed = 1 ORDER BY name LIMIT $1")
                        .bind(MAX_CACHED_LIST + 1)
                        .fetch_all(&self.read)
                        .await?;
                (names.len() as i64 <= MAX_CACHED_LIST).then(|| {
                    let names = Arc::new(names);
                    self.cache.put_catalog(token, names.clone());
                    names
                })
            }
        };
        if let Some(all) = all {
            return Ok(page_after(&all, last, limit));
        }
        Ok(sqlx::query_scalar("SELECT name FROM repositories WHERE listed = 1 AND name > $1 ORDER BY name LIMIT $2")
            .bind(last.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.read)
            .await?)
    }

    pub async fn count_repositories(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM repositories").fetch_one(&self.read).await?)
    }

    // ---- blobs ----

    /// Size of a blob readable in `repo`: linked as a layer, or a manifest of it.
    pub async fn repository_blob_size(&self, repo: &str, digest: &str) -> Result<Option<i64>> {
        if let Some(hit) = self.cache.blob(repo, digest) {
            return Ok(hit);
        }
        let token = self.cache.token(repo);
        let size = sqlx::query_scalar(
            "SELECT b.size FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
               JOIN blobs b ON b.digest = rb.digest WHERE r.name = $1 AND rb.digest = $2 \
             UNION ALL SELECT m.size FROM manifests m JOIN repositories r ON r.id = m.repository_id \
               WHERE r.name = $1 AND m.digest = $2 LIMIT 1",
        )
        .bind(repo)
        .bind(digest)
        .fetch_optional(&self.read)
        .await?;
        self.cache.put_blob(repo, token, digest, size);
        Ok(size)
    }

    /// Up to `limit` repositories that hold a blob as a layer, in name order.
    pub async fn repositories_with_blob(&self, digest: &str, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
             WHERE rb.digest = $1 ORDER BY r.name LIMIT $2",
        )
        .bind(digest)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    /// Size of a blob known anywhere in the store.
    pub async fn blob_size(&self, digest: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.read)
            .await?)
    }

    /// Starts committing a blob. `Present` means the content is already in
    /// storage (and stays: its use time was just moved); `Write` means the
    /// caller must put the content in place, then call [`Metadata::finish_blob`].
    ///
    /// One statement, so claims race safely between instances: a present blob
    /// keeps its state and has its use time moved; a new one is inserted, and
    /// one still committing gets a new lease, both as `committing`. A claim
    /// that meets a collection deleting the row waits for it, then inserts.
    pub async fn claim_blob(&self, digest: &str, size: i64) -> Result<BlobClaim> {
        let now = now_millis();
        let state: i64 = sqlx::query_scalar(
            "INSERT INTO blobs (digest, size, created_at, state, lease_until, last_used) VALUES ($1, $2, $3, 1, $4, $3) \
             ON CONFLICT (digest) DO UPDATE SET last_used = excluded.last_used, \
               lease_until = CASE WHEN blobs.state = 0 THEN blobs.lease_until ELSE excluded.lease_until END \
             RETURNING state",
        )
        .bind(digest)
        .bind(size)
        .bind(now)
        .bind(now + COMMIT_LEASE_MS)
        .fetch_one(&self.write)
        .await?;
        Ok(if state == 0 { BlobClaim::Present } else { BlobClaim::Write })
    }

    /// Marks a claimed blob's content as in place and links it into `repo`.
    /// Fails if collection took the row meanwhile (the commit outlived its
    /// lease), as the content may have gone with it.
    pub async fn finish_blob(&self, repo: &str, digest: &str) -> Result<()> {
        let mut tx = self.begin(&self.write).await?;
        let now = now_millis();
        let found = sqlx::query("UPDATE blobs SET state = 0, lease_until = 0, last_used = $2 WHERE digest = $1")
            .bind(digest)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if found == 0 {
            return Err(MetadataError::Corrupt(format!(
                "blob {digest} was collected before its commit finished (lease ran out)"
            )));
        }
        let repo_id = Self::ensure_repository(self.backend, &mut tx, repo).await?;
        Self::insert_link(&mut tx, repo_id, digest, now).await?;
        tx.commit().await?;
        self.cache.invalidate(repo);
        Ok(())
    }

    /// Links a blob whose content is present into `repo`, moving its use
    /// time. False when the blob is not (or no longer) present.
    pub async fn link_existing(&self, repo: &str, digest: &str) -> Result<bool> {
        let mut tx = self.begin(&self.write).await?;
        let now = now_millis();
        let present = sqlx::query("UPDATE blobs SET last_used = $2 WHERE digest = $1 AND state = 0")
            .bind(digest)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if present {
            let repo_id = Self::ensure_repository(self.backend, &mut tx, repo).await?;
            Self::insert_link(&mut tx, repo_id, digest, now).await?;
        }
        tx.commit().await?;
        if present {
            self.cache.invalidate(repo);
        }
        Ok(present)
    }

    /// Claims, finishes and links in one go: for tests and callers that
    /// already put the content in place.
    pub async fn link_blob(&self, repo: &str, digest: &str, size: i64) -> Result<()> {
        self.claim_blob(digest, size).await?;
        self.finish_blob(repo, digest).await
    }

    /// Moves a blob's use time, so garbage collection leaves it alone for
    /// another grace period.
    pub async fn touch_blob(&self, digest: &str) -> Result<()> {
        sqlx::query("UPDATE blobs SET last_used = $2 WHERE digest = $1 AND state = 0")
            .bind(digest)
            .bind(now_millis())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn insert_link(tx: &mut Transaction<'_, Any>, repo_id: i64, digest: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (repository_id, digest) DO NOTHING",
        )
        .bind(repo_id)
        .bind(digest)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Removes a blob's link from `repo`. Returns whether it was linked.
    pub async fn unlink_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        let r = sqlx::query(
            "DELETE FROM repository_blobs WHERE digest = $2 \
             AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
        )
        .bind(repo)
        .bind(digest)
        .execute(&self.write)
        .await?;
        self.cache.invalidate(repo);
        Ok(r.rows_affected() > 0)
    }

    // ---- manifests and tags ----

    fn manifest_row(r: &AnyRow) -> Result<ManifestRow> {
        Ok(ManifestRow { digest: r.try_get(0)?, media_type: r.try_get(1)?, size: r.try_get(2)? })
    }

    pub async fn get_manifest(&self, repo: &str, digest: &str) -> Result<Option<ManifestRow>> {
        self.cached_row(
            Kind::Manifest,
            repo,
            digest,
            "SELECT m.digest, m.media_type, m.size FROM manifests m JOIN repositories r ON r.id = m.repository_id \
             WHERE r.name = $1 AND m.digest = $2",
        )
        .await
    }

    pub async fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Option<ManifestRow>> {
        self.cached_row(
            Kind::TagRow,
            repo,
            tag,
            "SELECT m.digest, m.media_type, m.size FROM tags t JOIN repositories r ON r.id = t.repository_id \
             JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest \
             WHERE r.name = $1 AND t.name = $2",
        )
        .await
    }

    async fn cached_row(&self, kind: Kind, repo: &str, key: &str, sql: &'static str) -> Result<Option<ManifestRow>> {
        if let Some(hit) = self.cache.row(kind, repo, key) {
            return Ok(hit);
        }
        let token = self.cache.token(repo);
        let row = sqlx::query(sql).bind(repo).bind(key).fetch_optional(&self.read).await?;
        let row = row.as_ref().map(Self::manifest_row).transpose()?;
        self.cache.put_row(kind, repo, token, key, row.clone());
        Ok(row)
    }

    /// Records a manifest, its references and optionally a tag, in one
    /// transaction that first checks every referenced blob and child manifest
    /// is present in the repository.
    ///
    /// On PostgreSQL the checked rows stay locked against deletion until the
    /// commit (`FOR KEY SHARE`, the weakest lock that blocks a DELETE, so
    /// uploads moving a blob's use time do not wait): a collection batch that
    /// locked a blob first deletes it and this sees it gone; one that comes
    /// later skips it or finds it referenced. Blobs are locked in digest
    /// order, the order collection locks them in.
    pub async fn put_manifest(&self, m: &NewManifest<'_>) -> Result<PutManifestOutcome> {
        let mut checked_blobs: Vec<&str> = if m.trust_references { vec![] } else { m.blobs.clone() };
        let mut checked_children: Vec<&str> = if m.trust_references { vec![] } else { m.children.clone() };
        checked_blobs.sort_unstable();
        checked_blobs.dedup();
        checked_children.sort_unstable();
        checked_children.dedup();
        let blob_sql = locking!(
            self.backend,
            "SELECT 1 FROM blobs b WHERE b.digest = $2 \
             AND (EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.repository_id = $1 AND rb.digest = $2) \
               OR EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = $1 AND m.digest = $2))",
            "FOR KEY SHARE OF b"
        );
        let child_sql =
            locking!(self.backend, "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2", "FOR KEY SHARE");
        let mut tx = self.begin(&self.write).await?;
        let repo_id = Self::ensure_repository(self.backend, &mut tx, m.repository).await?;
        for b in checked_blobs {
            let found: Option<i64> =
                sqlx::query_scalar(blob_sql).bind(repo_id).bind(b).fetch_optional(&mut *tx).await?;
            if found.is_none() {
                return Ok(PutManifestOutcome::MissingBlob(b.to_owned()));
            }
        }
        for c in checked_children {
            let found: Option<i64> =
                sqlx::query_scalar(child_sql).bind(repo_id).bind(c).fetch_optional(&mut *tx).await?;
            if found.is_none() {
                return Ok(PutManifestOutcome::MissingManifest(c.to_owned()));
            }
        }
        Self::insert_manifest(self.backend, &mut tx, repo_id, m).await?;
        tx.commit().await?;
        self.cache.invalidate(m.repository);
        Ok(PutManifestOutcome::Stored)
    }

    async fn insert_manifest(
        backend: Backend,
        tx: &mut Transaction<'_, Any>,
        repo_id: i64,
        m: &NewManifest<'_>,
    ) -> Result<()> {
        sqlx::query("UPDATE repositories SET listed = 1 WHERE id = $1 AND listed = 0")
            .bind(repo_id)
            .execute(&mut **tx)
            .await?;
        let now = now_millis();
        // The caller has put the manifest's content in place.
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at, state, last_used) VALUES ($1, $2, $3, 0, $3) \
             ON CONFLICT (digest) DO UPDATE SET state = 0, lease_until = 0, last_used = excluded.last_used",
        )
        .bind(m.digest)
        .bind(m.size)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        // Either this inserts the row, or the row already there is locked
        // against deletion until the commit (a tag or a reference may follow).
        let existing =
            locking!(backend, "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2", "FOR KEY SHARE");
        let mut inserted = None;
        for _ in 0..RACE_RETRIES {
            let n = sqlx::query(
                "INSERT INTO manifests (repository_id, digest, media_type, size, artifact_type, subject, annotations, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (repository_id, digest) DO NOTHING",
            )
            .bind(repo_id)
            .bind(m.digest)
            .bind(m.media_type)
            .bind(m.size)
            .bind(m.artifact_type)
            .bind(m.subject)
            .bind(m.annotations.as_deref())
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if n > 0 {
                inserted = Some(true);
                break;
            }
            let found: Option<i64> =
                sqlx::query_scalar(existing).bind(repo_id).bind(m.digest).fetch_optional(&mut **tx).await?;
            if found.is_some() {
                inserted = Some(false);
                break;
            }
        }
        let Some(inserted) = inserted else {
            return Err(MetadataError::Corrupt(format!("manifest {} keeps being deleted while recorded", m.digest)));
        };
        if inserted {
            let refs = m.blobs.iter().map(|b| (b, 0i64)).chain(m.children.iter().map(|c| (c, 1i64)));
            for (child, is_manifest) in refs {
                sqlx::query(
                    "INSERT INTO manifest_references (repository_id, parent, child, child_is_manifest) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (repository_id, parent, child) DO NOTHING",
                )
                .bind(repo_id)
                .bind(m.digest)
                .bind(*child)
                .bind(is_manifest)
                .execute(&mut **tx)
                .await?;
            }
        }
        if let Some(tag) = m.tag {
            sqlx::query(
                "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repo_id)
            .bind(tag)
            .bind(m.digest)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Records everything found for some repositories of an existing store,
    /// in one transaction. Idempotent.
    pub async fn import_repositories(&self, imps: &[ImportedRepository<'_>]) -> Result<()> {
        let mut tx = self.begin(&self.write).await?;
        for imp in imps {
            Self::import_one(self.backend, &mut tx, imp).await?;
        }
        tx.commit().await?;
        for imp in imps {
            self.cache.invalidate(imp.repository);
        }
        Ok(())
    }

    async fn import_one(backend: Backend, tx: &mut Transaction<'_, Any>, imp: &ImportedRepository<'_>) -> Result<()> {
        let repo_id = Self::ensure_repository(backend, tx, imp.repository).await?;
        if imp.listed {
            sqlx::query("UPDATE repositories SET listed = 1 WHERE id = $1").bind(repo_id).execute(&mut **tx).await?;
        }
        let now = now_millis();
        for (digest, size) in &imp.blobs {
            sqlx::query(
                "INSERT INTO blobs (digest, size, created_at, last_used) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (digest) DO NOTHING",
            )
            .bind(*digest)
            .bind(*size)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (repository_id, digest) DO NOTHING",
            )
            .bind(repo_id)
            .bind(*digest)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        for m in &imp.manifests {
            Self::insert_manifest(backend, tx, repo_id, m).await?;
        }
        for (tag, digest) in &imp.tags {
            sqlx::query(
                "INSERT INTO tags (repository_id, name, digest, updated_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $3) \
                 ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repo_id)
            .bind(*tag)
            .bind(*digest)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Deletes a manifest from a repository with the tags pointing at it.
    /// Returns the removed tags, or None if the manifest was not there.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<Option<Vec<String>>> {
        let mut tx = self.begin(&self.write).await?;
        let repo_id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(repo)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(repo_id) = repo_id else {
            return Ok(None);
        };
        // The manifest first, then what refers to it: a push that tags it
        // holds it (FOR KEY SHARE) and so finishes before this starts. If it
        // is not there now, there is nothing to delete, whatever comes later.
        let found: Option<i64> = sqlx::query_scalar(locking!(
            self.backend,
            "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2",
            "FOR UPDATE"
        ))
        .bind(repo_id)
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?;
        if found.is_none() {
            return Ok(None);
        }
        let mut tags: Vec<String> =
            sqlx::query_scalar("DELETE FROM tags WHERE repository_id = $1 AND digest = $2 RETURNING name")
                .bind(repo_id)
                .bind(digest)
                .fetch_all(&mut *tx)
                .await?;
        tags.sort_unstable();
        sqlx::query("DELETE FROM manifest_references WHERE repository_id = $1 AND parent = $2")
            .bind(repo_id)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(digest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        self.cache.invalidate(repo);
        Ok((n > 0).then_some(tags))
    }

    /// Points a tag at a manifest already recorded in the repository.
    pub async fn set_tag(&self, repo: &str, tag: &str, digest: &str) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO tags (repository_id, name, digest, updated_at) \
             SELECT r.id, $2, $3, $4 FROM repositories r JOIN manifests m ON m.repository_id = r.id AND m.digest = $3 \
             WHERE r.name = $1 \
             ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
        )
        .bind(repo)
        .bind(tag)
        .bind(digest)
        .bind(now_millis())
        .execute(&self.write)
        .await;
        self.cache.invalidate(repo);
        match r {
            Ok(r) => Ok(r.rows_affected() > 0),
            // The manifest was deleted between the statement's read and its insert.
            Err(e) if is_foreign_key_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a tag. Returns the digest it pointed at, if it existed.
    pub async fn delete_tag(&self, repo: &str, tag: &str) -> Result<Option<String>> {
        let digest: Option<String> = sqlx::query_scalar(
            "DELETE FROM tags WHERE name = $2 AND repository_id = (SELECT id FROM repositories WHERE name = $1) \
             RETURNING digest",
        )
        .bind(repo)
        .bind(tag)
        .fetch_optional(&self.write)
        .await?;
        self.cache.invalidate(repo);
        Ok(digest)
    }

    /// Tags of a repository in name order after `last`; None when the
    /// repository never held a manifest.
    pub async fn list_tags(&self, repo: &str, last: Option<&str>, limit: i64) -> Result<Option<Vec<String>>> {
        if !self.cache.enabled() {
            let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM repositories WHERE name = $1 AND listed = 1")
                .bind(repo)
                .fetch_optional(&self.read)
                .await?;
            return match known {
                Some(_) => self.page_tags(repo, last, limit).await.map(Some),
                None => Ok(None),
            };
        }
        let all = match self.cache.tags(repo) {
            Some(hit) => hit,
            None => {
                let token = self.cache.token(repo);
                let known: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM repositories WHERE name = $1 AND listed = 1")
                        .bind(repo)
                        .fetch_optional(&self.read)
                        .await?;
                if known.is_none() {
                    self.cache.put_tags(repo, token, None);
                    return Ok(None);
                }
                let tags: Vec<String> = sqlx::query_scalar(
                    "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id \
                     WHERE r.name = $1 ORDER BY t.name LIMIT $2",
                )
                .bind(repo)
                .bind(MAX_CACHED_LIST + 1)
                .fetch_all(&self.read)
                .await?;
                if tags.len() as i64 > MAX_CACHED_LIST {
                    return self.page_tags(repo, last, limit).await.map(Some);
                }
                let tags = Arc::new(tags);
                self.cache.put_tags(repo, token, Some(tags.clone()));
                Some(tags)
            }
        };
        Ok(all.map(|all| page_after(&all, last, limit)))
    }

    async fn page_tags(&self, repo: &str, last: Option<&str>, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id \
             WHERE r.name = $1 AND t.name > $2 ORDER BY t.name LIMIT $3",
        )
        .bind(repo)
        .bind(last.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    /// Manifests in `repo` whose subject is `subject`, optionally of one artifact type.
    pub async fn referrers(&self, repo: &str, subject: &str, artifact_type: Option<&str>) -> Result<Vec<ReferrerRow>> {
        let rows = sqlx::query(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m \
             JOIN repositories r ON r.id = m.repository_id \
             WHERE r.name = $1 AND m.subject = $2 AND ($3 = '' OR m.artifact_type = $3) ORDER BY m.created_at, m.digest",
        )
        .bind(repo)
        .bind(subject)
        .bind(artifact_type.unwrap_or(""))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReferrerRow {
                    digest: r.try_get(0)?,
                    media_type: r.try_get(1)?,
                    size: r.try_get(2)?,
                    artifact_type: r.try_get(3)?,
                    annotations: r.try_get(4)?,
                })
            })
            .collect()
    }

    // ---- uploads ----

    pub async fn create_upload(&self, u: &UploadRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO uploads (id, repository, size, hash_state, storage_state, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&u.id)
        .bind(&u.repository)
        .bind(u.size)
        .bind(&u.hash_state)
        .bind(&u.storage_state)
        .bind(u.started_at)
        .bind(u.updated_at)
        .execute(&self.uploads)
        .await?;
        Ok(())
    }

    fn upload_row(r: &AnyRow) -> Result<UploadRow> {
        Ok(UploadRow {
            id: r.try_get(0)?,
            repository: r.try_get(1)?,
            size: r.try_get(2)?,
            hash_state: r.try_get(3)?,
            storage_state: r.try_get(4)?,
            started_at: r.try_get(5)?,
            updated_at: r.try_get(6)?,
        })
    }

    pub async fn get_upload(&self, id: &str) -> Result<Option<UploadRow>> {
        // Read through the upload connection so a status request sees the latest chunk.
        let row = sqlx::query(
            "SELECT id, repository, size, hash_state, storage_state, started_at, updated_at FROM uploads WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.uploads)
        .await?;
        row.as_ref().map(Self::upload_row).transpose()
    }

    /// Advances an upload from `from_size` to `size`. Returns false when the
    /// upload is gone or was advanced by someone else meanwhile.
    pub async fn advance_upload(
        &self,
        id: &str,
        from_size: i64,
        size: i64,
        hash_state: &[u8],
        storage_state: Option<&str>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE uploads SET size = $1, hash_state = $2, storage_state = $3, updated_at = $4 WHERE id = $5 AND size = $6",
        )
        .bind(size)
        .bind(hash_state)
        .bind(storage_state)
        .bind(now_millis())
        .bind(id)
        .bind(from_size)
        .execute(&self.uploads)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn delete_upload(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id).execute(&self.uploads).await?;
        Ok(r.rows_affected() > 0)
    }

    /// Uploads not touched since `before` (milliseconds).
    pub async fn stale_uploads(&self, before: i64, limit: i64) -> Result<Vec<UploadRow>> {
        let rows = sqlx::query(
            "SELECT id, repository, size, hash_state, storage_state, started_at, updated_at FROM uploads \
             WHERE updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(Self::upload_row).collect()
    }
}

/// Applies the migrations not yet recorded in `schema_migrations`, each in
/// its own transaction. Returns whether the first one was applied now (the
/// database was empty).
async fn migrate(conn: &mut sqlx::AnyConnection, migrations: &[(i64, &str)]) -> Result<bool> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let mut created = false;
    for (version, sql) in migrations {
        let done: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *conn)
            .await?;
        if done.is_some() {
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        tx.execute(*sql).await?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        created |= *version == 1;
        tracing::info!(version, "applied metadata migration");
    }
    Ok(created)
}

/// Whether an error is a foreign key violation: on PostgreSQL, the row a
/// write referred to was deleted by another transaction meanwhile.
fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
}

/// The entries of a sorted list after `last`, at most `limit` of them.
fn page_after(all: &[String], last: Option<&str>, limit: i64) -> Vec<String> {
    let start = match last {
        Some(l) => all.partition_point(|x| x.as_str() <= l),
        None => 0,
    };
    all[start..].iter().take(limit.max(0) as usize).cloned().collect()
}

#[cfg(test)]
mod tests;
