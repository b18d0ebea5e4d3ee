//! Blob push and pull workloads over HTTP, as registry clients do them.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use rand::RngCore;
use sha2::Digest as _;

#[derive(Clone)]
pub struct Blob {
    pub data: Bytes,
    pub digest: String,
}

pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// `count` blobs of `size` random bytes, each different.
pub fn make_blobs(count: usize, size: usize) -> Vec<Blob> {
    let mut rng = rand::rng();
    (0..count)
        .map(|_| {
            let mut v = vec![0u8; size];
            rng.fill_bytes(&mut v);
            let digest = digest_of(&v);
            Blob { data: Bytes::from(v), digest }
        })
        .collect()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(64)
        .http1_only()
        .build()
        .unwrap_or_default()
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

fn location(r: &reqwest::Response, base: &str) -> Result<String> {
    let l = r.headers().get("location").context("no Location")?.to_str()?;
    Ok(absolute(base, l))
}

/// Pushes one blob: POST a session, then either PUT the whole body, or PATCH
/// it in `chunk`-byte pieces (following each answer's Location) and PUT.
pub async fn push(c: &reqwest::Client, base: &str, repo: &str, blob: &Blob, chunk: Option<usize>) -> Result<()> {
    let r = c.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await?;
    if r.status() != 202 {
        bail!("POST uploads answered {}", r.status());
    }
    let mut loc = location(&r, base)?;
    match chunk {
        None => {
            let r = c
                .put(with_digest(&loc, &blob.digest))
                .header("content-type", "application/octet-stream")
                .body(blob.data.clone())
                .send()
                .await?;
            if r.status() != 201 {
                bail!("PUT answered {}", r.status());
            }
        }
        Some(size) => {
            let mut start = 0;
            while start < blob.data.len() {
                let end = (start + size).min(blob.data.len());
                let r = c
                    .patch(&loc)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{}-{}", start, end - 1))
                    .body(blob.data.slice(start..end))
                    .send()
                    .await?;
                if r.status() != 202 {
                    bail!("PATCH answered {}", r.status());
                }
                loc = location(&r, base)?;
                start = end;
            }
            let r = c.put(with_digest(&loc, &blob.digest)).send().await?;
            if r.status() != 201 {
                bail!("final PUT answered {}", r.status());
            }
        }
    }
    Ok(())
}

/// Pulls a blob, counting the bytes without keeping them.
pub async fn pull(c: &reqwest::Client, base: &str, repo: &str, blob: &Blob) -> Result<u64> {
    let r = c.get(format!("{base}/v2/{repo}/blobs/{}", blob.digest)).send().await?;
    if r.status() != 200 {
        bail!("GET blob answered {}", r.status());
    }
    let mut n = 0u64;
    let mut s = r.bytes_stream();
    while let Some(chunk) = s.next().await {
        n += chunk?.len() as u64;
    }
    if n != blob.data.len() as u64 {
        bail!("pulled {n} bytes, expected {}", blob.data.len());
    }
    Ok(n)
}

/// Each blob pushed by its own concurrent client; returns MB/s per stream.
pub async fn push_all(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    blobs: &[Blob],
    chunk: Option<usize>,
) -> Result<f64> {
    let start = Instant::now();
    let tasks: Vec<_> = blobs
        .iter()
        .map(|b| {
            let (c, base, repo, b) = (c.clone(), base.to_owned(), repo.to_owned(), b.clone());
            tokio::spawn(async move { push(&c, &base, &repo, &b, chunk).await })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes: usize = blobs.iter().map(|b| b.data.len()).sum();
    Ok(bytes as f64 / 1e6 / secs / blobs.len() as f64)
}

/// Each blob pulled by its own concurrent client; returns MB/s per stream.
pub async fn pull_all(c: &reqwest::Client, base: &str, repo: &str, blobs: &[Blob]) -> Result<f64> {
    let start = Instant::now();
    let tasks: Vec<_> = blobs
        .iter()
        .map(|b| {
            let (c, base, repo, b) = (c.clone(), base.to_owned(), repo.to_owned(), b.clone());
            tokio::spawn(async move { pull(&c, &base, &repo, &b).await })
        })
        .collect();
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(bytes as f64 / 1e6 / secs / blobs.len() as f64)
}

/// `clients` clients each pushing their share of `blobs` one after another;
/// returns pushes per second.
pub async fn push_rate(c: &reqwest::Client, base: &str, repo: &str, blobs: &[Blob], clients: usize) -> Result<f64> {
    let start = Instant::now();
    let per = blobs.len().div_ceil(clients);
    let tasks: Vec<_> = blobs
        .chunks(per)
        .map(|share| {
            let (c, base, repo, share) = (c.clone(), base.to_owned(), repo.to_owned(), share.to_vec());
            tokio::spawn(async move {
                for b in &share {
                    push(&c, &base, &repo, b, None).await?;
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(blobs.len() as f64 / start.elapsed().as_secs_f64())
}

/// Pushes a config and layers and an OCI manifest naming them, under `tag`.
pub async fn push_image(c: &reqwest::Client, base: &str, repo: &str, tag: &str, layers: &[Blob]) -> Result<String> {
    let config =
        Blob { data: Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}"), digest: String::new() };
    let config = Blob { digest: digest_of(&config.data), ..config };
    for b in layers.iter().chain(std::iter::once(&config)) {
        let head = c.head(format!("{base}/v2/{repo}/blobs/{}", b.digest)).send().await?;
        if head.status() != 200 {
            push(c, base, repo, b, None).await?;
        }
    }
    let m = manifest_json(&config, layers, None);
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(m.clone())
        .send()
        .await?;
    if r.status() != 201 {
        bail!("PUT manifest answered {}", r.status());
    }
    Ok(digest_of(&m))
}

pub fn manifest_json(config: &Blob, layers: &[Blob], annotation: Option<&str>) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l.digest, "size": l.data.len()})
        })
        .collect();
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest, "size": config.data.len()},
        "layers": layers,
    });
    if let Some(a) = annotation {
        m["annotations"] = serde_json::json!({"org.example.id": a});
    }
    serde_json::to_vec(&m).unwrap_or_default()
}

