//! Rows read back into the values they were written from. A row that does
//! not parse is a `Corrupt` error naming its table and key, logged where it
//! is found; nothing is skipped silently while its storage stays.

use berth_types::{Digest, RepoName, Tag};
use uuid::Uuid;

use crate::{MetadataError, Result};

fn corrupt(table: &str, key: &str, what: &str) -> MetadataError {
    let e = MetadataError::Corrupt(format!("{table} {key}: {what}"));
    tracing::error!(error = %e, "corrupt metadata row");
    e
}

pub(crate) fn digest(table: &str, key: &str, s: &str) -> Result<Digest> {
    Digest::parse(s).map_err(|e| corrupt(table, key, &format!("digest {s:?}: {e}")))
}

pub(crate) fn repo(table: &str, key: &str, s: &str) -> Result<RepoName> {
    RepoName::parse(s).map_err(|e| corrupt(table, key, &format!("repository {s:?}: {e}")))
}

pub(crate) fn tag(table: &str, key: &str, s: &str) -> Result<Tag> {
    Tag::parse(s).map_err(|e| corrupt(table, key, &format!("tag {s:?}: {e}")))
}

pub(crate) fn uuid(table: &str, key: &str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| corrupt(table, key, &format!("id {s:?}: {e}")))
}

/// A stored size (BIGINT) as a byte count.
pub(crate) fn size(table: &str, key: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(table, key, &format!("negative size {v}")))
}

/// A byte count as the database stores it.
pub(crate) fn db_size(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| MetadataError::Corrupt(format!("size {v} does not fit in a BIGINT")))
}

pub(crate) fn digests(table: &str, key: &str, v: Vec<String>) -> Result<Vec<Digest>> {
    v.iter().map(|s| digest(table, key, s)).collect()
}

pub(crate) fn repos(table: &str, key: &str, v: Vec<String>) -> Result<Vec<RepoName>> {
    v.iter().map(|s| repo(table, key, s)).collect()
}

pub(crate) fn tags(table: &str, key: &str, v: Vec<String>) -> Result<Vec<Tag>> {
    v.iter().map(|s| tag(table, key, s)).collect()
}
