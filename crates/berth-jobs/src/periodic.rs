//! Work on a schedule: upload purging, garbage collection, retention, and
//! writing noted pull times.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use berth_registry::gc::GcOptions;
use berth_registry::progress::Progress;
use berth_registry::retention::RetentionPolicy;
use berth_registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{now_millis, Worker, WorkerState};

type Unit = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Runs a unit of work after a first delay, then every interval.
pub struct Periodic {
    name: String,
    interval: Duration,
    next: Instant,
    work: Box<dyn FnMut(CancellationToken) -> Unit + Send>,
}

impl Periodic {
    pub fn new<F, Fut>(name: &str, first: Duration, interval: Duration, mut work: F) -> Self
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Periodic {
            name: name.to_owned(),
            interval,
            next: Instant::now() + first,
            work: Box::new(move |cancel| Box::pin(work(cancel))),
        }
    }
}

#[async_trait::async_trait]
impl Worker for Periodic {
    fn name(&self) -> &str {
        &self.name
    }

    async fn work(&mut self, cancel: &CancellationToken) -> anyhow::Result<WorkerState> {
        let result = (self.work)(cancel.clone()).await;
        self.next = Instant::now() + self.interval;
        result.map(|()| WorkerState::Idle)
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep_until(self.next).await;
    }

    fn next_run(&self) -> Option<i64> {
        let wait = self.next.saturating_duration_since(Instant::now());
        Some(now_millis().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)))
    }
}

/// Stops a long run between its steps when the runner shuts down.
pub(crate) struct Cancellable(pub CancellationToken);

impl Progress for Cancellable {
    fn cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

#[derive(Debug, Clone)]
pub struct PurgeSchedule {
    pub interval: Duration,
    /// Uploads untouched this long are purged.
    pub age: Duration,
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub struct RetentionSchedule {
    pub interval: Duration,
    pub policies: Vec<RetentionPolicy>,
    pub grace: Duration,
    pub dry_run: bool,
}

/// The scheduled maintenance of one registry; None leaves a job off.
#[derive(Debug, Clone)]
pub struct Maintenance {
    pub purge: Option<PurgeSchedule>,
    /// Collection every interval, with these options.
    pub gc: Option<(Duration, GcOptions)>,
    pub retention: Option<RetentionSchedule>,
    /// How often noted pulls are written.
    pub pulls: Duration,
}

/// The scheduled workers of `registry`.
pub fn maintenance(registry: &Registry, m: Maintenance) -> Vec<Box<dyn Worker>> {
    let mut out: Vec<Box<dyn Worker>> = Vec::new();
    if let Some(p) = m.purge {
        let r = registry.clone();
        // The first pass runs soon after start, as a crash may have left uploads behind.
        out.push(Box::new(Periodic::new(
            "upload purge",
            Duration::from_secs(10).min(p.interval),
            p.interval,
            move |_| {
                let (r, p) = (r.clone(), p.clone());
                async move {
                    let before = berth_types::duration::millis_before(now_millis(), p.age);
                    let n = r.purge_uploads(before, p.dry_run).await?;
                    if n > 0 {
                        tracing::info!(purged = n, dry_run = p.dry_run, "purged stale uploads");
                    }
                    Ok(())
                }
            },
        )));
    }
    if let Some((interval, opts)) = m.gc {
        let r = registry.clone();
        // A collection interrupted by a crash resumes with the first run after start.
        out.push(Box::new(Periodic::new(
            "garbage collection",
            Duration::from_secs(60).min(interval),
            interval,
            move |cancel| {
                let (r, opts) = (r.clone(), opts.clone());
                async move {
                    match r.collect_garbage(&opts, &Cancellable(cancel)).await {
                        Err(berth_registry::RegistryError::Cancelled) => Ok(()),
                        other => other.map(|_| ()).map_err(Into::into),
                    }
                }
            },
        )));
    }
    if let Some(ret) = m.retention {
        let r = registry.clone();
        out.push(Box::new(Periodic::new("retention", ret.interval, ret.interval, move |cancel| {
            let (r, ret) = (r.clone(), ret.clone());
            async move {
                match r.apply_retention(&ret.policies, ret.grace, ret.dry_run, &Cancellable(cancel)).await {
                    Err(berth_registry::RegistryError::Cancelled) => Ok(()),
                    other => other.map(|_| ()).map_err(Into::into),
                }
            }
        })));
    }
    let r = registry.clone();
    out.push(Box::new(Periodic::new("pull times", m.pulls, m.pulls, move |_| {
        let r = r.clone();
        async move { Ok(r.flush_pulls().await?) }
    })));
    out
}
