//! The S3-compatible driver: the distribution layout as object keys under an
//! optional root directory in one bucket.
//!
//! Unfinished upload data is an S3 multipart upload of parts (`chunksize`
//! each, or what a closed writer held if at least S3's 5 MiB minimum) plus a
//! tail object (bytes too few for a part yet: only the last part may be small). Its upload id, parts and tail are the
//! state [`StorageWriter::close`] returns, which the registry keeps in its
//! upload row and hands to the next writer, on whichever instance: nothing
//! depends on ListMultipartUploads. [`StorageWriter::commit`] completes the
//! upload into the object at the path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_types::secret::Secret;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::{ByteStream, FileInfo, Result, StorageDriver, StorageError, StoragePath, StorageWriter, Written};

mod client;
use client::{Client, ClientConfig, S3Error};

/// S3 refuses smaller parts (but the last).
pub const MIN_CHUNK_SIZE: usize = 5 << 20;
/// Parts uploaded at once by one writer.
const PARTS_IN_FLIGHT: usize = 2;
/// S3's limit of parts in one multipart upload.
const MAX_PARTS: u32 = 10_000;
/// Keys per DeleteObjects request.
const DELETE_BATCH: usize = 1000;

/// What the driver needs, from `storage.s3` (or `storage.oss`).
#[derive(Clone, Debug)]
pub struct S3Config {
    /// `http[s]://host[:port]`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
    /// Key prefix, without leading or trailing `/`; empty for the bucket root.
    pub root: String,
    pub path_style: bool,
    pub skip_verify: bool,
    /// PEM certificates to trust besides the built-in roots (a private CA).
    pub ca_bundle: Option<Vec<u8>>,
    /// Part size of multipart uploads (at least [`MIN_CHUNK_SIZE`]).
    pub chunk_size: usize,
    /// Objects larger than this are copied in parts of `copy_chunk_size`.
    pub copy_threshold: u64,
    pub copy_chunk_size: u64,
    pub copy_concurrency: usize,
    /// `x-amz-storage-class` of new objects; None leaves the server's default.
    pub storage_class: Option<String>,
    /// Server-side encryption: None, or Some(None) for AES256, or a KMS key id.
    pub encrypt: Option<Option<String>>,
    /// More headers for objects the driver creates (`x-amz-acl`).
    pub extra_headers: Vec<(String, String)>,
    /// Blob reads answer with a presigned URL valid this long.
    pub redirect: Option<Duration>,
    pub user_agent: String,
}

pub struct S3Driver {
    client: Arc<Client>,
    cfg: S3Config,
    /// Headers for objects the driver creates (storage class, encryption).
    create_headers: Arc<Vec<(String, String)>>,
}

fn s3_err(path: &str, e: S3Error) -> StorageError {
    match e {
        S3Error::NotFound(_) => StorageError::NotFound(path.to_owned()),
        other => StorageError::Other(format!("{path}: {other}")),
    }
}

/// The state of unfinished data at a path, as kept between writers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct PartState {
    /// Multipart upload id, once the first full part went up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upload: Option<String>,
    /// Part number, ETag, size.
    #[serde(default)]
    parts: Vec<(u32, String, u64)>,
    /// Key and size of the object holding the bytes after the parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail: Option<(String, u64)>,
}

impl PartState {
    fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.2).sum::<u64>() + self.tail.as_ref().map_or(0, |t| t.1)
    }
}

