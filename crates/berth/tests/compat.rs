//! Two-way storage compatibility with the reference registry (distribution
//! 2.8): each serves a store the other wrote, and the same images come out.

mod common;

use std::process::Command;

use common::*;

fn manifest_digest_of(image: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ])))
    .expect("inspect JSON");
    v["Digest"].as_str().expect("digest").to_owned()
}

#[test]
fn a_store_written_by_the_reference_registry_is_served_by_berth() {
    if !require("docker-registry") || !require("skopeo") {
        return;
    }
    let img = test_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    {
        let reference = Reference::start(dir.path(), &store);
        skopeo_copy(&img.oci_ref, &format!("docker://{}/lib/app:v1", reference.addr));
        skopeo_copy(&img.oci_ref, &format!("docker://{}/lib/app:v2", reference.addr));
        // A Docker schema 2 copy and a manifest list, as docker clients push them.
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
            &img.oci_ref,
            &format!("docker://{}/other/app:docker", reference.addr),
        ]));
    }
    // Berth on the same directory, with no database yet: it indexes the store first.
    let cfg = write_config(dir.path(), &store, "");
    let b = Berth::start(&cfg);
    assert!(store.join("_berth/metadata.sqlite").exists());
    let catalog = run(Command::new("curl").args(["-sf", &b.url("/v2/_catalog")]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&catalog).unwrap()["repositories"],
        serde_json::json!(["lib/app", "other/app"])
    );
    let tags =
        run(Command::new("skopeo").args(["list-tags", "--tls-verify=false", &format!("docker://{}/lib/app", b.addr)]));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&tags).unwrap()["Tags"], serde_json::json!(["v1", "v2"]));
    assert_eq!(manifest_digest_of(&format!("{}/lib/app:v1", b.addr)), img.manifest_digest);
    let back = dir.path().join("back");
    skopeo_copy(&format!("docker://{}/lib/app:v1", b.addr), &format!("oci:{}:v1", back.display()));
    assert_eq!(layout_blobs(&back), layout_blobs(&oci_layout_path(&img.oci_ref)));
    let docker = skopeo_raw_manifest(&format!("{}/other/app:docker", b.addr));
    assert_eq!(docker["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    // And pushes keep working on the imported store.
    skopeo_copy(&img.oci_ref, &format!("docker://{}/lib/app:v3", b.addr));
    assert!(b.stop());

    // `berth import` is idempotent and reports what it found.
    let out = run(Command::new(berth_bin()).arg("import").arg(&cfg));
    assert!(out.contains("imported 2 repositories"), "{out}");
    assert!(out.contains("0 entries skipped"), "{out}");
}

#[test]
fn a_store_written_by_berth_is_served_by_the_reference_registry() {
    if !require("docker-registry") || !require("skopeo") {
        return;
    }
    let img = test_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let cfg = write_config(dir.path(), &store, "");
    let b = Berth::start(&cfg);
    skopeo_copy(&img.oci_ref, &format!("docker://{}/team/app:v1", b.addr));
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &img.oci_ref,
        &format!("docker://{}/team/docker:latest", b.addr),
    ]));
    // A chunked upload, so upload-path layout is exercised too.
    let blob = b"a blob pushed in two chunks";
    let digest = format!("sha256:{}", sha256_hex(blob));
    let loc = run(Command::new("curl").args([
        "-sf",
        "-o",
        "/dev/null",
        "-w",
        "%header{location}",
        "-X",
        "POST",
        &b.url("/v2/team/app/blobs/uploads/"),
    ]));
    run(Command::new("curl").args([
        "-sf",
        "-X",
        "PATCH",
        "--data-binary",
        "a blob pushed ",
        "-H",
        "Content-Range: 0-13",
        &loc,
    ]));
    run(Command::new("curl").args([
        "-sf",
        "-X",
        "PUT",
        "--data-binary",
        "in two chunks",
        &format!("{loc}?digest={digest}"),
    ]));
    let v2s2 = manifest_digest_of(&format!("{}/team/docker:latest", b.addr));
    assert!(b.stop());

    let reference = Reference::start(dir.path(), &store);
    assert_eq!(manifest_digest_of(&format!("{}/team/app:v1", reference.addr)), img.manifest_digest);
    assert_eq!(manifest_digest_of(&format!("{}/team/docker:latest", reference.addr)), v2s2);
    let back = dir.path().join("back");
    skopeo_copy(&format!("docker://{}/team/app:v1", reference.addr), &format!("oci:{}:v1", back.display()));
    assert_eq!(layout_blobs(&back), layout_blobs(&oci_layout_path(&img.oci_ref)));
    let tags = run(Command::new("skopeo").args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/team/app", reference.addr),
    ]));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&tags).unwrap()["Tags"], serde_json::json!(["v1"]));
    let got = run(Command::new("curl").args(["-sf", &format!("http://{}/v2/team/app/blobs/{digest}", reference.addr)]));
    assert_eq!(got.as_bytes(), blob);
    let catalog = run(Command::new("curl").args(["-sf", &format!("http://{}/v2/_catalog", reference.addr)]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&catalog).unwrap()["repositories"],
        serde_json::json!(["team/app", "team/docker"])
    );
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}
