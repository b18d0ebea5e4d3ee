//! Configuration: distribution's `config.yml` (version 0.1) keys for what
//! Berth supports, `REGISTRY_*` environment overrides, and Berth's own keys
//! (`database`). Read once, validated before use; keys Berth cannot honour
//! yet are refused with an error naming them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

mod admin;
mod compat;
mod database;
mod env;
mod gc;
mod http;
mod lenient;
mod log;
mod quotas;
mod registries;
mod retention;
mod s3;
mod secrets;
mod storage;

pub use admin::{AdminConfig, UploadsConfig};
pub use compat::{CompatibilityConfig, IGNORED, UNSUPPORTED};
pub use database::DatabaseConfig;
pub use env::apply_env;
pub use gc::GcConfig;
pub use http::{CatalogConfig, HttpConfig};
pub use log::LogConfig;
pub use quotas::QuotaConfig;
pub use registries::VirtualRegistry;
pub use retention::RetentionConfig;
pub use s3::{ca_bundle, OssSection, S3Section};
pub use storage::StorageConfig;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, deserialize_with = "compat::version")]
    pub version: Option<String>,
    #[serde(default)]
    pub log: LogConfig,
    /// Deprecated distribution key, same as `log.level`.
    #[serde(default)]
    pub loglevel: Option<String>,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub compatibility: CompatibilityConfig,
    /// Berth: where the metadata database lives.
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub auth: berth_auth::AuthConfig,
    /// Berth: online garbage collection.
    #[serde(default)]
    pub gc: GcConfig,
    /// Berth: retention policies.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Berth: byte limits per namespace.
    #[serde(default)]
    pub quotas: Vec<QuotaConfig>,
    /// Berth: how the administration endpoints may be reached.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Berth: upload behaviour.
    #[serde(default)]
    pub uploads: UploadsConfig,
    /// distribution's redis cache settings: Berth needs no cache server.
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
    pub redis: Option<serde_json::Value>,
    /// distribution's storage and HTTP health checks: accepted, not run yet.
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
    pub health: Option<serde_json::Value>,
    /// What was accepted and has no effect, said once at start and by `config check`.
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Berth: `registries`, several registries chosen by host name; empty
    /// when this configuration is one registry serving every host.
    #[serde(skip)]
    pub registries: Vec<VirtualRegistry>,
    /// Berth: `default`, the registry a host none of them lists goes to.
    #[serde(skip)]
    pub default_registry: Option<String>,
}

