//! Composition root: configuration → storage and metadata → registry →
//! maintenance workers → HTTP listener, and the ordered shutdown that
//! reverses it on SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use berth_metadata::Metadata;
use berth_registry::import::{self, ImportProgress};
use berth_registry::{Registry, RegistryConfig};
use berth_storage::fs::FsDriver;
use berth_storage::memory::MemoryDriver;
use berth_storage::s3::S3Driver;
use berth_storage::StorageDriver;
use berth_types::RepoName;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Import,
    /// A maintenance command working on the store directly.
    Maintain,
}

/// Validates the whole configuration, with the files it names (htpasswd,
/// certificate bundles, keys, token files) and credentials from the
/// environment, creating nothing; prints the effective settings, secrets
/// masked, and "configuration OK" only when all of it holds.
pub fn check_config(file: &Path) -> Result<()> {
    let whole = Config::load(Some(file), std::env::vars())?;
    let mut out = vec![format!("  listen:    {} ({})", whole.http.addr, whole.http.net)];
    for (name, hosts, cfg) in whole.units() {
        let lines = describe(cfg).with_context(|| name.map(|n| format!("registry {n}")).unwrap_or_default())?;
        match name {
            None => out.extend(lines),
            Some(n) => {
                let default = if whole.default_registry.as_deref() == Some(n) { " (the default)" } else { "" };
                out.push(format!("  registry:  {n} at {}{default}", self::hosts(hosts)));
                out.extend(lines.into_iter().map(|l| format!("  {l}")));
            }
        }
    }
    if !whole.registries.is_empty() && whole.default_registry.is_none() {
        out.push("  other hosts: answered 421 Misdirected Request".to_owned());
    }
    crate::out!("configuration OK: {}", file.display());
    for line in out {
        crate::out!("{line}");
    }
    Ok(())
}

/// The effective settings of one registry, checked with the files they name.
fn describe(cfg: &Config) -> Result<Vec<String>> {
    let env = |k: &str| std::env::var(k).ok();
    let auth = berth_auth::Authorizer::check(&cfg.auth)?;
    cfg.admin.token()?;
    if cfg.object_store(&env)?.is_some() {
        crate::config::ca_bundle(&env)?;
    }
    let (storage, db) = describe_storage(cfg);
    let mut out = Vec::new();
    out.push(format!("  storage:   {storage}"));
    out.push(format!("  metadata:  {db}"));
    out.push(format!("  deletes:   {}", if cfg.storage.delete.enabled { "enabled" } else { "disabled" }));
    if cfg.storage.maintenance.readonly.enabled {
        out.push("  read-only: every write is refused".to_owned());
    }
    match &auth {
        Some(mode) => out.push(format!("  auth:      {mode}")),
        None => out.push("  auth:      none (everyone may pull, push and delete)".to_owned()),
    }
    let access = &cfg.auth.access;
    if cfg.auth.enabled() && access.rules.is_empty() {
        out.push("  access:    every authenticated user may do everything, anonymous callers nothing".to_owned());
    }
    for r in &access.rules {
        let who = [
            (!r.users.is_empty()).then(|| format!("users {}", r.users.join(","))),
            (!r.groups.is_empty()).then(|| format!("groups {}", r.groups.join(","))),
            r.authenticated.then(|| "every authenticated user".to_owned()),
            r.anonymous.then(|| "anonymous callers".to_owned()),
        ];
        let who: Vec<String> = who.into_iter().flatten().collect();
        let actions: Vec<&str> = r.actions.iter().map(|a| a.as_str()).collect();
        out.push(format!(
            "  rule:      {} may {} on {}",
            who.join(" and "),
            actions.join(","),
            r.repositories.join(" ")
        ));
    }
    let admins = if !access.admins.is_empty() {
        access.admins.join(", ")
    } else if cfg.auth.enabled() {
        "none (auth.access.admins is empty: no one may run gc, retention or quotas remotely)".to_owned()
    } else {
        "callers on this machine (no auth)".to_owned()
    };
    let admins =
        if cfg.admin.tokenfile.is_some() { format!("{admins}; and the admin.tokenfile token") } else { admins };
    out.push(format!("  admins:    {admins}"));
    let gc = &cfg.gc;
    let human = berth_types::duration::display;
    out.push(format!(
        "  gc:        {}, grace {}{}{}",
        if gc.enabled { format!("every {}", human(gc.interval)) } else { "on demand".to_owned() },
        human(gc.grace),
        if gc.deleteuntagged { ", untagged manifests too" } else { "" },
        if gc.dryrun { ", dry run" } else { "" }
    ));
    for p in cfg.retention_policies()? {
        let mut what = Vec::new();
        if let Some(n) = p.keep_last {
            what.push(format!("keep the newest {n}"));
        }
        if !p.keep_tags.is_empty() {
            what.push(format!("keep tags {}", p.keep_tags.join(",")));
        }
        if let Some(a) = p.older_than {
            what.push(format!("delete tags unused for {}", human(a)));
        }
        if p.delete_untagged {
            what.push("delete untagged manifests".to_owned());
        }
        let repos: Vec<String> = cfg
            .retention
            .policies
            .iter()
            .find(|c| c.keeplast == p.keep_last && c.keeptags == p.keep_tags)
            .map(|c| c.repositories.clone())
            .unwrap_or_default();
        out.push(format!("  retention: {}: {}", repos.join(" "), what.join(", ")));
    }
    for q in cfg.quota_limits()? {
        out.push(format!("  quota:     {} at most {} bytes", q.namespace, q.limit));
    }
    for w in &cfg.warnings {
        out.push(format!("  warning:   {w}"));
    }
    Ok(out)
}

