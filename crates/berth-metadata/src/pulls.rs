//! Pull times of tags, written in batches.

use berth_types::{RepoName, Tag};

use crate::{Metadata, Result};

impl Metadata {
    /// Records when tags were pulled (batched by the caller).
    pub async fn record_pulls(&self, pulls: &[(RepoName, Tag, i64)]) -> Result<()> {
        if pulls.is_empty() {
            return Ok(());
        }
        // In one order everywhere, so that two instances recording the same
        // tags cannot deadlock on PostgreSQL.
        let mut sorted: Vec<&(RepoName, Tag, i64)> = pulls.iter().collect();
        sorted.sort_unstable();
        let mut tx = self.begin(&self.uploads).await?;
        for (repo, tag, at) in sorted {
            sqlx::query(
                "UPDATE tags SET pulled_at = $3 WHERE name = $2 AND pulled_at < $3 \
                 AND repository_id = (SELECT id FROM repositories WHERE name = $1)",
            )
            .bind(repo.as_str())
            .bind(tag.as_str())
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
