//! The `/v2/` API: the request parsed into an [`Operation`], what it needs
//! authorized, then one handler per operation: extract from the request,
//! call the registry, map the result.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_auth::Grant;
use berth_registry::RegistryError;
use berth_types::{Digest, RepoName};
use bytes::Bytes;

use uuid::Uuid;

use crate::endpoint::{percent_decode, Endpoint, PathError};
use crate::error::ApiError;
use crate::operation::{query_map, Operation};
use crate::AppState;

mod blobs;
mod headers;
mod listing;
mod manifests;
mod uploads;

use headers::*;

type ApiResult = Result<Response, ApiError>;

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub(crate) async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // A request refused before (or while) its body was read still has its
    // body read, so the client, still sending, gets to read the answer.
    let shared = (!http_body::Body::is_end_stream(&body)).then(|| SharedBody::new(body));
    let body = match &shared {
        Some(s) => Body::new(s.clone()),
        None => Body::empty(),
    };
    let raw = parts.uri.path();
    let rest = raw.strip_prefix("/v2").unwrap_or(raw);
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let Some(rest) = percent_decode(rest) else { return ApiError::not_found().into_response() };
    let endpoint = match Endpoint::parse(&rest) {
        Ok(e) => e,
        // No manifest can be found by a reference that is neither a tag nor a digest.
        Err(PathError::ReferenceInvalid(e)) if is_get(&parts.method) => {
            return ApiError::from(RegistryError::ManifestUnknown).with_detail(e.detail()).into_response()
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let m = &parts.method;
    let op = match Operation::parse(m, endpoint, &query_map(parts.uri.query())) {
        Ok(op) => op,
        Err(refused) => return method_not_allowed(m, refused.allow).into_response(),
    };
    tracing::Span::current().record("berth.operation", op.name());
    let grant = match state.config.auth.is_some() {
        true => match crate::authz::authorize(&state, &parts.headers, &op.need()).await {
            Ok(grant) => Some(grant),
            Err(e) => return e.into_response(),
        },
        false => None,
    };
    let caller = crate::caller::caller(
        grant.as_ref(),
        parts.extensions.get(),
        parts.extensions.get::<crate::Peer>().copied(),
        &parts.headers,
        &state.config.trusted_proxies,
    );
    let ctx = Ctx { state: &state, headers: &parts.headers, grant, caller };
    // Memory and descriptors stay bounded under any load: past the budget
    // of streaming requests, the client is told to come back.
    let permit = match op.streams_body() {
        true => match state.streams.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                if let Some(s) = shared {
                    s.drain(REFUSED_BODY_DRAIN).await;
                }
                return busy().into_response();
            }
        },
        false => None,
    };
    use Operation as O;
    let result = match &op {
        O::Base => Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}"), None)),
        O::Catalog { page } => ctx.catalog(page).await,
        O::ListTags { name, page } => ctx.tags(name, page).await,
        O::GetManifest { name, reference, head } => ctx.get_manifest(name, reference, !head).await,
        O::PutManifest { name, reference } => ctx.put_manifest(name, reference, body).await,
        O::DeleteManifest { name, reference } => ctx.delete_manifest(name, reference).await,
        O::GetBlob { name, digest, head } => ctx.get_blob(name, digest, !head).await,
        O::DeleteBlob { name, digest } => ctx.delete_blob(name, digest).await,
        O::StartUpload { name, start } => ctx.start_upload(name, start, body).await,
        O::GetUpload { name, id } => ctx.upload_status(name, id).await,
        O::PatchUpload { name, id } => ctx.patch_upload(name, id, body).await,
        O::PutUpload { name, id, digest } => ctx.put_upload(name, id, digest.as_ref(), body).await,
        O::CancelUpload { name, id } => ctx.cancel_upload(name, id).await,
        O::Referrers { name, digest, artifact_type } => ctx.referrers(name, digest, artifact_type.as_deref()).await,
    };
    match result {
        Ok(r) => match permit {
            Some(p) => held_until_sent(r, p),
            None => r,
        },
        Err(e) => {
            if let Some(s) = shared {
                s.drain(REFUSED_BODY_DRAIN).await;
            }
            e.into_response()
        }
    }
}

