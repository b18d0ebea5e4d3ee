//! Indexing a distribution-layout store: whole repositories in one transaction each.

use sqlx::{Any, Transaction};

use berth_types::{Digest, RepoName, Tag};

use crate::{now_millis, typed, Backend, Metadata, NewManifest, Result};

/// Everything found for one repository of an existing store.
#[derive(Debug, Clone)]
pub struct ImportedRepository<'a> {
    pub repository: &'a RepoName,
    pub blobs: Vec<(&'a Digest, u64)>,
    pub manifests: Vec<NewManifest<'a>>,
    pub tags: Vec<(&'a Tag, &'a Digest)>,
    /// Whether the repository has a manifests directory (shows in the catalog).
    pub listed: bool,
}

impl Metadata {
    /// Records everything found for some repositories of an existing store,
    /// in one transaction. Idempotent.
    pub async fn import_repositories(&self, imps: &[ImportedRepository<'_>]) -> Result<()> {
        let mut tx = self.begin(&self.write).await?;
        for imp in imps {
            Self::import_one(self.backend, &mut tx, imp).await?;
        }
        tx.commit().await?;
        for imp in imps {
            self.cache.invalidate(imp.repository.as_str());
        }
        Ok(())
    }

    pub(crate) async fn import_one(
        backend: Backend,
        tx: &mut Transaction<'_, Any>,
        imp: &ImportedRepository<'_>,
    ) -> Result<()> {
        let repo_id = Self::ensure_repository(backend, tx, imp.repository.as_str()).await?;
        if imp.listed {
            sqlx::query("UPDATE repositories SET listed = 1 WHERE id = $1").bind(repo_id).execute(&mut **tx).await?;
        }
        let now = now_millis();
        for (digest, size) in &imp.blobs {
            sqlx::query(
                "INSERT INTO blobs (digest, size, created_at, last_used) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (digest) DO NOTHING",
            )
            .bind(digest.as_str())
            .bind(typed::db_size(*size)?)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (repository_id, digest) DO NOTHING",
            )
            .bind(repo_id)
            .bind(digest.as_str())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        for m in &imp.manifests {
            Self::insert_manifest(backend, tx, repo_id, m).await?;
        }
        for (tag, digest) in &imp.tags {
            sqlx::query(
                "INSERT INTO tags (repository_id, name, digest, updated_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $3) \
                 ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repo_id)
            .bind(tag.as_str())
            .bind(digest.as_str())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}
