//! Several registries in one process, chosen by the Host header, with real
//! clients: two registries on `127.0.0.1:PORT` and `localhost:PORT`, each with
//! its own store, users and token issuer (skopeo, podman and the docker
//! engine log in and push and pull; neither user reaches the other registry,
//! tokens and mounts do not cross); and a host pattern with an allow-list,
//! each allowed cluster with its own root, others answered 421 or sent to the
//! default, maintenance commands choosing with `--registry`.

mod common;

use std::path::Path;
use std::process::Command;

use common::push::{check_image, digest_of, http_client, push_generated_image, runtime, seeded_bytes};
use common::*;

fn add_user(file: &Path, user: &str, pw: &str) {
    run_with_input(
        Command::new(berth_bin()).args(["htpasswd", "add", user, "--password-stdin", "--file"]).arg(file),
        &format!("{pw}\n"),
    );
}

/// A blob pushed whole (POST with `digest`); the status.
async fn push_blob(c: &reqwest::Client, base: &str, host: &str, repo: &str, data: &[u8], token: Option<&str>) -> u16 {
    let mut r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={}", digest_of(data)))
        .header("host", host)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec());
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.expect("push a blob").status().as_u16()
}

async fn token(c: &reqwest::Client, base: &str, host: &str, service: &str, scope: &str) -> String {
    let r = c
        .get(format!("{base}/auth/token?service={service}&scope={scope}"))
        .header("host", host)
        .basic_auth("shared", Some("shared-pw"))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 200, "{host}: token for {service}");
    let v: serde_json::Value = r.json().await.expect("token json");
    v["token"].as_str().expect("a token").to_owned()
}

fn blob_file(root: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    root.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
}