fn fs_root(cfg: &Config) -> PathBuf {
    cfg.fs_root()
}

fn db_path(cfg: &Config) -> Option<PathBuf> {
    cfg.sqlite_path()
}

fn describe_storage(cfg: &Config) -> (String, String) {
    let object_store =
        cfg.storage.s3.as_ref().map(|s| ("s3", s.bucket.clone(), s.regionendpoint.clone(), s.rootdirectory.clone()));
    let object_store = object_store.or_else(|| {
        cfg.storage.oss.as_ref().map(|s| ("oss", s.bucket.clone(), s.endpoint.clone(), s.rootdirectory.clone()))
    });
    let storage = if let Some((kind, bucket, endpoint, root)) = object_store {
        format!(
            "{kind} bucket {} at {}{}{}",
            bucket.unwrap_or_default(),
            endpoint.unwrap_or_default(),
            root.map(|r| format!(", under {r}")).unwrap_or_default(),
            if cfg.storage.redirect.disable { "" } else { ", blob reads redirected" }
        )
    } else if cfg.storage.inmemory.is_some() {
        "inmemory (lost at exit)".to_owned()
    } else {
        format!("filesystem at {}", fs_root(cfg).display())
    };
    let db = match db_path(cfg) {
        _ if cfg.database.postgres_dsn().is_some() => {
            format!("postgres at {}", cfg.database.shown_postgres())
        }
        Some(p) => format!("sqlite at {}", p.display()),
        None => "sqlite in a temporary file".into(),
    };
    (storage, db)
}

/// Everything built from the configuration, and what must outlive it.
pub(crate) struct Built {
    pub registry: Registry,
    _scratch: Option<tempfile::TempDir>,
}

/// Where the store's lock lives; None when there is nothing to lock.
pub(crate) fn lock_path(cfg: &Config) -> Option<PathBuf> {
    if cfg.storage.inmemory.is_some() {
        return None;
    }
    if cfg.storage.s3.is_some() || cfg.storage.oss.is_some() {
        return db_path(cfg).map(|db| db.with_extension("lock"));
    }
    Some(fs_root(cfg).join("_berth").join("serve.lock"))
}

/// The lock a server holds on its embedded database for its whole life, so
/// that a second server, or an offline maintenance command, does not open it
/// beside it: `_berth/serve.lock` in a filesystem store, `<database>.lock`
/// beside the SQLite file of an object store. Ok(None) when there is nothing
/// to lock (in memory).
pub(crate) fn lock_store(cfg: &Config) -> Result<Option<Result<std::fs::File, ()>>> {
    let Some(path) = lock_path(cfg) else { return Ok(None) };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(Ok(f))),
        Err(std::fs::TryLockError::WouldBlock) => Ok(Some(Err(()))),
        Err(std::fs::TryLockError::Error(e)) => Err(anyhow::anyhow!("locking {}: {e}", path.display())),
    }
}

