//! Jobs an administrator asked for: created with their queue item in one
//! [`WriteTx`], then marked running, given progress, and finished.

use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::{now_millis, typed, Metadata, Result, WriteTx};

/// One job as recorded. `state` is `queued`, `running`, `done` or `failed`;
/// `params`, `progress` and `result` are JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub params: String,
    pub state: String,
    pub progress: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Finished jobs kept beyond this many are forgotten, oldest first.
const KEPT_JOBS: i64 = 200;

const COLUMNS: &str = "id, kind, params, state, progress, result, error, created_at, started_at, finished_at";

fn job_row(r: &AnyRow) -> Result<JobRow> {
    let id: String = r.try_get(0)?;
    Ok(JobRow {
        id: typed::uuid("jobs", &id, &id)?,
        kind: r.try_get(1)?,
        params: r.try_get(2)?,
        state: r.try_get(3)?,
        progress: r.try_get(4)?,
        result: r.try_get(5)?,
        error: r.try_get(6)?,
        created_at: r.try_get(7)?,
        started_at: r.try_get(8)?,
        finished_at: r.try_get(9)?,
    })
}

impl WriteTx {
    /// Records a queued job (its queue item is enqueued beside it).
    pub async fn create_job(&mut self, id: &Uuid, kind: &str, params: &str) -> Result<()> {
        sqlx::query("INSERT INTO jobs (id, kind, params, state, created_at) VALUES ($1, $2, $3, 'queued', $4)")
            .bind(id.to_string())
            .bind(kind)
            .bind(params)
            .bind(now_millis())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

impl Metadata {
    pub async fn job(&self, id: &Uuid) -> Result<Option<JobRow>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(job_row).transpose()
    }

    /// The latest jobs, newest first.
    pub async fn recent_jobs(&self, limit: i64) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs ORDER BY created_at DESC, id LIMIT $1"))
            .bind(limit.max(0))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(job_row).collect()
    }

    /// Marks a job running (again, after a crash or a stop) with its progress.
    pub async fn job_running(&self, id: &Uuid, progress: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET state = 'running', progress = COALESCE($2, progress), \
             started_at = COALESCE(started_at, $3) WHERE id = $1 AND state IN ('queued', 'running')",
        )
        .bind(id.to_string())
        .bind(progress)
        .bind(now_millis())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Puts a job that was stopped back to `queued`.
    pub async fn job_queued(&self, id: &Uuid) -> Result<()> {
        sqlx::query("UPDATE jobs SET state = 'queued' WHERE id = $1 AND state = 'running'")
            .bind(id.to_string())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Finishes a job with its result (`done`) or its error (`failed`), and
    /// forgets the oldest finished jobs beyond the ones kept.
    pub async fn finish_job(&self, id: &Uuid, outcome: std::result::Result<&str, &str>) -> Result<()> {
        let (state, result, error) = match outcome {
            Ok(r) => ("done", Some(r), None),
            Err(e) => ("failed", None, Some(e)),
        };
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE jobs SET state = $2, result = $3, error = $4, finished_at = $5 WHERE id = $1")
            .bind(id.to_string())
            .bind(state)
            .bind(result)
            .bind(error)
            .bind(now_millis())
            .execute(&mut *tx.tx)
            .await?;
        sqlx::query(
            "DELETE FROM jobs WHERE finished_at IS NOT NULL AND id NOT IN \
             (SELECT id FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT $1)",
        )
        .bind(KEPT_JOBS)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }
}
