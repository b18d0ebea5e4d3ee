use std::sync::Arc;

use berth_storage::fs::FsDriver;
use berth_storage::layout;
use berth_types::{Reference, Tag};
use futures_util::stream;

use super::*;

struct Env {
    dir: tempfile::TempDir,
    reg: Registry,
}

async fn open_at(dir: &std::path::Path, config: RegistryConfig) -> Registry {
    let storage = Arc::new(FsDriver::new(dir.join("store")).unwrap());
    let (meta, _) = Metadata::open_sqlite(&dir.join("meta.sqlite")).await.unwrap();
    Registry::new(storage, meta, config)
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let reg =
        open_at(dir.path(), RegistryConfig { delete_enabled: true, read_only: false, ..Default::default() }).await;
    Env { dir, reg }
}

fn body(parts: &[&[u8]]) -> BodyStream {
    let v: Vec<Result<Bytes, io::Error>> = parts.iter().map(|p| Ok(Bytes::copy_from_slice(p))).collect();
    Box::pin(stream::iter(v))
}

fn name(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

async fn push_blob(reg: &Registry, repo: &RepoName, data: &[u8]) -> Digest {
    let d = Digest::of_bytes(data);
    reg.put_blob(&Caller::internal("test"), repo, &d, Some(data.len() as u64), body(&[data])).await.unwrap();
    d
}

fn image_manifest(config: &Digest, config_size: usize, layers: &[(&Digest, usize)]) -> Bytes {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, s)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{s}}}"#))
        .collect();
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{}]}}"#,
        berth_types::media::OCI_MANIFEST,
        layers.join(",")
    ))
}

#[tokio::test]
async fn chunked_upload_resumes_after_restart_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let repo = name("team/app");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let id = {
        let reg = open_at(dir.path(), RegistryConfig::default()).await;
        let up = reg.start_upload(&repo).await.unwrap();
        let st = reg
            .append_upload(&repo, &up.id, Some(ChunkRange { start: 0, end: 99_999 }), None, body(&[&data[..100_000]]))
            .await
            .unwrap();
        assert_eq!(st.size, 100_000);
        reg.metadata().close().await;
        up.id
    };
    // A new process continues the same upload.
    let reg = open_at(dir.path(), RegistryConfig::default()).await;
    assert_eq!(reg.upload_status(&repo, &id).await.unwrap().size, 100_000);
    let err = reg
        .append_upload(&repo, &id, Some(ChunkRange { start: 0, end: 99 }), None, body(&[&data[..100]]))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::RangeInvalid { size: 100_000 }), "{err:?}");
    reg.append_upload(&repo, &id, None, None, body(&[&data[100_000..200_000]])).await.unwrap();
    let digest = Digest::of_bytes(&data);
    let info = reg
        .complete_upload(&Caller::internal("test"), &repo, &id, &digest, None, None, Some(body(&[&data[200_000..]])))
        .await
        .unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(reg.stat_blob(&repo, &digest).await.unwrap().size, data.len() as u64);
    let stored = std::fs::read(
        dir.path()
            .join("store/docker/registry/v2/blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex())
            .join("data"),
    )
    .unwrap();
    assert_eq!(stored, data);
    assert!(matches!(reg.upload_status(&repo, &id).await, Err(RegistryError::BlobUploadUnknown)));
    let link = dir
        .path()
        .join("store/docker/registry/v2/repositories/team/app/_layers/sha256")
        .join(digest.hex())
        .join("link");
    assert_eq!(std::fs::read_to_string(link).unwrap(), digest.as_str());
}

#[tokio::test]
async fn a_failed_chunk_leaves_the_upload_where_it_was() {
    let e = env().await;
    let repo = name("r");
    let up = e.reg.start_upload(&repo).await.unwrap();
    e.reg.append_upload(&repo, &up.id, None, None, body(&[b"hello "])).await.unwrap();
    let failing: BodyStream = Box::pin(stream::iter(vec![
        Ok(Bytes::from_static(b"garbage that")),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "client went away")),
    ]));
    assert!(e.reg.append_upload(&repo, &up.id, None, None, failing).await.is_err());
    assert_eq!(e.reg.upload_status(&repo, &up.id).await.unwrap().size, 6);
    // A declared length that the body does not match is refused too.
    let short = e.reg.append_upload(&repo, &up.id, Some(ChunkRange { start: 6, end: 20 }), None, body(&[b"abc"])).await;
    assert!(matches!(short, Err(RegistryError::SizeInvalid(_))), "{short:?}");
    let d = Digest::of_bytes(b"hello world");
    e.reg
        .complete_upload(&Caller::internal("test"), &repo, &up.id, &d, None, None, Some(body(&[b"world"])))
        .await
        .unwrap();
    let got = e.reg.read_blob(&d, 0, 11).await.unwrap();
    let bytes: Vec<Bytes> = futures_util::TryStreamExt::try_collect(got).await.unwrap();
    assert_eq!(bytes.concat(), b"hello world");
}

