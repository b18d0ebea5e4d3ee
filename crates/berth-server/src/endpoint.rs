//! One parser turns a `/v2/...` path into an [`Endpoint`]. Repository names
//! contain `/`, so the path is read from its end: the last segments say which
//! endpoint it is, and everything before them is the name.

use berth_types::{Digest, Reference, RepoName};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags { name: RepoName },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: RepoName, reference: Reference },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: RepoName, digest: Digest },
    /// `/v2/<name>/blobs/uploads/`
    Uploads { name: RepoName },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: RepoName, id: Uuid },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: RepoName, digest: Digest },
}

impl Endpoint {
    /// The methods an endpoint answers, for `Allow` on a 405.
    pub fn allowed_methods(&self) -> &'static str {
        match self {
            Endpoint::Base | Endpoint::Catalog | Endpoint::Tags { .. } | Endpoint::Referrers { .. } => "GET, HEAD",
            Endpoint::Manifest { .. } => "GET, HEAD, PUT, DELETE",
            Endpoint::Blob { .. } => "GET, HEAD, DELETE",
            Endpoint::Uploads { .. } => "POST",
            Endpoint::Upload { .. } => "GET, HEAD, PATCH, PUT, DELETE",
        }
    }
}

/// Why a path names no endpoint, or names one with invalid parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    NotFound,
    NameInvalid(String),
    DigestInvalid(String),
    TagInvalid(String),
    /// A manifest reference that is neither a tag nor a digest: 400 for a
    /// PUT, 404 for a read (no such manifest can exist).
    ReferenceInvalid(Box<PathError>),
    UploadUnknown,
}

impl PathError {
    /// What is wrong, in words.
    pub fn detail(&self) -> String {
        match self {
            PathError::NotFound => "no such endpoint".into(),
            PathError::NameInvalid(d) | PathError::DigestInvalid(d) | PathError::TagInvalid(d) => d.clone(),
            PathError::ReferenceInvalid(e) => e.detail(),
            PathError::UploadUnknown => "no upload has this id".into(),
        }
    }
}

fn name(s: &str) -> Result<RepoName, PathError> {
    RepoName::parse(s).map_err(|e| PathError::NameInvalid(e.to_string()))
}

fn digest(s: &str) -> Result<Digest, PathError> {
    Digest::parse(s).map_err(|e| PathError::DigestInvalid(e.to_string()))
}

impl Endpoint {
    /// Parses the part of the path after `/v2/` (already percent-decoded).
    pub fn parse(rest: &str) -> Result<Endpoint, PathError> {
        if rest.is_empty() {
            return Ok(Endpoint::Base);
        }
        if rest == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        if let Some(n) = rest.strip_suffix("/tags/list") {
            return Ok(Endpoint::Tags { name: name(n)? });
        }
        let (prefix, last) = rest.rsplit_once('/').ok_or(PathError::NotFound)?;
        if let Some(n) = prefix.strip_suffix("/manifests") {
            let reference = Reference::parse(last).map_err(|e| {
                PathError::ReferenceInvalid(Box::new(match e {
                    berth_types::ReferenceError::Digest(e) => PathError::DigestInvalid(e.to_string()),
                    berth_types::ReferenceError::Tag(e) => PathError::TagInvalid(e.to_string()),
                }))
            })?;
            return Ok(Endpoint::Manifest { name: name(n)?, reference });
        }
        if let Some(n) = prefix.strip_suffix("/blobs/uploads") {
            let name = name(n)?;
            if last.is_empty() {
                return Ok(Endpoint::Uploads { name });
            }
            // One spelling only, the one Berth hands out (lowercase, hyphenated):
            // other spellings of the same id would be other URLs of one upload.
            let id = Uuid::parse_str(last).map_err(|_| PathError::UploadUnknown)?;
            if id.hyphenated().to_string() != last {
                return Err(PathError::UploadUnknown);
            }
            return Ok(Endpoint::Upload { name, id });
        }
        if let Some(n) = prefix.strip_suffix("/blobs") {
            // Tolerate a missing trailing slash on the upload collection.
            if last == "uploads" {
                return Ok(Endpoint::Uploads { name: name(n)? });
            }
            let name = name(n)?;
            return Ok(Endpoint::Blob { name, digest: digest(last)? });
        }
        if let Some(n) = prefix.strip_suffix("/referrers") {
            let name = name(n)?;
            return Ok(Endpoint::Referrers { name, digest: digest(last)? });
        }
        Err(PathError::NotFound)
    }
}

