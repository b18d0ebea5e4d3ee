//! Builds the metadata index from a store in distribution's layout: how an
//! existing registry's data is served without copying it, and how a lost
//! database is rebuilt. Idempotent: running it again changes nothing.

use berth_metadata::{ImportedRepository, Metadata, NewManifest};
use berth_storage::{layout, StorageDriver, StoragePath};
use berth_types::{Digest, ManifestInfo, RepoName, Tag};
use futures_util::StreamExt;

use crate::error::Result;

/// Receives progress as the import goes.
pub trait ImportProgress: Send + Sync {
    fn repositories_found(&self, _count: usize) {}
    fn repository_done(&self, _name: &RepoName) {}
    fn skipped(&self, _what: &str, _why: &str) {}
}

/// Ignores progress.
pub struct Quiet;
impl ImportProgress for Quiet {}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub repositories: usize,
    pub blobs: usize,
    pub manifests: usize,
    pub tags: usize,
    pub skipped: usize,
}

async fn list_or_empty(storage: &dyn StorageDriver, path: &StoragePath) -> Result<Vec<String>> {
    match storage.list(path).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Every repository under `repositories/`: a directory holding `_manifests`,
/// `_layers` or `_uploads`. Repositories nest (`a/b` and `a/b/c`).
pub async fn find_repositories(storage: &dyn StorageDriver) -> Result<Vec<RepoName>> {
    let mut found = Vec::new();
    let mut stack = vec![layout::repositories_root()];
    while let Some(dir) = stack.pop() {
        let children = list_or_empty(storage, &dir).await?;
        if children.iter().any(|c| c == "_manifests" || c == "_layers" || c == "_uploads") {
            if let Some(name) = layout::repo_name_of(&dir) {
                found.push(name);
            }
        }
        for c in children.iter().filter(|c| !c.starts_with('_')) {
            if let Some(child) = dir.child(c) {
                stack.push(child);
            }
        }
    }
    found.sort();
    Ok(found)
}

async fn read_link(storage: &dyn StorageDriver, path: &StoragePath) -> Option<Digest> {
    storage.get_content(path).await.ok().and_then(|c| layout::parse_link(&c))
}

pub async fn import(
    storage: &dyn StorageDriver,
    meta: &Metadata,
    progress: &dyn ImportProgress,
) -> Result<ImportSummary> {
    let repos = find_repositories(storage).await?;
    progress.repositories_found(repos.len());
    let mut summary = ImportSummary::default();
    // Repositories are recorded in batches: one transaction (and one disk
    // sync) for many small repositories.
    for batch in repos.chunks(IMPORT_BATCH) {
        // Scans overlap: each is a chain of small reads that mostly waits.
        let scanned: Vec<Result<(Found, ImportSummary)>> = futures_util::stream::iter(batch)
            .map(|repo| async move {
                let mut s = ImportSummary::default();
                let f = scan_repository(storage, repo, progress, &mut s).await?;
                Ok((f, s))
            })
            .buffered(SCAN_CONCURRENCY)
            .collect()
            .await;
        let mut found = Vec::with_capacity(batch.len());
        for r in scanned {
            let (f, s) = r?;
            summary.blobs += s.blobs;
            summary.manifests += s.manifests;
            summary.tags += s.tags;
            summary.skipped += s.skipped;
            found.push(f);
        }
        let records: Vec<ImportedRepository<'_>> = found.iter().map(Found::record).collect();
        meta.import_repositories(&records).await?;
        for repo in batch {
            summary.repositories += 1;
            progress.repository_done(repo);
        }
    }
    Ok(summary)
}

/// Repositories recorded per transaction.
const IMPORT_BATCH: usize = 200;
/// Repositories scanned at once.
const SCAN_CONCURRENCY: usize = 16;

struct FoundManifest {
    digest: Digest,
    info: ManifestInfo,
    size: u64,
    annotations: Option<String>,
}

/// What one repository's directories hold.
struct Found {
    repo: RepoName,
    blobs: Vec<(Digest, u64)>,
    manifests: Vec<FoundManifest>,
    tags: Vec<(Tag, Digest)>,
    listed: bool,
}

impl Found {
    fn record(&self) -> ImportedRepository<'_> {
        ImportedRepository {
            repository: &self.repo,
            blobs: self.blobs.iter().map(|(d, s)| (d, *s)).collect(),
            manifests: self
                .manifests
                .iter()
                .map(|m| NewManifest {
                    repository: &self.repo,
                    digest: &m.digest,
                    media_type: &m.info.media_type,
                    size: m.size,
                    artifact_type: m.info.artifact_type.as_deref(),
                    subject: m.info.subject.as_ref().map(|s| &s.digest),
                    annotations: m.annotations.clone(),
                    blobs: m.info.required_blobs().map(|d| &d.digest).collect(),
                    children: m.info.manifests.iter().map(|d| &d.digest).collect(),
                    tag: None,
                    trust_references: true,
                })
                .collect(),
            tags: self.tags.iter().map(|(t, d)| (t, d)).collect(),
            listed: self.listed,
        }
    }
}

