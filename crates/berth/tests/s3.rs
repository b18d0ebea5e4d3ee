//! Berth on a real S3-compatible store (Garage, started by scripts/garage.sh):
//! the driver suite, real clients through Berth, redirects, importing a
//! bucket the reference registry wrote, and a 3-node cluster losing a node.

mod common;

use std::path::Path;
use std::process::Command;

use berth_storage::s3::{S3Config, S3Driver};
use berth_storage::StorageDriver;
use common::garage::Garage;
use common::push::*;
use common::*;

fn driver_config(g: &Garage, root: &str) -> S3Config {
    S3Config {
        endpoint: g.endpoints[0].clone(),
        region: g.region.clone(),
        bucket: g.bucket.clone(),
        access_key: g.access_key.clone(),
        secret_key: g.secret_key.as_str().into(),
        session_token: None,
        root: root.to_owned(),
        path_style: true,
        skip_verify: false,
        ca_bundle: None,
        chunk_size: berth_storage::s3::MIN_CHUNK_SIZE,
        copy_threshold: 6 << 20,
        copy_chunk_size: 5 << 20,
        copy_concurrency: 4,
        storage_class: Some("STANDARD".into()),
        encrypt: None,
        extra_headers: Vec::new(),
        redirect: None,
        user_agent: "berth-test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_suite_on_garage() {
    let Some(g) = Garage::start(1) else { return };
    let d = S3Driver::new(driver_config(&g, "suite/root")).expect("driver");
    d.check().await.expect("bucket answers");
    berth_storage::conformance::run_all(&d).await;
    // The same suite at the bucket's root.
    let d = S3Driver::new(driver_config(&g, "")).expect("driver");
    berth_storage::conformance::run_all(&d).await;
    // A private CA (AWS_CA_BUNDLE's PEM) is taken; a file without one is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, cert) = (dir.path().join("ca.key"), dir.path().join("ca.pem"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=berth-test-ca", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let pem = std::fs::read(&cert).expect("ca.pem");
    let d = S3Driver::new(S3Config { ca_bundle: Some(pem), ..driver_config(&g, "ca") }).expect("driver with a CA");
    d.check().await.expect("bucket answers");
    let e = S3Driver::new(S3Config { ca_bundle: Some(b"no certificate".to_vec()), ..driver_config(&g, "ca") });
    assert!(e.err().expect("refused").to_string().contains("CA bundle"));
    // Wrong credentials are a clear error, not a hang.
    let bad = S3Driver::new(S3Config { secret_key: "wrong".into(), ..driver_config(&g, "x") }).expect("driver");
    let e = bad.check().await.expect_err("wrong secret refused").to_string();
    assert!(e.contains("403") || e.to_lowercase().contains("signature") || e.contains("Forbidden"), "{e}");
}

/// A Berth configuration on Garage, with its SQLite database in `dir`.
fn berth_on(g: &Garage, dir: &Path, root: &str, extra_storage: &str) -> std::path::PathBuf {
    let cfg = dir.join(format!("berth-{}.yml", uuid_like()));
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n{}{extra_storage}  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:0\ndatabase:\n  path: {}\n",
            g.s3_yaml(root),
            dir.join(format!("meta-{}.sqlite", uuid_like())).display()
        ),
    )
    .expect("write config");
    cfg
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn curl(args: &[&str]) -> String {
    run(Command::new("curl").args(["-s", "--max-time", "60"]).args(args))
}

