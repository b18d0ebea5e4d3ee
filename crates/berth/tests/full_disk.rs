//! A full disk, on a small tmpfs: a push answers a clear error that clients
//! do not retry, leaves no upload data behind, reads go on, the metadata
//! database still takes deletions and a collection, and once space is freed
//! pushes succeed and nothing stored earlier is lost.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A tmpfs of `mib` MiB at `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            if std::env::var("BERTH_E2E_ALLOW_MISSING").as_deref() == Ok("1") {
                eprintln!("SKIPPED: cannot mount a tmpfs (root is needed)");
                return None;
            }
            panic!("cannot mount a tmpfs at {} (the test needs root)", dir.display());
        }
        Some(Tmpfs(dir.to_owned()))
    }

    fn free(&self) -> u64 {
        let out = run(Command::new("df").args(["--output=avail", "-B1"]).arg(&self.0));
        out.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df avail")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// An image in skopeo's `dir:` format with one layer of `size` random bytes.
fn dir_image(dir: &Path, seed: u64, size: usize) -> String {
    std::fs::create_dir_all(dir).expect("image dir");
    let layer = push::seeded_bytes(seed, size);
    let config =
        format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"seed":{seed}}}"#);
    let (ld, cd) = (push::digest_of(&layer), push::digest_of(config.as_bytes()));
    std::fs::write(dir.join(ld.trim_start_matches("sha256:")), &layer).expect("layer");
    std::fs::write(dir.join(cd.trim_start_matches("sha256:")), &config).expect("config");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{size}}}]}}"#,
        config.len()
    );
    std::fs::write(dir.join("manifest.json"), manifest).expect("manifest");
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n").expect("version");
    format!("dir:{}", dir.display())
}

fn skopeo_push(src: &str, addr: &str, target: &str) -> std::process::Output {
    output(Command::new("skopeo").args([
        "copy",
        "--retry-times",
        "0",
        "--dest-tls-verify=false",
        src,
        &format!("docker://{addr}/{target}"),
    ]))
}

/// Files under the store's upload directories.
fn upload_files(store: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>, in_uploads: bool) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            let uploads = in_uploads || e.file_name() == "_uploads";
            if path.is_dir() {
                walk(&path, out, uploads);
            } else if uploads {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&store.join("docker/registry/v2/repositories"), &mut out, false);
    out
}

#[test]
fn a_full_disk_refuses_pushes_clearly_and_recovers() {
    if !require("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), 48) else { return };
    let store = disk.0.join("store");
    let cfg = write_config(dir.path(), &store, "");
    let cfg_text =
        std::fs::read_to_string(&cfg).unwrap().replace("  filesystem:\n", "  filesystem:\n    reserve: 4MiB\n");
    std::fs::write(&cfg, cfg_text).unwrap();
    let b = Berth::start(&cfg);

    // Two images that fit.
    let keep = dir_image(&dir.path().join("keep"), 1, 3 << 20);
    let spare = dir_image(&dir.path().join("spare"), 2, 6 << 20);
    assert!(skopeo_push(&keep, &b.addr, "team/keep:1").status.success());
    assert!(skopeo_push(&spare, &b.addr, "team/spare:1").status.success());

    // Something else fills the disk to under the reserve.
    let filler = disk.0.join("filler");
    let room = disk.free().saturating_sub(2 << 20);
    std::fs::write(&filler, vec![0u8; room as usize]).expect("filler");
    let big = dir_image(&dir.path().join("big"), 3, 8 << 20);
    let out = skopeo_push(&big, &b.addr, "team/big:1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the push is refused");
    assert!(err.contains("507 Insufficient Storage (no space left on device)"), "the cause is named: {err}");
    assert!(upload_files(&store).is_empty(), "no upload data stays behind: {:?}", upload_files(&store));
    // The docker engine reads the answer (its body is drained) and does not
    // retry it (without the cause in the status line it retried for a minute).
    if require("dockerd") {
        let d = Dockerd::start();
        let img = test_image();
        let target = format!("{}/team/docker:1", b.addr);
        run(d.cmd().args(["load", "-q", "-i"]).arg(&img.docker_archive));
        run(d.cmd().args(["tag", &img.image_name, &target]));
        let started = std::time::Instant::now();
        let out = output(d.cmd().args(["push", &target]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("no space left on device"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "not retried: {:?}", started.elapsed());
        assert!(upload_files(&store).is_empty(), "{:?}", upload_files(&store));
    }

    // Reads go on.
    let pulled = dir.path().join("pulled");
    skopeo_copy(&format!("docker://{}/team/keep:1", b.addr), &format!("dir:{}", pulled.display()));
    // The metadata database still takes deletions and a collection.
    let digest = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{}/team/spare:1", b.addr),
    ]));
    let status = curl_status(&["-X", "DELETE", &b.url(&format!("/v2/team/spare/manifests/{}", digest.trim()))]);
    assert_eq!(status, "202", "a delete on a full disk");
    let out = run(Command::new(berth_bin()).args(["gc", "--delete-untagged", "--grace", "0s"]).arg(&cfg));
    assert!(out.contains("deleted"), "{out}");

    // Room again: pushes succeed, and what was stored before is whole.
    std::fs::remove_file(&filler).unwrap();
    assert!(skopeo_push(&big, &b.addr, "team/big:1").status.success(), "a push after space was freed");
    for image in ["team/keep:1", "team/big:1"] {
        let to = dir.path().join(image.replace([':', '/'], "-"));
        skopeo_copy(&format!("docker://{}/{image}", b.addr), &format!("dir:{}", to.display()));
    }
    assert!(b.stop());
}
