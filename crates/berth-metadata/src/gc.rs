//! Queries of garbage collection: what nothing references and nobody used lately, taken in
//! batches; what a dry run would free; what a crash cut short.

use std::collections::HashSet;

use sqlx::Row;

use berth_types::{Digest, RepoName};

use crate::{locking, now_millis, typed, Backend, Metadata, Result, WriteTx};

/// A blob garbage collection takes: nothing references it, and it has been
/// idle past the grace period (or its commit lease ran out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcVictim {
    pub digest: Digest,
    pub size: u64,
    /// Repositories whose layer links name it.
    pub repositories: Vec<RepoName>,
}

impl WriteTx {
    /// Finds up to `limit` collectable blobs after `after` (in digest order)
    /// and, unless `dry_run`, deletes their rows in this transaction. The
    /// caller then deletes their content through the storage driver and
    /// commits; until the commit no writer can claim, link or reference
    /// them, and if deleting content fails, dropping the transaction keeps
    /// every row. An empty result means the sweep is done.
    ///
    /// On PostgreSQL the candidates are locked (`FOR UPDATE`, skipping rows
    /// another transaction holds: those are in use) and each DELETE checks
    /// the condition again with a fresh snapshot, so a manifest that came to
    /// reference a blob, or a claim that moved its use time, after the
    /// candidates were read keeps it. A claim, link or manifest push that
    /// comes later waits for this batch and then finds the blob gone.
    pub async fn sweep_blobs(
        &mut self,
        cutoff: i64,
        after: Option<&Digest>,
        limit: i64,
        dry_run: bool,
    ) -> Result<Vec<GcVictim>> {
        let now = now_millis();
        let select = locking!(
            self.backend,
            "SELECT b.digest, b.size FROM blobs b WHERE b.digest > $1 \
             AND ((b.state = 0 AND b.last_used < $2) OR (b.state = 1 AND b.lease_until < $3)) \
             AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = b.digest) \
             AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest) \
             ORDER BY b.digest LIMIT $4",
            "FOR UPDATE OF b SKIP LOCKED"
        );
        let mut after = after.map(|d| d.as_str().to_owned()).unwrap_or_default();
        loop {
            let rows =
                sqlx::query(select).bind(&after).bind(cutoff).bind(now).bind(limit).fetch_all(&mut *self.tx).await?;
            let Some(last) = rows.last() else { return Ok(Vec::new()) };
            after = last.try_get(0)?;
            let mut victims = Vec::with_capacity(rows.len());
            for r in &rows {
                let digest: String = r.try_get(0)?;
                if !dry_run {
                    let n = sqlx::query(
                        "DELETE FROM blobs WHERE digest = $1 \
                         AND ((state = 0 AND last_used < $2) OR (state = 1 AND lease_until < $3)) \
                         AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = blobs.digest) \
                         AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = blobs.digest)",
                    )
                    .bind(&digest)
                    .bind(cutoff)
                    .bind(now)
                    .execute(&mut *self.tx)
                    .await?
                    .rows_affected();
                    if n == 0 {
                        // Referenced or used since it was read: it stays.
                        continue;
                    }
                }
                let repositories: Vec<String> = sqlx::query_scalar(
                    "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                     WHERE rb.digest = $1 ORDER BY r.name",
                )
                .bind(&digest)
                .fetch_all(&mut *self.tx)
                .await?;
                if !dry_run {
                    sqlx::query("DELETE FROM repository_blobs WHERE digest = $1")
                        .bind(&digest)
                        .execute(&mut *self.tx)
                        .await?;
                }
                let (size, repositories) = (
                    typed::size("blobs", &digest, r.try_get(1)?)?,
                    typed::repos("repository_blobs", &digest, repositories)?,
                );
                for repo in &repositories {
                    self.touch(repo.as_str());
                }
                victims.push(GcVictim { size, digest: typed::digest("blobs", &digest, &digest)?, repositories });
            }
            // An empty batch would end the caller's sweep: look further instead.
            if dry_run || !victims.is_empty() {
                return Ok(victims);
            }
        }
    }
}

