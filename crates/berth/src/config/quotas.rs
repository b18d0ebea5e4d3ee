//! Berth's `quotas`: byte limits per namespace.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use crate::config::Config;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    pub namespace: String,
    /// `10GiB`, `500MB`, or bytes.
    pub limit: serde_json::Value,
}

impl Config {
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
                let namespace = berth_types::RepoName::parse(ns).map_err(|e| anyhow!("quotas[{i}].namespace: {e}"))?;
                Ok(berth_registry::quota::Quota { namespace, limit })
            })
            .collect()
    }
}