#[tokio::test]
async fn digest_mismatch_cancels_and_stores_nothing() {
    let e = env().await;
    let repo = name("r");
    let wrong = Digest::of_bytes(b"other");
    let err = e.reg.put_blob(&Caller::internal("test"), &repo, &wrong, None, body(&[b"content"])).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestInvalid(_)));
    assert!(matches!(e.reg.stat_blob(&repo, &wrong).await, Err(RegistryError::BlobUnknown)));
    let actual = Digest::of_bytes(b"content");
    assert!(matches!(e.reg.stat_blob(&repo, &actual).await, Err(RegistryError::BlobUnknown)));
    assert!(!e.dir.path().join("store/docker/registry/v2/blobs").exists(), "no blob data written");
    let uploads = e.dir.path().join("store/docker/registry/v2/repositories/r/_uploads");
    assert_eq!(std::fs::read_dir(uploads).map(|d| d.count()).unwrap_or(0), 0);
}

#[tokio::test]
async fn empty_blob_can_be_uploaded() {
    let e = env().await;
    let repo = name("r");
    let up = e.reg.start_upload(&repo).await.unwrap();
    let d = Digest::of_bytes(b"");
    e.reg.complete_upload(&Caller::internal("test"), &repo, &up.id, &d, None, Some(0), None).await.unwrap();
    assert_eq!(e.reg.stat_blob(&repo, &d).await.unwrap().size, 0);
}

#[tokio::test]
async fn mount_links_only_blobs_the_source_has() {
    let e = env().await;
    let (a, b) = (name("a"), name("b"));
    let d = push_blob(&e.reg, &a, b"layer").await;
    assert!(e.reg.mount_blob(&Caller::internal("test"), &b, &name("c"), &d).await.unwrap().is_none());
    assert_eq!(e.reg.mount_blob(&Caller::internal("test"), &b, &a, &d).await.unwrap(), Some(BlobInfo { size: 5 }));
    assert_eq!(e.reg.stat_blob(&b, &d).await.unwrap().size, 5);
}

#[tokio::test]
async fn manifests_round_trip_byte_exact_and_need_their_blobs() {
    let e = env().await;
    let repo = name("app");
    let config = push_blob(&e.reg, &repo, b"{}").await;
    let missing = Digest::of_bytes(b"missing layer");
    let m = image_manifest(&config, 2, &[(&missing, 13)]);
    let tag = Reference::parse("v1").unwrap();
    let err = e
        .reg
        .put_manifest(&Caller::internal("test"), &repo, &tag, Some(berth_types::media::OCI_MANIFEST), m)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::ManifestBlobUnknown(ref d) if *d == missing), "{err:?}");
    assert!(!e.dir.path().join("store/docker/registry/v2/repositories/app/_manifests").exists());

    let layer = push_blob(&e.reg, &repo, b"missing layer").await;
    let m = image_manifest(&config, 2, &[(&layer, 13)]);
    let res = e.reg.put_manifest(&Caller::internal("test"), &repo, &tag, None, m.clone()).await.unwrap();
    assert_eq!(res.digest, Digest::of_bytes(&m));
    let got = e.reg.get_manifest(&Caller::internal("test"), &repo, &tag).await.unwrap();
    assert_eq!(got.content, m);
    assert_eq!(got.meta.media_type, berth_types::media::OCI_MANIFEST);
    let by_digest =
        e.reg.get_manifest(&Caller::internal("test"), &repo, &Reference::Digest(res.digest.clone())).await.unwrap();
    assert_eq!(by_digest.content, m);

    // Wrong digest in the URL.
    let err = e
        .reg
        .put_manifest(&Caller::internal("test"), &repo, &Reference::Digest(config.clone()), None, m.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestInvalid(_)));

    // Deleting the tag untags only.
    e.reg.delete_manifest(&Caller::internal("test"), &repo, &tag).await.unwrap();
    assert!(matches!(
        e.reg.get_manifest(&Caller::internal("test"), &repo, &tag).await,
        Err(RegistryError::ManifestUnknown)
    ));
    e.reg.get_manifest(&Caller::internal("test"), &repo, &Reference::Digest(res.digest.clone())).await.unwrap();
    e.reg.delete_manifest(&Caller::internal("test"), &repo, &Reference::Digest(res.digest.clone())).await.unwrap();
    assert!(matches!(
        e.reg.get_manifest(&Caller::internal("test"), &repo, &Reference::Digest(res.digest)).await,
        Err(RegistryError::ManifestUnknown)
    ));
}

#[tokio::test]
async fn deletes_and_writes_obey_the_switches() {
    let dir = tempfile::tempdir().unwrap();
    let reg =
        open_at(dir.path(), RegistryConfig { delete_enabled: false, read_only: false, ..Default::default() }).await;
    let repo = name("r");
    let d = push_blob(&reg, &repo, b"x").await;
    assert!(matches!(reg.delete_blob(&Caller::internal("test"), &repo, &d).await, Err(RegistryError::Unsupported(_))));
    reg.metadata().close().await;
    let reg = open_at(dir.path(), RegistryConfig { delete_enabled: true, read_only: true, ..Default::default() }).await;
    assert!(matches!(reg.start_upload(&repo).await, Err(RegistryError::ReadOnly)));
    assert!(matches!(reg.delete_blob(&Caller::internal("test"), &repo, &d).await, Err(RegistryError::ReadOnly)));
    assert_eq!(reg.stat_blob(&repo, &d).await.unwrap().size, 1, "reads still work");
}

