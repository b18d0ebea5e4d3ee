//! The binary's life: defaults, configuration checks, restarts and crashes
//! in the middle of uploads, and concurrent clients.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use sha2::Digest as _;

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client")
}

async fn start_upload(c: &reqwest::Client, b: &Berth, repo: &str) -> String {
    let r = c.post(b.url(&format!("/v2/{repo}/blobs/uploads/"))).send().await.expect("POST");
    assert_eq!(r.status(), 202);
    r.headers()["location"].to_str().expect("location").to_owned()
}

#[test]
fn serves_on_embedded_defaults_without_a_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cfg_dir = tempfile::tempdir().expect("tempdir");
    // No config file: everything from defaults, only the port moved off :5000.
    let b = {
        let mut cmd = Command::new(berth_bin());
        cmd.arg("serve")
            .env("BERTH_DATA_DIR", &data)
            .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let _ = cfg_dir;
        let mut child = cmd.spawn().expect("spawn");
        let out = child.stdout.take().expect("stdout");
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(out).lines();
        let first = lines.next().expect("a line").expect("utf8");
        let second = lines.next().expect("a line").expect("utf8");
        assert!(second.contains(&format!("filesystem at {}", data.display())), "{second}");
        assert!(second.contains("sqlite at"), "{second}");
        let addr = first.split("listening on http://").nth(1).expect("address").trim().to_owned();
        (child, addr)
    };
    let (mut child, addr) = b;
    let ok = run(Command::new("curl").args(["-sf", &format!("http://{addr}/v2/")]));
    assert_eq!(ok, "{}");
    assert!(data.join("_berth/metadata.sqlite").exists());
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let st = child.wait().expect("wait");
    assert!(st.success(), "clean exit on SIGTERM: {st:?}");
}

