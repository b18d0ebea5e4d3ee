//! Retention policies: per repository pattern, which tags stay (keeptags, the newest
//! keeplast of the rest, those used within olderthan) and, optionally, the manifests
//! left untagged.

use std::collections::HashSet;
use std::time::Duration;

use berth_metadata::{now_millis, ManifestNode, TagInfo};
use berth_storage::layout;
use berth_types::duration::millis_before;
use berth_types::pattern::{glob, RepoPattern};
use berth_types::Digest;
use serde::{Deserialize, Serialize};

use crate::gc::kept_manifests;
use crate::progress::Progress;
use crate::{ignore_missing, Registry, RegistryError, Result, REPORT_LIST};

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
pub(crate) enum Keep {
    /// It matches one of `keeptags`, whatever its age (and it does not count toward `keeplast`).
    Pattern,
    /// One of the newest `keeplast` of the tags no pattern keeps.
    Newest,
    /// Pushed or pulled within `olderthan`.
    Recent,
}

impl Registry {
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
        for repo in self.inner.meta.all_repositories().await? {
            if progress.cancelled() {
                return Err(RegistryError::Cancelled);
            }
            let Some(policy) = policies.iter().find(|p| p.repositories.iter().any(|pat| pat.matches(&repo))) else {
                continue;
            };
            let doomed = {
                let _lock = self.lock_repository(&repo).await?;
                let g = self.inner.meta.repository_graph(&repo).await?;
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
                    for t in &doomed {
                        self.inner.meta.delete_tag(&repo, t).await?;
                        ignore_missing(self.inner.storage.delete(&layout::tag_dir(&repo, t)).await)?;
                    }
                }
                doomed
            };
            report.tags.extend(doomed.iter().map(|t| format!("{repo}:{t}")));
            if policy.delete_untagged {
                let cutoff = millis_before(now, grace);
                let (dropped, held) = if dry_run {
                    // What would be untagged after the tag deletions above.
                    let g = self.inner.meta.repository_graph(&repo).await?;
                    let tagged: HashSet<&Digest> =
                        g.tags.iter().filter(|t| !doomed.contains(&t.name)).map(|t| &t.digest).collect();
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
                let keep = if self.keep_tags.iter().any(|p| glob(p, t.name.as_str())) {
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
