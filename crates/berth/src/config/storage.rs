//! distribution's `storage` section: the driver, deletes, redirects, maintenance; and
//! Berth's `storage.filesystem.reserve`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde::Deserialize;

use crate::config::{day, week, yes, Config, OssSection, S3Section};

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

impl Default for UploadPurgingConfig {
    fn default() -> Self {
        UploadPurgingConfig { enabled: true, age: week(), interval: day(), dryrun: false }
    }
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
}