#[test]
fn config_check_accepts_good_files_and_names_bad_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_config(dir.path(), &dir.path().join("store"), "");
    let out = run(Command::new(berth_bin()).args(["config", "check"]).arg(&good));
    assert!(out.contains("configuration OK"), "{out}");
    let bad = dir.path().join("bad.yml");
    for (yaml, key) in [
        ("version: 0.1\nhttp:\n  adr: :5000\n", "http.adr"),
        ("version: 0.1\nstorage:\n  s3:\n    bucket: x\n", "storage.s3"),
        ("version: 0.1\nauth:\n  htpasswd:\n    realm: r\n    path: /x\n", "auth"),
        ("version: 0.1\nhttp: [\n", "parsing"),
    ] {
        std::fs::write(&bad, yaml).expect("write");
        let o = output(Command::new(berth_bin()).args(["config", "check"]).arg(&bad));
        assert!(!o.status.success(), "{yaml} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(key), "{yaml}: {err}");
    }
    // Environment overrides apply to the checked file too.
    let o = output(Command::new(berth_bin()).args(["config", "check"]).arg(&good).env("REGISTRY_LOG_LEVEL", "loud"));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("log.level"));
    // And serve refuses to start on a bad configuration.
    std::fs::write(&bad, "version: 0.1\nhttp:\n  tls:\n    certificate: /x\n").expect("write");
    let o = output(Command::new(berth_bin()).arg("serve").arg(&bad));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("http.tls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_survive_a_restart_and_a_crash_leaves_no_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let cfg = write_config(dir.path(), &store, "");
    let c = client();
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i.wrapping_mul(2246822519) >> 7) as u8).collect();
    let digest = digest_of(&data);

    let b = Berth::start(&cfg);
    let loc = start_upload(&c, &b, "crash/test").await;
    let r = c
        .patch(&loc)
        .header("content-range", "0-1999999")
        .body(data[..2_000_000].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    b.stop();

    // After a clean restart the upload continues where it was.
    let b = Berth::start(&cfg);
    let loc = loc.replace(&loc.split('/').nth(2).expect("host").to_owned(), &b.addr);
    let r = c.get(&loc).send().await.expect("status");
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-1999999");

    // Now crash in the middle of the next chunk: stream part of it, then SIGKILL.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let req = c.patch(&loc).header("content-range", "2000000-5999999").body(body).send();
    let sender = async {
        for chunk in data[2_000_000..4_000_000].chunks(250_000) {
            tx.send(Ok(Bytes::copy_from_slice(chunk))).await.expect("send");
        }
        // Give the server time to write what it received, then crash it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.kill();
        drop(tx);
    };
    let (resp, ()) = tokio::join!(req, sender);
    assert!(resp.is_err() || !resp.expect("response").status().is_success(), "a killed server cannot accept the chunk");
    // No blob is visible at its final path.
    let hex = digest.trim_start_matches("sha256:");
    assert!(!store.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).exists());

    let b = Berth::start(&cfg);
    let loc = loc.replace(&loc.split('/').nth(2).expect("host").to_owned(), &b.addr);
    let r = c.get(&loc).send().await.expect("status");
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-1999999", "the interrupted chunk was not counted");
    let r = c.head(b.url(&format!("/v2/crash/test/blobs/{digest}"))).send().await.expect("HEAD");
    assert_eq!(r.status(), 404);
    // The client resends the chunk and finishes.
    let r = c
        .patch(&loc)
        .header("content-range", "2000000-5999999")
        .body(data[2_000_000..].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    let r = c.put(format!("{loc}?digest={digest}")).send().await.expect("PUT");
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let got =
        c.get(b.url(&format!("/v2/crash/test/blobs/{digest}"))).send().await.expect("GET").bytes().await.expect("body");
    assert_eq!(digest_of(&got), digest);
    assert!(b.stop());
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_of_the_same_blobs_and_tags_leave_a_consistent_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let cfg = write_config(dir.path(), &store, "");
    let b = Berth::start(&cfg);
    let c = client();
    let layers: Vec<Vec<u8>> =
        (0..3u32).map(|n| (0..700_000u32).map(|i| (i.wrapping_mul(n + 3) >> 3) as u8).collect()).collect();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    const CLIENTS: usize = 6;
    let mut tasks = Vec::new();
    for client_no in 0..CLIENTS {
        let (c, layers, config) = (c.clone(), layers.clone(), config.clone());
        let base = b.url("");
        tasks.push(tokio::spawn(async move {
            for (i, blob) in layers.iter().chain(std::iter::once(&config)).enumerate() {
                let d = digest_of(blob);
                if (client_no + i) % 2 == 0 {
                    let r = c.post(format!("{base}/v2/shared/app/blobs/uploads/?digest={d}")).body(blob.clone()).send().await.expect("POST");
                    assert_eq!(r.status(), 201);
                } else {
                    let r = c.post(format!("{base}/v2/shared/app/blobs/uploads/")).send().await.expect("POST");
                    let loc = r.headers()["location"].to_str().expect("loc").to_owned();
                    let half = blob.len() / 2;
                    let r = c.patch(&loc).body(blob[..half].to_vec()).send().await.expect("PATCH");
                    assert_eq!(r.status(), 202);
                    let r = c.put(format!("{loc}?digest={d}")).body(blob[half..].to_vec()).send().await.expect("PUT");
                    assert_eq!(r.status(), 201);
                }
            }
            // Every client tags its own manifest as "latest" and as its own tag.
            let layer_json: Vec<serde_json::Value> = layers
                .iter()
                .map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(l), "size": l.len()}))
                .collect();
            let m = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config), "size": config.len()},
                "layers": layer_json,
                "annotations": {"client": client_no.to_string()},
            }))
            .expect("json");
            for tag in ["latest".to_owned(), format!("c{client_no}")] {
                let r = c
                    .put(format!("{base}/v2/shared/app/manifests/{tag}"))
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(m.clone())
                    .send()
                    .await
                    .expect("PUT manifest");
                assert_eq!(r.status(), 201);
            }
            digest_of(&m)
        }));
    }
    let mut pushed = Vec::new();
    for t in tasks {
        pushed.push(t.await.expect("client task"));
    }
    let check = |b: &Berth| {
        let (c, base, layers, pushed) = (c.clone(), b.url(""), layers.clone(), pushed.clone());
        async move {
            for l in &layers {
                let got = c
                    .get(format!("{base}/v2/shared/app/blobs/{}", digest_of(l)))
                    .send()
                    .await
                    .expect("GET")
                    .bytes()
                    .await
                    .expect("body");
                assert_eq!(&got[..], &l[..]);
            }
            let tags: serde_json::Value = c
                .get(format!("{base}/v2/shared/app/tags/list"))
                .send()
                .await
                .expect("tags")
                .json()
                .await
                .expect("json");
            let mut want: Vec<String> = (0..CLIENTS).map(|i| format!("c{i}")).collect();
            want.push("latest".into());
            assert_eq!(tags["tags"], serde_json::json!(want));
            let r = c
                .head(format!("{base}/v2/shared/app/manifests/latest"))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .expect("HEAD");
            let latest = r.headers()["docker-content-digest"].to_str().expect("digest").to_owned();
            assert!(pushed.contains(&latest), "latest points at a pushed manifest");
            latest
        }
    };
    let latest = check(&b).await;
    assert!(b.stop());
    // Storage and database agree: a database rebuilt from storage alone gives the same answers.
    std::fs::remove_file(store.join("_berth/metadata.sqlite")).expect("remove db");
    let _ = std::fs::remove_file(store.join("_berth/metadata.sqlite-wal"));
    let _ = std::fs::remove_file(store.join("_berth/metadata.sqlite-shm"));
    let b = Berth::start(&cfg);
    assert_eq!(check(&b).await, latest);
    // No upload leftovers after all sessions completed.
    let uploads = store.join("docker/registry/v2/repositories/shared/app/_uploads");
    assert_eq!(std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0), 0);
    assert!(b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_manifest_gets_an_answer_not_a_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &dir.path().join("store"), "");
    let b = Berth::start(&cfg);
    let c = client();
    let body = vec![b' '; 5 * 1024 * 1024];
    let r = c
        .put(b.url("/v2/big/manifests/latest"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
        .send()
        .await
        .expect("the server answers instead of resetting the connection");
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.expect("OCI error JSON");
    assert_eq!(v["errors"][0]["code"], "MANIFEST_INVALID");
    assert!(b.stop());
}
