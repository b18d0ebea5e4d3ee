//! Administration endpoints (Berth extensions, outside `/v2/`):
//!
//! - `POST /_berth/gc?dryrun=&deleteuntagged=&deletereferrers=&grace=`: run garbage collection now
//! - `POST /_berth/retention?dryrun=`: apply the retention policies now
//! - `GET /_berth/quotas`: usage of each namespace with a quota
//! - `DELETE /_berth/repositories/<name>`: delete a repository
//!
//! Collection, retention and quotas need an administrator (`auth.access.admins`);
//! deleting a repository needs the delete right on it.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_auth::{Action, Actions, Credentials, Grant, Need, Refusal};
use berth_registry::lifecycle::{GcOptions, NoProgress};
use berth_types::RepoName;

use crate::error::ApiError;
use crate::AppState;

pub(crate) async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path().trim_start_matches("/_berth/");
    let query: HashMap<String, String> =
        parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let auth = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let result = match (&parts.method, path) {
        (&Method::POST, "gc") => match admin(&state, auth).await.and_then(|()| grace(&state, &query)) {
            Ok(grace) => {
                let opts = GcOptions {
                    grace,
                    delete_untagged: flag("deleteuntagged"),
                    delete_referrers: flag("deletereferrers"),
                    dry_run: flag("dryrun"),
                };
                state.registry.collect_garbage(&opts, &NoProgress).await.map(|r| json(&r)).map_err(ApiError::from)
            }
            Err(e) => Err(e),
        },
        (&Method::POST, "retention") => match admin(&state, auth).await {
            Ok(()) => {
                let l = &state.config.lifecycle;
                state
                    .registry
                    .apply_retention(&l.retention, l.gc_grace, flag("dryrun"), &NoProgress)
                    .await
                    .map(|r| json(&r))
                    .map_err(ApiError::from)
            }
            Err(e) => Err(e),
        },
        (&Method::GET, "quotas") => match admin(&state, auth).await {
            Ok(()) => state.registry.quota_usage().await.map(|r| json(&r)).map_err(ApiError::from),
            Err(e) => Err(e),
        },
        (&Method::DELETE, p) if p.starts_with("repositories/") => {
            match RepoName::parse(p.trim_start_matches("repositories/").trim_end_matches('/')) {
                Err(e) => Err(ApiError::name_invalid(e.to_string())),
                Ok(name) => {
                    let need = Need::Repository { name: name.clone(), actions: Actions::of(&[Action::Delete]) };
                    match authorize(&state, auth, &need).await {
                        Ok(_) => state
                            .registry
                            .delete_repository(&name)
                            .await
                            .map(|()| {
                                let mut r = Response::new(Body::empty());
                                *r.status_mut() = StatusCode::ACCEPTED;
                                r
                            })
                            .map_err(ApiError::from),
                        Err(e) => Err(e),
                    }
                }
            }
        }
        _ => Err(ApiError::not_found()),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `grace=<duration>` (`90s`, `10m`, a bare number of seconds), else `gc.grace`.
fn grace(state: &AppState, query: &HashMap<String, String>) -> Result<std::time::Duration, ApiError> {
    match query.get("grace") {
        None => Ok(state.config.lifecycle.gc_grace),
        Some(g) => berth_types::duration::parse(g, std::time::Duration::from_secs(1))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "UNSUPPORTED", "invalid grace period").with_detail(e)),
    }
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r
}

async fn authorize(state: &AppState, auth: Option<&str>, need: &Need) -> Result<Grant, ApiError> {
    let Some(authz) = &state.config.auth else { return Ok(berth_auth::open_grant()) };
    let creds = Credentials { authorization: auth, base_url: "" };
    authz.authorize(&creds, need).await.map_err(|r| match r {
        Refusal::Unauthorized { challenge, message } => {
            ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
                .with_header(header::WWW_AUTHENTICATE, &challenge)
        }
        Refusal::Denied => ApiError::new(StatusCode::FORBIDDEN, "DENIED", "requested access to the resource is denied"),
    })
}

async fn admin(state: &AppState, auth: Option<&str>) -> Result<(), ApiError> {
    let grant = authorize(state, auth, &Need::Login).await?;
    if !grant.is_admin() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "DENIED", "requested access to the resource is denied")
            .with_detail("administrators only (auth.access.admins)"));
    }
    Ok(())
}
