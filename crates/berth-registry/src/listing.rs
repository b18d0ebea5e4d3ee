//! Listings: tags and the catalog in pages, referrers of a manifest.

use berth_types::{Descriptor, Digest, RepoName, Tag};

use crate::{Registry, RegistryError, Result};

/// One page of a listing, and whether more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

/// `items` read with one more than `n` asked for: the extra one says more follow.
fn page<T>(mut items: Vec<T>, n: Option<u64>) -> Page<T> {
    let more = n.is_some_and(|n| items.len() as u64 > n);
    if let Some(n) = n {
        items.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    }
    Page { items, more }
}

impl Registry {
    /// Tags in lexical order after `last`; `n` None means all.
    pub async fn list_tags(&self, repo: &RepoName, n: Option<u64>, last: Option<&str>) -> Result<Page<Tag>> {
        let limit = n.map_or(i64::MAX, limit_after);
        let items = self.inner.meta.list_tags(repo, last, limit).await?.ok_or(RegistryError::NameUnknown)?;
        Ok(page(items, n))
    }

    pub async fn catalog(&self, n: u64, last: Option<&str>) -> Result<Page<RepoName>> {
        let items = self.inner.meta.list_repositories(last, limit_after(n)).await?;
        Ok(page(items, Some(n)))
    }

    /// Manifests whose subject is `subject`, as descriptors for a referrers index.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let rows = self.inner.meta.referrers(repo, subject, artifact_type).await?;
        Ok(rows
            .into_iter()
            .map(|r| Descriptor {
                media_type: r.media_type,
                digest: r.digest,
                size: i64::try_from(r.size).unwrap_or(i64::MAX),
                urls: None,
                annotations: r.annotations.as_deref().and_then(|a| serde_json::from_str(a).ok()),
                artifact_type: r.artifact_type,
                platform: None,
            })
            .collect())
    }
}

/// The row limit that reads a page of `n` and one more, saturating.
fn limit_after(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX).saturating_add(1)
}
