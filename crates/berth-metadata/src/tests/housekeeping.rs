//! The queries of collection, untagged manifests, retention, quotas and
//! repository deletion, on both databases.

use super::*;

on_both!(
    sweep_takes_idle_unreferenced_blobs_only,
    sweep_pages_through_batches_and_dry_run_keeps_everything,
    failed_content_deletion_keeps_the_rows,
    a_claim_after_collection_writes_the_blob_again,
    use_keeps_a_blob_from_collection,
    finishing_a_blob_collected_meanwhile_fails,
    untagged_manifests_are_deleted_but_tagged_ones_stay,
    untagged_children_go_with_their_index_but_not_from_under_a_kept_one,
    repository_graph_and_pull_times,
    namespace_usage_counts_shared_blobs_once,
    deleting_a_repository_leaves_its_blobs_to_collection,
    forgetting_a_blob_removes_its_rows_and_links,
    import_is_idempotent,
);

const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

/// A cutoff after every use time: whatever is unreferenced is idle.
fn all_idle() -> i64 {
    now_millis() + 60_000
}

async fn sweep(md: &Metadata, cutoff: i64) -> Vec<GcVictim> {
    sweep_after(md, cutoff, None, 100).await
}

/// One committed sweep batch.
async fn sweep_after(md: &Metadata, cutoff: i64, after: Option<&Digest>, limit: i64) -> Vec<GcVictim> {
    let mut tx = md.write_tx().await.unwrap();
    let victims = tx.sweep_blobs(cutoff, after, limit, false).await.unwrap();
    tx.commit().await.unwrap();
    victims
}

async fn sweep_takes_idle_unreferenced_blobs_only(md: Metadata) {
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    md.link_blob(r("r"), d(D2), 2).await.unwrap();
    md.put_manifest(&manifest("r", M1, vec![D2], Some("v1"))).await.unwrap();
    // Committing, under a lease that has not run out.
    assert_eq!(md.claim_blob(d(D3), 3).await.unwrap(), BlobClaim::Write);
    assert!(sweep(&md, now_millis() - 60_000).await.is_empty(), "nothing is idle yet");
    let victims = sweep(&md, all_idle()).await;
    assert_eq!(victims, vec![GcVictim { digest: d(D1).clone(), size: 1, repositories: vec![r("r").clone()] }]);
    assert_eq!(md.blob_size(d(D1)).await.unwrap(), None);
    assert_eq!(md.repository_blob_size(r("r"), d(D1)).await.unwrap(), None);
    assert_eq!(md.blob_size(d(D2)).await.unwrap(), Some(2), "referenced by a manifest");
    assert_eq!(md.blob_size(d(M1)).await.unwrap(), Some(100), "a manifest's own blob");
    assert_eq!(md.blob_size(d(D3)).await.unwrap(), Some(3), "committing");
    assert!(!md.link_existing(r("r"), d(D1)).await.unwrap(), "a collected blob cannot be linked");
}

async fn sweep_pages_through_batches_and_dry_run_keeps_everything(md: Metadata) {
    for x in [D1, D2, D3] {
        md.link_blob(r("r"), d(x), 1).await.unwrap();
    }
    // A dry run deletes nothing, even committed.
    let mut tx = md.write_tx().await.unwrap();
    assert_eq!(tx.sweep_blobs(all_idle(), None, 100, true).await.unwrap().len(), 3);
    tx.commit().await.unwrap();
    assert_eq!(md.blob_size(d(D1)).await.unwrap(), Some(1));
    let first = sweep_after(&md, all_idle(), None, 2).await;
    assert_eq!(first.iter().map(|v| v.digest.as_str()).collect::<Vec<_>>(), [D1, D2]);
    let rest = sweep_after(&md, all_idle(), Some(d(D2)), 2).await;
    assert_eq!(rest.iter().map(|v| v.digest.as_str()).collect::<Vec<_>>(), [D3]);
    assert!(sweep_after(&md, all_idle(), Some(d(D3)), 2).await.is_empty());
}

