//! Upload sessions: start (with mounts, automatic or from a repository), chunks,
//! the final PUT, status, cancel.

use axum::body::Body;
use axum::http::header::{HeaderMap, HeaderName};
use axum::http::{header, StatusCode};
use axum::response::Response;
use berth_registry::{RegistryError, UploadStatus};
use berth_types::{Digest, RepoName};
use uuid::Uuid;

use crate::error::ApiError;
use crate::operation::{MountFrom, UploadStart};
use crate::v2::{body_stream, chunk_range, content_length, empty, set, ApiResult, Ctx, DOCKER_CONTENT_DIGEST};

pub(crate) const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

/// Repositories looked at for a mount without `from`.
pub(crate) const MAX_MOUNT_SOURCES: usize = 100;

impl Ctx<'_> {
    pub(crate) fn upload_response(&self, status: StatusCode, name: &RepoName, st: &UploadStatus) -> Response {
        let mut r = empty(status);
        self.upload_headers(r.headers_mut(), name, &st.id, st.size);
        r
    }

    pub(crate) fn upload_headers(&self, h: &mut HeaderMap, name: &RepoName, id: &Uuid, size: u64) {
        set(h, header::LOCATION, &self.upload_url(name, id));
        set(h, header::RANGE, &format!("0-{}", size.saturating_sub(1)));
        set(h, DOCKER_UPLOAD_UUID, &id.to_string());
    }

    /// A 416 tells the client where the upload stands so it can resume.
    pub(crate) fn range_error(&self, e: RegistryError, name: &RepoName, id: &Uuid) -> ApiError {
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

    pub(crate) fn blob_created(&self, name: &RepoName, digest: &Digest) -> Response {
        let mut r = empty(StatusCode::CREATED);
        set(r.headers_mut(), header::LOCATION, &self.blob_url(name, digest));
        set(r.headers_mut(), DOCKER_CONTENT_DIGEST, digest.as_str());
        r
    }

    pub(crate) async fn start_upload(&self, name: &RepoName, start: &UploadStart, body: Body) -> ApiResult {
        match start {
            UploadStart::Mount { digest, from } => {
                // Whatever keeps the mount from happening, the client gets a
                // normal upload session (202), as the spec and distribution do.
                if let Some(digest) = digest {
                    for source in self.mount_sources(digest, from).await? {
                        if self.registry().mount_blob(self.caller(), name, &source, digest).await?.is_some() {
                            return Ok(self.blob_created(name, digest));
                        }
                    }
                }
            }
            UploadStart::Monolithic { digest } => {
                let digest = digest.as_ref().map_err(ApiError::digest_invalid)?;
                self.registry()
                    .put_blob(self.caller(), name, digest, content_length(self.headers), body_stream(body))
                    .await?;
                return Ok(self.blob_created(name, digest));
            }
            UploadStart::Session => {}
        }
        let st = self.registry().start_upload(name).await?;
        Ok(self.upload_response(StatusCode::ACCEPTED, name, &st))
    }

    /// Where a mount may take a blob from: `from`, or without it (and with
    /// `uploads.automaticmount`) the repositories holding it, and of those
    /// only what the caller may pull.
    pub(crate) async fn mount_sources(&self, digest: &Digest, from: &MountFrom) -> Result<Vec<RepoName>, ApiError> {
        let candidates = match from {
            MountFrom::Repository(r) => vec![r.clone()],
            MountFrom::Invalid => Vec::new(),
            MountFrom::Any if self.state.config.automatic_mount => {
                self.registry().blob_sources(digest, MAX_MOUNT_SOURCES).await?
            }
            MountFrom::Any => Vec::new(),
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

    pub(crate) async fn upload_status(&self, name: &RepoName, id: &Uuid) -> ApiResult {
        let st = self.registry().upload_status(name, id).await?;
        Ok(self.upload_response(StatusCode::NO_CONTENT, name, &st))
    }

    pub(crate) async fn patch_upload(&self, name: &RepoName, id: &Uuid, body: Body) -> ApiResult {
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

    pub(crate) async fn put_upload(
        &self,
        name: &RepoName,
        id: &Uuid,
        digest: Option<&Result<Digest, String>>,
        body: Body,
    ) -> ApiResult {
        let Some(digest) = digest else {
            return Err(ApiError::digest_invalid("the digest query parameter is required"));
        };
        let digest = digest.as_ref().map_err(ApiError::digest_invalid)?;
        let range = chunk_range(self.headers).map_err(|()| ApiError::from(RegistryError::RangeInvalid { size: 0 }))?;
        let body_empty = http_body::Body::size_hint(&body).exact() == Some(0);
        let body = (!body_empty).then(|| body_stream(body));
        self.registry()
            .complete_upload(self.caller(), name, id, digest, range, content_length(self.headers), body)
            .await
            .map_err(|e| self.range_error(e, name, id))?;
        Ok(self.blob_created(name, digest))
    }

    pub(crate) async fn cancel_upload(&self, name: &RepoName, id: &Uuid) -> ApiResult {
        self.registry().cancel_upload(name, id).await?;
        let mut r = empty(StatusCode::NO_CONTENT);
        set(r.headers_mut(), DOCKER_UPLOAD_UUID, &id.to_string());
        Ok(r)
    }
}
