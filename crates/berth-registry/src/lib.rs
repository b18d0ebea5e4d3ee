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

use berth_metadata::{BlobClaim, Metadata, NewManifest, PutManifestOutcome, UploadRow};
use berth_storage::{layout, StorageDriver};
use berth_types::{Descriptor, Digest, ManifestInfo, Reference, RepoName, Sha256State, Tag, MAX_MANIFEST_SIZE};
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use uuid::Uuid;

mod content_cache;
mod error;
pub mod import;
mod ingest;
pub mod lifecycle;
mod locks;

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
    pub quotas: Vec<lifecycle::Quota>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: Uuid,
    /// Bytes received so far.
    pub size: u64,
}

/// A chunk's declared position: `Content-Range: start-end` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone)]
pub struct ManifestMeta {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub meta: ManifestMeta,
    pub content: Bytes,
}

#[derive(Debug, Clone)]
pub struct PutManifestResult {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// One page of a listing, and whether more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
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
    quotas: Vec<lifecycle::Quota>,
    // One collection or retention run at a time.
    gc_lock: tokio::sync::Mutex<()>,
    // Tag pulls not yet written, and when blobs were last touched by a read.
    pulls: Mutex<lifecycle::PendingPulls>,
    touched: Mutex<HashMap<Digest, std::time::Instant>>,
}

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

    pub fn storage(&self) -> &Arc<dyn StorageDriver> {
        &self.inner.storage
    }

    pub fn metadata(&self) -> &Metadata {
        &self.inner.meta
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
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

    // ---- blobs ----

    /// Size of a blob readable in `repo`.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<BlobInfo> {
        let size = self.inner.meta.repository_blob_size(repo.as_str(), digest.as_str()).await?;
        let info = size.map(|s| BlobInfo { size: s as u64 }).ok_or(RegistryError::BlobUnknown)?;
        self.touch_on_read(digest).await;
        Ok(info)
    }

    /// Where clients may fetch a blob from directly (a presigned object-store
    /// URL), when the storage offers that.
    pub fn blob_redirect_url(&self, digest: &Digest) -> Option<String> {
        self.inner.storage.redirect_url(&layout::blob_data(digest))
    }

    /// Streams a blob's bytes `[offset, offset+len)`; the caller has checked
    /// the range against [`Registry::stat_blob`].
    pub async fn read_blob(&self, digest: &Digest, offset: u64, len: u64) -> Result<BodyStream> {
        match self.inner.storage.reader(&layout::blob_data(digest), offset, Some(len)).await {
            Ok(s) => Ok(Box::pin(s.map_err(|e| {
                tracing::error!(error = %e, "blob read failed mid-stream");
                io::Error::other(e)
            }))),
            Err(e) if e.is_not_found() => {
                tracing::error!(%digest, "blob recorded in metadata is missing from storage");
                Err(RegistryError::BlobUnknown)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.check_delete()?;
        if !self.inner.meta.unlink_blob(repo.as_str(), digest.as_str()).await? {
            return Err(RegistryError::BlobUnknown);
        }
        ignore_missing(self.inner.storage.delete(&layout::layer_link(repo, digest)).await)?;
        Ok(())
    }

    /// Links a blob readable in `from` into `repo`. None when `from` lacks it.
    pub async fn mount_blob(&self, repo: &RepoName, from: &RepoName, digest: &Digest) -> Result<Option<BlobInfo>> {
        self.check_writable()?;
        let Some(size) = self.inner.meta.repository_blob_size(from.as_str(), digest.as_str()).await? else {
            return Ok(None);
        };
        self.check_quota(repo, digest, size as u64).await?;
        // Linking also moves the blob's use time, so collection leaves it be;
        // if collection took it just now, there is nothing to mount.
        if !self.inner.meta.link_existing(repo.as_str(), digest.as_str()).await? {
            return Ok(None);
        }
        self.write_layer_link(repo, digest).await?;
        Ok(Some(BlobInfo { size: size as u64 }))
    }

    /// Repositories (at most `limit`) holding a blob as a layer: where an
    /// automatic mount may take it from, once the caller's rights allow.
    pub async fn blob_sources(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let names = self.inner.meta.repositories_with_blob(digest.as_str(), limit).await?;
        Ok(names.iter().filter_map(|n| RepoName::parse(n).ok()).collect())
    }

    async fn write_layer_link(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.inner.storage.put_content(&layout::layer_link(repo, digest), layout::link_content(digest)).await?;
        Ok(())
    }

    // ---- uploads ----

    async fn lock_upload(&self, id: Uuid) -> locks::KeyGuard<Uuid> {
        self.inner.upload_locks.lock(id).await
    }

    async fn upload_row(&self, repo: &RepoName, id: &Uuid) -> Result<UploadRow> {
        match self.inner.meta.get_upload(&id.to_string()).await? {
            Some(row) if row.repository == repo.as_str() => Ok(row),
            _ => Err(RegistryError::BlobUploadUnknown),
        }
    }

    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadStatus> {
        self.check_writable()?;
        let id = Uuid::new_v4();
        let now = berth_metadata::now_millis();
        self.inner
            .meta
            .create_upload(&UploadRow {
                id: id.to_string(),
                repository: repo.as_str().to_owned(),
                size: 0,
                hash_state: Sha256State::new().to_bytes(),
                storage_state: None,
                started_at: now,
                updated_at: now,
            })
            .await?;
        Ok(UploadStatus { id, size: 0 })
    }

    pub async fn upload_status(&self, repo: &RepoName, id: &Uuid) -> Result<UploadStatus> {
        let row = self.upload_row(repo, id).await?;
        Ok(UploadStatus { id: *id, size: row.size as u64 })
    }

    /// Checks a chunk's declared range against the upload's size and returns
    /// the number of bytes the body must hold, if known.
    fn chunk_limit(size: u64, range: Option<ChunkRange>, content_length: Option<u64>) -> Result<Option<u64>> {
        let from_range = match range {
            Some(r) if r.start != size || r.end < r.start => return Err(RegistryError::RangeInvalid { size }),
            Some(r) => Some(r.end - r.start + 1),
            None => None,
        };
        match (from_range, content_length) {
            (Some(a), Some(b)) if a != b => {
                Err(RegistryError::SizeInvalid(format!("Content-Range covers {a} bytes, Content-Length says {b}")))
            }
            (a, b) => Ok(a.or(b)),
        }
    }

    /// Appends a chunk. The upload advances only when the whole chunk is
    /// durably stored; a failed chunk can be retried from the same offset.
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        id: &Uuid,
        range: Option<ChunkRange>,
        content_length: Option<u64>,
        body: BodyStream,
    ) -> Result<UploadStatus> {
        self.check_writable()?;
        let _lock = self.lock_upload(*id).await;
        let row = self.upload_row(repo, id).await?;
        let size = row.size as u64;
        let limit = Self::chunk_limit(size, range, content_length)?;
        // Refused before a byte is read when the upload would go over quota.
        if let Some(l) = limit {
            self.check_quota_bytes(repo, size.saturating_add(l)).await?;
        }
        let state = Sha256State::from_bytes(&row.hash_state)
            .map_err(|_| RegistryError::BlobUploadInvalid("corrupt upload state".into()))?;
        // A chunk need not reach the disk: only the committed blob must. After
        // a power loss a chunk may be gone, and the client restarts the upload.
        let out =
            match self.ingest_upload(repo, id, size, state, row.storage_state.as_deref(), body, limit, false).await {
                Ok(out) => out,
                Err(e) => return Err(self.give_up_if_full(repo, id, row.storage_state.as_deref(), e).await),
            };
        let new_size = size + out.written;
        let advanced = self
            .inner
            .meta
            .advance_upload(&row.id, row.size, new_size as i64, &out.state.to_bytes(), out.storage_state.as_deref())
            .await?;
        if !advanced {
            return Err(RegistryError::RangeInvalid { size });
        }
        Ok(UploadStatus { id: *id, size: new_size })
    }

    #[allow(clippy::too_many_arguments)]
    async fn ingest_upload(
        &self,
        repo: &RepoName,
        id: &Uuid,
        offset: u64,
        state: Sha256State,
        storage_state: Option<&str>,
        body: BodyStream,
        limit: Option<u64>,
        durable: bool,
    ) -> Result<ingest::Ingested> {
        let path = layout::upload_data(repo, id);
        let out =
            ingest::ingest(self.inner.storage.as_ref(), &path, offset, state, storage_state, body, limit, durable)
                .await
                .map_err(|e| match e {
                    RegistryError::Storage(berth_storage::StorageError::InvalidOffset { .. })
                    | RegistryError::Storage(berth_storage::StorageError::NotFound(_)) => {
                        RegistryError::BlobUploadInvalid("upload data is missing or shorter than recorded".into())
                    }
                    other => other,
                })?;
        if let Some(l) = limit {
            if out.written != l {
                return Err(RegistryError::SizeInvalid(format!("expected {l} bytes, got {}", out.written)));
            }
        }
        Ok(out)
    }

    /// Finishes an upload with an optional last chunk, verifies the digest and
    /// commits the blob. A digest mismatch cancels the upload.
    pub async fn complete_upload(
        &self,
        repo: &RepoName,
        id: &Uuid,
        digest: &Digest,
        range: Option<ChunkRange>,
        content_length: Option<u64>,
        body: Option<BodyStream>,
    ) -> Result<BlobInfo> {
        self.check_writable()?;
        let _lock = self.lock_upload(*id).await;
        let row = self.upload_row(repo, id).await?;
        let mut size = row.size as u64;
        let mut state = Sha256State::from_bytes(&row.hash_state)
            .map_err(|_| RegistryError::BlobUploadInvalid("corrupt upload state".into()))?;
        let has_body = content_length != Some(0) && body.is_some();
        let path = layout::upload_data(repo, id);
        match body {
            Some(body) if has_body => {
                let limit = Self::chunk_limit(size, range, content_length)?;
                if let Some(l) = limit {
                    self.check_quota(repo, digest, size.saturating_add(l)).await?;
                }
                let out = match self
                    .ingest_upload(repo, id, size, state, row.storage_state.as_deref(), body, limit, true)
                    .await
                {
                    Ok(out) => out,
                    Err(e) => return Err(self.give_up_if_full(repo, id, row.storage_state.as_deref(), e).await),
                };
                size += out.written;
                state = out.state;
            }
            _ => {
                // Drops bytes a failed chunk may have left past the recorded
                // size, creates the file of an empty upload, and puts the
                // earlier chunks on disk before the blob is committed.
                let w = self.inner.storage.writer(&path, size, row.storage_state.as_deref()).await.map_err(
                    |e| match e {
                        berth_storage::StorageError::InvalidOffset { .. }
                        | berth_storage::StorageError::NotFound(_) => {
                            RegistryError::BlobUploadInvalid("upload data is missing or shorter than recorded".into())
                        }
                        other => other.into(),
                    },
                )?;
                w.commit().await?;
            }
        }
        // The data is committed whole at `path` now: nothing else to release,
        // and the row must say so, or a retry after a failure below would
        // continue the driver state the commit consumed.
        if row.storage_state.is_some() {
            self.inner.meta.advance_upload(&row.id, row.size, size as i64, &state.to_bytes(), None).await?;
        }
        let actual = state.finish();
        if actual != *digest {
            self.remove_upload(repo, id, None).await?;
            return Err(RegistryError::DigestInvalid(format!("expected {digest}, content is {actual}")));
        }
        if let Err(e) = self.check_quota(repo, digest, size).await {
            self.remove_upload(repo, id, None).await?;
            return Err(e);
        }
        self.commit_blob(repo, &path, digest, size).await?;
        self.remove_upload(repo, id, None).await?;
        Ok(BlobInfo { size })
    }

    /// Moves verified upload data into the blob store (or drops it when the
    /// blob is already there) and links it into the repository. The claim in
    /// the metadata comes first: once a blob is claimed, garbage collection
    /// leaves it alone, and a blob it already took is simply written again.
    async fn commit_blob(
        &self,
        repo: &RepoName,
        upload: &berth_storage::StoragePath,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        match self.inner.meta.claim_blob(digest.as_str(), size as i64).await? {
            BlobClaim::Present => {
                self.write_layer_link(repo, digest).await?;
                if !self.inner.meta.link_existing(repo.as_str(), digest.as_str()).await? {
                    return Err(RegistryError::Internal("blob vanished while being linked".into()));
                }
            }
            BlobClaim::Write => {
                self.inner.storage.rename(upload, &layout::blob_data(digest)).await?;
                self.write_layer_link(repo, digest).await?;
                self.inner.meta.finish_blob(repo.as_str(), digest.as_str()).await?;
            }
        }
        Ok(())
    }

    /// Forgets an upload and deletes its data; `storage_state` is the driver's
    /// state of uncommitted data to release.
    async fn remove_upload(&self, repo: &RepoName, id: &Uuid, storage_state: Option<&str>) -> Result<()> {
        self.inner.meta.delete_upload(&id.to_string()).await?;
        if let Some(st) = storage_state {
            if let Err(e) = self.inner.storage.abandon(&layout::upload_data(repo, id), st).await {
                tracing::warn!(upload = %id, error = %e, "could not release the storage of an upload");
            }
        }
        ignore_missing(self.inner.storage.delete(&layout::upload_dir(repo, id)).await)?;
        Ok(())
    }

    /// An upload that ran out of space is given up at once, so its data does
    /// not keep the disk full; other failures leave it to be retried.
    async fn give_up_if_full(
        &self,
        repo: &RepoName,
        id: &Uuid,
        storage_state: Option<&str>,
        e: RegistryError,
    ) -> RegistryError {
        if e.is_storage_full() {
            tracing::warn!(upload = %id, repository = %repo, error = %e, "upload given up: no space left");
            if let Err(r) = self.remove_upload(repo, id, storage_state).await {
                tracing::warn!(upload = %id, error = %r, "could not remove the upload's data");
            }
        }
        e
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &Uuid) -> Result<()> {
        self.check_writable()?;
        let _lock = self.lock_upload(*id).await;
        let row = self.upload_row(repo, id).await?;
        self.remove_upload(repo, id, row.storage_state.as_deref()).await
    }

    /// A whole blob in one request (`POST ...?digest=`).
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        content_length: Option<u64>,
        body: BodyStream,
    ) -> Result<BlobInfo> {
        let up = self.start_upload(repo).await?;
        let res = self.complete_upload(repo, &up.id, digest, None, content_length, Some(body)).await;
        if res.is_err() {
            // Best effort: the purge job removes what this misses.
            let _ = self.remove_upload(repo, &up.id, None).await;
        }
        res
    }

    /// Removes uploads untouched since `before_millis`. Returns how many.
    pub async fn purge_uploads(&self, before_millis: i64, dry_run: bool) -> Result<usize> {
        let mut purged = 0;
        loop {
            let stale = self.inner.meta.stale_uploads(before_millis, 500).await?;
            if stale.is_empty() {
                break;
            }
            let n = stale.len();
            for row in stale {
                let (Ok(repo), Ok(id)) = (RepoName::parse(&row.repository), Uuid::parse_str(&row.id)) else {
                    self.inner.meta.delete_upload(&row.id).await?;
                    continue;
                };
                if dry_run {
                    tracing::info!(upload = %id, repository = %repo, "would purge stale upload");
                } else {
                    self.remove_upload(&repo, &id, row.storage_state.as_deref()).await?;
                }
                purged += 1;
            }
            if dry_run || n < 500 {
                break;
            }
        }
        Ok(purged)
    }

    // ---- manifests ----

    async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<ManifestMeta> {
        let row = match reference {
            Reference::Tag(t) => self.inner.meta.resolve_tag(repo.as_str(), t.as_str()).await?,
            Reference::Digest(d) => self.inner.meta.get_manifest(repo.as_str(), d.as_str()).await?,
        };
        let row = row.ok_or(RegistryError::ManifestUnknown)?;
        let digest = Digest::parse(&row.digest).map_err(|e| RegistryError::Internal(format!("stored digest: {e}")))?;
        Ok(ManifestMeta { digest, media_type: row.media_type, size: row.size as u64 })
    }

    pub async fn stat_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<ManifestMeta> {
        self.resolve(repo, reference).await
    }

    pub async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Manifest> {
        let meta = self.resolve(repo, reference).await?;
        if let Reference::Tag(t) = reference {
            self.note_pull(repo, t);
        }
        if let Some(content) = self.inner.manifests.get(&meta.digest) {
            return Ok(Manifest { meta, content });
        }
        let content = match self.inner.storage.get_content(&layout::blob_data(&meta.digest)).await {
            Ok(c) if Digest::of_bytes(&c) == meta.digest => {
                self.inner.manifests.put(&meta.digest, &c);
                c
            }
            Ok(_) => {
                tracing::error!(digest = %meta.digest, "stored manifest does not match its digest");
                return Err(RegistryError::Internal("stored manifest is corrupt".into()));
            }
            Err(e) if e.is_not_found() => {
                tracing::error!(digest = %meta.digest, "manifest recorded in metadata is missing from storage");
                return Err(RegistryError::ManifestUnknown);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Manifest { meta, content })
    }

    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        content: Bytes,
    ) -> Result<PutManifestResult> {
        self.check_writable()?;
        if content.len() > MAX_MANIFEST_SIZE {
            return Err(RegistryError::ManifestTooLarge);
        }
        let info = ManifestInfo::parse(content_type, &content).map_err(|e| RegistryError::ManifestInvalid(e.0))?;
        let digest = Digest::of_bytes(&content);
        if let Reference::Digest(d) = reference {
            if *d != digest {
                return Err(RegistryError::DigestInvalid(format!("manifest digest is {digest}, not {d}")));
            }
        }
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        let blobs: Vec<&str> = info.required_blobs().map(|d| d.digest.as_str()).collect();
        let children: Vec<&str> = info.manifests.iter().map(|d| d.digest.as_str()).collect();
        let annotations = info.annotations.as_ref().and_then(|a| serde_json::to_string(a).ok());
        let record = NewManifest {
            repository: repo.as_str(),
            digest: digest.as_str(),
            media_type: &info.media_type,
            size: content.len() as i64,
            artifact_type: info.artifact_type.as_deref(),
            subject: info.subject.as_ref().map(|s| s.digest.as_str()),
            annotations,
            blobs,
            children,
            tag: tag.map(Tag::as_str),
            trust_references: false,
        };
        // Fail fast, before writing anything, when references are missing.
        self.check_references(repo, &record).await?;
        self.check_quota(repo, &digest, content.len() as u64).await?;

        let storage = &self.inner.storage;
        // The content is claimed like any blob, so collection cannot take it
        // between here and the metadata commit.
        if self.inner.meta.claim_blob(digest.as_str(), content.len() as i64).await? == BlobClaim::Write {
            storage.put_content(&layout::blob_data(&digest), content.clone()).await?;
        }
        // Links and rows of a repository change together, under its lock:
        // concurrent pushes of one tag, and collection of untagged manifests,
        // must leave storage and metadata naming the same manifests.
        let _lock = self.lock_repository(repo).await?;
        storage.put_content(&layout::revision_link(repo, &digest), layout::link_content(&digest)).await?;
        if let Some(t) = tag {
            storage.put_content(&layout::tag_index_link(repo, t, &digest), layout::link_content(&digest)).await?;
            storage.put_content(&layout::tag_current_link(repo, t), layout::link_content(&digest)).await?;
        }
        match self.inner.meta.put_manifest(&record).await? {
            PutManifestOutcome::Stored => {}
            // A concurrent delete removed a reference after the check above.
            PutManifestOutcome::MissingBlob(d) | PutManifestOutcome::MissingManifest(d) => {
                return Err(RegistryError::ManifestBlobUnknown(d));
            }
        }
        Ok(PutManifestResult { digest, subject: info.subject.map(|s| s.digest) })
    }

    /// Locks a repository's links and rows: within the process, then across
    /// the instances sharing the database.
    pub(crate) async fn lock_repository(
        &self,
        repo: &RepoName,
    ) -> Result<(locks::KeyGuard<RepoName>, berth_metadata::RepositoryLock)> {
        let local = self.inner.repo_locks.lock(repo.clone()).await;
        let shared = self.inner.meta.lock_repository(repo.as_str()).await?;
        Ok((local, shared))
    }

    async fn check_references(&self, repo: &RepoName, m: &NewManifest<'_>) -> Result<()> {
        for b in &m.blobs {
            if self.inner.meta.repository_blob_size(repo.as_str(), b).await?.is_none() {
                return Err(RegistryError::ManifestBlobUnknown((*b).to_owned()));
            }
        }
        for c in &m.children {
            if self.inner.meta.get_manifest(repo.as_str(), c).await?.is_none() {
                return Err(RegistryError::ManifestBlobUnknown((*c).to_owned()));
            }
        }
        Ok(())
    }

    /// Deleting by digest removes the manifest and every tag pointing at it;
    /// deleting by tag removes only the tag.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        self.check_delete()?;
        let _tags = self.lock_repository(repo).await?;
        let storage = &self.inner.storage;
        match reference {
            Reference::Tag(t) => {
                if self.inner.meta.delete_tag(repo.as_str(), t.as_str()).await?.is_none() {
                    return Err(RegistryError::ManifestUnknown);
                }
                ignore_missing(storage.delete(&layout::tag_dir(repo, t)).await)?;
            }
            Reference::Digest(d) => {
                let Some(tags) = self.inner.meta.delete_manifest(repo.as_str(), d.as_str()).await? else {
                    return Err(RegistryError::ManifestUnknown);
                };
                for t in tags.iter().filter_map(|t| Tag::parse(t).ok()) {
                    ignore_missing(storage.delete(&layout::tag_dir(repo, &t)).await)?;
                }
                ignore_missing(storage.delete(&layout::revision_link(repo, d)).await)?;
            }
        }
        Ok(())
    }

    // ---- listings ----

    /// Tags in lexical order after `last`; `n` None means all.
    pub async fn list_tags(&self, repo: &RepoName, n: Option<u64>, last: Option<&str>) -> Result<Page> {
        let limit = n.map(|n| n.min(i64::MAX as u64 - 1) as i64 + 1).unwrap_or(i64::MAX);
        let mut items =
            self.inner.meta.list_tags(repo.as_str(), last, limit).await?.ok_or(RegistryError::NameUnknown)?;
        Ok(page(&mut items, n))
    }

    pub async fn catalog(&self, n: u64, last: Option<&str>) -> Result<Page> {
        let mut items = self.inner.meta.list_repositories(last, n as i64 + 1).await?;
        Ok(page(&mut items, Some(n)))
    }

    /// Manifests whose subject is `subject`, as descriptors for a referrers index.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let rows = self.inner.meta.referrers(repo.as_str(), subject.as_str(), artifact_type).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let Ok(digest) = Digest::parse(&r.digest) else { continue };
            out.push(Descriptor {
                media_type: r.media_type,
                digest,
                size: r.size,
                urls: None,
                annotations: r.annotations.as_deref().and_then(|a| serde_json::from_str(a).ok()),
                artifact_type: r.artifact_type,
                platform: None,
            });
        }
        Ok(out)
    }
}

fn page(items: &mut Vec<String>, n: Option<u64>) -> Page {
    let more = n.is_some_and(|n| items.len() as u64 > n);
    if let Some(n) = n {
        items.truncate(n as usize);
    }
    Page { items: std::mem::take(items), more }
}

fn ignore_missing(r: berth_storage::Result<()>) -> Result<()> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
