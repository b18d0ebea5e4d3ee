//! The `auth` section: distribution's `htpasswd` and `token` keys, and
//! Berth's `issuer`, `external` and `access`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{Action, AuthError};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub htpasswd: Option<HtpasswdConfig>,
    #[serde(default)]
    pub token: Option<TokenConfig>,
    #[serde(default)]
    pub issuer: Option<IssuerConfig>,
    #[serde(default)]
    pub external: Option<ExternalConfig>,
    #[serde(default)]
    pub access: AccessConfig,
    /// distribution's test-only authenticator; refused.
    #[serde(default)]
    pub silly: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtpasswdConfig {
    #[serde(default = "default_realm")]
    pub realm: String,
    pub path: PathBuf,
}

fn default_realm() -> String {
    "registry".into()
}

/// Verifying bearer tokens from an external issuer (distribution's `auth.token`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM certificates whose public keys may sign tokens.
    #[serde(default)]
    pub rootcertbundle: Option<PathBuf>,
    /// A JWK set file of trusted keys.
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// distribution's switch to redirect browsers to the realm; accepted, no effect.
    #[serde(default)]
    pub autoredirect: bool,
    /// Accepted signature algorithms (default: RS256, RS384, RS512, ES256, ES384, EdDSA).
    #[serde(default)]
    pub signingalgorithms: Option<Vec<String>>,
}

/// Berth's own token server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The token audience; clients send it as `service`.
    #[serde(default = "default_service")]
    pub service: String,
    /// The `iss` claim.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// A PKCS#8 PEM P-256 private key; generated there when missing.
    pub key: PathBuf,
    #[serde(default = "default_expiration", deserialize_with = "berth_types::duration::seconds")]
    pub expiration: Duration,
    /// Lifetime of refresh tokens (the OAuth2 `offline` flow).
    #[serde(default = "default_refresh", deserialize_with = "berth_types::duration::seconds")]
    pub refreshexpiration: Duration,
    /// Path of the token endpoint on this server.
    #[serde(default = "default_token_path")]
    pub path: String,
    /// The realm URL in challenges; default: this server's URL plus `path`.
    #[serde(default)]
    pub realm: Option<String>,
}

fn default_service() -> String {
    "berth".into()
}
fn default_issuer() -> String {
    "berth".into()
}
fn default_expiration() -> Duration {
    Duration::from_secs(300)
}
fn default_refresh() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_token_path() -> String {
    "/auth/token".into()
}

/// The longest life of an access token: they are checked again on use, but
/// a stolen one must not last.
pub const MAX_TOKEN_EXPIRATION: Duration = Duration::from_secs(3600);

impl IssuerConfig {
    /// The issuer Berth runs on its own when an access rule lets anonymous
    /// callers in (Docker pulls anonymously only through the token flow).
    pub fn implicit() -> Self {
        IssuerConfig {
            service: default_service(),
            issuer: default_issuer(),
            key: PathBuf::new(),
            expiration: default_expiration(),
            refreshexpiration: default_refresh(),
            path: default_token_path(),
            realm: None,
        }
    }
}

/// Basic auth whose passwords an identity service validates (seed 000), and
/// an optional authorization service asked per repository and action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    #[serde(default = "default_realm")]
    pub realm: String,
    pub validate: ExternalCall,
    #[serde(default)]
    pub authorize: Option<ExternalCall>,
    /// Optional: asked with `{user}` whether a user still exists, so that a
    /// refresh token of a user disabled at the service stops working. Without
    /// it, users of the service get no refresh tokens.
    #[serde(default)]
    pub lookup: Option<ExternalCall>,
}