impl S3Driver {
    pub fn new(cfg: S3Config) -> Result<Self> {
        let endpoint = reqwest::Url::parse(&cfg.endpoint)
            .map_err(|e| StorageError::Other(format!("storage.s3: invalid endpoint {:?}: {e}", cfg.endpoint)))?;
        if endpoint.host_str().is_none() || !matches!(endpoint.scheme(), "http" | "https") {
            return Err(StorageError::Other(format!("storage.s3: endpoint {:?} is not an http(s) URL", cfg.endpoint)));
        }
        if cfg.chunk_size < MIN_CHUNK_SIZE {
            return Err(StorageError::Other(format!("storage.s3: chunksize must be at least {MIN_CHUNK_SIZE}")));
        }
        let client = Client::new(ClientConfig {
            endpoint,
            region: cfg.region.clone(),
            bucket: cfg.bucket.clone(),
            access_key: cfg.access_key.clone(),
            secret_key: cfg.secret_key.clone(),
            session_token: cfg.session_token.clone(),
            path_style: cfg.path_style,
            skip_verify: cfg.skip_verify,
            ca_bundle: cfg.ca_bundle.clone(),
            user_agent: cfg.user_agent.clone(),
        })
        .map_err(StorageError::Other)?;
        let mut create_headers = cfg.extra_headers.clone();
        if let Some(c) = &cfg.storage_class {
            create_headers.push(("x-amz-storage-class".to_owned(), c.clone()));
        }
        match &cfg.encrypt {
            Some(None) => create_headers.push(("x-amz-server-side-encryption".into(), "AES256".into())),
            Some(Some(key)) => {
                create_headers.push(("x-amz-server-side-encryption".into(), "aws:kms".into()));
                create_headers.push(("x-amz-server-side-encryption-aws-kms-key-id".into(), key.clone()));
            }
            None => {}
        }
        Ok(S3Driver { client: Arc::new(client), cfg, create_headers: Arc::new(create_headers) })
    }

    /// Checks that the bucket answers with these credentials.
    pub async fn check(&self) -> Result<()> {
        self.client
            .list(&self.key_prefix(), Some("/"), None, 1)
            .await
            .map(|_| ())
            .map_err(|e| StorageError::Other(format!("bucket {}: {e}", self.cfg.bucket)))
    }

    fn key(&self, p: &StoragePath) -> String {
        if self.cfg.root.is_empty() {
            p.as_str().to_owned()
        } else {
            format!("{}/{}", self.cfg.root, p.as_str())
        }
    }

    fn key_prefix(&self) -> String {
        if self.cfg.root.is_empty() {
            String::new()
        } else {
            format!("{}/", self.cfg.root)
        }
    }

    /// Every key under `prefix` (recursively).
    async fn list_all(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut next = None;
        loop {
            let page = self.client.list(prefix, None, next.as_deref(), 1000).await.map_err(|e| s3_err(prefix, e))?;
            keys.extend(page.objects.into_iter().map(|o| o.key));
            match page.next {
                Some(n) => next = Some(n),
                None => return Ok(keys),
            }
        }
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<()> {
        let batches: Vec<Vec<String>> = keys.chunks(DELETE_BATCH).map(<[String]>::to_vec).collect();
        let mut batches = futures_util::stream::iter(batches)
            .map(|batch| {
                let client = self.client.clone();
                async move { client.delete_objects(&batch).await.map_err(|e| s3_err("delete", e)) }
            })
            .buffer_unordered(4);
        while let Some(r) = batches.next().await {
            r?;
        }
        Ok(())
    }

    /// Copies `from` to `to` on the server, in parts when large.
    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        if size <= self.cfg.copy_threshold {
            return self.client.copy_object(from, to, &self.create_headers).await.map_err(|e| s3_err(from, e));
        }
        let upload = self.client.create_multipart(to, &self.create_headers).await.map_err(|e| s3_err(to, e))?;
        let chunk = self.cfg.copy_chunk_size.max(MIN_CHUNK_SIZE as u64);
        let ranges: Vec<(u32, (u64, u64))> =
            (0..size.div_ceil(chunk)).map(|i| (i as u32 + 1, (i * chunk, ((i + 1) * chunk).min(size) - 1))).collect();
        let res: Result<Vec<(u32, String)>> = futures_util::stream::iter(ranges)
            .map(|(n, range)| {
                let (client, upload) = (self.client.clone(), upload.clone());
                async move {
                    let etag =
                        client.upload_part_copy(to, &upload, n, from, range).await.map_err(|e| s3_err(from, e))?;
                    Ok((n, etag))
                }
            })
            .buffered(self.cfg.copy_concurrency.max(1))
            .try_collect()
            .await;
        let done = match res {
            Ok(parts) => self.client.complete_multipart(to, &upload, &parts).await.map_err(|e| s3_err(to, e)),
            Err(e) => Err(e),
        };
        if done.is_err() {
            let _ = self.client.abort_multipart(to, &upload).await;
        }
        done
    }

