//! What every entry point shares about access: the registry's base URL as the
//! client sees it (for token realms and `Location`), asking the authorizer,
//! and the one mapping from a refusal to the HTTP answer, used by `/v2/`,
//! `/_berth/` and the token endpoint alike.

use axum::http::{header, HeaderMap};
use berth_auth::{Credentials, Grant, Need, Refusal};

use crate::error::{ApiError, OciCode};
use crate::{AppState, Peer, ServerConfig};

/// The externally visible base URL: the configured `http.host`, else what a
/// reverse proxy says, else the request's Host. Empty with `http.relativeurls`.
pub(crate) fn base_url(cfg: &ServerConfig, headers: &HeaderMap) -> String {
    if let Some(h) = &cfg.host {
        return h.trim_end_matches('/').to_owned();
    }
    if cfg.relative_urls {
        return String::new();
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut proto = first("x-forwarded-proto");
    let mut host = first("x-forwarded-host");
    if let Some(fwd) = first("forwarded") {
        for pair in fwd.split(';') {
            if let Some((k, v)) = pair.split_once('=') {
                let v = v.trim().trim_matches('"').to_owned();
                match k.trim().to_ascii_lowercase().as_str() {
                    "proto" if proto.is_none() => proto = Some(v),
                    "host" if host.is_none() => host = Some(v),
                    _ => {}
                }
            }
        }
    }
    let proto = proto
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| if cfg.tls { "https" } else { "http" }.to_owned());
    let host = host
        .filter(|h| valid_host(h))
        .or_else(|| first("host").filter(|h| valid_host(h)))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{proto}://{host}")
}

/// A host[:port] as a URL may carry it (no spaces, quotes, slashes or controls).
fn valid_host(h: &str) -> bool {
    !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

/// The answer to a refusal: 401 with its challenge, or 403 DENIED with a
/// detail saying what was refused (Docker retries a DENIED error that has none).
pub(crate) fn refusal(r: Refusal, need: &Need) -> ApiError {
    match r {
        Refusal::Unauthorized { challenge, message } => {
            ApiError::new(OciCode::Unauthorized).with_message(message).with_header(header::WWW_AUTHENTICATE, &challenge)
        }
        Refusal::Denied => {
            let detail = match need {
                Need::Repository { name, actions } => format!("{actions} on {name} is not allowed"),
                Need::Catalog => "the catalog is not allowed".to_owned(),
                Need::Login => "not allowed".to_owned(),
            };
            ApiError::new(OciCode::Denied).with_detail(detail)
        }
    }
}

/// Authenticates a request and checks `need`; with no authentication
/// configured everything is granted.
pub(crate) async fn authorize(state: &AppState, headers: &HeaderMap, need: &Need) -> Result<Grant, ApiError> {
    let Some(authz) = &state.config.auth else { return Ok(berth_auth::open_grant()) };
    let base = base_url(&state.config, headers);
    let creds = Credentials {
        authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
        base_url: &base,
    };
    let grant = authz.authorize(&creds, need).await.map_err(|r| refusal(r, need))?;
    tracing::Span::current().record("auth.user.name", grant.identity.name());
    Ok(grant)
}

/// Headers a reverse proxy adds: a request carrying one came from elsewhere,
/// whatever the socket's address.
const FORWARDING: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// Whether an administration request may run: an administrator of the
/// configured authentication, the configured administration token, or, with
/// no authentication configured, a caller on this machine (loopback or the
/// unix socket, not through a proxy).
/// Lets an administrator through; the grant, when one was checked (not for
/// the admin token or a local caller without authentication).
pub(crate) async fn admin(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<Peer>,
) -> Result<Option<Grant>, ApiError> {
    if let Some(token) = &state.config.admin_token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        if sent.is_some_and(|s| berth_auth::constant_time_eq(s.as_bytes(), token.as_bytes())) {
            return Ok(None);
        }
    }
    if state.config.auth.is_none() {
        let proxied = FORWARDING.iter().any(|h| headers.contains_key(*h));
        if peer.is_some_and(|p| p.is_local()) && !proxied {
            return Ok(None);
        }
        return Err(ApiError::new(OciCode::Denied).with_detail(
            "with no authentication configured, administration answers only on this machine \
                 (loopback or the unix socket); configure auth with auth.access.admins, or admin.tokenfile",
        ));
    }
    let grant = authorize(state, headers, &Need::Login).await?;
    if !grant.is_admin() {
        return Err(ApiError::new(OciCode::Denied)
            .with_detail(format!("{} is not an administrator (auth.access.admins)", grant.identity.name())));
    }
    Ok(Some(grant))
}
