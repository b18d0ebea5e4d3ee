//! The queue and write transactions, on both databases.

use std::collections::HashSet;
use std::time::Duration;

use super::*;

on_both!(
    two_claimers_never_get_the_same_item,
    an_expired_lease_is_claimed_again,
    failures_back_off_then_dead_letter_and_replay,
    work_is_enqueued_exactly_when_its_change_commits,
    a_write_transaction_commits_all_or_nothing,
    kinds_are_separate_and_stats_count_each_state,
    jobs_are_created_with_their_work_and_finished_once,
);

const KIND: &str = "test.work";

fn policy() -> QueuePolicy {
    QueuePolicy { lease: Duration::from_secs(600), ..QueuePolicy::default() }
}

async fn two_claimers_never_get_the_same_item(md: Metadata) {
    const ITEMS: usize = 120;
    for i in 0..ITEMS {
        md.enqueue(KIND, &format!("item {i}"), Duration::ZERO).await.unwrap();
    }
    let claimers: Vec<_> = (0..4)
        .map(|_| {
            let md = md.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                // Bounded: every round takes at least one item until none are left.
                for _ in 0..ITEMS {
                    let batch = md.claim(KIND, 7, &policy()).await.unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    for c in batch {
                        assert!(md.ack(&c).await.unwrap(), "an item claimed is held by its claimer");
                        got.push(c.id);
                    }
                }
                got
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for c in claimers {
        for id in c.await.unwrap() {
            assert!(seen.insert(id), "item {id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), ITEMS, "every item was claimed once");
    assert_eq!(md.queue_stats(KIND).await.unwrap(), QueueStats::default());
}

async fn an_expired_lease_is_claimed_again(md: Metadata) {
    let id = md.enqueue(KIND, "p", Duration::ZERO).await.unwrap();
    let short = QueuePolicy { lease: Duration::from_millis(1), ..policy() };
    let first = md.claim(KIND, 10, &short).await.unwrap();
    assert_eq!(first.iter().map(|c| (c.id, c.attempts)).collect::<Vec<_>>(), [(id, 1)]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = md.claim(KIND, 10, &policy()).await.unwrap();
    assert_eq!(second.iter().map(|c| (c.id, c.attempts, c.payload.as_str())).collect::<Vec<_>>(), [(id, 2, "p")]);
    assert!(md.claim(KIND, 10, &policy()).await.unwrap().is_empty(), "held by the second claim");
    assert!(!md.ack(&first[0]).await.unwrap(), "the first claimer lost its lease");
    assert_eq!(md.retry(&first[0], "late", &policy()).await.unwrap(), Retried::LostLease);
    assert!(md.renew(&second[0], &policy()).await.unwrap());
    assert!(md.ack(&second[0]).await.unwrap());
    assert!(!md.ack(&second[0]).await.unwrap(), "done once");
}

async fn failures_back_off_then_dead_letter_and_replay(md: Metadata) {
    let p = QueuePolicy { max_attempts: 2, backoff: Duration::from_secs(3600), ..policy() };
    let id = md.enqueue(KIND, "p", Duration::ZERO).await.unwrap();
    let c = md.claim(KIND, 1, &p).await.unwrap().remove(0);
    let Retried::Later(at) = md.retry(&c, "endpoint down", &p).await.unwrap() else { panic!("not retried") };
    assert!(at >= now_millis() + 3_500_000, "backed off by the policy");
    assert!(md.claim(KIND, 1, &p).await.unwrap().is_empty(), "not before its backoff");
    assert_eq!(md.queue_stats(KIND).await.unwrap().delayed, 1);
    // The backoff passes.
    sqlx::query("UPDATE queue SET not_before = 0").execute(&md.write).await.unwrap();
    let c = md.claim(KIND, 1, &p).await.unwrap().remove(0);
    assert_eq!(c.attempts, 2);
    assert_eq!(md.retry(&c, "still down", &p).await.unwrap(), Retried::Dead);
    sqlx::query("UPDATE queue SET not_before = 0").execute(&md.write).await.unwrap();
    assert!(md.claim(KIND, 1, &p).await.unwrap().is_empty(), "dead items are not claimed");
    let dead = md.dead_letters(KIND, 10).await.unwrap();
    assert_eq!(
        dead.iter().map(|d| (d.id, d.attempts, d.last_error.as_deref())).collect::<Vec<_>>(),
        [(id, 2, Some("still down"))]
    );
    assert_eq!(md.queue_stats(KIND).await.unwrap().dead, 1);
    assert!(md.replay(id).await.unwrap());
    assert!(!md.replay(id).await.unwrap(), "no longer dead");
    let c = md.claim(KIND, 1, &p).await.unwrap().remove(0);
    assert_eq!((c.id, c.attempts), (id, 1), "replayed with its attempts reset");

    // A claimer that keeps dying uses up the attempts too.
    let crashing = QueuePolicy { lease: Duration::from_millis(1), max_attempts: 1, ..p };
    let id = md.enqueue("test.crashing", "p", Duration::ZERO).await.unwrap();
    assert_eq!(md.claim("test.crashing", 1, &crashing).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(md.claim("test.crashing", 1, &crashing).await.unwrap().is_empty());
    let dead = md.dead_letters("test.crashing", 10).await.unwrap();
    assert_eq!(
        dead.iter().map(|d| (d.id, d.last_error.as_deref())).collect::<Vec<_>>(),
        [(id, Some("the lease ran out"))]
    );
}

async fn work_is_enqueued_exactly_when_its_change_commits(md: Metadata) {
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    // Rolled back (dropped): neither the manifest nor its event.
    {
        let mut tx = md.write_tx().await.unwrap();
        assert_eq!(
            tx.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await.unwrap(),
            PutManifestOutcome::Stored
        );
        tx.enqueue(KIND, "pushed v1", Duration::ZERO).await.unwrap();
    }
    assert_eq!(md.resolve_tag(r("r"), t("v1")).await.unwrap(), None);
    assert!(md.claim(KIND, 10, &policy()).await.unwrap().is_empty());
    // Committed: both.
    let mut tx = md.write_tx().await.unwrap();
    tx.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await.unwrap();
    tx.enqueue(KIND, "pushed v1", Duration::ZERO).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(md.resolve_tag(r("r"), t("v1")).await.unwrap().unwrap().digest, M1);
    let got = md.claim(KIND, 10, &policy()).await.unwrap();
    assert_eq!(got.iter().map(|c| c.payload.as_str()).collect::<Vec<_>>(), ["pushed v1"]);
    // A delay given at enqueue holds the item back.
    md.enqueue(KIND, "later", Duration::from_secs(3600)).await.unwrap();
    assert!(md.claim(KIND, 10, &policy()).await.unwrap().is_empty());
}

async fn a_write_transaction_commits_all_or_nothing(md: Metadata) {
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    md.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await.unwrap();
    // Read through the cache first, so a stale entry would show.
    assert!(md.resolve_tag(r("r"), t("v1")).await.unwrap().is_some());
    let mut tx = md.write_tx().await.unwrap();
    assert_eq!(tx.claim_blob(d(D2), 2).await.unwrap(), BlobClaim::Write);
    tx.finish_blob(r("r"), d(D2)).await.unwrap();
    assert!(tx.set_tag(r("r"), t("v2"), d(M1)).await.unwrap());
    assert!(!tx.set_tag(r("r"), t("nope"), d(M2)).await.unwrap(), "no such manifest");
    assert_eq!(tx.delete_tag(r("r"), t("v1")).await.unwrap(), Some(d(M1).clone()));
    tx.rollback().await.unwrap();
    assert!(md.resolve_tag(r("r"), t("v1")).await.unwrap().is_some());
    assert_eq!(md.resolve_tag(r("r"), t("v2")).await.unwrap(), None);
    assert_eq!(md.blob_size(d(D2)).await.unwrap(), None);

    let mut tx = md.write_tx().await.unwrap();
    assert!(tx.set_tag(r("r"), t("v2"), d(M1)).await.unwrap());
    assert_eq!(tx.delete_tag(r("r"), t("v1")).await.unwrap(), Some(d(M1).clone()));
    assert!(tx.link_existing(r("s"), d(D1)).await.unwrap());
    assert_eq!(tx.delete_manifest(r("r"), d(M1)).await.unwrap(), Some(vec![t("v2").clone()]));
    tx.commit().await.unwrap();
    assert_eq!(md.resolve_tag(r("r"), t("v1")).await.unwrap(), None, "the cache saw the commit");
    assert_eq!(md.get_manifest(r("r"), d(M1)).await.unwrap(), None);
    assert_eq!(md.repository_blob_size(r("s"), d(D1)).await.unwrap(), Some(1));
}

async fn kinds_are_separate_and_stats_count_each_state(md: Metadata) {
    md.enqueue("a", "1", Duration::ZERO).await.unwrap();
    md.enqueue("a", "2", Duration::ZERO).await.unwrap();
    md.enqueue("a", "3", Duration::from_secs(3600)).await.unwrap();
    md.enqueue("b", "x", Duration::ZERO).await.unwrap();
    let held = md.claim("a", 1, &policy()).await.unwrap();
    assert_eq!(held.iter().map(|c| c.payload.as_str()).collect::<Vec<_>>(), ["1"], "oldest first");
    let s = md.queue_stats("a").await.unwrap();
    assert_eq!((s.ready, s.leased, s.delayed, s.dead), (1, 1, 1, 0));
    assert!(s.oldest.is_some_and(|t| t <= now_millis()));
    assert_eq!(md.queue_stats("b").await.unwrap().ready, 1);
    assert_eq!(md.queue_stats("none").await.unwrap(), QueueStats::default());
}

async fn jobs_are_created_with_their_work_and_finished_once(md: Metadata) {
    let id = *u("job-1");
    let mut tx = md.write_tx().await.unwrap();
    tx.create_job(&id, "gc", r#"{"dry_run":true}"#).await.unwrap();
    tx.enqueue("admin", &id.to_string(), Duration::ZERO).await.unwrap();
    tx.commit().await.unwrap();
    let job = md.job(&id).await.unwrap().unwrap();
    assert_eq!((job.kind.as_str(), job.state.as_str(), job.started_at), ("gc", "queued", None));
    let item = md.claim("admin", 1, &policy()).await.unwrap().remove(0);
    assert_eq!(item.payload, id.to_string());
    md.job_running(&id, Some(r#"{"phase":"blobs"}"#)).await.unwrap();
    md.job_queued(&id).await.unwrap();
    md.job_running(&id, None).await.unwrap();
    let job = md.job(&id).await.unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.progress.as_deref()), ("running", Some(r#"{"phase":"blobs"}"#)));
    assert!(job.started_at.is_some());
    md.finish_job(&id, Ok(r#"{"blobs_deleted":0}"#)).await.unwrap();
    md.job_running(&id, None).await.unwrap();
    let job = md.job(&id).await.unwrap().unwrap();
    assert_eq!(
        (job.state.as_str(), job.result.as_deref()),
        ("done", Some(r#"{"blobs_deleted":0}"#)),
        "finished stays finished"
    );
    assert!(job.finished_at.is_some());
    let failed = *u("job-2");
    md.write_tx().await.unwrap().create_job(&failed, "retention", "{}").await.unwrap();
    assert_eq!(md.job(&failed).await.unwrap(), None, "not committed");
    let mut tx = md.write_tx().await.unwrap();
    tx.create_job(&failed, "retention", "{}").await.unwrap();
    tx.commit().await.unwrap();
    md.finish_job(&failed, Err("deletes are disabled")).await.unwrap();
    let recent = md.recent_jobs(10).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(md.job(&failed).await.unwrap().unwrap().error.as_deref(), Some("deletes are disabled"));
    assert_eq!(md.job(u("none")).await.unwrap(), None);
}

/// A claimer that crashes between claim and ack (its process gone, its
/// connections closed) loses nothing: another instance claims the item once
/// the lease runs out.
async fn crash_between_claim_and_ack(first: Metadata, reopen: impl std::future::Future<Output = Metadata>) {
    let id = first.enqueue(KIND, "survives", Duration::ZERO).await.unwrap();
    let short = QueuePolicy { lease: Duration::from_millis(1), ..policy() };
    assert_eq!(first.claim(KIND, 1, &short).await.unwrap().len(), 1);
    first.close().await;
    drop(first);
    let next = reopen.await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let got = next.claim(KIND, 1, &policy()).await.unwrap();
    assert_eq!(got.iter().map(|c| (c.id, c.payload.as_str(), c.attempts)).collect::<Vec<_>>(), [(id, "survives", 2)]);
    assert!(next.ack(&got[0]).await.unwrap());
    next.close().await;
}

#[tokio::test]
async fn sqlite_crash_between_claim_and_ack_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    let (md, _) = Metadata::open_sqlite(&path).await.unwrap();
    crash_between_claim_and_ack(md, async { Metadata::open_sqlite(&path).await.unwrap().0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_between_claim_and_ack_loses_nothing() {
    let Some(db) = db::postgres("postgres_crash_between_claim_and_ack_loses_nothing").await else { return };
    let url = db.url.clone().unwrap();
    let (md, _) = Metadata::open_postgres(&url, 2).await.unwrap();
    crash_between_claim_and_ack(md, async { Metadata::open_postgres(&url, 2).await.unwrap().0 }).await;
}
