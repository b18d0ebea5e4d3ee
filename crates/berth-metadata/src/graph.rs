//! A repository's manifests, index edges and tags, for deciding what stays (untagged
//! manifests, retention), and the deletion of untagged manifests.

use sqlx::Row;

use berth_types::{Digest, RepoName, Tag};

use crate::{locking, typed, Backend, Metadata, Result};

/// One manifest of a repository, for deciding what is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestNode {
    pub digest: Digest,
    pub created_at: i64,
    pub subject: Option<Digest>,
    pub media_type: String,
}

/// The manifests, index edges and tags of one repository.
#[derive(Debug, Clone, Default)]
pub struct RepositoryGraph {
    pub manifests: Vec<ManifestNode>,
    /// (index, child manifest)
    pub children: Vec<(Digest, Digest)>,
    pub tags: Vec<TagInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    pub name: Tag,
    pub digest: Digest,
    /// Milliseconds since the epoch.
    pub pushed_at: i64,
    pub pulled_at: i64,
}

impl Metadata {
    /// Manifests, index edges and tags of `repo`.
    pub async fn repository_graph(&self, repo: &RepoName) -> Result<RepositoryGraph> {
        let repo = repo.as_str();
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
                let digest: String = r.try_get(0)?;
                let subject: Option<String> = r.try_get(2)?;
                Ok(ManifestNode {
                    digest: typed::digest("manifests", &digest, &digest)?,
                    created_at: r.try_get(1)?,
                    subject: subject.map(|s| typed::digest("manifests", &digest, &s)).transpose()?,
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
        let children = rows
            .iter()
            .map(|r| {
                let (parent, child): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                Ok((
                    typed::digest("manifest_references", &parent, &parent)?,
                    typed::digest("manifest_references", &parent, &child)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
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
                let (name, digest): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                Ok(TagInfo {
                    name: typed::tag("tags", &name, &name)?,
                    digest: typed::digest("tags", &name, &digest)?,
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
    pub async fn delete_untagged(&self, repo: &RepoName, digests: &[Digest]) -> Result<Vec<Digest>> {
        let repo = repo.as_str();
        let mut tx = self.begin(&self.write).await?;
        let mut deleted = Vec::new();
        let mut remaining: Vec<&Digest> = digests.iter().collect();
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
                .bind(d.as_str())
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
                .bind(d.as_str())
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
                .bind(d.as_str())
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
}
