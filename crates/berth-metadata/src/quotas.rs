//! Bytes held by a namespace, for quotas.

use berth_types::{Digest, RepoName};

use crate::{typed, Metadata, Result};

impl Metadata {
    /// Bytes of the distinct blobs (layers and manifests) held by the
    /// repositories of a namespace (`ns` itself and everything below `ns/`).
    /// A blob shared by several repositories counts once.
    pub async fn namespace_usage(&self, ns: &RepoName) -> Result<u64> {
        let ns = ns.as_str();
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
        typed::size("blobs", ns, total.unwrap_or(0))
    }

    /// Whether any repository of the namespace already holds `digest`.
    pub async fn namespace_has_blob(&self, ns: &RepoName, digest: &Digest) -> Result<bool> {
        let (ns, digest) = (ns.as_str(), digest.as_str());
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
}