async fn failed_content_deletion_keeps_the_rows(md: Metadata) {
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    // Deleting the content failed: the collector drops its transaction.
    let mut tx = md.write_tx().await.unwrap();
    assert_eq!(tx.sweep_blobs(all_idle(), None, 10, false).await.unwrap().len(), 1);
    drop(tx);
    assert_eq!(md.repository_blob_size(r("r"), d(D1)).await.unwrap(), Some(1));
}

async fn a_claim_after_collection_writes_the_blob_again(md: Metadata) {
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    assert_eq!(md.claim_blob(d(D1), 1).await.unwrap(), BlobClaim::Present);
    assert_eq!(sweep(&md, all_idle()).await.len(), 1);
    assert_eq!(md.claim_blob(d(D1), 1).await.unwrap(), BlobClaim::Write);
    assert_eq!(md.claim_blob(d(D1), 1).await.unwrap(), BlobClaim::Write, "still committing: another writer may finish");
    md.finish_blob(r("r"), d(D1)).await.unwrap();
    assert_eq!(md.claim_blob(d(D1), 1).await.unwrap(), BlobClaim::Present);
    assert_eq!(md.repository_blob_size(r("r"), d(D1)).await.unwrap(), Some(1));
}

async fn use_keeps_a_blob_from_collection(md: Metadata) {
    for x in [D1, D2, D3] {
        md.link_blob(r("r"), d(x), 1).await.unwrap();
    }
    sqlx::query("UPDATE blobs SET last_used = 0").execute(&md.write).await.unwrap();
    md.touch_blob(d(D1)).await.unwrap();
    assert!(md.link_existing(r("s"), d(D2)).await.unwrap());
    assert_eq!(md.claim_blob(d(D3), 1).await.unwrap(), BlobClaim::Present);
    assert!(sweep(&md, now_millis() - 60_000).await.is_empty(), "each was used just now");
}

async fn finishing_a_blob_collected_meanwhile_fails(md: Metadata) {
    assert_eq!(md.claim_blob(d(D1), 1).await.unwrap(), BlobClaim::Write);
    // The commit outlives its lease.
    sqlx::query("UPDATE blobs SET lease_until = 0 WHERE digest = $1").bind(D1).execute(&md.write).await.unwrap();
    assert_eq!(sweep(&md, now_millis() - 60_000).await.len(), 1);
    assert!(md.finish_blob(r("r"), d(D1)).await.is_err());
    assert_eq!(md.repository_blob_size(r("r"), d(D1)).await.unwrap(), None, "no link to a blob that is gone");
}

async fn untagged_manifests_are_deleted_but_tagged_ones_stay(md: Metadata) {
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    md.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await.unwrap();
    md.put_manifest(&manifest("r", M2, vec![D1], None)).await.unwrap();
    let deleted = md.delete_untagged(r("r"), &[d(M1).clone(), d(M2).clone()]).await.unwrap();
    assert_eq!(deleted, vec![M2]);
    assert_eq!(md.get_manifest(r("r"), d(M2)).await.unwrap(), None);
    assert!(md.get_manifest(r("r"), d(M1)).await.unwrap().is_some());
    // M2's references went with it; D1 is still held by M1.
    assert!(sweep(&md, all_idle()).await.iter().all(|v| v.digest != D1));
}

async fn untagged_children_go_with_their_index_but_not_from_under_a_kept_one(md: Metadata) {
    const M3: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    const M4: &str = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    for m in [M1, M2] {
        md.put_manifest(&manifest("r", m, vec![D1], None)).await.unwrap();
    }
    // An untagged index (sorting after its child) of M1, and a tagged one of M2.
    let mut doomed = manifest("r", M3, vec![], None);
    doomed.children = ds(&[M1]);
    md.put_manifest(&doomed).await.unwrap();
    let mut kept = manifest("r", M4, vec![], Some("v1"));
    kept.children = ds(&[M2]);
    md.put_manifest(&kept).await.unwrap();
    let all = [M1, M2, M3, M4].map(|m| d(m).clone());
    let mut deleted = md.delete_untagged(r("r"), &all).await.unwrap();
    deleted.sort();
    assert_eq!(deleted, vec![M1, M3]);
    assert!(md.get_manifest(r("r"), d(M2)).await.unwrap().is_some(), "a child of a tagged index stays");
}

