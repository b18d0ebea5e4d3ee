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
    #[error("storage error: {0}")]
    Other(String),
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound(_))
    }

    pub(crate) fn io(path: &StoragePath, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            StorageError::NotFound(path.as_str().to_owned())
        } else {
            StorageError::Io { path: path.as_str().to_owned(), source }
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
    async fn writer(&self, path: &StoragePath, offset: u64) -> Result<Box<dyn StorageWriter>>;

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

/// An open append handle. Nothing written is guaranteed durable until
/// [`StorageWriter::commit`] returns.
#[async_trait]
pub trait StorageWriter: Send {
    async fn write(&mut self, chunks: Vec<Bytes>) -> Result<()>;
    /// Flushes durably and returns the file's total size.
    async fn commit(self: Box<Self>) -> Result<u64>;
    /// Closes without waiting for the disk: the data survives a process crash
    /// but not necessarily a power loss. Returns the file's total size.
    async fn close(self: Box<Self>) -> Result<u64>;
}
