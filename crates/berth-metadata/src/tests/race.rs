//! Several instances on one PostgreSQL database: uploads, links and manifest
//! pushes racing garbage collection, each instance through its own pool.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

const LAYERS: u64 = 24;
const MANIFESTS: u64 = 16;
const PUSHERS: u64 = 12;
const ROUNDS: u64 = 40;

fn layer(i: u64) -> String {
    format!("sha256:{:064x}", i + 1)
}

/// Manifest digests sort after every layer (`sha256:f…`).
fn manifest_digest(i: u64) -> String {
    format!("sha256:f{:063x}", i)
}

/// The layers of a manifest: fixed by its digest, as content addressing
/// makes them, and shared between manifests.
fn layers_of(m: u64) -> Vec<String> {
    [m, m + 1, m * 7 + 3].iter().map(|i| layer(i % LAYERS)).collect()
}

/// What the storage would hold: the digests whose content is in place.
type Content = Arc<Mutex<HashSet<String>>>;

struct World {
    instances: Vec<Metadata>,
    content: Content,
    /// Blobs being uploaded: their time does not pass (an upload finishes
    /// well within the grace period).
    in_flight: tokio::sync::Mutex<HashMap<String, usize>>,
    stored: AtomicUsize,
    missing: AtomicUsize,
    deleted: AtomicUsize,
}

impl World {
    /// Marks blobs as in use by a client: their time stops passing.
    async fn hold(&self, digests: &[String]) {
        let mut f = self.in_flight.lock().await;
        for d in digests {
            *f.entry(d.clone()).or_default() += 1;
        }
    }

