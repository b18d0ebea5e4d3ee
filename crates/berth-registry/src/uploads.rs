//! Upload sessions: chunks appended as they come, the final digest checked, the blob
//! committed; monolithic pushes; purging of stale sessions; giving up on a full disk.

use berth_metadata::{BlobClaim, UploadRow};
use berth_storage::layout;
use berth_types::{Digest, RepoName, Sha256State};
use uuid::Uuid;

use crate::{ignore_missing, ingest, locks, BlobInfo, BodyStream, Caller, Registry, RegistryError, Result};

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

impl Registry {
    pub(crate) async fn lock_upload(&self, id: Uuid) -> locks::KeyGuard<Uuid> {
        self.inner.upload_locks.lock(id).await
    }

    pub(crate) async fn upload_row(&self, repo: &RepoName, id: &Uuid) -> Result<UploadRow> {
        match self.inner.meta.get_upload(id).await? {
            Some(row) if row.repository == *repo => Ok(row),
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
                id,
                repository: repo.clone(),
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
        Ok(UploadStatus { id: *id, size: row.size })
    }

    /// Checks a chunk's declared range against the upload's size and returns
    /// the number of bytes the body must hold, if known.
    pub(crate) fn chunk_limit(
        size: u64,
        range: Option<ChunkRange>,
        content_length: Option<u64>,
    ) -> Result<Option<u64>> {
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
        let size = row.size;
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
            .advance_upload(&row.id, row.size, new_size, &out.state.to_bytes(), out.storage_state.as_deref())
            .await?;
        if !advanced {
            return Err(RegistryError::RangeInvalid { size });
        }
        Ok(UploadStatus { id: *id, size: new_size })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn ingest_upload(
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
    // The final PUT's parts, each from its own header or query parameter.
    #[allow(clippy::too_many_arguments)]
    pub async fn complete_upload(
        &self,
        caller: &Caller,
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
        let mut size = row.size;
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
            self.inner.meta.advance_upload(&row.id, row.size, size, &state.to_bytes(), None).await?;
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
        caller.did("push blob", repo, digest);
        Ok(BlobInfo { size })
    }

    /// Moves verified upload data into the blob store (or drops it when the
    /// blob is already there) and links it into the repository. The claim in
    /// the metadata comes first: once a blob is claimed, garbage collection
    /// leaves it alone, and a blob it already took is simply written again.
    pub(crate) async fn commit_blob(
        &self,
        repo: &RepoName,
        upload: &berth_storage::StoragePath,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        match self.inner.meta.claim_blob(digest, size).await? {
            BlobClaim::Present => {
                self.write_layer_link(repo, digest).await?;
                if !self.inner.meta.link_existing(repo, digest).await? {
                    return Err(RegistryError::Internal("blob vanished while being linked".into()));
                }
            }
            BlobClaim::Write => {
                self.inner.storage.rename(upload, &layout::blob_data(digest)).await?;
                self.write_layer_link(repo, digest).await?;
                self.inner.meta.finish_blob(repo, digest).await?;
            }
        }
        Ok(())
    }

    /// Forgets an upload and deletes its data; `storage_state` is the driver's
    /// state of uncommitted data to release.
    pub(crate) async fn remove_upload(&self, repo: &RepoName, id: &Uuid, storage_state: Option<&str>) -> Result<()> {
        self.inner.meta.delete_upload(id).await?;
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
    pub(crate) async fn give_up_if_full(
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
        caller: &Caller,
        repo: &RepoName,
        digest: &Digest,
        content_length: Option<u64>,
        body: BodyStream,
    ) -> Result<BlobInfo> {
        let up = self.start_upload(repo).await?;
        let res = self.complete_upload(caller, repo, &up.id, digest, None, content_length, Some(body)).await;
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
                if dry_run {
                    tracing::info!(upload = %row.id, repository = %row.repository, "would purge stale upload");
                } else {
                    self.remove_upload(&row.repository, &row.id, row.storage_state.as_deref()).await?;
                }
                purged += 1;
            }
            if dry_run || n < 500 {
                break;
            }
        }
        Ok(purged)
    }
}