#[tokio::test]
async fn concurrent_pushes_of_the_same_blob_and_tag_stay_consistent() {
    let e = env().await;
    let repo = name("shared");
    let data = Bytes::from(vec![7u8; 2_000_000]);
    let digest = Digest::of_bytes(&data);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let reg = e.reg.clone();
        let repo = repo.clone();
        let data = data.clone();
        let digest = digest.clone();
        tasks.push(tokio::spawn(async move {
            let parts: Vec<Result<Bytes, io::Error>> =
                data.chunks(100_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            reg.put_blob(&Caller::internal("test"), &repo, &digest, None, Box::pin(stream::iter(parts))).await.unwrap();
            let m = image_manifest(&digest, data.len(), &[]);
            reg.put_manifest(&Caller::internal("test"), &repo, &Reference::parse("latest").unwrap(), None, m)
                .await
                .unwrap();
            i
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(e.reg.stat_blob(&repo, &digest).await.unwrap().size, 2_000_000);
    let s = e.reg.read_blob(&digest, 0, 2_000_000).await.unwrap();
    let got: Vec<Bytes> = futures_util::TryStreamExt::try_collect(s).await.unwrap();
    assert_eq!(Digest::of_bytes(&got.concat()), digest);
    let tags = e.reg.list_tags(&repo, None, None).await.unwrap();
    assert_eq!(tags.items, vec!["latest"]);
}

#[tokio::test]
async fn concurrent_pushes_of_one_tag_leave_storage_and_metadata_agreeing() {
    let e = env().await;
    let repo = name("race");
    let config = push_blob(&e.reg, &repo, b"{}").await;
    let tag = Reference::parse("latest").unwrap();
    for round in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (reg, repo, tag, config) = (e.reg.clone(), repo.clone(), tag.clone(), config.clone());
            tasks.push(tokio::spawn(async move {
                let m = Bytes::from(format!(
                    r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[],"annotations":{{"n":"{round}-{i}"}}}}"#,
                    berth_types::media::OCI_MANIFEST
                ));
                reg.put_manifest(&Caller::internal("test"), &repo, &tag, None, m).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let in_db = e.reg.stat_manifest(&repo, &tag).await.unwrap().digest;
        let link = e
            .reg
            .storage()
            .get_content(&layout::tag_current_link(&repo, &Tag::parse("latest").unwrap()))
            .await
            .unwrap();
        assert_eq!(layout::parse_link(&link), Some(in_db), "round {round}");
    }
}

#[tokio::test]
async fn listings_paginate() {
    let e = env().await;
    for r in ["b", "a", "c"] {
        let repo = name(r);
        let config = push_blob(&e.reg, &repo, b"{}").await;
        for t in ["t3", "t1", "t2"] {
            let m = image_manifest(&config, 2, &[]);
            e.reg.put_manifest(&Caller::internal("test"), &repo, &Reference::parse(t).unwrap(), None, m).await.unwrap();
        }
    }
    assert_eq!(e.reg.catalog(2, None).await.unwrap(), Page { items: vec![name("a"), name("b")], more: true });
    assert_eq!(e.reg.catalog(2, Some("b")).await.unwrap(), Page { items: vec![name("c")], more: false });
    let t = e.reg.list_tags(&name("a"), Some(1), Some("t1")).await.unwrap();
    assert_eq!(t, Page { items: vec![Tag::parse("t2").unwrap()], more: true });
    assert!(matches!(e.reg.list_tags(&name("zzz"), None, None).await, Err(RegistryError::NameUnknown)));
}

#[tokio::test]
async fn import_rebuilds_the_index_from_storage() {
    let e = env().await;
    let repo = name("lib/app");
    let config = push_blob(&e.reg, &repo, b"{\"a\":1}").await;
    let layer = push_blob(&e.reg, &repo, b"layer bytes").await;
    let m = image_manifest(&config, 7, &[(&layer, 11)]);
    let res = e
        .reg
        .put_manifest(&Caller::internal("test"), &repo, &Reference::parse("v1").unwrap(), None, m.clone())
        .await
        .unwrap();
    let index = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":{}}}]}}"#,
        berth_types::media::OCI_INDEX,
        berth_types::media::OCI_MANIFEST,
        res.digest,
        m.len()
    ));
    e.reg
        .put_manifest(&Caller::internal("test"), &repo, &Reference::parse("multi").unwrap(), None, index)
        .await
        .unwrap();
    e.reg.metadata().close().await;

    // A fresh database over the same store.
    std::fs::remove_file(e.dir.path().join("meta.sqlite")).unwrap();
    let _ = std::fs::remove_file(e.dir.path().join("meta.sqlite-wal"));
    let _ = std::fs::remove_file(e.dir.path().join("meta.sqlite-shm"));
    let reg = open_at(e.dir.path(), RegistryConfig::default()).await;
    assert!(matches!(reg.list_tags(&repo, None, None).await, Err(RegistryError::NameUnknown)));
    let summary = import::import(reg.storage().as_ref(), reg.metadata(), &import::Quiet).await.unwrap();
    assert_eq!(summary, import::ImportSummary { repositories: 1, blobs: 2, manifests: 2, tags: 2, skipped: 0 });
    assert_eq!(reg.list_tags(&repo, None, None).await.unwrap().items, vec!["multi", "v1"]);
    assert_eq!(
        reg.get_manifest(&Caller::internal("test"), &repo, &Reference::parse("v1").unwrap()).await.unwrap().content,
        m
    );
    assert_eq!(reg.stat_blob(&repo, &layer).await.unwrap().size, 11);
    // Idempotent.
    let again = import::import(reg.storage().as_ref(), reg.metadata(), &import::Quiet).await.unwrap();
    assert_eq!(again, summary);
    assert_eq!(reg.catalog(10, None).await.unwrap().items, vec!["lib/app"]);
}

#[tokio::test]
async fn stale_uploads_are_purged() {
    let e = env().await;
    let repo = name("r");
    let up = e.reg.start_upload(&repo).await.unwrap();
    e.reg.append_upload(&repo, &up.id, None, None, body(&[b"abc"])).await.unwrap();
    assert_eq!(e.reg.purge_uploads(0, false).await.unwrap(), 0, "fresh uploads stay");
    let future = berth_metadata::now_millis() + 1000;
    assert_eq!(e.reg.purge_uploads(future, true).await.unwrap(), 1);
    assert!(e.reg.upload_status(&repo, &up.id).await.is_ok(), "dry run keeps it");
    assert_eq!(e.reg.purge_uploads(future, false).await.unwrap(), 1);
    assert!(matches!(e.reg.upload_status(&repo, &up.id).await, Err(RegistryError::BlobUploadUnknown)));
    assert!(!e.dir.path().join("store/docker/registry/v2/repositories/r/_uploads").join(up.id.to_string()).exists());
}

// ---- lifecycle: collection, retention, quotas, repository deletion ----

use crate::gc::GcOptions;
use crate::progress::NoProgress;
use crate::quota::Quota;
use crate::retention::RetentionPolicy;

fn gc(grace_ms: u64, delete_untagged: bool) -> GcOptions {
    GcOptions {
        grace: std::time::Duration::from_millis(grace_ms),
        delete_untagged,
        delete_referrers: false,
        dry_run: false,
    }
}

fn blob_file(dir: &std::path::Path, d: &Digest) -> std::path::PathBuf {
    dir.join("store/docker/registry/v2/blobs/sha256").join(&d.hex()[..2]).join(d.hex()).join("data")
}

async fn settle() {
    // Use times are in milliseconds: let "now" move past them.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

/// Asks a run to stop once it has reached `phase`.
struct StopAt(&'static str, std::sync::Mutex<bool>);

impl crate::progress::Progress for StopAt {
    fn phase(&self, name: &str) {
        if name == self.0 {
            *self.1.lock().unwrap() = true;
        }
    }

    fn cancelled(&self) -> bool {
        *self.1.lock().unwrap()
    }
}

#[tokio::test]
async fn a_cancelled_collection_stops_between_steps_and_the_next_run_finishes() {
    let e = env().await;
    let repo = name("c/app");
    let config = push_blob(&e.reg, &repo, b"{}").await;
    let m = image_manifest(&config, 2, &[]);
    e.reg.put_manifest(&Caller::internal("test"), &repo, &Reference::parse("v1").unwrap(), None, m).await.unwrap();
    let orphan = push_blob(&e.reg, &repo, b"orphan of a cancelled run").await;
    settle().await;
    for phase in ["untagged manifests", "blobs"] {
        let stop = StopAt(phase, std::sync::Mutex::new(false));
        let r = e.reg.collect_garbage(&gc(0, true), &stop).await;
        assert!(matches!(r, Err(RegistryError::Cancelled)), "{phase}: {r:?}");
        assert!(blob_file(e.dir.path(), &orphan).exists(), "{phase}: stopped before the sweep");
    }
    let done = e.reg.collect_garbage(&gc(0, true), &NoProgress).await.unwrap();
    assert_eq!(done.blobs, vec![orphan.to_string()]);
    assert!(!blob_file(e.dir.path(), &orphan).exists());
    let stop = StopAt("retention", std::sync::Mutex::new(false));
    let policy = RetentionPolicy {
        repositories: vec![],
        keep_tags: vec![],
        keep_last: None,
        older_than: None,
        delete_untagged: false,
    };
    assert!(matches!(
        e.reg.apply_retention(&[policy], std::time::Duration::ZERO, true, &stop).await,
        Err(RegistryError::Cancelled)
    ));
}

#[tokio::test]
async fn gc_takes_unreferenced_blobs_past_the_grace_period_only() {
    let e = env().await;
    let repo = name("team/app");
    let config = push_blob(&e.reg, &repo, b"{}").await;
    let layer = push_blob(&e.reg, &repo, b"layer").await;
    let orphan = push_blob(&e.reg, &repo, b"pushed, never referenced").await;
    let m = image_manifest(&config, 2, &[(&layer, 5)]);
    e.reg.put_manifest(&Caller::internal("test"), &repo, &Reference::parse("v1").unwrap(), None, m).await.unwrap();
    settle().await;

    let fresh = e.reg.collect_garbage(&gc(3_600_000, false), &NoProgress).await.unwrap();
    assert_eq!(fresh.blobs_deleted, 0, "everything is inside the grace period");

    let dry = e.reg.collect_garbage(&GcOptions { dry_run: true, ..gc(0, false) }, &NoProgress).await.unwrap();
    assert_eq!(dry.blobs, vec![orphan.to_string()]);
    assert!(blob_file(e.dir.path(), &orphan).exists(), "a dry run deletes nothing");

    let done = e.reg.collect_garbage(&gc(0, false), &NoProgress).await.unwrap();
    assert_eq!((done.blobs_deleted, done.bytes_freed), (1, 24));
    assert!(!blob_file(e.dir.path(), &orphan).exists());
    assert!(matches!(e.reg.stat_blob(&repo, &orphan).await, Err(RegistryError::BlobUnknown)));
    for kept in [&config, &layer] {
        assert!(blob_file(e.dir.path(), kept).exists());
        e.reg.stat_blob(&repo, kept).await.unwrap();
    }
    // Pushed again, it is a new blob like any other.
    push_blob(&e.reg, &repo, b"pushed, never referenced").await;
    assert!(blob_file(e.dir.path(), &orphan).exists());
}

#[tokio::test]
async fn delete_untagged_keeps_index_children_and_referrers_of_kept_manifests() {
    let e = env().await;
    let repo = name("multi");
    let config = push_blob(&e.reg, &repo, b"{}").await;
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = push_blob(&e.reg, &repo, arch.as_bytes()).await;
        let m = image_manifest(&config, 2, &[(&layer, arch.len())]);
        let d = e
            .reg
            .put_manifest(&Caller::internal("test"), &repo, &Reference::Digest(Digest::of_bytes(&m)), None, m.clone())
            .await
            .unwrap();
        children.push((d.digest, m.len()));
    }
    let entries: Vec<String> = children
        .iter()
        .map(|(d, n)| format!(r#"{{"mediaType":"{}","digest":"{d}","size":{n}}}"#, berth_types::media::OCI_MANIFEST))
        .collect();
    let index = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{}]}}"#,
        berth_types::media::OCI_INDEX,
        entries.join(",")
    ));
    let index_digest = e
        .reg
        .put_manifest(&Caller::internal("test"), &repo, &Reference::parse("latest").unwrap(), None, index)
        .await
        .unwrap()
        .digest;
    // A signature of the first child, and an image nothing tags.
    let sig = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/example.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[],"subject":{{"mediaType":"{}","digest":"{}","size":{}}}}}"#,
        berth_types::media::OCI_MANIFEST,
        berth_types::media::OCI_MANIFEST,
        children[0].0,
        children[0].1
    ));
    let sig_digest = e
        .reg
        .put_manifest(&Caller::internal("test"), &repo, &Reference::Digest(Digest::of_bytes(&sig)), None, sig)
        .await
        .unwrap()
        .digest;
    let lonely_layer = push_blob(&e.reg, &repo, b"only the untagged image has me").await;
    let lonely = image_manifest(&config, 2, &[(&lonely_layer, 30)]);
    let lonely_digest = e
        .reg
        .put_manifest(&Caller::internal("test"), &repo, &Reference::Digest(Digest::of_bytes(&lonely)), None, lonely)
        .await
        .unwrap()
        .digest;
    settle().await;

    let r = e.reg.collect_garbage(&gc(0, true), &NoProgress).await.unwrap();
    assert_eq!(r.manifests, vec![format!("multi@{lonely_digest}")]);
    assert!(r.blobs.contains(&lonely_layer.to_string()) && r.blobs.contains(&lonely_digest.to_string()), "{r:?}");
    assert_eq!(r.blobs_deleted, 2, "the untagged image's layer and its manifest bytes: {r:?}");
    for d in [&index_digest, &children[0].0, &children[1].0, &sig_digest] {
        e.reg.get_manifest(&Caller::internal("test"), &repo, &Reference::Digest(d.clone())).await.unwrap();
    }
    assert!(matches!(
        e.reg.get_manifest(&Caller::internal("test"), &repo, &Reference::Digest(lonely_digest)).await,
        Err(RegistryError::ManifestUnknown)
    ));

    // Asked to, referrers of kept manifests go too.
    let opts = GcOptions { delete_referrers: true, ..gc(0, true) };
    let r = e.reg.collect_garbage(&opts, &NoProgress).await.unwrap();
    assert_eq!(r.manifests, vec![format!("multi@{sig_digest}")]);
    e.reg.get_manifest(&Caller::internal("test"), &repo, &Reference::Digest(children[0].0.clone())).await.unwrap();
}

