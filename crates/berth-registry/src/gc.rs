//! Online garbage collection. Collection never needs the registry read-only: a blob is
//! taken only when nothing references it and it has been idle past the grace period, in
//! a metadata transaction no commit can interleave with (see `WriteTx::sweep_blobs`);
//! untagged manifests are taken under their repository's lock, which pushes also hold.
//! A journal in storage lets the next start finish a batch a crash cut short.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use berth_metadata::{now_millis, GcVictim, ManifestNode, RepositoryGraph};
use berth_storage::layout;
use berth_types::duration::millis_before;
use berth_types::{Digest, RepoName};
use serde::{Deserialize, Serialize};

use crate::progress::Progress;
use crate::{ignore_missing, Registry, RegistryError, Result, REPORT_LIST};

/// Blobs examined per collection transaction.
pub(crate) const SWEEP_BATCH: i64 = 512;

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

/// Manifests of a repository that must stay: the tagged ones, their index
/// children (at any depth), and, unless `drop_referrers`, every manifest
/// whose subject stays.
pub(crate) fn kept_manifests<'g>(
    g: &'g RepositoryGraph,
    tagged: &HashSet<&'g Digest>,
    drop_referrers: bool,
) -> HashSet<&'g Digest> {
    let mut children: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for (p, c) in &g.children {
        children.entry(p).or_default().push(c);
    }
    let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
    for m in &g.manifests {
        if let Some(s) = &m.subject {
            referrers.entry(s).or_default().push(&m.digest);
        }
    }
    let mut kept: HashSet<&Digest> = HashSet::new();
    let mut todo: Vec<&Digest> = tagged.iter().copied().collect();
    while let Some(d) = todo.pop() {
        if !kept.insert(d) {
            continue;
        }
        todo.extend(children.get(d).into_iter().flatten().copied());
        if !drop_referrers {
            todo.extend(referrers.get(d).into_iter().flatten().copied());
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
        let mut doomed: HashSet<(RepoName, Digest)> = HashSet::new();
        let mut freed_candidates: Vec<Digest> = Vec::new();
        if opts.delete_untagged {
            progress.phase("untagged manifests");
            for repo in self.inner.meta.all_repositories().await? {
                if progress.cancelled() {
                    return Err(RegistryError::Cancelled);
                }
                let (deleted, held) = self.drop_untagged(&repo, cutoff, opts.delete_referrers, opts.dry_run).await?;
                report.manifests_deleted += deleted.len();
                report.held_back_manifests += held as u64;
                for d in deleted {
                    if report.manifests.len() < REPORT_LIST {
                        report.manifests.push(format!("{repo}@{d}"));
                    }
                    if opts.dry_run {
                        freed_candidates.extend(self.inner.meta.manifest_references(&repo, &d).await?);
                        freed_candidates.push(d.clone());
                        doomed.insert((repo.clone(), d));
                    }
                }
                progress.advance(1);
            }
        }
        progress.phase("blobs");
        let mut after: Option<Digest> = None;
        loop {
            // Between batches: the journal names the last one, which is committed.
            if progress.cancelled() {
                return Err(RegistryError::Cancelled);
            }
            let victims = self.sweep_batch(cutoff, after.as_ref(), opts.dry_run).await?;
            // Each batch overwrites the journal; the last one goes when the sweep ends.
            let Some(last) = victims.last() else { break };
            after = Some(last.digest.clone());
            for v in &victims {
                report.blobs_deleted += 1;
                report.bytes_freed += v.size;
                if report.blobs.len() < REPORT_LIST {
                    report.blobs.push(v.digest.to_string());
                }
            }
            progress.advance(victims.len());
        }
        if !doomed.is_empty() {
            freed_candidates.sort();
            freed_candidates.dedup();
            for v in self.inner.meta.freed_without(cutoff, &doomed, &freed_candidates).await? {
                report.blobs_deleted += 1;
                report.bytes_freed += v.size;
                if report.blobs.len() < REPORT_LIST {
                    report.blobs.push(v.digest.to_string());
                }
            }
        }
        if !opts.dry_run && report.blobs_deleted > 0 {
            ignore_missing(self.inner.storage.delete(&layout::gc_journal()).await)?;
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

    /// One batch of the blob sweep: its rows deleted in a transaction that
    /// stays open while the content goes, and commits only once it has; a
    /// storage failure rolls the rows back and stops the collection.
    async fn sweep_batch(&self, cutoff: i64, after: Option<&Digest>, dry_run: bool) -> Result<Vec<GcVictim>> {
        let storage = &self.inner.storage;
        let mut tx = self.inner.meta.write_tx().await?;
        let victims = tx.sweep_blobs(cutoff, after, SWEEP_BATCH, dry_run).await?;
        if dry_run || victims.is_empty() {
            tx.rollback().await?;
            return Ok(victims);
        }
        // Recorded first, so that a crash between deleting content and
        // committing the rows is finished by the next run.
        let journal: String = victims.iter().map(|v| format!("{}\n", v.digest)).collect();
        storage.put_content(&layout::gc_journal(), journal.into()).await?;
        let mut paths = Vec::new();
        for v in &victims {
            for r in &v.repositories {
                paths.extend(layout::layer_link(r, &v.digest).parent());
            }
            paths.push(layout::blob_dir(&v.digest));
        }
        storage.delete_many(&paths).await?;
        tx.commit().await?;
        Ok(victims)
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
            for r in self.inner.meta.forget_blob(&digest).await? {
                if let Some(dir) = layout::layer_link(&r, &digest).parent() {
                    ignore_missing(storage.delete(&dir).await)?;
                }
            }
            ignore_missing(storage.delete(&layout::blob_dir(&digest)).await)?;
            forgotten += 1;
        }
        ignore_missing(storage.delete(&layout::gc_journal()).await)?;
        if forgotten > 0 {
            tracing::warn!(blobs = forgotten, "finished a garbage collection cut short by a crash");
        }
        Ok(forgotten)
    }

    /// Deletes (or lists) untagged manifests of `repo` created before `cutoff`
    /// that nothing kept needs, under the repository's lock. Also returns how
    /// many such manifests the cutoff kept.
    pub(crate) async fn drop_untagged(
        &self,
        repo: &RepoName,
        cutoff: i64,
        drop_referrers: bool,
        dry_run: bool,
    ) -> Result<(Vec<Digest>, usize)> {
        let _lock = self.lock_repository(repo).await?;
        let g = self.inner.meta.repository_graph(repo).await?;
        let tagged: HashSet<&Digest> = g.tags.iter().map(|t| &t.digest).collect();
        let kept = kept_manifests(&g, &tagged, drop_referrers);
        let (victims, young): (Vec<&ManifestNode>, Vec<&ManifestNode>) =
            g.manifests.iter().filter(|m| !kept.contains(&m.digest)).partition(|m| m.created_at < cutoff);
        let victims: Vec<Digest> = victims.into_iter().map(|m| m.digest.clone()).collect();
        if dry_run || victims.is_empty() {
            return Ok((victims, young.len()));
        }
        let deleted = self.inner.meta.delete_untagged(repo, &victims).await?;
        for d in &deleted {
            ignore_missing(self.inner.storage.delete(&layout::revision_link(repo, d)).await)?;
        }
        Ok((deleted, young.len()))
    }
}