/// `blobs.len()` uploads open at once: every client starts its session,
/// waits for all the others to have one, then sends its blob in two chunks
/// and commits. Returns the seconds from the first chunk to the last commit
/// and how many uploads failed.
pub async fn concurrent_uploads(c: &reqwest::Client, base: &str, repo: &str, blobs: &[Blob]) -> Result<(f64, usize)> {
    let ready = std::sync::Arc::new(tokio::sync::Barrier::new(blobs.len() + 1));
    let tasks: Vec<_> = blobs
        .iter()
        .cloned()
        .map(|b| {
            let (c, base, repo, ready) = (c.clone(), base.to_owned(), repo.to_owned(), ready.clone());
            tokio::spawn(async move {
                let started = c.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await;
                ready.wait().await;
                let r = started?;
                if r.status() != 202 {
                    bail!("POST uploads answered {}", r.status());
                }
                let mut loc = location(&r, &base)?;
                let half = b.data.len() / 2;
                for (start, end) in [(0, half), (half, b.data.len())] {
                    let r = c
                        .patch(&loc)
                        .header("content-type", "application/octet-stream")
                        .header("content-range", format!("{}-{}", start, end - 1))
                        .body(b.data.slice(start..end))
                        .send()
                        .await?;
                    if r.status() != 202 {
                        bail!("PATCH answered {}", r.status());
                    }
                    loc = location(&r, &base)?;
                }
                let r = c.put(with_digest(&loc, &b.digest)).send().await?;
                if r.status() != 201 {
                    bail!("final PUT answered {}", r.status());
                }
                Ok(())
            })
        })
        .collect();
    ready.wait().await;
    let start = Instant::now();
    let mut failed = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    Ok((start.elapsed().as_secs_f64(), failed))
}
