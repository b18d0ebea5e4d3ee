//! A read cache in front of the database for the hot lookups (tag → manifest,
//! manifest and blob presence, tag lists, the catalog). It is only enabled
//! when this process is the database's only writer (embedded SQLite), so every
//! change passes through [`Cache::invalidate`]. On PostgreSQL other instances
//! write too, so it is disabled and every read goes to the database.
//!
//! Each repository has a generation, bumped by every write to it. A reader
//! notes the generation before querying and stores its result only if the
//! generation is unchanged, so a result read before a write can never be
//! stored after the write invalidated the entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ManifestRow;

/// Cached values across all repositories before everything is dropped.
const MAX_ENTRIES: usize = 200_000;

#[derive(Default)]
struct RepoEntry {
    generation: u64,
    tags: Option<Option<Arc<Vec<String>>>>,
    tag_rows: HashMap<String, Option<ManifestRow>>,
    manifests: HashMap<String, Option<ManifestRow>>,
    blobs: HashMap<String, Option<i64>>,
}

impl RepoEntry {
    fn clear(&mut self) -> usize {
        let n = self.tag_rows.len() + self.manifests.len() + self.blobs.len() + usize::from(self.tags.is_some());
        self.tags = None;
        self.tag_rows.clear();
        self.manifests.clear();
        self.blobs.clear();
        n
    }
}

#[derive(Default)]
struct Inner {
    repos: HashMap<String, RepoEntry>,
    catalog: Option<Arc<Vec<String>>>,
    catalog_generation: u64,
    entries: usize,
}

/// A generation token taken before a database read.
#[derive(Clone, Copy)]
pub(crate) struct Token(u64);

pub(crate) struct Cache {
    enabled: bool,
    inner: Mutex<Inner>,
}

/// Which per-repository map a lookup uses.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    TagRow,
    Manifest,
}

impl Cache {
    pub fn new(enabled: bool) -> Self {
        Cache { enabled, inner: Mutex::new(Inner::default()) }
    }

    /// False when other processes write the database too (PostgreSQL).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Entries are plain values replaced whole; a panic elsewhere cannot leave them half-written.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn token(&self, repo: &str) -> Token {
        if !self.enabled {
            return Token(0);
        }
        Token(self.lock().repos.get(repo).map_or(0, |e| e.generation))
    }

    pub fn catalog_token(&self) -> Token {
        Token(self.lock().catalog_generation)
    }

    /// Drops everything cached about `repo` (after a write committed).
    pub fn invalidate(&self, repo: &str) {
        if !self.enabled {
            return;
        }
        let mut g = self.lock();
        let e = g.repos.entry(repo.to_owned()).or_default();
        e.generation += 1;
        let n = e.clear();
        g.entries = g.entries.saturating_sub(n);
        g.catalog = None;
        g.catalog_generation += 1;
    }

    fn store(&self, repo: &str, token: Token, f: impl FnOnce(&mut RepoEntry) -> bool) {
        if !self.enabled {
            return;
        }
        let mut g = self.lock();
        if g.entries >= MAX_ENTRIES {
            let mut total = 0;
            for e in g.repos.values_mut() {
                total += e.clear();
            }
            g.entries = g.entries.saturating_sub(total);
        }
        let e = g.repos.entry(repo.to_owned()).or_default();
        if e.generation == token.0 && f(e) {
            g.entries += 1;
        }
    }

    pub fn row(&self, kind: Kind, repo: &str, key: &str) -> Option<Option<ManifestRow>> {
        if !self.enabled {
            return None;
        }
        let g = self.lock();
        let e = g.repos.get(repo)?;
        match kind {
            Kind::TagRow => e.tag_rows.get(key).cloned(),
            Kind::Manifest => e.manifests.get(key).cloned(),
        }
    }

    pub fn put_row(&self, kind: Kind, repo: &str, token: Token, key: &str, value: Option<ManifestRow>) {
        self.store(repo, token, |e| {
            let map = match kind {
                Kind::TagRow => &mut e.tag_rows,
                Kind::Manifest => &mut e.manifests,
            };
            map.insert(key.to_owned(), value).is_none()
        });
    }

    pub fn blob(&self, repo: &str, digest: &str) -> Option<Option<i64>> {
        if !self.enabled {
            return None;
        }
        self.lock().repos.get(repo)?.blobs.get(digest).copied()
    }

    pub fn put_blob(&self, repo: &str, token: Token, digest: &str, value: Option<i64>) {
        self.store(repo, token, |e| e.blobs.insert(digest.to_owned(), value).is_none());
    }

    pub fn tags(&self, repo: &str) -> Option<Option<Arc<Vec<String>>>> {
        if !self.enabled {
            return None;
        }
        self.lock().repos.get(repo)?.tags.clone()
    }

    pub fn put_tags(&self, repo: &str, token: Token, value: Option<Arc<Vec<String>>>) {
        self.store(repo, token, |e| e.tags.replace(value).is_none());
    }

    pub fn catalog(&self) -> Option<Arc<Vec<String>>> {
        if !self.enabled {
            return None;
        }
        self.lock().catalog.clone()
    }

    pub fn put_catalog(&self, token: Token, value: Arc<Vec<String>>) {
        if !self.enabled {
            return;
        }
        let mut g = self.lock();
        if g.catalog_generation == token.0 {
            g.catalog = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(d: &str) -> ManifestRow {
        ManifestRow { digest: berth_types::Digest::of_bytes(d.as_bytes()), media_type: "m".into(), size: 1 }
    }

    #[test]
    fn a_read_older_than_a_write_is_not_stored() {
        let c = Cache::new(true);
        let before = c.token("r");
        c.invalidate("r");
        c.put_row(Kind::TagRow, "r", before, "t", Some(row("old")));
        assert!(c.row(Kind::TagRow, "r", "t").is_none());
        let after = c.token("r");
        c.put_row(Kind::TagRow, "r", after, "t", Some(row("new")));
        assert_eq!(c.row(Kind::TagRow, "r", "t"), Some(Some(row("new"))));
        c.invalidate("r");
        assert!(c.row(Kind::TagRow, "r", "t").is_none());
    }

    #[test]
    fn disabled_cache_stores_nothing() {
        let c = Cache::new(false);
        let t = c.token("r");
        c.put_blob("r", t, "d", Some(1));
        assert!(c.blob("r", "d").is_none());
    }

    #[test]
    fn catalog_is_invalidated_by_any_repository_write() {
        let c = Cache::new(true);
        let t = c.catalog_token();
        c.put_catalog(t, Arc::new(vec!["a".into()]));
        assert!(c.catalog().is_some());
        c.invalidate("b");
        assert!(c.catalog().is_none());
        c.put_catalog(t, Arc::new(vec!["stale".into()]));
        assert!(c.catalog().is_none(), "a token from before the write is refused");
    }
}
