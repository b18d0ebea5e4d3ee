//! Repository names, tags and references, validated by the OCI distribution grammar.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted, as distribution limits it.
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag accepted (the spec's `{0,127}` after the first character).
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name must not be empty")]
    Empty,
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("invalid repository name component {0:?}")]
    InvalidComponent(String),
}

/// A repository name: path components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
/// separated by `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for component in s.split('/') {
            if !valid_component(component) {
                return Err(NameError::InvalidComponent(component.chars().take(64).collect()));
            }
        }
        Ok(RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component ("namespace"), e.g. `team` for `team/app`.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// Whether `other` is this name or lies below it (`team` holds
    /// `team/app`, not `teamwork`).
    pub fn contains(&self, other: &RepoName) -> bool {
        other.0.strip_prefix(&self.0).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// One component: alphanumeric runs joined by exactly one `.`, one or two
/// `_`, or any number of `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &b[start..i];
        let ok = sep == b"." || sep == b"_" || sep == b"__" || sep.iter().all(|&x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Names compare with their text, as `String` does.
macro_rules! eq_str {
    ($t:ty) => {
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}
eq_str!(RepoName);
eq_str!(Tag);

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({})", self.0)
    }
}

impl FromStr for RepoName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoName::parse(s)
    }
}

impl TryFrom<String> for RepoName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RepoName::parse(&s)
    }
}

impl From<RepoName> for String {
    fn from(n: RepoName) -> String {
        n.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tag: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
pub struct TagError;

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, TagError> {
        let b = s.as_bytes();
        let first_ok = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let rest_ok = |x: u8| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-';
        if b.is_empty() || b.len() > MAX_TAG_LEN || !first_ok(b[0]) || !b[1..].iter().all(|&x| rest_ok(x)) {
            return Err(TagError);
        }
        Ok(Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

impl TryFrom<String> for Tag {
    type Error = TagError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Tag::parse(&s)
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> String {
        t.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Tag(#[from] TagError),
}

/// What a manifest URL names: a tag or a digest. A `:` can only appear in a
/// digest, so it decides which one is meant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.contains(':') {
            Ok(Reference::Digest(Digest::parse(s)?))
        } else {
            Ok(Reference::Tag(Tag::parse(s)?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_name_contains_itself_and_what_lies_below_it() {
        let team = RepoName::parse("team").unwrap();
        for (name, inside) in
            [("team", true), ("team/app", true), ("team/a/b", true), ("teamwork", false), ("other/team", false)]
        {
            assert_eq!(team.contains(&RepoName::parse(name).unwrap()), inside, "{name}");
        }
    }

    #[test]
    fn repo_names_follow_the_spec_grammar() {
        let cases = [
            ("a", true),
            ("library/ubuntu", true),
            ("a/b/c/d", true),
            ("foo.bar_baz__qux---x", true),
            ("sys/admin/images/ubuntu", true),
            ("blobs/uploads", true),
            ("", false),
            ("A", false),
            ("a/", false),
            ("/a", false),
            ("a//b", false),
            ("a..b", false),
            ("a___b", false),
            ("-a", false),
            ("a-", false),
            ("a_", false),
            ("a.-b", false),
            ("a/../b", false),
            ("a b", false),
            ("ä", false),
        ];
        for (name, ok) in cases {
            assert_eq!(RepoName::parse(name).is_ok(), ok, "{name:?}");
        }
        assert!(RepoName::parse(&"a".repeat(255)).is_ok());
        assert_eq!(RepoName::parse(&"a".repeat(256)), Err(NameError::TooLong));
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for ok in ["latest", "v1.0.0", "_x", "A-b.c_d", &"a".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129), "tag!"] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reference_is_digest_iff_it_has_a_colon() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(
            Reference::parse("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            Ok(Reference::Digest(_))
        ));
        assert!(matches!(Reference::parse("sha256:nope"), Err(ReferenceError::Digest(_))));
    }

    fn reference_regex_component(c: &str) -> bool {
        // Straightforward reading of the spec's regex, to cross-check the hand-written matcher.
        let mut parts = Vec::new();
        let mut cur = String::new();
        let mut seps = Vec::new();
        let mut sep = String::new();
        for ch in c.chars() {
            if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
                if !sep.is_empty() {
                    seps.push(std::mem::take(&mut sep));
                    parts.push(std::mem::take(&mut cur));
                }
                cur.push(ch);
            } else {
                if cur.is_empty() {
                    return false;
                }
                sep.push(ch);
            }
        }
        if !sep.is_empty() || cur.is_empty() {
            return false;
        }
        seps.iter().all(|s| s == "." || s == "_" || s == "__" || (!s.is_empty() && s.chars().all(|c| c == '-')))
    }

    proptest! {
        #[test]
        fn component_matcher_agrees_with_regex_reading(s in "[a-z0-9._-]{1,12}") {
            prop_assert_eq!(valid_component(&s), reference_regex_component(&s));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,300}") {
            let _ = RepoName::parse(&s);
            let _ = Tag::parse(&s);
            let _ = Reference::parse(&s);
        }
    }
}