#[test]
fn clients_push_and_pull_through_berth_on_garage() {
    if !require("skopeo") {
        return;
    }
    let Some(g) = Garage::start(1) else { return };
    let img = test_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Berth::start(&berth_on(&g, dir.path(), "clients", ""));
    let target = format!("{}/s3/app:1", b.addr);
    skopeo_copy(&img.oci_ref, &format!("docker://{target}"));

    // Blob reads redirect to a presigned Garage URL; Range passes through.
    let layer = &img.layer_digests[0];
    let head = curl(&["-o", "/dev/null", "-D", "-", &b.url(&format!("/v2/s3/app/blobs/{layer}"))]);
    assert!(head.starts_with("HTTP/1.1 307"), "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: ").or_else(|| l.strip_prefix("Location: ")))
        .expect("Location")
        .trim()
        .to_owned();
    assert!(location.starts_with(&g.endpoints[0]) && location.contains("X-Amz-Signature="), "{location}");
    let source = oci_layout_path(&img.oci_ref).join("blobs/sha256").join(layer.trim_start_matches("sha256:"));
    let source = std::fs::read(source).expect("source layer");
    let out = dir.path().join("range");
    curl(&["-L", "-r", "3-12", "-o", out.to_str().unwrap(), &b.url(&format!("/v2/s3/app/blobs/{layer}"))]);
    assert_eq!(std::fs::read(&out).unwrap(), &source[3..13], "ranged read through the redirect");

    // skopeo pulls through the redirects, byte for byte.
    let back = dir.path().join("back");
    skopeo_copy(&format!("docker://{target}"), &format!("oci:{}:x", back.display()));
    assert_eq!(layout_blobs(&back), layout_blobs(&oci_layout_path(&img.oci_ref)));

    // A second instance with redirects disabled (and a new database, so it
    // indexes what the first wrote to the bucket) serves the bytes itself.
    let b2 = Berth::start(&berth_on(&g, dir.path(), "clients", "  redirect:\n    disable: true\n"));
    let code =
        curl(&["-o", out.to_str().unwrap(), "-w", "%{http_code}", &b2.url(&format!("/v2/s3/app/blobs/{layer}"))]);
    assert_eq!(code, "200");
    assert_eq!(std::fs::read(&out).unwrap(), source);
    let m = skopeo_raw_manifest(&format!("{}/s3/app:1", b2.addr));
    assert_eq!(m["layers"][0]["digest"], layer.as_str());

    // The docker engine pushes and pulls through Berth on Garage too.
    if !require("dockerd") {
        return;
    }
    let d = Dockerd::start();
    run(d.cmd().args(["load", "-q", "-i"]).arg(&img.docker_archive));
    let target = format!("{}/docker/img:v1", b.addr);
    run(d.cmd().args(["tag", &img.image_name, &target]));
    run(d.cmd().args(["push", &target]));
    run(d.cmd().args(["rmi", "-f", &img.image_name, &target]));
    run(d.cmd().args(["pull", "-q", &target]));
    let id = run(d.cmd().args(["image", "inspect", "-f", "{{.Id}}", &target]));
    assert_eq!(id.trim(), img.config_digest);
}

#[test]
fn import_of_a_bucket_written_by_the_reference_registry() {
    if !require("skopeo") || !require("docker-registry") {
        return;
    }
    let Some(g) = Garage::start(1) else { return };
    let img = test_image();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let storage = format!("{}  redirect:\n    disable: true\n", g.s3_yaml("reference"));
        let r = Reference::start_with_storage(dir.path(), &storage);
        skopeo_copy(&img.oci_ref, &format!("docker://{}/library/app:1", r.addr));
        skopeo_copy(&img.oci_ref, &format!("docker://{}/library/app:2", r.addr));
        skopeo_copy(&img.oci_ref, &format!("docker://{}/other/tool:latest", r.addr));
    }
    let cfg = berth_on(&g, dir.path(), "reference", "");
    let out = run(Command::new(berth_bin()).arg("import").arg(&cfg));
    assert!(out.contains("imported 2 repositories"), "{out}");
    let b = Berth::start(&cfg);
    let tags = curl(&[&b.url("/v2/library/app/tags/list")]);
    let tags: serde_json::Value = serde_json::from_str(&tags).expect("tags JSON");
    assert_eq!(tags["tags"], serde_json::json!(["1", "2"]));
    let catalog = curl(&[&b.url("/v2/_catalog")]);
    assert!(catalog.contains("library/app") && catalog.contains("other/tool"), "{catalog}");
    let back = dir.path().join("back");
    skopeo_copy(&format!("docker://{}/other/tool:latest", b.addr), &format!("oci:{}:x", back.display()));
    assert_eq!(layout_blobs(&back), layout_blobs(&oci_layout_path(&img.oci_ref)));
    // Berth pushes into the same bucket beside what the reference wrote.
    skopeo_copy(&img.oci_ref, &format!("docker://{}/library/app:3", b.addr));
    assert_eq!(skopeo_raw_manifest(&format!("{}/library/app:3", b.addr))["layers"][0]["digest"], img.layer_digests[0]);
}

