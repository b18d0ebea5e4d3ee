//! Manifests: resolved by tag or digest, served byte for byte, pushed with their
//! references checked, deleted; the repository lock that tag changes take.

use berth_metadata::{BlobClaim, NewManifest, PutManifestOutcome};
use berth_storage::layout;
use berth_types::{Digest, ManifestInfo, Reference, RepoName, MAX_MANIFEST_SIZE};
use bytes::Bytes;

use crate::{ignore_missing, locks, Caller, Registry, RegistryError, Result};

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

impl Registry {
    pub(crate) async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<ManifestMeta> {
        let row = match reference {
            Reference::Tag(t) => self.inner.meta.resolve_tag(repo, t).await?,
            Reference::Digest(d) => self.inner.meta.get_manifest(repo, d).await?,
        };
        let row = row.ok_or(RegistryError::ManifestUnknown)?;
        Ok(ManifestMeta { digest: row.digest, media_type: row.media_type, size: row.size })
    }

    pub async fn stat_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<ManifestMeta> {
        self.resolve(repo, reference).await
    }

    pub async fn get_manifest(&self, caller: &Caller, repo: &RepoName, reference: &Reference) -> Result<Manifest> {
        let meta = self.resolve(repo, reference).await?;
        if let Reference::Tag(t) = reference {
            self.note_pull(repo, t);
        }
        caller.did("pull manifest", repo, reference);
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
        caller: &Caller,
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
        let blobs: Vec<&Digest> = info.required_blobs().map(|d| &d.digest).collect();
        let children: Vec<&Digest> = info.manifests.iter().map(|d| &d.digest).collect();
        let annotations = info.annotations.as_ref().and_then(|a| serde_json::to_string(a).ok());
        let record = NewManifest {
            repository: repo,
            digest: &digest,
            media_type: &info.media_type,
            size: content.len() as u64,
            artifact_type: info.artifact_type.as_deref(),
            subject: info.subject.as_ref().map(|s| &s.digest),
            annotations,
            blobs,
            children,
            tag,
            trust_references: false,
        };
        // Fail fast, before writing anything, when references are missing.
        self.check_references(repo, &record).await?;
        self.check_quota(repo, &digest, content.len() as u64).await?;

        let storage = &self.inner.storage;
        // The content is claimed like any blob, so collection cannot take it
        // between here and the metadata commit.
        if self.inner.meta.claim_blob(&digest, content.len() as u64).await? == BlobClaim::Write {
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
        caller.did("push manifest", repo, &digest);
        Ok(PutManifestResult { digest, subject: info.subject.map(|s| s.digest) })
    }

    /// Locks a repository's links and rows: within the process, then across
    /// the instances sharing the database.
    pub(crate) async fn lock_repository(
        &self,
        repo: &RepoName,
    ) -> Result<(locks::KeyGuard<RepoName>, berth_metadata::RepositoryLock)> {
        let local = self.inner.repo_locks.lock(repo.clone()).await;
        let shared = self.inner.meta.lock_repository(repo).await?;
        Ok((local, shared))
    }

    pub(crate) async fn check_references(&self, repo: &RepoName, m: &NewManifest<'_>) -> Result<()> {
        for b in &m.blobs {
            if self.inner.meta.repository_blob_size(repo, b).await?.is_none() {
                return Err(RegistryError::ManifestBlobUnknown((*b).clone()));
            }
        }
        for c in &m.children {
            if self.inner.meta.get_manifest(repo, c).await?.is_none() {
                return Err(RegistryError::ManifestBlobUnknown((*c).clone()));
            }
        }
        Ok(())
    }

    /// Deleting by digest removes the manifest and every tag pointing at it;
    /// deleting by tag removes only the tag.
    pub async fn delete_manifest(&self, caller: &Caller, repo: &RepoName, reference: &Reference) -> Result<()> {
        self.check_delete()?;
        let _tags = self.lock_repository(repo).await?;
        let storage = &self.inner.storage;
        match reference {
            Reference::Tag(t) => {
                if self.inner.meta.delete_tag(repo, t).await?.is_none() {
                    return Err(RegistryError::ManifestUnknown);
                }
                ignore_missing(storage.delete(&layout::tag_dir(repo, t)).await)?;
            }
            Reference::Digest(d) => {
                let Some(tags) = self.inner.meta.delete_manifest(repo, d).await? else {
                    return Err(RegistryError::ManifestUnknown);
                };
                for t in &tags {
                    ignore_missing(storage.delete(&layout::tag_dir(repo, t)).await)?;
                }
                ignore_missing(storage.delete(&layout::revision_link(repo, d)).await)?;
            }
        }
        caller.did("delete manifest", repo, reference);
        Ok(())
    }
}
