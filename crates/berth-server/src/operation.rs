//! What a `/v2/` request asks for: the [`Endpoint`] its path names, with its
//! method and query, as one [`Operation`]. The operation answers what it
//! needs authorized, its name (for spans and metrics: a name, never a path
//! with repository names in it) and, for a method an endpoint does not
//! answer, the methods it does. Handlers match it once.
//!
//! Query parameters whose invalid values are errors (`digest`, `n`) keep the
//! error for the handler to answer: a client must learn that it may not
//! push before it learns its digest is malformed, as with distribution.

use std::collections::HashMap;

use axum::http::Method;
use berth_auth::{Action, Actions, Need};
use berth_types::{Digest, Reference, RepoName};
use uuid::Uuid;

use crate::endpoint::Endpoint;

/// A page of a listing as asked: `n` (absent, or a non-negative integer,
/// else the text that is not) and `last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub n: Result<Option<u64>, String>,
    pub last: Option<String>,
}

/// Where a cross-repository mount takes the blob from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountFrom {
    /// `from=<name>`.
    Repository(RepoName),
    /// `from` names no valid repository: nothing to mount from.
    Invalid,
    /// No `from`: the repositories holding the blob, with `uploads.automaticmount`.
    Any,
}

/// How `POST /v2/<name>/blobs/uploads/` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadStart {
    /// A session for chunks.
    Session,
    /// `mount=<digest>`: the blob from another repository, else a session
    /// (also when the digest is not valid, as the spec says).
    Mount { digest: Option<Digest>, from: MountFrom },
    /// `digest=<digest>`: the whole blob in this request.
    Monolithic { digest: Result<Digest, String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `GET /v2/`
    Base,
    Catalog {
        page: PageQuery,
    },
    ListTags {
        name: RepoName,
        page: PageQuery,
    },
    GetManifest {
        name: RepoName,
        reference: Reference,
        head: bool,
    },
    PutManifest {
        name: RepoName,
        reference: Reference,
    },
    DeleteManifest {
        name: RepoName,
        reference: Reference,
    },
    GetBlob {
        name: RepoName,
        digest: Digest,
        head: bool,
    },
    DeleteBlob {
        name: RepoName,
        digest: Digest,
    },
    StartUpload {
        name: RepoName,
        start: UploadStart,
    },
    GetUpload {
        name: RepoName,
        id: Uuid,
    },
    PatchUpload {
        name: RepoName,
        id: Uuid,
    },
    /// `digest` is required: None when absent.
    PutUpload {
        name: RepoName,
        id: Uuid,
        digest: Option<Result<Digest, String>>,
    },
    CancelUpload {
        name: RepoName,
        id: Uuid,
    },
    Referrers {
        name: RepoName,
        digest: Digest,
        artifact_type: Option<String>,
    },
}

/// A method the endpoint does not answer; `allow` lists those it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodNotAllowed {
    pub allow: &'static str,
}