/// Pushes go on while one node of a 3-node cluster (replication 3) is down,
/// and everything reads back whole once it returns.
#[test]
fn pushes_continue_while_a_garage_node_is_down() {
    let Some(g) = Garage::start(3) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Berth::start(&berth_on(&g, dir.path(), "cluster", "  redirect:\n    disable: true\n"));
    let base = b.url("");
    let rt = runtime();
    let c = http_client();
    let mut pushed = Vec::new();
    let push = |seed: u64, c: &reqwest::Client| {
        let base = base.clone();
        let c = c.clone();
        async move {
            // Layers of 6 MiB in 2 MiB chunks: multipart uploads with tails.
            push_generated_image(&c, &[&base], "cluster/app", &format!("v{seed}"), seed, 2, 6 << 20, 2 << 20).await
        }
    };
    for seed in 0..3 {
        pushed.push(rt.block_on(push(seed, &c)).expect("push with every node up"));
    }
    g.stop_node(3);
    for seed in 3..7 {
        pushed.push(rt.block_on(push(seed, &c)).expect("push with node 3 down"));
    }
    for img in &pushed {
        rt.block_on(check_image(&c, &base, img)).expect("read with node 3 down");
    }
    g.start_node(3);
    for seed in 7..9 {
        pushed.push(rt.block_on(push(seed, &c)).expect("push after node 3 returned"));
    }
    for img in &pushed {
        rt.block_on(check_image(&c, &base, img)).expect("read after node 3 returned");
    }
    // Node 2 down now: what was written while 3 was away still reads back.
    g.stop_node(2);
    for img in &pushed {
        rt.block_on(check_image(&c, &base, img)).expect("read with node 2 down");
    }
}

/// Three instances on one bucket and one PostgreSQL database: the chunks of
/// one upload go to different instances, and each sees every change at once.
#[test]
fn three_instances_share_one_bucket_and_postgres() {
    let Some(g) = Garage::start(1) else { return };
    let Some(dsn) = postgres_database() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("multi.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n{}  redirect:\n    disable: true\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:0\ndatabase:\n  driver: postgres\n  dsn: {dsn}\n",
            g.s3_yaml("multi")
        ),
    )
    .expect("write config");
    // All three start at once: migrations run once, under the database's lock.
    let starting: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn({
                let cfg = cfg.clone();
                move || Berth::start(&cfg)
            })
        })
        .collect();
    let instances: Vec<Berth> = starting.into_iter().map(|t| t.join().expect("instance started")).collect();
    let bases: Vec<String> = instances.iter().map(|b| b.url("")).collect();
    let bases: Vec<&str> = bases.iter().map(String::as_str).collect();
    let rt = runtime();
    let c = http_client();

    // 7 MiB layers in 3 MiB chunks, request i on instance i % 3: the multipart
    // upload one instance began is continued and completed by the others.
    let img = rt
        .block_on(push_generated_image(&c, &bases, "multi/app", "v1", 1, 2, 7 << 20, 3 << 20))
        .expect("push across instances");
    for b in &bases {
        rt.block_on(check_image(&c, b, &img)).expect("every instance serves the image");
    }
    // Another image through the second instance: the others list its tag at once.
    let img2 = rt
        .block_on(push_generated_image(&c, &bases[1..2], "multi/app", "v2", 2, 1, 1 << 20, 1 << 20))
        .expect("push through one instance");
    for b in &bases {
        let tags: serde_json::Value =
            serde_json::from_str(&curl(&[&format!("{b}/v2/multi/app/tags/list")])).expect("tags JSON");
        assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]), "tags on {b}");
    }
    // A delete on the third is seen by the first.
    let code = curl(&[
        "-X",
        "DELETE",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{}/v2/multi/app/manifests/{}", bases[2], img2.manifest),
    ]);
    assert_eq!(code, "202");
    let code = curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("{}/v2/multi/app/manifests/v2", bases[0])]);
    assert_eq!(code, "404", "deleted manifest still served by another instance");
    // A collection on one instance (no grace period) removes what only the
    // deleted image used, from the bucket too, and keeps the rest.
    let report = rt.block_on(run_job(&http_client(), bases[0], "/_berth/gc?grace=0s", None));
    // Its layer, its config and its manifest's bytes.
    assert_eq!(report["blobs_deleted"], 3, "{report}");
    let store = S3Driver::new(driver_config(&g, "multi")).expect("driver");
    for (d, _) in &img2.blobs {
        let d = berth_types::Digest::parse(d).expect("digest");
        let gone = rt.block_on(store.stat(&berth_storage::layout::blob_data(&d)));
        assert!(gone.is_err_and(|e| e.is_not_found()), "{d} still in the bucket");
    }
    for b in &bases {
        rt.block_on(check_image(&c, b, &img)).expect("the tagged image survives the collection");
    }
    // skopeo reads through one instance what the others wrote.
    if require("skopeo") {
        let m = skopeo_raw_manifest(&format!("{}/multi/app:v1", instances[2].addr));
        assert_eq!(m["layers"].as_array().map(Vec::len), Some(2));
    }
}

