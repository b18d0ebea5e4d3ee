//! Authentication and access control. Who is asking comes from one of:
//! an htpasswd file (`auth.htpasswd`), an external identity service that
//! validates basic-auth passwords (`auth.external`), Docker bearer tokens
//! issued elsewhere (`auth.token`), or tokens from Berth's own issuer
//! (`auth.issuer`). What they may do comes from the access rules
//! (`auth.access`), an optional external authorization service, or the
//! token's claims. Knows no storage and no HTTP framework: the edge passes
//! header values in and gets decisions out.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use berth_types::RepoName;
use serde::Deserialize;

mod config;
pub mod external;
pub mod htpasswd;
pub mod issuer;
pub mod rules;
pub mod token;

pub use config::*;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Config(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What can be done to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// A set of actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions(BTreeSet<Action>);

impl Actions {
    pub fn all() -> Self {
        Actions([Action::Pull, Action::Push, Action::Delete].into_iter().collect())
    }

    pub fn none() -> Self {
        Actions::default()
    }

    pub fn of(a: &[Action]) -> Self {
        Actions(a.iter().copied().collect())
    }

    pub fn contains(&self, a: Action) -> bool {
        self.0.contains(&a)
    }

    pub fn contains_all(&self, other: &Actions) -> bool {
        other.0.is_subset(&self.0)
    }

    pub fn union(&mut self, other: &Actions) {
        self.0.extend(other.0.iter().copied());
    }

    pub fn intersect(&self, other: &Actions) -> Actions {
        Actions(self.0.intersection(&other.0).copied().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Action> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<&str> = self.0.iter().map(|a| a.as_str()).collect();
        f.write_str(&v.join(","))
    }
}

/// A Docker token scope: `repository:<name>:<actions>` or `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Repository { name: RepoName, actions: Actions },
    Catalog,
}

impl Scope {
    /// Parses one scope; unknown resource types and actions are dropped, as
    /// token servers do.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        match kind {
            "repository" => {
                // Names may carry a registry host prefix `host/name` in old clients; they do not here.
                let name = RepoName::parse(name).ok()?;
                let actions = Actions(actions.split(',').filter_map(|a| Action::parse(a.trim())).collect());
                Some(Scope::Repository { name, actions })
            }
            "registry" if name == "catalog" => Some(Scope::Catalog),
            _ => None,
        }
    }

    /// Several space-separated scopes (one `scope` parameter may hold many).
    pub fn parse_list(s: &str) -> Vec<Scope> {
        s.split_whitespace().filter_map(Scope::parse).collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repository { name, actions } => write!(f, "repository:{name}:{actions}"),
            Scope::Catalog => f.write_str("registry:catalog:*"),
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// None for anonymous requests.
    pub user: Option<String>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity { user: None }
    }

    pub fn user(name: &str) -> Self {
        Identity { user: Some(name.to_owned()) }
    }

    pub fn name(&self) -> &str {
        self.user.as_deref().unwrap_or("anonymous")
    }
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// `/v2/`: any successfully authenticated caller (anonymous only where allowed).
    Login,
    /// The catalog; its entries are filtered by pull access afterwards.
    Catalog,
    Repository {
        name: RepoName,
        actions: Actions,
    },
}

impl Need {
    fn scope(&self) -> Option<Scope> {
        match self {
            Need::Login => None,
            Need::Catalog => Some(Scope::Catalog),
            Need::Repository { name, actions } => {
                Some(Scope::Repository { name: name.clone(), actions: actions.clone() })
            }
        }
    }
}

/// An authenticated caller and how to check further access for it.
#[derive(Clone)]
pub struct Grant {
    pub identity: Identity,
    source: GrantSource,
}

#[derive(Clone)]
enum GrantSource {
    /// Rules (and the external authorizer) decide per repository.
    Rules(Arc<Authorizer>),
    /// A token from another issuer: its claims are all there is.
    Claims(Arc<Vec<token::Access>>),
    /// A token of our issuer: bound to its claims, and the rules still apply
    /// (they may have changed since it was issued).
    Issued(Arc<Vec<token::Access>>, Arc<Authorizer>),
    /// No authentication configured: everything is allowed.
    Open,
}