#[tokio::test]
async fn a_collection_cut_short_by_a_crash_is_finished_next_time() {
    let e = env().await;
    let repo = name("r");
    let gone = push_blob(&e.reg, &repo, b"content deleted, rows not yet").await;
    let kept = push_blob(&e.reg, &repo, b"journaled, content still there").await;
    // What a crash between deleting content and committing leaves behind.
    let journal = format!("{gone}\n{kept}\n");
    e.reg.storage().put_content(&layout::gc_journal(), Bytes::from(journal)).await.unwrap();
    std::fs::remove_file(blob_file(e.dir.path(), &gone)).unwrap();
    assert_eq!(e.reg.stat_blob(&repo, &gone).await.unwrap().size, 29, "the metadata still names it");

    assert_eq!(e.reg.finish_interrupted_collection().await.unwrap(), 1);
    assert!(matches!(e.reg.stat_blob(&repo, &gone).await, Err(RegistryError::BlobUnknown)));
    assert_eq!(e.reg.stat_blob(&repo, &kept).await.unwrap().size, 30, "its content is there: the next sweep decides");
    assert!(matches!(e.reg.storage().stat(&layout::gc_journal()).await, Err(err) if err.is_not_found()));
    assert!(!e.dir.path().join("store/docker/registry/v2/repositories/r/_layers/sha256").join(gone.hex()).exists());
    // The blob can be pushed again.
    push_blob(&e.reg, &repo, b"content deleted, rows not yet").await;
    assert_eq!(e.reg.stat_blob(&repo, &gone).await.unwrap().size, 29);
}

