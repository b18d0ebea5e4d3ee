use berth_metadata::MetadataError;
use berth_storage::StorageError;

/// Everything a registry operation can fail with. The HTTP edge maps each
/// variant to an OCI error code and status in one table.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    /// A chunk did not start where the upload ends; `size` is the upload's current length.
    #[error("requested range not satisfiable: upload is at {size} bytes")]
    RangeInvalid { size: u64 },
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest is larger than the 4 MiB limit")]
    ManifestTooLarge,
    #[error("manifest references a blob unknown to the repository: {0}")]
    ManifestBlobUnknown(berth_types::Digest),
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    #[error("registry is in read-only mode")]
    ReadOnly,
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("invalid pagination: {0}")]
    PaginationInvalid(String),
    #[error("request body could not be read: {0}")]
    BodyRead(std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("internal error: {0}")]
    Internal(String),
    /// A long run stopped between its steps, as asked (a shutdown).
    #[error("stopped before the end: the registry is shutting down")]
    Cancelled,
}

impl RegistryError {
    /// Whether the store or the database ran out of space.
    pub fn is_storage_full(&self) -> bool {
        match self {
            RegistryError::Storage(e) => e.is_full(),
            RegistryError::Metadata(e) => e.is_full(),
            _ => false,
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
