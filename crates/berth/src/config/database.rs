//! Berth's `database`: the embedded SQLite file, or PostgreSQL for several instances.

use std::path::PathBuf;

use anyhow::{bail, Result};
use berth_types::secret::Secret;
use serde::Deserialize;

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
    pub dsn: Option<Secret>,
    /// PostgreSQL: connections this instance keeps at most (default 20).
    #[serde(default)]
    pub maxconnections: Option<u32>,
    /// PostgreSQL: the schema that holds Berth's tables (created if absent),
    /// so that several registries share one database; default: the
    /// connection's own (`public`).
    #[serde(default)]
    pub schema: Option<String>,
}

pub(crate) const DEFAULT_DB_CONNECTIONS: u32 = 20;

impl DatabaseConfig {
    /// The DSN when the driver is PostgreSQL.
    pub fn postgres_dsn(&self) -> Option<&str> {
        (self.driver.as_deref() == Some("postgres")).then_some(self.dsn.as_ref().map(Secret::expose)).flatten()
    }

    pub fn max_connections(&self) -> u32 {
        self.maxconnections.unwrap_or(DEFAULT_DB_CONNECTIONS)
    }

    /// The DSN with its password (in the URL or as a `password=` parameter)
    /// replaced by `***`, for messages and logs.
    pub fn redacted_dsn(&self) -> Option<String> {
        self.dsn.as_ref().map(Secret::expose).map(redact_dsn)
    }

    /// The PostgreSQL database as messages name it: the DSN without its
    /// password, and the schema when one is set.
    pub fn shown_postgres(&self) -> String {
        let dsn = self.redacted_dsn().unwrap_or_default();
        match &self.schema {
            Some(s) => format!("{dsn} (schema {s})"),
            None => dsn,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match self.driver.as_deref() {
            None | Some("sqlite") => {
                if self.dsn.is_some() {
                    bail!("database.dsn: only used with database.driver: postgres");
                }
                if self.schema.is_some() {
                    bail!("database.schema: only used with database.driver: postgres (with SQLite, give each registry its own database.path)");
                }
            }
            Some("postgres") => {
                let dsn = self.dsn.as_ref().map(Secret::expose).map(str::trim).unwrap_or_default();
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
                if let Some(s) = &self.schema {
                    if !berth_metadata::valid_schema(s) {
                        bail!("database.schema: {s:?} is not a schema name Berth uses: 1 to 63 of a-z, 0-9, '_', '.', '-'");
                    }
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
            .field("schema", &self.schema)
            .field("maxconnections", &self.maxconnections)
            .finish()
    }
}

/// `scheme://user:secret@host/db?password=secret` → `scheme://user:***@host/db?password=***`.
pub(crate) fn redact_dsn(dsn: &str) -> String {
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
