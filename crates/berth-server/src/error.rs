//! The HTTP edge's errors: one table from every failure to an OCI error code,
//! status and message, answered as OCI error JSON.

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_registry::RegistryError;
use serde_json::json;

use crate::endpoint::PathError;

/// Every error the edge answers: its OCI code, status and message, in one
/// match. Kinds that share a code differ in status or message (a manifest
/// too large is `MANIFEST_INVALID` with 413; a full store is `UNKNOWN` with 507).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciCode {
    BlobUnknown,
    BlobUploadUnknown,
    BlobUploadInvalid,
    /// An upload's body could not be read.
    BodyUnreadable,
    /// A manifest's body could not be read.
    ManifestBodyUnreadable,
    DigestInvalid,
    SizeInvalid,
    RangeInvalid,
    ManifestUnknown,
    ManifestInvalid,
    ManifestTooLarge,
    ManifestBlobUnknown,
    NameInvalid,
    NameUnknown,
    TagInvalid,
    Unsupported,
    ReadOnly,
    PaginationInvalid,
    Unauthorized,
    Denied,
    QuotaExceeded,
    NotFound,
    /// A request to `/_berth/` or the token endpoint with invalid parameters.
    RequestInvalid,
    StorageFull,
    Internal,
    /// Heads hyper could not parse, answered by the connection watch.
    MalformedRequest,
    UriTooLong,
    HeadersTooLarge,
    TooManyRequests,
    /// The registry cannot answer now (shutting down).
    Unavailable,
    /// No registry of this process serves the host the request names.
    Misdirected,
}

impl OciCode {
    /// The code, the status and the message an error of this kind answers with.
    pub fn describe(self) -> (&'static str, StatusCode, &'static str) {
        use OciCode as C;
        use StatusCode as S;
        match self {
            C::BlobUnknown => ("BLOB_UNKNOWN", S::NOT_FOUND, "blob unknown to registry"),
            C::BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", S::NOT_FOUND, "blob upload unknown to registry"),
            C::BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", S::BAD_REQUEST, "blob upload invalid"),
            C::BodyUnreadable => ("BLOB_UPLOAD_INVALID", S::BAD_REQUEST, "request body could not be read"),
            C::ManifestBodyUnreadable => ("MANIFEST_INVALID", S::BAD_REQUEST, "request body could not be read"),
            C::DigestInvalid => ("DIGEST_INVALID", S::BAD_REQUEST, "provided digest did not match uploaded content"),
            C::SizeInvalid => ("SIZE_INVALID", S::BAD_REQUEST, "provided length did not match content length"),
            C::RangeInvalid => ("RANGE_INVALID", S::RANGE_NOT_SATISFIABLE, "invalid content range"),
            C::ManifestUnknown => ("MANIFEST_UNKNOWN", S::NOT_FOUND, "manifest unknown"),
            C::ManifestInvalid => ("MANIFEST_INVALID", S::BAD_REQUEST, "manifest invalid"),
            C::ManifestTooLarge => {
                ("MANIFEST_INVALID", S::PAYLOAD_TOO_LARGE, "manifest is larger than the 4 MiB limit")
            }
            C::ManifestBlobUnknown => {
                ("MANIFEST_BLOB_UNKNOWN", S::BAD_REQUEST, "manifest references a manifest or blob unknown to registry")
            }
            C::NameInvalid => ("NAME_INVALID", S::BAD_REQUEST, "invalid repository name"),
            C::NameUnknown => ("NAME_UNKNOWN", S::NOT_FOUND, "repository name not known to registry"),
            C::TagInvalid => ("TAG_INVALID", S::BAD_REQUEST, "manifest tag did not match URI"),
            C::Unsupported => ("UNSUPPORTED", S::METHOD_NOT_ALLOWED, "the operation is unsupported"),
            C::ReadOnly => ("UNSUPPORTED", S::METHOD_NOT_ALLOWED, "registry is in read-only mode"),
            C::PaginationInvalid => {
                ("PAGINATION_NUMBER_INVALID", S::BAD_REQUEST, "invalid number of results requested")
            }
            C::Unauthorized => ("UNAUTHORIZED", S::UNAUTHORIZED, "authentication required"),
            C::Denied => ("DENIED", S::FORBIDDEN, "requested access to the resource is denied"),
            C::QuotaExceeded => ("DENIED", S::FORBIDDEN, "quota exceeded"),
            C::NotFound => ("NOT_FOUND", S::NOT_FOUND, "no such endpoint"),
            C::RequestInvalid => ("UNSUPPORTED", S::BAD_REQUEST, "invalid request"),
            C::StorageFull => {
                ("UNKNOWN", S::INSUFFICIENT_STORAGE, "the registry's storage is full: no space left for more data")
            }
            C::Internal => ("UNKNOWN", S::INTERNAL_SERVER_ERROR, "internal server error"),
            C::MalformedRequest => ("UNSUPPORTED", S::BAD_REQUEST, "malformed HTTP request"),
            C::UriTooLong => ("UNSUPPORTED", S::URI_TOO_LONG, "malformed HTTP request"),
            C::HeadersTooLarge => ("UNSUPPORTED", S::REQUEST_HEADER_FIELDS_TOO_LARGE, "malformed HTTP request"),
            C::TooManyRequests => ("TOOMANYREQUESTS", S::TOO_MANY_REQUESTS, "too many requests"),
            C::Unavailable => ("UNAVAILABLE", S::SERVICE_UNAVAILABLE, "service unavailable"),
            C::Misdirected => ("UNSUPPORTED", S::MISDIRECTED_REQUEST, "no registry is served at this host name"),
        }
    }