/// A query string's parameters, decoded; the last of a repeated one counts.
pub(crate) fn query_map(q: Option<&str>) -> HashMap<String, String> {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn digest_param(v: &str) -> Result<Digest, String> {
    Digest::parse(v).map_err(|e| e.to_string())
}

impl Operation {
    /// The operation `method` asks of `endpoint`, with its query.
    pub fn parse(
        method: &Method,
        endpoint: Endpoint,
        query: &HashMap<String, String>,
    ) -> Result<Operation, MethodNotAllowed> {
        let get = *method == Method::GET || *method == Method::HEAD;
        let head = *method == Method::HEAD;
        let page = || PageQuery {
            n: match query.get("n") {
                None => Ok(None),
                Some(v) => v.parse::<u64>().map(Some).map_err(|_| v.clone()),
            },
            last: query.get("last").filter(|l| !l.is_empty()).cloned(),
        };
        let refused = MethodNotAllowed { allow: endpoint.allowed_methods() };
        Ok(match endpoint {
            Endpoint::Base if get => Operation::Base,
            Endpoint::Catalog if get => Operation::Catalog { page: page() },
            Endpoint::Tags { name } if get => Operation::ListTags { name, page: page() },
            Endpoint::Referrers { name, digest } if get => Operation::Referrers {
                name,
                digest,
                artifact_type: query.get("artifactType").filter(|t| !t.is_empty()).cloned(),
            },
            Endpoint::Manifest { name, reference } => match *method {
                Method::GET | Method::HEAD => Operation::GetManifest { name, reference, head },
                Method::PUT => Operation::PutManifest { name, reference },
                Method::DELETE => Operation::DeleteManifest { name, reference },
                _ => return Err(refused),
            },
            Endpoint::Blob { name, digest } => match *method {
                Method::GET | Method::HEAD => Operation::GetBlob { name, digest, head },
                Method::DELETE => Operation::DeleteBlob { name, digest },
                _ => return Err(refused),
            },
            Endpoint::Uploads { name } if *method == Method::POST => {
                let start = match (query.get("mount"), query.get("digest")) {
                    (Some(m), _) => UploadStart::Mount {
                        digest: Digest::parse(m).ok(),
                        from: match query.get("from") {
                            Some(f) => RepoName::parse(f).map_or(MountFrom::Invalid, MountFrom::Repository),
                            None => MountFrom::Any,
                        },
                    },
                    (None, Some(d)) => UploadStart::Monolithic { digest: digest_param(d) },
                    (None, None) => UploadStart::Session,
                };
                Operation::StartUpload { name, start }
            }
            Endpoint::Upload { name, id } => match *method {
                Method::GET | Method::HEAD => Operation::GetUpload { name, id },
                Method::PATCH => Operation::PatchUpload { name, id },
                Method::PUT => Operation::PutUpload { name, id, digest: query.get("digest").map(|d| digest_param(d)) },
                Method::DELETE => Operation::CancelUpload { name, id },
                _ => return Err(refused),
            },
            _ => return Err(refused),
        })
    }

    /// What the caller must be allowed. A mount also needs pull on its
    /// source, which the handler checks: without it the client gets a
    /// session, not a refusal.
    pub fn need(&self) -> Need {
        use Operation as O;
        let repo = |name: &RepoName, actions: &[Action]| Need::Repository {
            name: name.clone(),
            actions: Actions::of(actions),
        };
        match self {
            O::Base => Need::Login,
            O::Catalog { .. } => Need::Catalog,
            O::ListTags { name, .. } | O::Referrers { name, .. } => repo(name, &[Action::Pull]),
            O::GetManifest { name, .. } | O::GetBlob { name, .. } => repo(name, &[Action::Pull]),
            O::DeleteManifest { name, .. } | O::DeleteBlob { name, .. } => repo(name, &[Action::Delete]),
            O::PutManifest { name, .. }
            | O::StartUpload { name, .. }
            | O::GetUpload { name, .. }
            | O::PatchUpload { name, .. }
            | O::PutUpload { name, .. }
            | O::CancelUpload { name, .. } => repo(name, &[Action::Pull, Action::Push]),
        }
    }

    /// Whether the operation moves a body of any size through the process
    /// (an upload, a blob read, a manifest buffered whole): these share the
    /// `http.limits.streams` budget.
    pub fn streams_body(&self) -> bool {
        use Operation as O;
        matches!(
            self,
            O::GetBlob { head: false, .. }
                | O::PutManifest { .. }
                | O::PatchUpload { .. }
                | O::PutUpload { .. }
                | O::StartUpload { start: UploadStart::Monolithic { .. }, .. }
        )
    }

    /// A stable name, for log spans and metric labels.
    pub fn name(&self) -> &'static str {
        use Operation as O;
        match self {
            O::Base => "base",
            O::Catalog { .. } => "catalog",
            O::ListTags { .. } => "list_tags",
            O::GetManifest { head: false, .. } => "get_manifest",
            O::GetManifest { head: true, .. } => "head_manifest",
            O::PutManifest { .. } => "put_manifest",
            O::DeleteManifest { .. } => "delete_manifest",
            O::GetBlob { head: false, .. } => "get_blob",
            O::GetBlob { head: true, .. } => "head_blob",
            O::DeleteBlob { .. } => "delete_blob",
            O::StartUpload { start: UploadStart::Mount { .. }, .. } => "mount_blob",
            O::StartUpload { start: UploadStart::Monolithic { .. }, .. } => "put_blob",
            O::StartUpload { .. } => "start_upload",
            O::GetUpload { .. } => "get_upload",
            O::PatchUpload { .. } => "patch_upload",
            O::PutUpload { .. } => "put_upload",
            O::CancelUpload { .. } => "cancel_upload",
            O::Referrers { .. } => "referrers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const U: &str = "0b1f4c36-9c0c-4a8e-8d3a-3f1c9b2a7e11";

    /// A request (method, path after `/v2/`, query), and the operation it
    /// parses into (by name) with what it needs, or the methods allowed.
    type Row<'a> = (&'a str, String, &'a str, Result<(&'a str, &'a str), &'a str>);

    #[test]
    fn table() {
        let (mount, digest) = (format!("mount={D}&from=b"), format!("digest={D}"));
        let rows: Vec<Row> = vec![
            ("GET", "".into(), "", Ok(("base", "login"))),
            ("HEAD", "".into(), "", Ok(("base", "login"))),
            ("POST", "".into(), "", Err("GET, HEAD")),
            ("GET", "_catalog".into(), "n=5", Ok(("catalog", "catalog"))),
            ("DELETE", "_catalog".into(), "", Err("GET, HEAD")),
            ("GET", "a/tags/list".into(), "", Ok(("list_tags", "pull a"))),
            ("GET", "a/manifests/v1".into(), "", Ok(("get_manifest", "pull a"))),
            ("HEAD", "a/manifests/v1".into(), "", Ok(("head_manifest", "pull a"))),
            ("PUT", "a/manifests/v1".into(), "", Ok(("put_manifest", "pull,push a"))),
            ("DELETE", "a/manifests/v1".into(), "", Ok(("delete_manifest", "delete a"))),
            ("PATCH", "a/manifests/v1".into(), "", Err("GET, HEAD, PUT, DELETE")),
            ("GET", format!("a/blobs/{D}"), "", Ok(("get_blob", "pull a"))),
            ("HEAD", format!("a/blobs/{D}"), "", Ok(("head_blob", "pull a"))),
            ("DELETE", format!("a/blobs/{D}"), "", Ok(("delete_blob", "delete a"))),
            ("PUT", format!("a/blobs/{D}"), "", Err("GET, HEAD, DELETE")),
            ("POST", "a/blobs/uploads/".into(), "", Ok(("start_upload", "pull,push a"))),
            ("POST", "a/blobs/uploads/".into(), &mount, Ok(("mount_blob", "pull,push a"))),
            ("POST", "a/blobs/uploads/".into(), &digest, Ok(("put_blob", "pull,push a"))),
            ("GET", "a/blobs/uploads/".into(), "", Err("POST")),
            ("GET", format!("a/blobs/uploads/{U}"), "", Ok(("get_upload", "pull,push a"))),
            ("PATCH", format!("a/blobs/uploads/{U}"), "", Ok(("patch_upload", "pull,push a"))),
            ("PUT", format!("a/blobs/uploads/{U}"), &digest, Ok(("put_upload", "pull,push a"))),
            ("DELETE", format!("a/blobs/uploads/{U}"), "", Ok(("cancel_upload", "pull,push a"))),
            ("POST", format!("a/blobs/uploads/{U}"), "", Err("GET, HEAD, PATCH, PUT, DELETE")),
            ("GET", format!("a/referrers/{D}"), "artifactType=x", Ok(("referrers", "pull a"))),
            ("PUT", format!("a/referrers/{D}"), "", Err("GET, HEAD")),
        ];
        for (method, path, query, want) in &rows {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let q = query_map(Some(query));
            let got = Operation::parse(&m, Endpoint::parse(path).unwrap(), &q).map(|op| {
                let need = match op.need() {
                    Need::Login => "login".to_owned(),
                    Need::Catalog => "catalog".to_owned(),
                    Need::Repository { name, actions } => format!("{actions} {name}"),
                };
                (op.name(), need)
            });
            let got = got.map_err(|e| e.allow);
            let want = want.map(|(n, need)| (n, need.to_owned()));
            assert_eq!(got, want, "{method} /v2/{path}?{query}");
        }
    }

    #[test]
    fn query_parameters_are_parsed_and_bad_values_kept_for_the_handler() {
        let parse = |m: Method, path: &str, q: &str| {
            Operation::parse(&m, Endpoint::parse(path).unwrap(), &query_map(Some(q))).unwrap()
        };
        let d = Digest::parse(D).unwrap();
        let name = RepoName::parse("a").unwrap();
        assert_eq!(
            parse(Method::POST, "a/blobs/uploads/", &format!("mount={D}&from=Bad&digest={D}")),
            Operation::StartUpload {
                name: name.clone(),
                start: UploadStart::Mount { digest: Some(d.clone()), from: MountFrom::Invalid }
            }
        );
        assert_eq!(
            parse(Method::POST, "a/blobs/uploads/", "mount=nope"),
            Operation::StartUpload {
                name: name.clone(),
                start: UploadStart::Mount { digest: None, from: MountFrom::Any }
            }
        );
        assert!(matches!(
            parse(Method::POST, "a/blobs/uploads/", "digest=sha256:12"),
            Operation::StartUpload { start: UploadStart::Monolithic { digest: Err(_) }, .. }
        ));
        assert!(matches!(
            parse(Method::PUT, &format!("a/blobs/uploads/{U}"), ""),
            Operation::PutUpload { digest: None, .. }
        ));
        assert_eq!(
            parse(Method::GET, "_catalog", "n=x&last="),
            Operation::Catalog { page: PageQuery { n: Err("x".into()), last: None } }
        );
        assert_eq!(
            parse(Method::GET, "a/tags/list", "n=2&last=v1"),
            Operation::ListTags { name, page: PageQuery { n: Ok(Some(2)), last: Some("v1".into()) } }
        );
    }
}
