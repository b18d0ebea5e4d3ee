//! Blobs and their links into repositories: claims, commits, use times.

use sqlx::{Any, Transaction};

use berth_types::{Digest, RepoName};

use crate::{now_millis, typed, Metadata, MetadataError, Result, WriteTx};

/// The outcome of [`WriteTx::claim_blob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobClaim {
    Present,
    Write,
}

/// How long a blob may stay `committing` before garbage collection may take it.
pub(crate) const COMMIT_LEASE_MS: i64 = 15 * 60 * 1000;

impl Metadata {
    /// Size of a blob readable in `repo`: linked as a layer, or a manifest of it.
    pub async fn repository_blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        if let Some(hit) = self.cache.blob(repo, digest) {
            return hit.map(|v| typed::size("blobs", digest, v)).transpose();
        }
        let token = self.cache.token(repo);
        let size = sqlx::query_scalar(
            "SELECT b.size FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
               JOIN blobs b ON b.digest = rb.digest WHERE r.name = $1 AND rb.digest = $2 \
             UNION ALL SELECT m.size FROM manifests m JOIN repositories r ON r.id = m.repository_id \
               WHERE r.name = $1 AND m.digest = $2 LIMIT 1",
        )
        .bind(repo)
        .bind(digest)
        .fetch_optional(&self.read)
        .await?;
        self.cache.put_blob(repo, token, digest, size);
        size.map(|v| typed::size("blobs", digest, v)).transpose()
    }

    /// Up to `limit` repositories that hold a blob as a layer, in name order.
    pub async fn repositories_with_blob(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>> {
        let key = digest.as_str();
        let names = sqlx::query_scalar(
            "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
             WHERE rb.digest = $1 ORDER BY r.name LIMIT $2",
        )
        .bind(key)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.read)
        .await?;
        typed::repos("repository_blobs", key, names)
    }

    /// Size of a blob known anywhere in the store.
    #[cfg(test)]
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let digest = digest.as_str();
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.read)
            .await?;
        size.map(|v| typed::size("blobs", digest, v)).transpose()
    }

    /// [`WriteTx::claim_blob`] in a transaction of its own.
    pub async fn claim_blob(&self, digest: &Digest, size: u64) -> Result<BlobClaim> {
        let mut tx = self.write_tx().await?;
        let claim = tx.claim_blob(digest, size).await?;
        tx.commit().await?;
        Ok(claim)
    }

    /// [`WriteTx::finish_blob`] in a transaction of its own.
    pub async fn finish_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let mut tx = self.write_tx().await?;
        tx.finish_blob(repo, digest).await?;
        tx.commit().await
    }

    /// [`WriteTx::link_existing`] in a transaction of its own.
    pub async fn link_existing(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let present = tx.link_existing(repo, digest).await?;
        tx.commit().await?;
        Ok(present)
    }

    /// Claims, finishes and links in one go: for tests and callers that
    /// already put the content in place.
    #[cfg(test)]
    pub async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        self.claim_blob(digest, size).await?;
        self.finish_blob(repo, digest).await
    }

    /// Moves a blob's use time, so garbage collection leaves it alone for
    /// another grace period.
    pub async fn touch_blob(&self, digest: &Digest) -> Result<()> {
        let digest = digest.as_str();
        sqlx::query("UPDATE blobs SET last_used = $2 WHERE digest = $1 AND state = 0")
            .bind(digest)
            .bind(now_millis())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub(crate) async fn insert_link(tx: &mut Transaction<'_, Any>, repo_id: i64, digest: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (repository_id, digest) DO NOTHING",
        )
        .bind(repo_id)
        .bind(digest)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Removes a blob's link from `repo`. Returns whether it was linked.
    pub async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        let r = sqlx::query(
            "DELETE FROM repository_blobs WHERE digest = $2 \
             AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
        )
        .bind(repo)
        .bind(digest)
        .execute(&self.write)
        .await?;
        self.cache.invalidate(repo);
        Ok(r.rows_affected() > 0)
    }
}

impl WriteTx {
    /// Starts committing a blob. `Present` means the content is already in
    /// storage (and stays: its use time was just moved); `Write` means the
    /// caller must put the content in place, then call [`WriteTx::finish_blob`].
    ///
    /// One statement, so claims race safely between instances: a present blob
    /// keeps its state and has its use time moved; a new one is inserted, and
    /// one still committing gets a new lease, both as `committing`. A claim
    /// that meets a collection deleting the row waits for it, then inserts.
    pub async fn claim_blob(&mut self, digest: &Digest, size: u64) -> Result<BlobClaim> {
        let (digest, size) = (digest.as_str(), typed::db_size(size)?);
        let now = now_millis();
        let state: i64 = sqlx::query_scalar(
            "INSERT INTO blobs (digest, size, created_at, state, lease_until, last_used) VALUES ($1, $2, $3, 1, $4, $3) \
             ON CONFLICT (digest) DO UPDATE SET last_used = excluded.last_used, \
               lease_until = CASE WHEN blobs.state = 0 THEN blobs.lease_until ELSE excluded.lease_until END \
             RETURNING state",
        )
        .bind(digest)
        .bind(size)
        .bind(now)
        .bind(now + COMMIT_LEASE_MS)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(if state == 0 { BlobClaim::Present } else { BlobClaim::Write })
    }

    /// Marks a claimed blob's content as in place and links it into `repo`.
    /// Fails if collection took the row meanwhile (the commit outlived its
    /// lease), as the content may have gone with it.
    pub async fn finish_blob(&mut self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        let now = now_millis();
        let found = sqlx::query("UPDATE blobs SET state = 0, lease_until = 0, last_used = $2 WHERE digest = $1")
            .bind(digest)
            .bind(now)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        if found == 0 {
            return Err(MetadataError::Corrupt(format!(
                "blob {digest} was collected before its commit finished (lease ran out)"
            )));
        }
        let repo_id = Metadata::ensure_repository(self.backend, &mut self.tx, repo).await?;
        Metadata::insert_link(&mut self.tx, repo_id, digest, now).await?;
        self.touch(repo);
        Ok(())
    }

    /// Links a blob whose content is present into `repo`, moving its use
    /// time. False when the blob is not (or no longer) present.
    pub async fn link_existing(&mut self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        let now = now_millis();
        let present = sqlx::query("UPDATE blobs SET last_used = $2 WHERE digest = $1 AND state = 0")
            .bind(digest)
            .bind(now)
            .execute(&mut *self.tx)
            .await?
            .rows_affected()
            == 1;
        if present {
            let repo_id = Metadata::ensure_repository(self.backend, &mut self.tx, repo).await?;
            Metadata::insert_link(&mut self.tx, repo_id, digest, now).await?;
            self.touch(repo);
        }
        Ok(present)
    }
}
