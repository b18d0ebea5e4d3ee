//! Garbage collection, retention, quotas and repository deletion with the
//! real binary: collection beside pushes and deletes, a collection killed
//! with SIGKILL and finished, multi-arch images under `--delete-untagged`,
//! retention runs, quotas met by skopeo, and who may do what.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::push::{digest_of, put_manifest, run_job, seeded_bytes as bytes, OCI_MANIFEST};
use common::*;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client")
}

/// An image as pushed: its manifest digest and every blob it needs.
#[derive(Debug, Clone)]
struct Image {
    repo: String,
    tag: String,
    manifest: String,
    manifest_len: usize,
    /// Bytes of its config and layers.
    blob_bytes: u64,
    blobs: Vec<String>,
}

async fn push_blob(c: &reqwest::Client, base: &str, repo: &str, data: &[u8]) -> Result<String, String> {
    let d = digest_of(data);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 201 {
        return Err(format!("blob {d}: {} {}", r.status(), r.text().await.unwrap_or_default()));
    }
    Ok(d)
}

/// Pushes a blob unless the registry says it has it, as clients do.
async fn ensure_blob(c: &reqwest::Client, base: &str, repo: &str, data: &[u8]) -> Result<String, String> {
    let d = digest_of(data);
    let r = c.head(format!("{base}/v2/{repo}/blobs/{d}")).send().await.map_err(|e| e.to_string())?;
    if r.status() == 200 {
        return Ok(d);
    }
    push_blob(c, base, repo, data).await
}

fn manifest_json(config: &(String, usize), layers: &[(String, usize)], subject: Option<(&str, usize)>) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, n)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{n}}}"#))
        .collect();
    let subject = subject
        .map(|(d, n)| format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":{n}}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]{subject}}}"#,
        config.0,
        config.1,
        layers.join(",")
    )
}

