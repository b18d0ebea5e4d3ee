//! Docker registry bearer tokens (JWT): claims, key identifiers, and
//! verification of tokens from another issuer (distribution's `auth.token`).
//!
//! A token's signing key is found by its `kid` header (the libtrust key ID of a
//! certificate in `rootcertbundle`, or a key ID of the `jwks` file), or by an
//! `x5c` header whose first certificate is one of the bundle's certificates.
//! Intermediate certificate chains are not followed.

use std::path::Path;

use base64::Engine;
use berth_types::RepoName;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use x509_cert::der::Encode;

use crate::{Action, Actions, AuthError, TokenConfig};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY: u64 = 60;

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    pub aud: Audience,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default)]
    pub access: Vec<Access>,
}

/// `aud` is a string or a list of strings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The actions a token's claims give on `repo` (`*` means all).
pub fn claimed_actions(access: &[Access], repo: &RepoName) -> Actions {
    let mut out = Actions::none();
    for a in access.iter().filter(|a| a.kind == "repository" && a.name == repo.as_str()) {
        for act in &a.actions {
            if act == "*" {
                out.union(&Actions::all());
            } else if let Some(x) = Action::parse(act) {
                out.union(&Actions::of(&[x]));
            }
        }
    }
    out
}

/// Whether the claims give `registry:catalog:*`.
pub fn claims_catalog(access: &[Access]) -> bool {
    access.iter().any(|a| a.kind == "registry" && a.name == "catalog" && a.actions.iter().any(|x| x == "*"))
}

/// The libtrust key ID of a public key (what Docker token servers put in
/// `kid`): SHA-256 of the SubjectPublicKeyInfo DER, first 240 bits, base32,
/// in 12 groups of 4 separated by `:`.
pub fn libtrust_kid(spki_der: &[u8]) -> String {
    let hash = sha2::Sha256::digest(spki_der);
    let b32 = base32(&hash[..30]);
    b32.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(":")
}

fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec256,
    Ec384,
    Ed,
}

impl Family {
    fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (
                Family::Rsa,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (Family::Ec256, Algorithm::ES256)
                | (Family::Ec384, Algorithm::ES384)
                | (Family::Ed, Algorithm::EdDSA)
        )
    }
}

struct TrustedKey {
    kid: Option<String>,
    cert_der: Option<Vec<u8>>,
    family: Family,
    key: DecodingKey,
}

pub struct Verifier {
    issuer: String,
    service: String,
    algorithms: Vec<Algorithm>,
    keys: Vec<TrustedKey>,
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";

fn cert_key(cert: &x509_cert::Certificate) -> Result<TrustedKey, String> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let spki_der = spki.to_der().map_err(|e| e.to_string())?;
    let raw = spki.subject_public_key.raw_bytes();
    let oid = spki.algorithm.oid.to_string();
    let (family, key) = match oid.as_str() {
        OID_RSA => (Family::Rsa, DecodingKey::from_rsa_der(raw)),
        OID_EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<x509_cert::der::asn1::ObjectIdentifier>().ok())
                .map(|o| o.to_string())
                .unwrap_or_default();
            let family = match curve.as_str() {
                OID_P256 => Family::Ec256,
                OID_P384 => Family::Ec384,
                c => return Err(format!("unsupported elliptic curve {c}")),
            };
            (family, DecodingKey::from_ec_der(raw))
        }
        OID_ED25519 => (Family::Ed, DecodingKey::from_ed_der(raw)),
        o => return Err(format!("unsupported public key algorithm {o}")),
    };
    Ok(TrustedKey {
        kid: Some(libtrust_kid(&spki_der)),
        cert_der: Some(cert.to_der().map_err(|e| e.to_string())?),
        family,
        key,
    })
}

/// The trusted keys of a PEM certificate bundle.
fn load_bundle(path: &Path) -> Result<Vec<TrustedKey>, AuthError> {
    let bad = |m: String| AuthError::Config(format!("auth.token.rootcertbundle: {}: {m}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = x509_cert::Certificate::load_pem_chain(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificates".into()));
    }
    certs.iter().map(|c| cert_key(c).map_err(&bad)).collect()
}

