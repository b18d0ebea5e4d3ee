//! Background workers: upload purging, garbage collection, retention, and
//! writing noted pulls. Each is a loop on an interval that stops with the
//! shutdown token; the work itself is idempotent, so a run cut short by a
//! stop or a crash is finished by the next.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use berth_registry::gc::GcOptions;
use berth_registry::progress::NoProgress;
use berth_registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Runs `work` after `first`, then every `interval`, until `stop`.
fn periodic<F, Fut>(
    name: &'static str,
    first: Duration,
    interval: Duration,
    stop: CancellationToken,
    work: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    tokio::spawn(async move {
        let mut wait = first;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = interval;
            if let Err(e) = work().await {
                tracing::error!(job = name, error = %e, "background job failed");
            }
        }
    })
}

pub fn start(cfg: &Config, registry: &Registry, stop: &CancellationToken) -> Result<Vec<JoinHandle<()>>> {
    let mut workers = Vec::new();
    let writable = !cfg.storage.maintenance.readonly.enabled;

    let purge = cfg.storage.maintenance.uploadpurging.clone();
    if purge.enabled && writable {
        let r = registry.clone();
        // The first pass runs soon after start, as a crash may have left uploads behind.
        workers.push(periodic(
            "upload purge",
            Duration::from_secs(10).min(purge.interval),
            purge.interval,
            stop.clone(),
            move || {
                let r = r.clone();
                async move {
                    let before = berth_types::duration::millis_before(berth_metadata::now_millis(), purge.age);
                    let n = r.purge_uploads(before, purge.dryrun).await?;
                    if n > 0 {
                        tracing::info!(purged = n, dry_run = purge.dryrun, "purged stale uploads");
                    }
                    Ok(())
                }
            },
        ));
    }

    if cfg.gc.enabled && writable {
        let r = registry.clone();
        let opts = GcOptions {
            grace: cfg.gc.grace,
            delete_untagged: cfg.gc.deleteuntagged,
            delete_referrers: false,
            dry_run: cfg.gc.dryrun,
        };
        // A collection interrupted by a crash resumes with the first run after start.
        workers.push(periodic(
            "garbage collection",
            Duration::from_secs(60).min(cfg.gc.interval),
            cfg.gc.interval,
            stop.clone(),
            move || {
                let (r, opts) = (r.clone(), opts.clone());
                async move {
                    r.collect_garbage(&opts, &NoProgress).await?;
                    Ok(())
                }
            },
        ));
    }

    let policies = cfg.retention_policies()?;
    if !policies.is_empty() && writable {
        let r = registry.clone();
        let (grace, dry_run, interval) = (cfg.gc.grace, cfg.retention.dryrun, cfg.retention.interval);
        workers.push(periodic("retention", interval, interval, stop.clone(), move || {
            let (r, policies) = (r.clone(), policies.clone());
            async move {
                r.apply_retention(&policies, grace, dry_run, &NoProgress).await?;
                Ok(())
            }
        }));
    }

    let r = registry.clone();
    let every = Duration::from_secs(30);
    workers.push(periodic("pull times", every, every, stop.clone(), move || {
        let r = r.clone();
        async move { Ok(r.flush_pulls().await?) }
    }));
    Ok(workers)
}
