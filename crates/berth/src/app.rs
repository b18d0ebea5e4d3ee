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

use crate::config::{default_data_dir, Config};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Import,
    /// A maintenance command working on the store directly.
    Maintain,
}

pub fn check_config(file: &Path) -> Result<()> {
    let cfg = Config::load(Some(file), std::env::vars())?;
    let (storage, db) = describe_storage(&cfg);
    println!("configuration OK: {}", file.display());
    println!("  listen:   {} ({})", cfg.http.addr, cfg.http.net);
    println!("  storage:  {storage}");
    println!("  metadata: {db}");
    println!("  deletes:  {}", if cfg.storage.delete.enabled { "enabled" } else { "disabled" });
    match berth_auth::Authorizer::new(cfg.auth.clone())? {
        Some(a) => println!("  auth:     {}", a.mode()),
        None => println!("  auth:     none (everyone may pull, push and delete)"),
    }
    if cfg.storage.maintenance.readonly.enabled {
        println!("  read-only mode");
    }
    Ok(())
}

fn fs_root(cfg: &Config) -> PathBuf {
    cfg.storage
        .filesystem
        .as_ref()
        .and_then(|f| f.rootdirectory.clone())
        .unwrap_or_else(|| default_data_dir(&|k| std::env::var(k).ok()))
}

