//! The catalog (filtered by pull rights), tag lists and referrers.

use axum::http::header::HeaderName;
use axum::http::{header, StatusCode};
use berth_types::{media, Digest, RepoName};
use serde_json::json;

use crate::error::ApiError;
use crate::operation::PageQuery;
use crate::v2::{json_response, set, ApiResult, Ctx};

/// Catalog page size when the client names none (distribution's default).
pub(crate) const DEFAULT_CATALOG_PAGE: u64 = 100;

pub(crate) const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

impl Ctx<'_> {
    /// `n`: absent, or a non-negative integer.
    fn page_size(page: &PageQuery) -> Result<Option<u64>, ApiError> {
        page.n.clone().map_err(|v| ApiError::pagination(format!("n={v:?}")))
    }

    pub(crate) fn link_next(path: &str, n: u64, last: &str) -> String {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &n.to_string())
            .append_pair("last", last)
            .finish();
        format!("<{path}?{q}>; rel=\"next\"")
    }

    pub(crate) async fn catalog(&self, page: &PageQuery) -> ApiResult {
        let max = self.state.config.catalog_max_entries;
        let n = Self::page_size(page)?.unwrap_or(DEFAULT_CATALOG_PAGE.min(max));
        if n > max {
            return Err(ApiError::pagination(format!("n={n} is larger than the maximum of {max}")));
        }
        let page = self.visible_catalog(n, page.last.as_deref()).await?;
        let body = serde_json::to_vec(&json!({ "repositories": page.items })).unwrap_or_default();
        let mut r = json_response(StatusCode::OK, body.into(), None);
        if let (true, Some(last)) = (page.more, page.items.last()) {
            set(r.headers_mut(), header::LINK, &Self::link_next("/v2/_catalog", n, last.as_str()));
        }
        Ok(r)
    }

    /// A catalog page of repositories the caller may pull from.
    pub(crate) async fn visible_catalog(
        &self,
        n: u64,
        after: Option<&str>,
    ) -> Result<berth_registry::Page<RepoName>, ApiError> {
        let Some(grant) = &self.grant else { return Ok(self.registry().catalog(n, after).await?) };
        let mut items = Vec::new();
        let mut last = after.map(str::to_owned);
        // Bounded: each round reads a page of the catalog, and stops at its end.
        loop {
            let page = self.registry().catalog(n.max(100), last.as_deref()).await?;
            for repo in &page.items {
                if grant.may_pull(repo).await {
                    items.push(repo.clone());
                    if items.len() as u64 > n {
                        items.truncate(usize::try_from(n).unwrap_or(usize::MAX));
                        return Ok(berth_registry::Page { items, more: true });
                    }
                }
            }
            if !page.more {
                return Ok(berth_registry::Page { items, more: false });
            }
            last = page.items.last().map(|r| r.to_string());
        }
    }

    pub(crate) async fn tags(&self, name: &RepoName, page: &PageQuery) -> ApiResult {
        let n = Self::page_size(page)?;
        let page = self.registry().list_tags(name, n, page.last.as_deref()).await?;
        let body = serde_json::to_vec(&json!({ "name": name.as_str(), "tags": page.items })).unwrap_or_default();
        let mut r = json_response(StatusCode::OK, body.into(), None);
        if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
            set(r.headers_mut(), header::LINK, &Self::link_next(&format!("/v2/{name}/tags/list"), n, last.as_str()));
        }
        Ok(r)
    }

    pub(crate) async fn referrers(&self, name: &RepoName, digest: &Digest, filter: Option<&str>) -> ApiResult {
        let manifests = self.registry().referrers(name, digest, filter).await?;
        let index = json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests });
        let body = serde_json::to_vec(&index).unwrap_or_default();
        let mut r = json_response(StatusCode::OK, body.into(), Some(media::OCI_INDEX));
        if filter.is_some() {
            set(r.headers_mut(), OCI_FILTERS_APPLIED, "artifactType");
        }
        Ok(r)
    }
}
