//! The background workers of a serving process, from the configuration: upload
//! purging, garbage collection, retention and pull times, and the worker that
//! runs the jobs administrators queue (see `berth-jobs`).

use std::time::Duration;

use anyhow::Result;
use berth_jobs::{AdminJobs, JobSettings, JobsHandle, Maintenance, PurgeSchedule, RetentionSchedule, Runner};
use berth_registry::gc::GcOptions;
use berth_registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// How long a shutdown waits for workers after the HTTP drain: they are
/// asked to stop when the shutdown starts, and stop between units of work.
pub const EXIT_GRACE: Duration = Duration::from_secs(10);

/// Starts the workers `cfg` asks for; they stop when `stop` is cancelled.
/// The handle is what the HTTP edge shows and wakes.
pub fn start(cfg: &Config, registry: &Registry, stop: &CancellationToken) -> Result<(Runner, JobsHandle)> {
    let writable = !cfg.storage.maintenance.readonly.enabled;
    let purge = &cfg.storage.maintenance.uploadpurging;
    let policies = cfg.retention_policies()?;
    let m = Maintenance {
        purge: (purge.enabled && writable).then_some(PurgeSchedule {
            interval: purge.interval,
            age: purge.age,
            dry_run: purge.dryrun,
        }),
        gc: (cfg.gc.enabled && writable).then(|| {
            let opts = GcOptions {
                grace: cfg.gc.grace,
                delete_untagged: cfg.gc.deleteuntagged,
                delete_referrers: false,
                dry_run: cfg.gc.dryrun,
            };
            (cfg.gc.interval, opts)
        }),
        retention: (!policies.is_empty() && writable).then_some(RetentionSchedule {
            interval: cfg.retention.interval,
            policies: policies.clone(),
            grace: cfg.gc.grace,
            dry_run: cfg.retention.dryrun,
        }),
        pulls: Duration::from_secs(30),
    };
    let mut runner = Runner::with_cancel(stop.child_token());
    for w in berth_jobs::maintenance(registry, m) {
        runner.spawn(w);
    }
    let handle = JobsHandle::with_board(runner.board());
    let settings = JobSettings { gc_grace: cfg.gc.grace, retention: policies };
    runner.spawn(Box::new(AdminJobs::new(registry.clone(), settings, handle.clone())));
    Ok((runner, handle))
}