impl Grant {
    /// The actions allowed on `repo`, among `wanted`.
    pub async fn allowed(&self, repo: &RepoName, wanted: &Actions) -> Actions {
        match &self.source {
            GrantSource::Open => wanted.clone(),
            GrantSource::Claims(access) => token::claimed_actions(access, repo).intersect(wanted),
            GrantSource::Rules(a) => a.allowed(&self.identity, repo, wanted).await,
            GrantSource::Issued(access, a) => {
                let claimed = token::claimed_actions(access, repo).intersect(wanted);
                a.allowed(&self.identity, repo, &claimed).await
            }
        }
    }

    /// Whether the caller may run administrative operations.
    pub fn is_admin(&self) -> bool {
        match &self.source {
            GrantSource::Open => true,
            GrantSource::Rules(a) | GrantSource::Issued(_, a) => a.rules.is_admin(&self.identity),
            // Another issuer's tokens carry no administrator role.
            GrantSource::Claims(_) => false,
        }
    }

    pub async fn may_pull(&self, repo: &RepoName) -> bool {
        self.allowed(repo, &Actions::of(&[Action::Pull])).await.contains(Action::Pull)
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401 with this `WWW-Authenticate` value.
    Unauthorized { challenge: String, message: &'static str },
    /// 403: authenticated, not allowed.
    Denied,
}

/// The request's credentials, as the edge found them.
#[derive(Debug, Clone, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// Base URL of the registry as the client sees it, for a default token realm.
    pub base_url: &'a str,
}

/// Decides requests. Built once from the configuration.
pub struct Authorizer {
    config: AuthConfig,
    htpasswd: Option<htpasswd::Htpasswd>,
    external: Option<external::External>,
    verifier: Option<token::Verifier>,
    issuer: Option<issuer::Issuer>,
    /// The issuer runs without `auth.issuer`, because a rule lets anonymous callers in.
    implicit_issuer: bool,
    rules: rules::Rules,
    /// Delay before answering a failed login.
    pub failure_delay: Duration,
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer").field("mode", &self.mode()).finish()
    }
}

fn basic_challenge(realm: &str) -> String {
    format!("Basic realm=\"{}\"", realm.replace('"', ""))
}

impl Authorizer {
    /// Builds from configuration, loading files and keys. None when no
    /// authentication is configured. `implicit_key` is the PKCS#8 PEM key of
    /// the issuer Berth runs for anonymous rules
    /// ([`AuthConfig::wants_implicit_issuer`]); without one a key is made for
    /// this process only.
    pub fn new(config: AuthConfig, implicit_key: Option<&str>) -> Result<Option<Arc<Authorizer>>, AuthError> {
        config.validate()?;
        if !config.enabled() {
            return Ok(None);
        }
        let htpasswd = config.htpasswd.as_ref().map(htpasswd::Htpasswd::open).transpose()?;
        let external = config.external.as_ref().map(external::External::new).transpose()?;
        let verifier = config.token.as_ref().map(token::Verifier::from_config).transpose()?;
        let implicit_issuer = config.wants_implicit_issuer();
        let issuer = match &config.issuer {
            Some(i) => Some(issuer::Issuer::load(i)?),
            None if implicit_issuer => {
                let pem = match implicit_key {
                    Some(k) => k.to_owned(),
                    None => {
                        tracing::warn!("the token signing key is this process's own: tokens end with it");
                        issuer::generate_key_pem()?
                    }
                };
                Some(issuer::Issuer::with_key_pem(&IssuerConfig::implicit(), &pem)?)
            }
            None => None,
        };
        let rules = rules::Rules::new(&config.access)?;
        Ok(Some(Arc::new(Authorizer {
            config,
            htpasswd,
            external,
            verifier,
            issuer,
            implicit_issuer,
            rules,
            failure_delay: Duration::from_millis(500),
        })))
    }

    /// Checks a configuration as [`Authorizer::new`] would build it (files,
    /// certificates, key), creating nothing. Returns the mode it would run in.
    pub fn check(config: &AuthConfig) -> Result<Option<String>, AuthError> {
        config.validate()?;
        if !config.enabled() {
            return Ok(None);
        }
        if let Some(h) = &config.htpasswd {
            htpasswd::Htpasswd::open(h)?;
        }
        if let Some(e) = &config.external {
            external::External::new(e)?;
        }
        if let Some(t) = &config.token {
            token::Verifier::from_config(t)?;
        }
        rules::Rules::new(&config.access)?;
        let mut mode = Self::mode_of(config).to_owned();
        if let Some(i) = &config.issuer {
            if !issuer::Issuer::check_key(i)? {
                mode.push_str(&format!(" (its signing key will be generated at {})", i.key.display()));
            }
        }
        Ok(Some(mode))
    }

