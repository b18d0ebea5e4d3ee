//! Use times moved by reads: tag pulls noted in memory and written in batches, and blob
//! reads that keep a blob from collection.

use std::collections::HashMap;
use std::time::Duration;

use berth_metadata::now_millis;
use berth_types::{Digest, RepoName, Tag};

use crate::{Registry, Result};

/// Tag pulls noted but not yet written, by repository then tag.
#[derive(Debug, Default)]
pub(crate) struct PendingPulls {
    by_repo: HashMap<RepoName, HashMap<Tag, i64>>,
    len: usize,
}

/// Pulls remembered between writes; more are dropped until the next write.
pub(crate) const MAX_PENDING_PULLS: usize = 100_000;

impl Registry {
    /// Remembers that a tag was pulled; written to the metadata in batches.
    /// A tag pulled again since the last write costs no allocation.
    pub fn note_pull(&self, repo: &RepoName, tag: &Tag) {
        let now = now_millis();
        let mut p = self.inner.pulls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = p.by_repo.get_mut(repo).and_then(|tags| tags.get_mut(tag)) {
            *at = now;
        } else if p.len < MAX_PENDING_PULLS {
            p.by_repo.entry(repo.clone()).or_default().insert(tag.clone(), now);
            p.len += 1;
        }
    }

    /// Writes the pulls noted since the last call.
    pub async fn flush_pulls(&self) -> Result<()> {
        let pulls: Vec<(RepoName, Tag, i64)> = {
            let mut p = self.inner.pulls.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *p)
                .by_repo
                .into_iter()
                .flat_map(|(r, tags)| tags.into_iter().map(move |(t, at)| (r.clone(), t, at)))
                .collect()
        };
        self.inner.meta.record_pulls(&pulls).await?;
        Ok(())
    }

    /// Moves a blob's use time when it is read, at most every few minutes
    /// per blob, so an old blob a client just checked is not collected before
    /// the client's manifest names it.
    pub(crate) async fn touch_on_read(&self, digest: &Digest) {
        // At most every few minutes, and well inside the grace period.
        let every = (self.inner.config.gc_grace / 4).min(Duration::from_secs(300));
        let due = {
            let mut t = self.inner.touched.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() > 100_000 {
                t.clear();
            }
            let now = std::time::Instant::now();
            match t.get(digest) {
                Some(at) if now.duration_since(*at) < every => false,
                _ => {
                    t.insert(digest.clone(), now);
                    true
                }
            }
        };
        if due {
            if let Err(e) = self.inner.meta.touch_blob(digest).await {
                tracing::warn!(error = %e, "could not record a blob read");
            }
        }
    }
}
