//! Real registry clients against the real `berth` binary: skopeo, oras,
//! podman and the docker CLI with a docker engine.

mod common;

use std::process::Command;

use common::*;

fn setup() -> (tempfile::TempDir, Berth) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &dir.path().join("store"), "");
    let b = Berth::start(&cfg);
    (dir, b)
}

#[test]
fn skopeo_copy_inspect_list_tags_and_delete() {
    if !require("skopeo") {
        return;
    }
    let img = test_image();
    let (dir, b) = setup();
    let dest = format!("{}/skopeo/img", b.addr);
    skopeo_copy(&img.oci_ref, &format!("docker://{dest}:v1"));
    skopeo_copy(&img.oci_ref, &format!("docker://{dest}:v2"));

    let inspect: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{dest}:v1"),
    ])))
    .expect("inspect JSON");
    assert_eq!(inspect["Digest"], img.manifest_digest.as_str());
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(img.layer_digests.len()));
    assert_eq!(inspect["Labels"]["berth.test.layers"], "3");

    let tags: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ])))
    .expect("tags JSON");
    assert_eq!(tags["Tags"], serde_json::json!(["v1", "v2"]));

    // Back out into a fresh layout: the same blobs, byte for byte.
    let back = dir.path().join("back");
    skopeo_copy(&format!("docker://{dest}:v1"), &format!("oci:{}:v1", back.display()));
    assert_eq!(layout_blobs(&back), layout_blobs(&oci_layout_path(&img.oci_ref)));

    // Delete by digest removes the manifest and every tag on it.
    run(Command::new("skopeo").args([
        "delete",
        "--tls-verify=false",
        &format!("docker://{dest}@{}", img.manifest_digest),
    ]));
    let out = output(Command::new("skopeo").args(["inspect", "--tls-verify=false", &format!("docker://{dest}:v1")]));
    assert!(!out.status.success(), "image still there after delete");
    let tags: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ])))
    .unwrap_or(serde_json::Value::Null);
    assert!(tags["Tags"].as_array().is_none_or(Vec::is_empty), "tags left: {tags}");
    assert!(b.stop(), "berth exits cleanly on SIGTERM");
}

#[test]
fn oras_pushes_and_pulls_artifacts() {
    if !require("skopeo") {
        return;
    }
    let py = venv_python();
    if !py.exists() {
        if std::env::var("BERTH_E2E_ALLOW_MISSING").as_deref() == Ok("1") {
            eprintln!("SKIPPED: no oras venv");
            return;
        }
        panic!("{} missing: run scripts/install-test-deps.sh", py.display());
    }
    let (dir, b) = setup();
    let file = dir.path().join("artifact.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&file, &data).expect("write artifact");
    let script = repo_root().join("scripts/oras-roundtrip.py");
    for (tag, extra) in [("v1", &[][..]), ("v11", &["--v11", "--chunked"][..])] {
        let out = run(Command::new(&py)
            .arg(&script)
            .arg(&b.addr)
            .arg(format!("oras/artifact:{tag}"))
            .arg(&file)
            .args(extra)
            .env("BERTH_ORAS_RETRY_SLEEP", "0.2"));
        assert!(out.contains("OK:"), "{out}");
    }
    // The v1.1 artifact is an image manifest with artifactType and an empty config.
    let m = skopeo_raw_manifest(&format!("{}/oras/artifact:v11", b.addr));
    assert!(m["artifactType"].is_string(), "{m}");
    assert_eq!(m["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
    assert_eq!(m["layers"][0]["size"], data.len());
}

#[test]
fn podman_pushes_and_pulls() {
    if !require("podman") {
        return;
    }
    let img = test_image();
    let (dir, b) = setup();
    let work = dir.path().join("podman");
    run(podman(&work).args(["load", "-q", "-i"]).arg(&img.docker_archive));
    let target = format!("{}/podman/img:v1", b.addr);
    run(podman(&work).args(["push", "-q", "--tls-verify=false", &img.image_name, &target]));
    run(podman(&work).args(["rmi", "-a", "-f"]));
    run(podman(&work).args(["pull", "-q", "--tls-verify=false", &target]));
    let id = run(podman(&work).args(["image", "inspect", "--format", "{{.Id}}", &target]));
    assert_eq!(format!("sha256:{}", id.trim()), img.config_digest);
    // podman keeps the Docker schema 2 type of an image loaded from a docker archive.
    let m = skopeo_raw_manifest(&target);
    assert_eq!(m["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    let _ = Command::new("sh").arg("-c").arg(format!("rm -rf {}", work.display())).status();
}

#[test]
fn docker_load_push_remove_pull() {
    if !require("dockerd") {
        return;
    }
    let img = test_image();
    let (_dir, b) = setup();
    let d = Dockerd::start();
    run(d.cmd().args(["load", "-q", "-i"]).arg(&img.docker_archive));
    let target = format!("{}/docker/img:v1", b.addr);
    run(d.cmd().args(["tag", &img.image_name, &target]));
    let pushed = run(d.cmd().args(["push", &target]));
    let digest = pushed
        .lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in push output: {pushed}"))
        .to_owned();
    run(d.cmd().args(["rmi", "-f", &img.image_name, &target]));
    run(d.cmd().args(["pull", "-q", &target]));
    let id = run(d.cmd().args(["image", "inspect", "-f", "{{.Id}}", &target]));
    assert_eq!(id.trim(), img.config_digest);
    let repo_digests = run(d.cmd().args(["image", "inspect", "-f", "{{json .RepoDigests}}", &target]));
    assert!(repo_digests.contains(&digest), "{repo_digests} lacks {digest}");
    // A second repository mounts the layers instead of uploading them again.
    let second = format!("{}/docker/copy:v1", b.addr);
    run(d.cmd().args(["tag", &target, &second]));
    let out = run(d.cmd().args(["push", &second]));
    assert!(out.contains("Mounted from") || out.contains("Layer already exists"), "{out}");
}
