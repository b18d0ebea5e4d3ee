//! Quotas: the bytes a namespace may hold, distinct blobs counted once.

use berth_types::{Digest, RepoName};
use serde::{Deserialize, Serialize};

use crate::{Registry, RegistryError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The repositories it covers: this name and everything below it.
    pub namespace: RepoName,
    pub limit: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuotaUsage {
    pub namespace: RepoName,
    pub limit: u64,
    pub used: u64,
}

impl Registry {
    /// The quota covering `repo`: the one with the longest namespace.
    pub fn quota_for(&self, repo: &RepoName) -> Option<&Quota> {
        self.inner.quotas.iter().filter(|q| q.namespace.contains(repo)).max_by_key(|q| q.namespace.as_str().len())
    }

    /// Refuses a new blob of `size` bytes for `repo` if it would take its
    /// namespace over quota. Blobs the namespace already holds are free.
    pub(crate) async fn check_quota(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let Some(q) = self.quota_for(repo) else { return Ok(()) };
        if self.inner.meta.namespace_has_blob(&q.namespace, digest).await? {
            return Ok(());
        }
        self.check_quota_bytes(repo, size).await
    }

    /// Refuses an upload of `size` bytes (its declared or running size, digest
    /// not yet known) that would take `repo`'s namespace over quota.
    pub(crate) async fn check_quota_bytes(&self, repo: &RepoName, size: u64) -> Result<()> {
        let Some(q) = self.quota_for(repo) else { return Ok(()) };
        let used = self.inner.meta.namespace_usage(&q.namespace).await?;
        if used.saturating_add(size) > q.limit {
            return Err(RegistryError::QuotaExceeded(format!(
                "namespace {} would use {} of its {} bytes",
                q.namespace,
                used.saturating_add(size),
                q.limit
            )));
        }
        Ok(())
    }

    pub async fn quota_usage(&self) -> Result<Vec<QuotaUsage>> {
        let mut out = Vec::new();
        for q in &self.inner.quotas {
            let used = self.inner.meta.namespace_usage(&q.namespace).await?;
            out.push(QuotaUsage { namespace: q.namespace.clone(), limit: q.limit, used });
        }
        Ok(out)
    }
}
