//! Fixtures written straight to disk: a distribution-layout store with many
//! repositories (both registries then serve a copy), and an OCI image layout
//! for skopeo.

use std::fs;
use std::path::Path;

use anyhow::Result;
use bytes::Bytes;

use crate::blobs::{digest_of, make_blobs, manifest_json, Blob};

pub fn hex(d: &str) -> &str {
    d.trim_start_matches("sha256:")
}

pub fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p)?;
    }
    fs::write(path, data)?;
    Ok(())
}

pub fn blob_path(root: &Path, digest: &str) -> std::path::PathBuf {
    let h = hex(digest);
    root.join("docker/registry/v2/blobs/sha256").join(&h[..2]).join(h).join("data")
}

/// A store of `repos` repositories with one tag each, plus `bench/many`
/// holding `tags` tags, all in distribution's layout.
pub fn write_listing_store(root: &Path, repos: usize, tags: usize) -> Result<()> {
    let config =
        Blob { data: Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}"), digest: String::new() };
    let config = Blob { digest: digest_of(&config.data), ..config };
    let layer = make_blobs(1, 1024).remove(0);
    write(&blob_path(root, &config.digest), &config.data)?;
    write(&blob_path(root, &layer.digest), &layer.data)?;
    let repos_root = root.join("docker/registry/v2/repositories");
    let add_repo = |name: &str, tag_names: &mut dyn Iterator<Item = String>, id: &str| -> Result<()> {
        let repo = repos_root.join(name);
        let m = manifest_json(&config, std::slice::from_ref(&layer), Some(id));
        let md = digest_of(&m);
        write(&blob_path(root, &md), &m)?;
        for b in [&config.digest, &layer.digest] {
            write(&repo.join("_layers/sha256").join(hex(b)).join("link"), b.as_bytes())?;
        }
        write(&repo.join("_manifests/revisions/sha256").join(hex(&md)).join("link"), md.as_bytes())?;
        for t in tag_names {
            let tdir = repo.join("_manifests/tags").join(&t);
            write(&tdir.join("current/link"), md.as_bytes())?;
            write(&tdir.join("index/sha256").join(hex(&md)).join("link"), md.as_bytes())?;
        }
        Ok(())
    };
    for i in 0..repos {
        add_repo(&format!("bench/r{i:05}"), &mut std::iter::once("latest".to_owned()), &i.to_string())?;
    }
    add_repo("bench/many", &mut (0..tags).map(|t| format!("t{t:05}")), "many")?;
    Ok(())
}

/// An OCI image layout with `layers` random layers of `size` bytes, tagged `latest`.
pub fn write_oci_layout(dir: &Path, layers: usize, size: usize) -> Result<()> {
    let blobs = make_blobs(layers, size);
    let config = Blob {
        data: Bytes::from_static(
            b"{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
        ),
        digest: String::new(),
    };
    let config = Blob { digest: digest_of(&config.data), ..config };
    let m = manifest_json(&config, &blobs, None);
    let md = digest_of(&m);
    let bdir = dir.join("blobs/sha256");
    fs::create_dir_all(&bdir)?;
    for b in blobs.iter().chain(std::iter::once(&config)) {
        fs::write(bdir.join(hex(&b.digest)), &b.data)?;
    }
    fs::write(bdir.join(hex(&md)), &m)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": m.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}
        }]
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}
