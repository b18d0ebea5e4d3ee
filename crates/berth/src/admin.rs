//! Maintenance commands: `gc`, `retention`, `repo delete`, `quotas`. With no
//! server on the store they work on it directly (holding the store's lock);
//! with a server running they ask it, through its administration endpoints,
//! so the server's caches and locks stay right. Credentials for a server with
//! authentication come from `BERTH_USER` and `BERTH_PASSWORD`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_registry::gc::{GcOptions, GcReport};
use berth_registry::progress::Progress;
use berth_registry::quota::QuotaUsage;
use berth_registry::retention::RetentionReport;
use berth_types::RepoName;

use crate::app::{self, Mode};
use crate::config::Config;

pub enum Command {
    Gc { dry_run: bool, delete_untagged: bool, delete_referrers: bool, grace: Option<Duration> },
    Retention { dry_run: bool },
    DeleteRepository { name: String },
    Quotas,
}

/// Runs `cmd` on the registry `registry` names (the only one when the
/// configuration has no `registries` key).
pub fn run(cmd: Command, config_file: Option<PathBuf>, registry: Option<&str>) -> Result<()> {
    let whole = Config::load(config_file.as_deref(), std::env::vars())?;
    crate::logging::init(&whole);
    let (cfg, host) = whole.select(registry)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    match app::lock_store(cfg)? {
        Some(Err(())) => rt.block_on(remote(cfg, cmd, host)),
        lock => {
            let out = rt.block_on(local(cfg, cmd));
            drop(lock);
            out
        }
    }
}

struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn phase(&self, name: &str) {
        self.0.set_message(name.to_owned());
    }
    fn advance(&self, items: usize) {
        self.0.inc(items as u64);
    }
}

fn bar() -> Bar {
    let b = indicatif::ProgressBar::new_spinner();
    b.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos} done ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    b.enable_steady_tick(Duration::from_millis(200));
    Bar(b)
}

fn held_back(blobs: u64, manifests: u64) -> String {
    match (blobs, manifests) {
        (0, 0) => "; nothing was held back by the grace period".to_owned(),
        (b, 0) => format!("; the grace period held back {b} blobs"),
        (0, m) => format!("; the grace period held back {m} untagged manifests"),
        (b, m) => format!("; the grace period held back {b} blobs and {m} untagged manifests"),
    }
}

fn print_gc(r: &GcReport) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    out!(
        "garbage collection {verb} {} manifests and {} blobs, {} bytes{}",
        r.manifests_deleted,
        r.blobs_deleted,
        r.bytes_freed,
        held_back(r.held_back_blobs, r.held_back_manifests)
    );
    if r.dry_run {
        for m in &r.manifests {
            out!("  manifest {m}");
        }
        for b in &r.blobs {
            out!("  blob {b}");
        }
    }
}

fn print_retention(r: &RetentionReport) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    out!(
        "retention {verb} {} tags and {} manifests, kept {} tags{}",
        r.tags.len(),
        r.manifests.len(),
        r.kept.len(),
        held_back(0, r.held_back_manifests)
    );
    for t in &r.tags {
        out!("  delete tag {t}");
    }
    for m in &r.manifests {
        out!("  delete manifest {m}");
    }
    if r.dry_run {
        for k in &r.kept {
            out!("  keep tag {k}");
        }
    }
}

fn print_quotas(usage: &[QuotaUsage]) {
    if usage.is_empty() {
        out!("no quotas are configured");
    }
    for q in usage {
        let pct = q.used as f64 * 100.0 / q.limit.max(1) as f64;
        out!("{}: {} of {} bytes ({pct:.1} %)", q.namespace, q.used, q.limit);
    }
}