#[tokio::test]
async fn a_dry_run_reports_what_the_real_run_frees_and_what_the_grace_period_kept() {
    let e = env().await;
    let repo = name("team/app");
    let config = push_blob(&e.reg, &repo, b"{\"n\":1}").await;
    let layer = push_blob(&e.reg, &repo, b"a layer only the untagged image names").await;
    let shared = push_blob(&e.reg, &repo, b"a layer the tagged image names too").await;
    let untagged = image_manifest(&config, 7, &[(&layer, 38), (&shared, 34)]);
    let d = e
        .reg
        .put_manifest(
            &Caller::internal("test"),
            &repo,
            &Reference::Digest(Digest::of_bytes(&untagged)),
            None,
            untagged.clone(),
        )
        .await;
    d.unwrap();
    let tagged = image_manifest(&config, 7, &[(&shared, 34)]);
    e.reg.put_manifest(&Caller::internal("test"), &repo, &Reference::parse("v1").unwrap(), None, tagged).await.unwrap();
    settle().await;
    let young = push_blob(&e.reg, &repo, b"an orphan inside the grace period").await;

    let opts = GcOptions { dry_run: true, delete_untagged: true, ..gc(3_600_000, true) };
    let held = e.reg.collect_garbage(&opts, &NoProgress).await.unwrap();
    assert_eq!((held.manifests_deleted, held.blobs_deleted), (0, 0));
    assert_eq!((held.held_back_manifests, held.held_back_blobs), (1, 1), "{held:?}");

    // With a grace of 0 the dry run names the untagged manifest, its own layer and its
    // manifest blob (not the config or the shared layer), and the orphan.
    settle().await;
    let dry = e.reg.collect_garbage(&GcOptions { dry_run: true, ..gc(0, true) }, &NoProgress).await.unwrap();
    let want: std::collections::BTreeSet<String> =
        [layer.to_string(), Digest::of_bytes(&untagged).to_string(), young.to_string()].into();
    assert_eq!(dry.blobs.iter().cloned().collect::<std::collections::BTreeSet<_>>(), want, "{dry:?}");
    let real = e.reg.collect_garbage(&gc(0, true), &NoProgress).await.unwrap();
    assert_eq!((real.manifests_deleted, real.blobs_deleted, real.bytes_freed), (1, 3, dry.bytes_freed));
    assert_eq!((dry.manifests_deleted, dry.blobs_deleted), (1, 3));
    assert_eq!(real.blobs.iter().cloned().collect::<std::collections::BTreeSet<_>>(), want);
    e.reg.stat_blob(&repo, &shared).await.unwrap();
    e.reg.stat_blob(&repo, &config).await.unwrap();
}