    async fn release(&self, digests: &[String]) {
        let mut f = self.in_flight.lock().await;
        for d in digests {
            if let Some(n) = f.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    f.remove(d);
                }
            }
        }
    }

    /// An upload as the registry commits one: claim, then either link the
    /// present blob or put the content in place and finish.
    async fn upload(&self, md: &Metadata, repo: &str, digest: &str) {
        let held = [digest.to_owned()];
        self.hold(&held).await;
        loop {
            match md.claim_blob(d(digest), 10).await.unwrap() {
                BlobClaim::Present => {
                    if md.link_existing(r(repo), d(digest)).await.unwrap() {
                        break;
                    }
                    // Collected between the claim and the link: claim again.
                }
                BlobClaim::Write => {
                    self.content.lock().unwrap().insert(digest.to_owned());
                    md.finish_blob(r(repo), d(digest)).await.unwrap();
                    break;
                }
            }
        }
        self.release(&held).await;
    }

    /// Pushes a manifest of layers that may be idle, racing collection; if
    /// collection wins a layer, the client uploads the missing layers again
    /// and pushes at once (within the grace period), which must succeed.
    async fn push_manifest(&self, md: &Metadata, m: u64) {
        let layers = &layers_of(m)[..];
        let digest = manifest_digest(m);
        let tag = format!("t{m}");
        for attempt in 0..2 {
            if attempt > 0 {
                self.hold(layers).await;
                for l in layers {
                    if !md.link_existing(r("r"), d(l)).await.unwrap() {
                        self.upload(md, "r", l).await;
                    }
                }
            }
            if md.claim_blob(d(&digest), 100).await.unwrap() == BlobClaim::Write {
                self.content.lock().unwrap().insert(digest.clone());
            }
            let record = NewManifest {
                blobs: layers.iter().map(|l| d(l)).collect(),
                ..manifest("r", &digest, vec![], Some(&tag))
            };
            let outcome = md.put_manifest(&record).await.unwrap();
            if attempt > 0 {
                self.release(layers).await;
            }
            match outcome {
                PutManifestOutcome::Stored => {
                    self.stored.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                PutManifestOutcome::MissingBlob(_) => {
                    self.missing.fetch_add(1, Ordering::Relaxed);
                }
                PutManifestOutcome::MissingManifest(d) => panic!("no child manifests here, yet {d} is missing"),
            }
        }
        panic!("manifest {digest} was refused although its layers were just uploaded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_racing_collection_never_leave_a_manifest_without_its_blobs() {
    let name = "pushes_racing_collection_never_leave_a_manifest_without_its_blobs";
    let Some(db) = db::postgres(name).await else { return };
    let url = db.url.clone().unwrap();
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Metadata::open_postgres(&url, 6).await.unwrap().0);
    }
    let world = Arc::new(World {
        instances,
        content: Content::default(),
        in_flight: Default::default(),
        stored: AtomicUsize::new(0),
        missing: AtomicUsize::new(0),
        deleted: AtomicUsize::new(0),
    });
    for i in 0..LAYERS {
        world.upload(&db.md, "r", &layer(i)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let collected = Arc::new(AtomicUsize::new(0));

    // Time passes for every layer not being uploaded: each becomes a candidate again and again.
    let ager = {
        let (world, stop, md) = (world.clone(), stop.clone(), db.md.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                {
                    let in_flight = world.in_flight.lock().await;
                    for l in (0..LAYERS).map(layer).filter(|l| !in_flight.contains_key(l)) {
                        sqlx::query("UPDATE blobs SET last_used = 0 WHERE digest = $1 AND state = 0")
                            .bind(&l)
                            .execute(&md.write)
                            .await
                            .unwrap();
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            }
        })
    };
    // Two instances collect, in small batches.
    let collectors: Vec<_> = world.instances[..2]
        .iter()
        .cloned()
        .map(|md| {
            let (content, stop, collected) = (world.content.clone(), stop.clone(), collected.clone());
            tokio::spawn(async move {
                let mut after: Option<Digest> = None;
                while !stop.load(Ordering::Relaxed) {
                    let mut tx = md.write_tx().await.unwrap();
                    let victims = tx.sweep_blobs(now_millis() - 5_000, after.as_ref(), 4, false).await.unwrap();
                    {
                        let mut c = content.lock().unwrap();
                        for v in &victims {
                            c.remove(v.digest.as_str());
                        }
                    }
                    tx.commit().await.unwrap();
                    collected.fetch_add(victims.len(), Ordering::Relaxed);
                    after = victims.last().map(|v| v.digest.clone());
                }
            })
        })
        .collect();
    let pushers: Vec<_> = (0..PUSHERS)
        .map(|p| {
            let world = world.clone();
            tokio::spawn(async move {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (p + 1);
                let mut next = move |n: u64| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng % n
                };
                for round in 0..ROUNDS {
                    let md = &world.instances[((p + round) % world.instances.len() as u64) as usize];
                    match next(12) {
                        0 => {
                            // A mount into another repository; false if collection took it.
                            md.link_existing(r("other"), d(&layer(next(LAYERS)))).await.unwrap();
                        }
                        1 => world.upload(md, "r", &layer(next(LAYERS))).await,
                        2 => {
                            // Another tag to a manifest, if it is there.
                            let m = next(MANIFESTS);
                            md.set_tag(r("r"), t(&format!("x{m}")), d(&manifest_digest(m))).await.unwrap();
                        }
                        3 => {
                            // Retention: untagged manifests go, tagged ones stay.
                            let m = manifest_digest(next(MANIFESTS));
                            md.delete_untagged(r("r"), std::slice::from_ref(d(&m))).await.unwrap();
                        }
                        4..=6 => {
                            let m = next(MANIFESTS);
                            if md.delete_manifest(r("r"), d(&manifest_digest(m))).await.unwrap().is_some() {
                                world.deleted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => world.push_manifest(md, next(MANIFESTS)).await,
                    }
                }
            })
        })
        .collect();
    for p in pushers {
        p.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    ager.await.unwrap();
    for c in collectors {
        c.await.unwrap();
    }

    let count = |sql: &'static str| {
        let md = db.md.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&md.read).await.unwrap() }
    };
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM manifest_references r WHERE r.child_is_manifest = 0 \
             AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = r.child)"
        )
        .await,
        0,
        "a manifest references a deleted blob row"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM repository_blobs rb WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = rb.digest)")
            .await,
        0,
        "a repository links a deleted blob row"
    );
    let present: Vec<String> =
        sqlx::query_scalar("SELECT digest FROM blobs WHERE state = 0").fetch_all(&db.md.read).await.unwrap();
    {
        let content = world.content.lock().unwrap();
        for d in &present {
            assert!(content.contains(d), "blob {d} is recorded as present but its content was collected");
        }
    }
    let (stored, missing, deleted) = (
        world.stored.load(Ordering::Relaxed),
        world.missing.load(Ordering::Relaxed),
        world.deleted.load(Ordering::Relaxed),
    );
    let collected = collected.load(Ordering::Relaxed);
    eprintln!("manifests stored {stored}, refused for a collected layer {missing}, deleted {deleted}; blobs collected {collected}");
    assert!(stored > 0 && collected > 0, "the race did not happen");
    for md in &world.instances {
        md.close().await;
    }
}

