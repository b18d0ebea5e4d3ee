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
const BATCH: usize = 512 * 1024;
/// Batches smaller than this are hashed inline: a thread hop costs more.
const INLINE_HASH: usize = 64 * 1024;
/// Batches read ahead of the writer.
const QUEUE: usize = 2;

pub(crate) struct Ingested {
    pub state: Sha256State,
    /// Bytes taken from the body.
    pub written: u64,
    /// The storage driver's state of the data, when not committed.
    pub storage_state: Option<String>,
}

/// Appends `body` to `path` at `offset`, continuing `state` (and the
/// driver's `storage_state`). With `limit`, a body longer than `limit` bytes
/// is an error. With `durable`, the data is committed on return; otherwise it
/// is with the operating system, or left for the next writer.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn ingest(
    storage: &dyn StorageDriver,
    path: &StoragePath,
    offset: u64,
    state: Sha256State,
    storage_state: Option<&str>,
    mut body: BodyStream,
    limit: Option<u64>,
    durable: bool,
) -> Result<Ingested> {
    let mut writer = storage.writer(path, offset, storage_state).await?;
    // Hashing and writing each take batches from their own queue, so neither
    // waits for the other, and the body is read meanwhile.
    let (hash_tx, mut hash_rx) = mpsc::channel::<Vec<Bytes>>(QUEUE);
    let (write_tx, mut write_rx) = mpsc::channel::<Option<Vec<Bytes>>>(QUEUE);

    let producer = async move {
        let mut batch = Vec::new();
        let mut batch_len = 0usize;
        let mut total = 0u64;
        let send = async |batch: Vec<Bytes>| {
            // A closed queue means the writer stopped; its error is reported instead.
            hash_tx.send(batch.clone()).await.is_ok() && write_tx.send(Some(batch)).await.is_ok()
        };
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
                if !send(mem::take(&mut batch)).await {
                    return Ok(total);
                }
            }
        }
        if let Some(l) = limit.filter(|&l| l != total) {
            return Err(RegistryError::SizeInvalid(format!("expected {l} bytes, got {total}")));
        }
        if !batch.is_empty() && !send(batch).await {
            return Ok(total);
        }
        // Only a whole body is closed or committed: a writer that never sees
        // the end is dropped, and leaves nothing a later writer would take.
        let _ = write_tx.send(None).await;
        Ok(total)
    };

    let hasher = async move {
        let mut state = state;
        while let Some(batch) = hash_rx.recv().await {
            let n: usize = batch.iter().map(Bytes::len).sum();
            if n < INLINE_HASH {
                for c in &batch {
                    state.update(c);
                }
            } else {
                state = tokio::task::spawn_blocking(move || {
                    for c in &batch {
                        state.update(c);
                    }
                    state
                })
                .await
                .map_err(|e| RegistryError::Internal(format!("hash task failed: {e}")))?;
            }
        }
        Ok::<_, RegistryError>(state)
    };

    let write = async move {
        let mut written = 0u64;
        let mut complete = false;
        while let Some(msg) = write_rx.recv().await {
            let Some(batch) = msg else {
                complete = true;
                break;
            };
            written += batch.iter().map(|b| b.len() as u64).sum::<u64>();
            writer.write(batch).await?;
        }
        if !complete {
            return Err(RegistryError::Internal("body ended early".into()));
        }
        let left = if durable {
            writer.commit().await?;
            None
        } else {
            writer.close().await?.state
        };
        Ok::<_, RegistryError>((written, left))
    };

    let (produced, hashed, written) = tokio::join!(producer, hasher, write);
    // The body's own failure first: the writer only saw it end early.
    let total = produced?;
    let (written, storage_state) = written?;
    let state = hashed?;
    if total != written || state.len() != offset + written {
        return Err(RegistryError::Internal("body, hashed and stored lengths differ".into()));
    }
    Ok(Ingested { state, written, storage_state })
}