/// Pushes an image of its own for each tag, in order, with distinct push times.
async fn push_tags_in_order(reg: &Registry, repo: &RepoName, tags: &[&str]) {
    let config = push_blob(reg, repo, b"{}").await;
    for (i, t) in tags.iter().enumerate() {
        let layer = push_blob(reg, repo, t.as_bytes()).await;
        let m = image_manifest(&config, 2, &[(&layer, t.len())]);
        reg.put_manifest(&Caller::internal("test"), repo, &Reference::parse(t).unwrap(), None, m).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(3 + i as u64)).await;
    }
}

#[tokio::test]
async fn tags_kept_by_pattern_do_not_use_up_keeplast() {
    let e = env().await;
    let repo = name("ci/app");
    // The release tags are the newest: with keeplast 2 the two newest others stay too.
    push_tags_in_order(&e.reg, &repo, &["a1", "a2", "a3", "a4", "release-1", "release-2"]).await;
    let policy = RetentionPolicy {
        repositories: vec![berth_types::pattern::RepoPattern::parse("ci/**").unwrap()],
        keep_last: Some(2),
        keep_tags: vec!["release-*".into()],
        older_than: None,
        delete_untagged: false,
    };
    let grace = std::time::Duration::ZERO;
    let dry = e.reg.apply_retention(std::slice::from_ref(&policy), grace, true, &NoProgress).await.unwrap();
    assert_eq!(dry.tags, vec!["ci/app:a2", "ci/app:a1"]);
    assert_eq!(
        dry.kept,
        vec![
            "ci/app:release-2 (keeptags)",
            "ci/app:release-1 (keeptags)",
            "ci/app:a4 (keeplast)",
            "ci/app:a3 (keeplast)"
        ]
    );
    e.reg.apply_retention(&[policy], grace, false, &NoProgress).await.unwrap();
    assert_eq!(e.reg.list_tags(&repo, None, None).await.unwrap().items, vec!["a3", "a4", "release-1", "release-2"]);
}

