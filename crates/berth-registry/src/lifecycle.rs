//! Lifecycle: online garbage collection, retention policies, quotas,
//! repository deletion. Collection never needs the registry read-only:
//! a blob is taken only when nothing references it and it has been idle past
//! the grace period, in a metadata transaction no commit can interleave with
//! (see `Metadata::sweep_blobs`); untagged manifests are taken under their
//! repository's lock, which pushes also hold.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use berth_metadata::{now_millis, ManifestNode, RepositoryGraph, TagInfo};
use berth_storage::layout;
use berth_types::duration::millis_before;
use berth_types::pattern::{glob, RepoPattern};
use berth_types::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};

use crate::{Registry, RegistryError, Result};

/// Blobs examined per collection transaction.
const SWEEP_BATCH: i64 = 512;
/// Entries listed by name in a report (the counts stay exact).
const REPORT_LIST: usize = 1000;

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Blobs and untagged manifests younger than this are left alone.
    pub grace: Duration,
    pub delete_untagged: bool,
    /// With `delete_untagged`, also take manifests whose subject is kept.
    pub delete_referrers: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    pub manifests_deleted: usize,
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
    /// Up to 1000 of the deleted manifests (`repo@digest`) and blobs.
    pub manifests: Vec<String>,
    pub blobs: Vec<String>,
    /// Unreferenced blobs, and untagged manifests (with `delete_untagged`),
    /// left alone because they are younger than the grace period.
    #[serde(default)]
    pub held_back_blobs: u64,
    #[serde(default)]
    pub held_back_manifests: u64,
}

/// Tag pulls noted but not yet written, by repository then tag.
#[derive(Debug, Default)]
pub(crate) struct PendingPulls {
    by_repo: HashMap<String, HashMap<String, i64>>,
    len: usize,
}

/// Pulls remembered between writes; more are dropped until the next write.
const MAX_PENDING_PULLS: usize = 100_000;

/// Receives progress of a long lifecycle run.
pub trait Progress: Send + Sync {
    fn phase(&self, _name: &str) {}
    fn advance(&self, _items: usize) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    pub repositories: Vec<RepoPattern>,
    /// Keep the newest N tags by push time.
    pub keep_last: Option<usize>,
    /// Tags matching these globs are always kept.
    pub keep_tags: Vec<String>,
    /// Tags neither pushed nor pulled for this long go (beyond the kept ones);
    /// without it, every tag beyond the kept ones goes.
    pub older_than: Option<Duration>,
    /// Also delete manifests left without tags (after the grace period).
    pub delete_untagged: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetentionReport {
    pub dry_run: bool,
    /// `repo:tag` removed (or that would be).
    pub tags: Vec<String>,
    /// `repo@digest` removed (or that would be).
    pub manifests: Vec<String>,
    /// `repo:tag (why)` of the tags a policy looked at and kept.
    #[serde(default)]
    pub kept: Vec<String>,
    /// Untagged manifests left alone because they are younger than the grace period.
    #[serde(default)]
    pub held_back_manifests: u64,
}

/// Why retention keeps a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// It matches one of `keeptags`, whatever its age (and it does not count toward `keeplast`).
    Pattern,
    /// One of the newest `keeplast` of the tags no pattern keeps.
    Newest,
    /// Pushed or pulled within `olderthan`.
    Recent,
}

