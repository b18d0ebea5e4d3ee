//! The HTTP edge: the `/v2/` API of the OCI distribution spec and Docker
//! Registry V2. One parser turns the path into an [`endpoint::Endpoint`],
//! handlers are thin (extract, call the registry, map the result), and every
//! failure leaves through the one table in [`error`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use berth_registry::Registry;
use tracing::Instrument;

mod access_log;
pub mod admin;
mod authz;
mod caller;
pub mod endpoint;
pub mod error;
mod hosts;
pub mod operation;
mod serve;
mod token;
mod v2;

pub use caller::Cidr;
pub use hosts::VirtualHosts;
pub use serve::{serve, BodyStalled, ConnectionLimits, Peer, PeerAddr};

/// What the HTTP edge needs from the configuration (distribution's `http.*`
/// and `catalog.*` keys).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `http.host`: the externally visible base URL used in `Location` headers.
    pub host: Option<String>,
    /// `http.relativeurls`: use relative `Location` headers.
    pub relative_urls: bool,
    /// `http.headers`: added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `catalog.maxentries`: the largest catalog page a client may ask for.
    pub catalog_max_entries: u64,
    /// Whether the listener speaks TLS (the default scheme of absolute URLs).
    pub tls: bool,
    /// Log a line per request (`log.accesslog.disabled` turns it off).
    pub access_log: bool,
    /// Authentication and access control; None serves everyone everything.
    pub auth: Option<Arc<berth_auth::Authorizer>>,
    /// The process's workers: their status, and the bell that wakes the one
    /// running administration jobs.
    pub jobs: berth_jobs::JobsHandle,
    /// A bearer token that opens the administration endpoints (`admin.tokenfile`).
    pub admin_token: Option<String>,
    /// A mount without `from` looks for the blob in repositories the caller may pull.
    pub automatic_mount: bool,
    /// `http.trustedproxies`: peers whose forwarded client address is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// `http.limits.streams`: requests streaming a body (uploads, blob reads)
    /// at once; beyond it they are answered 503 with `Retry-After`. One limit
    /// may be shared by the registries of a process.
    pub streams: StreamLimit,
    /// The registry's name, in a process serving several (`berth.registry` in its spans).
    pub name: Option<String>,
}

/// How many requests may stream a body at once (`http.limits.streams`);
/// clones share the count.
#[derive(Debug, Clone)]
pub struct StreamLimit(Arc<tokio::sync::Semaphore>);

impl StreamLimit {
    /// At most `n` at once; 0 is no limit.
    pub fn new(n: usize) -> Self {
        let n = match n {
            0 => tokio::sync::Semaphore::MAX_PERMITS,
            n => n.min(tokio::sync::Semaphore::MAX_PERMITS),
        };
        StreamLimit(Arc::new(tokio::sync::Semaphore::new(n)))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: None,
            relative_urls: false,
            headers: Vec::new(),
            catalog_max_entries: 1000,
            tls: false,
            access_log: true,
            auth: None,
            jobs: berth_jobs::JobsHandle::default(),
            admin_token: None,
            automatic_mount: true,
            trusted_proxies: Vec::new(),
            streams: StreamLimit::new(1024),
            name: None,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub config: Arc<ServerConfig>,
    /// Requests that stream a body (uploads, blob reads) at once, at most
    /// `ServerConfig::streams`.
    streams: Arc<tokio::sync::Semaphore>,
}

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP service.
pub fn router(registry: Registry, config: ServerConfig) -> Router {
    router_with(registry, config, Router::new())
}

/// The HTTP service with `extra` routes served beside the API, behind the
/// same edge (request ids, common headers, access log, panic guard).
pub fn router_with(registry: Registry, config: ServerConfig, extra: Router) -> Router {
    let token_path = config.auth.as_ref().and_then(|a| a.token_path().map(str::to_owned));
    let streams = config.streams.0.clone();
    let state = AppState { registry, config: Arc::new(config), streams };
    let mut router = Router::new();
    if let Some(path) = token_path {
        router = router.route(&path, axum::routing::get(token::token).post(token::token));
    }
    router
        .route("/", axum::routing::get(v2::root))
        .route("/_berth/{*rest}", axum::routing::any(admin::dispatch))
        .route("/v2", axum::routing::any(v2::dispatch))
        .route("/v2/", axum::routing::any(v2::dispatch))
        .route("/v2/{*rest}", axum::routing::any(v2::dispatch))
        .fallback(|| async { error::ApiError::not_found().into_response() })
        .with_state(state.clone())
        .merge(extra)
        .layer(middleware::from_fn_with_state(state, common_headers))
}

/// The last line of defence: a handler that panics answers 500 and is
/// logged, and its connection goes on serving.
async fn catch_panic(next: Next, req: Request) -> Response {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(panic = %what, "a request handler panicked");
            error::ApiError::new(error::OciCode::Internal).into_response()
        }
    }
}

/// Gives each request an id and a span with distribution's request fields,
/// adds the headers every response carries, and writes the access log line
/// once the response body has been sent (or given up).
async fn common_headers(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    req.extensions_mut().insert(caller::RequestId(id.clone()));
    let h = req.headers();
    let text = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let peer = req.extensions().get::<Peer>().copied();
    let span = tracing::info_span!(
        "request",
        "http.request.id" = %id,
        "http.request.method" = %req.method(),
        "http.request.uri" = %LoggedUri(req.uri()),
        "http.request.host" = text(header::HOST),
        "http.request.remoteaddr" = %OrEmpty(peer),
        "http.request.useragent" = text(header::USER_AGENT),
        "auth.user.name" = tracing::field::Empty,
        "berth.operation" = tracing::field::Empty,
        "berth.registry" = state.config.name.as_deref(),
    );
    let start = Instant::now();
    let mut resp = catch_panic(next, req).instrument(span.clone()).await;
    let h = resp.headers_mut();
    h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(REQUEST_ID, v);
    }
    for (k, v) in &state.config.headers {
        h.insert(k.clone(), v.clone());
    }
    if !state.config.access_log {
        return resp;
    }
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = access_log::Logged::new(body, span, start, status);
    Response::from_parts(parts, axum::body::Body::new(body))
}

/// The path and query of a request, with secret query values masked.
struct LoggedUri<'a>(&'a axum::http::Uri);

impl std::fmt::Display for LoggedUri<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.path())?;
        let Some(q) = self.0.query() else { return Ok(()) };
        for (i, pair) in q.split('&').enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            match pair.split_once('=') {
                Some((k, _)) if ["password", "refresh_token", "token", "client_secret"].contains(&k) => {
                    write!(f, "{k}=***")?
                }
                _ => f.write_str(pair)?,
            }
        }
        Ok(())
    }
}

/// A value, or nothing.
struct OrEmpty<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrEmpty<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => Ok(()),
        }
    }
}
