//! Berth's `admin` (how the administration endpoints may be reached) and `uploads`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::config::yes;

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