async fn repository_graph_and_pull_times(md: Metadata) {
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    md.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await.unwrap();
    let mut index = manifest("r", M2, vec![], Some("multi"));
    index.children = ds(&[M1]);
    md.put_manifest(&index).await.unwrap();
    md.record_pulls(&[
        (r("r").clone(), t("v1").clone(), 1234),
        (r("r").clone(), t("v1").clone(), 1000),
        (r("r").clone(), t("gone").clone(), 5),
    ])
    .await
    .unwrap();
    let g = md.repository_graph(r("r")).await.unwrap();
    assert_eq!(g.manifests.iter().map(|m| m.digest.as_str()).collect::<Vec<_>>(), [M1, M2]);
    assert_eq!(g.children, vec![(d(M2).clone(), d(M1).clone())]);
    let v1 = g.tags.iter().find(|t| t.name == "v1").unwrap();
    assert_eq!((v1.digest.as_str(), v1.pulled_at), (M1, 1234), "the latest pull wins");
    assert_eq!(md.all_repositories().await.unwrap(), vec!["r"]);
}

async fn namespace_usage_counts_shared_blobs_once(md: Metadata) {
    for repo in ["team/a", "team/b"] {
        md.link_blob(r(repo), d(D1), 1000).await.unwrap();
        md.put_manifest(&manifest(repo, M1, vec![D1], Some("v1"))).await.unwrap();
    }
    md.link_blob(r("teamx"), d(D2), 7).await.unwrap();
    assert_eq!(md.namespace_usage(r("team")).await.unwrap(), 1100, "D1 and M1 once each");
    assert_eq!(md.namespace_usage(r("teamx")).await.unwrap(), 7);
    assert_eq!(md.namespace_usage(r("nobody")).await.unwrap(), 0);
    assert!(md.namespace_has_blob(r("team"), d(D1)).await.unwrap());
    assert!(!md.namespace_has_blob(r("team"), d(D2)).await.unwrap());
}

async fn deleting_a_repository_leaves_its_blobs_to_collection(md: Metadata) {
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    md.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await.unwrap();
    assert!(md.delete_repository(r("r")).await.unwrap());
    assert!(!md.delete_repository(r("r")).await.unwrap());
    assert_eq!(md.list_tags(r("r"), None, 10).await.unwrap(), None);
    assert_eq!(md.blob_size(d(D1)).await.unwrap(), Some(1));
    let mut gone: Vec<Digest> = sweep(&md, all_idle()).await.into_iter().map(|v| v.digest).collect();
    gone.sort();
    assert_eq!(gone, vec![D1, M1]);
    // Writing to it again creates it anew.
    md.link_blob(r("r"), d(D2), 1).await.unwrap();
    assert_eq!(md.repository_blob_size(r("r"), d(D2)).await.unwrap(), Some(1));
}

async fn forgetting_a_blob_removes_its_rows_and_links(md: Metadata) {
    md.link_blob(r("b"), d(D1), 1).await.unwrap();
    md.link_blob(r("a"), d(D1), 1).await.unwrap();
    assert_eq!(md.forget_blob(d(D1)).await.unwrap(), vec!["a", "b"]);
    assert_eq!(md.blob_size(d(D1)).await.unwrap(), None);
    assert!(md.forget_blob(d(D1)).await.unwrap().is_empty());
}

async fn import_is_idempotent(md: Metadata) {
    let mut m = manifest("r", M1, vec![D1], None);
    m.trust_references = true;
    let imp = ImportedRepository {
        repository: r("r"),
        blobs: vec![(d(D1), 1)],
        manifests: vec![m],
        tags: vec![(t("v1"), d(M1)), (t("dangling"), d(M2))],
        listed: true,
    };
    for _ in 0..2 {
        md.import_repositories(std::slice::from_ref(&imp)).await.unwrap();
    }
    assert_eq!(md.list_tags(r("r"), None, 10).await.unwrap().unwrap(), vec!["v1"]);
    assert_eq!(md.repository_blob_size(r("r"), d(D1)).await.unwrap(), Some(1));
    assert_eq!(md.list_repositories(None, 10).await.unwrap(), vec!["r"]);
}