/// The embedded SQLite file; None in memory, or when the database is PostgreSQL.
fn db_path(cfg: &Config) -> Option<PathBuf> {
    if cfg.database.postgres_dsn().is_some() {
        return None;
    }
    cfg.database
        .path
        .clone()
        .or_else(|| cfg.storage.inmemory.is_none().then(|| fs_root(cfg).join("_berth").join("metadata.sqlite")))
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
            format!("postgres at {}", cfg.database.redacted_dsn().unwrap_or_default())
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

/// The lock a server holds on its embedded database for its whole life, so
/// that a second server, or an offline maintenance command, does not open it
/// beside it: `_berth/serve.lock` in a filesystem store, `<database>.lock`
/// beside the SQLite file of an object store. Ok(None) when there is nothing
/// to lock (in memory).
pub(crate) fn lock_store(cfg: &Config) -> Result<Option<Result<std::fs::File, ()>>> {
    if cfg.storage.inmemory.is_some() {
        return Ok(None);
    }
    let path = if cfg.storage.s3.is_some() || cfg.storage.oss.is_some() {
        match db_path(cfg) {
            Some(db) => db.with_extension("lock"),
            None => return Ok(None),
        }
    } else {
        fs_root(cfg).join("_berth").join("serve.lock")
    };
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
    let (storage, scratch): (Arc<dyn StorageDriver>, _) = if let Some(mut s3) = cfg.object_store(&env)? {
        s3.ca_bundle = crate::config::ca_bundle(&env)?;
        let (bucket, endpoint) = (s3.bucket.clone(), s3.endpoint.clone());
        let d = S3Driver::new(s3).context("configuring the S3 driver")?;
        d.check().await.with_context(|| format!("reaching bucket {bucket} at {endpoint}"))?;
        (Arc::new(d), None)
    } else if cfg.storage.inmemory.is_some() {
        (Arc::new(MemoryDriver::new()), None)
    } else {
        let root = fs_root(cfg);
        let fs = FsDriver::new(&root).with_context(|| format!("opening storage at {}", root.display()))?;
        (Arc::new(fs), None::<tempfile::TempDir>)
    };
    let (meta, created, scratch) = if let Some(dsn) = cfg.database.postgres_dsn() {
        // Named without its password.
        let shown = cfg.database.redacted_dsn().unwrap_or_default();
        let (meta, created) = Metadata::open_postgres(dsn, cfg.database.max_connections())
            .await
            .with_context(|| format!("opening metadata database {shown}"))?;
        (meta, created, scratch)
    } else {
        let (db, scratch) = match db_path(cfg) {
            Some(p) => (p, scratch),
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
                println!(
                    "imported {} repositories: {} blobs, {} manifests, {} tags ({} entries skipped)",
                    summary.repositories, summary.blobs, summary.manifests, summary.tags, summary.skipped
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

pub fn run(mode: Mode, config_file: Option<PathBuf>) -> Result<()> {
    let cfg = Config::load(config_file.as_deref(), std::env::vars())?;
    crate::logging::init(&cfg);
    let _lock = match lock_store(&cfg)? {
        Some(Err(())) => anyhow::bail!(
            "another berth server uses the store at {}; stop it first (maintenance commands talk to it instead)",
            fs_root(&cfg).display()
        ),
        other => other,
    };
    // Blocking threads each get an allocator arena; a bound keeps memory predictable.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let built = build(&cfg, mode).await?;
        match mode {
            Mode::Import => {
                built.registry.metadata().close().await;
                Ok(())
            }
            Mode::Serve | Mode::Maintain => serve(&cfg, built).await,
        }
    })
}

async fn serve(cfg: &Config, built: Built) -> Result<()> {
    let registry = built.registry.clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));

    // A collection a crash cut short is finished before anything is served.
    if !cfg.storage.maintenance.readonly.enabled {
        registry.finish_interrupted_collection().await.context("finishing an interrupted garbage collection")?;
    }
    let workers = crate::jobs::start(cfg, &registry, &shutdown)?;

    let auth = berth_auth::Authorizer::new(cfg.auth.clone())?;
    if let Some(a) = &auth {
        tracing::info!(mode = a.mode(), "authentication enabled");
    }
    let server_cfg = berth_server::ServerConfig {
        host: cfg.http.host.clone(),
        relative_urls: cfg.http.relativeurls,
        headers: cfg.response_headers()?,
        catalog_max_entries: cfg.catalog.maxentries,
        tls: false,
        access_log: !cfg.log.accesslog.disabled,
        log_fields: (!cfg.log.fields.is_empty()).then(|| serde_json::to_string(&cfg.log.fields).unwrap_or_default()),
        auth,
        lifecycle: berth_server::LifecycleConfig { gc_grace: cfg.gc.grace, retention: cfg.retention_policies()? },
    };
    let router = berth_server::router(registry.clone(), server_cfg);
    let (storage, db) = describe_storage(cfg);
    let drain = cfg.http.draintimeout;

    let drained = if cfg.http.net == "unix" {
        let path = PathBuf::from(&cfg.http.addr);
        let _ = std::fs::remove_file(&path);
        let listener =
            tokio::net::UnixListener::bind(&path).with_context(|| format!("listening on {}", path.display()))?;
        announce(&format!("unix:{}", path.display()), &storage, &db);
        berth_server::serve(listener, router, shutdown.clone().cancelled_owned(), drain).await
    } else {
        let addr =
            if cfg.http.addr.starts_with(':') { format!("0.0.0.0{}", cfg.http.addr) } else { cfg.http.addr.clone() };
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        announce(&format!("http://{local}"), &storage, &db);
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        berth_server::serve(listener, router, shutdown.clone().cancelled_owned(), drain).await
    };
    if !drained {
        tracing::warn!(?drain, "in-flight requests did not finish within http.draintimeout; stopping");
    }
    shutdown.cancel();
    for w in workers {
        let _ = w.await;
    }
    if let Err(e) = registry.flush_pulls().await {
        tracing::warn!(error = %e, "could not record the last pulls");
    }
    registry.metadata().close().await;
    tracing::info!("stopped");
    Ok(())
}

fn announce(addr: &str, storage: &str, db: &str) {
    // On stdout, one line, so people and scripts can see where it listens.
    println!("berth {} listening on {addr}", env!("CARGO_PKG_VERSION"));
    println!("berth storage: {storage}; metadata: {db}");
    tracing::info!(addr, storage, metadata = db, "listening");
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
