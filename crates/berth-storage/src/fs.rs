//! Filesystem driver. Durable writes go to a temporary file in `<root>/_berth/tmp`
//! (same filesystem), are fsynced, renamed into place, and the directory is
//! fsynced, so a crash leaves either the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;

use crate::{ByteStream, FileInfo, Result, StorageDriver, StorageError, StoragePath, StorageWriter, Written};

/// Bytes read at a time when streaming a file out (measured: larger reads
/// beat memory-mapped windows here, whose page-table work costs more than
/// the copy it saves).
const READ_CHUNK: u64 = 2 * 1024 * 1024;
/// Threads one `delete_many` spreads its deletions over.
const DELETE_THREADS: usize = 8;
/// Temporary files older than this are leftovers of a crash.
const STALE_TMP: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct FsDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    tmp: PathBuf,
    /// Free bytes upload data never takes: the metadata database, links,
    /// manifests and deletions still have room on a full disk.
    reserve: u64,
}

/// The reserve when none is configured: 2 % of the filesystem, at most 64 MiB.
fn default_reserve(root: &Path) -> u64 {
    match rustix::fs::statvfs(root) {
        Ok(st) => (st.f_blocks.saturating_mul(st.f_frsize) / 50).min(64 << 20),
        Err(_) => 64 << 20,
    }
}

impl Inner {
    /// Refuses more upload data when the filesystem is down to its reserve.
    fn check_space(&self) -> Result<()> {
        let st = match rustix::fs::statvfs(&self.root) {
            Ok(st) => st,
            // A filesystem that cannot say is not refused for it.
            Err(_) => return Ok(()),
        };
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < self.reserve {
            return Err(StorageError::Full(format!(
                "{free} bytes free on the filesystem of {}, below the {} kept for the metadata and deletions \
                 (storage.filesystem.reserve); delete images and collect garbage to make room",
                self.root.display(),
                self.reserve
            )));
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StorageError::Other(format!("blocking task failed: {e}")))?
}

impl FsDriver {
    /// Opens (creating if needed) a store rooted at `root`, and removes
    /// temporary files a crash may have left.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        Self::with_reserve(root, None)
    }

    /// As [`FsDriver::new`], keeping `reserve` bytes free of upload data
    /// (default: 2 % of the filesystem, at most 64 MiB).
    pub fn with_reserve(root: impl Into<PathBuf>, reserve: Option<u64>) -> io::Result<Self> {
        let root = root.into();
        let tmp = root.join("_berth").join("tmp");
        fs::create_dir_all(&tmp)?;
        if let Ok(entries) = fs::read_dir(&tmp) {
            let now = SystemTime::now();
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|m| now.duration_since(m).unwrap_or_default() > STALE_TMP)
                    .unwrap_or(false);
                if old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let reserve = reserve.unwrap_or_else(|| default_reserve(&root));
        Ok(FsDriver { inner: Arc::new(Inner { root, tmp, reserve }) })
    }