    pub fn code(self) -> &'static str {
        self.describe().0
    }

    pub fn status(self) -> StatusCode {
        self.describe().1
    }

    pub fn message(self) -> &'static str {
        self.describe().2
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: OciCode,
    /// The code's message, unless one more specific was given.
    pub message: Cow<'static, str>,
    pub detail: Option<serde_json::Value>,
    /// Extra response headers (boxed: errors travel through many `Result`s).
    pub headers: Box<HeaderMap>,
    /// A reason phrase other than the status's usual one (HTTP/1).
    pub reason: Option<&'static [u8]>,
}

impl ApiError {
    pub fn new(code: OciCode) -> Self {
        ApiError { code, message: Cow::Borrowed(code.message()), detail: None, headers: Box::default(), reason: None }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// A message more specific than the code's (clients print the message).
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = message.into();
        self
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
        Self::new(OciCode::NameInvalid).with_detail(detail)
    }

    pub fn digest_invalid(detail: impl Into<String>) -> Self {
        Self::new(OciCode::DigestInvalid).with_detail(detail)
    }

    pub fn unsupported(detail: impl Into<String>) -> Self {
        Self::new(OciCode::Unsupported).with_detail(detail)
    }

    pub fn pagination(detail: impl Into<String>) -> Self {
        Self::new(OciCode::PaginationInvalid).with_detail(detail)
    }

