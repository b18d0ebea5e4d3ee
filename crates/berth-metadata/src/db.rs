//! Opening the database (pools, pragmas, migrations under an advisory lock on
//! PostgreSQL), write transactions, and the cross-instance repository lock.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Connection, Executor, Transaction};

use crate::cache::Cache;
use berth_types::RepoName;

use crate::{now_millis, Backend, Metadata, MetadataError, RepositoryLock, Result};

pub(crate) type SetupFuture<'c> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

pub(crate) fn sqlite_setup(
    conn: &mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> SetupFuture<'_> {
    Box::pin(async move {
        // WAL lets readers run beside the writer; FULL makes each commit durable.
        conn.execute("PRAGMA journal_mode=WAL").await?;
        conn.execute("PRAGMA synchronous=FULL").await?;
        conn.execute("PRAGMA busy_timeout=30000").await?;
        conn.execute("PRAGMA foreign_keys=ON").await?;
        Ok(())
    })
}

pub(crate) fn sqlite_setup_relaxed(
    conn: &mut sqlx::AnyConnection,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> SetupFuture<'_> {
    Box::pin(async move {
        sqlite_setup(conn, meta).await?;
        conn.execute("PRAGMA synchronous=NORMAL").await?;
        Ok(())
    })
}

pub(crate) const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_initial.sql")),
    (2, include_str!("../migrations/sqlite/0002_lifecycle.sql")),
    (3, include_str!("../migrations/sqlite/0003_storage_state.sql")),
    (4, include_str!("../migrations/sqlite/0004_queue.sql")),
    (5, include_str!("../migrations/sqlite/0005_jobs.sql")),
];

pub(crate) const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_initial.sql")),
    (2, include_str!("../migrations/postgres/0002_lifecycle.sql")),
    (3, include_str!("../migrations/postgres/0003_storage_state.sql")),
    (4, include_str!("../migrations/postgres/0004_queue.sql")),
    (5, include_str!("../migrations/postgres/0005_jobs.sql")),
];

/// The advisory lock instances take while migrating a shared PostgreSQL
/// database, so that several starting at once apply each migration once.
pub(crate) const MIGRATION_LOCK: i64 = 0x6265_7274_686d_6967; // "berthmig"

/// First key of repository advisory locks (the second is the name's hash).
pub(crate) const REPOSITORY_LOCK_SPACE: i32 = 0x6265_7274;

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
            lock_prefix: String::new(),
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
        Self::open_postgres_in(url, max_connections, None).await
    }

    /// Like [`Metadata::open_postgres`], with the tables in `schema` (created
    /// if absent) rather than the connection's default one: several
    /// registries of one process keep their metadata apart inside one
    /// database. A name outside `[a-z0-9_.-]{1,63}` is refused.
    pub async fn open_postgres_in(url: &str, max_connections: u32, schema: Option<&str>) -> Result<(Self, bool)> {
        sqlx::any::install_default_drivers();
        let opts = AnyConnectOptions::from_str(url)?;
        let search_path: Option<Arc<str>> = match schema {
            None => None,
            Some(s) if valid_schema(s) => Some(format!("SET search_path TO \"{s}\"").into()),
            Some(s) => {
                return Err(MetadataError::Corrupt(format!(
                    "schema name {s:?}: use 1 to 63 of a-z, 0-9, '_', '.', '-'"
                )))
            }
        };
        let created = {
            // A connection of its own: if migrating fails, closing it releases the lock.
            let mut conn = sqlx::AnyConnection::connect_with(&opts).await?;
            sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut conn).await?;
            if let (Some(schema), Some(set)) = (schema, &search_path) {
                conn.execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str()).await?;
                conn.execute(&**set).await?;
            }
            let created = migrate(&mut conn, POSTGRES_MIGRATIONS).await?;
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut conn).await?;
            conn.close().await?;
            created
        };
        let pool_options = || {
            let set = search_path.clone();
            AnyPoolOptions::new().after_connect(move |conn, _meta| {
                let set = set.clone();
                Box::pin(async move {
                    if let Some(set) = set {
                        conn.execute(&*set).await?;
                    }
                    Ok(())
                })
            })
        };
        let pool = pool_options().max_connections(max_connections.max(1)).connect_with(opts.clone()).await?;
        let md = Metadata {
            read: pool.clone(),
            uploads: pool.clone(),
            write: pool,
            backend: Backend::Postgres,
            // Other instances write too: a cached read could be stale.
            cache: Arc::new(Cache::new(false)),
            locks: Some(pool_options().max_connections((max_connections / 2).clamp(2, 16)).connect_with(opts).await?),
            lock_prefix: schema.map(|s| format!("{s}/")).unwrap_or_default(),
        };
        Ok((md, created))
    }

    /// Starts a write transaction. SQLite takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that read first could not
    /// upgrade after the other writing connection committed (SQLITE_BUSY_SNAPSHOT).
    /// PostgreSQL transactions are READ COMMITTED and lock the rows they rely on.
    pub(crate) async fn begin(&self, pool: &AnyPool) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        })
    }

    /// Locks `repo` for changes whose storage links and rows must agree
    /// (tags, manifest deletion, repository deletion) across all instances.
    /// With SQLite the process is the only writer and its own locks suffice.
    pub async fn lock_repository(&self, repo: &RepoName) -> Result<RepositoryLock> {
        let repo = repo.as_str();
        let Some(pool) = &self.locks else { return Ok(RepositoryLock { _tx: None }) };
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(REPOSITORY_LOCK_SPACE)
            .bind(format!("{}{repo}", self.lock_prefix))
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
}

/// Applies the migrations not yet recorded in `schema_migrations`, each in
/// its own transaction. Returns whether the first one was applied now (the
/// database was empty).
pub(crate) async fn migrate(conn: &mut sqlx::AnyConnection, migrations: &[(i64, &str)]) -> Result<bool> {
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

/// A schema name Berth accepts: quoted in SQL, so it needs no other escaping.
pub fn valid_schema(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}
