//! Berth's `retention`: policies per repository pattern.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Deserializer};

use crate::config::{day, Config};

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

pub(crate) fn optional_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    berth_types::duration::seconds(d).map(Some)
}

impl Config {
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
}
