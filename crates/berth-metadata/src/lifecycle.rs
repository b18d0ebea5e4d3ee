//! Queries of the lifecycle jobs: garbage collection, retention, quotas,
//! repository deletion.

use std::collections::HashSet;
use std::future::Future;

use sqlx::Row;

use crate::{locking, now_millis, Backend, Metadata, Result};

/// A blob garbage collection takes: nothing references it, and it has been
/// idle past the grace period (or its commit lease ran out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcVictim {
    pub digest: String,
    pub size: i64,
    /// Repositories whose layer links name it.
    pub repositories: Vec<String>,
}

/// One manifest of a repository, for deciding what is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestNode {
    pub digest: String,
    pub created_at: i64,
    pub subject: Option<String>,
    pub media_type: String,
}

/// The manifests, index edges and tags of one repository.
#[derive(Debug, Clone, Default)]
pub struct RepositoryGraph {
    pub manifests: Vec<ManifestNode>,
    /// (index, child manifest)
    pub children: Vec<(String, String)>,
    pub tags: Vec<TagInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    pub name: String,
    pub digest: String,
    /// Milliseconds since the epoch.
    pub pushed_at: i64,
    pub pulled_at: i64,
}

impl Metadata {
    /// Every repository known, in name order.
    pub async fn all_repositories(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM repositories ORDER BY name").fetch_all(&self.read).await?)
    }

