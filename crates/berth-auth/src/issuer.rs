//! Berth's own token server for deployments without one: the Docker token
//! protocol (GET with basic auth) and the OAuth2 form (password and
//! refresh_token grants) that containerd uses. Tokens are ES256 JWTs signed by
//! a P-256 key Berth generates (or loads), and grant only what the access
//! rules allow.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde::Serialize;

use crate::token::{libtrust_kid, Access, Audience, Claims, Verifier};
use crate::{AuthError, Authorizer, Identity, IssuerConfig, Scope};

pub struct Issuer {
    config: IssuerConfig,
    encoding: EncodingKey,
    kid: String,
    verifier: Verifier,
}

/// A token request, from the query (GET) or form (POST) of the token endpoint.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// Basic credentials from the Authorization header.
    pub basic: Option<(String, String)>,
    /// `grant_type` of the OAuth2 form; None for the GET protocol.
    pub grant_type: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub refresh_token: Option<String>,
    pub service: Option<String>,
    pub scopes: Vec<Scope>,
    /// `offline_token=true` (GET) or `access_type=offline` (POST): also issue a refresh token.
    pub offline: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Wrong credentials or refresh token: 401.
    Unauthorized,
    /// A malformed request: 400.
    Invalid(String),
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn rfc3339(secs: u64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Reads the signing key, or generates and saves one (mode 0600).
fn load_or_create_key(path: &Path) -> Result<p256::SecretKey, AuthError> {
    let bad = |m: String| AuthError::Config(format!("auth.issuer.key: {}: {m}", path.display()));
    match std::fs::read_to_string(path) {
        Ok(pem) => p256::SecretKey::from_pkcs8_pem(&pem).map_err(|e| bad(format!("not a PKCS#8 P-256 key: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = p256::SecretKey::random(&mut rand_core::OsRng);
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| bad(e.to_string()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
            }
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| bad(e.to_string()))?;
            f.write_all(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
            f.sync_all().map_err(|e| bad(e.to_string()))?;
            tracing::info!(path = %path.display(), "generated a token signing key");
            Ok(key)
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

impl Issuer {
    pub fn load(cfg: &IssuerConfig) -> Result<Self, AuthError> {
        let key = load_or_create_key(&cfg.key)?;
        let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| AuthError::Config(format!("auth.issuer.key: {e}")))?;
        let encoding =
            EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| AuthError::Config(format!("auth.issuer.key: {e}")))?;
        let public = key.public_key();
        let spki = public.to_public_key_der().map_err(|e| AuthError::Config(format!("auth.issuer.key: {e}")))?;
        let kid = libtrust_kid(spki.as_bytes());
        let point = p256::EncodedPoint::from(public);
        let decoding = DecodingKey::from_ec_der(point.as_bytes());
        let verifier = Verifier::single(&cfg.issuer, &cfg.service, &kid, decoding);
        Ok(Issuer { config: cfg.clone(), encoding, kid, verifier })
    }

    /// The libtrust key ID tokens carry in `kid`.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    fn sign(&self, subject: &str, audience: &str, access: Vec<Access>, lifetime: u64) -> Option<String> {
        let now = now();
        let mut jti = [0u8; 16];
        rand::fill(&mut jti);
        let claims = Claims {
            iss: self.config.issuer.clone(),
            sub: subject.to_owned(),
            aud: Audience::One(audience.to_owned()),
            exp: now + lifetime,
            nbf: Some(now.saturating_sub(1)),
            iat: Some(now),
            jti: Some(hex::encode(jti)),
            access,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        match jsonwebtoken::encode(&header, &claims, &self.encoding) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "signing a token failed");
                None
            }
        }
    }

    fn refresh_audience(&self) -> String {
        format!("{}#refresh", self.config.service)
    }

    /// Claims of a token this issuer signed for the registry.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        self.verifier.verify(token)
    }

    /// Answers a token request: checks credentials, then grants the requested
    /// scopes as far as the access rules allow.
    pub async fn issue(&self, authz: &Arc<Authorizer>, req: &TokenRequest) -> Result<TokenResponse, TokenError> {
        if let Some(s) = &req.service {
            if *s != self.config.service {
                return Err(TokenError::Invalid(format!("unknown service {s:?}")));
            }
        }
        let identity = match req.grant_type.as_deref() {
            Some("refresh_token") => {
                let t = req.refresh_token.as_deref().ok_or(TokenError::Invalid("refresh_token is required".into()))?;
                let claims = self.verifier.verify_for(t, &self.refresh_audience()).ok_or(TokenError::Unauthorized)?;
                Identity::user(&claims.sub)
            }
            Some("password") => {
                let (u, p) = (req.username.as_deref().unwrap_or(""), req.password.as_deref().unwrap_or(""));
                if !authz.check_password(u, p).await {
                    tokio::time::sleep(authz.failure_delay).await;
                    return Err(TokenError::Unauthorized);
                }
                Identity::user(u)
            }
            Some(other) => return Err(TokenError::Invalid(format!("unsupported grant_type {other:?}"))),
            None => match &req.basic {
                Some((u, p)) => {
                    if !authz.check_password(u, p).await {
                        tokio::time::sleep(authz.failure_delay).await;
                        return Err(TokenError::Unauthorized);
                    }
                    Identity::user(u)
                }
                None => Identity::anonymous(),
            },
        };
        let mut access = Vec::new();
        let mut granted_scopes = Vec::new();
        for scope in &req.scopes {
            match scope {
                Scope::Repository { name, actions } => {
                    let allowed = authz.allowed(&identity, name, actions).await;
                    if !allowed.is_empty() {
                        access.push(Access {
                            kind: "repository".into(),
                            name: name.to_string(),
                            actions: allowed.iter().map(|a| a.as_str().to_owned()).collect(),
                        });
                        granted_scopes.push(Scope::Repository { name: name.clone(), actions: allowed }.to_string());
                    }
                }
                Scope::Catalog => {
                    // The catalog is filtered by pull access when served.
                    access.push(Access { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] });
                    granted_scopes.push(Scope::Catalog.to_string());
                }
            }
        }
        let subject = identity.user.clone().unwrap_or_default();
        let lifetime = self.config.expiration.as_secs().max(1);
        let token = self.sign(&subject, &self.config.service, access, lifetime).ok_or(TokenError::Unauthorized)?;
        let refresh_token = match (&identity.user, req.offline || req.grant_type.as_deref() == Some("refresh_token")) {
            (Some(u), true) => {
                self.sign(u, &self.refresh_audience(), Vec::new(), self.config.refreshexpiration.as_secs())
            }
            _ => None,
        };
        Ok(TokenResponse {
            access_token: token.clone(),
            token,
            expires_in: lifetime,
            issued_at: rfc3339(now()),
            refresh_token,
            scope: (!granted_scopes.is_empty()).then(|| granted_scopes.join(" ")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_444_461), "2026-11-23T14:34:21Z");
    }
}
