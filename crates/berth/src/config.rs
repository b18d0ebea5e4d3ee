//! Configuration: distribution's `config.yml` (version 0.1) keys for what
//! Berth supports, `REGISTRY_*` environment overrides, and Berth's own keys
//! (`database`). Read once, validated before use; keys Berth cannot honour
//! yet are refused with an error naming them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::{Mapping, Value};

mod lenient;
mod s3;
pub use s3::{ca_bundle, OssSection, S3Section};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, deserialize_with = "version")]
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
}

/// Berth: the administration endpoints (`/_berth/`). With no `auth` they
/// answer only on this machine, unless a token is configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A file holding a bearer token that opens the administration endpoints
    /// (`Authorization: Bearer <token>`), from anywhere.
    #[serde(default)]
    pub tokenfile: Option<PathBuf>,
}

impl AdminConfig {
    /// The token of `tokenfile`, read now (one word of at least 16 characters).
    pub fn token(&self) -> Result<Option<String>> {
        let Some(path) = &self.tokenfile else { return Ok(None) };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("admin.tokenfile: reading {}", path.display()))?;
        let token = text.trim().to_owned();
        if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("admin.tokenfile: {}: the token must be one word of at least 16 characters", path.display());
        }
        Ok(Some(token))
    }
}

/// Berth: uploads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsConfig {
    /// `POST /v2/<name>/blobs/uploads/?mount=<digest>` without `from` mounts
    /// the blob when the caller may pull it from some repository (the OCI
    /// specification allows it); false answers with an upload session.
    #[serde(default = "yes")]
    pub automaticmount: bool,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig { automaticmount: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// Run on a schedule (collection on demand works either way).
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "day", deserialize_with = "berth_types::duration::seconds")]
    pub interval: Duration,
    /// Blobs and untagged manifests younger than this are never collected.
    #[serde(default = "hour", deserialize_with = "berth_types::duration::seconds")]
    pub grace: Duration,
    #[serde(default)]
    pub deleteuntagged: bool,
    #[serde(default)]
    pub dryrun: bool,
}

