//! The HTTP edge's errors: one table from every failure to an OCI error code,
//! status and message, answered as OCI error JSON.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_registry::RegistryError;
use serde_json::json;

use crate::endpoint::PathError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Extra response headers (boxed: errors travel through many `Result`s).
    pub headers: Box<HeaderMap>,
    /// A reason phrase other than the status's usual one (HTTP/1).
    pub reason: Option<&'static [u8]>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), detail: None, headers: Box::default(), reason: None }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(serde_json::Value::String(detail.into()));
        self
    }

    pub fn with_reason(mut self, reason: &'static [u8]) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    pub fn name_invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "NAME_INVALID", "invalid repository name").with_detail(detail)
    }

    pub fn digest_invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "provided digest did not match uploaded content")
            .with_detail(detail)
    }

    pub fn unsupported(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "the operation is unsupported").with_detail(detail)
    }

    pub fn pagination(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID", "invalid number of results requested")
            .with_detail(detail)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::NotFound => ApiError::not_found(),
            PathError::NameInvalid(d) => ApiError::name_invalid(d),
            PathError::DigestInvalid(d) => ApiError::digest_invalid(d),
            PathError::TagInvalid(d) => {
                ApiError::new(StatusCode::BAD_REQUEST, "TAG_INVALID", "manifest tag did not match URI").with_detail(d)
            }
            PathError::ReferenceInvalid(e) => ApiError::from(*e),
            PathError::UploadUnknown => {
                ApiError::new(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
            }
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        let msg = e.to_string();
        match e {
            E::BlobUnknown => ApiError::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", msg),
            E::BlobUploadUnknown => ApiError::new(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", msg),
            E::BlobUploadInvalid(d) => {
                ApiError::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", "blob upload invalid").with_detail(d)
            }
            E::DigestInvalid(d) => ApiError::digest_invalid(d),
            E::SizeInvalid(d) => {
                ApiError::new(StatusCode::BAD_REQUEST, "SIZE_INVALID", "provided length did not match content length")
                    .with_detail(d)
            }
            E::RangeInvalid { size } => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID", "invalid content range")
                    .with_detail(format!("the upload holds {size} bytes; the next chunk must start there"))
            }
            E::ManifestUnknown => ApiError::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", msg),
            E::ManifestInvalid(d) => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", "manifest invalid").with_detail(d)
            }
            E::ManifestTooLarge => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID", msg),
            E::ManifestBlobUnknown(d) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "MANIFEST_BLOB_UNKNOWN",
                "manifest references a manifest or blob unknown to registry",
            )
            .with_detail(d.to_string()),
            E::NameUnknown => ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", msg),
            E::Unsupported(d) => ApiError::unsupported(d),
            E::ReadOnly => ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", msg),
            E::PaginationInvalid(d) => ApiError::pagination(d),
            // Clients print the message, not the detail: it says which quota.
            E::QuotaExceeded(d) => {
                ApiError::new(StatusCode::FORBIDDEN, "DENIED", format!("quota exceeded: {d}")).with_detail(d)
            }
            E::BodyRead(d) => {
                ApiError::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", "request body could not be read")
                    .with_detail(d.to_string())
            }
            // The cause, and a status clients do not retry (507).
            e if e.is_storage_full() => {
                tracing::warn!(error = %msg, "storage full");
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "UNKNOWN",
                    "the registry's storage is full: no space left for more data",
                )
                .with_detail("an administrator must make room (delete images, then collect garbage)")
                // Clients that show only the status line show the cause, and
                // Docker does not retry an error that says so.
                .with_reason(b"Insufficient Storage (no space left on device)")
            }
            E::Storage(_) | E::Metadata(_) | E::Internal(_) => {
                // Logged once here, with the request's span (and so its id); clients see no internals.
                tracing::error!(error = %msg, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", "internal server error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({ "code": self.code, "message": self.message });
        if let Some(d) = self.detail {
            err["detail"] = d;
        }
        let body = json!({ "errors": [err] }).to_string();
        let mut resp = (self.status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
        resp.headers_mut().extend(*self.headers);
        if let Some(r) = self.reason {
            resp.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(r));
        }
        resp
    }
}
