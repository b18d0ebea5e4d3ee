//! The worker that runs administration jobs (`POST /_berth/gc`,
//! `/_berth/retention`) from the queue: one at a time, its progress written
//! back every second (which also keeps its lease), stopped between steps
//! on shutdown and handed back to the queue for the next instance or start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_registry::jobs::{ClaimedJob, JobRequest};
use berth_registry::progress::Progress;
use berth_registry::retention::RetentionPolicy;
use berth_registry::{Registry, RegistryError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Board, Worker, WorkerState};

/// What the process shares with the HTTP edge: the workers' status, and a
/// bell that wakes the job worker when a job was queued here.
#[derive(Clone, Default)]
pub struct JobsHandle {
    pub board: Board,
    wake: Arc<Notify>,
}

impl JobsHandle {
    pub fn with_board(board: Board) -> Self {
        JobsHandle { board, wake: Arc::default() }
    }

    /// Says a job was queued, so a worker of this process looks at once.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

impl std::fmt::Debug for JobsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobsHandle")
    }
}

/// What jobs run with when their request does not say.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub gc_grace: Duration,
    pub retention: Vec<RetentionPolicy>,
}

/// How often a worker without a wake-up looks for jobs queued elsewhere.
const POLL: Duration = Duration::from_secs(5);
/// How often a running job's progress is written (and its lease renewed).
const REPORT: Duration = Duration::from_secs(1);

pub struct AdminJobs {
    registry: Registry,
    settings: JobSettings,
    handle: JobsHandle,
}

impl AdminJobs {
    pub fn new(registry: Registry, settings: JobSettings, handle: JobsHandle) -> Self {
        AdminJobs { registry, settings, handle }
    }

    async fn run(&self, job: &ClaimedJob, progress: &JobProgress) -> Result<serde_json::Value, RegistryError> {
        let json = |v: serde_json::Result<serde_json::Value>| v.map_err(|e| RegistryError::Internal(e.to_string()));
        if let Some(opts) = job.request.gc_options(self.settings.gc_grace) {
            return json(serde_json::to_value(self.registry.collect_garbage(&opts, progress).await?));
        }
        match &job.request {
            JobRequest::Gc { .. } => Err(RegistryError::Internal("a collection without its options".into())),
            JobRequest::Retention { dry_run } => {
                let s = &self.settings;
                let report = self.registry.apply_retention(&s.retention, s.gc_grace, *dry_run, progress).await?;
                json(serde_json::to_value(report))
            }
        }
    }
}

/// A running job's progress, read by the reporter and stopped by shutdown.
struct JobProgress {
    at: Mutex<(String, u64)>,
    cancel: CancellationToken,
}

impl Progress for JobProgress {
    fn phase(&self, name: &str) {
        *self.at.lock().unwrap_or_else(|e| e.into_inner()) = (name.to_owned(), 0);
    }

    fn advance(&self, items: usize) {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        at.1 = at.1.saturating_add(items as u64);
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

impl JobProgress {
    fn snapshot(&self) -> serde_json::Value {
        let at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({ "phase": at.0, "done": at.1 })
    }
}

#[async_trait::async_trait]
impl Worker for AdminJobs {
    fn name(&self) -> &str {
        "administration jobs"
    }

    async fn work(&mut self, cancel: &CancellationToken) -> anyhow::Result<WorkerState> {
        let Some(job) = self.registry.claim_job().await? else { return Ok(WorkerState::Idle) };
        tracing::info!(job = %job.id, kind = job.request.kind(), "job started");
        // A lost lease (another instance took the job over) stops this run too.
        let stop = cancel.child_token();
        let progress = Arc::new(JobProgress { at: Mutex::new(("starting".into(), 0)), cancel: stop.clone() });
        // The reporter is a task of its own: the run may hold the database's
        // write connection (SQLite has one) while the reporter waits for it.
        let done = CancellationToken::new();
        let reporter = {
            let (registry, job, progress, stop) = (self.registry.clone(), job.clone(), progress.clone(), stop.clone());
            let done = done.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(REPORT);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = done.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    match registry.job_progress(&job, &progress.snapshot()).await {
                        Ok(true) => {}
                        Ok(false) => stop.cancel(),
                        Err(e) => tracing::warn!(job = %job.id, error = %e, "could not record job progress"),
                    }
                }
            })
        };
        let result = self.run(&job, &progress).await;
        let lost = stop.is_cancelled() && !cancel.is_cancelled();
        // Between two reports, never in the middle of one.
        done.cancel();
        let _ = reporter.await;
        let result = match result {
            // The run ended although the lease was lost: another instance has the job.
            _ if lost => Err(RegistryError::Cancelled),
            r => r,
        };
        match result {
            Ok(report) => self.registry.finish_job(job, Ok(report)).await?,
            Err(RegistryError::Cancelled) if cancel.is_cancelled() => self.registry.release_job(job).await?,
            Err(RegistryError::Cancelled) => tracing::warn!(job = %job.id, "job lost its lease and stopped"),
            Err(e) => self.registry.finish_job(job, Err(e.to_string())).await?,
        }
        Ok(WorkerState::Busy)
    }

    async fn wait_for_work(&mut self) {
        tokio::select! {
            _ = self.handle.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