async fn scan_repository(
    storage: &dyn StorageDriver,
    repo: &RepoName,
    progress: &dyn ImportProgress,
    summary: &mut ImportSummary,
) -> Result<Found> {
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    for hex in list_or_empty(storage, &layout::layers_dir(repo)).await? {
        let Some(link) = layout::layers_dir(repo).child(&hex).and_then(|d| d.child("link")) else { continue };
        let Some(digest) = read_link(storage, &link).await else {
            summary.skipped += 1;
            progress.skipped(link.as_str(), "unreadable link");
            continue;
        };
        match storage.stat(&layout::blob_data(&digest)).await {
            Ok(info) => blobs.push((digest, info.size)),
            Err(_) => {
                summary.skipped += 1;
                progress.skipped(digest.as_str(), "layer link to a missing blob");
            }
        }
    }

    let mut manifests: Vec<FoundManifest> = Vec::new();
    for hex in list_or_empty(storage, &layout::revisions_dir(repo)).await? {
        let Some(link) = layout::revisions_dir(repo).child(&hex).and_then(|d| d.child("link")) else { continue };
        let Some(digest) = read_link(storage, &link).await else {
            summary.skipped += 1;
            progress.skipped(link.as_str(), "unreadable link");
            continue;
        };
        let content = match storage.get_content(&layout::blob_data(&digest)).await {
            Ok(c) => c,
            Err(_) => {
                summary.skipped += 1;
                progress.skipped(digest.as_str(), "revision link to a missing manifest");
                continue;
            }
        };
        if Digest::of_bytes(&content) != digest {
            summary.skipped += 1;
            progress.skipped(digest.as_str(), "manifest content does not match its digest");
            continue;
        }
        match ManifestInfo::parse(None, &content) {
            Ok(info) => {
                let annotations = info.annotations.as_ref().and_then(|a| serde_json::to_string(a).ok());
                manifests.push(FoundManifest { digest, info, size: content.len() as u64, annotations });
            }
            Err(e) => {
                summary.skipped += 1;
                progress.skipped(digest.as_str(), &e.0);
            }
        }
    }

    let listed = storage.stat(&layout::manifests_dir(repo)).await.is_ok();
    let mut tags: Vec<(Tag, Digest)> = Vec::new();
    for tag in list_or_empty(storage, &layout::tags_dir(repo)).await? {
        let Ok(t) = Tag::parse(&tag) else {
            summary.skipped += 1;
            progress.skipped(&format!("{repo}:{tag}"), "not a valid tag name");
            continue;
        };
        match read_link(storage, &layout::tag_current_link(repo, &t)).await {
            Some(d) => tags.push((t, d)),
            None => {
                summary.skipped += 1;
                progress.skipped(&format!("{repo}:{t}"), "unreadable current link");
            }
        }
    }

    summary.blobs += blobs.len();
    summary.manifests += manifests.len();
    summary.tags += tags.len();
    Ok(Found { repo: repo.clone(), blobs, manifests, tags, listed })
}
