//! An external identity service validates basic-auth passwords (often a
//! token used as password, seed 000), and an optional external service
//! authorizes each (user, repository, action). Both fail closed: a timeout,
//! an unreachable service or an unexpected answer means no.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use berth_types::RepoName;
use sha2::Digest as _;

use crate::{Action, Actions, AuthError, ExternalCall, ExternalConfig};

/// (user, repository, action).
type DecisionKey = (String, String, Action);

/// Remembered answers before the cache is emptied.
const MAX_CACHED: usize = 10_000;

pub struct External {
    validate: ExternalCall,
    authorize: Option<ExternalCall>,
    lookup: Option<ExternalCall>,
    client: reqwest::Client,
    salt: [u8; 16],
    logins: Mutex<HashMap<[u8; 32], Instant>>,
    decisions: Mutex<HashMap<DecisionKey, (bool, Instant)>>,
    /// Users the lookup call found, and when.
    known: Mutex<HashMap<String, Instant>>,
}

fn check_call(name: &str, c: &ExternalCall) -> Result<(), AuthError> {
    let bad = |m: String| Err(AuthError::Config(format!("auth.external.{name}: {m}")));
    if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
        return bad(format!("url must be http(s), not {:?}", c.url));
    }
    if reqwest::Method::from_bytes(c.method.to_ascii_uppercase().as_bytes()).is_err() {
        return bad(format!("invalid method {:?}", c.method));
    }
    for p in [&c.userfield, &c.validfield].into_iter().flatten() {
        if !p.is_empty() && !p.starts_with('/') {
            return bad(format!("{p:?} is not a JSON pointer (it starts with /)"));
        }
    }
    if c.validfield.is_some() != c.validvalue.is_some() {
        return bad("validfield and validvalue go together".into());
    }
    Ok(())
}