/// A chunk cut off mid-body leaves the upload where it was: the retried chunk
/// continues from the same multipart upload and tail, and the blob is whole.
#[test]
fn an_interrupted_chunk_is_retried_on_garage() {
    let Some(g) = Garage::start(1) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Berth::start(&berth_on(&g, dir.path(), "retry", "  redirect:\n    disable: true\n"));
    let base = b.url("");
    let rt = runtime();
    let c = http_client();
    let data = seeded_bytes(7, 9 << 20);
    let digest = digest_of(&data);
    let location = |r: &reqwest::Response| {
        let l = r.headers()["location"].to_str().expect("Location").to_owned();
        if l.starts_with("http") {
            l
        } else {
            format!("{base}{l}")
        }
    };
    rt.block_on(async {
        let r = c.post(format!("{base}/v2/retry/app/blobs/uploads/")).send().await.expect("start");
        assert_eq!(r.status(), 202);
        let mut loc = location(&r);
        let patch = |loc: String, from: usize, to: usize, body: reqwest::Body| {
            c.patch(loc)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{from}-{}", to - 1))
                .header("content-length", (to - from).to_string())
                .body(body)
                .send()
        };
        // 3 MiB: less than a part, kept as a tail object.
        let r = patch(loc.clone(), 0, 3 << 20, data[..3 << 20].to_vec().into()).await.expect("chunk 1");
        assert_eq!(r.status(), 202);
        loc = location(&r);
        // The next chunk's body fails after 1 MiB.
        let partial = data[3 << 20..4 << 20].to_vec();
        let failing = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(bytes::Bytes::from(partial)),
            Err(std::io::Error::other("client went away")),
        ]);
        let cut = patch(loc.clone(), 3 << 20, 6 << 20, reqwest::Body::wrap_stream(failing)).await;
        assert!(cut.is_err() || cut.as_ref().is_ok_and(|r| r.status() != 202), "a cut chunk is not accepted");
        let st = c.get(&loc).send().await.expect("status");
        assert_eq!(st.headers()["range"], "0-3145727", "the upload stays at the first chunk");
        // The retry and the rest complete the blob.
        let r = patch(loc.clone(), 3 << 20, 6 << 20, data[3 << 20..6 << 20].to_vec().into()).await.expect("retry");
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        loc = location(&r);
        let r = patch(loc.clone(), 6 << 20, 9 << 20, data[6 << 20..].to_vec().into()).await.expect("chunk 3");
        assert_eq!(r.status(), 202);
        loc = location(&r);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = c.put(format!("{loc}{sep}digest={digest}")).send().await.expect("finish");
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        let got = c.get(format!("{base}/v2/retry/app/blobs/{digest}")).send().await.expect("get");
        assert_eq!(got.status(), 200);
        assert!(got.bytes().await.expect("body") == data, "blob reads back whole");
    });
}
