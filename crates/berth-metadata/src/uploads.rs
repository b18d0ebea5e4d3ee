//! Upload sessions: how many bytes are stored and the hash state at that point.

use sqlx::any::AnyRow;
use sqlx::Row;

use berth_types::RepoName;
use uuid::Uuid;

use crate::{now_millis, typed, Metadata, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub id: Uuid,
    pub repository: RepoName,
    pub size: u64,
    pub hash_state: Vec<u8>,
    /// The storage driver's state of the unfinished upload data, if it keeps any.
    pub storage_state: Option<String>,
    pub started_at: i64,
    pub updated_at: i64,
}

impl Metadata {
    pub async fn create_upload(&self, u: &UploadRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO uploads (id, repository, size, hash_state, storage_state, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(u.id.to_string())
        .bind(u.repository.as_str())
        .bind(typed::db_size(u.size)?)
        .bind(&u.hash_state)
        .bind(&u.storage_state)
        .bind(u.started_at)
        .bind(u.updated_at)
        .execute(&self.uploads)
        .await?;
        Ok(())
    }

    pub(crate) fn upload_row(r: &AnyRow) -> Result<UploadRow> {
        let id: String = r.try_get(0)?;
        let repository: String = r.try_get(1)?;
        Ok(UploadRow {
            id: typed::uuid("uploads", &id, &id)?,
            repository: typed::repo("uploads", &id, &repository)?,
            size: typed::size("uploads", &id, r.try_get(2)?)?,
            hash_state: r.try_get(3)?,
            storage_state: r.try_get(4)?,
            started_at: r.try_get(5)?,
            updated_at: r.try_get(6)?,
        })
    }

    pub async fn get_upload(&self, id: &Uuid) -> Result<Option<UploadRow>> {
        let id = id.to_string();
        // Read through the upload connection so a status request sees the latest chunk.
        let row = sqlx::query(
            "SELECT id, repository, size, hash_state, storage_state, started_at, updated_at FROM uploads WHERE id = $1",
        )
        .bind(&id)
        .fetch_optional(&self.uploads)
        .await?;
        row.as_ref().map(Self::upload_row).transpose()
    }

    /// Advances an upload from `from_size` to `size`. Returns false when the
    /// upload is gone or was advanced by someone else meanwhile.
    pub async fn advance_upload(
        &self,
        id: &Uuid,
        from_size: u64,
        size: u64,
        hash_state: &[u8],
        storage_state: Option<&str>,
    ) -> Result<bool> {
        let (id, from_size, size) = (id.to_string(), typed::db_size(from_size)?, typed::db_size(size)?);
        let r = sqlx::query(
            "UPDATE uploads SET size = $1, hash_state = $2, storage_state = $3, updated_at = $4 WHERE id = $5 AND size = $6",
        )
        .bind(size)
        .bind(hash_state)
        .bind(storage_state)
        .bind(now_millis())
        .bind(&id)
        .bind(from_size)
        .execute(&self.uploads)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn delete_upload(&self, id: &Uuid) -> Result<bool> {
        let r = sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id.to_string()).execute(&self.uploads).await?;
        Ok(r.rows_affected() > 0)
    }

    /// Uploads not touched since `before` (milliseconds).
    pub async fn stale_uploads(&self, before: i64, limit: i64) -> Result<Vec<UploadRow>> {
        let rows = sqlx::query(
            "SELECT id, repository, size, hash_state, storage_state, started_at, updated_at FROM uploads \
             WHERE updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(Self::upload_row).collect()
    }
}
