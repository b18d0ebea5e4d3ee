//! Listings: tags and the catalog in pages, referrers of a manifest.

use berth_types::{Descriptor, Digest, RepoName};

use crate::{Registry, RegistryError, Result};

/// One page of a listing, and whether more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

pub(crate) fn page(items: &mut Vec<String>, n: Option<u64>) -> Page {
    let more = n.is_some_and(|n| items.len() as u64 > n);
    if let Some(n) = n {
        items.truncate(n as usize);
    }
    Page { items: std::mem::take(items), more }
}

impl Registry {
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
