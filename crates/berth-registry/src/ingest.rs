//! Streaming a request body into storage while hashing it: the body is read in
//! batches; each batch is hashed on the blocking pool while the driver writes
//! it, and the next batch is read meanwhile. Memory per upload is bounded by a
//! few batches whatever the blob size.

use std::mem;

use berth_storage::{StorageDriver, StoragePath};
use berth_types::Sha256State;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::error::{RegistryError, Result};
use crate::BodyStream;

/// Bytes gathered before a batch is handed to the hasher and the driver.
const BATCH: usize = 1024 * 1024;
/// Batches smaller than this are hashed inline: a thread hop costs more.
const INLINE_HASH: usize = 64 * 1024;
/// Batches read ahead of the writer.
const QUEUE: usize = 2;

pub(crate) struct Ingested {
    pub state: Sha256State,
    /// Bytes taken from the body.
    pub written: u64,
}

/// Appends `body` to `path` at `offset`, continuing `state`. With `limit`, a
/// body longer than `limit` bytes is an error. With `durable`, the data is on
/// disk on return; otherwise it is with the operating system.
pub(crate) async fn ingest(
    storage: &dyn StorageDriver,
    path: &StoragePath,
    offset: u64,
    state: Sha256State,
    mut body: BodyStream,
    limit: Option<u64>,
    durable: bool,
) -> Result<Ingested> {
    let mut writer = storage.writer(path, offset).await?;
    let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(QUEUE);

    let producer = async move {
        let mut batch = Vec::new();
        let mut batch_len = 0usize;
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(RegistryError::BodyRead)?;
            total += chunk.len() as u64;
            if limit.is_some_and(|l| total > l) {
                return Err(RegistryError::SizeInvalid("body is longer than its declared range or length".into()));
            }
            batch_len += chunk.len();
            batch.push(chunk);
            if batch_len >= BATCH {
                batch_len = 0;
                if tx.send(mem::take(&mut batch)).await.is_err() {
                    // The writer stopped; its error is reported instead.
                    return Ok(total);
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch).await;
        }
        Ok(total)
    };

    let consumer = async move {
        let mut state = state;
        let mut written = 0u64;
        while let Some(batch) = rx.recv().await {
            let n: usize = batch.iter().map(Bytes::len).sum();
            written += n as u64;
            if n < INLINE_HASH {
                for c in &batch {
                    state.update(c);
                }
                writer.write(batch).await?;
            } else {
                let for_hash = batch.clone();
                let hashing = tokio::task::spawn_blocking(move || {
                    for c in &for_hash {
                        state.update(c);
                    }
                    state
                });
                let wrote = writer.write(batch).await;
                state = hashing.await.map_err(|e| RegistryError::Internal(format!("hash task failed: {e}")))?;
                wrote?;
            }
        }
        if durable {
            writer.commit().await?;
        } else {
            writer.close().await?;
        }
        Ok::<_, RegistryError>((state, written))
    };

    let (produced, consumed) = tokio::join!(producer, consumer);
    let (state, written) = consumed?;
    let total = produced?;
    if total != written {
        return Err(RegistryError::Internal("body and stored lengths differ".into()));
    }
    Ok(Ingested { state, written })
}
