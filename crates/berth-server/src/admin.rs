//! Administration endpoints (Berth extensions, outside `/v2/`), parsed once
//! into an [`AdminOp`] as `/v2/` paths are into an endpoint:
//!
//! - `POST /_berth/gc?dryrun=&deleteuntagged=&deletereferrers=&grace=`: queue a garbage collection
//! - `POST /_berth/retention?dryrun=`: queue a run of the retention policies
//!   (both answer `202 Accepted` with the job, and `Location: /_berth/jobs/<id>`)
//! - `GET /_berth/jobs`: this instance's workers, the latest jobs, the backlog
//! - `GET /_berth/jobs/<id>`: one job: queued, running (with progress), done (with its report) or failed
//! - `GET /_berth/quotas`: usage of each namespace with a quota
//! - `DELETE /_berth/repositories/<name>`: delete a repository
//!
//! Everything but deleting a repository needs an administrator (see
//! `authz::admin`); deleting a repository needs the delete right on it.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_auth::{Action, Actions, Need};
use berth_registry::jobs::JobRequest;
use berth_types::RepoName;

use crate::endpoint::percent_decode;
use crate::error::{ApiError, OciCode};
use crate::{authz, AppState, Peer};

/// One administration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOp {
    Gc { dry_run: bool, delete_untagged: bool, delete_referrers: bool, grace: Option<Duration> },
    Retention { dry_run: bool },
    Jobs,
    Job(uuid::Uuid),
    Quotas,
    DeleteRepository(RepoName),
}

fn no_such_job() -> ApiError {
    ApiError::new(OciCode::NotFound).with_message("no such job")
}

fn bad_query(key: &str, detail: String) -> ApiError {
    ApiError::new(OciCode::RequestInvalid).with_message(format!("invalid {key}")).with_detail(detail)
}

/// `true`/`1`, `false`/`0`, or absent (false).
fn flag(query: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match query.get(key).map(String::as_str) {
        None | Some("false") | Some("0") | Some("") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(v) => Err(bad_query(key, format!("{key}={v:?}: expected true or false"))),
    }
}

impl AdminOp {
    /// Parses the path after `/_berth/` (still percent-encoded) with its method and query.
    pub fn parse(method: &Method, path: &str, query: &HashMap<String, String>) -> Result<AdminOp, ApiError> {
        let not_allowed = |allow: &str| {
            ApiError::unsupported(format!("method {method} is not allowed on this endpoint"))
                .with_header(header::ALLOW, allow)
        };
        let path = percent_decode(path).ok_or_else(ApiError::not_found)?;
        match path.as_str() {
            "gc" if method == Method::POST => Ok(AdminOp::Gc {
                dry_run: flag(query, "dryrun")?,
                delete_untagged: flag(query, "deleteuntagged")?,
                delete_referrers: flag(query, "deletereferrers")?,
                grace: match query.get("grace") {
                    None => None,
                    Some(g) => Some(
                        berth_types::duration::parse(g, Duration::from_secs(1))
                            .map_err(|e| bad_query("grace period", e))?,
                    ),
                },
            }),
            "retention" if method == Method::POST => Ok(AdminOp::Retention { dry_run: flag(query, "dryrun")? }),
            "gc" | "retention" => Err(not_allowed("POST")),
            "jobs" | "jobs/" if method == Method::GET || method == Method::HEAD => Ok(AdminOp::Jobs),
            "jobs" | "jobs/" => Err(not_allowed("GET, HEAD")),
            "quotas" if method == Method::GET || method == Method::HEAD => Ok(AdminOp::Quotas),
            "quotas" => Err(not_allowed("GET, HEAD")),
            p if p.starts_with("jobs/") => {
                if method != Method::GET && method != Method::HEAD {
                    return Err(not_allowed("GET, HEAD"));
                }
                let id = uuid::Uuid::parse_str(&p["jobs/".len()..]).map_err(|_| no_such_job())?;
                Ok(AdminOp::Job(id))
            }
            p => match p.strip_prefix("repositories/") {
                Some(name) if method == Method::DELETE => {
                    let name = name.strip_suffix('/').unwrap_or(name);
                    RepoName::parse(name)
                        .map(AdminOp::DeleteRepository)
                        .map_err(|e| ApiError::name_invalid(e.to_string()))
                }
                Some(_) => Err(not_allowed("DELETE")),
                None => Err(ApiError::not_found()),
            },
        }
    }

    /// What the caller needs: an administrator, or a right on a repository.
    fn need(&self) -> Option<Need> {
        match self {
            AdminOp::DeleteRepository(name) => {
                Some(Need::Repository { name: name.clone(), actions: Actions::of(&[Action::Delete]) })
            }
            _ => None,
        }
    }
}

