//! Pure values of the OCI distribution protocol, validated in the type: a
//! [`Digest`], [`RepoName`], [`Tag`] or [`Reference`] can only be built by a
//! constructor that checks it, including through serde. Manifest parsing keeps
//! the raw bytes as the source of truth and extracts what the registry needs.

pub mod digest;
pub mod duration;
pub mod hash;
pub mod manifest;
pub mod name;
pub mod pattern;
pub mod secret;
pub mod time;

pub use digest::{Digest, DigestError};
pub use hash::Sha256State;
pub use manifest::{media, Descriptor, ManifestError, ManifestInfo, ManifestKind, MAX_MANIFEST_SIZE};
pub use name::{NameError, Reference, ReferenceError, RepoName, Tag, TagError};