/// Decodes `%XX` escapes; None for malformed escapes or non-UTF-8 results.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const U: &str = "0b1f4c36-9c0c-4a8e-8d3a-3f1c9b2a7e11";

    fn n(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn table() {
        let d = Digest::parse(D).unwrap();
        let u = Uuid::parse_str(U).unwrap();
        let cases: Vec<(String, Result<Endpoint, PathError>)> = vec![
            ("".into(), Ok(Endpoint::Base)),
            ("_catalog".into(), Ok(Endpoint::Catalog)),
            ("a/tags/list".into(), Ok(Endpoint::Tags { name: n("a") })),
            ("a/b/c/tags/list".into(), Ok(Endpoint::Tags { name: n("a/b/c") })),
            (
                "a/b/manifests/latest".into(),
                Ok(Endpoint::Manifest { name: n("a/b"), reference: Reference::parse("latest").unwrap() }),
            ),
            (
                format!("a/manifests/{D}"),
                Ok(Endpoint::Manifest { name: n("a"), reference: Reference::Digest(d.clone()) }),
            ),
            // Names may contain the endpoint keywords.
            (
                "x/manifests/manifests/v1".into(),
                Ok(Endpoint::Manifest { name: n("x/manifests"), reference: Reference::parse("v1").unwrap() }),
            ),
            ("x/blobs/uploads/blobs/uploads/".into(), Ok(Endpoint::Uploads { name: n("x/blobs/uploads") })),
            (format!("a/blobs/{D}"), Ok(Endpoint::Blob { name: n("a"), digest: d.clone() })),
            ("a/blobs/uploads/".into(), Ok(Endpoint::Uploads { name: n("a") })),
            ("a/blobs/uploads".into(), Ok(Endpoint::Uploads { name: n("a") })),
            (format!("a/b/blobs/uploads/{U}"), Ok(Endpoint::Upload { name: n("a/b"), id: u })),
            (format!("a/referrers/{D}"), Ok(Endpoint::Referrers { name: n("a"), digest: d.clone() })),
            ("a/blobs/uploads/not-a-uuid".into(), Err(PathError::UploadUnknown)),
            (
                "a/blobs/sha256:123".into(),
                Err(PathError::DigestInvalid("invalid digest encoding: expected 64 lowercase hex characters".into())),
            ),
            (
                "a/manifests/bad!tag".into(),
                Err(PathError::ReferenceInvalid(Box::new(PathError::TagInvalid(
                    "invalid tag: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}".into(),
                )))),
            ),
            (format!("a/blobs/uploads/{}", U.to_uppercase()), Err(PathError::UploadUnknown)),
            (format!("a/blobs/uploads/{}", U.replace('-', "")), Err(PathError::UploadUnknown)),
            (format!("a/blobs/uploads/{{{U}}}"), Err(PathError::UploadUnknown)),
            (format!("a/blobs/uploads/urn:uuid:{U}"), Err(PathError::UploadUnknown)),
            ("A/tags/list".into(), Err(PathError::NameInvalid("invalid repository name component \"A\"".into()))),
            ("/tags/list".into(), Err(PathError::NameInvalid("repository name must not be empty".into()))),
            ("a".into(), Err(PathError::NotFound)),
            ("a/b".into(), Err(PathError::NotFound)),
            ("a/tags".into(), Err(PathError::NotFound)),
            (
                "a/manifests/".into(),
                Err(PathError::ReferenceInvalid(Box::new(PathError::TagInvalid(
                    "invalid tag: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}".into(),
                )))),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(Endpoint::parse(&path), want, "{path}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a/manifests/sha256%3Aab").as_deref(), Some("a/manifests/sha256:ab"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "[a-z0-9/_:.%-]{0,80}") {
            let _ = Endpoint::parse(&s);
            let _ = percent_decode(&s);
        }
    }
}
