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

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Any, AnyPool, Transaction};

mod blobs;
mod cache;
mod db;
pub use db::valid_schema;
mod gc;
mod graph;
mod import;
mod jobs;
mod manifests;
mod meta;
mod pulls;
mod queue;
mod quotas;
mod repositories;
mod tags;
mod tx;
mod typed;
mod uploads;

pub use blobs::BlobClaim;
use cache::{Cache, Kind};
pub use gc::GcVictim;
pub use graph::{ManifestNode, RepositoryGraph, TagInfo};
pub use import::ImportedRepository;
pub use jobs::JobRow;
pub use manifests::{ManifestRow, NewManifest, PutManifestOutcome, ReferrerRow};
pub use queue::{Claimed, DeadItem, QueuePolicy, QueueStats, Retried};
pub use tx::WriteTx;
pub use uploads::UploadRow;

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
    /// PostgreSQL: the schema's name and a slash before a repository lock's
    /// name, so registries sharing a database do not share locks.
    lock_prefix: String,
}

/// A repository locked across every instance sharing the database, until
/// dropped (its transaction then rolls back, releasing the lock).
pub struct RepositoryLock {
    _tx: Option<Transaction<'static, Any>>,
}

/// Listings longer than this are not cached, but paged from the database.
const MAX_CACHED_LIST: i64 = 100_000;

#[cfg(test)]
mod tests;
