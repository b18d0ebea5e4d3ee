//! Tags: set, deleted, listed in pages.

use std::sync::Arc;

use berth_types::{Digest, RepoName, Tag};

use crate::{locking, now_millis, typed, Backend, Metadata, Result, WriteTx, MAX_CACHED_LIST};

/// The entries of a sorted list after `last`, at most `limit` of them.
pub(crate) fn page_after(all: &[String], last: Option<&str>, limit: i64) -> Vec<String> {
    let start = match last {
        Some(l) => all.partition_point(|x| x.as_str() <= l),
        None => 0,
    };
    all[start..].iter().take(limit.max(0) as usize).cloned().collect()
}

impl Metadata {
    /// [`WriteTx::set_tag`] in a transaction of its own.
    pub async fn set_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let set = tx.set_tag(repo, tag, digest).await?;
        tx.commit().await?;
        Ok(set)
    }

    /// [`WriteTx::delete_tag`] in a transaction of its own.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        let mut tx = self.write_tx().await?;
        let was = tx.delete_tag(repo, tag).await?;
        tx.commit().await?;
        Ok(was)
    }

    /// Tags of a repository in name order after `last`; None when the
    /// repository never held a manifest.
    pub async fn list_tags(&self, repo: &RepoName, last: Option<&str>, limit: i64) -> Result<Option<Vec<Tag>>> {
        let repo = repo.as_str();
        let typed = |v: Vec<String>| typed::tags("tags", repo, v);
        if !self.cache.enabled() {
            let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM repositories WHERE name = $1 AND listed = 1")
                .bind(repo)
                .fetch_optional(&self.read)
                .await?;
            return match known {
                Some(_) => self.page_tags(repo, last, limit).await.and_then(typed).map(Some),
                None => Ok(None),
            };
        }
        let all = match self.cache.tags(repo) {
            Some(hit) => hit,
            None => {
                let token = self.cache.token(repo);
                let known: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM repositories WHERE name = $1 AND listed = 1")
                        .bind(repo)
                        .fetch_optional(&self.read)
                        .await?;
                if known.is_none() {
                    self.cache.put_tags(repo, token, None);
                    return Ok(None);
                }
                let tags: Vec<String> = sqlx::query_scalar(
                    "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id \
                     WHERE r.name = $1 ORDER BY t.name LIMIT $2",
                )
                .bind(repo)
                .bind(MAX_CACHED_LIST + 1)
                .fetch_all(&self.read)
                .await?;
                if tags.len() as i64 > MAX_CACHED_LIST {
                    return self.page_tags(repo, last, limit).await.and_then(typed).map(Some);
                }
                let tags = Arc::new(tags);
                self.cache.put_tags(repo, token, Some(tags.clone()));
                Some(tags)
            }
        };
        all.map(|all| typed(page_after(&all, last, limit))).transpose()
    }

    pub(crate) async fn page_tags(&self, repo: &str, last: Option<&str>, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id \
             WHERE r.name = $1 AND t.name > $2 ORDER BY t.name LIMIT $3",
        )
        .bind(repo)
        .bind(last.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }
}

impl WriteTx {
    /// Points a tag at a manifest already recorded in the repository. False
    /// (and nothing written) when the manifest is not there. The manifest
    /// stays locked against deletion until the commit (PostgreSQL).
    pub async fn set_tag(&mut self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<bool> {
        let row: Option<i64> = sqlx::query_scalar(locking!(
            self.backend,
            "SELECT m.repository_id FROM manifests m JOIN repositories r ON r.id = m.repository_id \
             WHERE r.name = $1 AND m.digest = $2",
            "FOR KEY SHARE OF m"
        ))
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(repo_id) = row else { return Ok(false) };
        sqlx::query(
            "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
        )
        .bind(repo_id)
        .bind(tag.as_str())
        .bind(digest.as_str())
        .bind(now_millis())
        .execute(&mut *self.tx)
        .await?;
        self.touch(repo.as_str());
        Ok(true)
    }

    /// Removes a tag. Returns the digest it pointed at, if it existed.
    pub async fn delete_tag(&mut self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        let (repo, tag) = (repo.as_str(), tag.as_str());
        let digest: Option<String> = sqlx::query_scalar(
            "DELETE FROM tags WHERE name = $2 AND repository_id = (SELECT id FROM repositories WHERE name = $1) \
             RETURNING digest",
        )
        .bind(repo)
        .bind(tag)
        .fetch_optional(&mut *self.tx)
        .await?;
        self.touch(repo);
        digest.map(|d| typed::digest("tags", tag, &d)).transpose()
    }
}
