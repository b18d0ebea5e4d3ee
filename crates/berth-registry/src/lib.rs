//! The registry domain: upload sessions, blobs, manifests, tags, referrers,
//! catalog, and import of an existing distribution store. It knows storage
//! and metadata, never HTTP: bodies arrive as byte streams and results leave
//! as plain values or [`RegistryError`].
//!
//! Write order, so that a crash never exposes what is not durable: content
//! first (verified, atomically committed), then the distribution-layout links,
//! then the metadata row. What the metadata says exists is always in storage.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use berth_metadata::Metadata;
use berth_storage::StorageDriver;
use berth_types::{Digest, RepoName};
use bytes::Bytes;
use futures_util::Stream;
use uuid::Uuid;

mod blobs;
mod caller;
mod content_cache;
mod error;
pub mod gc;
pub mod import;
mod ingest;
pub mod jobs;
mod listing;
mod locks;
mod manifests;
pub mod progress;
mod pulls;
pub mod quota;
mod repositories;
pub mod retention;
mod uploads;

pub use blobs::BlobInfo;
pub use caller::Caller;
pub use listing::Page;
pub use manifests::{Manifest, ManifestMeta, PutManifestResult};
pub use uploads::{ChunkRange, UploadStatus};

pub use error::{RegistryError, Result};

/// A stream of bytes in or out of the registry: a request body, or a blob's content.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// The policy switches of a registry (distribution's `storage.delete.enabled`
/// and `storage.maintenance.readonly.enabled`).
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub delete_enabled: bool,
    pub read_only: bool,
    /// Byte limits per namespace.
    pub quotas: Vec<quota::Quota>,
    /// Garbage collection's grace period: reads of a blob move its use time
    /// often enough that a blob a client just checked outlives it.
    pub gc_grace: std::time::Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            delete_enabled: false,
            read_only: false,
            quotas: Vec::new(),
            gc_grace: std::time::Duration::from_secs(3600),
        }
    }
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<dyn StorageDriver>,
    meta: Metadata,
    config: RegistryConfig,
    // Serialise requests on one upload, and tag changes in one repository,
    // within this process.
    upload_locks: locks::KeyedLocks<Uuid>,
    repo_locks: locks::KeyedLocks<RepoName>,
    manifests: content_cache::ContentCache,
    quotas: Vec<quota::Quota>,
    // One collection or retention run at a time.
    gc_lock: tokio::sync::Mutex<()>,
    // Tag pulls not yet written, and when blobs were last touched by a read.
    pulls: Mutex<pulls::PendingPulls>,
    touched: Mutex<HashMap<Digest, std::time::Instant>>,
}

/// Entries listed by name in a report (the counts stay exact).
pub(crate) const REPORT_LIST: usize = 1000;

/// Memory kept for recently served manifests.
const MANIFEST_CACHE_BYTES: usize = 8 * 1024 * 1024;

impl Registry {
    pub fn new(storage: Arc<dyn StorageDriver>, meta: Metadata, config: RegistryConfig) -> Self {
        Registry {
            inner: Arc::new(Inner {
                storage,
                meta,
                upload_locks: locks::KeyedLocks::default(),
                repo_locks: locks::KeyedLocks::default(),
                manifests: content_cache::ContentCache::new(MANIFEST_CACHE_BYTES),
                quotas: config.quotas.clone(),
                gc_lock: tokio::sync::Mutex::new(()),
                pulls: Mutex::default(),
                touched: Mutex::default(),
                config,
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn storage(&self) -> &Arc<dyn StorageDriver> {
        &self.inner.storage
    }

    #[cfg(test)]
    pub(crate) fn metadata(&self) -> &Metadata {
        &self.inner.meta
    }

    /// A setting every instance on the database shares: the one stored, or
    /// `value` if none was (of instances racing, all get the first stored).
    pub async fn shared_setting(&self, key: &str, value: &str) -> Result<String> {
        Ok(self.inner.meta.meta_or_insert(key, value).await?)
    }

    /// Closes the database pools; call once, after the last request.
    pub async fn close(&self) {
        self.inner.meta.close().await;
    }

    fn check_writable(&self) -> Result<()> {
        if self.inner.config.read_only {
            return Err(RegistryError::ReadOnly);
        }
        Ok(())
    }

    fn check_delete(&self) -> Result<()> {
        self.check_writable()?;
        if !self.inner.config.delete_enabled {
            return Err(RegistryError::Unsupported("deletes are disabled (storage.delete.enabled)".into()));
        }
        Ok(())
    }
}

fn ignore_missing(r: berth_storage::Result<()>) -> Result<()> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
