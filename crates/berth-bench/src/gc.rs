//! Garbage collection on one distribution-layout store, copied for each
//! registry: `berth gc` (after `berth import` built its database) against
//! `docker-registry garbage-collect`, as a dry run (marking only) and for real.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bytes::Bytes;

use crate::blobs::{digest_of, make_blobs, manifest_json, Blob};
use crate::server::{self, Kind};
use crate::store::{blob_path, hex, write};
use crate::{header, Better, Env, Report};

/// Repositories the images and the unreferenced blobs spread over.
const REPOS: usize = 100;
/// Layers of each image (plus its config and its manifest: 25 blobs).
const LAYERS: usize = 23;

/// Writes `images` tagged images of `LAYERS` small layers each, and
/// `orphans` blobs linked into repositories but named by no manifest (pushed
/// layers whose manifest never came, or was deleted).
fn write_gc_store(root: &Path, images: usize, orphans: usize) -> Result<()> {
    let repos = root.join("docker/registry/v2/repositories");
    let link =
        |repo: &str, d: &str| write(&repos.join(repo).join("_layers/sha256").join(hex(d)).join("link"), d.as_bytes());
    for i in 0..images {
        let repo = format!("gc/r{:03}", i % REPOS);
        let layers = make_blobs(LAYERS, 200);
        let data = Bytes::from(format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"id\":{i}}}"));
        let config = Blob { digest: digest_of(&data), data };
        for b in layers.iter().chain(std::iter::once(&config)) {
            write(&blob_path(root, &b.digest), &b.data)?;
            link(&repo, &b.digest)?;
        }
        let m = manifest_json(&config, &layers, None);
        let md = digest_of(&m);
        write(&blob_path(root, &md), &m)?;
        let r = repos.join(&repo);
        write(&r.join("_manifests/revisions/sha256").join(hex(&md)).join("link"), md.as_bytes())?;
        let tag = r.join("_manifests/tags").join(format!("t{i}"));
        write(&tag.join("current/link"), md.as_bytes())?;
        write(&tag.join("index/sha256").join(hex(&md)).join("link"), md.as_bytes())?;
    }
    write_orphans(root, &make_blobs(orphans, 200))
}

fn write_orphans(root: &Path, blobs: &[Blob]) -> Result<()> {
    let repos = root.join("docker/registry/v2/repositories");
    for (j, b) in blobs.iter().enumerate() {
        write(&blob_path(root, &b.digest), &b.data)?;
        let repo = repos.join(format!("gc/junk{:03}", j % REPOS));
        write(&repo.join("_layers/sha256").join(hex(&b.digest)).join("link"), b.digest.as_bytes())?;
    }
    Ok(())
}

fn count_blobs(root: &Path) -> usize {
    let fans = std::fs::read_dir(root.join("docker/registry/v2/blobs/sha256")).into_iter().flatten().flatten();
    fans.map(|f| {
        std::fs::read_dir(f.path()).into_iter().flatten().flatten().filter(|b| b.path().join("data").exists()).count()
    })
    .sum()
}

fn timed_command(cmd: &mut Command) -> Result<(f64, String)> {
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("{cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

pub fn gc(env: &Env, report: &mut Report) -> Result<()> {
    let (images, orphans) = if env.quick { (200, 5_000) } else { (2_000, 50_000) };
    let total = images * (LAYERS + 2) + orphans;
    header(&format!("garbage collection of {total} blobs, {orphans} of them unreferenced (same store, copied)"));
    let master = env.work.path().join("gc-master");
    let t = Instant::now();
    write_gc_store(&master, images, orphans)?;
    report.note(format!("gc store of {total} blobs written in {:.1} s", t.elapsed().as_secs_f64()));

    // Later, a few more unreferenced blobs among everything that stays: the
    // collection a registry runs every day.
    let later = make_blobs(orphans / 50, 200);
    let mut dry = [0.0; 2];
    let mut real = [0.0; 2];
    let mut daily = [0.0; 2];
    for (i, kind) in [Kind::Berth, Kind::Reference].into_iter().enumerate() {
        let root = env.work.path().join(format!("gc-{i}"));
        let st = Command::new("cp").arg("-a").arg(&master).arg(&root).status()?;
        if !st.success() {
            bail!("copying the gc store failed");
        }
        let cfg = env.work.path().join(format!("gc-{i}.yml"));
        std::fs::write(&cfg, server::config(kind, &root, server::free_port()?, true))?;
        // Both start from a cold page cache for the store they read.
        let _ = Command::new("sync").status();
        match kind {
            Kind::Berth => {
                let (secs, _) = timed_command(Command::new(&env.bins.berth).arg("import").arg(&cfg))?;
                report.note(format!("berth import of the gc store (once, on migration): {secs:.1} s"));
                let (d, out) =
                    timed_command(Command::new(&env.bins.berth).args(["gc", "--dry-run", "--grace", "0s"]).arg(&cfg))?;
                if !out.contains(&format!("would delete 0 manifests and {orphans} blobs")) {
                    bail!("berth gc --dry-run: {out}");
                }
                let (r, out) = timed_command(Command::new(&env.bins.berth).args(["gc", "--grace", "0s"]).arg(&cfg))?;
                if !out.contains(&format!("deleted 0 manifests and {orphans} blobs")) {
                    bail!("berth gc: {out}");
                }
                (dry[i], real[i]) = (d, r);
                check(&root, total - orphans)?;
                write_orphans(&root, &later)?;
                timed_command(Command::new(&env.bins.berth).arg("import").arg(&cfg))?;
                let _ = Command::new("sync").status();
                let (t, out) = timed_command(Command::new(&env.bins.berth).args(["gc", "--grace", "0s"]).arg(&cfg))?;
                if !out.contains(&format!("deleted 0 manifests and {} blobs", later.len())) {
                    bail!("berth gc: {out}");
                }
                daily[i] = t;
            }
            Kind::Reference => {
                let gc = |dry_run: bool| {
                    let mut c = Command::new(&env.bins.reference);
                    c.arg("garbage-collect");
                    if dry_run {
                        c.arg("--dry-run");
                    }
                    // Its progress goes to stdout, a line per blob and manifest.
                    c.arg(&cfg).stdout(Stdio::null());
                    timed_command(&mut c)
                };
                dry[i] = gc(true)?.0;
                real[i] = gc(false)?.0;
                check(&root, total - orphans)?;
                write_orphans(&root, &later)?;
                let _ = Command::new("sync").status();
                daily[i] = gc(false)?.0;
            }
        }
        check(&root, total - orphans)?;
        let _ = std::fs::remove_dir_all(&root);
    }
    report.add("gc", "dry run (mark, list what would go)", "s", Better::Lower, dry[0], dry[1]);
    report.add("gc", &format!("collection deleting {orphans} blobs"), "s", Better::Lower, real[0], real[1]);
    report.add(
        "gc",
        "deletions per second",
        "blobs/s",
        Better::Higher,
        orphans as f64 / real[0],
        orphans as f64 / real[1],
    );
    report.add(
        "gc",
        &format!("next collection: {} new unreferenced among {} kept", later.len(), total - orphans),
        "s",
        Better::Lower,
        daily[0],
        daily[1],
    );
    let _ = std::fs::remove_dir_all(&master);
    Ok(())
}

fn check(root: &Path, expected: usize) -> Result<()> {
    let left = count_blobs(root);
    if left != expected {
        bail!("{} holds {left} blobs after collection, expected {expected}", root.display());
    }
    Ok(())
}