async fn local(cfg: &Config, cmd: Command) -> Result<()> {
    let built = app::build(cfg, Mode::Maintain).await?;
    let reg = built.registry.clone();
    let out = match cmd {
        Command::Gc { dry_run, delete_untagged, delete_referrers, grace } => {
            let opts = GcOptions { grace: grace.unwrap_or(cfg.gc.grace), delete_untagged, delete_referrers, dry_run };
            let b = bar();
            let r = reg.collect_garbage(&opts, &b).await;
            b.0.finish_and_clear();
            print_gc(&r?);
            Ok(())
        }
        Command::Retention { dry_run } => {
            let b = bar();
            let r = reg.apply_retention(&cfg.retention_policies()?, cfg.gc.grace, dry_run, &b).await;
            b.0.finish_and_clear();
            print_retention(&r?);
            Ok(())
        }
        Command::DeleteRepository { name } => {
            let repo = RepoName::parse(&name).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            reg.delete_repository(&berth_registry::Caller::internal("berth repo delete"), &repo).await?;
            out!("deleted repository {repo} (its blobs go with the next garbage collection)");
            Ok(())
        }
        Command::Quotas => {
            print_quotas(&reg.quota_usage().await?);
            Ok(())
        }
    };
    reg.close().await;
    out
}

/// The URL of the server this configuration describes, for local maintenance:
/// the one its lock file names, else `http.host`, else `http.addr` on loopback.
fn server_url(cfg: &Config) -> Result<String> {
    let announced = app::lock_path(cfg).and_then(|p| std::fs::read_to_string(p).ok());
    if let Some(url) = announced.map(|s| s.trim().to_owned()).filter(|s| s.starts_with("http://")) {
        // An address on every interface is asked on loopback.
        return Ok(url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:"));
    }
    if let Some(h) = &cfg.http.host {
        return Ok(h.trim_end_matches('/').to_owned());
    }
    if cfg.http.net == "unix" {
        bail!("the running server listens on a unix socket; use its administration endpoints with curl --unix-socket");
    }
    let addr = &cfg.http.addr;
    let port = addr.rsplit(':').next().unwrap_or("5000");
    let host = addr.rsplit_once(':').map(|(h, _)| h).filter(|h| !h.is_empty() && *h != "0.0.0.0" && *h != "[::]");
    Ok(format!("http://{}:{port}", host.unwrap_or("127.0.0.1")))
}

/// How the CLI proves itself to the server: `admin.tokenfile`, or
/// `BERTH_USER` and `BERTH_PASSWORD`.
/// What every request to the server carries: credentials, and the host name
/// of the registry asked in a process serving several.
struct Credentials {
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
    host: Option<String>,
}

impl Credentials {
    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = match &self.host {
            Some(h) => req.header(reqwest::header::HOST, h),
            None => req,
        };
        match (&self.token, &self.user, &self.password) {
            (Some(t), _, _) => req.bearer_auth(t),
            (None, Some(u), Some(p)) => req.basic_auth(u, Some(p)),
            _ => req,
        }
    }
}

