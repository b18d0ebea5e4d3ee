//! Pushing and checking generated images over the HTTP API, chunk by chunk
//! and across several registry instances when asked.

use sha2::Digest as _;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Deterministic bytes that differ per seed.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(300)).build().expect("client")
}

/// Uploads `data` in chunks of `chunk` bytes (POST, PATCH..., PUT), sending
/// request i to `bases[i % bases.len()]`: any instance continues the upload.
pub async fn upload_chunked(
    c: &reqwest::Client,
    bases: &[&str],
    repo: &str,
    data: &[u8],
    chunk: usize,
) -> Result<String, String> {
    let d = digest_of(data);
    let mut i = 0;
    let mut next_base = || {
        let b = bases[i % bases.len()];
        i += 1;
        b
    };
    let r = c.post(format!("{}/v2/{repo}/blobs/uploads/", next_base())).send().await.map_err(|e| e.to_string())?;
    if r.status() != 202 {
        return Err(format!("start upload: {}", r.status()));
    }
    let location = |r: &reqwest::Response| -> Result<String, String> {
        let l = r.headers().get("location").and_then(|v| v.to_str().ok()).ok_or("no Location")?;
        // Relative or absolute: keep the path and query, for any instance.
        Ok(match l.find("/v2/") {
            Some(p) => l[p..].to_owned(),
            None => return Err(format!("odd Location {l}")),
        })
    };
    let mut loc = location(&r)?;
    let mut offset = 0usize;
    for part in data.chunks(chunk.max(1)) {
        let r = c
            .patch(format!("{}{loc}", next_base()))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{}-{}", offset, offset + part.len() - 1))
            .body(part.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != 202 {
            return Err(format!("chunk at {offset}: {} {}", r.status(), r.text().await.unwrap_or_default()));
        }
        loc = location(&r)?;
        offset += part.len();
    }
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c.put(format!("{}{loc}{sep}digest={d}", next_base())).send().await.map_err(|e| e.to_string())?;
    if r.status() != 201 {
        return Err(format!("finish upload: {} {}", r.status(), r.text().await.unwrap_or_default()));
    }
    Ok(d)
}

/// An image pushed by [`push_generated_image`].
#[derive(Debug, Clone)]
pub struct PushedImage {
    pub repo: String,
    pub tag: String,
    pub manifest: String,
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// Pushes an image of `layers` generated layers of `size` bytes (seeded by
/// `seed`) and a config, uploading in `chunk`-byte chunks across `bases`.
#[allow(clippy::too_many_arguments)]
pub async fn push_generated_image(
    c: &reqwest::Client,
    bases: &[&str],
    repo: &str,
    tag: &str,
    seed: u64,
    layers: usize,
    size: usize,
    chunk: usize,
) -> Result<PushedImage, String> {
    let mut blobs = Vec::new();
    for l in 0..layers {
        let data = seeded_bytes(seed * 1000 + l as u64, size);
        let d = upload_chunked(c, bases, repo, &data, chunk).await?;
        blobs.push((d, data));
    }
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let cd = upload_chunked(c, bases, repo, &config, chunk).await?;
    let layer_json: Vec<String> = blobs
        .iter()
        .map(|(d, b)| {
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{}}}"#, b.len())
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        layer_json.join(",")
    );
    blobs.push((cd, config));
    let manifest = put_manifest(c, bases[bases.len() - 1], repo, tag, OCI_MANIFEST, &manifest).await?;
    Ok(PushedImage { repo: repo.to_owned(), tag: tag.to_owned(), manifest, blobs })
}

/// PUTs a manifest; returns its digest.
pub async fn put_manifest(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &str,
) -> Result<String, String> {
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 201 {
        return Err(format!("manifest {repo}:{reference}: {} {}", r.status(), r.text().await.unwrap_or_default()));
    }
    Ok(digest_of(body.as_bytes()))
}

/// A small runtime for tests that drive async clients from a plain test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Pulls `img` from `base` (following blob redirects) and checks every byte.
pub async fn check_image(c: &reqwest::Client, base: &str, img: &PushedImage) -> Result<(), String> {
    let r = c
        .get(format!("{base}/v2/{}/manifests/{}", img.repo, img.tag))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("manifest {}:{}: {}", img.repo, img.tag, r.status()));
    }
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    if digest_of(&body) != img.manifest {
        return Err(format!("manifest {}:{} changed", img.repo, img.tag));
    }
    for (d, data) in &img.blobs {
        let r = c.get(format!("{base}/v2/{}/blobs/{d}", img.repo)).send().await.map_err(|e| e.to_string())?;
        if r.status() != 200 {
            return Err(format!("blob {d}: {}", r.status()));
        }
        let got = r.bytes().await.map_err(|e| e.to_string())?;
        if got.len() != data.len() || digest_of(&got) != *d {
            return Err(format!("blob {d}: {} bytes read, content differs", got.len()));
        }
    }
    Ok(())
}

/// Queues an administration job (`POST <base><path>`), expects `202` with its
/// status URL, and follows it to its end: the report of a job done, or a
/// panic naming the error of one that failed.
pub async fn run_job(c: &reqwest::Client, base: &str, path: &str, auth: Option<(&str, &str)>) -> serde_json::Value {
    let with = |r: reqwest::RequestBuilder| match auth {
        Some((u, p)) => r.basic_auth(u, Some(p)),
        None => r,
    };
    let r = with(c.post(format!("{base}{path}"))).send().await.expect("queue a job");
    assert_eq!(r.status(), 202, "{path}");
    let status = r.headers().get("location").expect("status URL").to_str().expect("ascii").to_owned();
    // Bounded: two minutes at most, on a slow machine.
    for _ in 0..1200 {
        let job: serde_json::Value = with(c.get(&status)).send().await.expect("job").json().await.expect("job json");
        match job["state"].as_str() {
            Some("done") => return job["result"].clone(),
            Some("failed") => panic!("{path}: the job failed: {job}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    panic!("{path}: the job did not finish");
}
