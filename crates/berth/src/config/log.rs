//! distribution's `log` section.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::Config;

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

impl Config {
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
}