/// Follows a queued job to its end with a progress line, and returns its
/// report as JSON text.
async fn follow_job(
    client: &reqwest::Client,
    base: &str,
    location: Option<String>,
    queued: &str,
    credentials: &Credentials,
) -> Result<String> {
    let job: serde_json::Value = serde_json::from_str(queued).context("reading the queued job")?;
    // The status is asked of the server reached, whatever name its Location
    // carries (the registry's host name may not resolve here).
    let url = match (location, job["id"].as_str()) {
        (Some(l), _) if l.starts_with("http") => {
            let path = l.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()));
            format!("{base}{}", path.unwrap_or_default())
        }
        (Some(l), _) => format!("{base}{l}"),
        (None, Some(id)) => format!("{base}/_berth/jobs/{id}"),
        (None, None) => bail!("the server queued a job but did not say where to follow it"),
    };
    let b = bar();
    b.0.set_message("queued");
    let outcome = loop {
        let resp = credentials.apply(client.get(&url)).send().await.with_context(|| format!("following {url}"))?;
        if !resp.status().is_success() {
            break Err(anyhow::anyhow!("following {url}: the server answered {}", resp.status()));
        }
        let job: serde_json::Value = resp.json().await.with_context(|| format!("reading {url}"))?;
        match job["state"].as_str() {
            Some("done") => break Ok(job["result"].to_string()),
            Some("failed") => {
                break Err(anyhow::anyhow!("the job failed: {}", job["error"].as_str().unwrap_or("no reason given")))
            }
            Some("running") => {
                let p = &job["progress"];
                if let (Some(phase), Some(done)) = (p["phase"].as_str(), p["done"].as_u64()) {
                    b.0.set_message(phase.to_owned());
                    b.0.set_position(done);
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    b.0.finish_and_clear();
    outcome
}

async fn remote(cfg: &Config, cmd: Command, host: Option<&str>) -> Result<()> {
    let base = server_url(cfg)?;
    {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "a server runs on this store; asking it at {base}");
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(24 * 3600)).build()?;
    let flag = |b: bool| if b { "true" } else { "false" };
    let req = match &cmd {
        Command::Gc { dry_run, delete_untagged, delete_referrers, grace } => {
            let grace = grace.map(|g| format!("&grace={}ms", g.as_millis())).unwrap_or_default();
            client.post(format!(
                "{base}/_berth/gc?dryrun={}&deleteuntagged={}&deletereferrers={}{grace}",
                flag(*dry_run),
                flag(*delete_untagged),
                flag(*delete_referrers)
            ))
        }
        Command::Retention { dry_run } => client.post(format!("{base}/_berth/retention?dryrun={}", flag(*dry_run))),
        Command::DeleteRepository { name } => client.delete(format!("{base}/_berth/repositories/{name}")),
        Command::Quotas => client.get(format!("{base}/_berth/quotas")),
    };
    let user = std::env::var("BERTH_USER").ok().filter(|u| !u.is_empty());
    let credentials = Credentials {
        token: cfg.admin.token()?,
        user: user.clone(),
        password: std::env::var("BERTH_PASSWORD").ok(),
        host: host.map(str::to_owned),
    };
    let req = credentials.apply(req);
    let resp = req.send().await.with_context(|| format!("asking the server at {base}"))?;
    let status = resp.status();
    let location = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut body = resp.text().await?;
    if status == reqwest::StatusCode::ACCEPTED && matches!(cmd, Command::Gc { .. } | Command::Retention { .. }) {
        body = follow_job(&client, &base, location, &body, &credentials).await?;
    } else if !status.is_success() {
        // Say what the server refused and what to set.
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let e = &v["errors"][0];
                let m = format!("{}: {}", e["code"].as_str()?, e["message"].as_str()?);
                Some(match e["detail"].as_str() {
                    Some(d) => format!("{m} ({d})"),
                    None => m,
                })
            })
            .unwrap_or(body);
        let hint = match (status.as_u16(), &user) {
            (401, None) => "; set BERTH_USER and BERTH_PASSWORD to an administrator's credentials (auth.access.admins)",
            (401, Some(_)) => "; BERTH_USER and BERTH_PASSWORD were refused: check them",
            (403, Some(_)) => "; BERTH_USER is not allowed this: list it in auth.access.admins (or a group: there)",
            (403, None) => {
                "; with no auth configured, run this on the server's machine, or give it admin.tokenfile; \
                 with auth, set BERTH_USER and BERTH_PASSWORD to an administrator's credentials"
            }
            _ => "",
        };
        bail!("the server at {base} answered {status}: {detail}{hint}");
    }
    match cmd {
        Command::Gc { .. } => print_gc(&serde_json::from_str(&body)?),
        Command::Retention { .. } => print_retention(&serde_json::from_str(&body)?),
        Command::DeleteRepository { name } => {
            out!("deleted repository {name} (its blobs go with the next garbage collection)")
        }
        Command::Quotas => print_quotas(&serde_json::from_str::<Vec<QuotaUsage>>(&body)?),
    }
    Ok(())
}
