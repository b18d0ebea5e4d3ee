//! Handlers: extract from the request, call the registry, map the result.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_auth::{Action, Actions, Grant, Need};
use berth_registry::{BodyStream, ChunkRange, RegistryError, UploadStatus};
use berth_types::{media, Digest, Reference, RepoName, MAX_MANIFEST_SIZE};
use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use serde_json::json;
use uuid::Uuid;

use crate::endpoint::{percent_decode, Endpoint, PathError};
use crate::error::ApiError;
use crate::AppState;

type ApiResult = Result<Response, ApiError>;

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
/// Catalog page size when the client names none (distribution's default).
const DEFAULT_CATALOG_PAGE: u64 = 100;
/// Repositories looked at for a mount without `from`.
const MAX_MOUNT_SOURCES: usize = 100;

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
    let allow = endpoint.allowed_methods();
    let Some(need) = need_for(&endpoint, m) else { return method_not_allowed(m, allow).into_response() };
    let mut ctx = Ctx { state: &state, headers: &parts.headers, query: query_map(parts.uri.query()), grant: None };
    if state.config.auth.is_some() {
        match crate::authz::authorize(&state, &parts.headers, &need).await {
            Ok(grant) => ctx.grant = Some(grant),
            Err(e) => return e.into_response(),
        }
    }
    let result = match endpoint {
        Endpoint::Base if is_get(m) => Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}"), None)),
        Endpoint::Catalog if is_get(m) => ctx.catalog().await,
        Endpoint::Tags { name } if is_get(m) => ctx.tags(&name).await,
        Endpoint::Manifest { name, reference } => match *m {
            Method::GET => ctx.get_manifest(&name, &reference, true).await,
            Method::HEAD => ctx.get_manifest(&name, &reference, false).await,
            Method::PUT => ctx.put_manifest(&name, &reference, body).await,
            Method::DELETE => ctx.delete_manifest(&name, &reference).await,
            _ => Err(method_not_allowed(m, allow)),
        },
        Endpoint::Blob { name, digest } => match *m {
            Method::GET => ctx.get_blob(&name, &digest, true).await,
            Method::HEAD => ctx.get_blob(&name, &digest, false).await,
            Method::DELETE => ctx.delete_blob(&name, &digest).await,
            _ => Err(method_not_allowed(m, allow)),
        },
        Endpoint::Uploads { name } if *m == Method::POST => ctx.start_upload(&name, body).await,
        Endpoint::Upload { name, id } => match *m {
            Method::GET | Method::HEAD => ctx.upload_status(&name, &id).await,
            Method::PATCH => ctx.patch_upload(&name, &id, body).await,
            Method::PUT => ctx.put_upload(&name, &id, body).await,
            Method::DELETE => ctx.cancel_upload(&name, &id).await,
            _ => Err(method_not_allowed(m, allow)),
        },
        Endpoint::Referrers { name, digest } if is_get(m) => ctx.referrers(&name, &digest).await,
        _ => Err(method_not_allowed(m, allow)),
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(s) = shared {
                s.drain(REFUSED_BODY_DRAIN).await;
            }
            e.into_response()
        }
    }
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

