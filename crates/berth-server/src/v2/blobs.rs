//! Blob reads (ranges, conditional requests, redirects to the store) and deletes.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use berth_types::{Digest, RepoName};

use crate::v2::{
    byte_range, empty, etag_matches, not_modified, set, stream_body, ApiResult, ByteRange, Ctx, DOCKER_CONTENT_DIGEST,
};

impl Ctx<'_> {
    pub(crate) async fn get_blob(&self, name: &RepoName, digest: &Digest, with_body: bool) -> ApiResult {
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

    pub(crate) async fn delete_blob(&self, name: &RepoName, digest: &Digest) -> ApiResult {
        self.registry().delete_blob(self.caller(), name, digest).await?;
        let mut r = empty(StatusCode::ACCEPTED);
        set(r.headers_mut(), DOCKER_CONTENT_DIGEST, digest.as_str());
        Ok(r)
    }
}