#[tokio::test]
async fn retention_keeps_the_newest_and_protected_tags_and_dry_runs_change_nothing() {
    let e = env().await;
    let repo = name("ci/app");
    push_tags_in_order(&e.reg, &repo, &["t1", "release-1", "t2", "t3", "t4", "t5"]).await;
    let other = name("cache/app");
    let c2 = push_blob(&e.reg, &other, b"{}").await;
    e.reg
        .put_manifest(
            &Caller::internal("test"),
            &other,
            &Reference::parse("old").unwrap(),
            None,
            image_manifest(&c2, 2, &[]),
        )
        .await
        .unwrap();
    let policy = RetentionPolicy {
        repositories: vec![berth_types::pattern::RepoPattern::parse("ci/**").unwrap()],
        keep_last: Some(2),
        keep_tags: vec!["release-*".into()],
        older_than: None,
        delete_untagged: true,
    };
    let grace = std::time::Duration::ZERO;
    let dry = e.reg.apply_retention(std::slice::from_ref(&policy), grace, true, &NoProgress).await.unwrap();
    assert_eq!(dry.tags, vec!["ci/app:t3", "ci/app:t2", "ci/app:t1"]);
    assert_eq!(dry.manifests.len(), 3, "their manifests would be untagged: {dry:?}");
    assert_eq!(e.reg.list_tags(&repo, None, None).await.unwrap().items.len(), 6, "a dry run deletes nothing");

    let real = e.reg.apply_retention(std::slice::from_ref(&policy), grace, false, &NoProgress).await.unwrap();
    assert_eq!(real.tags, dry.tags);
    assert_eq!(real.manifests, dry.manifests);
    assert_eq!(e.reg.list_tags(&repo, None, None).await.unwrap().items, vec!["release-1", "t4", "t5"]);
    assert_eq!(e.reg.list_tags(&other, None, None).await.unwrap().items, vec!["old"], "no policy matches it");
    assert!(!e.dir.path().join("store/docker/registry/v2/repositories/ci/app/_manifests/tags/t1").exists());

    // A tag used recently is not "older than" anything.
    let recent = RetentionPolicy { older_than: Some(std::time::Duration::from_secs(3600)), keep_last: None, ..policy };
    let r = e.reg.apply_retention(&[recent], grace, false, &NoProgress).await.unwrap();
    assert!(r.tags.is_empty(), "{r:?}");
}

#[tokio::test]
async fn quotas_refuse_what_would_exceed_and_count_shared_blobs_once() {
    let dir = tempfile::tempdir().unwrap();
    let quotas = vec![Quota { namespace: RepoName::parse("team").unwrap(), limit: 100 }];
    let reg = open_at(dir.path(), RegistryConfig { delete_enabled: true, quotas, ..Default::default() }).await;
    let (a, b) = (name("team/a"), name("team/b"));
    let sixty = [1u8; 60];
    let d = push_blob(&reg, &a, &sixty).await;
    push_blob(&reg, &b, &sixty).await;
    assert_eq!(
        reg.mount_blob(&Caller::internal("test"), &name("team/c"), &a, &d).await.unwrap(),
        Some(BlobInfo { size: 60 })
    );
    let usage = reg.quota_usage().await.unwrap();
    assert_eq!(usage[0].used, 60, "one blob in three repositories counts once");

    let forty_one = [2u8; 41];
    let err = reg
        .put_blob(&Caller::internal("test"), &b, &Digest::of_bytes(&forty_one), None, body(&[&forty_one]))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::QuotaExceeded(ref m) if m.contains("team")), "{err:?}");
    assert!(matches!(reg.stat_blob(&b, &Digest::of_bytes(&forty_one)).await, Err(RegistryError::BlobUnknown)));
    // A chunked upload is refused at its commit, and leaves nothing.
    let up = reg.start_upload(&b).await.unwrap();
    reg.append_upload(&b, &up.id, None, None, body(&[&forty_one])).await.unwrap();
    let err = reg
        .complete_upload(&Caller::internal("test"), &b, &up.id, &Digest::of_bytes(&forty_one), None, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::QuotaExceeded(_)), "{err:?}");
    assert!(matches!(reg.upload_status(&b, &up.id).await, Err(RegistryError::BlobUploadUnknown)));
    // A declared size over the quota is refused before a byte of the body is read.
    let unread = || -> BodyStream {
        Box::pin(futures_util::stream::once(async { Err(std::io::Error::other("the body must not be read")) }))
    };
    let err = reg
        .put_blob(&Caller::internal("test"), &b, &Digest::of_bytes(&forty_one), Some(41), unread())
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::QuotaExceeded(_)), "{err:?}");
    let up = reg.start_upload(&b).await.unwrap();
    reg.append_upload(&b, &up.id, None, Some(30), body(&[&[4u8; 30]])).await.unwrap();
    // The running size of a chunked upload: 60 stored + 30 uploaded + 11 more > 100.
    let err = reg.append_upload(&b, &up.id, None, Some(11), unread()).await.unwrap_err();
    assert!(matches!(err, RegistryError::QuotaExceeded(_)), "{err:?}");
    assert_eq!(reg.upload_status(&b, &up.id).await.unwrap().size, 30, "the upload stays where it was");
    let err = reg
        .complete_upload(
            &Caller::internal("test"),
            &b,
            &up.id,
            &Digest::of_bytes(&forty_one),
            None,
            Some(11),
            Some(unread()),
        )
        .await;
    assert!(matches!(err, Err(RegistryError::QuotaExceeded(_))), "{err:?}");
    reg.cancel_upload(&b, &up.id).await.unwrap();
    // Other namespaces are not limited; what fits still goes in.
    push_blob(&reg, &name("other/x"), &forty_one).await;
    push_blob(&reg, &b, &[3u8; 40]).await;
    assert_eq!(reg.quota_usage().await.unwrap()[0].used, 100);
    // Manifests count too.
    let m = image_manifest(&d, 60, &[]);
    let err =
        reg.put_manifest(&Caller::internal("test"), &a, &Reference::parse("v1").unwrap(), None, m).await.unwrap_err();
    assert!(matches!(err, RegistryError::QuotaExceeded(_)), "{err:?}");
}