/// What a request needs to be allowed; None when the method does not apply.
fn need_for(endpoint: &Endpoint, m: &Method) -> Option<Need> {
    let get = is_get(m);
    let repo =
        |name: &RepoName, actions: &[Action]| Need::Repository { name: name.clone(), actions: Actions::of(actions) };
    Some(match endpoint {
        Endpoint::Base if get => Need::Login,
        Endpoint::Catalog if get => Need::Catalog,
        Endpoint::Tags { name } | Endpoint::Referrers { name, .. } if get => repo(name, &[Action::Pull]),
        Endpoint::Manifest { name, .. } | Endpoint::Blob { name, .. } if get => repo(name, &[Action::Pull]),
        Endpoint::Manifest { name, .. } if *m == Method::PUT => repo(name, &[Action::Pull, Action::Push]),
        Endpoint::Manifest { name, .. } | Endpoint::Blob { name, .. } if *m == Method::DELETE => {
            repo(name, &[Action::Delete])
        }
        Endpoint::Uploads { name } if *m == Method::POST => repo(name, &[Action::Pull, Action::Push]),
        Endpoint::Upload { name, .. } if get || *m == Method::PATCH || *m == Method::PUT || *m == Method::DELETE => {
            repo(name, &[Action::Pull, Action::Push])
        }
        _ => return None,
    })
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

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn json_response(status: StatusCode, body: Bytes, content_type: Option<&str>) -> Response {
    let ct = content_type.unwrap_or("application/json");
    let mut r = Response::new(Body::from(body.clone()));
    *r.status_mut() = status;
    set(r.headers_mut(), header::CONTENT_TYPE, ct);
    set(r.headers_mut(), header::CONTENT_LENGTH, &body.len().to_string());
    r
}

fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        set(r.headers_mut(), header::CONTENT_LENGTH, "0");
    }
    r
}

/// A 304 may carry Content-Length only as the size a 200 would have had (RFC 9110 8.6).
fn not_modified(size: u64) -> Response {
    let mut r = empty(StatusCode::NOT_MODIFIED);
    set(r.headers_mut(), header::CONTENT_LENGTH, &size.to_string());
    r
}

fn header_str<'h>(h: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, &header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

/// `Content-Range: <start>-<end>` as the distribution spec writes it (a
/// `bytes ` prefix and a `/total` suffix are tolerated).
fn chunk_range(h: &HeaderMap) -> Result<Option<ChunkRange>, ()> {
    let Some(v) = h.get(header::CONTENT_RANGE) else { return Ok(None) };
    let s = v.to_str().map_err(|_| ())?.trim();
    let s = s.strip_prefix("bytes").map(str::trim_start).unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s).trim();
    let (a, b) = s.split_once('-').ok_or(())?;
    let start = a.trim().parse().map_err(|_| ())?;
    let end = b.trim().parse().map_err(|_| ())?;
    Ok(Some(ChunkRange { start, end }))
}

fn body_stream(body: Body) -> BodyStream {
    Box::pin(TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other))
}

/// `Range: bytes=a-b` for blob reads. Only single ranges are honoured; a
/// header we do not understand is ignored and the whole blob served.
enum ByteRange {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

fn byte_range(h: &HeaderMap, size: u64) -> ByteRange {
    let Some(spec) = header_str(h, &header::RANGE).and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else { return ByteRange::Whole };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, false) => b.parse::<u64>().ok().map(|n| (size.saturating_sub(n), size.saturating_sub(1), n == 0)),
        (false, true) => a.parse::<u64>().ok().map(|s| (s, size.saturating_sub(1), false)),
        (false, false) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(s), Ok(e)) if e >= s => Some((s, e.min(size.saturating_sub(1)), false)),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => ByteRange::Whole,
        Some((s, _, zero_suffix)) if zero_suffix || s >= size => ByteRange::Unsatisfiable,
        Some((s, e, _)) => ByteRange::Part(s, e),
    }
}

fn etag_matches(h: &HeaderMap, digest: &Digest) -> bool {
    header_str(h, &header::IF_NONE_MATCH).is_some_and(|v| {
        v.split(',')
            .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
            .any(|t| t == "*" || t == digest.as_str())
    })
}

/// Media types the client accepts, from every Accept header (q-values ignored).
fn accepted(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| berth_types::manifest::essence(t).to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

struct Ctx<'a> {
    state: &'a AppState,
    headers: &'a HeaderMap,
    query: HashMap<String, String>,
    /// The caller and its access, when authentication is on.
    grant: Option<Grant>,
}