    /// The size of the object at `path`.
    async fn object_size(&self, path: &StoragePath) -> Result<u64> {
        match self.client.head_object(&self.key(path)).await {
            Ok(Some((size, _))) => Ok(size),
            Ok(None) => Err(StorageError::NotFound(path.as_str().to_owned())),
            Err(e) => Err(s3_err(path.as_str(), e)),
        }
    }

    /// The first `len` bytes of the object at `key`, read into memory.
    async fn read_prefix(&self, key: &str, len: u64) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let r = self.client.get_object(key, Some((0, Some(len - 1)))).await.map_err(|e| s3_err(key, e))?;
        let data = r.bytes().await.map_err(|e| StorageError::Other(format!("{key}: {e}")))?;
        if data.len() as u64 != len {
            return Err(StorageError::Other(format!("{key}: read {} bytes, expected {len}", data.len())));
        }
        Ok(data)
    }
}

#[async_trait]
impl StorageDriver for S3Driver {
    fn name(&self) -> &'static str {
        "s3"
    }

    async fn get_content(&self, path: &StoragePath) -> Result<Bytes> {
        let key = self.key(path);
        let r = self.client.get_object(&key, None).await.map_err(|e| s3_err(path.as_str(), e))?;
        r.bytes().await.map_err(|e| StorageError::Other(format!("{path}: {e}")))
    }

    async fn put_content(&self, path: &StoragePath, data: Bytes) -> Result<()> {
        self.client.put_object(&self.key(path), data, &self.create_headers).await.map_err(|e| s3_err(path.as_str(), e))
    }

    async fn stat(&self, path: &StoragePath) -> Result<FileInfo> {
        let key = self.key(path);
        if let Some((size, modified)) = self.client.head_object(&key).await.map_err(|e| s3_err(path.as_str(), e))? {
            return Ok(FileInfo { size, modified, is_dir: false });
        }
        let page = self.client.list(&format!("{key}/"), None, None, 1).await.map_err(|e| s3_err(path.as_str(), e))?;
        if page.objects.is_empty() {
            return Err(StorageError::NotFound(path.as_str().to_owned()));
        }
        Ok(FileInfo { size: 0, modified: None, is_dir: true })
    }

    async fn reader(&self, path: &StoragePath, offset: u64, len: Option<u64>) -> Result<ByteStream> {
        let key = self.key(path);
        let not_found = |e| s3_err(path.as_str(), e);
        let empty = || -> ByteStream { Box::pin(futures_util::stream::empty()) };
        if len == Some(0) {
            let size = self.object_size(path).await?;
            if offset > size {
                return Err(StorageError::InvalidOffset { path: path.to_string(), offset, size });
            }
            return Ok(empty());
        }
        let range = (offset > 0 || len.is_some()).then(|| (offset, len.map(|l| offset + l - 1)));
        let r = match self.client.get_object(&key, range).await {
            Ok(r) => r,
            Err(S3Error::RangeNotSatisfiable) => {
                let size = self.object_size(path).await?;
                if offset == size && len.is_none() {
                    return Ok(empty());
                }
                return Err(StorageError::InvalidOffset { path: path.to_string(), offset, size });
            }
            Err(e) => return Err(not_found(e)),
        };
        if range.is_some() {
            // The range must have been honoured (206, from `offset`), and one
            // past the end is answered with what exists: refuse that.
            let content_range = r.headers().get(reqwest::header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
            let parsed = content_range.and_then(|v| {
                let (span, total) = v.strip_prefix("bytes ")?.split_once('/')?;
                Some((span.split_once('-')?.0.parse::<u64>().ok()?, total.parse::<u64>().ok()?))
            });
            match parsed {
                Some((first, _)) if r.status() != reqwest::StatusCode::PARTIAL_CONTENT || first != offset => {
                    return Err(StorageError::Other(format!(
                        "{path}: ranged read from {offset} answered from {first}"
                    )));
                }
                Some((_, size)) if len.is_some_and(|l| offset + l > size) => {
                    return Err(StorageError::InvalidOffset { path: path.to_string(), offset, size });
                }
                Some(_) => {}
                None => return Err(StorageError::Other(format!("{path}: ranged read answered without Content-Range"))),
            }
        }
        let p = path.to_string();
        Ok(Box::pin(r.bytes_stream().map_err(move |e| StorageError::Other(format!("{p}: {e}")))))
    }

    async fn writer(&self, path: &StoragePath, offset: u64, state: Option<&str>) -> Result<Box<dyn StorageWriter>> {
        let key = self.key(path);
        let mut w = S3Writer {
            client: self.client.clone(),
            create_headers: self.create_headers.clone(),
            key: key.clone(),
            chunk_size: self.cfg.chunk_size,
            state: PartState::default(),
            old_tail: None,
            buffer: BytesMut::new(),
            in_flight: JoinSet::new(),
            done_parts: Vec::new(),
            size: offset,
            created_upload: false,
            finished: false,
            prefix: None,
        };
        match state {
            Some(s) => {
                let st: PartState = serde_json::from_str(s)
                    .map_err(|e| StorageError::Other(format!("{path}: unreadable upload state: {e}")))?;
                let parts: u64 = st.parts.iter().map(|p| p.2).sum();
                if st.size() < offset || offset < parts {
                    return Err(StorageError::InvalidOffset { path: path.to_string(), offset, size: st.size() });
                }
                if let Some((tail, _)) = &st.tail {
                    // Bytes of the tail past `offset` are dropped.
                    let tail = self.read_prefix(tail, offset - parts).await?;
                    w.buffer = BytesMut::with_capacity(self.cfg.chunk_size.max(tail.len()));
                    w.buffer.extend_from_slice(&tail);
                }
                w.old_tail = st.tail.clone();
                w.done_parts = st.parts.clone();
                w.state = PartState { tail: None, ..st };
            }
            None if offset == 0 => {}
            None => {
                // Continue a complete object: its first `offset` bytes are
                // taken over when the writer first needs them.
                let size = self.object_size(path).await?;
                if size < offset {
                    return Err(StorageError::InvalidOffset { path: path.to_string(), offset, size });
                }
                w.prefix = Some((offset, size));
            }
        }
        Ok(Box::new(w))
    }

    async fn list(&self, path: &StoragePath) -> Result<Vec<String>> {
        let prefix = format!("{}/", self.key(path));
        let mut names = Vec::new();
        let mut next = None;
        loop {
            let page = self
                .client
                .list(&prefix, Some("/"), next.as_deref(), 1000)
                .await
                .map_err(|e| s3_err(path.as_str(), e))?;
            names.extend(page.objects.iter().filter_map(|o| o.key.strip_prefix(&prefix)).map(str::to_owned));
            names.extend(
                page.prefixes
                    .iter()
                    .filter_map(|p| p.strip_prefix(&prefix))
                    .map(|p| p.trim_end_matches('/').to_owned()),
            );
            match page.next {
                Some(n) => next = Some(n),
                None => break,
            }
        }
        names.retain(|n| !n.is_empty());
        if names.is_empty() {
            return Err(StorageError::NotFound(path.as_str().to_owned()));
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn delete(&self, path: &StoragePath) -> Result<()> {
        let key = self.key(path);
        let mut keys = self.list_all(&format!("{key}/")).await?;
        if self.client.head_object(&key).await.map_err(|e| s3_err(path.as_str(), e))?.is_some() {
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(StorageError::NotFound(path.as_str().to_owned()));
        }
        self.delete_keys(keys).await
    }

    async fn delete_many(&self, paths: &[StoragePath]) -> Result<()> {
        let keys: Vec<String> = paths.iter().map(|p| self.key(p)).collect();
        let lists: Vec<Vec<String>> = futures_util::stream::iter(keys)
            .map(|key| async move {
                let mut keys = self.list_all(&format!("{key}/")).await?;
                keys.push(key);
                Ok::<_, StorageError>(keys)
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        self.delete_keys(lists.into_iter().flatten().collect()).await
    }

    async fn rename(&self, from: &StoragePath, to: &StoragePath) -> Result<()> {
        let (src, dst) = (self.key(from), self.key(to));
        let size = self.object_size(from).await?;
        self.copy(&src, &dst, size).await?;
        self.client.delete_object(&src).await.map_err(|e| s3_err(from.as_str(), e))
    }

    async fn abandon(&self, path: &StoragePath, state: &str) -> Result<()> {
        let st: PartState = serde_json::from_str(state)
            .map_err(|e| StorageError::Other(format!("{path}: unreadable upload state: {e}")))?;
        if let Some(u) = &st.upload {
            self.client.abort_multipart(&self.key(path), u).await.map_err(|e| s3_err(path.as_str(), e))?;
        }
        if let Some((tail, _)) = &st.tail {
            self.client.delete_object(tail).await.map_err(|e| s3_err(path.as_str(), e))?;
        }
        Ok(())
    }

    fn redirect_url(&self, path: &StoragePath) -> Option<String> {
        self.cfg.redirect.map(|ttl| self.client.presign_get(&self.key(path), ttl))
    }
}

struct S3Writer {
    client: Arc<Client>,
    create_headers: Arc<Vec<(String, String)>>,
    key: String,
    chunk_size: usize,
    /// Upload id; parts and tail are filled in when closing.
    state: PartState,
    /// The tail this writer's data started from, removed once replaced.
    old_tail: Option<(String, u64)>,
    buffer: BytesMut,
    in_flight: JoinSet<Result<(u32, String, u64)>>,
    done_parts: Vec<(u32, String, u64)>,
    /// Bytes written in all, from the start of the file.
    size: u64,
    /// Whether the multipart upload was created by this writer (and must be
    /// aborted if it is dropped unfinished).
    created_upload: bool,
    finished: bool,
    /// Bytes of the whole object at the path this writer continues, and the
    /// object's size, until they are taken over.
    prefix: Option<(u64, u64)>,
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.finished || !self.created_upload {
            return;
        }
        // An interrupted writer's own multipart upload is in no state anyone
        // keeps: abort it, or its parts would stay stored.
        if let (Some(upload), Ok(rt)) = (self.state.upload.take(), tokio::runtime::Handle::try_current()) {
            let (client, key) = (self.client.clone(), self.key.clone());
            rt.spawn(async move {
                if let Err(e) = client.abort_multipart(&key, &upload).await {
                    tracing::warn!(%key, error = %e, "could not abort an interrupted multipart upload");
                }
            });
        }
    }
}

impl S3Writer {
    /// Takes over the first bytes of the existing object: whole chunks are
    /// copied on the server as parts, the rest is read into the buffer.
    async fn take_prefix(&mut self) -> Result<()> {
        let Some((offset, _)) = self.prefix.take() else { return Ok(()) };
        let chunk = self.chunk_size as u64;
        let whole = offset / chunk;
        if whole > 0 {
            self.upload_id().await?;
            let upload = self.state.upload.clone().unwrap_or_default();
            for i in 0..whole {
                let n = i as u32 + 1;
                let etag = self
                    .client
                    .upload_part_copy(&self.key, &upload, n, &self.key, (i * chunk, (i + 1) * chunk - 1))
                    .await
                    .map_err(|e| s3_err(&self.key, e))?;
                self.done_parts.push((n, etag, chunk));
            }
        }
        let rest = offset - whole * chunk;
        if rest > 0 {
            let r = self
                .client
                .get_object(&self.key, Some((whole * chunk, Some(offset - 1))))
                .await
                .map_err(|e| s3_err(&self.key, e))?;
            let data = r.bytes().await.map_err(|e| StorageError::Other(format!("{}: {e}", self.key)))?;
            if data.len() as u64 != rest {
                return Err(StorageError::Other(format!("{}: read {} bytes, expected {rest}", self.key, data.len())));
            }
            self.buffer = BytesMut::with_capacity(self.chunk_size);
            self.buffer.extend_from_slice(&data);
        }
        Ok(())
    }

    fn next_part_number(&self) -> u32 {
        (self.done_parts.len() + self.in_flight.len()) as u32 + 1
    }

    async fn upload_id(&mut self) -> Result<String> {
        if let Some(u) = &self.state.upload {
            return Ok(u.clone());
        }
        let u =
            self.client.create_multipart(&self.key, &self.create_headers).await.map_err(|e| s3_err(&self.key, e))?;
        self.state.upload = Some(u.clone());
        self.created_upload = true;
        Ok(u)
    }

    async fn reap_one(&mut self) -> Result<()> {
        if let Some(r) = self.in_flight.join_next().await {
            let part = r.map_err(|e| StorageError::Other(format!("part upload task failed: {e}")))??;
            self.done_parts.push(part);
        }
        Ok(())
    }

    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.reap_one().await?;
        }
        let upload = self.upload_id().await?;
        let n = self.next_part_number();
        if n > MAX_PARTS {
            return Err(StorageError::Other(format!(
                "{}: more than {MAX_PARTS} parts: raise storage.s3.chunksize for blobs this large",
                self.key
            )));
        }
        let (client, key) = (self.client.clone(), self.key.clone());
        self.in_flight.spawn(async move {
            let len = data.len() as u64;
            let etag = client.upload_part(&key, &upload, n, data).await.map_err(|e| s3_err(&key, e))?;
            Ok((n, etag, len))
        });
        Ok(())
    }

    async fn finish_parts(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.reap_one().await?;
        }
        self.done_parts.sort_by_key(|p| p.0);
        Ok(())
    }

    async fn drop_old_tail(&mut self) {
        if let Some((tail, _)) = self.old_tail.take() {
            if let Err(e) = self.client.delete_object(&tail).await {
                tracing::warn!(key = %tail, error = %e, "could not delete a replaced upload tail");
            }
        }
    }
}

