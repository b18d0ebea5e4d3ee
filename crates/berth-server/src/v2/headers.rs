//! Reading request headers and building responses: ranges, conditional requests,
//! content negotiation, the small answers every endpoint gives.

use axum::body::Body;
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::{header, StatusCode};
use axum::response::Response;
use berth_registry::{BodyStream, ChunkRange};
use berth_types::Digest;
use bytes::Bytes;
use futures_util::TryStreamExt;

pub(crate) fn json_response(status: StatusCode, body: Bytes, content_type: Option<&str>) -> Response {
    let ct = content_type.unwrap_or("application/json");
    let mut r = Response::new(Body::from(body.clone()));
    *r.status_mut() = status;
    set(r.headers_mut(), header::CONTENT_TYPE, ct);
    set(r.headers_mut(), header::CONTENT_LENGTH, &body.len().to_string());
    r
}

pub(crate) fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

pub(crate) fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        set(r.headers_mut(), header::CONTENT_LENGTH, "0");
    }
    r
}

/// A 304 may carry Content-Length only as the size a 200 would have had (RFC 9110 8.6).
pub(crate) fn not_modified(size: u64) -> Response {
    let mut r = empty(StatusCode::NOT_MODIFIED);
    set(r.headers_mut(), header::CONTENT_LENGTH, &size.to_string());
    r
}

pub(crate) fn header_str<'h>(h: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, &header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

/// `Content-Range: <start>-<end>` as the distribution spec writes it (a
/// `bytes ` prefix and a `/total` suffix are tolerated).
pub(crate) fn chunk_range(h: &HeaderMap) -> Result<Option<ChunkRange>, ()> {
    let Some(v) = h.get(header::CONTENT_RANGE) else { return Ok(None) };
    let s = v.to_str().map_err(|_| ())?.trim();
    let s = s.strip_prefix("bytes").map(str::trim_start).unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s).trim();
    let (a, b) = s.split_once('-').ok_or(())?;
    let start = a.trim().parse().map_err(|_| ())?;
    let end = b.trim().parse().map_err(|_| ())?;
    Ok(Some(ChunkRange { start, end }))
}

pub(crate) fn body_stream(body: Body) -> BodyStream {
    Box::pin(TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other))
}

/// `Range: bytes=a-b` for blob reads. Only single ranges are honoured; a
/// header we do not understand is ignored and the whole blob served.
pub(crate) enum ByteRange {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

pub(crate) fn byte_range(h: &HeaderMap, size: u64) -> ByteRange {
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

pub(crate) fn etag_matches(h: &HeaderMap, digest: &Digest) -> bool {
    header_str(h, &header::IF_NONE_MATCH).is_some_and(|v| {
        v.split(',')
            .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
            .any(|t| t == "*" || t == digest.as_str())
    })
}

/// Media types the client accepts, from every Accept header (q-values ignored).
pub(crate) fn accepted(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| berth_types::manifest::essence(t).to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

pub(crate) fn stream_body(s: BodyStream) -> Body {
    Body::from_stream(s)
}
