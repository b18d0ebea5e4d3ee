//! In-memory driver for tests and throwaway registries. Directories are
//! implied by the paths of the files under them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::stream;

use crate::{ByteStream, FileInfo, Result, StorageDriver, StorageError, StoragePath, StorageWriter, Written};

#[derive(Debug, Clone, Default)]
pub struct MemoryDriver {
    files: Arc<Mutex<BTreeMap<String, (Bytes, SystemTime)>>>,
}

impl MemoryDriver {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, (Bytes, SystemTime)>> {
        // A panic while holding the lock cannot leave a half-updated map (each
        // operation is a single insert or remove), so a poisoned lock is usable.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn children(&self, path: &StoragePath) -> Vec<String> {
        let prefix = format!("{}/", path.as_str());
        let files = self.lock();
        let mut out: Vec<String> = files
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k[prefix.len()..].split('/').next().unwrap_or_default().to_owned())
            .collect();
        out.dedup();
        out
    }
}

fn not_found(p: &StoragePath) -> StorageError {
    StorageError::NotFound(p.as_str().to_owned())
}

#[async_trait]
impl StorageDriver for MemoryDriver {
    fn name(&self) -> &'static str {
        "inmemory"
    }

    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        self.lock().get(path.as_str()).map(|(b, _)| b.clone()).ok_or_else(|| not_found(path))
    }

    async fn put_content(&self, path: &StoragePath, data: Bytes) -> Result<()> {
        self.lock().insert(path.as_str().to_owned(), (data, SystemTime::now()));
        Ok(())
    }

    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        if let Some((b, t)) = self.lock().get(path.as_str()) {
            return Ok(FileInfo { size: b.len() as u64, modified: Some(*t), is_dir: false });
        }
        if !self.children(path).is_empty() {
            return Ok(FileInfo { size: 0, modified: None, is_dir: true });
        }
        Err(not_found(path))
    }

    async fn reader(&self, path: &StoragePath, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let data = self.get_content(path).await?;
        let size = data.len() as u64;
        let end = len.map(|l| offset.saturating_add(l)).unwrap_or(size);
        if offset > size || end > size {
            return Err(StorageError::InvalidOffset { path: path.to_string(), offset: end.max(offset), size });
        }
        let chunk = data.slice(offset as usize..end as usize);
        Ok(Box::pin(stream::iter((!chunk.is_empty()).then_some(Ok(chunk)))))
    }

    async fn writer(&self, path: &StoragePath, offset: u64, _state: Option<&str>) -> Result<Box<dyn StorageWriter>> {
        let existing = match self.lock().get(path.as_str()) {
            Some((b, _)) => b.clone(),
            None if offset == 0 => Bytes::new(),
            None => return Err(not_found(path)),
        };
        if (existing.len() as u64) < offset {
            return Err(StorageError::InvalidOffset { path: path.to_string(), offset, size: existing.len() as u64 });
        }
        let buf = BytesMut::from(&existing[..offset as usize]);
        self.lock().insert(path.as_str().to_owned(), (buf.clone().freeze(), SystemTime::now()));
        Ok(Box::new(MemoryWriter { driver: self.clone(), path: path.clone(), buf }))
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<String>> {
        let c = self.children(path);
        if c.is_empty() {
            return Err(not_found(path));
        }
        Ok(c)
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let prefix = format!("{}/", path.as_str());
        let mut files = self.lock();
        let existed = files.remove(path.as_str()).is_some();
        let keys: Vec<String> =
            files.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).map(|(k, _)| k.clone()).collect();
        if !existed && keys.is_empty() {
            return Err(not_found(path));
        }
        for k in keys {
            files.remove(&k);
        }
        Ok(())
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        let mut files = self.lock();
        let v = files.remove(from.as_str()).ok_or_else(|| not_found(from))?;
        files.insert(to.as_str().to_owned(), v);
        Ok(())
    }
}

struct MemoryWriter {
    driver: MemoryDriver,
    path: StoragePath,
    buf: BytesMut,
}

#[async_trait]
impl StorageWriter for MemoryWriter {
    async fn write(&mut self, chunks: Vec<Bytes>) -> Result<()> {
        for c in chunks {
            self.buf.extend_from_slice(&c);
        }
        self.driver.lock().insert(self.path.as_str().to_owned(), (self.buf.clone().freeze(), SystemTime::now()));
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<u64> {
        Ok(self.buf.len() as u64)
    }

    async fn close(self: Box<Self>) -> Result<Written> {
        Ok(Written { size: self.buf.len() as u64, state: None })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_driver_passes_conformance() {
        crate::conformance::run_all(&super::MemoryDriver::new()).await;
    }
}
