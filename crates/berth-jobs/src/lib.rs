//! Background work. A [`Worker`] does one unit of work at a time and says
//! whether more is waiting; the [`Runner`] drives each in a task of its own,
//! records its status for `/_berth/jobs`, and on shutdown cancels them all
//! and waits a bounded time: a worker observes the cancellation between
//! units (collection between batches), and one that does not finish in time
//! is aborted. Every unit is idempotent or crash-safe, so a unit cut short is
//! finished by the next run, here or on another instance.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod admin;
mod periodic;

pub use admin::{AdminJobs, JobSettings, JobsHandle};
pub use periodic::{maintenance, Maintenance, Periodic, PurgeSchedule, RetentionSchedule};

/// What a worker reports after a unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// More work is waiting: run again at once.
    Busy,
    /// Nothing to do until [`Worker::wait_for_work`] returns.
    Idle,
    /// The worker has finished for good.
    Done,
}

#[async_trait::async_trait]
pub trait Worker: Send + 'static {
    /// A stable name, for status and logs.
    fn name(&self) -> &str;

    /// Does one unit of work. Long units check `cancel` between steps and
    /// return early when it is set.
    async fn work(&mut self, cancel: &CancellationToken) -> anyhow::Result<WorkerState>;

    /// Returns when there may be work (the runner also stops waiting on
    /// shutdown). The runner waits before every unit, the first included,
    /// except right after a unit that said [`WorkerState::Busy`].
    async fn wait_for_work(&mut self);

    /// When the next unit is due, if the worker runs on a schedule
    /// (milliseconds since the epoch).
    fn next_run(&self) -> Option<i64> {
        None
    }
}

/// What one worker is doing and has done, as `/_berth/jobs` shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WorkerStatus {
    pub name: String,
    /// `busy`, `idle` or `stopped`.
    pub state: &'static str,
    pub runs: u64,
    pub failures: u64,
    /// Milliseconds since the epoch.
    pub last_started_at: Option<i64>,
    pub last_duration_ms: Option<u64>,
    pub last_error: Option<String>,
    pub next_run_at: Option<i64>,
}

/// The status of every worker of a runner, shared with whoever shows it.
#[derive(Clone, Default)]
pub struct Board(Arc<Mutex<Vec<WorkerStatus>>>);

impl Board {
    pub fn snapshot(&self) -> Vec<WorkerStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, i: usize, f: impl FnOnce(&mut WorkerStatus)) {
        if let Some(s) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
            f(s);
        }
    }

    fn add(&self, name: &str) -> usize {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.push(WorkerStatus { name: name.to_owned(), state: "idle", ..Default::default() });
        v.len() - 1
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> i64 {
    berth_metadata::now_millis()
}

/// How long a worker waits after a failed unit before trying again.
const FAILURE_PAUSE: Duration = Duration::from_secs(10);

/// Drives workers until shutdown.
pub struct Runner {
    board: Board,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    pub fn new() -> Self {
        Self::with_cancel(CancellationToken::new())
    }

    /// A runner whose workers are also asked to stop when `cancel` is.
    pub fn with_cancel(cancel: CancellationToken) -> Self {
        Runner { board: Board::default(), cancel, tasks: Vec::new() }
    }

    /// The status board, for `/_berth/jobs`.
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    pub fn spawn(&mut self, mut worker: Box<dyn Worker>) {
        let board = self.board.clone();
        let cancel = self.cancel.clone();
        let i = board.add(worker.name());
        board.update(i, |s| s.next_run_at = worker.next_run());
        self.tasks.push(tokio::spawn(async move {
            // Each round waits for work (unless the last said more is
            // waiting), then does one unit.
            let mut wait = true;
            loop {
                if wait {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = worker.wait_for_work() => {}
                    }
                } else if cancel.is_cancelled() {
                    break;
                }
                let started = Instant::now();
                board.update(i, |s| {
                    s.state = "busy";
                    s.last_started_at = Some(now_millis());
                });
                let result = worker.work(&cancel).await;
                let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let next = worker.next_run();
                board.update(i, |s| {
                    s.runs += 1;
                    s.last_duration_ms = Some(took);
                    s.state = "idle";
                    s.next_run_at = next;
                    match &result {
                        Ok(_) => s.last_error = None,
                        Err(e) => {
                            s.failures += 1;
                            s.last_error = Some(format!("{e:#}"));
                        }
                    }
                });
                wait = !matches!(result, Ok(WorkerState::Busy));
                match result {
                    Ok(WorkerState::Busy | WorkerState::Idle) => {}
                    Ok(WorkerState::Done) => break,
                    Err(e) => {
                        tracing::error!(job = worker.name(), error = format!("{e:#}"), "background job failed");
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(FAILURE_PAUSE) => {}
                        }
                    }
                }
            }
            board.update(i, |s| {
                s.state = "stopped";
                s.next_run_at = None;
            });
        }));
    }

    /// Asks every worker to stop (they see it between units of work).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Stops every worker, waiting at most `deadline` for them to reach a
    /// point where they may stop; those that do not are aborted (their unit
    /// is finished by a later run). Returns whether all stopped in time.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        self.cancel.cancel();
        let until = tokio::time::Instant::now() + deadline;
        let mut in_time = true;
        for mut t in self.tasks {
            if tokio::time::timeout_at(until, &mut t).await.is_err() {
                in_time = false;
                t.abort();
                let _ = t.await;
            }
        }
        if !in_time {
            tracing::warn!(?deadline, "background jobs did not stop in time and were cut short");
        }
        in_time
    }
}

#[cfg(test)]
mod tests;
