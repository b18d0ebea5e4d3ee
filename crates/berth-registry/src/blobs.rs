//! Blobs of a repository: size, reads (or a redirect to the store), deletion, mounts.

use std::io;

use berth_storage::layout;
use berth_types::{Digest, RepoName};
use futures_util::TryStreamExt;

use crate::{ignore_missing, BodyStream, Caller, Registry, RegistryError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
}

impl Registry {
    /// Size of a blob readable in `repo`.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<BlobInfo> {
        let size = self.inner.meta.repository_blob_size(repo, digest).await?;
        let info = size.map(|size| BlobInfo { size }).ok_or(RegistryError::BlobUnknown)?;
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

    pub async fn delete_blob(&self, caller: &Caller, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.check_delete()?;
        if !self.inner.meta.unlink_blob(repo, digest).await? {
            return Err(RegistryError::BlobUnknown);
        }
        ignore_missing(self.inner.storage.delete(&layout::layer_link(repo, digest)).await)?;
        caller.did("delete blob", repo, digest);
        Ok(())
    }

    /// Links a blob readable in `from` into `repo`. None when `from` lacks it.
    pub async fn mount_blob(
        &self,
        caller: &Caller,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobInfo>> {
        self.check_writable()?;
        let Some(size) = self.inner.meta.repository_blob_size(from, digest).await? else {
            return Ok(None);
        };
        self.check_quota(repo, digest, size).await?;
        // Linking also moves the blob's use time, so collection leaves it be;
        // if collection took it just now, there is nothing to mount.
        if !self.inner.meta.link_existing(repo, digest).await? {
            return Ok(None);
        }
        self.write_layer_link(repo, digest).await?;
        caller.did("mount blob", repo, digest);
        Ok(Some(BlobInfo { size }))
    }

    /// Repositories (at most `limit`) holding a blob as a layer: where an
    /// automatic mount may take it from, once the caller's rights allow.
    pub async fn blob_sources(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>> {
        Ok(self.inner.meta.repositories_with_blob(digest, limit).await?)
    }

    pub(crate) async fn write_layer_link(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.inner.storage.put_content(&layout::layer_link(repo, digest), layout::link_content(digest)).await?;
        Ok(())
    }
}