pub(crate) async fn build(cfg: &Config, mode: Mode) -> Result<Built> {
    let env = |k: &str| std::env::var(k).ok();
    let storage: Arc<dyn StorageDriver> = if let Some(mut s3) = cfg.object_store(&env)? {
        s3.ca_bundle = crate::config::ca_bundle(&env)?;
        let (bucket, endpoint) = (s3.bucket.clone(), s3.endpoint.clone());
        let d = S3Driver::new(s3).context("configuring the S3 driver")?;
        d.check().await.with_context(|| format!("reaching bucket {bucket} at {endpoint}"))?;
        Arc::new(d)
    } else if cfg.storage.inmemory.is_some() {
        Arc::new(MemoryDriver::new())
    } else {
        let root = fs_root(cfg);
        let reserve = cfg.storage.filesystem.as_ref().map(|f| f.reserve_bytes()).transpose()?.flatten();
        let fs =
            FsDriver::with_reserve(&root, reserve).with_context(|| format!("opening storage at {}", root.display()))?;
        Arc::new(fs)
    };
    let (meta, created, scratch) = if let Some(dsn) = cfg.database.postgres_dsn() {
        // Named without its password.
        let shown = cfg.database.shown_postgres();
        let (meta, created) =
            Metadata::open_postgres_in(dsn, cfg.database.max_connections(), cfg.database.schema.as_deref())
                .await
                .with_context(|| format!("opening metadata database {shown}"))?;
        (meta, created, None)
    } else {
        // The in-memory store has a database for the process only.
        let (db, scratch) = match db_path(cfg) {
            Some(p) => (p, None),
            None => {
                let t = tempfile::tempdir().context("creating a temporary metadata directory")?;
                (t.path().join("metadata.sqlite"), Some(t))
            }
        };
        let (meta, created) =
            Metadata::open_sqlite(&db).await.with_context(|| format!("opening metadata database {}", db.display()))?;
        (meta, created, scratch)
    };
    // A store without a database (a distribution store, or a lost database) is indexed first.
    if mode == Mode::Import || created {
        let repos = import::find_repositories(storage.as_ref()).await?;
        if mode == Mode::Import || !repos.is_empty() {
            tracing::info!(repositories = repos.len(), "indexing the existing store");
            let progress = Progress::new();
            let summary = import::import(storage.as_ref(), &meta, &progress).await?;
            progress.finish();
            tracing::info!(?summary, "store indexed");
            if mode == Mode::Import {
                crate::out!(
                    "imported {} repositories: {} blobs, {} manifests, {} tags ({} entries skipped)",
                    summary.repositories,
                    summary.blobs,
                    summary.manifests,
                    summary.tags,
                    summary.skipped
                );
            }
        }
    }
    let rc = RegistryConfig {
        delete_enabled: cfg.storage.delete.enabled,
        read_only: cfg.storage.maintenance.readonly.enabled,
        quotas: cfg.quota_limits()?,
        gc_grace: cfg.gc.grace,
    };
    Ok(Built { registry: Registry::new(storage, meta, rc), _scratch: scratch })
}

struct Progress(indicatif::ProgressBar);