#[tokio::test]
async fn deleting_a_repository_leaves_shared_blobs_and_frees_its_own() {
    let e = env().await;
    let (doomed, stays) = (name("team/doomed"), name("team/stays"));
    let shared = push_blob(&e.reg, &doomed, b"shared").await;
    let own = push_blob(&e.reg, &doomed, b"own").await;
    let m = image_manifest(&shared, 6, &[(&own, 3)]);
    e.reg.put_manifest(&Caller::internal("test"), &doomed, &Reference::parse("v1").unwrap(), None, m).await.unwrap();
    let c = push_blob(&e.reg, &stays, b"shared").await;
    e.reg
        .put_manifest(
            &Caller::internal("test"),
            &stays,
            &Reference::parse("v1").unwrap(),
            None,
            image_manifest(&c, 6, &[]),
        )
        .await
        .unwrap();

    e.reg.delete_repository(&Caller::internal("test"), &doomed).await.unwrap();
    assert!(matches!(
        e.reg.delete_repository(&Caller::internal("test"), &doomed).await,
        Err(RegistryError::NameUnknown)
    ));
    assert!(matches!(e.reg.list_tags(&doomed, None, None).await, Err(RegistryError::NameUnknown)));
    assert_eq!(e.reg.catalog(10, None).await.unwrap().items, vec!["team/stays"]);
    assert!(!e.dir.path().join("store/docker/registry/v2/repositories/team/doomed/_manifests").exists());
    settle().await;
    let r = e.reg.collect_garbage(&gc(0, false), &NoProgress).await.unwrap();
    assert_eq!(r.blobs_deleted, 2, "its layer and its manifest: {r:?}");
    assert!(r.blobs.contains(&own.to_string()));
    e.reg.stat_blob(&stays, &shared).await.unwrap();
    assert!(blob_file(e.dir.path(), &shared).exists());
}

#[tokio::test]
async fn retention_by_age_counts_pulls_as_use() {
    let e = env().await;
    let repo = name("cache/app");
    let config = push_blob(&e.reg, &repo, b"{}").await;
    for t in ["idle", "pulled"] {
        let layer = push_blob(&e.reg, &repo, t.as_bytes()).await;
        e.reg
            .put_manifest(
                &Caller::internal("test"),
                &repo,
                &Reference::parse(t).unwrap(),
                None,
                image_manifest(&config, 2, &[(&layer, t.len())]),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    // A pull by tag is noted, and written with the next flush.
    e.reg.get_manifest(&Caller::internal("test"), &repo, &Reference::parse("pulled").unwrap()).await.unwrap();
    e.reg.flush_pulls().await.unwrap();
    let g = e.reg.metadata().repository_graph(&repo).await.unwrap();
    let pulled = g.tags.iter().find(|t| t.name == "pulled").unwrap();
    assert!(pulled.pulled_at > pulled.pushed_at, "{pulled:?}");
    assert_eq!(g.tags.iter().find(|t| t.name == "idle").unwrap().pulled_at, 0);

    let policy = RetentionPolicy {
        repositories: vec![berth_types::pattern::RepoPattern::parse("cache/**").unwrap()],
        keep_last: None,
        keep_tags: vec![],
        older_than: Some(std::time::Duration::from_millis(200)),
        delete_untagged: false,
    };
    let r = e.reg.apply_retention(&[policy], std::time::Duration::ZERO, false, &NoProgress).await.unwrap();
    assert_eq!(r.tags, vec!["cache/app:idle"]);
    assert!(r.manifests.is_empty(), "untagged manifests stay unless asked");
    assert_eq!(e.reg.list_tags(&repo, None, None).await.unwrap().items, vec!["pulled"]);
}
