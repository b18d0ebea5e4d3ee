//! distribution's `http` and `catalog` sections, and Berth's `http.timeouts` and `http.limits`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde::Deserialize;

use crate::config::Config;

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
    pub secret: Option<berth_types::secret::Secret>,
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
    /// Berth: proxies (addresses or ranges, `10.0.0.0/8`) whose
    /// `X-Forwarded-For` or `Forwarded: for=` names the client. From any
    /// other peer those headers say nothing about who asks.
    #[serde(default)]
    pub trustedproxies: Vec<String>,
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

pub(crate) fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

pub(crate) fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

pub(crate) fn two_minutes() -> Duration {
    Duration::from_secs(120)
}

pub(crate) fn minute() -> Duration {
    Duration::from_secs(60)
}

pub(crate) fn kib() -> u64 {
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
    /// Open connections in all (0: no limit); past it a new connection is
    /// answered 503 with `Retry-After`.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Requests streaming a body at once (uploads, blob reads, manifest
    /// pushes; 0: no limit); past it they are answered 503 with `Retry-After`.
    #[serde(default = "default_streams")]
    pub streams: usize,
}

pub(crate) fn default_connections() -> usize {
    4096
}

pub(crate) fn default_streams() -> usize {
    1024
}

pub(crate) fn default_per_client() -> usize {
    256
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            connectionsperclient: default_per_client(),
            connections: default_connections(),
            streams: default_streams(),
        }
    }
}

pub(crate) fn default_addr() -> String {
    ":5000".into()
}

pub(crate) fn default_net() -> String {
    "tcp".into()
}

pub(crate) fn default_drain() -> Duration {
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
            trustedproxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    #[serde(default = "default_maxentries")]
    pub maxentries: u64,
}

pub(crate) fn default_maxentries() -> u64 {
    1000
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig { maxentries: default_maxentries() }
    }
}

impl Config {
    /// `http.trustedproxies`, parsed.
    pub fn trusted_proxies(&self) -> Result<Vec<berth_server::Cidr>> {
        let parse = |(i, p): (usize, &String)| {
            berth_server::Cidr::parse(p).map_err(|e| anyhow::anyhow!("http.trustedproxies[{i}]: {e}"))
        };
        self.http.trustedproxies.iter().enumerate().map(parse).collect()
    }

    /// `http.headers` as header pairs.
    pub fn response_headers(&self) -> Result<Vec<(::http::HeaderName, ::http::HeaderValue)>> {
        let mut out = Vec::new();
        for (name, values) in &self.http.headers {
            out.extend(http_header(name, values)?);
        }
        Ok(out)
    }
}

pub(crate) fn http_header(name: &str, values: &[String]) -> Result<Vec<(::http::HeaderName, ::http::HeaderValue)>> {
    let n: ::http::HeaderName = name.parse().map_err(|_| anyhow!("invalid header name"))?;
    values.iter().map(|v| Ok((n.clone(), v.parse().map_err(|_| anyhow!("invalid header value {v:?}"))?))).collect()
}