impl Ctx<'_> {
    fn registry(&self) -> &berth_registry::Registry {
        &self.state.registry
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

    /// Parses `n`: absent, or a non-negative integer.
    fn page_size(&self) -> Result<Option<u64>, ApiError> {
        match self.query.get("n") {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| ApiError::pagination(format!("n={v:?}"))),
        }
    }

    fn last(&self) -> Option<&str> {
        self.query.get("last").map(String::as_str).filter(|l| !l.is_empty())
    }

    fn link_next(path: &str, n: u64, last: &str) -> String {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &n.to_string())
            .append_pair("last", last)
            .finish();
        format!("<{path}?{q}>; rel=\"next\"")
    }

    async fn catalog(&self) -> ApiResult {
        let max = self.state.config.catalog_max_entries;
        let n = self.page_size()?.unwrap_or(DEFAULT_CATALOG_PAGE.min(max));
        if n > max {
            return Err(ApiError::pagination(format!("n={n} is larger than the maximum of {max}")));
        }
        let page = self.visible_catalog(n).await?;
        let body = serde_json::to_vec(&json!({ "repositories": page.items })).unwrap_or_default();
        let mut r = json_response(StatusCode::OK, body.into(), None);
        if let (true, Some(last)) = (page.more, page.items.last()) {
            set(r.headers_mut(), header::LINK, &Self::link_next("/v2/_catalog", n, last));
        }
        Ok(r)
    }

    /// A catalog page of repositories the caller may pull from.
    async fn visible_catalog(&self, n: u64) -> Result<berth_registry::Page, ApiError> {
        let Some(grant) = &self.grant else { return Ok(self.registry().catalog(n, self.last()).await?) };
        let mut items = Vec::new();
        let mut last = self.last().map(str::to_owned);
        // Bounded: each round reads a page of the catalog, and stops at its end.
        loop {
            let page = self.registry().catalog(n.max(100), last.as_deref()).await?;
            for name in &page.items {
                if let Ok(repo) = RepoName::parse(name) {
                    if grant.may_pull(&repo).await {
                        items.push(name.clone());
                        if items.len() as u64 > n {
                            items.truncate(n as usize);
                            return Ok(berth_registry::Page { items, more: true });
                        }
                    }
                }
            }
            if !page.more {
                return Ok(berth_registry::Page { items, more: false });
            }
            last = page.items.last().cloned();
        }
    }

    async fn tags(&self, name: &RepoName) -> ApiResult {
        let n = self.page_size()?;
        let page = self.registry().list_tags(name, n, self.last()).await?;
        let body = serde_json::to_vec(&json!({ "name": name.as_str(), "tags": page.items })).unwrap_or_default();
        let mut r = json_response(StatusCode::OK, body.into(), None);
        if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
            set(r.headers_mut(), header::LINK, &Self::link_next(&format!("/v2/{name}/tags/list"), n, last));
        }
        Ok(r)
    }

    // ---- manifests ----

    async fn get_manifest(&self, name: &RepoName, reference: &Reference, with_body: bool) -> ApiResult {
        let accepts = accepted(self.headers);
        let (mut meta, mut content) = if with_body {
            let m = self.registry().get_manifest(name, reference).await?;
            (m.meta, Some(m.content))
        } else {
            (self.registry().stat_manifest(name, reference).await?, None)
        };
        // A client that accepts Docker schema 2 but not manifest lists gets the
        // list's linux/amd64 image when it asks by tag, as from distribution.
        let lists_refused = !accepts.is_empty() && !accepts.iter().any(|a| a == media::DOCKER_MANIFEST_LIST);
        if meta.media_type == media::DOCKER_MANIFEST_LIST
            && matches!(reference, Reference::Tag(_))
            && lists_refused
            && accepts.iter().any(|a| a == media::DOCKER_MANIFEST)
        {
            let list = match content {
                Some(c) => c,
                None => self.registry().get_manifest(name, reference).await?.content,
            };
            let child = default_platform_child(&list).ok_or_else(|| {
                ApiError::from(RegistryError::ManifestUnknown)
                    .with_detail("the manifest list has no linux/amd64 image for a client that cannot read lists")
            })?;
            let m = self.registry().get_manifest(name, &Reference::Digest(child)).await?;
            meta = m.meta;
            content = with_body.then_some(m.content);
        }
        // As distribution: a client that lists what it accepts and leaves out
        // an OCI type does not get that manifest.
        let is_oci = meta.media_type == media::OCI_MANIFEST || meta.media_type == media::OCI_INDEX;
        let wildcard = accepts.iter().any(|a| a == "*/*" || a == "application/*");
        if is_oci && !accepts.is_empty() && !wildcard && !accepts.contains(&meta.media_type) {
            return Err(ApiError::from(RegistryError::ManifestUnknown)
                .with_detail(format!("{} found, but the Accept header does not allow it", meta.media_type)));
        }
        let digest = meta.digest.to_string();
        let mut r = if etag_matches(self.headers, &meta.digest) {
            not_modified(meta.size)
        } else {
            let mut r = Response::new(content.map(Body::from).unwrap_or_else(Body::empty));
            set(r.headers_mut(), header::CONTENT_TYPE, &meta.media_type);
            set(r.headers_mut(), header::CONTENT_LENGTH, &meta.size.to_string());
            r
        };
        let h = r.headers_mut();
        h.insert(DOCKER_CONTENT_DIGEST, HeaderValue::from_str(&digest).map_err(|_| ApiError::not_found())?);
        set(h, header::ETAG, &format!("\"{digest}\""));
        Ok(r)
    }

    async fn put_manifest(&self, name: &RepoName, reference: &Reference, body: Body) -> ApiResult {
        let ct = header_str(self.headers, &header::CONTENT_TYPE).map(str::to_owned);
        let content = read_limited(body, MAX_MANIFEST_SIZE, content_length(self.headers)).await?;
        let res = self.registry().put_manifest(name, reference, ct.as_deref(), content).await?;
        let mut r = empty(StatusCode::CREATED);
        let h = r.headers_mut();
        set(h, header::LOCATION, &format!("{}/v2/{name}/manifests/{}", self.base_url(), res.digest));
        set(h, DOCKER_CONTENT_DIGEST, res.digest.as_str());
        if let Some(s) = res.subject {
            set(h, OCI_SUBJECT, s.as_str());
        }
        Ok(r)
    }

    async fn delete_manifest(&self, name: &RepoName, reference: &Reference) -> ApiResult {
        self.registry().delete_manifest(name, reference).await?;
        Ok(empty(StatusCode::ACCEPTED))
    }

    async fn referrers(&self, name: &RepoName, digest: &Digest) -> ApiResult {
        let filter = self.query.get("artifactType").map(String::as_str).filter(|t| !t.is_empty());
        let manifests = self.registry().referrers(name, digest, filter).await?;
        let index = json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests });
        let body = serde_json::to_vec(&index).unwrap_or_default();
        let mut r = json_response(StatusCode::OK, body.into(), Some(media::OCI_INDEX));
        if filter.is_some() {
            set(r.headers_mut(), OCI_FILTERS_APPLIED, "artifactType");
        }
        Ok(r)
    }

    // ---- blobs ----

    async fn get_blob(&self, name: &RepoName, digest: &Digest, with_body: bool) -> ApiResult {
        let info = self.registry().stat_blob(name, digest).await?;
        let size = info.size;
        let mut r = if etag_matches(self.headers, digest) {
            not_modified(size)
        } else if let Some(url) = with_body.then(|| self.registry().blob_redirect_url(digest)).flatten() {
            // The object store serves the bytes (and any Range) itself.
            let mut r = empty(StatusCode::TEMPORARY_REDIRECT);
            set(r.headers_mut(), header::LOCATION, &url);
            set(r.headers_mut(), DOCKER_CONTENT_DIGEST, digest.as_str());
            return Ok(r);
        } else {
            match byte_range(self.headers, size) {
                ByteRange::Unsatisfiable => {
                    let mut r = empty(StatusCode::RANGE_NOT_SATISFIABLE);
                    set(r.headers_mut(), header::CONTENT_RANGE, &format!("bytes */{size}"));
                    r
                }
                ByteRange::Whole => {
                    let body = if with_body && size > 0 {
                        stream_body(self.registry().read_blob(digest, 0, size).await?)
                    } else {
                        Body::empty()
                    };
                    let mut r = Response::new(body);
                    set(r.headers_mut(), header::CONTENT_LENGTH, &size.to_string());
                    r
                }
                ByteRange::Part(s, e) => {
                    let len = e - s + 1;
                    let body = if with_body {
                        stream_body(self.registry().read_blob(digest, s, len).await?)
                    } else {
                        Body::empty()
                    };
                    let mut r = Response::new(body);
                    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                    set(r.headers_mut(), header::CONTENT_LENGTH, &len.to_string());
                    set(r.headers_mut(), header::CONTENT_RANGE, &format!("bytes {s}-{e}/{size}"));
                    r
                }
            }
        };
        let h = r.headers_mut();
        set(h, header::CONTENT_TYPE, "application/octet-stream");
        set(h, DOCKER_CONTENT_DIGEST, digest.as_str());
        set(h, header::ETAG, &format!("\"{digest}\""));
        set(h, header::ACCEPT_RANGES, "bytes");
        set(h, header::CACHE_CONTROL, "max-age=31536000");
        Ok(r)
    }

    async fn delete_blob(&self, name: &RepoName, digest: &Digest) -> ApiResult {
        self.registry().delete_blob(name, digest).await?;
        let mut r = empty(StatusCode::ACCEPTED);
        set(r.headers_mut(), DOCKER_CONTENT_DIGEST, digest.as_str());
        Ok(r)
    }

    // ---- uploads ----

    fn upload_response(&self, status: StatusCode, name: &RepoName, st: &UploadStatus) -> Response {
        let mut r = empty(status);
        self.upload_headers(r.headers_mut(), name, &st.id, st.size);
        r
    }

    fn upload_headers(&self, h: &mut HeaderMap, name: &RepoName, id: &Uuid, size: u64) {
        set(h, header::LOCATION, &self.upload_url(name, id));
        set(h, header::RANGE, &format!("0-{}", size.saturating_sub(1)));
        set(h, DOCKER_UPLOAD_UUID, &id.to_string());
    }

    /// A 416 tells the client where the upload stands so it can resume.
    fn range_error(&self, e: RegistryError, name: &RepoName, id: &Uuid) -> ApiError {
        let size = match e {
            RegistryError::RangeInvalid { size } => Some(size),
            _ => None,
        };
        let mut err = ApiError::from(e);
        if let Some(size) = size {
            self.upload_headers(&mut err.headers, name, id, size);
        }
        err
    }

    fn blob_created(&self, name: &RepoName, digest: &Digest) -> Response {
        let mut r = empty(StatusCode::CREATED);
        set(r.headers_mut(), header::LOCATION, &self.blob_url(name, digest));
        set(r.headers_mut(), DOCKER_CONTENT_DIGEST, digest.as_str());
        r
    }

    async fn start_upload(&self, name: &RepoName, body: Body) -> ApiResult {
        if let Some(mount) = self.query.get("mount") {
            // Whatever keeps the mount from happening, the client gets a
            // normal upload session (202), as the spec and distribution do.
            if let Ok(digest) = Digest::parse(mount) {
                for from in self.mount_sources(&digest).await? {
                    if self.registry().mount_blob(name, &from, &digest).await?.is_some() {
                        return Ok(self.blob_created(name, &digest));
                    }
                }
            }
            let st = self.registry().start_upload(name).await?;
            return Ok(self.upload_response(StatusCode::ACCEPTED, name, &st));
        }
        if let Some(d) = self.query.get("digest") {
            let digest = Digest::parse(d).map_err(|e| ApiError::digest_invalid(e.to_string()))?;
            self.registry().put_blob(name, &digest, content_length(self.headers), body_stream(body)).await?;
            return Ok(self.blob_created(name, &digest));
        }
        let st = self.registry().start_upload(name).await?;
        Ok(self.upload_response(StatusCode::ACCEPTED, name, &st))
    }

    /// Where a mount may take a blob from: `from`, or without it (and with
    /// `uploads.automaticmount`) the repositories holding it, and of those
    /// only what the caller may pull.
    async fn mount_sources(&self, digest: &Digest) -> Result<Vec<RepoName>, ApiError> {
        let candidates = match self.query.get("from") {
            Some(f) => RepoName::parse(f).into_iter().collect(),
            None if self.state.config.automatic_mount => {
                self.registry().blob_sources(digest, MAX_MOUNT_SOURCES).await?
            }
            None => Vec::new(),
        };
        let Some(grant) = &self.grant else { return Ok(candidates) };
        let mut allowed = Vec::new();
        for c in candidates {
            if grant.may_pull(&c).await {
                allowed.push(c);
                break;
            }
        }
        Ok(allowed)
    }

    async fn upload_status(&self, name: &RepoName, id: &Uuid) -> ApiResult {
        let st = self.registry().upload_status(name, id).await?;
        Ok(self.upload_response(StatusCode::NO_CONTENT, name, &st))
    }

    async fn patch_upload(&self, name: &RepoName, id: &Uuid, body: Body) -> ApiResult {
        let range = match chunk_range(self.headers) {
            Ok(r) => r,
            Err(()) => {
                let st = self.registry().upload_status(name, id).await?;
                return Err(self.range_error(RegistryError::RangeInvalid { size: st.size }, name, id));
            }
        };
        let st = self
            .registry()
            .append_upload(name, id, range, content_length(self.headers), body_stream(body))
            .await
            .map_err(|e| self.range_error(e, name, id))?;
        Ok(self.upload_response(StatusCode::ACCEPTED, name, &st))
    }

    async fn put_upload(&self, name: &RepoName, id: &Uuid, body: Body) -> ApiResult {
        let Some(d) = self.query.get("digest") else {
            return Err(ApiError::digest_invalid("the digest query parameter is required"));
        };
        let digest = Digest::parse(d).map_err(|e| ApiError::digest_invalid(e.to_string()))?;
        let range = chunk_range(self.headers).map_err(|()| ApiError::from(RegistryError::RangeInvalid { size: 0 }))?;
        let body_empty = http_body::Body::size_hint(&body).exact() == Some(0);
        let body = (!body_empty).then(|| body_stream(body));
        self.registry()
            .complete_upload(name, id, &digest, range, content_length(self.headers), body)
            .await
            .map_err(|e| self.range_error(e, name, id))?;
        Ok(self.blob_created(name, &digest))
    }

    async fn cancel_upload(&self, name: &RepoName, id: &Uuid) -> ApiResult {
        self.registry().cancel_upload(name, id).await?;
        let mut r = empty(StatusCode::NO_CONTENT);
        set(r.headers_mut(), DOCKER_UPLOAD_UUID, &id.to_string());
        Ok(r)
    }
}

fn stream_body(s: BodyStream) -> Body {
    Body::from_stream(s)
}

/// Bodies this much over a limit are still read (and dropped) so the client
/// sees the error answer instead of a connection reset mid-upload.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Reads a whole body of at most `limit` bytes.
async fn read_limited(mut body: Body, limit: usize, declared: Option<u64>) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::from(RegistryError::ManifestTooLarge);
    if declared.is_some_and(|l| l > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", "request body could not be read")
                .with_detail(e.to_string())
        })?;
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen > DRAIN_LIMIT {
                return Err(too_large());
            }
            if seen <= limit as u64 {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > limit as u64 {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

/// The linux/amd64 entry of a Docker manifest list.
fn default_platform_child(list: &[u8]) -> Option<Digest> {
    let info = berth_types::ManifestInfo::parse(Some(media::DOCKER_MANIFEST_LIST), list).ok()?;
    info.manifests.into_iter().find_map(|d| {
        let p = d.platform.as_ref()?;
        (p["os"] == "linux" && p["architecture"] == "amd64").then_some(d.digest)
    })
}
