//! Manifests, what they reference, and their referrers.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use berth_types::{Digest, RepoName, Tag};

use crate::{locking, now_millis, typed, Backend, Kind, Metadata, MetadataError, Result, WriteTx, RACE_RETRIES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerRow {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// JSON object text, when the manifest has annotations.
    pub annotations: Option<String>,
}

/// A manifest to record, with everything it references.
#[derive(Debug, Clone)]
pub struct NewManifest<'a> {
    pub repository: &'a RepoName,
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub size: u64,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a Digest>,
    pub annotations: Option<String>,
    /// Blobs (config, layers) that must be linked in the repository.
    pub blobs: Vec<&'a Digest>,
    /// Child manifests that must exist in the repository.
    pub children: Vec<&'a Digest>,
    pub tag: Option<&'a Tag>,
    /// Skip the presence checks (import, where children may come later).
    pub trust_references: bool,
}

/// Why a manifest could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutManifestOutcome {
    Stored,
    MissingBlob(Digest),
    MissingManifest(Digest),
}

impl Metadata {
    pub(crate) fn manifest_row(r: &AnyRow) -> Result<ManifestRow> {
        let digest: String = r.try_get(0)?;
        let size = typed::size("manifests", &digest, r.try_get(2)?)?;
        Ok(ManifestRow { digest: typed::digest("manifests", &digest, &digest)?, media_type: r.try_get(1)?, size })
    }

    pub async fn get_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ManifestRow>> {
        self.cached_row(
            Kind::Manifest,
            repo.as_str(),
            digest.as_str(),
            "SELECT m.digest, m.media_type, m.size FROM manifests m JOIN repositories r ON r.id = m.repository_id \
             WHERE r.name = $1 AND m.digest = $2",
        )
        .await
    }

    pub async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<ManifestRow>> {
        self.cached_row(
            Kind::TagRow,
            repo.as_str(),
            tag.as_str(),
            "SELECT m.digest, m.media_type, m.size FROM tags t JOIN repositories r ON r.id = t.repository_id \
             JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest \
             WHERE r.name = $1 AND t.name = $2",
        )
        .await
    }

    pub(crate) async fn cached_row(
        &self,
        kind: Kind,
        repo: &str,
        key: &str,
        sql: &'static str,
    ) -> Result<Option<ManifestRow>> {
        if let Some(hit) = self.cache.row(kind, repo, key) {
            return Ok(hit);
        }
        let token = self.cache.token(repo);
        let row = sqlx::query(sql).bind(repo).bind(key).fetch_optional(&self.read).await?;
        let row = row.as_ref().map(Self::manifest_row).transpose()?;
        self.cache.put_row(kind, repo, token, key, row.clone());
        Ok(row)
    }

    /// [`WriteTx::put_manifest`] in a transaction of its own, committed
    /// only when the manifest is stored.
    pub async fn put_manifest(&self, m: &NewManifest<'_>) -> Result<PutManifestOutcome> {
        let mut tx = self.write_tx().await?;
        let outcome = tx.put_manifest(m).await?;
        if outcome == PutManifestOutcome::Stored {
            tx.commit().await?;
        }
        Ok(outcome)
    }

    pub(crate) async fn insert_manifest(
        backend: Backend,
        tx: &mut Transaction<'_, Any>,
        repo_id: i64,
        m: &NewManifest<'_>,
    ) -> Result<()> {
        sqlx::query("UPDATE repositories SET listed = 1 WHERE id = $1 AND listed = 0")
            .bind(repo_id)
            .execute(&mut **tx)
            .await?;
        let now = now_millis();
        let (digest, size) = (m.digest.as_str(), typed::db_size(m.size)?);
        // The caller has put the manifest's content in place.
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at, state, last_used) VALUES ($1, $2, $3, 0, $3) \
             ON CONFLICT (digest) DO UPDATE SET state = 0, lease_until = 0, last_used = excluded.last_used",
        )
        .bind(digest)
        .bind(size)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        // Either this inserts the row, or the row already there is locked
        // against deletion until the commit (a tag or a reference may follow).
        let existing =
            locking!(backend, "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2", "FOR KEY SHARE");
        let mut inserted = None;
        for _ in 0..RACE_RETRIES {
            let n = sqlx::query(
                "INSERT INTO manifests (repository_id, digest, media_type, size, artifact_type, subject, annotations, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (repository_id, digest) DO NOTHING",
            )
            .bind(repo_id)
            .bind(digest)
            .bind(m.media_type)
            .bind(size)
            .bind(m.artifact_type)
            .bind(m.subject.map(Digest::as_str))
            .bind(m.annotations.as_deref())
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if n > 0 {
                inserted = Some(true);
                break;
            }
            let found: Option<i64> =
                sqlx::query_scalar(existing).bind(repo_id).bind(digest).fetch_optional(&mut **tx).await?;
            if found.is_some() {
                inserted = Some(false);
                break;
            }
        }
        let Some(inserted) = inserted else {
            return Err(MetadataError::Corrupt(format!("manifest {} keeps being deleted while recorded", m.digest)));
        };
        if inserted {
            let refs = m.blobs.iter().map(|b| (b, 0i64)).chain(m.children.iter().map(|c| (c, 1i64)));
            for (child, is_manifest) in refs {
                sqlx::query(
                    "INSERT INTO manifest_references (repository_id, parent, child, child_is_manifest) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (repository_id, parent, child) DO NOTHING",
                )
                .bind(repo_id)
                .bind(digest)
                .bind(child.as_str())
                .bind(is_manifest)
                .execute(&mut **tx)
                .await?;
            }
        }
        if let Some(tag) = m.tag {
            sqlx::query(
                "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repo_id)
            .bind(tag.as_str())
            .bind(digest)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// [`WriteTx::delete_manifest`] in a transaction of its own.
    pub async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Vec<Tag>>> {
        let mut tx = self.write_tx().await?;
        let tags = tx.delete_manifest(repo, digest).await?;
        tx.commit().await?;
        Ok(tags)
    }

    /// Manifests in `repo` whose subject is `subject`, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRow>> {
        let (repo, subject) = (repo.as_str(), subject.as_str());
        let rows = sqlx::query(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m \
             JOIN repositories r ON r.id = m.repository_id \
             WHERE r.name = $1 AND m.subject = $2 AND ($3 = '' OR m.artifact_type = $3) ORDER BY m.created_at, m.digest",
        )
        .bind(repo)
        .bind(subject)
        .bind(artifact_type.unwrap_or(""))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let digest: String = r.try_get(0)?;
                Ok(ReferrerRow {
                    digest: typed::digest("manifests", &digest, &digest)?,
                    media_type: r.try_get(1)?,
                    size: typed::size("manifests", &digest, r.try_get(2)?)?,
                    artifact_type: r.try_get(3)?,
                    annotations: r.try_get(4)?,
                })
            })
            .collect()
    }
}

