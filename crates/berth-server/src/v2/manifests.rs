//! Manifests: reads with Docker's and OCI's content negotiation, pushes, deletes.

use axum::body::Body;
use axum::http::header::{HeaderName, HeaderValue};
use axum::http::{header, StatusCode};
use axum::response::Response;
use berth_registry::RegistryError;
use berth_types::{media, Digest, Reference, RepoName, MAX_MANIFEST_SIZE};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::error::{ApiError, OciCode};
use crate::v2::{
    accepted, content_length, empty, etag_matches, header_str, not_modified, set, ApiResult, Ctx, DOCKER_CONTENT_DIGEST,
};

pub(crate) const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");

/// Bodies this much over a limit are still read (and dropped) so the client
/// sees the error answer instead of a connection reset mid-upload.
pub(crate) const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Reads a whole body of at most `limit` bytes.
pub(crate) async fn read_limited(mut body: Body, limit: usize, declared: Option<u64>) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::from(RegistryError::ManifestTooLarge);
    if declared.is_some_and(|l| l > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::new(OciCode::ManifestBodyUnreadable).with_detail(e.to_string()))?;
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
pub(crate) fn default_platform_child(list: &[u8]) -> Option<Digest> {
    let info = berth_types::ManifestInfo::parse(Some(media::DOCKER_MANIFEST_LIST), list).ok()?;
    info.manifests.into_iter().find_map(|d| {
        let p = d.platform.as_ref()?;
        (p["os"] == "linux" && p["architecture"] == "amd64").then_some(d.digest)
    })
}

impl Ctx<'_> {
    pub(crate) async fn get_manifest(&self, name: &RepoName, reference: &Reference, with_body: bool) -> ApiResult {
        let accepts = accepted(self.headers);
        let (mut meta, mut content) = if with_body {
            let m = self.registry().get_manifest(self.caller(), name, reference).await?;
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
                None => self.registry().get_manifest(self.caller(), name, reference).await?.content,
            };
            let child = default_platform_child(&list).ok_or_else(|| {
                ApiError::from(RegistryError::ManifestUnknown)
                    .with_detail("the manifest list has no linux/amd64 image for a client that cannot read lists")
            })?;
            let m = self.registry().get_manifest(self.caller(), name, &Reference::Digest(child)).await?;
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

    pub(crate) async fn put_manifest(&self, name: &RepoName, reference: &Reference, body: Body) -> ApiResult {
        let ct = header_str(self.headers, &header::CONTENT_TYPE).map(str::to_owned);
        let content = read_limited(body, MAX_MANIFEST_SIZE, content_length(self.headers)).await?;
        let res = self.registry().put_manifest(self.caller(), name, reference, ct.as_deref(), content).await?;
        let mut r = empty(StatusCode::CREATED);
        let h = r.headers_mut();
        set(h, header::LOCATION, &format!("{}/v2/{name}/manifests/{}", self.base_url(), res.digest));
        set(h, DOCKER_CONTENT_DIGEST, res.digest.as_str());
        if let Some(s) = res.subject {
            set(h, OCI_SUBJECT, s.as_str());
        }
        Ok(r)
    }

    pub(crate) async fn delete_manifest(&self, name: &RepoName, reference: &Reference) -> ApiResult {
        self.registry().delete_manifest(self.caller(), name, reference).await?;
        Ok(empty(StatusCode::ACCEPTED))
    }
}
