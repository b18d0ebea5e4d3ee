//! What distribution's configuration has that Berth refuses or ignores, the `version`
//! key, and `compatibility`.

use anyhow::Result;
use serde::{Deserialize, Deserializer};

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

/// `version: 0.1` reads as a number in YAML; distribution treats it as text.
pub(crate) fn version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
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
