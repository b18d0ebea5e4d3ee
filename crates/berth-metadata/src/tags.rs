//! Tags: set, deleted, listed in pages.

use std::sync::Arc;

use berth_types::{Digest, RepoName, Tag};

use crate::{typed, Metadata, Result, MAX_CACHED_LIST};

/// The entries of a sorted list after `last`, at most `limit` of them.
pub(crate) fn page_after(all: &[String], last: Option<&str>, limit: i64) -> Vec<String> {
    let start = match last {
        Some(l) => all.partition_point(|x| x.as_str() <= l),
        None => 0,
    };
    all[start..].iter().take(limit.max(0) as usize).cloned().collect()
}

impl Metadata {
    /// Points a tag at a manifest already recorded in the repository.
    #[cfg(test)]
    pub async fn set_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<bool> {
        let (repo, tag, digest) = (repo.as_str(), tag.as_str(), digest.as_str());
        use crate::{is_foreign_key_violation, now_millis};
        let r = sqlx::query(
            "INSERT INTO tags (repository_id, name, digest, updated_at) \
             SELECT r.id, $2, $3, $4 FROM repositories r JOIN manifests m ON m.repository_id = r.id AND m.digest = $3 \
             WHERE r.name = $1 \
             ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
        )
        .bind(repo)
        .bind(tag)
        .bind(digest)
        .bind(now_millis())
        .execute(&self.write)
        .await;
        self.cache.invalidate(repo);
        match r {
            Ok(r) => Ok(r.rows_affected() > 0),
            // The manifest was deleted between the statement's read and its insert.
            Err(e) if is_foreign_key_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a tag. Returns the digest it pointed at, if it existed.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        let (repo, tag) = (repo.as_str(), tag.as_str());
        let digest: Option<String> = sqlx::query_scalar(
            "DELETE FROM tags WHERE name = $2 AND repository_id = (SELECT id FROM repositories WHERE name = $1) \
             RETURNING digest",
        )
        .bind(repo)
        .bind(tag)
        .fetch_optional(&self.write)
        .await?;
        self.cache.invalidate(repo);
        digest.map(|d| typed::digest("tags", tag, &d)).transpose()
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
