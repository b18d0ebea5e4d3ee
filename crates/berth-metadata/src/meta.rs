//! Settings kept in the database (`berth_meta`): values every instance shares.

use crate::{Metadata, MetadataError, Result};

impl Metadata {
    #[cfg(test)]
    pub async fn get_meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM berth_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.read)
            .await?)
    }

    #[cfg(test)]
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO berth_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The value stored under `key`, storing `value` first if there is none:
    /// of several instances racing, all get the one that was stored first.
    pub async fn meta_or_insert(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO berth_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.write)
            .await?;
        let stored: Option<String> = sqlx::query_scalar("SELECT value FROM berth_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.write)
            .await?;
        stored.ok_or_else(|| MetadataError::Corrupt(format!("berth_meta {key} vanished after it was written")))
    }
}