impl Metadata {
    pub async fn held_back_blobs(&self, cutoff: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM blobs b WHERE NOT ((b.state = 0 AND b.last_used < $1) OR (b.state = 1 AND b.lease_until < $2)) \
             AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = b.digest) \
             AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest)",
        )
        .bind(cutoff)
        .bind(now_millis())
        .fetch_one(&self.read)
        .await?;
        Ok(n.max(0) as u64)
    }

    /// Everything the manifest `digest` of `repo` references (config,
    /// layers, child manifests).
    pub async fn manifest_references(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<Digest>> {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        let children = sqlx::query_scalar(
            "SELECT mr.child FROM manifest_references mr JOIN repositories r ON r.id = mr.repository_id \
             WHERE r.name = $1 AND mr.parent = $2 ORDER BY mr.child",
        )
        .bind(repo)
        .bind(digest)
        .fetch_all(&self.read)
        .await?;
        typed::digests("manifest_references", digest, children)
    }

    /// Of `candidates`, the blobs a collection would take once the manifests
    /// in `gone` (repository, digest) were deleted: idle past `cutoff`,
    /// referenced only by manifests in `gone`, and a manifest only there.
    /// Reads only (for dry runs); what it returns names no repositories.
    pub async fn freed_without(
        &self,
        cutoff: i64,
        gone: &HashSet<(RepoName, Digest)>,
        candidates: &[Digest],
    ) -> Result<Vec<GcVictim>> {
        let now = now_millis();
        let mut out = Vec::new();
        for d in candidates {
            let digest = d.as_str();
            let row = sqlx::query("SELECT size, state, last_used, lease_until FROM blobs WHERE digest = $1")
                .bind(digest)
                .fetch_optional(&self.read)
                .await?;
            let Some(row) = row else { continue };
            let (size, state, last_used, lease): (i64, i64, i64, i64) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            let idle = (state == 0 && last_used < cutoff) || (state == 1 && lease < now);
            if !idle {
                continue;
            }
            let parents = sqlx::query(
                "SELECT r.name, mr.parent FROM manifest_references mr JOIN repositories r ON r.id = mr.repository_id \
                 WHERE mr.child = $1",
            )
            .bind(digest)
            .fetch_all(&self.read)
            .await?;
            let mut only_gone = true;
            for p in &parents {
                let (name, parent): (String, String) = (p.try_get(0)?, p.try_get(1)?);
                let key = (
                    typed::repo("manifest_references", &parent, &name)?,
                    typed::digest("manifest_references", &parent, &parent)?,
                );
                only_gone &= gone.contains(&key);
            }
            let holders: Vec<String> = sqlx::query_scalar(
                "SELECT r.name FROM manifests m JOIN repositories r ON r.id = m.repository_id WHERE m.digest = $1",
            )
            .bind(digest)
            .fetch_all(&self.read)
            .await?;
            for r in typed::repos("manifests", digest, holders)? {
                only_gone &= gone.contains(&(r, d.clone()));
            }
            if only_gone {
                out.push(GcVictim {
                    digest: d.clone(),
                    size: typed::size("blobs", digest, size)?,
                    repositories: Vec::new(),
                });
            }
        }
        Ok(out)
    }

    /// Removes a blob's rows and links whatever their state, returning the
    /// repositories it was linked in. Used to finish a collection that was
    /// cut short after the blob's content went.
    pub async fn forget_blob(&self, digest: &Digest) -> Result<Vec<RepoName>> {
        let digest = digest.as_str();
        let mut tx = self.begin(&self.write).await?;
        let repositories: Vec<String> = sqlx::query_scalar(
            "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
             WHERE rb.digest = $1 ORDER BY r.name",
        )
        .bind(digest)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM repository_blobs WHERE digest = $1").bind(digest).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM blobs WHERE digest = $1").bind(digest).execute(&mut *tx).await?;
        tx.commit().await?;
        for repo in &repositories {
            self.cache.invalidate(repo);
        }
        typed::repos("repository_blobs", digest, repositories)
    }
}
