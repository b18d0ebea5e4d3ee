//! The HTTP edge: the `/v2/` API of the OCI distribution spec and Docker
//! Registry V2. One parser turns the path into an [`endpoint::Endpoint`],
//! handlers are thin (extract, call the registry, map the result), and every
//! failure leaves through the one table in [`error`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use berth_registry::Registry;
use tracing::Instrument;

mod admin;
pub mod endpoint;
pub mod error;
mod handlers;
mod serve;
mod token;

pub use serve::serve;

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
    /// `log.fields` as JSON, attached to every request's log lines.
    pub log_fields: Option<String>,
    /// Authentication and access control; None serves everyone everything.
    pub auth: Option<Arc<berth_auth::Authorizer>>,
    /// What the administration endpoints run with.
    pub lifecycle: LifecycleConfig,
}

/// Settings of on-demand collection and retention.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub gc_grace: std::time::Duration,
    pub retention: Vec<berth_registry::lifecycle::RetentionPolicy>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig { gc_grace: std::time::Duration::from_secs(3600), retention: Vec::new() }
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
            log_fields: None,
            auth: None,
            lifecycle: LifecycleConfig::default(),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub config: Arc<ServerConfig>,
}

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP service.
pub fn router(registry: Registry, config: ServerConfig) -> Router {
    let token_path = config.auth.as_ref().and_then(|a| a.token_path().map(str::to_owned));
    let state = AppState { registry, config: Arc::new(config) };
    let mut router = Router::new();
    if let Some(path) = token_path {
        router = router.route(&path, axum::routing::get(token::token).post(token::token));
    }
    router
        .route("/", axum::routing::get(handlers::root))
        .route("/_berth/{*rest}", axum::routing::any(admin::dispatch))
        .route("/v2", axum::routing::any(handlers::dispatch))
        .route("/v2/", axum::routing::any(handlers::dispatch))
        .route("/v2/{*rest}", axum::routing::any(handlers::dispatch))
        .fallback(|| async { error::ApiError::not_found().into_response() })
        .layer(middleware::from_fn_with_state(state.clone(), common_headers))
        .with_state(state)
}

/// Gives each request an id and a span, adds the headers every response
/// carries, and writes the access log line.
async fn common_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = match &state.config.log_fields {
        Some(f) => tracing::info_span!("request", id = %id, method = %method, path = %path, fields = %f),
        None => tracing::info_span!("request", id = %id, method = %method, path = %path),
    };
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let h = resp.headers_mut();
    h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert(REQUEST_ID, v);
    }
    for (k, v) in &state.config.headers {
        h.insert(k.clone(), v.clone());
    }
    if state.config.access_log {
        let _e = span.enter();
        tracing::info!(status = resp.status().as_u16(), elapsed_ms = start.elapsed().as_secs_f64() * 1e3, "response");
    }
    resp
}