impl Config {
    /// Loads the file (if any), applies environment overrides and validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        let mut root = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                let v: Value = serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
                if v.is_null() {
                    Value::Mapping(Mapping::new())
                } else {
                    v
                }
            }
            None => Value::Mapping(Mapping::new()),
        };
        apply_env(&mut root, env)?;
        Self::from_value(root)
    }

    pub fn from_value(mut root: Value) -> Result<Config> {
        if !root.is_mapping() {
            bail!("configuration must be a mapping of keys");
        }
        let several = registries::take(&mut root)?;
        let base = several.as_ref().map(|_| root.clone());
        // Under registries, a secret file's path may hold {registry} or a
        // captured variable: each registry reads its own.
        secrets::read_secret_files(&mut root, several.is_some())?;
        let present = |key: &str| env::lookup(&root, key).is_some_and(|v| !v.is_null());
        let refused: Vec<String> =
            UNSUPPORTED.iter().filter(|(k, _)| present(k)).map(|(k, why)| format!("{k}: {why}")).collect();
        match refused.len() {
            0 => {}
            1 => bail!("{}", refused[0]),
            n => bail!("{n} keys are not supported:\n  {}", refused.join("\n  ")),
        }
        let warnings = IGNORED
            .iter()
            .filter(|(k, _)| present(k))
            .map(|(k, why)| format!("{k}: accepted and ignored: {why}"))
            .collect();
        let json = serde_json::to_value(&root).context("configuration is not representable")?;
        let mut cfg: Config = serde_path_to_error::deserialize(lenient::Lenient(json)).map_err(|e| {
            let path = e.path().to_string();
            let msg = lenient::plain_message(&e.into_inner().to_string());
            anyhow!("{}: {msg}", if path == "." { "configuration".to_owned() } else { path })
        })?;
        cfg.warnings = warnings;
        // With registries, the top level is their template: a value may hold
        // {registry} or a captured variable until each registry substitutes it.
        cfg.validate(several.is_some())?;
        if let (Some((blocks, default)), Some(base)) = (several, base) {
            cfg.registries = registries::build(&base, &blocks, default.as_deref())?;
            cfg.default_registry = default;
        }
        Ok(cfg)
    }

    fn validate(&self, template: bool) -> Result<()> {
        if let Some(v) = &self.version {
            if v != "0.1" {
                bail!("version: only configuration version 0.1 is supported, not {v:?}");
            }
        }
        self.trusted_proxies()?;
        if self.compatibility.schema1.enabled {
            bail!("compatibility.schema1.enabled: schema 1 manifests are not supported");
        }
        if self.compatibility.schema1.signingkeyfile.is_some() {
            bail!("compatibility.schema1.signingkeyfile: schema 1 manifests are not supported");
        }
        if let Some(level) = self.log_level() {
            if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
                bail!("log.level: unknown level {level:?} (error, warn, info, debug)");
            }
        }
        match self.log.formatter.as_deref() {
            None | Some("text") | Some("json") | Some("logstash") => {}
            Some(f) => bail!("log.formatter: unknown formatter {f:?} (text, json, logstash)"),
        }
        match self.http.net.as_str() {
            "tcp" | "unix" => {}
            n => bail!("http.net: unknown network {n:?} (tcp, unix)"),
        }
        let t = &self.http.timeouts;
        for (key, d) in [("firstbyte", t.firstbyte), ("header", t.header), ("idle", t.idle)] {
            if d.is_zero() {
                bail!("http.timeouts.{key}: must be greater than zero");
            }
        }
        if template {
            // What a registry may set is checked in each, after substitution.
            return Ok(());
        }
        self.validate_registry()
    }

    /// Checks the keys a registry of several may set for itself.
    fn validate_registry(&self) -> Result<()> {
        let s = &self.storage;
        let drivers: Vec<&str> = [
            ("filesystem", s.filesystem.is_some()),
            ("inmemory", s.inmemory.is_some()),
            ("s3", s.s3.is_some()),
            ("oss", s.oss.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
        if drivers.len() > 1 {
            bail!("storage: configure one driver, not {}", drivers.join(" and "));
        }
        // Credentials may come from the environment when serving: checked then.
        self.object_store(&|k| Some(format!("<{k}>")))?;
        if (s.s3.is_some() || s.oss.is_some()) && self.database.driver.is_none() && self.database.path.is_none() {
            let key = if s.s3.is_some() { "storage.s3" } else { "storage.oss" };
            bail!(
                "database: {key} keeps content in a bucket; say where its index lives: \
                 database.driver: postgres with database.dsn (several instances), or \
                 database.path: /var/lib/registry/metadata.sqlite on a persistent volume (one instance; \
                 rebuilt from the bucket when missing)"
            );
        }
        if let Some(f) = &s.filesystem {
            f.reserve_bytes()?;
        }
        if let Some(h) = &self.http.host {
            if !(h.starts_with("http://") || h.starts_with("https://")) {
                bail!("http.host: must be an absolute URL such as https://registry.example.test:5000");
            }
        }
        for (name, values) in &self.http.headers {
            http::http_header(name, values).with_context(|| format!("http.headers.{name}"))?;
        }
        if self.storage.maintenance.uploadpurging.enabled && self.storage.maintenance.uploadpurging.interval.is_zero() {
            bail!("storage.maintenance.uploadpurging.interval: must be greater than zero");
        }
        if self.catalog.maxentries == 0 {
            bail!("catalog.maxentries: must be at least 1");
        }
        self.auth.validate().map_err(|e| anyhow!("{e}"))?;
        self.retention_policies()?;
        self.quota_limits()?;
        if self.gc.enabled && self.gc.interval.is_zero() {
            bail!("gc.interval: must be greater than zero");
        }
        self.database.validate()?;
        Ok(())
    }
}

impl Config {
    /// The filesystem store's root: `storage.filesystem.rootdirectory`, else the default data directory.
    pub fn fs_root(&self) -> PathBuf {
        self.storage
            .filesystem
            .as_ref()
            .and_then(|f| f.rootdirectory.clone())
            .unwrap_or_else(|| default_data_dir(&|k| std::env::var(k).ok()))
    }

    /// The embedded SQLite file; None in memory, or when the database is PostgreSQL.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        if self.database.postgres_dsn().is_some() {
            return None;
        }
        self.database
            .path
            .clone()
            .or_else(|| self.storage.inmemory.is_none().then(|| self.fs_root().join("_berth").join("metadata.sqlite")))
    }
}

/// Where Berth keeps its data when nothing says otherwise: `$BERTH_DATA_DIR`,
/// else `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`, else `./berth-data`.
pub fn default_data_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(d) = env("BERTH_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = env("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("berth");
    }
    if let Some(h) = env("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/share/berth");
    }
    PathBuf::from("berth-data")
}

// serde defaults shared by several sections.

pub(crate) fn yes() -> bool {
    true
}

pub(crate) fn week() -> Duration {
    Duration::from_secs(168 * 3600)
}

pub(crate) fn day() -> Duration {
    Duration::from_secs(24 * 3600)
}

pub(crate) fn hour() -> Duration {
    Duration::from_secs(3600)
}

#[cfg(test)]
mod tests;