/// One HTTP call. `{user}`, `{password}`, `{repository}`, `{namespace}` and
/// `{action}` in the URL, headers and body are replaced (URL-encoded in the URL).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalCall {
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    /// A JSON pointer into the answer where the user name is (validation:
    /// it must equal the login name); none means the status alone decides.
    #[serde(default)]
    pub userfield: Option<String>,
    /// A JSON pointer to a field that must equal `validvalue` for success.
    #[serde(default)]
    pub validfield: Option<String>,
    #[serde(default)]
    pub validvalue: Option<serde_json::Value>,
    #[serde(default = "default_timeout", deserialize_with = "berth_types::duration::seconds")]
    pub timeout: Duration,
    /// How long a successful answer is remembered (failures are not).
    #[serde(default = "default_cache", deserialize_with = "berth_types::duration::seconds")]
    pub cachettl: Duration,
}

fn default_method() -> String {
    "GET".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_cache() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Named groups of users.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Rules; the actions of every matching rule add up. Without rules,
    /// every authenticated user may do everything and anonymous users nothing.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Users (or `group:<name>`) who may run garbage collection and retention
    /// and read quota usage through the administration endpoints.
    #[serde(default)]
    pub admins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Repository patterns: `team/app` (exact), `team/*` (one level),
    /// `team/**` (any depth), `*` or `**` (all). `{user}` stands for the user's name.
    pub repositories: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Applies to anonymous requests.
    #[serde(default)]
    pub anonymous: bool,
    /// Applies to every authenticated user.
    #[serde(default)]
    pub authenticated: bool,
    pub actions: Vec<Action>,
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        self.htpasswd.is_some() || self.token.is_some() || self.issuer.is_some() || self.external.is_some()
    }

    /// Whether Berth runs its token issuer without `auth.issuer`: passwords
    /// are checked here and a rule lets anonymous callers do something, which
    /// Docker and containerd do only after a Bearer challenge.
    pub fn wants_implicit_issuer(&self) -> bool {
        self.issuer.is_none()
            && self.token.is_none()
            && (self.htpasswd.is_some() || self.external.is_some())
            && self.access.rules.iter().any(|r| r.anonymous && !r.actions.is_empty())
    }

    pub fn validate(&self) -> Result<(), AuthError> {
        let bad = |m: &str| Err(AuthError::Config(m.to_owned()));
        if self.silly.is_some() {
            return bad("auth.silly: the test-only authenticator is not supported");
        }
        if self.token.is_some() && (self.htpasswd.is_some() || self.external.is_some() || self.issuer.is_some()) {
            return bad("auth.token: verifying another issuer's tokens excludes htpasswd, external and issuer");
        }
        if let Some(t) = &self.token {
            if t.rootcertbundle.is_none() && t.jwks.is_none() {
                return bad("auth.token: rootcertbundle or jwks is required to verify tokens");
            }
        }
        if let Some(i) = &self.issuer {
            if self.htpasswd.is_none() && self.external.is_none() {
                return bad("auth.issuer: needs auth.htpasswd or auth.external to check passwords");
            }
            if !i.path.starts_with('/') || i.path.starts_with("/v2") {
                return bad("auth.issuer.path: must start with / and not be under /v2");
            }
            if i.expiration.is_zero() {
                return bad("auth.issuer.expiration: must be greater than zero");
            }
            if i.expiration > MAX_TOKEN_EXPIRATION {
                return bad("auth.issuer.expiration: at most 1h (access tokens stay short-lived; clients renew them with refreshexpiration)");
            }
        }
        if (!self.access.rules.is_empty() || !self.access.groups.is_empty()) && self.token.is_some() {
            return bad("auth.access: rules do not apply to another issuer's tokens (their claims decide)");
        }
        for a in &self.access.admins {
            if let Some(g) = a.strip_prefix("group:") {
                if !self.access.groups.contains_key(g) {
                    return Err(AuthError::Config(format!("auth.access.admins: unknown group {g:?}")));
                }
            }
        }
        for (i, r) in self.access.rules.iter().enumerate() {
            if r.repositories.is_empty() {
                return Err(AuthError::Config(format!(
                    "auth.access.rules[{i}].repositories: list at least one pattern"
                )));
            }
            for g in &r.groups {
                if !self.access.groups.contains_key(g) {
                    return Err(AuthError::Config(format!("auth.access.rules[{i}].groups: unknown group {g:?}")));
                }
            }
        }
        Ok(())
    }
}
