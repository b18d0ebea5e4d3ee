//! Berth's `gc`: online garbage collection on a schedule.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{day, hour};

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

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { enabled: false, interval: day(), grace: hour(), deleteuntagged: false, dryrun: false }
    }
}
