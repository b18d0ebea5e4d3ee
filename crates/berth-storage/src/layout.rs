//! The storage layout of the distribution registry, the only place that builds
//! storage paths:
//!
//! ```text
//! docker/registry/v2/blobs/sha256/<hex[0..2]>/<hex>/data
//! docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link
//! docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/sha256/<hex>/link
//! docker/registry/v2/repositories/<name>/_uploads/<uuid>/data
//! ```
//!
//! Link files hold the digest as text (`sha256:<hex>`), with no newline.

use std::fmt;

use berth_types::{Digest, RepoName, Tag};
use uuid::Uuid;

const ROOT: &str = "docker/registry/v2";

/// A relative storage key built from validated parts; it never contains
/// empty, `.` or `..` components.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoragePath(String);

impl StoragePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A child entry of this directory, as returned by `list`. Refuses names
    /// that would escape or alias the directory.
    pub fn child(&self, name: &str) -> Option<StoragePath> {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            return None;
        }
        Some(StoragePath(format!("{}/{}", self.0, name)))
    }

    /// The parent directory, if any.
    pub fn parent(&self) -> Option<StoragePath> {
        self.0.rsplit_once('/').map(|(p, _)| StoragePath(p.to_owned()))
    }

    /// The last path component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    fn new(s: String) -> Self {
        debug_assert!(!s.is_empty() && s.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
        StoragePath(s)
    }
}

impl fmt::Display for StoragePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StoragePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoragePath({})", self.0)
    }
}

/// Root of everything the distribution layout holds.
pub fn root() -> StoragePath {
    StoragePath::new(ROOT.to_owned())
}

pub fn blob_dir(d: &Digest) -> StoragePath {
    let hex = d.hex();
    StoragePath::new(format!("{ROOT}/blobs/{}/{}/{}", d.algorithm(), &hex[..2], hex))
}

pub fn blob_data(d: &Digest) -> StoragePath {
    StoragePath::new(format!("{}/data", blob_dir(d).0))
}

pub fn repositories_root() -> StoragePath {
    StoragePath::new(format!("{ROOT}/repositories"))
}

pub fn repo_root(name: &RepoName) -> StoragePath {
    StoragePath::new(format!("{ROOT}/repositories/{name}"))
}

/// Name of a repository whose root is `path` (inverse of [`repo_root`]).
pub fn repo_name_of(path: &StoragePath) -> Option<RepoName> {
    let prefix = format!("{ROOT}/repositories/");
    path.0.strip_prefix(&prefix).and_then(|n| RepoName::parse(n).ok())
}

/// The `_layers` directory of a repository.
pub fn layers_root(name: &RepoName) -> StoragePath {
    StoragePath::new(format!("{}/_layers", repo_root(name).0))
}

pub fn layers_dir(name: &RepoName) -> StoragePath {
    StoragePath::new(format!("{}/_layers/sha256", repo_root(name).0))
}

pub fn layer_link(name: &RepoName, d: &Digest) -> StoragePath {
    StoragePath::new(format!("{}/{}/link", layers_dir(name).0, d.hex()))
}

pub fn manifests_dir(name: &RepoName) -> StoragePath {
    StoragePath::new(format!("{}/_manifests", repo_root(name).0))
}

pub fn revisions_dir(name: &RepoName) -> StoragePath {
    StoragePath::new(format!("{}/_manifests/revisions/sha256", repo_root(name).0))
}

pub fn revision_link(name: &RepoName, d: &Digest) -> StoragePath {
    StoragePath::new(format!("{}/{}/link", revisions_dir(name).0, d.hex()))
}

pub fn tags_dir(name: &RepoName) -> StoragePath {
    StoragePath::new(format!("{}/_manifests/tags", repo_root(name).0))
}

pub fn tag_dir(name: &RepoName, tag: &Tag) -> StoragePath {
    StoragePath::new(format!("{}/{}", tags_dir(name).0, tag))
}

pub fn tag_current_link(name: &RepoName, tag: &Tag) -> StoragePath {
    StoragePath::new(format!("{}/current/link", tag_dir(name, tag).0))
}

pub fn tag_index_link(name: &RepoName, tag: &Tag, d: &Digest) -> StoragePath {
    StoragePath::new(format!("{}/index/sha256/{}/link", tag_dir(name, tag).0, d.hex()))
}

pub fn uploads_dir(name: &RepoName) -> StoragePath {
    StoragePath::new(format!("{}/_uploads", repo_root(name).0))
}

pub fn upload_dir(name: &RepoName, id: &Uuid) -> StoragePath {
    StoragePath::new(format!("{}/{}", uploads_dir(name).0, id))
}

pub fn upload_data(name: &RepoName, id: &Uuid) -> StoragePath {
    StoragePath::new(format!("{}/data", upload_dir(name, id).0))
}

/// Berth's own record of a garbage collection batch whose content deletion
/// had started (outside distribution's tree, which distribution ignores).
pub fn gc_journal() -> StoragePath {
    StoragePath::new("_berth/gc/pending".to_owned())
}

/// Content of a link file pointing at `d`.
pub fn link_content(d: &Digest) -> bytes::Bytes {
    bytes::Bytes::from(d.as_str().to_owned())
}

/// Parses a link file's content.
pub fn parse_link(content: &[u8]) -> Option<Digest> {
    std::str::from_utf8(content).ok().and_then(|s| Digest::parse(s.trim()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_distribution() {
        let d = Digest::parse("sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789").unwrap();
        let n = RepoName::parse("library/ubuntu").unwrap();
        let t = Tag::parse("22.04").unwrap();
        let hex = d.hex();
        assert_eq!(blob_data(&d).as_str(), format!("docker/registry/v2/blobs/sha256/ab/{hex}/data"));
        assert_eq!(
            layer_link(&n, &d).as_str(),
            format!("docker/registry/v2/repositories/library/ubuntu/_layers/sha256/{hex}/link")
        );
        assert_eq!(
            revision_link(&n, &d).as_str(),
            format!("docker/registry/v2/repositories/library/ubuntu/_manifests/revisions/sha256/{hex}/link")
        );
        assert_eq!(
            tag_current_link(&n, &t).as_str(),
            "docker/registry/v2/repositories/library/ubuntu/_manifests/tags/22.04/current/link"
        );
        assert_eq!(
            tag_index_link(&n, &t, &d).as_str(),
            format!("docker/registry/v2/repositories/library/ubuntu/_manifests/tags/22.04/index/sha256/{hex}/link")
        );
        assert_eq!(repo_name_of(&repo_root(&n)), Some(n));
        assert_eq!(parse_link(&link_content(&d)), Some(d));
    }

    #[test]
    fn child_refuses_escapes() {
        let r = repositories_root();
        for bad in ["", ".", "..", "a/b", "a\0"] {
            assert!(r.child(bad).is_none(), "{bad:?}");
        }
        assert_eq!(r.child("x").unwrap().parent().unwrap(), r);
    }
}
