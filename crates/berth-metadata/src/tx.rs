//! The unit of work: a write transaction with typed operations, committed
//! once. What the registry must write together (a manifest, its tag and the
//! events they cause; a blob and the work it queues) goes through one
//! [`WriteTx`], so either all of it is recorded or none.
//!
//! Each operation's own method on [`Metadata`] is the same operation in a
//! transaction of its own.

use std::sync::Arc;

use sqlx::{Any, Transaction};

use crate::cache::Cache;
use crate::{Backend, Metadata, Result};

/// A write transaction. Dropping it without [`WriteTx::commit`] rolls it
/// back. On SQLite it holds the database's write lock until then, so it
/// should not wait on anything slow (the network, a client).
pub struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    pub(crate) backend: Backend,
    cache: Arc<Cache>,
    /// Repositories whose cached reads go stale when this commits.
    touched: Vec<String>,
}

impl Metadata {
    /// Starts a write transaction.
    pub async fn write_tx(&self) -> Result<WriteTx> {
        Ok(WriteTx {
            tx: self.begin(&self.write).await?,
            backend: self.backend,
            cache: self.cache.clone(),
            touched: Vec::new(),
        })
    }
}

impl WriteTx {
    /// Notes that `repo` changes with this transaction.
    pub(crate) fn touch(&mut self, repo: &str) {
        if !self.touched.iter().any(|r| r == repo) {
            self.touched.push(repo.to_owned());
        }
    }

    /// Commits everything done through this transaction.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        for repo in &self.touched {
            self.cache.invalidate(repo);
        }
        Ok(())
    }

    /// Undoes everything done through this transaction (as dropping it does,
    /// but waiting for the database to confirm).
    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}
