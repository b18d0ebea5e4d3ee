//! Storage: a narrow [`StorageDriver`] trait with filesystem and in-memory
//! drivers, and [`layout`], the only place that builds storage paths (the
//! distribution registry's layout, so either registry can serve the store).
//!
//! Every driver passes the shared suite in [`conformance`].

use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub mod conformance;
pub mod fs;
pub mod layout;
pub mod memory;
pub mod s3;

pub use layout::StoragePath;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("path not found: {0}")]
    NotFound(String),
    #[error("invalid range for {path}: offset {offset} beyond size {size}")]
    InvalidOffset { path: String, offset: u64, size: u64 },
    #[error("storage I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The store has no room for more data (or keeps what is left for the
    /// metadata and deletions).
    #[error("storage is full: {0}")]
    Full(String),
    #[error("storage error: {0}")]
    Other(String),
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound(_))
    }

    pub fn is_full(&self) -> bool {
        matches!(self, StorageError::Full(_))
    }

    pub(crate) fn io(path: &StoragePath, source: std::io::Error) -> Self {
        match source.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound(path.as_str().to_owned()),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StorageError::Full(format!("writing {path}: {source}"))
            }
            _ => StorageError::Io { path: path.as_str().to_owned(), source },
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A stream of byte chunks read from storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub size: u64,
    pub modified: Option<SystemTime>,
    pub is_dir: bool,
}

/// The operations the registry needs from a store. Paths are typed keys from
/// [`layout`]; drivers map them onto their medium.
#[async_trait]
pub trait StorageDriver: Send + Sync + 'static {
    /// A short name for logs and metrics ("filesystem", "inmemory").
    fn name(&self) -> &'static str;

    /// Reads a whole (small) file.
    async fn get_content(&self, path: &StoragePath) -> Result<Bytes>;

    /// Writes a whole (small) file atomically and durably: readers see the old
    /// content or the new one, never a part.
    async fn put_content(&self, path: &StoragePath, data: Bytes) -> Result<()>;

    async fn stat(&self, path: &StoragePath) -> Result<FileInfo>;

    /// Streams `len` bytes (or up to the end) starting at `offset`.
    async fn reader(&self, path: &StoragePath, offset: u64, len: Option<u64>) -> Result<ByteStream>;

    /// Opens `path` for appending at `offset`. Bytes past `offset` left by an
    /// interrupted earlier write are discarded; a file shorter than `offset`
    /// is an error ([`StorageError::InvalidOffset`]). `offset` 0 creates the file.
    /// `state` is what [`StorageWriter::close`] returned for the data so far
    /// (None: the file at `path` holds it).
    async fn writer(&self, path: &StoragePath, offset: u64, state: Option<&str>) -> Result<Box<dyn StorageWriter>>;

    /// Releases what the driver keeps for unfinished data given up (an S3
    /// multipart upload) that deleting its directory does not remove.
    async fn abandon(&self, _path: &StoragePath, _state: &str) -> Result<()> {
        Ok(())
    }

    /// A URL clients may fetch the file from directly, for a redirect.
    fn redirect_url(&self, _path: &StoragePath) -> Option<String> {
        None
    }

    /// Names of the direct children of a directory.
    async fn list(&self, path: &StoragePath) -> Result<Vec<String>>;

    /// Deletes a file or a whole directory tree.
    async fn delete(&self, path: &StoragePath) -> Result<()>;

    /// Deletes many files or trees; those already gone are no error. Unlike
    /// [`StorageDriver::delete`] it need not wait until the deletions are
    /// durable: it serves garbage collection, where a deletion lost to a
    /// power failure only leaves unindexed content behind.
    async fn delete_many(&self, paths: &[StoragePath]) -> Result<()> {
        for p in paths {
            match self.delete(p).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves a file atomically and durably, replacing any file at `to`.
    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()>;
}

/// What [`StorageWriter::close`] leaves for the next writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The file's total size.
    pub size: u64,
    /// Driver state to pass to the next [`StorageDriver::writer`] on this
    /// path; None when the file at the path holds the data.
    pub state: Option<String>,
}

/// An open append handle. Nothing written is guaranteed durable until
/// [`StorageWriter::commit`] returns.
#[async_trait]
pub trait StorageWriter: Send {
    async fn write(&mut self, chunks: Vec<Bytes>) -> Result<()>;
    /// Flushes durably, makes the file at the path whole and returns its size.
    async fn commit(self: Box<Self>) -> Result<u64>;
    /// Closes without waiting for the disk: the data survives a process crash
    /// but not necessarily a power loss. A later writer continues it given
    /// the returned state; only a commit makes the file at the path whole.
    async fn close(self: Box<Self>) -> Result<Written>;
}