impl Progress {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} importing [{bar:40}] {pos}/{len} repositories {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Progress(bar)
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl ImportProgress for Progress {
    fn repositories_found(&self, count: usize) {
        self.0.set_length(count as u64);
    }
    fn repository_done(&self, name: &RepoName) {
        self.0.set_message(name.to_string());
        self.0.inc(1);
    }
    fn skipped(&self, what: &str, why: &str) {
        self.0.suspend(|| tracing::warn!(what, why, "skipped while importing"));
    }
}

/// A bound listener: bound before anything is created on disk, so a port in
/// use leaves the disk as it was.
enum Bound {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

async fn bind(cfg: &Config) -> Result<Bound> {
    if cfg.http.net == "unix" {
        let path = PathBuf::from(&cfg.http.addr);
        let _ = std::fs::remove_file(&path);
        let l = tokio::net::UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
        return Ok(Bound::Unix(l, path));
    }
    let addr = if cfg.http.addr.starts_with(':') { format!("0.0.0.0{}", cfg.http.addr) } else { cfg.http.addr.clone() };
    let l = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr}"))?;
    Ok(Bound::Tcp(l))
}

/// Serves (or imports into) every registry the configuration names; `import`
/// takes one, chosen by `registry` when there are several.
pub fn run(mode: Mode, config_file: Option<PathBuf>, registry: Option<&str>) -> Result<()> {
    let cfg = Config::load(config_file.as_deref(), std::env::vars())?;
    crate::logging::init(&cfg);
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    // Blocking threads each get an allocator arena; a bound keeps memory predictable.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = match mode {
            Mode::Serve => Some(bind(&cfg).await?),
            _ => None,
        };
        let units: Vec<Unit> = match mode {
            Mode::Serve => cfg.units().into_iter().map(|(name, hosts, cfg)| Unit { name, hosts, cfg }).collect(),
            _ => {
                let (one, _) = cfg.select(registry)?;
                vec![Unit { name: registry, hosts: &[], cfg: one }]
            }
        };
        let mut locks = Vec::new();
        for u in &units {
            let mut lock = match lock_store(u.cfg)? {
                Some(Err(())) => anyhow::bail!(
                    "another berth server uses the store at {}{}; stop it first (maintenance commands talk to it instead)",
                    fs_root(u.cfg).display(),
                    u.named()
                ),
                Some(Ok(f)) => Some(f),
                None => None,
            };
            // The lock file names where the server listens, for the maintenance commands.
            if let (Some(f), Some(Bound::Tcp(l))) = (&mut lock, &listener) {
                use std::io::{Seek, Write};
                let url = format!("http://{}\n", l.local_addr()?);
                let _ = f.set_len(0).and_then(|()| f.rewind()).and_then(|()| f.write_all(url.as_bytes()));
            }
            locks.push(lock);
        }
        let mut built = Vec::new();
        for u in &units {
            built.push(build(u.cfg, mode).await.with_context(|| u.named().trim_start().to_owned())?);
        }
        match listener {
            None => {
                for b in built {
                    b.registry.close().await;
                }
                Ok(())
            }
            Some(listener) => serve(&cfg, units, built, listener).await,
        }
    })
}

/// One registry of the process: its name when there are several, the host
/// names it answers, its configuration.
struct Unit<'a> {
    name: Option<&'a str>,
    hosts: &'a [String],
    cfg: &'a Config,
}

impl Unit<'_> {
    /// " (registry NAME)" when there are several, for messages.
    fn named(&self) -> String {
        self.name.map(|n| format!(" (registry {n})")).unwrap_or_default()
    }
}

/// Where the metadata keeps the signing key of the issuer Berth runs for
/// anonymous rules, shared by every instance on the database.
const IMPLICIT_KEY: &str = "token_signing_key";

/// A registry made ready to serve: its router and what stops with it.
struct Serving {
    registry: Registry,
    workers: berth_jobs::Runner,
    router: axum::Router,
}

/// Readies one registry: finishes an interrupted collection, starts its
/// workers, builds its authorizer and its router.
async fn ready(
    process: &Config,
    unit: &Unit<'_>,
    built: Built,
    shutdown: &CancellationToken,
    streams: &berth_server::StreamLimit,
) -> Result<(Serving, Built)> {
    let cfg = unit.cfg;
    let registry = built.registry.clone();
    // A collection a crash cut short is finished before anything is served.
    if !cfg.storage.maintenance.readonly.enabled {
        registry.finish_interrupted_collection().await.context("finishing an interrupted garbage collection")?;
    }
    let (workers, jobs) = crate::jobs::start(cfg, &registry, shutdown)?;
    let implicit_key = if cfg.auth.wants_implicit_issuer() {
        let fresh = berth_auth::issuer::generate_key_pem()?;
        Some(registry.shared_setting(IMPLICIT_KEY, &fresh).await.context("storing the token signing key")?)
    } else {
        None
    };
    let auth = berth_auth::Authorizer::new(cfg.auth.clone(), implicit_key.as_deref())?;
    if let Some(a) = &auth {
        tracing::info!(mode = a.mode(), registry = unit.name, "authentication enabled");
    }
    let server_cfg = berth_server::ServerConfig {
        host: cfg.http.host.clone(),
        relative_urls: cfg.http.relativeurls,
        headers: cfg.response_headers()?,
        catalog_max_entries: cfg.catalog.maxentries,
        tls: false,
        access_log: !process.log.accesslog.disabled,
        auth,
        jobs,
        admin_token: cfg.admin.token()?,
        automatic_mount: cfg.uploads.automaticmount,
        trusted_proxies: process.trusted_proxies()?,
        streams: streams.clone(),
        name: unit.name.map(str::to_owned),
    };
    let router = berth_server::router(registry.clone(), server_cfg);
    Ok((Serving { registry, workers, router }, built))
}