/// The answer past `http.limits.streams`.
fn busy() -> ApiError {
    ApiError::new(crate::error::OciCode::Unavailable)
        .with_message("too many uploads and downloads at once")
        .with_detail("the registry is at its limit of streaming requests (http.limits.streams); retry shortly")
        .with_header(header::RETRY_AFTER, "1")
}

/// Keeps a streaming permit until the response body has been sent (or dropped).
fn held_until_sent(r: Response, permit: tokio::sync::OwnedSemaphorePermit) -> Response {
    struct Held {
        body: Body,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    impl http_body::Body for Held {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::pin::Pin::new(&mut self.body).poll_frame(cx)
        }

        fn is_end_stream(&self) -> bool {
            self.body.is_end_stream()
        }

        fn size_hint(&self) -> http_body::SizeHint {
            self.body.size_hint()
        }
    }
    let (parts, body) = r.into_parts();
    Response::from_parts(parts, Body::new(Held { body, _permit: permit }))
}

/// How much of a refused request's body is read and dropped: enough for
/// any layer a client would send, bounded (the connection's body watch also
/// cuts a stalled one).
const REFUSED_BODY_DRAIN: u64 = 1 << 30;

/// A request body the dispatcher and a handler share: the handler reads it,
/// and after a refusal the dispatcher reads what is left.
#[derive(Clone)]
struct SharedBody(std::sync::Arc<std::sync::Mutex<Body>>);

impl SharedBody {
    fn new(body: Body) -> Self {
        SharedBody(std::sync::Arc::new(std::sync::Mutex::new(body)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Body> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads and drops up to `limit` bytes of what is left.
    async fn drain(&self, limit: u64) {
        let mut seen = 0u64;
        while seen <= limit {
            let frame =
                std::future::poll_fn(|cx| http_body::Body::poll_frame(std::pin::Pin::new(&mut *self.lock()), cx)).await;
            match frame {
                Some(Ok(f)) => seen += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                _ => return,
            }
        }
    }
}

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        http_body::Body::poll_frame(std::pin::Pin::new(&mut *self.lock()), cx)
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&*self.lock())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&*self.lock())
    }
}

fn is_get(m: &Method) -> bool {
    *m == Method::GET || *m == Method::HEAD
}

fn method_not_allowed(m: &Method, allow: &str) -> ApiError {
    ApiError::unsupported(format!("method {m} is not allowed on this endpoint")).with_header(header::ALLOW, allow)
}

/// `GET /`: distribution answers 200 here, and load balancers probe it.
pub(crate) async fn root() -> Response {
    let mut r = empty(StatusCode::OK);
    set(r.headers_mut(), header::CACHE_CONTROL, "no-cache");
    r
}

struct Ctx<'a> {
    state: &'a AppState,
    headers: &'a HeaderMap,
    /// The caller and its access, when authentication is on.
    grant: Option<Grant>,
    caller: berth_registry::Caller,
}

impl Ctx<'_> {
    fn registry(&self) -> &berth_registry::Registry {
        &self.state.registry
    }

    fn caller(&self) -> &berth_registry::Caller {
        &self.caller
    }

    /// The externally visible base URL, for absolute `Location` headers.
    fn base_url(&self) -> String {
        crate::authz::base_url(&self.state.config, self.headers)
    }

    fn blob_url(&self, name: &RepoName, digest: &Digest) -> String {
        format!("{}/v2/{name}/blobs/{digest}", self.base_url())
    }

    fn upload_url(&self, name: &RepoName, id: &Uuid) -> String {
        format!("{}/v2/{name}/blobs/uploads/{id}", self.base_url())
    }

    // ---- manifests ----

    // ---- blobs ----

    // ---- uploads ----
}