fn hour() -> Duration {
    Duration::from_secs(3600)
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { enabled: false, interval: day(), grace: hour(), deleteuntagged: false, dryrun: false }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "day", deserialize_with = "berth_types::duration::seconds")]
    pub interval: Duration,
    #[serde(default)]
    pub dryrun: bool,
    #[serde(default)]
    pub policies: Vec<RetentionPolicyConfig>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { interval: day(), dryrun: false, policies: Vec::new() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicyConfig {
    pub repositories: Vec<String>,
    #[serde(default)]
    pub keeplast: Option<usize>,
    #[serde(default)]
    pub keeptags: Vec<String>,
    #[serde(default, deserialize_with = "optional_seconds")]
    pub olderthan: Option<Duration>,
    #[serde(default)]
    pub deleteuntagged: bool,
}

fn optional_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    berth_types::duration::seconds(d).map(Some)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub namespace: String,
    /// `10GiB`, `500MB`, or bytes.
    pub limit: serde_json::Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub formatter: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub accesslog: AccessLogConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub filesystem: Option<FilesystemConfig>,
    #[serde(default)]
    pub inmemory: Option<serde_json::Value>,
    #[serde(default)]
    pub s3: Option<S3Section>,
    #[serde(default)]
    pub oss: Option<OssSection>,
    #[serde(default)]
    pub delete: EnabledFlag,
    #[serde(default)]
    pub redirect: RedirectConfig,
    /// A cache of blob descriptors in distribution; Berth's metadata index
    /// plays that part, so any setting is accepted and has no effect.
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
    pub cache: Option<serde_json::Value>,
    #[serde(default)]
    pub maintenance: MaintenanceConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemConfig {
    #[serde(default)]
    pub rootdirectory: Option<PathBuf>,
    /// Distribution's cap on concurrent filesystem calls; Berth's blocking
    /// pool bounds them itself, so the value is accepted and checked only.
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
    pub maxthreads: Option<u64>,
    /// Berth: free space upload data never takes, so the metadata database
    /// and deletions still work on a full disk (`64MiB`; default 2 % of the
    /// filesystem, at most 64 MiB).
    #[serde(default)]
    pub reserve: Option<String>,
}

impl FilesystemConfig {
    pub fn reserve_bytes(&self) -> Result<Option<u64>> {
        self.reserve
            .as_deref()
            .map(|r| berth_types::pattern::parse_size(r).map_err(|e| anyhow!("storage.filesystem.reserve: {e}")))
            .transpose()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnabledFlag {
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// Object stores answer blob GETs with a redirect to a presigned URL
    /// unless this is set; the filesystem driver never redirects.
    #[serde(default)]
    pub disable: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    #[serde(default)]
    pub uploadpurging: UploadPurgingConfig,
    #[serde(default)]
    pub readonly: EnabledFlag,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadPurgingConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "week", deserialize_with = "berth_types::duration::go")]
    pub age: Duration,
    #[serde(default = "day", deserialize_with = "berth_types::duration::go")]
    pub interval: Duration,
    #[serde(default)]
    pub dryrun: bool,
}

fn yes() -> bool {
    true
}
fn week() -> Duration {
    Duration::from_secs(168 * 3600)
}
fn day() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for UploadPurgingConfig {
    fn default() -> Self {
        UploadPurgingConfig { enabled: true, age: week(), interval: day(), dryrun: false }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_addr")]
    pub addr: String,
    #[serde(default = "default_net")]
    pub net: String,
    #[serde(default)]
    pub host: Option<String>,
    /// Distribution signs upload state with it; Berth keeps upload state in
    /// its database, so instances need no shared secret. Accepted and unused.
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
    pub secret: Option<String>,
    #[serde(default)]
    pub relativeurls: bool,
    #[serde(default = "default_drain", deserialize_with = "berth_types::duration::go")]
    pub draintimeout: Duration,
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
    pub http2: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
    pub h2c: Option<serde_json::Value>,
    /// distribution's debug server: accepted without its prometheus part
    /// until metrics are built.
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
    pub debug: Option<serde_json::Value>,
    /// Berth: how long a connection may go without progress.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Berth: connection limits.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// Berth: a connection must make progress (`http.timeouts`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// The first byte of a new connection.
    #[serde(default = "ten_seconds", deserialize_with = "berth_types::duration::go")]
    pub firstbyte: Duration,
    /// A request's headers, and the first request of an HTTP/2 connection.
    #[serde(default = "thirty_seconds", deserialize_with = "berth_types::duration::go")]
    pub header: Duration,
    /// A keep-alive connection with nothing in flight (HTTP/1 and HTTP/2).
    #[serde(default = "two_minutes", deserialize_with = "berth_types::duration::go")]
    pub idle: Duration,
    /// A request body that sends nothing for this long is cut off.
    #[serde(default = "minute", deserialize_with = "berth_types::duration::go")]
    pub bodyidle: Duration,
    /// Bytes per second a request body must bring over each `bodyidle` window (0: any).
    #[serde(default = "kib")]
    pub minbodyrate: u64,
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn two_minutes() -> Duration {
    Duration::from_secs(120)
}
fn minute() -> Duration {
    Duration::from_secs(60)
}
fn kib() -> u64 {
    1024
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            firstbyte: ten_seconds(),
            header: thirty_seconds(),
            idle: two_minutes(),
            bodyidle: minute(),
            minbodyrate: kib(),
        }
    }
}

/// Berth: `http.limits`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections one client address may hold (0: no limit). Behind a
    /// reverse proxy every connection comes from the proxy's address.
    #[serde(default = "default_per_client")]
    pub connectionsperclient: usize,
}

fn default_per_client() -> usize {
    256
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { connectionsperclient: default_per_client() }
    }
}

fn default_addr() -> String {
    ":5000".into()
}
fn default_net() -> String {
    "tcp".into()
}
fn default_drain() -> Duration {
    Duration::from_secs(60)
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: default_addr(),
            net: default_net(),
            host: None,
            secret: None,
            relativeurls: false,
            draintimeout: default_drain(),
            headers: BTreeMap::new(),
            http2: None,
            h2c: None,
            debug: None,
            timeouts: TimeoutsConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    #[serde(default = "default_maxentries")]
    pub maxentries: u64,
}

