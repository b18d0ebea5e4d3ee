//! Deleting a whole repository (its blobs are left to collection).

use berth_storage::layout;
use berth_types::RepoName;

use crate::{ignore_missing, Caller, Registry, RegistryError, Result};

impl Registry {
    /// Deletes a whole repository: its tags, manifests and blob links, in the
    /// metadata and in storage. Blobs are left to garbage collection.
    pub async fn delete_repository(&self, caller: &Caller, repo: &RepoName) -> Result<()> {
        self.check_delete()?;
        let _lock = self.lock_repository(repo).await?;
        if !self.inner.meta.delete_repository(repo).await? {
            return Err(RegistryError::NameUnknown);
        }
        // Only Berth's own entries: a repository's directory may hold nested repositories.
        for dir in [layout::manifests_dir(repo), layout::layers_root(repo), layout::uploads_dir(repo)] {
            ignore_missing(self.inner.storage.delete(&dir).await)?;
        }
        caller.did("delete repository", repo, repo);
        Ok(())
    }
}