    /// The bytes kept free of upload data.
    pub fn reserve(&self) -> u64 {
        self.inner.reserve
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn full(&self, p: &StoragePath) -> PathBuf {
        self.inner.root.join(p.as_str())
    }
}

/// Creates `dir` and any missing ancestors, fsyncing each parent whose entry
/// was created so the new directories survive a crash.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent)?;
        match fs::create_dir(dir) {
            Ok(()) => fsync_dir(parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_all_vectored(f: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().filter(|c| !c.is_empty()).map(|c| IoSlice::new(c)).collect();
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let n = f.write_vectored(bufs)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

impl Inner {
    fn put_content(&self, full: &Path, data: &[u8]) -> io::Result<()> {
        let dir = full.parent().ok_or_else(|| io::Error::other("path has no parent"))?;
        ensure_dir(dir)?;
        let tmp = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let res = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_data()?;
            fs::rename(&tmp, full)?;
            fsync_dir(dir)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }
}

#[async_trait]
impl StorageDriver for FsDriver {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        let full = self.full(path);
        let p = path.clone();
        blocking(move || fs::read(&full).map(Bytes::from).map_err(|e| StorageError::io(&p, e))).await
    }

    async fn put_content(&self, path: &StoragePath, data: Bytes) -> Result<()> {
        let full = self.full(path);
        let inner = self.inner.clone();
        let p = path.clone();
        blocking(move || inner.put_content(&full, &data).map_err(|e| StorageError::io(&p, e))).await
    }

    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        let full = self.full(path);
        let p = path.clone();
        blocking(move || {
            let m = fs::metadata(&full).map_err(|e| StorageError::io(&p, e))?;
            Ok(FileInfo { size: if m.is_dir() { 0 } else { m.len() }, modified: m.modified().ok(), is_dir: m.is_dir() })
        })
        .await
    }

    async fn reader(&self, path: &StoragePath, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let full = self.full(path);
        let p = path.clone();
        let (file, start, remaining) = blocking(move || {
            let f = File::open(&full).map_err(|e| StorageError::io(&p, e))?;
            let size = f.metadata().map_err(|e| StorageError::io(&p, e))?.len();
            let end = match len {
                Some(l) => offset.saturating_add(l),
                None => size,
            };
            if offset > size || end > size {
                return Err(StorageError::InvalidOffset { path: p.to_string(), offset: end.max(offset), size });
            }
            Ok((f, offset, end - offset))
        })
        .await?;
        Ok(read_stream(file, start, remaining, path.clone()))
    }

    async fn writer(&self, path: &StoragePath, offset: u64, _state: Option<&str>) -> Result<Box<dyn StorageWriter>> {
        let full = self.full(path);
        let p = path.clone();
        let inner = self.inner.clone();
        let file = blocking(move || {
            inner.check_space()?;
            let open = || OpenOptions::new().write(true).create(offset == 0).truncate(false).open(&full);
            let mut f = match open() {
                Err(e) if e.kind() == io::ErrorKind::NotFound && offset == 0 => {
                    let dir = full.parent().ok_or_else(|| StorageError::Other("path has no parent".into()))?;
                    ensure_dir(dir).map_err(|e| StorageError::io(&p, e))?;
                    open()
                }
                other => other,
            }
            .map_err(|e| StorageError::io(&p, e))?;
            let size = f.metadata().map_err(|e| StorageError::io(&p, e))?.len();
            if size < offset {
                return Err(StorageError::InvalidOffset { path: p.to_string(), offset, size });
            }
            if size > offset {
                f.set_len(offset).map_err(|e| StorageError::io(&p, e))?;
            }
            f.seek(SeekFrom::Start(offset)).map_err(|e| StorageError::io(&p, e))?;
            Ok(f)
        })
        .await?;
        Ok(Box::new(FsWriter {
            file: Some(file),
            path: path.clone(),
            size: offset,
            synced: offset,
            syncing: None,
            inner: self.inner.clone(),
            checked: offset,
        }))
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<String>> {
        let full = self.full(path);
        let p = path.clone();
        blocking(move || {
            let rd = fs::read_dir(&full).map_err(|e| StorageError::io(&p, e))?;
            let mut names = Vec::new();
            for e in rd {
                let e = e.map_err(|e| StorageError::io(&p, e))?;
                if let Ok(n) = e.file_name().into_string() {
                    names.push(n);
                }
            }
            names.sort_unstable();
            Ok(names)
        })
        .await
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let full = self.full(path);
        let p = path.clone();
        blocking(move || {
            let m = fs::symlink_metadata(&full).map_err(|e| StorageError::io(&p, e))?;
            let r = if m.is_dir() { fs::remove_dir_all(&full) } else { fs::remove_file(&full) };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&p, e)),
            }
            if let Some(dir) = full.parent() {
                fsync_dir(dir).map_err(|e| StorageError::io(&p, e))?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_many(&self, paths: &[StoragePath]) -> Result<()> {
        // Unlinking waits on the filesystem's journal far more than on the
        // CPU, so several threads at once go several times faster.
        let per_task = paths.len().div_ceil(DELETE_THREADS).max(1);
        let tasks: Vec<_> = paths
            .chunks(per_task)
            .map(|chunk| {
                let jobs: Vec<(PathBuf, StoragePath)> = chunk.iter().map(|p| (self.full(p), p.clone())).collect();
                blocking(move || {
                    for (full, p) in jobs {
                        let r = match fs::symlink_metadata(&full) {
                            Ok(m) if m.is_dir() => fs::remove_dir_all(&full),
                            Ok(_) => fs::remove_file(&full),
                            Err(e) => Err(e),
                        };
                        match r {
                            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(StorageError::io(&p, e)),
                            _ => {}
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for r in futures_util::future::join_all(tasks).await {
            r?;
        }
        Ok(())
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        let src = self.full(from);
        let dst = self.full(to);
        let (pf, pt) = (from.clone(), to.clone());
        blocking(move || {
            if !src.exists() {
                return Err(StorageError::NotFound(pf.to_string()));
            }
            let dir = dst.parent().ok_or_else(|| StorageError::Other("path has no parent".into()))?;
            ensure_dir(dir).map_err(|e| StorageError::io(&pt, e))?;
            fs::rename(&src, &dst).map_err(|e| StorageError::io(&pf, e))?;
            fsync_dir(dir).map_err(|e| StorageError::io(&pt, e))
        })
        .await
    }
}

/// Streams `[offset, offset + len)` in chunks read on the blocking pool, one
/// chunk ahead of the consumer, without holding a thread between chunks.
/// Memory stays at two chunks per stream whatever the blob size.
fn read_stream(file: File, offset: u64, len: u64, path: StoragePath) -> ByteStream {
    type Pending = tokio::task::JoinHandle<(File, io::Result<Bytes>)>;
    fn spawn_read(file: File, offset: u64, len: u64) -> Pending {
        tokio::task::spawn_blocking(move || {
            let res = read_chunk(&file, offset, len as usize);
            (file, res)
        })
    }
    let end = offset + len;
    let chunk = move |at: u64| READ_CHUNK.min(end - at);
    let first = (len > 0).then(|| spawn_read(file, offset, chunk(offset)));
    let state = (first, offset, path);
    Box::pin(stream::unfold(state, move |(pending, at, path)| async move {
        let pending = pending?;
        let (file, res) = match pending.await {
            Ok(r) => r,
            Err(e) => return Some((Err(StorageError::Other(format!("read task failed: {e}"))), (None, end, path))),
        };
        match res {
            Ok(bytes) => {
                let at = at + bytes.len() as u64;
                let next = (at < end).then(|| spawn_read(file, at, chunk(at)));
                Some((Ok(bytes), (next, at, path)))
            }
            Err(e) => Some((Err(StorageError::io(&path, e)), (None, end, path))),
        }
    }))
}

/// Reads exactly `len` bytes at `offset` into a pooled buffer. `read_to_end`
/// fills the buffer's spare capacity directly, so there is no zeroing pass.
fn read_chunk(mut file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    use std::io::Read;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = pool::take(len);
    file.take(len as u64).read_to_end(&mut buf.vec)?;
    if buf.vec.len() < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while reading"));
    }
    Ok(Bytes::from_owner(buf))
}

/// Read buffers are reused instead of freed: buffers of this size, allocated
/// on one thread and freed on another, otherwise pile up in the allocator's
/// per-thread arenas and raise resident memory far above what is in use.
mod pool {
    use std::sync::Mutex;

    use super::READ_CHUNK;

    /// Idle buffers kept for reuse; more than this are freed.
    const MAX_IDLE: usize = 8;

    static IDLE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

    pub(super) struct Buf {
        pub(super) vec: Vec<u8>,
    }

    impl AsRef<[u8]> for Buf {
        fn as_ref(&self) -> &[u8] {
            &self.vec
        }
    }

    impl Drop for Buf {
        fn drop(&mut self) {
            let mut v = std::mem::take(&mut self.vec);
            if v.capacity() != READ_CHUNK as usize {
                return;
            }
            v.clear();
            let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(v);
            }
        }
    }

    /// An empty buffer that holds at least `len` bytes.
    pub(super) fn take(len: usize) -> Buf {
        if len == READ_CHUNK as usize {
            if let Some(v) = IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                return Buf { vec: v };
            }
        }
        Buf { vec: Vec::with_capacity(len) }
    }
}

struct FsWriter {
    file: Option<File>,
    path: StoragePath,
    size: u64,
    // Size when the last background sync started, and that sync.
    synced: u64,
    syncing: Option<tokio::task::JoinHandle<io::Result<()>>>,
    inner: Arc<Inner>,
    // Size when free space was last looked at.
    checked: u64,
}

/// Free space is looked at again after this many bytes of upload data.
const SPACE_STEP: u64 = 4 * 1024 * 1024;

/// A background fdatasync starts every this many bytes, so the disk writes
/// while the body still arrives and the final fsync has little left to do.
const SYNC_STEP: u64 = 16 * 1024 * 1024;
/// A chunk at least this large starts a background sync when it is closed.
const CLOSE_SYNC_MIN: u64 = 4 * 1024 * 1024;

#[async_trait]
impl StorageWriter for FsWriter {
    async fn write(&mut self, chunks: Vec<Bytes>) -> Result<()> {
        let n: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if self.size.saturating_add(n) - self.checked >= SPACE_STEP {
            self.inner.check_space()?;
            self.checked = self.size;
        }
        let mut file = self.file.take().ok_or_else(|| StorageError::Other("writer already failed".into()))?;
        let (file, res) = tokio::task::spawn_blocking(move || {
            let r = write_all_vectored(&mut file, &chunks);
            (file, r)
        })
        .await
        .map_err(|e| StorageError::Other(format!("write task failed: {e}")))?;
        res.map_err(|e| StorageError::io(&self.path, e))?;
        self.size += n;
        let idle = self.syncing.as_ref().is_none_or(|h| h.is_finished());
        if idle && self.size - self.synced >= SYNC_STEP {
            if let Some(done) = self.syncing.take() {
                self.finish_sync(done).await?;
            }
            // A second handle on the same file: syncing it flushes what was written so far.
            if let Ok(dup) = file.try_clone() {
                self.syncing = Some(tokio::task::spawn_blocking(move || dup.sync_data()));
                self.synced = self.size;
            }
        }
        self.file = Some(file);
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<u64> {
        if let Some(h) = self.syncing.take() {
            self.finish_sync(h).await?;
        }
        let file = self.file.take().ok_or_else(|| StorageError::Other("writer already failed".into()))?;
        let size = self.size;
        let p = self.path.clone();
        blocking(move || file.sync_data().map_err(|e| StorageError::io(&p, e))).await?;
        Ok(size)
    }
    async fn close(mut self: Box<Self>) -> Result<Written> {
        // A background sync still running finishes on its own.
        self.syncing.take();
        let file = self.file.take().ok_or_else(|| StorageError::Other("writer already failed".into()))?;
        // Unsynced data of a large chunk goes to disk in the background, so
        // the commit after the last chunk has little left to wait for.
        if self.size - self.synced >= CLOSE_SYNC_MIN {
            drop(tokio::task::spawn_blocking(move || file.sync_data()));
        }
        Ok(Written { size: self.size, state: None })
    }
}

impl FsWriter {
    async fn finish_sync(&self, h: tokio::task::JoinHandle<io::Result<()>>) -> Result<()> {
        h.await
            .map_err(|e| StorageError::Other(format!("sync task failed: {e}")))?
            .map_err(|e| StorageError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn filesystem_driver_passes_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let d = FsDriver::new(dir.path()).unwrap();
        crate::conformance::run_all(&d).await;
    }

    #[tokio::test]
    async fn upload_data_leaves_the_reserve_free() {
        let dir = tempfile::tempdir().unwrap();
        let free = rustix::fs::statvfs(dir.path()).map(|s| s.f_bavail * s.f_frsize).unwrap();
        let d = FsDriver::with_reserve(dir.path(), Some(free.saturating_add(1 << 30))).unwrap();
        let repo = berth_types::RepoName::parse("a").unwrap();
        let p = crate::layout::upload_data(&repo, &uuid::Uuid::new_v4());
        let e = d.writer(&p, 0, None).await.err().expect("refused");
        assert!(e.is_full() && e.to_string().contains("storage.filesystem.reserve"), "{e}");
        // Small files (links, manifests, the metadata's neighbours) still go in.
        let digest = berth_types::Digest::of_bytes(b"l");
        d.put_content(&crate::layout::layer_link(&repo, &digest), Bytes::from_static(b"l")).await.unwrap();
        let d = FsDriver::with_reserve(dir.path(), Some(0)).unwrap();
        let mut w = d.writer(&p, 0, None).await.unwrap();
        w.write(vec![Bytes::from(vec![1u8; 5 << 20])]).await.unwrap();
        assert_eq!(w.commit().await.unwrap(), 5 << 20);
    }

    #[tokio::test]
    async fn files_land_in_distribution_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = FsDriver::new(dir.path()).unwrap();
        let digest = berth_types::Digest::of_bytes(b"x");
        d.put_content(&crate::layout::blob_data(&digest), Bytes::from_static(b"x")).await.unwrap();
        let on_disk = dir.path().join("docker/registry/v2/blobs/sha256").join(&digest.hex()[..2]).join(digest.hex());
        assert_eq!(fs::read(on_disk.join("data")).unwrap(), b"x");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path().join("_berth/tmp")).unwrap().count(), 0);
    }
}