/// Replaces `{name}` placeholders; `encode` URL-encodes the values.
fn fill(template: &str, vars: &[(&str, &str)], encode: bool) -> String {
    let mut out = template.to_owned();
    for (k, v) in vars {
        let v = if encode { form_encode(v) } else { (*v).to_owned() };
        out = out.replace(&format!("{{{k}}}"), &v);
    }
    out
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON string's content without the quotes, for values placed in JSON bodies.
fn json_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

impl External {
    pub fn new(cfg: &ExternalConfig) -> Result<Self, AuthError> {
        check_call("validate", &cfg.validate)?;
        if let Some(a) = &cfg.authorize {
            check_call("authorize", a)?;
        }
        if let Some(l) = &cfg.lookup {
            check_call("lookup", l)?;
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AuthError::Config(format!("auth.external: {e}")))?;
        let mut salt = [0u8; 16];
        rand::fill(&mut salt);
        Ok(External {
            validate: cfg.validate.clone(),
            authorize: cfg.authorize.clone(),
            lookup: cfg.lookup.clone(),
            client,
            salt,
            logins: Mutex::default(),
            decisions: Mutex::default(),
            known: Mutex::default(),
        })
    }

    pub fn authorizes(&self) -> bool {
        self.authorize.is_some()
    }

    /// Makes one call; Ok(answer body as JSON, or Null) when the status is 2xx.
    async fn call(&self, c: &ExternalCall, vars: &[(&str, &str)]) -> Option<serde_json::Value> {
        let method = reqwest::Method::from_bytes(c.method.to_ascii_uppercase().as_bytes()).ok()?;
        let mut req = self.client.request(method, fill(&c.url, vars, true)).timeout(c.timeout);
        for (k, v) in &c.headers {
            req = req.header(k, fill(v, vars, false));
        }
        if let Some(b) = &c.body {
            let escaped: Vec<(&str, String)> = vars.iter().map(|(k, v)| (*k, json_escape(v))).collect();
            let vars: Vec<(&str, &str)> = escaped.iter().map(|(k, v)| (*k, v.as_str())).collect();
            req = req.body(fill(b, &vars, false));
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                // The URL may carry the password: log the kind of failure only.
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "unreachable"
                } else {
                    "failed"
                };
                tracing::warn!(service = %host_of(&c.url), "external auth call {what}");
                return None;
            }
        };
        if !resp.status().is_success() {
            tracing::debug!(status = resp.status().as_u16(), "external auth call refused");
            return None;
        }
        let body = resp.bytes().await.ok()?;
        Some(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    fn accepted(c: &ExternalCall, answer: &serde_json::Value, user: Option<&str>) -> bool {
        if let (Some(field), Some(want)) = (&c.validfield, &c.validvalue) {
            if answer.pointer(field) != Some(want) {
                return false;
            }
        }
        if let (Some(field), Some(user)) = (&c.userfield, user) {
            if answer.pointer(field).and_then(|v| v.as_str()) != Some(user) {
                return false;
            }
        }
        true
    }

    fn login_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(self.salt);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether the identity service accepts `password` for `user`.
    pub async fn validate(&self, user: &str, password: &str) -> bool {
        let key = self.login_key(user, password);
        {
            let logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
            if logins.get(&key).is_some_and(|at| at.elapsed() < self.validate.cachettl) {
                return true;
            }
        }
        let vars = [("user", user), ("password", password)];
        let ok = match self.call(&self.validate, &vars).await {
            Some(answer) => Self::accepted(&self.validate, &answer, Some(user)),
            None => false,
        };
        if ok {
            let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
            if logins.len() >= MAX_CACHED {
                logins.clear();
            }
            logins.insert(key, Instant::now());
        }
        ok
    }

    /// Whether the service still knows `user` (the `lookup` call; a success is
    /// remembered for its `cachettl`). None when no lookup call is configured.
    pub async fn lookup(&self, user: &str) -> Option<bool> {
        let call = self.lookup.as_ref()?;
        {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if known.get(user).is_some_and(|at| at.elapsed() < call.cachettl) {
                return Some(true);
            }
        }
        let ok = match self.call(call, &[("user", user)]).await {
            Some(answer) => Self::accepted(call, &answer, Some(user)),
            None => false,
        };
        if ok {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if known.len() >= MAX_CACHED {
                known.clear();
            }
            known.insert(user.to_owned(), Instant::now());
        }
        Some(ok)
    }

    /// The subset of `wanted` the authorization service allows.
    pub async fn authorize(&self, user: &str, repo: &RepoName, wanted: &Actions) -> Actions {
        let Some(call) = &self.authorize else { return wanted.clone() };
        let mut out = Actions::none();
        for action in wanted.iter() {
            let key = (user.to_owned(), repo.to_string(), action);
            let cached = {
                let d = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
                d.get(&key).filter(|(_, at)| at.elapsed() < call.cachettl).map(|(ok, _)| *ok)
            };
            let ok = match cached {
                Some(ok) => ok,
                None => {
                    let vars = [
                        ("user", user),
                        ("repository", repo.as_str()),
                        ("namespace", repo.namespace()),
                        ("action", action.as_str()),
                    ];
                    match self.call(call, &vars).await {
                        Some(answer) => {
                            let ok = Self::accepted(call, &answer, None);
                            let mut d = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
                            if d.len() >= MAX_CACHED {
                                d.clear();
                            }
                            d.insert(key, (ok, Instant::now()));
                            ok
                        }
                        // Errors are not remembered: the next request asks again.
                        None => false,
                    }
                }
            };
            if ok {
                out.union(&Actions::of(&[action]));
            }
        }
        out
    }
}

fn host_of(url: &str) -> String {
    url.split("://")
        .nth(1)
        .and_then(|r| r.split(['/', '?']).next())
        .unwrap_or("")
        .rsplit('@')
        .next()
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_encode_urls_and_escape_json() {
        assert_eq!(
            fill("http://x/?u={user}&p={password}", &[("user", "a b"), ("password", "p&q")], true),
            "http://x/?u=a%20b&p=p%26q"
        );
        assert_eq!(json_escape("a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(host_of("https://user:pw@id.example.test:8443/check?x=1"), "id.example.test:8443");
    }
}