    pub fn not_found() -> Self {
        Self::new(OciCode::NotFound)
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::NotFound => ApiError::not_found(),
            PathError::NameInvalid(d) => ApiError::name_invalid(d),
            PathError::DigestInvalid(d) => ApiError::digest_invalid(d),
            PathError::TagInvalid(d) => ApiError::new(OciCode::TagInvalid).with_detail(d),
            PathError::ReferenceInvalid(e) => ApiError::from(*e),
            PathError::UploadUnknown => ApiError::new(OciCode::BlobUploadUnknown),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        match e {
            E::BlobUnknown => ApiError::new(OciCode::BlobUnknown),
            E::BlobUploadUnknown => ApiError::new(OciCode::BlobUploadUnknown),
            E::BlobUploadInvalid(d) => ApiError::new(OciCode::BlobUploadInvalid).with_detail(d),
            E::DigestInvalid(d) => ApiError::digest_invalid(d),
            E::SizeInvalid(d) => ApiError::new(OciCode::SizeInvalid).with_detail(d),
            E::RangeInvalid { size } => ApiError::new(OciCode::RangeInvalid)
                .with_detail(format!("the upload holds {size} bytes; the next chunk must start there")),
            E::ManifestUnknown => ApiError::new(OciCode::ManifestUnknown),
            E::ManifestInvalid(d) => ApiError::new(OciCode::ManifestInvalid).with_detail(d),
            E::ManifestTooLarge => ApiError::new(OciCode::ManifestTooLarge),
            E::ManifestBlobUnknown(d) => ApiError::new(OciCode::ManifestBlobUnknown).with_detail(d.to_string()),
            E::NameUnknown => ApiError::new(OciCode::NameUnknown),
            E::Unsupported(d) => ApiError::unsupported(d),
            E::ReadOnly => ApiError::new(OciCode::ReadOnly),
            E::PaginationInvalid(d) => ApiError::pagination(d),
            // Clients print the message, not the detail: it says which quota.
            E::QuotaExceeded(d) => {
                ApiError::new(OciCode::QuotaExceeded).with_message(format!("quota exceeded: {d}")).with_detail(d)
            }
            E::BodyRead(d) => ApiError::new(OciCode::BodyUnreadable).with_detail(d.to_string()),
            // The cause, and a status clients do not retry (507).
            e if e.is_storage_full() => {
                tracing::warn!(error = %e, "storage full");
                ApiError::new(OciCode::StorageFull)
                    .with_detail("an administrator must make room (delete images, then collect garbage)")
                    // Clients that show only the status line show the cause, and
                    // Docker does not retry an error that says so.
                    .with_reason(b"Insufficient Storage (no space left on device)")
            }
            E::Cancelled => ApiError::new(OciCode::Unavailable).with_detail(e.to_string()),
            E::Storage(_) | E::Metadata(_) | E::Internal(_) => {
                // Logged once here, with the request's span (and so its id); clients see no internals.
                tracing::error!(error = %e, "internal error");
                ApiError::new(OciCode::Internal)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({ "code": self.code.code(), "message": self.message });
        if let Some(d) = self.detail {
            err["detail"] = d;
        }
        let body = json!({ "errors": [err] }).to_string();
        let mut resp =
            (self.code.status(), [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
        resp.headers_mut().extend(*self.headers);
        if let Some(r) = self.reason {
            resp.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(r));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [OciCode; 30] = {
        use OciCode as C;
        [
            C::BlobUnknown,
            C::BlobUploadUnknown,
            C::BlobUploadInvalid,
            C::BodyUnreadable,
            C::ManifestBodyUnreadable,
            C::DigestInvalid,
            C::SizeInvalid,
            C::RangeInvalid,
            C::ManifestUnknown,
            C::ManifestInvalid,
            C::ManifestTooLarge,
            C::ManifestBlobUnknown,
            C::NameInvalid,
            C::NameUnknown,
            C::TagInvalid,
            C::Unsupported,
            C::ReadOnly,
            C::PaginationInvalid,
            C::Unauthorized,
            C::Denied,
            C::QuotaExceeded,
            C::NotFound,
            C::RequestInvalid,
            C::StorageFull,
            C::Internal,
            C::MalformedRequest,
            C::UriTooLong,
            C::HeadersTooLarge,
            C::TooManyRequests,
            C::Unavailable,
        ]
    };

    /// Every kind answers with a code of the distribution spec (or
    /// distribution's own `NOT_FOUND`, `UNKNOWN`, `UNAVAILABLE` and `TOOMANYREQUESTS`), an
    /// error status, and a message; the JSON carries them.
    #[test]
    fn every_kind_has_a_spec_code_an_error_status_and_a_message() {
        const SPEC: &[&str] = &[
            "BLOB_UNKNOWN",
            "BLOB_UPLOAD_INVALID",
            "BLOB_UPLOAD_UNKNOWN",
            "DIGEST_INVALID",
            "MANIFEST_BLOB_UNKNOWN",
            "MANIFEST_INVALID",
            "MANIFEST_UNKNOWN",
            "NAME_INVALID",
            "NAME_UNKNOWN",
            "SIZE_INVALID",
            "UNAUTHORIZED",
            "DENIED",
            "UNSUPPORTED",
            "TOOMANYREQUESTS",
            "RANGE_INVALID",
            "TAG_INVALID",
            "PAGINATION_NUMBER_INVALID",
            "NOT_FOUND",
            "UNKNOWN",
            "UNAVAILABLE",
        ];
        for c in ALL {
            let (code, status, message) = c.describe();
            assert!(SPEC.contains(&code), "{c:?}: {code}");
            assert!(status.is_client_error() || status.is_server_error(), "{c:?}: {status}");
            assert!(!message.is_empty(), "{c:?}");
            let r = ApiError::new(c).with_detail("d").into_response();
            assert_eq!(r.status(), status, "{c:?}");
        }
        // What a registry error maps to, for the kinds clients act on.
        let cases: Vec<(RegistryError, u16, &str)> = vec![
            (RegistryError::BlobUnknown, 404, "BLOB_UNKNOWN"),
            (RegistryError::ManifestTooLarge, 413, "MANIFEST_INVALID"),
            (RegistryError::RangeInvalid { size: 3 }, 416, "RANGE_INVALID"),
            (RegistryError::ReadOnly, 405, "UNSUPPORTED"),
            (RegistryError::QuotaExceeded("q".into()), 403, "DENIED"),
            (RegistryError::Internal("x".into()), 500, "UNKNOWN"),
        ];
        for (e, status, code) in cases {
            let what = format!("{e:?}");
            let a = ApiError::from(e);
            assert_eq!((a.status().as_u16(), a.code.code()), (status, code), "{what}");
        }
    }
}
