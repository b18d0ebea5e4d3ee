//! Jobs an administrator asks for: a collection or a retention run, recorded
//! with its queue item in one transaction, run by whichever instance claims
//! it (see `berth-jobs`), and readable on every instance while it runs and
//! after it ends.

use std::time::Duration;

use berth_metadata::{Claimed, JobRow, QueuePolicy, QueueStats, Retried};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::gc::GcOptions;
use crate::{Registry, RegistryError, Result};

/// The queue kind of administration jobs.
pub const JOB_QUEUE: &str = "admin";

/// Claims of one job after which it is given up: the instances running it
/// kept stopping or crashing.
pub const JOB_ATTEMPTS: u32 = 5;

/// How jobs are leased: a running job renews its lease as it reports progress.
pub const JOB_POLICY: QueuePolicy = QueuePolicy {
    lease: Duration::from_secs(120),
    // Given up by [`JOB_ATTEMPTS`], with the job marked failed, never dead-lettered unseen.
    max_attempts: u32::MAX,
    backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(30),
};

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobRequest {
    Gc {
        dry_run: bool,
        delete_untagged: bool,
        delete_referrers: bool,
        /// The grace period asked for; without it the registry's own.
        grace_ms: Option<u64>,
    },
    Retention {
        dry_run: bool,
    },
}

impl JobRequest {
    pub fn kind(&self) -> &'static str {
        match self {
            JobRequest::Gc { .. } => "gc",
            JobRequest::Retention { .. } => "retention",
        }
    }

    /// The collection options, with `grace` unless the request names one.
    pub fn gc_options(&self, grace: Duration) -> Option<GcOptions> {
        match *self {
            JobRequest::Gc { dry_run, delete_untagged, delete_referrers, grace_ms } => Some(GcOptions {
                grace: grace_ms.map_or(grace, Duration::from_millis),
                delete_untagged,
                delete_referrers,
                dry_run,
            }),
            JobRequest::Retention { .. } => None,
        }
    }
}

/// A job as `/_berth/jobs/<id>` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: Uuid,
    pub kind: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub request: serde_json::Value,
    /// While it runs: `{"phase": ..., "done": n}`.
    pub progress: Option<serde_json::Value>,
    /// When done: the report (a collection's or a retention run's).
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

fn json(s: Option<&str>) -> Option<serde_json::Value> {
    s.and_then(|s| serde_json::from_str(s).ok())
}

impl From<JobRow> for JobStatus {
    fn from(r: JobRow) -> Self {
        JobStatus {
            id: r.id,
            request: json(Some(&r.params)).unwrap_or_default(),
            progress: json(r.progress.as_deref()),
            result: json(r.result.as_deref()),
            kind: r.kind,
            state: r.state,
            error: r.error,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

/// A job this instance has claimed and must finish, release or lose.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub request: JobRequest,
    claim: Claimed,
}

impl Registry {
    /// Records a job and queues its work in one transaction. What the job
    /// could never do here (delete with deletes disabled, or read-only) is
    /// refused now, not after the client was told it is queued.
    pub async fn submit_job(&self, request: &JobRequest) -> Result<Uuid> {
        match *request {
            JobRequest::Gc { dry_run: false, delete_untagged: true, .. } | JobRequest::Retention { dry_run: false } => {
                self.check_delete()?
            }
            _ => {}
        }
        let id = Uuid::new_v4();
        let params = serde_json::to_string(request).map_err(|e| RegistryError::Internal(e.to_string()))?;
        let mut tx = self.inner.meta.write_tx().await?;
        tx.create_job(&id, request.kind(), &params).await?;
        tx.enqueue(JOB_QUEUE, &id.to_string(), Duration::ZERO).await?;
        tx.commit().await?;
        tracing::info!(job = %id, kind = request.kind(), "job queued");
        Ok(id)
    }

    pub async fn job(&self, id: &Uuid) -> Result<Option<JobStatus>> {
        Ok(self.inner.meta.job(id).await?.map(JobStatus::from))
    }

    /// The latest jobs, newest first.
    pub async fn recent_jobs(&self, limit: i64) -> Result<Vec<JobStatus>> {
        Ok(self.inner.meta.recent_jobs(limit).await?.into_iter().map(JobStatus::from).collect())
    }

    /// Jobs waiting, running and given up.
    pub async fn job_backlog(&self) -> Result<QueueStats> {
        Ok(self.inner.meta.queue_stats(JOB_QUEUE).await?)
    }

    /// Takes the next queued job, if any, and marks it running. A job whose
    /// record is gone or finished is dropped; one claimed too often is failed.
    pub async fn claim_job(&self) -> Result<Option<ClaimedJob>> {
        loop {
            let Some(claim) = self.inner.meta.claim(JOB_QUEUE, 1, &JOB_POLICY).await?.pop() else {
                return Ok(None);
            };
            let row = match Uuid::parse_str(&claim.payload) {
                Ok(id) => self.inner.meta.job(&id).await?,
                Err(_) => None,
            };
            let Some(row) = row.filter(|r| r.state == "queued" || r.state == "running") else {
                self.inner.meta.ack(&claim).await?;
                continue;
            };
            let request = match serde_json::from_str::<JobRequest>(&row.params) {
                Ok(r) if claim.attempts <= JOB_ATTEMPTS => r,
                Ok(_) => {
                    let why = format!("given up after {JOB_ATTEMPTS} attempts: the instances running it stopped");
                    self.inner.meta.finish_job(&row.id, Err(&why)).await?;
                    self.inner.meta.ack(&claim).await?;
                    continue;
                }
                Err(e) => {
                    self.inner.meta.finish_job(&row.id, Err(&format!("unreadable request: {e}"))).await?;
                    self.inner.meta.ack(&claim).await?;
                    continue;
                }
            };
            self.inner.meta.job_running(&row.id, None).await?;
            return Ok(Some(ClaimedJob { id: row.id, request, claim }));
        }
    }

    /// Records a running job's progress and keeps its lease. False when the
    /// lease was lost (another instance has the job now).
    pub async fn job_progress(&self, job: &ClaimedJob, progress: &serde_json::Value) -> Result<bool> {
        if !self.inner.meta.renew(&job.claim, &JOB_POLICY).await? {
            return Ok(false);
        }
        self.inner.meta.job_running(&job.id, Some(&progress.to_string())).await?;
        Ok(true)
    }

    /// Records how a job ended and takes it off the queue.
    pub async fn finish_job(
        &self,
        job: ClaimedJob,
        outcome: std::result::Result<serde_json::Value, String>,
    ) -> Result<()> {
        let text = outcome.as_ref().map(|v| v.to_string()).map_err(String::as_str);
        self.inner.meta.finish_job(&job.id, text.as_deref().map_err(|e| *e)).await?;
        self.inner.meta.ack(&job.claim).await?;
        match &outcome {
            Ok(_) => tracing::info!(job = %job.id, "job done"),
            Err(e) => tracing::warn!(job = %job.id, error = %e, "job failed"),
        }
        Ok(())
    }

    /// Hands a job that was stopped (a shutdown) back to the queue, for this
    /// instance or another to run again.
    pub async fn release_job(&self, job: ClaimedJob) -> Result<()> {
        self.inner.meta.job_queued(&job.id).await?;
        if self.inner.meta.retry(&job.claim, "stopped by a shutdown", &JOB_POLICY).await? == Retried::LostLease {
            tracing::warn!(job = %job.id, "job was taken over by another instance");
        }
        Ok(())
    }
}
