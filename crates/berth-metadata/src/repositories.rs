//! Repositories: created on first write, listed once they hold a manifest.

use std::sync::Arc;

use sqlx::{Any, Transaction};

use crate::tags::page_after;
use berth_types::RepoName;

use crate::{locking, now_millis, typed, Backend, Metadata, MetadataError, Result, MAX_CACHED_LIST, RACE_RETRIES};

impl Metadata {
    /// The repository's id, creating it if needed. On PostgreSQL the row is
    /// locked (`FOR KEY SHARE`) until the transaction ends, so a concurrent
    /// repository deletion waits for what this transaction adds to it.
    pub(crate) async fn ensure_repository(backend: Backend, tx: &mut Transaction<'_, Any>, name: &str) -> Result<i64> {
        let select = locking!(backend, "SELECT id FROM repositories WHERE name = $1", "FOR KEY SHARE");
        for _ in 0..RACE_RETRIES {
            sqlx::query("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(now_millis())
                .execute(&mut **tx)
                .await?;
            // None only if a deletion committed between the two statements.
            if let Some(id) = sqlx::query_scalar(select).bind(name).fetch_optional(&mut **tx).await? {
                return Ok(id);
            }
        }
        Err(MetadataError::Corrupt(format!("repository {name} keeps being deleted while written")))
    }

    /// Repositories that ever held a manifest, in name order, after `last`.
    pub async fn list_repositories(&self, last: Option<&str>, limit: i64) -> Result<Vec<RepoName>> {
        let all = match self.cache.catalog() {
            Some(all) => Some(all),
            // Without a cache to keep it in, reading everything would be wasted.
            None if !self.cache.enabled() => None,
            None => {
                let token = self.cache.catalog_token();
                let names: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM repositories WHERE listed = 1 ORDER BY name LIMIT $1")
                        .bind(MAX_CACHED_LIST + 1)
                        .fetch_all(&self.read)
                        .await?;
                (names.len() as i64 <= MAX_CACHED_LIST).then(|| {
                    let names = Arc::new(names);
                    self.cache.put_catalog(token, names.clone());
                    names
                })
            }
        };
        if let Some(all) = all {
            return typed::repos("repositories", "catalog", page_after(&all, last, limit));
        }
        let names =
            sqlx::query_scalar("SELECT name FROM repositories WHERE listed = 1 AND name > $1 ORDER BY name LIMIT $2")
                .bind(last.unwrap_or(""))
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
        typed::repos("repositories", "catalog", names)
    }

    #[cfg(test)]
    pub async fn count_repositories(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM repositories").fetch_one(&self.read).await?)
    }

    /// Every repository known, in name order.
    pub async fn all_repositories(&self) -> Result<Vec<RepoName>> {
        let names = sqlx::query_scalar("SELECT name FROM repositories ORDER BY name").fetch_all(&self.read).await?;
        typed::repos("repositories", "all", names)
    }

    /// Removes a repository with its tags, manifests and blob links. The blobs
    /// themselves are left to garbage collection. False if it did not exist.
    /// On PostgreSQL the repository row is locked first: writers hold it
    /// (`FOR KEY SHARE`) while they add to the repository, so this waits for
    /// them, and those that come later create the repository anew.
    pub async fn delete_repository(&self, repo: &RepoName) -> Result<bool> {
        let repo = repo.as_str();
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