fn default_maxentries() -> u64 {
    1000
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig { maxentries: default_maxentries() }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompatibilityConfig {
    #[serde(default)]
    pub schema1: Schema1Config,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema1Config {
    #[serde(default)]
    pub enabled: bool,
    /// Schema 1 is not supported, so there is no signature store to disable.
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
    pub disablesignaturestore: bool,
    #[serde(default)]
    pub signingkeyfile: Option<String>,
}

/// Berth: the metadata database. `driver: sqlite` (the default) embeds it in
/// the store; `driver: postgres` uses a PostgreSQL database that several
/// instances may share.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite` or `postgres`; default `sqlite`.
    #[serde(default)]
    pub driver: Option<String>,
    /// Path of the embedded SQLite database. Default: `_berth/metadata.sqlite`
    /// under the filesystem storage root.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// PostgreSQL: `postgres://user:password@host:5432/berth[?sslmode=...]`,
    /// also from `REGISTRY_DATABASE_DSN`. Never logged with its password.
    #[serde(default)]
    pub dsn: Option<String>,
    /// PostgreSQL: connections this instance keeps at most (default 20).
    #[serde(default)]
    pub maxconnections: Option<u32>,
}

const DEFAULT_DB_CONNECTIONS: u32 = 20;

impl DatabaseConfig {
    /// The DSN when the driver is PostgreSQL.
    pub fn postgres_dsn(&self) -> Option<&str> {
        (self.driver.as_deref() == Some("postgres")).then_some(self.dsn.as_deref()).flatten()
    }

    pub fn max_connections(&self) -> u32 {
        self.maxconnections.unwrap_or(DEFAULT_DB_CONNECTIONS)
    }

    /// The DSN with its password (in the URL or as a `password=` parameter)
    /// replaced by `***`, for messages and logs.
    pub fn redacted_dsn(&self) -> Option<String> {
        self.dsn.as_deref().map(redact_dsn)
    }

    fn validate(&self) -> Result<()> {
        match self.driver.as_deref() {
            None | Some("sqlite") => {
                if self.dsn.is_some() {
                    bail!("database.dsn: only used with database.driver: postgres");
                }
            }
            Some("postgres") => {
                let dsn = self.dsn.as_deref().map(str::trim).unwrap_or_default();
                if dsn.is_empty() {
                    bail!(
                        "database.dsn: required with database.driver: postgres, \
                         e.g. postgres://user:password@127.0.0.1:5432/berth (or set REGISTRY_DATABASE_DSN)"
                    );
                }
                // The value itself is not repeated: it may hold a password.
                if !(dsn.starts_with("postgres://") || dsn.starts_with("postgresql://")) {
                    bail!("database.dsn: must be a URL such as postgres://user:password@host:5432/berth");
                }
                if self.path.is_some() {
                    bail!("database.path: the embedded SQLite file; not used with database.driver: postgres");
                }
            }
            Some(d) => bail!("database.driver: unknown driver {d:?} (sqlite, postgres)"),
        }
        if self.maxconnections == Some(0) {
            bail!("database.maxconnections: must be at least 1");
        }
        Ok(())
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("driver", &self.driver)
            .field("path", &self.path)
            .field("dsn", &self.redacted_dsn())
            .field("maxconnections", &self.maxconnections)
            .finish()
    }
}

/// `scheme://user:secret@host/db?password=secret` → `scheme://user:***@host/db?password=***`.
fn redact_dsn(dsn: &str) -> String {
    let (base, query) = match dsn.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (dsn, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => authority.to_owned(),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// `version: 0.1` reads as a number in YAML; distribution treats it as text.
fn version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Num(f64),
        Str(String),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|r| match r {
        Raw::Num(n) => n.to_string(),
        Raw::Str(s) => s,
    }))
}

/// Keys distribution knows that Berth does not honour yet, and why.
pub const UNSUPPORTED: &[(&str, &str)] = &[
    ("notifications", "notifications are not supported yet"),
    ("proxy", "pull-through caching is not supported yet"),
    ("reporting", "error reporting services are not supported"),
    ("middleware", "middleware is not supported yet"),
    ("validation", "manifest URL validation settings are not supported yet"),
    ("log.hooks", "log hooks are not supported"),
    ("storage.gcs", "the GCS storage driver is not supported"),
    ("storage.azure", "the Azure storage driver is not supported"),
    ("storage.swift", "the Swift storage driver is not supported"),
    ("http.tls", "TLS is not supported yet: terminate TLS in a reverse proxy"),
    ("http.prefix", "a URL prefix is not supported yet"),
    ("http.debug.prometheus", "Prometheus metrics are not supported yet"),
];

/// Keys distribution knows that Berth accepts with no effect, and why; each
/// present one is a warning at start and in `config check`.
pub const IGNORED: &[(&str, &str)] = &[
    ("redis", "Berth uses no cache server (its metadata index is the cache)"),
    ("health", "health checks are not built yet"),
    ("http.debug", "the debug server is not built yet"),
];

fn lookup<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(root, |v, k| v.as_mapping().and_then(|m| m.get(Value::String(k.to_owned()))))
}

/// Applies `REGISTRY_A_B_C=value` as `a.b.c: value` (value read as YAML),
/// as distribution does. `REGISTRY_STORAGE=<driver>` selects the driver.
pub fn apply_env(root: &mut Value, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
    let mut vars: Vec<(Vec<String>, String)> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("REGISTRY_")?;
            let path: Vec<String> = rest.split('_').map(str::to_ascii_lowercase).collect();
            (!path.iter().any(String::is_empty)).then_some((path, v))
        })
        .collect();
    // Shorter paths first, so a driver selection comes before its parameters.
    vars.sort();
    vars.sort_by_key(|(p, _)| p.len());
    for (path, raw) in vars {
        if path == ["storage"] {
            let driver = raw.trim().to_ascii_lowercase();
            let storage = ensure_mapping(root, &["storage".to_owned()])?;
            for d in ["filesystem", "inmemory", "s3", "oss", "gcs", "azure", "swift"] {
                if d != driver {
                    storage.remove(Value::String(d.to_owned()));
                }
            }
            storage.entry(Value::String(driver)).or_insert_with(|| Value::Mapping(Mapping::new()));
            continue;
        }
        // Mappings and lists are read as YAML; a scalar stays text, and the
        // key's type decides how it is read (as distribution's Go YAML does).
        let value = match serde_yaml_ng::from_str::<Value>(&raw) {
            Ok(v @ (Value::Mapping(_) | Value::Sequence(_) | Value::Null)) => v,
            _ => Value::String(raw.clone()),
        };
        let (last, parents) = path.split_last().ok_or_else(|| anyhow!("empty variable"))?;
        let parent = ensure_mapping(root, parents)?;
        parent.insert(Value::String(last.clone()), value);
    }
    Ok(())
}

