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

/// A new P-256 signing key as PKCS#8 PEM, for an issuer whose key Berth keeps itself.
pub fn generate_key_pem() -> Result<String, AuthError> {
    let key = p256::SecretKey::random(&mut rand_core::OsRng);
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| AuthError::Config(format!("generating a key: {e}")))?;
    Ok(pem.to_string())
}

impl Issuer {
    /// With the key at `cfg.key`, generated there when missing.
    pub fn load(cfg: &IssuerConfig) -> Result<Self, AuthError> {
        Self::with_key(cfg, load_or_create_key(&cfg.key)?)
    }

    /// With a PKCS#8 PEM key from elsewhere (`cfg.key` is not read).
    pub fn with_key_pem(cfg: &IssuerConfig, pem: &str) -> Result<Self, AuthError> {
        let key = p256::SecretKey::from_pkcs8_pem(pem)
            .map_err(|e| AuthError::Config(format!("the token signing key is not a PKCS#8 P-256 key: {e}")))?;
        Self::with_key(cfg, key)
    }

    fn with_key(cfg: &IssuerConfig, key: p256::SecretKey) -> Result<Self, AuthError> {
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

    /// Checks the key file without creating one (for `config check`):
    /// Ok(false) when it is missing and would be generated.
    pub fn check_key(cfg: &IssuerConfig) -> Result<bool, AuthError> {
        let bad = |m: String| AuthError::Config(format!("auth.issuer.key: {}: {m}", cfg.key.display()));
        match std::fs::read_to_string(&cfg.key) {
            Ok(pem) => p256::SecretKey::from_pkcs8_pem(&pem)
                .map(|_| true)
                .map_err(|e| bad(format!("not a PKCS#8 P-256 key: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(bad(e.to_string())),
        }
    }

    pub fn config(&self) -> &IssuerConfig {
        &self.config
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

    /// Claims of a token this issuer signed for the registry, or why not.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
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
                let claims = self.verifier.verify_for(t, &self.refresh_audience()).map_err(|why| {
                    tracing::info!(reason = %why, "refresh token rejected");
                    TokenError::Unauthorized
                })?;
                // The user must still exist: removing it revokes its refresh tokens.
                if authz.user_known(&claims.sub).await != Some(true) {
                    tracing::info!(user = %claims.sub, "refresh token of a user that no longer exists rejected");
                    return Err(TokenError::Unauthorized);
                }
                Identity::user(&claims.sub)
            }
            Some("password") => {
                let (u, p) = (req.username.as_deref().unwrap_or(""), req.password.as_deref().unwrap_or(""));
                if !authz.check_password(u, p).await {
                    tracing::info!(user = %u, "failed login at the token endpoint");
                    tokio::time::sleep(authz.failure_delay).await;
                    return Err(TokenError::Unauthorized);
                }
                Identity::user(u)
            }
            Some(other) => return Err(TokenError::Invalid(format!("unsupported grant_type {other:?}"))),
            None => match &req.basic {
                // Clients without credentials may send empty ones: they are anonymous.
                Some((u, p)) if !(u.is_empty() && p.is_empty()) => {
                    if !authz.check_password(u, p).await {
                        tracing::info!(user = %u, "failed login at the token endpoint");
                        tokio::time::sleep(authz.failure_delay).await;
                        return Err(TokenError::Unauthorized);
                    }
                    Identity::user(u)
                }
                _ => Identity::anonymous(),
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
        let wants_refresh = req.offline || req.grant_type.as_deref() == Some("refresh_token");
        let refresh_token = match &identity.user {
            // Only for users whose removal Berth can see: refreshing checks it.
            Some(u) if wants_refresh && authz.user_known(u).await == Some(true) => {
                self.sign(u, &self.refresh_audience(), Vec::new(), self.config.refreshexpiration.as_secs())
            }
            _ => None,
        };
        Ok(TokenResponse {
            access_token: token.clone(),
            token,
            expires_in: lifetime,
            issued_at: berth_types::time::rfc3339(now()),
            refresh_token,
            scope: (!granted_scopes.is_empty()).then(|| granted_scopes.join(" ")),
        })
    }
}