impl RetentionPolicy {
    /// What the policy does with each tag, newest push first: kept (and
    /// why) or deleted. `keeptags` matches are kept and do not use up one
    /// of the `keeplast` places; of the rest the newest `keeplast` stay;
    /// with `olderthan`, tags used since then stay too.
    fn decide<'t>(&self, tags: &'t [TagInfo], now: i64) -> Vec<(&'t TagInfo, Option<Keep>)> {
        let mut sorted: Vec<&TagInfo> = tags.iter().collect();
        sorted.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then_with(|| a.name.cmp(&b.name)));
        let mut newest = 0;
        sorted
            .into_iter()
            .map(|t| {
                let keep = if self.keep_tags.iter().any(|p| glob(p, &t.name)) {
                    Some(Keep::Pattern)
                } else if newest < self.keep_last.unwrap_or(0) {
                    newest += 1;
                    Some(Keep::Newest)
                } else {
                    match self.older_than {
                        Some(age) if t.pushed_at.max(t.pulled_at) >= millis_before(now, age) => Some(Keep::Recent),
                        _ => None,
                    }
                };
                (t, keep)
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The repositories it covers: this name and everything below it.
    pub namespace: String,
    pub limit: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuotaUsage {
    pub namespace: String,
    pub limit: u64,
    pub used: u64,
}

/// Manifests of a repository that must stay: the tagged ones, their index
/// children (at any depth), and, unless `drop_referrers`, every manifest
/// whose subject stays.
fn kept_manifests(g: &RepositoryGraph, tagged: &HashSet<String>, drop_referrers: bool) -> HashSet<String> {
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for (p, c) in &g.children {
        children.entry(p.as_str()).or_default().push(c.as_str());
    }
    let mut referrers: HashMap<&str, Vec<&str>> = HashMap::new();
    for m in &g.manifests {
        if let Some(s) = &m.subject {
            referrers.entry(s.as_str()).or_default().push(m.digest.as_str());
        }
    }
    let mut kept: HashSet<String> = HashSet::new();
    let mut todo: Vec<String> = tagged.iter().cloned().collect();
    while let Some(d) = todo.pop() {
        if !kept.insert(d.clone()) {
            continue;
        }
        todo.extend(children.get(d.as_str()).into_iter().flatten().map(|c| c.to_string()));
        if !drop_referrers {
            todo.extend(referrers.get(d.as_str()).into_iter().flatten().map(|c| c.to_string()));
        }
    }
    kept
}

impl Registry {
    /// Runs one garbage collection. Only one runs at a time in a process.
    pub async fn collect_garbage(&self, opts: &GcOptions, progress: &dyn Progress) -> Result<GcReport> {
        // Deleting manifests is a delete like any other: it needs deletes
        // enabled and a writable registry. Unreferenced blobs need neither,
        // as with distribution's garbage-collect.
        if opts.delete_untagged && !opts.dry_run {
            self.check_delete()?;
        }
        let _single = self.inner.gc_lock.lock().await;
        if !opts.dry_run {
            self.finish_interrupted_collection().await?;
        }
        let mut report = GcReport { dry_run: opts.dry_run, ..Default::default() };
        let cutoff = millis_before(now_millis(), opts.grace);
        // A dry run deletes no manifest, so it works out what their deletion would free.
        let mut doomed: HashSet<(String, String)> = HashSet::new();
        let mut freed_candidates: Vec<String> = Vec::new();
        if opts.delete_untagged {
            progress.phase("untagged manifests");
            for name in self.inner.meta.all_repositories().await? {
                let Ok(repo) = RepoName::parse(&name) else { continue };
                let (deleted, held) = self.drop_untagged(&repo, cutoff, opts.delete_referrers, opts.dry_run).await?;
                report.manifests_deleted += deleted.len();
                report.held_back_manifests += held as u64;
                for d in deleted {
                    if report.manifests.len() < REPORT_LIST {
                        report.manifests.push(format!("{repo}@{d}"));
                    }
                    if opts.dry_run {
                        freed_candidates.extend(self.inner.meta.manifest_references(repo.as_str(), &d).await?);
                        freed_candidates.push(d.clone());
                        doomed.insert((repo.to_string(), d));
                    }
                }
                progress.advance(1);
            }
        }
        progress.phase("blobs");
        let mut after = String::new();
        loop {
            let storage = self.inner.storage.clone();
            let victims = self
                .inner
                .meta
                .sweep_blobs(cutoff, &after, SWEEP_BATCH, opts.dry_run, |victims| async move {
                    // Recorded first, so that a crash between deleting content
                    // and committing the rows is finished by the next run.
                    let journal: String = victims.iter().map(|v| format!("{}\n", v.digest)).collect();
                    storage.put_content(&layout::gc_journal(), journal.into()).await.map_err(|e| e.to_string())?;
                    let mut paths = Vec::new();
                    for v in &victims {
                        let Ok(digest) = Digest::parse(&v.digest) else { continue };
                        for r in v.repositories.iter().filter_map(|r| RepoName::parse(r).ok()) {
                            paths.extend(layout::layer_link(&r, &digest).parent());
                        }
                        paths.push(layout::blob_dir(&digest));
                    }
                    storage.delete_many(&paths).await.map_err(|e| e.to_string())
                })
                .await?;
            // Each batch overwrites the journal; the last one goes when the sweep ends.
            let Some(last) = victims.last() else { break };
            after = last.digest.clone();
            for v in &victims {
                report.blobs_deleted += 1;
                report.bytes_freed += v.size.max(0) as u64;
                if report.blobs.len() < REPORT_LIST {
                    report.blobs.push(v.digest.clone());
                }
            }
            progress.advance(victims.len());
        }
        if !doomed.is_empty() {
            freed_candidates.sort();
            freed_candidates.dedup();
            for v in self.inner.meta.freed_without(cutoff, &doomed, &freed_candidates).await? {
                report.blobs_deleted += 1;
                report.bytes_freed += v.size.max(0) as u64;
                if report.blobs.len() < REPORT_LIST {
                    report.blobs.push(v.digest);
                }
            }
        }
        if !opts.dry_run && report.blobs_deleted > 0 {
            gone_or(self.inner.storage.delete(&layout::gc_journal()).await)?;
        }
        report.held_back_blobs = self.inner.meta.held_back_blobs(cutoff).await?;
        tracing::info!(
            dry_run = opts.dry_run,
            manifests = report.manifests_deleted,
            blobs = report.blobs_deleted,
            bytes = report.bytes_freed,
            held_back_blobs = report.held_back_blobs,
            held_back_manifests = report.held_back_manifests,
            "garbage collection done"
        );
        Ok(report)
    }

    /// Finishes a collection batch that a crash cut short: the journal names
    /// blobs whose rows were being deleted with their content. A blob whose
    /// content is gone loses its rows and links now; one whose content is
    /// still there keeps them, and the next sweep decides again.
    pub async fn finish_interrupted_collection(&self) -> Result<usize> {
        let storage = &self.inner.storage;
        let journal = match storage.get_content(&layout::gc_journal()).await {
            Ok(j) => j,
            Err(e) if e.is_not_found() => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut forgotten = 0;
        for digest in String::from_utf8_lossy(&journal).lines().filter_map(|l| Digest::parse(l.trim()).ok()) {
            match storage.stat(&layout::blob_data(&digest)).await {
                Ok(_) => continue,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            for r in self.inner.meta.forget_blob(digest.as_str()).await?.iter().filter_map(|r| RepoName::parse(r).ok())
            {
                if let Some(dir) = layout::layer_link(&r, &digest).parent() {
                    gone_or(storage.delete(&dir).await)?;
                }
            }
            gone_or(storage.delete(&layout::blob_dir(&digest)).await)?;
            forgotten += 1;
        }
        gone_or(storage.delete(&layout::gc_journal()).await)?;
        if forgotten > 0 {
            tracing::warn!(blobs = forgotten, "finished a garbage collection cut short by a crash");
        }
        Ok(forgotten)
    }

    /// Deletes (or lists) untagged manifests of `repo` created before `cutoff`
    /// that nothing kept needs, under the repository's lock. Also returns how
    /// many such manifests the cutoff kept.
    async fn drop_untagged(
        &self,
        repo: &RepoName,
        cutoff: i64,
        drop_referrers: bool,
        dry_run: bool,
    ) -> Result<(Vec<String>, usize)> {
        let _lock = self.lock_repository(repo).await?;
        let g = self.inner.meta.repository_graph(repo.as_str()).await?;
        let tagged: HashSet<String> = g.tags.iter().map(|t| t.digest.clone()).collect();
        let kept = kept_manifests(&g, &tagged, drop_referrers);
        let (victims, young): (Vec<&ManifestNode>, Vec<&ManifestNode>) =
            g.manifests.iter().filter(|m| !kept.contains(&m.digest)).partition(|m| m.created_at < cutoff);
        let victims: Vec<String> = victims.into_iter().map(|m| m.digest.clone()).collect();
        if dry_run || victims.is_empty() {
            return Ok((victims, young.len()));
        }
        let deleted = self.inner.meta.delete_untagged(repo.as_str(), &victims).await?;
        for d in deleted.iter().filter_map(|d| Digest::parse(d).ok()) {
            gone_or(self.inner.storage.delete(&layout::revision_link(repo, &d)).await)?;
        }
        Ok((deleted, young.len()))
    }

    /// Applies retention policies: the first policy matching a repository decides.
    pub async fn apply_retention(
        &self,
        policies: &[RetentionPolicy],
        grace: Duration,
        dry_run: bool,
        progress: &dyn Progress,
    ) -> Result<RetentionReport> {
        if !dry_run {
            self.check_delete()?;
        }
        let _single = self.inner.gc_lock.lock().await;
        let mut report = RetentionReport { dry_run, ..Default::default() };
        let now = now_millis();
        progress.phase("retention");
        for name in self.inner.meta.all_repositories().await? {
            let Ok(repo) = RepoName::parse(&name) else { continue };
            let Some(policy) = policies.iter().find(|p| p.repositories.iter().any(|pat| pat.matches(&repo))) else {
                continue;
            };
            let doomed = {
                let _lock = self.lock_repository(&repo).await?;
                let g = self.inner.meta.repository_graph(repo.as_str()).await?;
                let mut doomed = Vec::new();
                for (t, keep) in policy.decide(&g.tags, now) {
                    match keep {
                        None => doomed.push(t.name.clone()),
                        Some(why) => {
                            let why = match why {
                                Keep::Pattern => "keeptags",
                                Keep::Newest => "keeplast",
                                Keep::Recent => "used within olderthan",
                            };
                            if report.kept.len() < REPORT_LIST {
                                report.kept.push(format!("{repo}:{} ({why})", t.name));
                            }
                        }
                    }
                }
                if !dry_run {
                    for t in doomed.iter().filter_map(|t| Tag::parse(t).ok()) {
                        self.inner.meta.delete_tag(repo.as_str(), t.as_str()).await?;
                        gone_or(self.inner.storage.delete(&layout::tag_dir(&repo, &t)).await)?;
                    }
                }
                doomed
            };
            report.tags.extend(doomed.iter().map(|t| format!("{repo}:{t}")));
            if policy.delete_untagged {
                let cutoff = millis_before(now, grace);
                let (dropped, held) = if dry_run {
                    // What would be untagged after the tag deletions above.
                    let g = self.inner.meta.repository_graph(repo.as_str()).await?;
                    let tagged: HashSet<String> =
                        g.tags.iter().filter(|t| !doomed.contains(&t.name)).map(|t| t.digest.clone()).collect();
                    let kept = kept_manifests(&g, &tagged, false);
                    let (old, young): (Vec<&ManifestNode>, Vec<&ManifestNode>) =
                        g.manifests.iter().filter(|m| !kept.contains(&m.digest)).partition(|m| m.created_at < cutoff);
                    (old.into_iter().map(|m| m.digest.clone()).collect(), young.len())
                } else {
                    self.drop_untagged(&repo, cutoff, false, false).await?
                };
                report.held_back_manifests += held as u64;
                report.manifests.extend(dropped.iter().map(|d| format!("{repo}@{d}")));
            }
            progress.advance(1);
        }
        tracing::info!(dry_run, tags = report.tags.len(), manifests = report.manifests.len(), "retention applied");
        Ok(report)
    }

    /// The quota covering `repo`: the one with the longest namespace.
    pub fn quota_for(&self, repo: &RepoName) -> Option<&Quota> {
        self.inner
            .quotas
            .iter()
            .filter(|q| repo.as_str() == q.namespace || repo.as_str().starts_with(&format!("{}/", q.namespace)))
            .max_by_key(|q| q.namespace.len())
    }

    /// Refuses a new blob of `size` bytes for `repo` if it would take its
    /// namespace over quota. Blobs the namespace already holds are free.
    pub(crate) async fn check_quota(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let Some(q) = self.quota_for(repo) else { return Ok(()) };
        if self.inner.meta.namespace_has_blob(&q.namespace, digest.as_str()).await? {
            return Ok(());
        }
        self.check_quota_bytes(repo, size).await
    }

    /// Refuses an upload of `size` bytes (its declared or running size, digest
    /// not yet known) that would take `repo`'s namespace over quota.
    pub(crate) async fn check_quota_bytes(&self, repo: &RepoName, size: u64) -> Result<()> {
        let Some(q) = self.quota_for(repo) else { return Ok(()) };
        let used = self.inner.meta.namespace_usage(&q.namespace).await?.max(0) as u64;
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
            let used = self.inner.meta.namespace_usage(&q.namespace).await?.max(0) as u64;
            out.push(QuotaUsage { namespace: q.namespace.clone(), limit: q.limit, used });
        }
        Ok(out)
    }

    /// Deletes a whole repository: its tags, manifests and blob links, in the
    /// metadata and in storage. Blobs are left to garbage collection.
    pub async fn delete_repository(&self, repo: &RepoName) -> Result<()> {
        self.check_delete()?;
        let _lock = self.lock_repository(repo).await?;
        if !self.inner.meta.delete_repository(repo.as_str()).await? {
            return Err(RegistryError::NameUnknown);
        }
        // Only Berth's own entries: a repository's directory may hold nested repositories.
        for dir in [layout::manifests_dir(repo), layout::layers_root(repo), layout::uploads_dir(repo)] {
            gone_or(self.inner.storage.delete(&dir).await)?;
        }
        Ok(())
    }

    /// Remembers that a tag was pulled; written to the metadata in batches.
    /// A tag pulled again since the last write costs no allocation.
    pub fn note_pull(&self, repo: &RepoName, tag: &Tag) {
        let now = now_millis();
        let mut p = self.inner.pulls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = p.by_repo.get_mut(repo.as_str()).and_then(|tags| tags.get_mut(tag.as_str())) {
            *at = now;
        } else if p.len < MAX_PENDING_PULLS {
            p.by_repo.entry(repo.to_string()).or_default().insert(tag.to_string(), now);
            p.len += 1;
        }
    }

    /// Writes the pulls noted since the last call.
    pub async fn flush_pulls(&self) -> Result<()> {
        let pulls: Vec<(String, String, i64)> = {
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
            if let Err(e) = self.inner.meta.touch_blob(digest.as_str()).await {
                tracing::warn!(error = %e, "could not record a blob read");
            }
        }
    }
}

fn gone_or(r: berth_storage::Result<()>) -> Result<()> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}