#[async_trait]
impl StorageWriter for S3Writer {
    async fn write(&mut self, chunks: Vec<Bytes>) -> Result<()> {
        self.take_prefix().await?;
        for c in chunks {
            self.size += c.len() as u64;
            let mut rest = &c[..];
            while !rest.is_empty() {
                // Each part gets an allocation of its own, exactly its size:
                // a part in flight pins nothing else.
                if self.buffer.capacity() == 0 {
                    self.buffer = BytesMut::with_capacity(self.chunk_size);
                }
                let n = (self.chunk_size - self.buffer.len()).min(rest.len());
                self.buffer.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if self.buffer.len() == self.chunk_size {
                    let part = std::mem::take(&mut self.buffer).freeze();
                    self.send_part(part).await?;
                }
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<u64> {
        if let Some((offset, size)) = self.prefix {
            if offset == size {
                // The object is whole already, and nothing was added.
                self.finished = true;
                return Ok(size);
            }
        }
        self.take_prefix().await?;
        self.finish_parts().await?;
        let last = self.buffer.split().freeze();
        match self.state.upload.clone() {
            None => {
                self.client.put_object(&self.key, last, &self.create_headers).await.map_err(|e| s3_err(&self.key, e))?
            }
            Some(upload) => {
                if !last.is_empty() {
                    self.send_part(last).await?;
                    self.finish_parts().await?;
                }
                let parts: Vec<(u32, String)> = self.done_parts.iter().map(|p| (p.0, p.1.clone())).collect();
                self.client.complete_multipart(&self.key, &upload, &parts).await.map_err(|e| s3_err(&self.key, e))?;
            }
        }
        self.finished = true;
        self.drop_old_tail().await;
        Ok(self.size)
    }

    async fn close(mut self: Box<Self>) -> Result<Written> {
        self.take_prefix().await?;
        // What can be a part (S3's minimum, not a whole chunksize) becomes one,
        // so chunks of 5 MiB or more never pass through a tail object.
        if self.buffer.len() >= MIN_CHUNK_SIZE {
            let part = self.buffer.split().freeze();
            self.send_part(part).await?;
        }
        self.finish_parts().await?;
        let mut state = PartState { upload: self.state.upload.clone(), parts: self.done_parts.clone(), tail: None };
        if !self.buffer.is_empty() {
            let tail = format!("{}.tail-{}", self.key, uuid::Uuid::new_v4().simple());
            let data = self.buffer.split().freeze();
            let len = data.len() as u64;
            self.client.put_object(&tail, data, &[]).await.map_err(|e| s3_err(&tail, e))?;
            state.tail = Some((tail, len));
        }
        // The tail this writer started from stays until the upload's
        // directory goes: the caller may still keep the state naming it.
        self.finished = true;
        let state = serde_json::to_string(&state).map_err(|e| StorageError::Other(e.to_string()))?;
        Ok(Written { size: self.size, state: Some(state) })
    }
}