impl WriteTx {
    /// Records a manifest, its references and optionally a tag, in one
    /// transaction that first checks every referenced blob and child manifest
    /// is present in the repository. When something is missing, nothing
    /// about the manifest is written; the caller should roll back.
    ///
    /// On PostgreSQL the checked rows stay locked against deletion until the
    /// commit (`FOR KEY SHARE`, the weakest lock that blocks a DELETE, so
    /// uploads moving a blob's use time do not wait): a collection batch that
    /// locked a blob first deletes it and this sees it gone; one that comes
    /// later skips it or finds it referenced. Blobs are locked in digest
    /// order, the order collection locks them in.
    pub async fn put_manifest(&mut self, m: &NewManifest<'_>) -> Result<PutManifestOutcome> {
        let mut checked_blobs: Vec<&Digest> = if m.trust_references { vec![] } else { m.blobs.clone() };
        let mut checked_children: Vec<&Digest> = if m.trust_references { vec![] } else { m.children.clone() };
        checked_blobs.sort_unstable();
        checked_blobs.dedup();
        checked_children.sort_unstable();
        checked_children.dedup();
        let blob_sql = locking!(
            self.backend,
            "SELECT 1 FROM blobs b WHERE b.digest = $2 \
             AND (EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.repository_id = $1 AND rb.digest = $2) \
               OR EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = $1 AND m.digest = $2))",
            "FOR KEY SHARE OF b"
        );
        let child_sql =
            locking!(self.backend, "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2", "FOR KEY SHARE");
        let repo_id = Metadata::ensure_repository(self.backend, &mut self.tx, m.repository.as_str()).await?;
        for b in checked_blobs {
            let found: Option<i64> =
                sqlx::query_scalar(blob_sql).bind(repo_id).bind(b.as_str()).fetch_optional(&mut *self.tx).await?;
            if found.is_none() {
                return Ok(PutManifestOutcome::MissingBlob(b.clone()));
            }
        }
        for c in checked_children {
            let found: Option<i64> =
                sqlx::query_scalar(child_sql).bind(repo_id).bind(c.as_str()).fetch_optional(&mut *self.tx).await?;
            if found.is_none() {
                return Ok(PutManifestOutcome::MissingManifest(c.clone()));
            }
        }
        Metadata::insert_manifest(self.backend, &mut self.tx, repo_id, m).await?;
        self.touch(m.repository.as_str());
        Ok(PutManifestOutcome::Stored)
    }

    /// Deletes a manifest from a repository with the tags pointing at it.
    /// Returns the removed tags, or None if the manifest was not there.
    pub async fn delete_manifest(&mut self, repo: &RepoName, digest: &Digest) -> Result<Option<Vec<Tag>>> {
        let (repo, digest) = (repo.as_str(), digest.as_str());
        let repo_id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(repo)
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(repo_id) = repo_id else {
            return Ok(None);
        };
        // The manifest first, then what refers to it: a push that tags it
        // holds it (FOR KEY SHARE) and so finishes before this starts. If it
        // is not there now, there is nothing to delete, whatever comes later.
        let found: Option<i64> = sqlx::query_scalar(locking!(
            self.backend,
            "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2",
            "FOR UPDATE"
        ))
        .bind(repo_id)
        .bind(digest)
        .fetch_optional(&mut *self.tx)
        .await?;
        if found.is_none() {
            return Ok(None);
        }
        let mut tags: Vec<String> =
            sqlx::query_scalar("DELETE FROM tags WHERE repository_id = $1 AND digest = $2 RETURNING name")
                .bind(repo_id)
                .bind(digest)
                .fetch_all(&mut *self.tx)
                .await?;
        tags.sort_unstable();
        sqlx::query("DELETE FROM manifest_references WHERE repository_id = $1 AND parent = $2")
            .bind(repo_id)
            .bind(digest)
            .execute(&mut *self.tx)
            .await?;
        let n = sqlx::query("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(digest)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        self.touch(repo);
        (n > 0).then(|| typed::tags("tags", digest, tags)).transpose()
    }
}