async fn serve(cfg: &Config, units: Vec<Unit<'_>>, built: Vec<Built>, listener: Bound) -> Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    let streams = berth_server::StreamLimit::new(cfg.http.limits.streams);
    let mut serving = Vec::new();
    let mut keep = Vec::new();
    for (u, b) in units.iter().zip(built) {
        let (s, b) = ready(cfg, u, b, &shutdown, &streams).await.with_context(|| u.named().trim_start().to_owned())?;
        serving.push(s);
        keep.push(b);
    }
    let router = if cfg.registries.is_empty() {
        serving[0].router.clone()
    } else {
        let default = cfg.default_registry.as_deref().and_then(|d| units.iter().position(|u| u.name == Some(d)));
        let entries = units.iter().zip(&serving).map(|(u, s)| (u.hosts.to_vec(), s.router.clone())).collect();
        berth_server::VirtualHosts::new(entries, default, cfg.trusted_proxies()?)
            .map_err(|e| anyhow::anyhow!("registries: {e}"))?
            .into_router()
    };
    let drain = cfg.http.draintimeout;
    let t = &cfg.http.timeouts;
    let limits = berth_server::ConnectionLimits {
        first_byte: t.firstbyte,
        header: t.header,
        idle: t.idle,
        body_idle: t.bodyidle,
        min_body_rate: t.minbodyrate,
        per_client: cfg.http.limits.connectionsperclient,
        max_connections: cfg.http.limits.connections,
    };
    let announce_all = |addr: &str| {
        for u in &units {
            let (storage, db) = describe_storage(u.cfg);
            announce(addr, u, &storage, &db);
        }
    };
    let drained = match listener {
        Bound::Unix(listener, path) => {
            crate::out!("berth {} listening on unix:{}", env!("CARGO_PKG_VERSION"), path.display());
            announce_all(&format!("unix:{}", path.display()));
            berth_server::serve(listener, router, limits, shutdown.clone().cancelled_owned(), drain).await
        }
        Bound::Tcp(listener) => {
            let local = listener.local_addr()?;
            crate::out!("berth {} listening on http://{local}", env!("CARGO_PKG_VERSION"));
            announce_all(&format!("http://{local}"));
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            berth_server::serve(listener, router, limits, shutdown.clone().cancelled_owned(), drain).await
        }
    };
    if !drained {
        tracing::warn!(?drain, "in-flight requests did not finish within http.draintimeout; stopping");
    }
    shutdown.cancel();
    // The registries' workers stop side by side, each within the grace.
    let stops: Vec<_> = serving
        .iter_mut()
        .map(|s| tokio::spawn(std::mem::take(&mut s.workers).shutdown(crate::jobs::EXIT_GRACE)))
        .collect();
    for stop in stops {
        let _ = stop.await;
    }
    for (u, s) in units.iter().zip(&serving) {
        if let Err(e) = s.registry.flush_pulls().await {
            tracing::warn!(error = %e, registry = u.name, "could not record the last pulls");
        }
        s.registry.close().await;
    }
    drop(keep);
    tracing::info!("stopped");
    Ok(())
}

/// On stdout, one line per registry, so people and scripts can see what it serves.
fn announce(addr: &str, unit: &Unit<'_>, storage: &str, db: &str) {
    match unit.name {
        None => crate::out!("berth storage: {storage}; metadata: {db}"),
        Some(name) => crate::out!("berth registry {name} at {}: storage: {storage}; metadata: {db}", hosts(unit.hosts)),
    }
    tracing::info!(addr, registry = unit.name, storage, metadata = db, "listening");
}

fn hosts(hosts: &[String]) -> String {
    if hosts.is_empty() {
        "every other host".to_owned()
    } else {
        hosts.join(", ")
    }
}

async fn signals(shutdown: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