pub(crate) async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/_berth/").unwrap_or_default();
    let query = crate::operation::query_map(parts.uri.query());
    let peer = parts.extensions.get::<Peer>().copied();
    let result = async {
        let op = AdminOp::parse(&parts.method, path, &query)?;
        // With authentication, deleting a repository is a right on it; every
        // other operation, and all of them without authentication, is an
        // administrator's.
        let grant = match op.need().filter(|_| state.config.auth.is_some()) {
            Some(need) => Some(authz::authorize(&state, &parts.headers, &need).await?),
            None => authz::admin(&state, &parts.headers, peer).await?,
        };
        let caller = crate::caller::caller(
            grant.as_ref(),
            parts.extensions.get(),
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        );
        run(&state, op, &authz::base_url(&state.config, &parts.headers), &caller).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn run(state: &AppState, op: AdminOp, base: &str, caller: &berth_registry::Caller) -> Result<Response, ApiError> {
    let reg = &state.registry;
    let queue = |request: JobRequest| async move {
        let id = reg.submit_job(&request).await?;
        state.config.jobs.wake();
        let status = reg.job(&id).await?.ok_or_else(no_such_job)?;
        let mut r = json(&status);
        *r.status_mut() = StatusCode::ACCEPTED;
        if let Ok(v) = header::HeaderValue::from_str(&format!("{base}/_berth/jobs/{id}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Ok::<_, ApiError>(r)
    };
    Ok(match op {
        AdminOp::Gc { dry_run, delete_untagged, delete_referrers, grace } => {
            let grace_ms = grace.map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX));
            queue(JobRequest::Gc { dry_run, delete_untagged, delete_referrers, grace_ms }).await?
        }
        AdminOp::Retention { dry_run } => queue(JobRequest::Retention { dry_run }).await?,
        AdminOp::Jobs => {
            let backlog = reg.job_backlog().await?;
            json(&serde_json::json!({
                "workers": state.config.jobs.board.snapshot(),
                "jobs": reg.recent_jobs(RECENT_JOBS).await?,
                "backlog": {
                    "ready": backlog.ready,
                    "running": backlog.leased,
                    "delayed": backlog.delayed,
                    "dead": backlog.dead,
                },
            }))
        }
        AdminOp::Job(id) => json(&reg.job(&id).await?.ok_or_else(no_such_job)?),
        AdminOp::Quotas => json(&reg.quota_usage().await?),
        AdminOp::DeleteRepository(name) => {
            reg.delete_repository(caller, &name).await?;
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::ACCEPTED;
            r
        }
    })
}

/// Jobs `/_berth/jobs` lists.
const RECENT_JOBS: i64 = 20;

fn json<T: serde::Serialize>(v: &T) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn paths_parse_once_and_names_may_hold_the_route_words() {
        let name = |s: &str| RepoName::parse(s).unwrap();
        let none = q(&[]);
        let cases: Vec<(Method, &str, Result<AdminOp, u16>)> = vec![
            (Method::DELETE, "repositories/hdel", Ok(AdminOp::DeleteRepository(name("hdel")))),
            (
                Method::DELETE,
                "repositories/repositories/hdel",
                Ok(AdminOp::DeleteRepository(name("repositories/hdel"))),
            ),
            (
                Method::DELETE,
                "repositories/repositories/repositories/",
                Ok(AdminOp::DeleteRepository(name("repositories/repositories"))),
            ),
            (Method::DELETE, "repositories/gc/quotas", Ok(AdminOp::DeleteRepository(name("gc/quotas")))),
            (Method::DELETE, "repositories/a%2Fb", Ok(AdminOp::DeleteRepository(name("a/b")))),
            (Method::DELETE, "repositories/", Err(400)),
            (Method::DELETE, "repositories/Bad", Err(400)),
            (Method::GET, "repositories/a", Err(405)),
            (Method::GET, "quotas", Ok(AdminOp::Quotas)),
            (Method::POST, "quotas", Err(405)),
            (Method::POST, "retention", Ok(AdminOp::Retention { dry_run: false })),
            (Method::GET, "gc", Err(405)),
            (Method::POST, "gcx", Err(404)),
            (Method::POST, "x/repositories/a", Err(404)),
            (
                Method::POST,
                "gc",
                Ok(AdminOp::Gc { dry_run: false, delete_untagged: false, delete_referrers: false, grace: None }),
            ),
        ];
        for (m, path, want) in cases {
            let got = AdminOp::parse(&m, path, &none).map_err(|e| e.status().as_u16());
            assert_eq!(got, want, "{m} {path}");
        }
        let gc =
            AdminOp::parse(&Method::POST, "gc", &q(&[("dryrun", "1"), ("deleteuntagged", "true"), ("grace", "90s")]));
        assert_eq!(
            gc.unwrap(),
            AdminOp::Gc {
                dry_run: true,
                delete_untagged: true,
                delete_referrers: false,
                grace: Some(Duration::from_secs(90))
            }
        );
        for bad in [("grace", "99999999999999999999999h"), ("grace", "18446744073709551616s"), ("dryrun", "maybe")] {
            let e = AdminOp::parse(&Method::POST, "gc", &q(&[bad])).unwrap_err();
            assert_eq!((e.status().as_u16(), e.code.code()), (400, "UNSUPPORTED"), "{bad:?}");
        }
    }
}