#[test]
fn two_registries_by_host_with_their_own_users_tokens_and_stores() {
    if !require("skopeo") || !require("podman") {
        return;
    }
    let img = test_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    add_user(&d.join("ci.htpasswd"), "ci-bot", "ci-pw");
    add_user(&d.join("ci.htpasswd"), "shared", "shared-pw");
    add_user(&d.join("cache.htpasswd"), "rel-bot", "rel-pw");
    add_user(&d.join("cache.htpasswd"), "shared", "shared-pw");
    // Everything per registry comes from one default through {registry}.
    let cfg = d.join("berth.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\nhttp:\n  addr: 127.0.0.1:0\nstorage:\n  delete:\n    enabled: true\n  \
             filesystem:\n    rootdirectory: {d}/{{registry}}\nauth:\n  htpasswd:\n    realm: Berth\n    \
             path: {d}/{{registry}}.htpasswd\n  issuer:\n    service: \"{{registry}}\"\n    key: {d}/{{registry}}.pem\n\
             registries:\n  ci:\n    hosts: [127.0.0.1]\n  cache:\n    hosts: [localhost]\n",
            d = d.display()
        ),
    )
    .unwrap();
    let b = Berth::start(&cfg);
    let port = b.addr.rsplit(':').next().unwrap().to_owned();
    let ci = format!("127.0.0.1:{port}");
    let cache = format!("localhost:{port}");

    // skopeo: the same repository name holds an OCI image in ci and a Docker one in cache.
    let copy = |creds: &str, format: &[&str], dst: &str| {
        let mut c = Command::new("skopeo");
        c.args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", creds]).args(format);
        output(c.arg(&img.oci_ref).arg(format!("docker://{dst}/app/img:v1")))
    };
    assert!(copy("ci-bot:ci-pw", &[], &ci).status.success(), "ci-bot pushes to ci");
    assert!(copy("rel-bot:rel-pw", &["--format", "v2s2"], &cache).status.success(), "rel-bot pushes to cache");
    assert!(!copy("ci-bot:ci-pw", &[], &cache).status.success(), "ci-bot is no user of cache");
    assert!(!copy("rel-bot:rel-pw", &[], &ci).status.success(), "rel-bot is no user of ci");
    let inspect = |creds: &str, at: &str| {
        output(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            creds,
            &format!("docker://{at}/app/img:v1"),
        ]))
    };
    let media = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["mediaType"].as_str().unwrap_or("").to_owned()
    };
    assert_ne!(media(inspect("ci-bot:ci-pw", &ci)), "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(media(inspect("rel-bot:rel-pw", &cache)), "application/vnd.docker.distribution.manifest.v2+json");
    assert!(!inspect("rel-bot:rel-pw", &ci).status.success(), "rel-bot cannot read ci");
    let ci_manifest = digest_of(
        &output(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "ci-bot:ci-pw",
            &format!("docker://{ci}/app/img:v1"),
        ]))
        .stdout,
    );
    assert!(blob_file(&d.join("ci"), &ci_manifest).exists(), "ci's manifest is in ci's store");
    assert!(!blob_file(&d.join("cache"), &ci_manifest).exists(), "and not in cache's");

    // podman logs in per host.
    let work = d.join("podman");
    let podman = |args: &[&str]| {
        let mut c = common::podman(&work);
        c.args(args).env("REGISTRY_AUTH_FILE", d.join("podman-auth.json"));
        c
    };
    let login = |user: &str, pw: &str, at: &str| {
        output_with_input(&mut podman(&["login", "--tls-verify=false", "-u", user, "--password-stdin", at]), pw)
    };
    assert!(login("rel-bot", "rel-pw", &cache).status.success());
    assert!(!login("rel-bot", "rel-pw", &ci).status.success(), "podman: rel-bot is refused by ci");
    run(&mut podman(&["pull", "-q", "--tls-verify=false", &format!("{cache}/app/img:v1")]));
    let id = run(&mut podman(&["image", "inspect", "-f", "{{.Id}}", &format!("{cache}/app/img:v1")]));
    assert_eq!(format!("sha256:{}", id.trim()), img.config_digest);
    let _ = Command::new("rm").arg("-rf").arg(&work).status();

    // The docker engine logs in per host too.
    if require("dockerd") {
        let engine = Dockerd::start();
        let login = |user: &str, pw: &str, at: &str| {
            output_with_input(engine.cmd().args(["login", "-u", user, "--password-stdin", at]), pw)
        };
        assert!(login("ci-bot", "ci-pw", &ci).status.success());
        assert!(!login("ci-bot", "ci-pw", &cache).status.success(), "docker: ci-bot is refused by cache");
        run(engine.cmd().args(["pull", "-q", &format!("{ci}/app/img:v1")]));
        let id = run(engine.cmd().args(["image", "inspect", "-f", "{{.Id}}", &format!("{ci}/app/img:v1")]));
        assert_eq!(id.trim(), img.config_digest);
    }

    runtime().block_on(async {
        let c = http_client();
        let base = format!("http://{}", b.addr);
        // A token ci issued (same user, same password in both) is refused by cache.
        let scope = "repository:app/img:pull,push";
        let ci_token = token(&c, &base, &ci, "ci", scope).await;
        let get = |host: &str, t: &str| {
            c.get(format!("{base}/v2/app/img/manifests/v1"))
                .header("host", host)
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .bearer_auth(t)
                .send()
        };
        assert_eq!(get(&ci, &ci_token).await.unwrap().status(), 200);
        assert_eq!(get(&cache, &ci_token).await.unwrap().status(), 401, "ci's token in cache");
        let cache_token = token(&c, &base, &cache, "cache", scope).await;
        assert_eq!(get(&ci, &cache_token).await.unwrap().status(), 401, "cache's token in ci");

        // A blob only ci holds: mounted within ci, never into cache.
        let only = seeded_bytes(13, 4096);
        assert_eq!(push_blob(&c, &base, &ci, "app/img", &only, Some(&ci_token)).await, 201);
        let mount = |host: &str, t: &str| {
            let url = format!("{base}/v2/app/img/blobs/uploads/?mount={}&from=app/img", digest_of(&only));
            c.post(url).header("host", host).bearer_auth(t).send()
        };
        assert_eq!(mount(&ci, &ci_token).await.unwrap().status(), 201, "a mount within ci");
        assert_eq!(mount(&cache, &cache_token).await.unwrap().status(), 202, "no mount across: an upload starts");
        assert!(blob_file(&d.join("ci"), &digest_of(&only)).exists());
        assert!(!blob_file(&d.join("cache"), &digest_of(&only)).exists());

        // A host no registry serves.
        let r = c.get(format!("{base}/v2/")).header("host", "other.example.test").send().await.unwrap();
        assert_eq!(r.status(), 421);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED", "{v}");
    });
    assert!(b.stop(), "a clean stop");
}