fn load_jwks(path: &Path) -> Result<Vec<TrustedKey>, AuthError> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
    let bad = |m: String| AuthError::Config(format!("auth.token.jwks: {}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    set.keys
        .iter()
        .map(|jwk| {
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Family::Ec256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => Family::Ec384,
                AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                _ => return Err(bad("unsupported key type".into())),
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
            Ok(TrustedKey { kid: jwk.common.key_id.clone(), cert_der: None, family, key })
        })
        .collect()
}

fn parse_algorithms(names: Option<&Vec<String>>) -> Result<Vec<Algorithm>, AuthError> {
    let default = ["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"];
    let names: Vec<String> = match names {
        Some(n) => n.clone(),
        None => default.iter().map(|s| s.to_string()).collect(),
    };
    names
        .iter()
        .map(|n| {
            n.parse::<Algorithm>()
                .ok()
                .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
                .ok_or_else(|| AuthError::Config(format!("auth.token.signingalgorithms: unsupported algorithm {n:?}")))
        })
        .collect()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Verifier {
    pub fn from_config(cfg: &TokenConfig) -> Result<Self, AuthError> {
        let mut keys = Vec::new();
        if let Some(b) = &cfg.rootcertbundle {
            keys.extend(load_bundle(b)?);
        }
        if let Some(j) = &cfg.jwks {
            keys.extend(load_jwks(j)?);
        }
        Ok(Verifier {
            issuer: cfg.issuer.clone(),
            service: cfg.service.clone(),
            algorithms: parse_algorithms(cfg.signingalgorithms.as_ref())?,
            keys,
        })
    }

    /// A verifier trusting exactly one key (Berth's own issuer).
    pub(crate) fn single(issuer: &str, service: &str, kid: &str, key: DecodingKey) -> Self {
        Verifier {
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            algorithms: vec![Algorithm::ES256],
            keys: vec![TrustedKey { kid: Some(kid.to_owned()), cert_der: None, family: Family::Ec256, key }],
        }
    }

    /// The claims of a valid token, or why it is not; the caller logs the
    /// reason (never the token).
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        self.verify_for(token, &self.service)
    }

    pub(crate) fn verify_for(&self, token: &str, audience: &str) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let leaf = header
            .x5c
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        let candidates: Vec<&TrustedKey> = self
            .keys
            .iter()
            .filter(|k| k.family.fits(header.alg))
            .filter(|k| match (&header.kid, &leaf) {
                (Some(kid), _) => k.kid.as_deref() == Some(kid.as_str()),
                (None, Some(der)) => k.cert_der.as_deref() == Some(der.as_slice()),
                (None, None) => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(match &header.kid {
                Some(kid) => format!("no trusted key has the id {kid:?}"),
                None => "no trusted key matches the token".to_owned(),
            });
        }
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let mut why = String::new();
        for k in candidates {
            match jsonwebtoken::decode::<Claims>(token, &k.key, &v) {
                Ok(data) => {
                    // `nbf`/`exp` are checked by the library; a token from the
                    // far future (clock skew beyond the leeway) is refused here too.
                    if data.claims.iat.is_some_and(|iat| iat > now() + LEEWAY) {
                        return Err("the token was issued in the future".to_owned());
                    }
                    return Ok(data.claims);
                }
                Err(e) => why = e.to_string(),
            }
        }
        Err(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtrust_key_id_format() {
        let kid = libtrust_kid(b"anything");
        assert_eq!(kid.len(), 59, "{kid}");
        assert_eq!(kid.split(':').count(), 12);
        assert!(kid
            .split(':')
            .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))));
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn claims_give_actions() {
        let access = vec![
            Access { kind: "repository".into(), name: "a/b".into(), actions: vec!["pull".into(), "push".into()] },
            Access { kind: "repository".into(), name: "c".into(), actions: vec!["*".into()] },
            Access { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] },
        ];
        let n = |s| RepoName::parse(s).unwrap();
        assert_eq!(claimed_actions(&access, &n("a/b")), Actions::of(&[Action::Pull, Action::Push]));
        assert_eq!(claimed_actions(&access, &n("c")), Actions::all());
        assert!(claimed_actions(&access, &n("d")).is_empty());
        assert!(claims_catalog(&access));
    }
}
