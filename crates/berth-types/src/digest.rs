//! Content digests (`sha256:<64 hex>`), validated on construction.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// Why a string is not a digest we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest has no algorithm separator ':'")]
    MissingSeparator,
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("invalid digest encoding: expected {expected} lowercase hex characters")]
    InvalidEncoding { expected: usize },
}

/// A content digest. Only SHA-256 is supported: it is the algorithm every
/// client uses, and the one the distribution layout is built on.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    // Always "sha256:" followed by 64 lowercase hex characters.
    full: String,
}

impl Digest {
    pub const SHA256_PREFIX: &'static str = "sha256:";

    /// Parses and validates `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (algo, hex) = s.split_once(':').ok_or(DigestError::MissingSeparator)?;
        if algo != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(algo.to_owned()));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestError::InvalidEncoding { expected: 64 });
        }
        Ok(Digest { full: s.to_owned() })
    }

    /// Builds a digest from a raw 32-byte SHA-256 output.
    pub fn from_sha256_bytes(bytes: &[u8; 32]) -> Self {
        Digest { full: format!("{}{}", Self::SHA256_PREFIX, hex::encode(bytes)) }
    }

    /// The SHA-256 digest of `data`.
    pub fn of_bytes(data: &[u8]) -> Self {
        let out: [u8; 32] = sha2::Sha256::digest(data).into();
        Self::from_sha256_bytes(&out)
    }

    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The hex part after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.full[Self::SHA256_PREFIX.len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }
}

/// Compares with the digest's text (`sha256:…`).
impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.full == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.full == *other
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.full)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_sha256() {
        let s = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d = Digest::parse(s).unwrap();
        assert_eq!(d.as_str(), s);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(Digest::of_bytes(b""), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "sha256:../../../../etc/passwd0000000000000000000000000000000000000000",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn deserialize_validates() {
        let r: Result<Digest, _> = serde_json::from_str("\"sha256:zz\"");
        assert!(r.is_err());
        let ok: Digest =
            serde_json::from_str("\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"")
                .unwrap();
        assert_eq!(ok.algorithm(), "sha256");
    }
}