fn pattern_config(d: &Path, default: &str) -> std::path::PathBuf {
    let cfg = d.join("berth.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\nhttp:\n  addr: 127.0.0.1:0\nstorage:\n  delete:\n    enabled: true\n  \
             filesystem:\n    rootdirectory: {}/yt/{{cluster}}\nregistries:\n  yt:\n    \
             hosts: [\"registry.{{cluster}}.example.test\"]\n    vars:\n      cluster: [hume, hahn]\n{default}",
            d.display()
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn a_host_pattern_serves_only_its_allowed_clusters_each_in_its_own_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let b = Berth::start(&pattern_config(d, ""));
    let port = b.addr.rsplit(':').next().unwrap().to_owned();
    let host = |cluster: &str| format!("registry.{cluster}.example.test:{port}");
    let base = format!("http://{}", b.addr);
    let (hume_blob, hahn_blob) = (seeded_bytes(1, 2048), seeded_bytes(2, 2048));
    runtime().block_on(async {
        let c = http_client();
        assert_eq!(push_blob(&c, &base, &host("hume"), "team/app", &hume_blob, None).await, 201);
        assert_eq!(push_blob(&c, &base, &host("hahn"), "team/app", &hahn_blob, None).await, 201);
        let head = |cluster: &str, data: &[u8]| {
            c.head(format!("{base}/v2/team/app/blobs/{}", digest_of(data))).header("host", host(cluster)).send()
        };
        assert_eq!(head("hume", &hume_blob).await.unwrap().status(), 200);
        assert_eq!(head("hahn", &hume_blob).await.unwrap().status(), 404, "hahn does not hold hume's blob");
        assert_eq!(head("freud", &hume_blob).await.unwrap().status(), 421, "freud is not in the allow-list");
    });
    assert!(blob_file(&d.join("yt/hume"), &digest_of(&hume_blob)).exists(), "hume's data under hume's root");
    assert!(!blob_file(&d.join("yt/hahn"), &digest_of(&hume_blob)).exists());
    assert!(!d.join("yt/freud").exists(), "nothing made for a name outside the allow-list");

    // Maintenance commands choose the registry; collection in one leaves the other alone.
    let berth = |args: &[&str]| {
        let mut c = Command::new(berth_bin());
        c.args(args).arg("-c").arg(d.join("berth.yml"));
        output(&mut c)
    };
    let o = berth(&["gc"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("say which with --registry NAME"));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = berth(&["gc", "--registry", "yt.hume", "--grace", "1s"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!blob_file(&d.join("yt/hume"), &digest_of(&hume_blob)).exists(), "hume's unreferenced blob collected");
    assert!(blob_file(&d.join("yt/hahn"), &digest_of(&hahn_blob)).exists(), "hahn's untouched");
    assert!(b.stop());

    // With a default, a host outside the list goes to it.
    let b = Berth::start(&pattern_config(d, "default: yt.hahn\n"));
    let port = b.addr.rsplit(':').next().unwrap().to_owned();
    runtime().block_on(async {
        let r = http_client()
            .head(format!("http://{}/v2/team/app/blobs/{}", b.addr, digest_of(&hahn_blob)))
            .header("host", format!("registry.freud.example.test:{port}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the default registry answers");
    });
    assert!(b.stop());
}

/// A single registry (its store and PostgreSQL database) becomes one of two
/// by adding `registries:`, without moving data; the second keeps its
/// metadata in its own schema of the same database. Retention and collection
/// in one leave the other alone, and a quota in one counts only its own bytes.
#[test]
fn a_single_registry_becomes_one_of_two_and_their_lifecycles_and_quotas_stay_apart() {
    let Some(dsn) = postgres_database() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let single = format!(
        "version: 0.1\nlog:\n  level: warn\nhttp:\n  addr: 127.0.0.1:0\nstorage:\n  delete:\n    enabled: true\n  \
         filesystem:\n    rootdirectory: {}/main\ndatabase:\n  driver: postgres\n  dsn: {dsn}\ngc:\n  grace: 1s\n",
        d.display()
    );
    let cfg = d.join("berth.yml");
    std::fs::write(&cfg, &single).unwrap();
    let rt = runtime();
    let c = http_client();
    let b = Berth::start(&cfg);
    let base = format!("http://{}", b.addr);
    let pushed: Vec<_> = (1..=3u64)
        .map(|n| {
            let tag = format!("a{n}");
            rt.block_on(push_generated_image(&c, &[&base], "app/img", &tag, n, 1, 8192, 8192)).expect("push")
        })
        .collect();
    assert!(b.stop());

    // The same file, now with two registries: ci is the old one, as it was.
    let two = format!(
        "{single}registries:\n  ci:\n    hosts: [127.0.0.1]\n    retention:\n      policies:\n        \
         - repositories: [\"**\"]\n          keeplast: 1\n          deleteuntagged: true\n  cache:\n    \
         hosts: [localhost]\n    storage:\n      filesystem:\n        rootdirectory: {}/cache\n    database:\n      \
         schema: berth_cache\n    quotas:\n      - namespace: app\n        limit: 6KiB\n",
        d.display()
    );
    std::fs::write(&cfg, two).unwrap();
    let b = Berth::start(&cfg);
    let port = b.addr.rsplit(':').next().unwrap().to_owned();
    let (ci, cache) = (format!("http://127.0.0.1:{port}"), format!("http://localhost:{port}"));
    let berth = |args: &[&str]| {
        let o = output(Command::new(berth_bin()).args(args).arg("-c").arg(&cfg));
        assert!(o.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let tags = |base: &str| {
        rt.block_on(async {
            let r = c.get(format!("{base}/v2/app/img/tags/list")).send().await.unwrap();
            if r.status() == 404 {
                return Vec::new();
            }
            let v: serde_json::Value = r.json().await.unwrap();
            v["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect::<Vec<_>>()
        })
    };
    let held = rt.block_on(async {
        for img in &pushed {
            check_image(&c, &ci, img).await.expect("ci serves what the single registry held");
        }
        let r = c.get(format!("{cache}/v2/app/img/manifests/a1")).send().await.unwrap();
        assert_eq!(r.status(), 404, "cache does not see ci's repository");
        // Cache's quota counts cache's bytes only: ci's 24 KiB in app are not its.
        let held = push_generated_image(&c, &[&cache], "app/img", "c1", 9, 1, 4096, 4096).await.expect("cache push");
        assert_eq!(push_blob(&c, &cache, "localhost", "app/img", &seeded_bytes(10, 4096), None).await, 403);
        held
    });
    assert!(berth(&["quotas", "--registry", "cache"]).contains(&format!("app: {} of 6144 bytes", {
        held.blobs.iter().map(|(_, b)| b.len()).sum::<usize>() + rt.block_on(manifest_len(&c, &cache, "c1"))
    })));
    assert_eq!(tags(&cache), ["c1"]);

    // Retention and collection in ci: its old tags and their blobs go, cache keeps everything.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    berth(&["gc", "--registry", "cache", "--grace", "1s"]);
    assert_eq!(tags(&ci), ["a1", "a2", "a3"], "collection in cache leaves ci alone");
    berth(&["retention", "--registry", "ci"]);
    assert_eq!(tags(&ci), ["a3"]);
    berth(&["gc", "--registry", "ci", "--grace", "1s"]);
    let layer = |img: &common::push::PushedImage| digest_of(&img.blobs[0].1);
    assert!(!blob_file(&d.join("main"), &layer(&pushed[0])).exists(), "a1's layer collected in ci");
    assert!(blob_file(&d.join("main"), &layer(&pushed[2])).exists(), "a3's layer kept");
    assert_eq!(tags(&cache), ["c1"], "ci's retention leaves cache alone");
    rt.block_on(check_image(&c, &cache, &held)).expect("cache's image whole");
    assert!(blob_file(&d.join("cache"), &layer(&held)).exists());
    assert!(b.stop());
}

async fn manifest_len(c: &reqwest::Client, base: &str, tag: &str) -> usize {
    let r = c
        .get(format!("{base}/v2/app/img/manifests/{tag}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    r.bytes().await.unwrap().len()
}