/// Pushes an image of the `base` layer (checked first, pushed if missing)
/// and `layers` of its own, tagged `tag` (or by digest when `tag` is empty).
async fn push_image(
    c: &reqwest::Client,
    base_url: &str,
    repo: &str,
    tag: &str,
    base: Option<&[u8]>,
    layers: &[Vec<u8>],
) -> Result<Image, String> {
    let mut blobs = Vec::new();
    let mut descs = Vec::new();
    if let Some(b) = base {
        let d = ensure_blob(c, base_url, repo, b).await?;
        descs.push((d.clone(), b.len()));
        blobs.push(d);
    }
    for l in layers {
        let d = push_blob(c, base_url, repo, l).await?;
        descs.push((d.clone(), l.len()));
        blobs.push(d);
    }
    let layer_ids: Vec<&str> = descs.iter().map(|(d, _)| d.as_str()).collect();
    let config = format!(r#"{{"architecture":"amd64","os":"linux","layers":"{}"}}"#, layer_ids.join(" "));
    let cd = push_blob(c, base_url, repo, config.as_bytes()).await?;
    blobs.push(cd.clone());
    let m = manifest_json(&(cd, config.len()), &descs, None);
    let reference = if tag.is_empty() { digest_of(m.as_bytes()) } else { tag.to_owned() };
    let manifest = put_manifest(c, base_url, repo, &reference, OCI_MANIFEST, &m).await?;
    let blob_bytes = descs.iter().map(|(_, n)| *n as u64).sum::<u64>() + config.len() as u64;
    Ok(Image { repo: repo.into(), tag: tag.into(), manifest, manifest_len: m.len(), blobs, blob_bytes })
}

/// Every blob digest in a filesystem store.
fn stored_blobs(store: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(fans) = std::fs::read_dir(store.join("docker/registry/v2/blobs/sha256")) else { return out };
    for fan in fans.flatten() {
        for b in std::fs::read_dir(fan.path()).into_iter().flatten().flatten() {
            if b.path().join("data").exists() {
                out.insert(format!("sha256:{}", b.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// Every `_layers` link in a filesystem store, as (repository, digest).
fn layer_links(store: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name() == "_layers" {
                let repo = dir.strip_prefix(root).unwrap_or(dir).to_string_lossy().into_owned();
                for l in std::fs::read_dir(p.join("sha256")).into_iter().flatten().flatten() {
                    if l.path().join("link").exists() {
                        out.push((repo.clone(), format!("sha256:{}", l.file_name().to_string_lossy())));
                    }
                }
            } else if p.is_dir() && !e.file_name().to_string_lossy().starts_with('_') {
                walk(&p, root, out);
            }
        }
    }
    let root = store.join("docker/registry/v2/repositories");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

/// Pulls an image completely with skopeo (every blob fetched and verified).
fn skopeo_pull(addr: &str, reference: &str, work: &Path, all: bool) {
    let dest = work.join(format!("pull-{}", digest_of(reference.as_bytes()).trim_start_matches("sha256:")));
    let _ = std::fs::remove_dir_all(&dest);
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--src-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    cmd.arg(format!("docker://{addr}/{reference}")).arg(format!("dir:{}", dest.display()));
    run(&mut cmd);
    let _ = std::fs::remove_dir_all(&dest);
}

#[track_caller]
fn berth_ok(args: &[&str], cfg: &Path) -> String {
    run(Command::new(berth_bin()).args(args).arg(cfg).env("NO_COLOR", "1"))
}

/// A configuration on a fixed free port, so maintenance commands can reach
/// the server it describes.
fn config_on_port(dir: &Path, store: &Path, extra: &str) -> std::path::PathBuf {
    let cfg = write_config(dir, store, extra);
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, text.replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()))).expect("config");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_beside_pushes_and_deletes_loses_nothing() {
    if !require("skopeo") {
        return;
    }
    const GRACE_SECS: u64 = 5;
    const PUSHES: usize = 48;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let cfg = write_config(dir.path(), &store, &format!("gc:\n  grace: {GRACE_SECS}s\n"));
    let b = Berth::start(&cfg);
    let base_url = b.url("");
    let c = client();
    let base_layer = bytes(1, 40_000);

    let pushed: Arc<Mutex<Vec<Image>>> = Arc::default();
    let deleted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Four pushers; each image has the shared base layer and two of its own.
    let mut pushers = Vec::new();
    for _ in 0..4 {
        let (c, url, base, pushed, failures, next) =
            (c.clone(), base_url.clone(), base_layer.clone(), pushed.clone(), failures.clone(), next.clone());
        pushers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= PUSHES || Instant::now() > deadline {
                    return;
                }
                let repo = format!("gc/app{}", i % 5);
                let layers = [bytes(1000 + i as u64, 3000 + i * 97), bytes(5000 + i as u64, 20_000)];
                match push_image(&c, &url, &repo, &format!("v{i}"), Some(&base), &layers).await {
                    Ok(img) => pushed.lock().expect("lock").push(img),
                    Err(e) => failures.lock().expect("lock").push(e),
                }
            }
        }));
    }
    // A deleter takes every third image pushed so far, by digest.
    let deleter = {
        let (c, url, pushed, deleted, done) =
            (c.clone(), base_url.clone(), pushed.clone(), deleted.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = 0;
            while Instant::now() < deadline {
                let victim = {
                    let p = pushed.lock().expect("lock");
                    let v = (seen < p.len()).then(|| p[seen].clone());
                    if v.is_some() {
                        seen += 1;
                    }
                    v
                };
                match victim {
                    Some(img) if seen % 3 == 0 => {
                        let r = c
                            .delete(format!("{url}/v2/{}/manifests/{}", img.repo, img.manifest))
                            .send()
                            .await
                            .expect("DELETE");
                        assert_eq!(r.status(), 202, "deleting {img:?}");
                        deleted.lock().expect("lock").insert(img.manifest.clone());
                    }
                    Some(_) => {}
                    None if done.load(std::sync::atomic::Ordering::SeqCst) => return,
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };
    // Collection in a loop, with and without untagged manifests, until the pushes end.
    let collector = {
        let (c, url) = (c.clone(), base_url.clone());
        tokio::spawn(async move {
            let (mut runs, mut blobs) = (0, 0);
            while Instant::now() < deadline && runs < 2000 {
                let untagged = runs % 2 == 0;
                let report = run_job(&c, &url, &format!("/_berth/gc?deleteuntagged={untagged}"), None).await;
                blobs += report["blobs_deleted"].as_u64().expect("count");
                runs += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            (runs, blobs)
        })
    };
    for p in pushers {
        p.await.expect("pusher");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    deleter.await.expect("deleter");
    collector.abort();
    let _ = collector.await;

    let failures = failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "pushes failed beside collection: {failures:#?}");
    let pushed = pushed.lock().expect("lock").clone();
    let deleted = deleted.lock().expect("lock").clone();
    assert_eq!(pushed.len(), PUSHES);
    assert!(deleted.len() >= PUSHES / 3 - 1, "{} deleted", deleted.len());

    // Once everything is past the grace period, one more collection leaves
    // exactly what the surviving images need.
    tokio::time::sleep(Duration::from_secs(GRACE_SECS + 1)).await;
    let report = run_job(&c, &b.url(""), "/_berth/gc?deleteuntagged=true", None).await;
    assert!(report["blobs_deleted"].as_u64().expect("count") > 0 || !deleted.is_empty());

    let survivors: Vec<&Image> = pushed.iter().filter(|i| !deleted.contains(&i.manifest)).collect();
    let mut needed: BTreeSet<String> = BTreeSet::new();
    for img in &survivors {
        needed.insert(img.manifest.clone());
        needed.extend(img.blobs.iter().cloned());
    }
    let stored = stored_blobs(&store);
    let extra: Vec<&String> = stored.difference(&needed).collect();
    let missing: Vec<&String> = needed.difference(&stored).collect();
    assert!(missing.is_empty(), "blobs of surviving images are gone: {missing:?}");
    assert!(extra.is_empty(), "unreferenced blobs older than the grace period remain: {extra:?}");
    for (repo, d) in layer_links(&store) {
        assert!(stored.contains(&d), "{repo} links {d}, which is gone");
    }
    for img in &deleted {
        assert!(!stored.contains(img), "deleted manifest {img} still stored");
    }
    for img in &survivors {
        skopeo_pull(&b.addr, &format!("{}:{}", img.repo, img.tag), dir.path(), false);
    }
    assert!(b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_killed_midway_is_finished_and_leaves_no_blob_without_content() {
    if !require("skopeo") {
        return;
    }
    const ORPHANS: usize = 1500;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let cfg = write_config(dir.path(), &store, "");
    let b = Berth::start(&cfg);
    let c = client();
    let url = b.url("");
    let kept = push_image(&c, &url, "keep/app", "v1", None, &[bytes(7, 100_000)]).await.expect("push");
    // Blobs nothing references, pushed by eight clients at once.
    let mut orphans = Vec::new();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut v = Vec::new();
            for i in (t as usize..ORPHANS).step_by(8) {
                let data = bytes(100_000 + i as u64, 64 + i % 300);
                v.push((push_blob(&c, &url, "junk/app", &data).await.expect("orphan"), data));
            }
            v
        }));
    }
    for t in tasks {
        orphans.extend(t.await.expect("task"));
    }
    assert!(b.stop());
    let all = stored_blobs(&store).len();
    assert_eq!(all, ORPHANS + kept.blobs.len() + 1);

    // Kill the offline collection with SIGKILL as soon as it has deleted
    // something, three times over.
    let mut kills = 0;
    let mut left = all;
    for _ in 0..3 {
        let mut child = Command::new(berth_bin())
            .args(["gc", "--grace", "0s"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth gc");
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            let now = stored_blobs(&store).len();
            if now < left {
                child.kill().expect("kill");
                kills += 1;
                break;
            }
            assert!(Instant::now() < until, "the collection deleted nothing in 60 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.wait();
        left = stored_blobs(&store).len();
    }
    assert!(kills >= 1, "no collection was caught in the middle");
    assert!(left > kept.blobs.len() + 1, "the collection finished before it could be killed");

    // After the crashes: every blob the registry admits to (a client would
    // skip pushing it) has its content.
    let b = Berth::start(&cfg);
    let c = client();
    let mut present = 0;
    for (d, data) in &orphans {
        let url = b.url(&format!("/v2/junk/app/blobs/{d}"));
        let head = c.head(&url).send().await.expect("HEAD").status().as_u16();
        let r = c.get(&url).send().await.expect("GET");
        assert_eq!(r.status().as_u16(), head, "{d}: HEAD and GET disagree");
        match head {
            404 => {}
            200 => {
                assert_eq!(&r.bytes().await.expect("body")[..], &data[..], "{d}");
                present += 1;
            }
            s => panic!("{d}: status {s}"),
        }
    }
    assert!(present < ORPHANS && present > 0, "{present} of {ORPHANS} orphans left after the kills");
    skopeo_pull(&b.addr, "keep/app:v1", dir.path(), false);
    assert!(b.stop());

    // A full run finishes the job.
    let out = berth_ok(&["gc", "--grace", "0s"], &cfg);
    assert!(out.contains("deleted 0 manifests and"), "{out}");
    let mut expected: BTreeSet<String> = kept.blobs.iter().cloned().collect();
    expected.insert(kept.manifest.clone());
    assert_eq!(stored_blobs(&store), expected);
    assert_eq!(layer_links(&store).iter().filter(|(r, _)| r == "junk/app").count(), 0);
    let b = Berth::start(&cfg);
    skopeo_pull(&b.addr, "keep/app:v1", dir.path(), false);
    let r = client().head(b.url(&format!("/v2/junk/app/blobs/{}", orphans[0].0))).send().await.expect("HEAD");
    assert_eq!(r.status(), 404);
    assert!(b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_untagged_keeps_multi_arch_children_and_signatures() {
    if !require("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let cfg = write_config(dir.path(), &store, "");
    let b = Berth::start(&cfg);
    let c = client();
    let url = b.url("");
    let repo = "multi/app";
    let mut children = Vec::new();
    for (i, arch) in ["amd64", "arm64", "s390x"].iter().enumerate() {
        let img = push_image(&c, &url, repo, "", None, &[bytes(20 + i as u64, 50_000)]).await.expect("child");
        children.push((arch, img));
    }
    let entries: Vec<String> = children
        .iter()
        .map(|(arch, img)| {
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
                img.manifest, img.manifest_len
            )
        })
        .collect();
    let index = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#, entries.join(","));
    let index_digest = put_manifest(&c, &url, repo, "latest", OCI_INDEX, &index).await.expect("index");
    // A signature of the amd64 image (a referrer), and an image nobody tags.
    let empty = push_blob(&c, &url, repo, b"{}").await.expect("empty");
    let sig_body = bytes(99, 300);
    let sig_layer = push_blob(&c, &url, repo, &sig_body).await.expect("sig");
    let sig = manifest_json(
        &(empty, 2),
        &[(sig_layer.clone(), sig_body.len())],
        Some((&children[0].1.manifest, children[0].1.manifest_len)),
    );
    let sig_digest = put_manifest(&c, &url, repo, &digest_of(sig.as_bytes()), OCI_MANIFEST, &sig).await.expect("sig");
    let lonely = push_image(&c, &url, repo, "", None, &[bytes(55, 10_000)]).await.expect("lonely");
    // An old tag moved to a new image leaves the old one untagged.
    let old = push_image(&c, &url, repo, "stable", None, &[bytes(66, 10_000)]).await.expect("old");
    let new = push_image(&c, &url, repo, "stable", None, &[bytes(67, 10_000)]).await.expect("new");
    assert!(b.stop());
    std::thread::sleep(Duration::from_millis(20));

    let dry = berth_ok(&["gc", "--dry-run", "--delete-untagged", "--grace", "0s"], &cfg);
    // The dry run reports what the real run frees: the manifests and the blobs only they name.
    let freed = lonely.blob_bytes + old.blob_bytes + (lonely.manifest_len + old.manifest_len) as u64;
    assert!(dry.contains(&format!("would delete 2 manifests and 6 blobs, {freed} bytes")), "{dry}");
    assert!(dry.contains(&lonely.manifest) && dry.contains(&old.manifest), "{dry}");
    for (_, child) in &children {
        assert!(!dry.contains(&child.manifest), "an index child would go: {dry}");
    }
    assert!(!dry.contains(&sig_digest), "{dry}");
    let before = stored_blobs(&store);

    let out = berth_ok(&["gc", "--delete-untagged", "--grace", "0s"], &cfg);
    assert!(out.contains(&format!("deleted 2 manifests and 6 blobs, {freed} bytes")), "{out}");
    let after = stored_blobs(&store);
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    let mut expected_gone: BTreeSet<String> = [lonely.manifest.clone(), old.manifest.clone()].into();
    // Each untagged image's own layer and config go with it.
    expected_gone.extend(lonely.blobs.iter().cloned());
    expected_gone.extend(old.blobs.iter().cloned());
    assert_eq!(gone, expected_gone);

    let b = Berth::start(&cfg);
    skopeo_pull(&b.addr, &format!("{repo}:latest"), dir.path(), true);
    skopeo_pull(&b.addr, &format!("{repo}@{sig_digest}"), dir.path(), false);
    skopeo_pull(&b.addr, &format!("{repo}:stable"), dir.path(), false);
    let r = client().get(b.url(&format!("/v2/{repo}/referrers/{}", children[0].1.manifest))).send().await.expect("GET");
    let referrers: serde_json::Value = r.json().await.expect("index");
    assert_eq!(referrers["manifests"][0]["digest"], sig_digest);
    let r = client().head(b.url(&format!("/v2/{repo}/manifests/{}", lonely.manifest))).send().await.expect("HEAD");
    assert_eq!(r.status(), 404);
    assert!(b.stop());

    // Referrers go only when asked.
    let out = berth_ok(&["gc", "--delete-untagged", "--delete-referrers", "--grace", "0s"], &cfg);
    assert!(out.contains("deleted 1 manifests and 3 blobs"), "{out}");
    assert!(!stored_blobs(&store).contains(&sig_layer));
    assert!(stored_blobs(&store).contains(&index_digest));
    new.blobs.iter().for_each(|d| assert!(stored_blobs(&store).contains(d)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_dry_run_then_real_run_through_a_running_server() {
    if !require("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let policies = "retention:\n  policies:\n    - repositories: [\"ci/**\"]\n      keeplast: 2\n      keeptags: [\"release-*\"]\n      deleteuntagged: true\n    - repositories: [\"cache/**\"]\n      olderthan: 720h\n";
    let cfg = config_on_port(dir.path(), &store, &format!("gc:\n  grace: 0s\n{policies}"));
    let b = Berth::start(&cfg);
    let c = client();
    let url = b.url("");
    let mut images = BTreeMap::new();
    for (i, tag) in ["old-1", "release-1.0", "old-2", "old-3", "new-1", "new-2"].iter().enumerate() {
        let img = push_image(&c, &url, "ci/app", tag, None, &[bytes(300 + i as u64, 5_000)]).await.expect("push");
        images.insert(tag.to_string(), img);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    push_image(&c, &url, "cache/app", "fresh", None, &[bytes(400, 5_000)]).await.expect("push");

    // The command finds the server on the store and asks it.
    let dry = berth_ok(&["retention", "--dry-run"], &cfg);
    assert!(dry.contains("retention would delete 3 tags and 3 manifests"), "{dry}");
    for t in ["ci/app:old-1", "ci/app:old-2", "ci/app:old-3"] {
        assert!(dry.contains(t), "{dry}");
    }
    let tags = |repo: &str| -> Vec<String> {
        let out = run(Command::new("skopeo").args([
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/{repo}", b.addr),
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let mut t: Vec<String> =
            v["Tags"].as_array().expect("tags").iter().map(|t| t.as_str().expect("tag").to_owned()).collect();
        t.sort();
        t
    };
    assert_eq!(tags("ci/app").len(), 6, "a dry run deletes nothing");

    let out = berth_ok(&["retention"], &cfg);
    assert!(out.contains("retention deleted 3 tags and 3 manifests"), "{out}");
    assert_eq!(tags("ci/app"), vec!["new-1", "new-2", "release-1.0"]);
    assert_eq!(tags("cache/app"), vec!["fresh"], "used recently: kept");
    let r = c.head(b.url(&format!("/v2/ci/app/manifests/{}", images["old-1"].manifest))).send().await.expect("HEAD");
    assert_eq!(r.status(), 404, "its manifest went with the tag");
    for t in ["new-1", "new-2", "release-1.0"] {
        skopeo_pull(&b.addr, &format!("ci/app:{t}"), dir.path(), false);
    }
    // The untagged images' blobs go with the next collection.
    let report = run_job(&c, &b.url(""), "/_berth/gc", None).await;
    assert_eq!(report["blobs_deleted"], 9, "{report}");
    assert!(!stored_blobs(&store).contains(&images["old-2"].blobs[0]));
    assert!(b.stop());
}

#[test]
fn quotas_stop_a_push_with_a_clear_error_and_are_reported() {
    if !require("skopeo") {
        return;
    }
    let img = test_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let cfg = config_on_port(
        dir.path(),
        &store,
        "quotas:\n  - namespace: small\n    limit: 4KiB\n  - namespace: big\n    limit: 1GiB\n",
    );
    let b = Berth::start(&cfg);
    let o = output(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &img.oci_ref,
        &format!("docker://{}/small/app:v1", b.addr),
    ]));
    assert!(!o.status.success(), "the push went over quota");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("quota exceeded") && err.contains("namespace small"), "{err}");

    skopeo_copy(&img.oci_ref, &format!("docker://{}/big/app:v1", b.addr));
    skopeo_copy(&img.oci_ref, &format!("docker://{}/big/other:v1", b.addr));
    let out = berth_ok(&["quotas"], &cfg);
    // "<namespace>: <used> of <limit> bytes (<pct> %)"
    let usage = |ns: &str| -> (u64, u64) {
        let line = out.lines().find_map(|l| l.strip_prefix(&format!("{ns}: "))).unwrap_or_else(|| panic!("{out}"));
        let w: Vec<&str> = line.split_whitespace().collect();
        (w[0].parse().expect("used"), w[2].parse().expect("limit"))
    };
    let files: u64 = std::iter::once(&img.manifest_digest)
        .chain(std::iter::once(&img.config_digest))
        .chain(img.layer_digests.iter())
        .map(|d| {
            let hex = d.trim_start_matches("sha256:");
            std::fs::metadata(store.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data"))
                .expect("blob")
                .len()
        })
        .sum();
    assert_eq!(usage("big"), (files, 1 << 30), "two repositories of one image count it once: {out}");
    let (used, limit) = usage("small");
    assert!(used <= limit && limit == 4096, "{out}");
    assert!(b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_administrators_collect_and_only_deleters_delete_repositories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let users = dir.path().join("htpasswd");
    for (u, p) in [("admin", "admin-pw"), ("writer", "writer-pw"), ("reader", "reader-pw")] {
        run_with_input(
            Command::new(berth_bin()).args(["htpasswd", "add", u, "--password-stdin", "--file"]).arg(&users),
            p,
        );
    }
    let auth = format!(
        "auth:\n  htpasswd:\n    realm: Berth\n    path: {}\n  access:\n    admins: [admin]\n    rules:\n      - {{ repositories: [\"**\"], users: [admin, writer], actions: [pull, push, delete] }}\n      - {{ repositories: [\"**\"], users: [reader], actions: [pull] }}\n",
        users.display()
    );
    let cfg = config_on_port(dir.path(), &store, &auth);
    let b = Berth::start(&cfg);
    let c = client();
    // Sends `method path` as `user` (password: user-pw), or anonymously.
    let ask = |method: reqwest::Method, path: &str, user: Option<&str>| {
        let mut req = c.request(method, b.url(path));
        if let Some(u) = user {
            req = req.basic_auth(u, Some(format!("{u}-pw")));
        }
        async move { req.send().await.expect("request") }
    };
    let img = digest_of(b"layer");
    let r = c
        .post(b.url(&format!("/v2/team/app/blobs/uploads/?digest={img}")))
        .basic_auth("writer", Some("writer-pw"))
        .body(b"layer".to_vec())
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), 201);
    for (user, status) in [(None, 401), (Some("reader"), 403), (Some("writer"), 403), (Some("admin"), 202)] {
        let r = ask(reqwest::Method::POST, "/_berth/gc?dryrun=true", user).await;
        assert_eq!(r.status(), status, "{user:?}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert!(status == 202 || body["errors"][0]["code"].is_string(), "{body}");
    }
    // The administrator follows the job to its report.
    let report = run_job(&c, &b.url(""), "/_berth/gc?dryrun=true", Some(("admin", "admin-pw"))).await;
    assert_eq!(report["dry_run"], true, "{report}");
    assert_eq!(ask(reqwest::Method::GET, "/_berth/quotas", Some("reader")).await.status(), 403);

    let repo = "/_berth/repositories/team/app";
    assert_eq!(ask(reqwest::Method::DELETE, repo, Some("reader")).await.status(), 403);
    assert_eq!(ask(reqwest::Method::DELETE, repo, Some("writer")).await.status(), 202);
    let blob = format!("/v2/team/app/blobs/{img}");
    assert_eq!(ask(reqwest::Method::HEAD, &blob, Some("writer")).await.status(), 404);
    let r = ask(reqwest::Method::DELETE, repo, Some("writer")).await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.expect("error json");
    assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN");

    // The command line asks the running server, with the caller's credentials.
    let o = output(
        Command::new(berth_bin())
            .args(["repo", "delete", "team/other"])
            .arg(&cfg)
            .env("BERTH_USER", "admin")
            .env("BERTH_PASSWORD", "admin-pw"),
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("NAME_UNKNOWN"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = output(Command::new(berth_bin()).args(["gc", "--dry-run"]).arg(&cfg));
    assert!(!o.status.success(), "anonymous collection refused");
    // The refusal says what to set.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("401") && err.contains("set BERTH_USER and BERTH_PASSWORD"), "{err}");
    let o = output(
        Command::new(berth_bin())
            .args(["quotas"])
            .arg(&cfg)
            .env("BERTH_USER", "reader")
            .env("BERTH_PASSWORD", "reader-pw"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("403") && err.contains("auth.access.admins"), "{err}");
    let admin_gc = |extra: &[&str]| {
        run(Command::new(berth_bin())
            .args(["gc", "--dry-run"])
            .args(extra)
            .arg(&cfg)
            .env("BERTH_USER", "admin")
            .env("BERTH_PASSWORD", "admin-pw"))
    };
    // The deleted repository's blob is unreferenced, but inside gc.grace;
    // a grace period given on the command line reaches the server.
    let out = admin_gc(&[]);
    assert!(out.contains("garbage collection would delete 0 manifests and 0 blobs"), "{out}");
    assert!(out.contains("the grace period held back 1 blobs"), "{out}");
    let out = admin_gc(&["--grace", "0s"]);
    assert!(out.contains("would delete 0 manifests and 1 blobs") && out.contains(&img), "{out}");
    assert!(b.stop());
}