fn ensure_mapping<'v>(root: &'v mut Value, path: &[String]) -> Result<&'v mut Mapping> {
    let mut cur = root;
    for k in path {
        if !cur.is_mapping() {
            *cur = Value::Mapping(Mapping::new());
        }
        let m = cur.as_mapping_mut().ok_or_else(|| anyhow!("not a mapping"))?;
        cur = m.entry(Value::String(k.clone())).or_insert_with(|| Value::Mapping(Mapping::new()));
        if cur.is_null() {
            *cur = Value::Mapping(Mapping::new());
        }
    }
    if !cur.is_mapping() {
        *cur = Value::Mapping(Mapping::new());
    }
    cur.as_mapping_mut().ok_or_else(|| anyhow!("not a mapping"))
}

impl Config {
    /// The S3 driver's configuration when `storage.s3` or `storage.oss` is
    /// chosen. `env` supplies credentials missing from the file.
    pub fn object_store(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<berth_storage::s3::S3Config>> {
        let redirect = !self.storage.redirect.disable;
        match (&self.storage.s3, &self.storage.oss) {
            (Some(s3), _) => s3.driver_config(redirect, env).map(Some),
            (None, Some(oss)) => oss.driver_config(redirect, env).map(Some),
            (None, None) => Ok(None),
        }
    }

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

    pub fn from_value(root: Value) -> Result<Config> {
        if !root.is_mapping() {
            bail!("configuration must be a mapping of keys");
        }
        let present = |key: &str| lookup(&root, key).is_some_and(|v| !v.is_null());
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
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if let Some(v) = &self.version {
            if v != "0.1" {
                bail!("version: only configuration version 0.1 is supported, not {v:?}");
            }
        }
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
        if let Some(h) = &self.http.host {
            if !(h.starts_with("http://") || h.starts_with("https://")) {
                bail!("http.host: must be an absolute URL such as https://registry.example.test:5000");
            }
        }
        for (name, values) in &self.http.headers {
            http_header(name, values).with_context(|| format!("http.headers.{name}"))?;
        }
        if self.storage.maintenance.uploadpurging.enabled && self.storage.maintenance.uploadpurging.interval.is_zero() {
            bail!("storage.maintenance.uploadpurging.interval: must be greater than zero");
        }
        let t = &self.http.timeouts;
        for (key, d) in [("firstbyte", t.firstbyte), ("header", t.header), ("idle", t.idle)] {
            if d.is_zero() {
                bail!("http.timeouts.{key}: must be greater than zero");
            }
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

    pub fn retention_policies(&self) -> Result<Vec<berth_registry::retention::RetentionPolicy>> {
        self.retention
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let repositories = p
                    .repositories
                    .iter()
                    .map(|r| {
                        berth_types::pattern::RepoPattern::parse(r)
                            .map_err(|e| anyhow!("retention.policies[{i}].repositories: {e}"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                if repositories.is_empty() {
                    bail!("retention.policies[{i}].repositories: list at least one pattern");
                }
                Ok(berth_registry::retention::RetentionPolicy {
                    repositories,
                    keep_last: p.keeplast,
                    keep_tags: p.keeptags.clone(),
                    older_than: p.olderthan,
                    delete_untagged: p.deleteuntagged,
                })
            })
            .collect()
    }

    pub fn quota_limits(&self) -> Result<Vec<berth_registry::quota::Quota>> {
        self.quotas
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let limit = match &q.limit {
                    serde_json::Value::Number(n) => {
                        n.as_u64().ok_or_else(|| anyhow!("quotas[{i}].limit: not a byte count"))?
                    }
                    serde_json::Value::String(s) => {
                        berth_types::pattern::parse_size(s).map_err(|e| anyhow!("quotas[{i}].limit: {e}"))?
                    }
                    _ => bail!("quotas[{i}].limit: a size such as 10GiB"),
                };
                let ns = q.namespace.trim_matches('/');
                berth_types::RepoName::parse(ns).map_err(|e| anyhow!("quotas[{i}].namespace: {e}"))?;
                Ok(berth_registry::quota::Quota { namespace: ns.to_owned(), limit })
            })
            .collect()
    }

    /// The log level: `log.level`, else the deprecated `loglevel`, in lower case.
    pub fn log_level(&self) -> Option<String> {
        self.log.level.clone().or_else(|| self.loglevel.clone()).map(|l| {
            let l = l.to_ascii_lowercase();
            if l == "warning" {
                "warn".to_owned()
            } else {
                l
            }
        })
    }

    /// `http.headers` as header pairs.
    pub fn response_headers(&self) -> Result<Vec<(http::HeaderName, http::HeaderValue)>> {
        let mut out = Vec::new();
        for (name, values) in &self.http.headers {
            out.extend(http_header(name, values)?);
        }
        Ok(out)
    }
}

fn http_header(name: &str, values: &[String]) -> Result<Vec<(http::HeaderName, http::HeaderValue)>> {
    let n: http::HeaderName = name.parse().map_err(|_| anyhow!("invalid header name"))?;
    values.iter().map(|v| Ok((n.clone(), v.parse().map_err(|_| anyhow!("invalid header value {v:?}"))?))).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config> {
        let mut v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        if v.is_null() {
            v = Value::Mapping(Mapping::new());
        }
        apply_env(&mut v, env.iter().map(|(a, b)| (a.to_string(), b.to_string())))?;
        Config::from_value(v)
    }

    #[test]
    fn distribution_config_is_read() {
        let c = load(
            r#"
version: 0.1
log:
  level: debug
  formatter: json
  fields:
    service: registry
    environment: development
  accesslog:
    disabled: true
storage:
  cache:
    layerinfo: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
      age: 2h30m
      interval: 10m
      dryrun: true
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:5001
  secret: asecretforlocaldevelopment
  host: https://registry.example.test
  relativeurls: false
  draintimeout: 5s
  headers:
    X-Content-Type-Options: [nosniff]
compatibility:
  schema1:
    disablesignaturestore: true
"#,
            &[],
        )
        .unwrap();
        assert_eq!(c.log_level().as_deref(), Some("debug"));
        assert!(c.log.accesslog.disabled);
        assert_eq!(c.storage.filesystem.clone().unwrap().rootdirectory.unwrap(), PathBuf::from("/var/lib/registry"));
        assert!(c.storage.delete.enabled);
        let p = &c.storage.maintenance.uploadpurging;
        assert_eq!(
            (p.enabled, p.age, p.interval, p.dryrun),
            (false, Duration::from_secs(9000), Duration::from_secs(600), true)
        );
        assert!(c.storage.maintenance.readonly.enabled);
        assert_eq!(c.http.addr, "127.0.0.1:5001");
        assert_eq!(c.http.draintimeout, Duration::from_secs(5));
        assert_eq!(c.http.headers["X-Content-Type-Options"], vec!["nosniff"]);
    }

    #[test]
    fn defaults_match_distribution() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.http.addr, ":5000");
        assert!(!c.storage.delete.enabled);
        assert!(c.storage.maintenance.uploadpurging.enabled);
        assert_eq!(c.storage.maintenance.uploadpurging.age, Duration::from_secs(168 * 3600));
        assert_eq!(c.catalog.maxentries, 1000);
    }

    #[test]
    fn environment_overrides_keys() {
        let c = load(
            "storage:\n  filesystem:\n    rootdirectory: /a\nhttp:\n  addr: :5000\n",
            &[
                ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/b"),
                ("REGISTRY_HTTP_ADDR", "127.0.0.1:6000"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
                ("REGISTRY_LOG_LEVEL", "warn"),
                ("REGISTRY_DATABASE_PATH", "/tmp/x.sqlite"),
                ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "1h"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.storage.filesystem.clone().unwrap().rootdirectory.unwrap(), PathBuf::from("/b"));
        assert_eq!(c.http.addr, "127.0.0.1:6000");
        assert!(c.storage.delete.enabled);
        assert_eq!(c.log_level().as_deref(), Some("warn"));
        assert_eq!(c.database.path.unwrap(), PathBuf::from("/tmp/x.sqlite"));
        assert_eq!(c.storage.maintenance.uploadpurging.age, Duration::from_secs(3600));
    }

    #[test]
    fn storage_driver_selected_by_environment() {
        let c = load("storage:\n  filesystem:\n    rootdirectory: /a\n", &[("REGISTRY_STORAGE", "inmemory")]).unwrap();
        assert!(c.storage.filesystem.is_none());
        assert!(c.storage.inmemory.is_some());
        let e = load("", &[("REGISTRY_STORAGE", "s3"), ("REGISTRY_STORAGE_S3_BUCKET", "b")]).unwrap_err();
        assert!(e.to_string().starts_with("storage.s3.region:"), "{e}");
        let c = load(
            "storage:\n  filesystem:\n    rootdirectory: /a\n",
            &[
                ("REGISTRY_STORAGE", "s3"),
                ("REGISTRY_STORAGE_S3_BUCKET", "b"),
                ("REGISTRY_STORAGE_S3_REGION", "garage"),
                ("REGISTRY_STORAGE_S3_REGIONENDPOINT", "http://127.0.0.1:3900"),
                ("REGISTRY_STORAGE_S3_ACCESSKEY", "AK"),
                ("REGISTRY_STORAGE_S3_SECRETKEY", "SK"),
                ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
                ("REGISTRY_STORAGE_S3_CHUNKSIZE", "5242880"),
                ("REGISTRY_STORAGE_REDIRECT_DISABLE", "true"),
                ("REGISTRY_DATABASE_PATH", "/var/lib/registry/metadata.sqlite"),
            ],
        )
        .unwrap();
        let s3 = c.object_store(&|_| None).unwrap().expect("s3 selected");
        assert!(c.storage.filesystem.is_none());
        assert_eq!((s3.bucket.as_str(), s3.path_style, s3.chunk_size, s3.redirect), ("b", true, 5 << 20, None));
        let e = load("storage:\n  s3: {}\n  filesystem: {}\n", &[]).unwrap_err();
        assert!(e.to_string().contains("not filesystem and s3"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("auth:\n  htpasswd:\n    realm: x\n", "auth.htpasswd"),
            ("auth:\n  silly:\n    realm: x\n", "auth.silly"),
            ("auth:\n  issuer:\n    key: /k.pem\n", "auth.issuer"),
            ("http:\n  tls:\n    certificate: /x\n", "http.tls:"),
            ("storage:\n  s3:\n    bucket: b\n", "storage.s3.region:"),
            ("storage:\n  s3:\n    chunksize: lots\n", "storage.s3.chunksize"),
            ("storage:\n  oss:\n    bucket: b\n", "storage.oss.region:"),
            ("notifications:\n  endpoints: []\n", "notifications:"),
            ("http:\n  adr: :5000\n", "http.adr"),
            ("storage:\n  filesystem:\n    rootdir: /x\n", "storage.filesystem.rootdir"),
            ("bogus: 1\n", "bogus"),
            ("version: 0.2\n", "version:"),
            ("log:\n  level: loud\n", "log.level:"),
            (
                "storage:\n  maintenance:\n    uploadpurging:\n      age: 3 days\n",
                "storage.maintenance.uploadpurging.age",
            ),
            ("http:\n  host: registry.test\n", "http.host:"),
            ("compatibility:\n  schema1:\n    enabled: true\n", "compatibility.schema1.enabled"),
            ("http:\n  headers:\n    \"bad header\": [x]\n", "http.headers.bad header"),
            ("catalog:\n  maxentries: -1\n", "catalog.maxentries"),
            ("gc:\n  grace: soon\n", "gc.grace"),
            ("gc:\n  enabled: true\n  interval: 0s\n", "gc.interval"),
            ("retention:\n  policies:\n    - repositories: []\n", "retention.policies[0].repositories"),
            ("retention:\n  policies:\n    - repositories: [\"a//b\"]\n", "retention.policies[0].repositories"),
            ("retention:\n  policies:\n    - repositories: [a]\n      keep: 3\n", "keep"),
            ("quotas:\n  - namespace: team\n    limit: 10 parsecs\n", "quotas[0].limit"),
            ("quotas:\n  - namespace: Team\n    limit: 1GiB\n", "quotas[0].namespace"),
            ("auth:\n  htpasswd:\n    realm: r\n    path: /x\n  access:\n    admins: [\"group:ops\"]\n", "admins"),
        ];
        for (yaml, key) in cases {
            let e = load(yaml, &[]).unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains(key), "{yaml:?}: {msg}");
        }
    }

    #[test]
    fn an_object_store_needs_to_be_told_where_its_index_lives() {
        let s3 = "storage:\n  s3:\n    region: r\n    regionendpoint: http://127.0.0.1:3900\n    bucket: b\n";
        let e = load(s3, &[]).unwrap_err().to_string();
        assert!(e.starts_with("database: storage.s3 keeps content in a bucket"), "{e}");
        assert!(e.contains("database.path") && e.contains("database.driver: postgres"), "{e}");
        load(&format!("{s3}database:\n  path: /var/lib/registry/metadata.sqlite\n"), &[]).unwrap();
        load(s3, &[("REGISTRY_DATABASE_PATH", "/data/m.sqlite")]).unwrap();
    }

    #[test]
    fn environment_values_take_the_type_of_their_key() {
        let c = load(
            "",
            &[
                ("REGISTRY_HTTP_ADDR", "5300"),
                ("REGISTRY_HTTP_SECRET", "0123"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "yes"),
                ("REGISTRY_CATALOG_MAXENTRIES", "20"),
                ("REGISTRY_HTTP_RELATIVEURLS", "on"),
                ("REGISTRY_LOG_FIELDS_SERVICE", "123"),
            ],
        )
        .unwrap();
        assert_eq!(c.http.addr, "5300");
        assert_eq!(c.http.secret.as_deref(), Some("0123"), "text stays text, leading zero and all");
        assert!(c.storage.delete.enabled && c.http.relativeurls);
        assert_eq!(c.catalog.maxentries, 20);
        assert_eq!(c.log.fields["service"], serde_json::json!("123"));
        let e = load("", &[("REGISTRY_CATALOG_MAXENTRIES", "lots")]).unwrap_err().to_string();
        assert!(e.starts_with("catalog.maxentries: "), "{e}");
    }

    #[test]
    fn yaml_1_1_booleans_are_read_as_distribution_reads_them() {
        let c = load(
            "storage:\n  delete:\n    enabled: yes\n  maintenance:\n    uploadpurging:\n      enabled: off\n    readonly:\n      enabled: On\nhttp:\n  relativeurls: Y\n",
            &[],
        )
        .unwrap();
        assert!(c.storage.delete.enabled);
        assert!(!c.storage.maintenance.uploadpurging.enabled);
        assert!(c.storage.maintenance.readonly.enabled);
        assert!(c.http.relativeurls);
        let e = load("storage:\n  delete:\n    enabled: maybe\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("storage.delete.enabled: "), "{e}");
    }

    #[test]
    fn every_unsupported_key_is_named_in_one_error() {
        let e = load(
            "notifications:\n  endpoints: []\nproxy:\n  remoteurl: https://registry-1.example.test\nhttp:\n  tls:\n    certificate: /c\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("3 keys are not supported:"), "{e}");
        for key in ["notifications:", "proxy:", "http.tls:"] {
            assert!(e.contains(key), "{key} in {e}");
        }
        // redis, health and the debug server without metrics: accepted, with a warning each.
        let c = load(
            "redis:\n  addr: localhost:6379\nhealth:\n  storagedriver:\n    enabled: true\nhttp:\n  debug:\n    addr: :5001\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(c.warnings.iter().all(|w| w.contains("accepted and ignored")), "{:?}", c.warnings);
        let e = load("http:\n  debug:\n    addr: :5001\n    prometheus:\n      enabled: true\n", &[]).unwrap_err();
        assert!(e.to_string().starts_with("http.debug.prometheus:"), "{e}");
    }

    #[test]
    fn errors_never_show_type_names() {
        for yaml in [
            "storage:\n  filesystem: text\n",
            "http: [1, 2]\n",
            "gc:\n  grace: [1]\n",
            "catalog:\n  maxentries: {a: 1}\n",
            "auth:\n  htpasswd: 5\n",
            "retention:\n  policies: {a: 1}\n",
            "storage:\n  s3:\n    chunksize: [1]\n",
        ] {
            let e = format!("{:#}", load(yaml, &[]).unwrap_err());
            assert!(!e.contains("struct ") && !e.contains("enum ") && !e.contains("Config"), "{yaml:?}: {e}");
            assert!(!e.contains("u64") && !e.contains("usize"), "{yaml:?}: {e}");
        }
        let e = load("storage:\n  filesystem: text\n", &[]).unwrap_err().to_string();
        assert_eq!(e, "storage.filesystem: invalid type: string \"text\", expected a mapping of keys");
    }

    #[test]
    fn connection_limits_and_berth_sections() {
        let d = load("", &[]).unwrap();
        assert_eq!(d.http.timeouts.firstbyte, Duration::from_secs(10));
        assert_eq!(d.http.limits.connectionsperclient, 256);
        assert!(d.uploads.automaticmount);
        let c = load(
            "http:\n  timeouts:\n    firstbyte: 2s\n    idle: 30s\n    bodyidle: 20s\n    minbodyrate: 0\n  limits:\n    connectionsperclient: 8\nuploads:\n  automaticmount: false\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            (c.http.timeouts.firstbyte, c.http.timeouts.idle),
            (Duration::from_secs(2), Duration::from_secs(30))
        );
        assert_eq!((c.http.timeouts.minbodyrate, c.http.limits.connectionsperclient), (0, 8));
        assert!(!c.uploads.automaticmount);
        let e = load("http:\n  timeouts:\n    idle: 99999999999999999999h\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("http.timeouts.idle: ") && e.contains("too long"), "{e}");
    }

    #[test]
    fn lifecycle_keys_are_read() {
        let c = load(
            r#"
gc:
  enabled: true
  interval: 6h
  grace: 30m
  deleteuntagged: true
retention:
  interval: 12h
  policies:
    - repositories: ["ci/**"]
      keeplast: 20
      keeptags: ["release-*"]
      deleteuntagged: true
    - repositories: ["cache/**"]
      olderthan: 336h
quotas:
  - namespace: team-a/
    limit: 50GiB
  - namespace: team-b
    limit: 1000
"#,
            &[],
        )
        .unwrap();
        assert!(c.gc.enabled && c.gc.deleteuntagged);
        assert_eq!((c.gc.interval, c.gc.grace), (Duration::from_secs(6 * 3600), Duration::from_secs(1800)));
        let p = c.retention_policies().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].keep_last, p[0].keep_tags.clone(), p[0].older_than),
            (Some(20), vec!["release-*".into()], None)
        );
        assert_eq!(p[1].older_than, Some(Duration::from_secs(336 * 3600)));
        assert!(p[0].repositories[0].matches(&berth_types::RepoName::parse("ci/a/b").unwrap()));
        let q = c.quota_limits().unwrap();
        assert_eq!((q[0].namespace.as_str(), q[0].limit), ("team-a", 50 << 30));
        assert_eq!((q[1].namespace.as_str(), q[1].limit), ("team-b", 1000));
        let d = load("", &[]).unwrap();
        assert!(!d.gc.enabled);
        assert_eq!(d.gc.grace, Duration::from_secs(3600));
    }

    #[test]
    fn data_dir_defaults() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(a, _)| *a == k).map(|(_, b)| b.to_string())
        };
        assert_eq!(default_data_dir(&env(&[("BERTH_DATA_DIR", "/d"), ("HOME", "/h")])), PathBuf::from("/d"));
        assert_eq!(default_data_dir(&env(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")])), PathBuf::from("/x/berth"));
        assert_eq!(default_data_dir(&env(&[("HOME", "/h")])), PathBuf::from("/h/.local/share/berth"));
        assert_eq!(default_data_dir(&env(&[])), PathBuf::from("berth-data"));
    }

    #[test]
    fn database_driver_and_dsn() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.database.postgres_dsn(), None, "embedded SQLite by default");
        let c = load(
            "database:\n  driver: postgres\n  dsn: postgres://berth:s3cret@db.test:5432/berth\n  maxconnections: 5\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.database.postgres_dsn(), Some("postgres://berth:s3cret@db.test:5432/berth"));
        assert_eq!(c.database.max_connections(), 5);
        // From the environment, as distribution's keys are.
        let c = load(
            "",
            &[
                ("REGISTRY_DATABASE_DRIVER", "postgres"),
                ("REGISTRY_DATABASE_DSN", "postgresql://u:p%40ss@10.0.0.1:5433/b?sslmode=require"),
                ("REGISTRY_DATABASE_MAXCONNECTIONS", "50"),
            ],
        )
        .unwrap();
        assert_eq!(c.database.postgres_dsn(), Some("postgresql://u:p%40ss@10.0.0.1:5433/b?sslmode=require"));
        assert_eq!(c.database.max_connections(), 50);
        let c = load("database:\n  driver: postgres\n  dsn: postgres://x@h/db\n", &[]).unwrap();
        assert_eq!(c.database.max_connections(), 20);
        let c = load("database:\n  driver: postgres\n", &[("REGISTRY_DATABASE_DSN", "postgres://h/db")]).unwrap();
        assert_eq!(c.database.postgres_dsn(), Some("postgres://h/db"));
    }

    #[test]
    fn database_errors_name_the_key_and_hide_the_password() {
        let err = |yaml: &str| load(yaml, &[]).unwrap_err().to_string();
        assert_eq!(err("database:\n  driver: mysql\n"), "database.driver: unknown driver \"mysql\" (sqlite, postgres)");
        assert!(
            err("database:\n  driver: postgres\n").starts_with("database.dsn: required with database.driver: postgres")
        );
        let e = err("database:\n  driver: postgres\n  dsn: \"host=db password=s3cret\"\n");
        assert!(e.starts_with("database.dsn: must be a URL") && !e.contains("s3cret"), "{e}");
        assert!(err("database:\n  dsn: postgres://h/db\n")
            .starts_with("database.dsn: only used with database.driver: postgres"));
        assert!(err("database:\n  driver: postgres\n  dsn: postgres://h/db\n  path: /x.sqlite\n")
            .starts_with("database.path:"));
        assert!(err("database:\n  driver: postgres\n  dsn: postgres://h/db\n  maxconnections: 0\n")
            .starts_with("database.maxconnections:"));
        let c =
            load("database:\n  driver: postgres\n  dsn: postgres://berth:s3cret@db:5432/b?password=s3cret&x=1\n", &[])
                .unwrap();
        assert_eq!(c.database.redacted_dsn().unwrap(), "postgres://berth:***@db:5432/b?password=***&x=1");
        assert!(!format!("{c:?}").contains("s3cret"), "Debug output hides the password");
        assert_eq!(redact_dsn("postgres://berth@db/b"), "postgres://berth@db/b");
        assert_eq!(redact_dsn("postgres://db"), "postgres://db");
    }
}