    fn mode_of(config: &AuthConfig) -> &'static str {
        let passwords = if config.external.is_some() { "external" } else { "htpasswd" };
        match (&config.issuer, &config.token, config.wants_implicit_issuer(), passwords) {
            (Some(_), _, _, _) => "token issuer",
            (_, Some(_), _, _) => "token",
            (_, _, true, "external") => "external, with the built-in token issuer for anonymous access",
            (_, _, true, _) => "htpasswd, with the built-in token issuer for anonymous access",
            (_, _, false, p) => p,
        }
    }

    pub fn mode(&self) -> &'static str {
        Self::mode_of(&self.config)
    }

    /// Whether the issuer runs only because an anonymous rule needs it.
    pub fn implicit_issuer(&self) -> bool {
        self.implicit_issuer
    }

    pub fn issuer(&self) -> Option<&issuer::Issuer> {
        self.issuer.as_ref()
    }

    /// The path of the built-in token endpoint, when there is one.
    pub fn token_path(&self) -> Option<&str> {
        self.issuer.as_ref().map(|i| i.config().path.as_str())
    }

    /// The challenge for a wrong password: Basic, with the realm of the password source.
    pub fn password_challenge(&self) -> String {
        let realm = self
            .config
            .htpasswd
            .as_ref()
            .map(|h| h.realm.as_str())
            .or(self.config.external.as_ref().map(|e| e.realm.as_str()))
            .unwrap_or("registry");
        basic_challenge(realm)
    }

    fn challenge(&self, creds: &Credentials<'_>, need: &Need, insufficient: bool) -> String {
        let bearer = |realm: &str, service: &str| {
            let mut c = format!("Bearer realm=\"{realm}\",service=\"{service}\"");
            if let Some(scope) = need.scope() {
                c.push_str(&format!(",scope=\"{scope}\""));
            }
            if insufficient {
                c.push_str(",error=\"insufficient_scope\"");
            }
            c
        };
        if let Some(i) = &self.issuer {
            let i = i.config();
            let realm = i.realm.clone().unwrap_or_else(|| format!("{}{}", creds.base_url, i.path));
            return bearer(&realm, &i.service);
        }
        if let Some(t) = &self.config.token {
            return bearer(&t.realm, &t.service);
        }
        self.password_challenge()
    }

    /// Checks a username and password against the configured source.
    pub async fn check_password(&self, user: &str, password: &str) -> bool {
        if user.is_empty() || password.is_empty() {
            return false;
        }
        if let Some(h) = &self.htpasswd {
            if h.verify(user, password).await {
                return true;
            }
        }
        if let Some(e) = &self.external {
            return e.validate(user, password).await;
        }
        false
    }

    /// Whether `user` still exists for the password sources: Some(false)
    /// once it is gone, None when no source can tell (an identity service
    /// without a `lookup` call).
    pub async fn user_known(&self, user: &str) -> Option<bool> {
        if self.htpasswd.as_ref().is_some_and(|h| h.contains(user)) {
            return Some(true);
        }
        match &self.external {
            Some(e) => e.lookup(user).await,
            None => Some(false),
        }
    }

    /// Authenticates a request and checks it may do what `need` says.
    pub async fn authorize(self: &Arc<Self>, creds: &Credentials<'_>, need: &Need) -> Result<Grant, Refusal> {
        let unauthorized = |message| Refusal::Unauthorized { challenge: self.challenge(creds, need, false), message };
        let auth = creds.authorization.map(str::trim).unwrap_or("");
        let (scheme, value) = auth.split_once(' ').map(|(a, b)| (a, b.trim())).unwrap_or((auth, ""));
        // Clients without credentials (skopeo, podman) may send empty basic ones.
        let basic = scheme.eq_ignore_ascii_case("basic").then(|| decode_basic(value));
        let anonymous_basic = matches!(&basic, Some(Some((u, p))) if u.is_empty() && p.is_empty());

        let grant = if scheme.eq_ignore_ascii_case("bearer") && !value.is_empty() {
            let verified = if let Some(i) = &self.issuer {
                i.verify(value)
            } else if let Some(v) = &self.verifier {
                v.verify(value)
            } else {
                Err("bearer tokens are not accepted here".to_owned())
            };
            let claims = match verified {
                Ok(c) => c,
                Err(why) => {
                    tracing::info!(reason = %why, "bearer token rejected");
                    return Err(unauthorized("invalid or expired token"));
                }
            };
            let identity = if claims.sub.is_empty() { Identity::anonymous() } else { Identity::user(&claims.sub) };
            let access = Arc::new(claims.access);
            let source = match &self.issuer {
                Some(_) => {
                    // A token outlives nothing: its user must still exist.
                    if let Some(u) = &identity.user {
                        if self.user_known(u).await == Some(false) {
                            tracing::info!(user = %u, "token of a user that no longer exists rejected");
                            return Err(unauthorized("invalid or expired token"));
                        }
                    }
                    GrantSource::Issued(access, self.clone())
                }
                None => GrantSource::Claims(access),
            };
            Grant { identity, source }
        } else if basic.is_some() && !value.is_empty() && !anonymous_basic && self.verifier.is_none() {
            let Some(Some((user, password))) = basic else { return Err(unauthorized("malformed credentials")) };
            if !self.check_password(&user, &password).await {
                tracing::info!(user = %user, "failed login");
                tokio::time::sleep(self.failure_delay).await;
                return Err(unauthorized("invalid username or password"));
            }
            Grant { identity: Identity::user(&user), source: GrantSource::Rules(self.clone()) }
        } else {
            // Anonymous: allowed where the rules say so (never with external tokens).
            if self.verifier.is_some() {
                return Err(unauthorized("authentication required"));
            }
            Grant { identity: Identity::anonymous(), source: GrantSource::Rules(self.clone()) }
        };

        // A token that lacks a right asks for a new token with it (401);
        // a password that lacks one is simply refused (403).
        let bearer = matches!(grant.source, GrantSource::Issued(..) | GrantSource::Claims(_));
        match need {
            Need::Login => {
                // A valid token is a login, even an anonymous one; without a
                // token an anonymous caller is asked to authenticate.
                let token = matches!(grant.source, GrantSource::Issued(..) | GrantSource::Claims(_));
                if grant.identity.user.is_none() && !token {
                    return Err(unauthorized("authentication required"));
                }
                Ok(grant)
            }
            Need::Catalog => {
                if let GrantSource::Claims(access) | GrantSource::Issued(access, _) = &grant.source {
                    if !token::claims_catalog(access) {
                        return Err(Refusal::Unauthorized {
                            challenge: self.challenge(creds, need, true),
                            message: "the token does not grant the catalog",
                        });
                    }
                } else if grant.identity.user.is_none() && !self.rules.anonymous_anything() {
                    return Err(unauthorized("authentication required"));
                }
                Ok(grant)
            }
            Need::Repository { name, actions } => {
                let allowed = grant.allowed(name, actions).await;
                if allowed.contains_all(actions) {
                    return Ok(grant);
                }
                if grant.identity.user.is_none() || bearer {
                    // Docker clients answer a 401 by fetching a token (or
                    // credentials) for the scope in the challenge.
                    return Err(Refusal::Unauthorized {
                        challenge: self.challenge(creds, need, grant.identity.user.is_some()),
                        message: if grant.identity.user.is_some() {
                            "insufficient scope"
                        } else {
                            "authentication required"
                        },
                    });
                }
                Err(Refusal::Denied)
            }
        }
    }

    /// Actions `identity` may take on `repo`, among `wanted`.
    pub async fn allowed(&self, identity: &Identity, repo: &RepoName, wanted: &Actions) -> Actions {
        let mut granted = self.rules.allowed(identity, repo).intersect(wanted);
        if let (Some(ext), Some(user)) = (&self.external, &identity.user) {
            if ext.authorizes() {
                granted = ext.authorize(user, repo, &granted).await;
            }
        }
        granted
    }
}

/// Decodes the value of `Authorization: Basic <value>`.
pub fn decode_basic(value: &str) -> Option<(String, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Compares secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A grant for registries without authentication.
pub fn open_grant() -> Grant {
    Grant { identity: Identity::anonymous(), source: GrantSource::Open }
}

#[cfg(test)]
mod tests;