/// A collection batch that has deleted its rows and is removing the content
/// (its transaction still open) makes a push, a claim and a link of the same
/// blob on another instance wait, and then see the blob gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_wait_for_a_collection_batch_and_then_see_the_blob_gone() {
    let name = "writes_wait_for_a_collection_batch_and_then_see_the_blob_gone";
    let Some(db) = db::postgres(name).await else { return };
    let (other, _) = Metadata::open_postgres(db.url.as_deref().unwrap(), 4).await.unwrap();
    let (collector, _) = Metadata::open_postgres(db.url.as_deref().unwrap(), 2).await.unwrap();
    for x in [D1, D2] {
        db.md.link_blob(r("r"), d(x), 1).await.unwrap();
    }
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let gc = tokio::spawn(async move {
        let mut tx = collector.write_tx().await?;
        let victims = tx.sweep_blobs(now_millis() + 60_000, None, 10, false).await?;
        // The content is being deleted: the transaction stays open meanwhile.
        let _ = entered_tx.send(victims.len());
        released.await.unwrap();
        tx.commit().await.map(|()| victims)
    });
    assert_eq!(entered.await.unwrap(), 2, "both blobs are being collected");

    let push = {
        let other = other.clone();
        tokio::spawn(async move { other.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await })
    };
    let claim = {
        let other = other.clone();
        tokio::spawn(async move { other.claim_blob(d(D2), 1).await })
    };
    let link = {
        let other = other.clone();
        tokio::spawn(async move { other.link_existing(r("s"), d(D1)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!push.is_finished(), "the push waits for the batch instead of referencing a blob being deleted");
    assert!(!claim.is_finished(), "the claim waits for the batch");
    assert!(!link.is_finished(), "the link waits for the batch");
    release.send(()).unwrap();
    assert_eq!(gc.await.unwrap().unwrap().len(), 2);
    assert_eq!(push.await.unwrap().unwrap(), PutManifestOutcome::MissingBlob(d(D1).clone()));
    assert_eq!(claim.await.unwrap().unwrap(), BlobClaim::Write, "the content must be written again");
    assert!(!link.await.unwrap().unwrap());
    assert_eq!(other.get_manifest(r("r"), d(M1)).await.unwrap(), None);
    other.close().await;
}

/// A repository locked by one instance makes another wait for the same
/// repository (not for others) until the first lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repository_locks_hold_across_instances() {
    let Some(db) = db::postgres("repository_locks_hold_across_instances").await else { return };
    let (other, _) = Metadata::open_postgres(db.url.as_deref().unwrap(), 4).await.unwrap();
    let held = db.md.lock_repository(r("team/app")).await.unwrap();
    let waiting = {
        let other = other.clone();
        tokio::spawn(async move { other.lock_repository(r("team/app")).await.map(|_| ()) })
    };
    let elsewhere = other.lock_repository(r("team/other")).await.unwrap();
    drop(elsewhere);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a second instance locked a repository another holds");
    drop(held);
    tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("the lock is released when its holder drops it")
        .unwrap()
        .unwrap();
}