    /// Finds up to `limit` collectable blobs after `after` (in digest order)
    /// and, unless `dry_run`, deletes their rows and — inside the same
    /// transaction, so no writer can claim a blob in between — calls `delete`
    /// to remove their content. If `delete` fails nothing is committed.
    ///
    /// On PostgreSQL the candidates are locked (`FOR UPDATE`, skipping rows
    /// another transaction holds: those are in use) and each DELETE checks
    /// the condition again with a fresh snapshot, so a manifest that came to
    /// reference a blob, or a claim that moved its use time, after the
    /// candidates were read keeps it. A claim, link or manifest push that
    /// comes later waits for this batch and then finds the blob gone.
    pub async fn sweep_blobs<F, Fut>(
        &self,
        cutoff: i64,
        after: &str,
        limit: i64,
        dry_run: bool,
        delete: F,
    ) -> Result<Vec<GcVictim>>
    where
        F: FnOnce(Vec<GcVictim>) -> Fut,
        Fut: Future<Output = std::result::Result<(), String>>,
    {
        let now = now_millis();
        let mut tx = self.begin(&self.write).await?;
        let select = locking!(
            self.backend,
            "SELECT b.digest, b.size FROM blobs b WHERE b.digest > $1 \
             AND ((b.state = 0 AND b.last_used < $2) OR (b.state = 1 AND b.lease_until < $3)) \
             AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = b.digest) \
             AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest) \
             ORDER BY b.digest LIMIT $4",
            "FOR UPDATE OF b SKIP LOCKED"
        );
        let mut after = after.to_owned();
        let victims = loop {
            let rows = sqlx::query(select).bind(&after).bind(cutoff).bind(now).bind(limit).fetch_all(&mut *tx).await?;
            let Some(last) = rows.last() else {
                tx.rollback().await?;
                return Ok(Vec::new());
            };
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
                    .execute(&mut *tx)
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
                .fetch_all(&mut *tx)
                .await?;
                if !dry_run {
                    sqlx::query("DELETE FROM repository_blobs WHERE digest = $1")
                        .bind(&digest)
                        .execute(&mut *tx)
                        .await?;
                }
                victims.push(GcVictim { size: r.try_get(1)?, digest, repositories });
            }
            if dry_run {
                tx.rollback().await?;
                return Ok(victims);
            }
            // An empty batch would end the caller's sweep: look further instead.
            if !victims.is_empty() {
                break victims;
            }
        };
        if let Err(e) = delete(victims.clone()).await {
            tx.rollback().await?;
            return Err(crate::MetadataError::Corrupt(format!("deleting blob content failed: {e}")));
        }
        tx.commit().await?;
        for repo in victims.iter().flat_map(|v| v.repositories.iter()) {
            self.cache.invalidate(repo);
        }
        Ok(victims)
    }

    /// How many blobs nothing references that the grace period keeps: used
    /// since `cutoff`, or being committed under a lease that still runs.
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
    pub async fn manifest_references(&self, repo: &str, digest: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT mr.child FROM manifest_references mr JOIN repositories r ON r.id = mr.repository_id \
             WHERE r.name = $1 AND mr.parent = $2 ORDER BY mr.child",
        )
        .bind(repo)
        .bind(digest)
        .fetch_all(&self.read)
        .await?)
    }

    /// Of `candidates`, the blobs a collection would take once the manifests
    /// in `gone` (repository, digest) were deleted: idle past `cutoff`,
    /// referenced only by manifests in `gone`, and a manifest only there.
    /// Reads only (for dry runs); what it returns names no repositories.
    pub async fn freed_without(
        &self,
        cutoff: i64,
        gone: &HashSet<(String, String)>,
        candidates: &[String],
    ) -> Result<Vec<GcVictim>> {
        let now = now_millis();
        let mut out = Vec::new();
        for digest in candidates {
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
                only_gone &= gone.contains(&(p.try_get(0)?, p.try_get(1)?));
            }
            let holders: Vec<String> = sqlx::query_scalar(
                "SELECT r.name FROM manifests m JOIN repositories r ON r.id = m.repository_id WHERE m.digest = $1",
            )
            .bind(digest)
            .fetch_all(&self.read)
            .await?;
            only_gone &= holders.into_iter().all(|r| gone.contains(&(r, digest.clone())));
            if only_gone {
                out.push(GcVictim { digest: digest.clone(), size, repositories: Vec::new() });
            }
        }
        Ok(out)
    }

    /// Manifests, index edges and tags of `repo`.
    pub async fn repository_graph(&self, repo: &str) -> Result<RepositoryGraph> {
        let rows = sqlx::query(
            "SELECT m.digest, m.created_at, m.subject, m.media_type FROM manifests m \
             JOIN repositories r ON r.id = m.repository_id WHERE r.name = $1 ORDER BY m.digest",
        )
        .bind(repo)
        .fetch_all(&self.write)
        .await?;
        let manifests = rows
            .iter()
            .map(|r| {
                Ok(ManifestNode {
                    digest: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                    subject: r.try_get(2)?,
                    media_type: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = sqlx::query(
            "SELECT mr.parent, mr.child FROM manifest_references mr JOIN repositories r ON r.id = mr.repository_id \
             WHERE r.name = $1 AND mr.child_is_manifest = 1",
        )
        .bind(repo)
        .fetch_all(&self.write)
        .await?;
        let children = rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<Vec<_>>>()?;
        let rows = sqlx::query(
            "SELECT t.name, t.digest, t.updated_at, t.pulled_at FROM tags t JOIN repositories r ON r.id = t.repository_id \
             WHERE r.name = $1 ORDER BY t.name",
        )
        .bind(repo)
        .fetch_all(&self.write)
        .await?;
        let tags = rows
            .iter()
            .map(|r| {
                Ok(TagInfo {
                    name: r.try_get(0)?,
                    digest: r.try_get(1)?,
                    pushed_at: r.try_get(2)?,
                    pulled_at: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RepositoryGraph { manifests, children, tags })
    }

    /// Deletes those of the given manifests of `repo` that still have no tag
    /// and that no remaining index lists as a child (an index deleted here
    /// frees its children for the next pass). Returns those deleted.
    ///
    /// On PostgreSQL each manifest is locked first (`FOR UPDATE`), after any
    /// push that tags it or lists it in an index has committed, so the
    /// DELETE's fresh snapshot sees that tag or index and keeps the manifest.
    pub async fn delete_untagged(&self, repo: &str, digests: &[String]) -> Result<Vec<String>> {
        let mut tx = self.begin(&self.write).await?;
        let mut deleted = Vec::new();
        let mut remaining: Vec<&String> = digests.iter().collect();
        remaining.sort_unstable();
        remaining.dedup();
        loop {
            let before = deleted.len();
            let mut kept = Vec::new();
            for d in remaining {
                let found: Option<i64> = sqlx::query_scalar(locking!(
                    self.backend,
                    "SELECT 1 FROM manifests WHERE digest = $2 \
                     AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
                    "FOR UPDATE"
                ))
                .bind(repo)
                .bind(d)
                .fetch_optional(&mut *tx)
                .await?;
                if found.is_none() {
                    continue;
                }
                let n = sqlx::query(
                    "DELETE FROM manifests WHERE digest = $2 \
                     AND repository_id = (SELECT id FROM repositories WHERE name = $1) \
                     AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = manifests.repository_id AND t.digest = $2) \
                     AND NOT EXISTS (SELECT 1 FROM manifest_references mr WHERE mr.repository_id = manifests.repository_id \
                       AND mr.child = $2 AND mr.child_is_manifest = 1)",
                )
                .bind(repo)
                .bind(d)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 0 {
                    kept.push(d);
                    continue;
                }
                sqlx::query(
                    "DELETE FROM manifest_references WHERE parent = $2 \
                     AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
                )
                .bind(repo)
                .bind(d)
                .execute(&mut *tx)
                .await?;
                deleted.push(d.clone());
            }
            if kept.is_empty() || deleted.len() == before {
                break;
            }
            remaining = kept;
        }
        tx.commit().await?;
        self.cache.invalidate(repo);
        Ok(deleted)
    }

    /// Records when tags were pulled (batched by the caller).
    pub async fn record_pulls(&self, pulls: &[(String, String, i64)]) -> Result<()> {
        if pulls.is_empty() {
            return Ok(());
        }
        // In one order everywhere, so that two instances recording the same
        // tags cannot deadlock on PostgreSQL.
        let mut sorted: Vec<&(String, String, i64)> = pulls.iter().collect();
        sorted.sort_unstable();
        let mut tx = self.begin(&self.uploads).await?;
        for (repo, tag, at) in sorted {
            sqlx::query(
                "UPDATE tags SET pulled_at = $3 WHERE name = $2 AND pulled_at < $3 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
            )
            .bind(repo)
            .bind(tag)
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Bytes of the distinct blobs (layers and manifests) held by the
    /// repositories of a namespace (`ns` itself and everything below `ns/`).
    /// A blob shared by several repositories counts once.
    pub async fn namespace_usage(&self, ns: &str) -> Result<i64> {
        let below = format!("{ns}/");
        let total: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(b.size) AS BIGINT) FROM blobs b WHERE b.digest IN ( \
               SELECT rb.digest FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 WHERE r.name = $1 OR substr(r.name, 1, length($2)) = $2 \
               UNION SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id \
                 WHERE r.name = $1 OR substr(r.name, 1, length($2)) = $2)",
        )
        .bind(ns)
        .bind(&below)
        .fetch_one(&self.write)
        .await?;
        Ok(total.unwrap_or(0))
    }

    /// Whether any repository of the namespace already holds `digest`.
    pub async fn namespace_has_blob(&self, ns: &str, digest: &str) -> Result<bool> {
        let below = format!("{ns}/");
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
             WHERE rb.digest = $3 AND (r.name = $1 OR substr(r.name, 1, length($2)) = $2) LIMIT 1",
        )
        .bind(ns)
        .bind(&below)
        .bind(digest)
        .fetch_optional(&self.write)
        .await?;
        Ok(found.is_some())
    }

    /// Removes a repository with its tags, manifests and blob links. The blobs
    /// themselves are left to garbage collection. False if it did not exist.
    /// On PostgreSQL the repository row is locked first: writers hold it
    /// (`FOR KEY SHARE`) while they add to the repository, so this waits for
    /// them, and those that come later create the repository anew.
    pub async fn delete_repository(&self, repo: &str) -> Result<bool> {
        let mut tx = self.begin(&self.write).await?;
        let id: Option<i64> =
            sqlx::query_scalar(locking!(self.backend, "SELECT id FROM repositories WHERE name = $1", "FOR UPDATE"))
                .bind(repo)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(id) = id else { return Ok(false) };
        for sql in [
            "DELETE FROM tags WHERE repository_id = $1",
            "DELETE FROM manifest_references WHERE repository_id = $1",
            "DELETE FROM manifests WHERE repository_id = $1",
            "DELETE FROM repository_blobs WHERE repository_id = $1",
            "DELETE FROM repositories WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.cache.invalidate(repo);
        Ok(true)
    }
}

impl Metadata {
    /// Removes a blob's rows and links whatever their state, returning the
    /// repositories it was linked in. Used to finish a collection that was
    /// cut short after the blob's content went.
    pub async fn forget_blob(&self, digest: &str) -> Result<Vec<String>> {
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
        Ok(repositories)
    }
}
