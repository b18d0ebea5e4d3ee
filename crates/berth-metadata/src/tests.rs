//! The metadata tests. Each `async fn(Metadata)` listed in `on_both!` runs
//! twice: on a temporary SQLite file and on a fresh PostgreSQL database.

use berth_types::{Digest, RepoName, Tag};
use uuid::Uuid;

use super::*;

mod db;

/// Runs each listed test, an `async fn(Metadata)` of the invoking module, on
/// SQLite and on PostgreSQL (`sqlite::NAME`, `postgres::NAME`).
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::tests::db::sqlite().await;
                    super::$name(db.md.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crate::tests::db::postgres(stringify!($name)).await else { return };
                    super::$name(db.md.clone()).await;
                }
            )*
        }
    };
}

mod housekeeping;
mod queue;
mod race;

on_both!(
    blob_links_are_per_repository,
    manifest_requires_its_blobs_and_children,
    tags_move_list_and_delete,
    catalog_lists_repositories_with_manifests_in_order,
    referrers_filter_by_subject_and_artifact_type,
    uploads_advance_only_from_the_expected_size,
    catalog_and_tags_page_in_byte_order,
    metadata_keys_are_set_and_replaced,
    rows_that_do_not_parse_are_errors_naming_their_key,
);

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const M1: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const M2: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// Test values, parsed from text and kept for the life of the test process,
/// so that records borrowing them can outlive a statement or move into a task.
fn keep<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

fn r(s: &str) -> &'static RepoName {
    keep(RepoName::parse(s).unwrap())
}

fn d(s: &str) -> &'static Digest {
    keep(Digest::parse(s).unwrap())
}

fn t(s: &str) -> &'static Tag {
    keep(Tag::parse(s).unwrap())
}

/// A fixed upload id per name, as the registry would have made one.
fn u(s: &str) -> &'static Uuid {
    let mut b = [0u8; 16];
    let n = s.len().min(16);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    keep(Uuid::from_bytes(b))
}

fn ds(v: &[&str]) -> Vec<&'static Digest> {
    v.iter().map(|s| d(s)).collect()
}

fn manifest(repo: &str, digest: &str, blobs: Vec<&str>, tag: Option<&str>) -> NewManifest<'static> {
    NewManifest {
        repository: r(repo),
        digest: d(digest),
        media_type: "application/vnd.oci.image.manifest.v1+json",
        size: 100,
        artifact_type: Some("application/x.test"),
        subject: None,
        annotations: None,
        blobs: ds(&blobs),
        children: vec![],
        tag: tag.map(t),
        trust_references: false,
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_does_not_remigrate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    let (md, _) = Metadata::open_sqlite(&path).await.unwrap();
    md.link_blob(r("a/b"), d(D1), 5).await.unwrap();
    md.close().await;
    let (md, created) = Metadata::open_sqlite(&path).await.unwrap();
    assert!(!created);
    assert_eq!(md.repository_blob_size(r("a/b"), d(D1)).await.unwrap(), Some(5));
}

#[tokio::test]
async fn postgres_reopening_keeps_data_and_does_not_remigrate() {
    let Some(db) = db::postgres("postgres_reopening_keeps_data_and_does_not_remigrate").await else { return };
    db.md.link_blob(r("a/b"), d(D1), 5).await.unwrap();
    let url = db.url.clone().unwrap();
    // A second instance on the same database, as another server would open it.
    let (other, created) = Metadata::open_postgres(&url, 2).await.unwrap();
    assert!(!created);
    assert_eq!(other.repository_blob_size(r("a/b"), d(D1)).await.unwrap(), Some(5));
    let versions: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations").fetch_one(&other.read).await.unwrap();
    assert_eq!(versions, crate::db::POSTGRES_MIGRATIONS.len() as i64);
    other.close().await;
}

#[tokio::test]
async fn postgres_schemas_keep_registries_apart_in_one_database() {
    let Some(db) = db::postgres("postgres_schemas_keep_registries_apart_in_one_database").await else { return };
    let url = db.url.clone().unwrap();
    let (ci, created) = Metadata::open_postgres_in(&url, 2, Some("berth_ci")).await.unwrap();
    assert!(created, "a new schema is migrated from the start");
    let (cache, created) = Metadata::open_postgres_in(&url, 2, Some("berth_cache")).await.unwrap();
    assert!(created);
    ci.link_blob(r("app"), d(D1), 5).await.unwrap();
    cache.link_blob(r("app"), d(D2), 7).await.unwrap();
    // Same repository name, different content: each sees its own only, and
    // the database's default schema holds neither.
    assert_eq!(ci.repository_blob_size(r("app"), d(D1)).await.unwrap(), Some(5));
    assert_eq!(ci.repository_blob_size(r("app"), d(D2)).await.unwrap(), None);
    assert_eq!(cache.repository_blob_size(r("app"), d(D2)).await.unwrap(), Some(7));
    assert_eq!(cache.repository_blob_size(r("app"), d(D1)).await.unwrap(), None);
    assert_eq!(db.md.repository_blob_size(r("app"), d(D1)).await.unwrap(), None);
    // Reopening finds the schema migrated, with its data; every pooled
    // connection (more than the first) reads the same schema.
    let (again, created) = Metadata::open_postgres_in(&url, 4, Some("berth_ci")).await.unwrap();
    assert!(!created);
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let md = again.clone();
        reads.spawn(async move { md.repository_blob_size(r("app"), d(D1)).await.unwrap() });
    }
    while let Some(size) = reads.join_next().await {
        assert_eq!(size.unwrap(), Some(5));
    }
    // A repository lock in one schema does not hold the same name in another.
    let held = ci.lock_repository(r("app")).await.unwrap();
    let other = tokio::time::timeout(std::time::Duration::from_secs(10), cache.lock_repository(r("app"))).await;
    let other = other.expect("the lock of berth_ci/app held berth_cache/app").unwrap();
    // Closing a pool waits for its connections: the locks go first.
    drop((held, other));
    for bad in ["", "Upper", "a\"b", "a;b", &"x".repeat(64)] {
        assert!(Metadata::open_postgres_in(&url, 1, Some(bad)).await.is_err(), "schema {bad:?} accepted");
    }
    for md in [ci, cache, again] {
        md.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_starting_together_migrate_once() {
    let Some(db) = db::postgres("postgres_instances_starting_together_migrate_once").await else { return };
    // The fresh database is migrated already; drop the schema so that all start on an empty one.
    sqlx::raw_sql(
        "DROP TABLE schema_migrations, jobs, queue, berth_meta, uploads, tags, manifest_references, manifests, \
         repository_blobs, blobs, repositories",
    )
    .execute(&db.md.write)
    .await
    .unwrap();
    let url = db.url.clone().unwrap();
    let starting: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Metadata::open_postgres(&url, 2).await })
        })
        .collect();
    let mut created = 0;
    for s in starting {
        let (md, c) = s.await.unwrap().unwrap();
        created += usize::from(c);
        md.close().await;
    }
    assert_eq!(created, 1, "exactly one instance creates the schema");
}

async fn blob_links_are_per_repository(md: Metadata) {
    md.link_blob(r("one"), d(D1), 10).await.unwrap();
    assert_eq!(md.repository_blob_size(r("one"), d(D1)).await.unwrap(), Some(10));
    assert_eq!(md.repository_blob_size(r("two"), d(D1)).await.unwrap(), None);
    assert_eq!(md.blob_size(d(D1)).await.unwrap(), Some(10));
    assert!(md.unlink_blob(r("one"), d(D1)).await.unwrap());
    assert!(!md.unlink_blob(r("one"), d(D1)).await.unwrap());
    assert_eq!(md.repository_blob_size(r("one"), d(D1)).await.unwrap(), None);
    assert_eq!(md.blob_size(d(D1)).await.unwrap(), Some(10), "global blob record stays");
}

async fn manifest_requires_its_blobs_and_children(md: Metadata) {
    let out = md.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await.unwrap();
    assert_eq!(out, PutManifestOutcome::MissingBlob(d(D1).clone()));
    assert_eq!(md.resolve_tag(r("r"), t("v1")).await.unwrap(), None, "nothing recorded on failure");
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    assert_eq!(md.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await.unwrap(), PutManifestOutcome::Stored);
    let row = md.resolve_tag(r("r"), t("v1")).await.unwrap().unwrap();
    assert_eq!(row.digest, M1);
    // The manifest is readable as a blob of the repository too.
    assert_eq!(md.repository_blob_size(r("r"), d(M1)).await.unwrap(), Some(100));

    let mut index = manifest("r", M2, vec![], Some("multi"));
    index.children = ds(&[D2]);
    assert_eq!(md.put_manifest(&index).await.unwrap(), PutManifestOutcome::MissingManifest(d(D2).clone()));
    index.children = ds(&[M1]);
    assert_eq!(md.put_manifest(&index).await.unwrap(), PutManifestOutcome::Stored);
}

async fn tags_move_list_and_delete(md: Metadata) {
    assert_eq!(md.list_tags(r("r"), None, 100).await.unwrap(), None);
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    md.put_manifest(&manifest("r", M1, vec![D1], Some("b"))).await.unwrap();
    md.put_manifest(&manifest("r", M2, vec![D1], Some("a"))).await.unwrap();
    md.put_manifest(&manifest("r", M2, vec![D1], Some("c"))).await.unwrap();
    assert_eq!(md.list_tags(r("r"), None, 100).await.unwrap().unwrap(), vec!["a", "b", "c"]);
    assert_eq!(md.list_tags(r("r"), Some("a"), 1).await.unwrap().unwrap(), vec!["b"]);
    // Moving a tag.
    md.put_manifest(&manifest("r", M2, vec![D1], Some("b"))).await.unwrap();
    assert_eq!(md.resolve_tag(r("r"), t("b")).await.unwrap().unwrap().digest, M2);
    assert_eq!(md.delete_tag(r("r"), t("b")).await.unwrap(), Some(d(M2).clone()));
    assert_eq!(md.delete_tag(r("r"), t("b")).await.unwrap(), None);
    // Deleting a manifest removes the tags that point at it.
    assert_eq!(md.delete_manifest(r("r"), d(M2)).await.unwrap(), Some(vec![t("a").clone(), t("c").clone()]));
    assert_eq!(md.delete_manifest(r("r"), d(M2)).await.unwrap(), None);
    assert_eq!(md.list_tags(r("r"), None, 100).await.unwrap().unwrap(), Vec::<Tag>::new());
    assert!(md.set_tag(r("r"), t("again"), d(M1)).await.unwrap());
    assert!(!md.set_tag(r("r"), t("nope"), d(M2)).await.unwrap(), "tag to a missing manifest is refused");
}

async fn catalog_lists_repositories_with_manifests_in_order(md: Metadata) {
    for name in ["c", "a", "b/x", "b"] {
        md.link_blob(r(name), d(D1), 1).await.unwrap();
        md.put_manifest(&manifest(name, M1, vec![D1], None)).await.unwrap();
    }
    md.link_blob(r("only-blobs"), d(D1), 1).await.unwrap();
    assert_eq!(md.list_repositories(None, 10).await.unwrap(), vec!["a", "b", "b/x", "c"]);
    assert_eq!(md.list_repositories(Some("b"), 2).await.unwrap(), vec!["b/x", "c"]);
    // Like distribution, a repository stays listed after its last manifest goes.
    md.delete_manifest(r("c"), d(M1)).await.unwrap();
    assert_eq!(md.list_repositories(Some("b/x"), 2).await.unwrap(), vec!["c"]);
    assert_eq!(md.list_tags(r("c"), None, 10).await.unwrap(), Some(vec![]));
    assert_eq!(md.list_tags(r("only-blobs"), None, 10).await.unwrap(), None);
}

async fn referrers_filter_by_subject_and_artifact_type(md: Metadata) {
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    let mut a = manifest("r", M1, vec![D1], None);
    a.subject = Some(d(D2));
    a.annotations = Some(r#"{"k":"v"}"#.into());
    md.put_manifest(&a).await.unwrap();
    let mut b = manifest("r", M2, vec![D1], None);
    b.subject = Some(d(D2));
    b.artifact_type = Some("application/x.other");
    md.put_manifest(&b).await.unwrap();
    assert_eq!(md.referrers(r("r"), d(D2), None).await.unwrap().len(), 2);
    let only = md.referrers(r("r"), d(D2), Some("application/x.other")).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].digest, M2);
    assert!(md.referrers(r("other"), d(D2), None).await.unwrap().is_empty());
}

async fn uploads_advance_only_from_the_expected_size(md: Metadata) {
    let row = UploadRow {
        id: *u("u1"),
        repository: r("r").clone(),
        size: 0,
        hash_state: vec![1, 2],
        storage_state: None,
        started_at: 1,
        updated_at: 1,
    };
    md.create_upload(&row).await.unwrap();
    assert!(md.advance_upload(u("u1"), 0, 10, &[3], Some("parts")).await.unwrap());
    assert!(!md.advance_upload(u("u1"), 0, 20, &[4], None).await.unwrap(), "stale size refused");
    let got = md.get_upload(u("u1")).await.unwrap().unwrap();
    assert_eq!((got.size, got.hash_state, got.storage_state.as_deref()), (10, vec![3], Some("parts")));
    assert_eq!(md.stale_uploads(now_millis() + 1, 10).await.unwrap().len(), 1);
    assert!(md.delete_upload(u("u1")).await.unwrap());
    assert_eq!(md.get_upload(u("u1")).await.unwrap(), None);
}

async fn catalog_and_tags_page_in_byte_order(md: Metadata) {
    // Byte order, as distribution lists: '-' (0x2d) < '.' < '/' < digits < upper < '_' < lower.
    // Repository names have '/' but no capitals; tags have capitals but no '/'.
    let repos = ["a_b", "a-b", "a.b", "a/b", "a0", "ab"];
    let tags = ["a_b", "a-b", "a.b", "a0", "aB", "ab"];
    md.link_blob(r("x"), d(D1), 1).await.unwrap();
    for n in repos {
        md.link_blob(r(n), d(D1), 1).await.unwrap();
        md.put_manifest(&manifest(n, M1, vec![D1], None)).await.unwrap();
    }
    md.put_manifest(&manifest("x", M1, vec![D1], None)).await.unwrap();
    for n in tags {
        assert!(md.set_tag(r("x"), t(n), d(M1)).await.unwrap());
    }
    let mut all = md.list_repositories(None, 100).await.unwrap();
    all.retain(|n| n != "x");
    assert_eq!(all, ["a-b", "a.b", "a/b", "a0", "a_b", "ab"]);
    assert_eq!(md.list_repositories(Some("a/b"), 2).await.unwrap(), vec!["a0", "a_b"]);
    assert_eq!(md.list_tags(r("x"), None, 100).await.unwrap().unwrap(), ["a-b", "a.b", "a0", "aB", "a_b", "ab"]);
    assert_eq!(md.list_tags(r("x"), Some("a0"), 2).await.unwrap().unwrap(), vec!["aB", "a_b"]);
}

/// A row that does not parse fails the read that meets it, naming the row:
/// it is never skipped while its storage stays.
async fn rows_that_do_not_parse_are_errors_naming_their_key(md: Metadata) {
    md.link_blob(r("r"), d(D1), 1).await.unwrap();
    md.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await.unwrap();
    sqlx::query("UPDATE tags SET name = 'not a tag!'").execute(&md.write).await.unwrap();
    let corrupt = |e: MetadataError, what: &str| match e {
        MetadataError::Corrupt(m) => assert!(m.contains(what), "{m}"),
        e => panic!("not a corrupt-row error: {e}"),
    };
    corrupt(md.list_tags(r("r"), None, 10).await.unwrap_err(), "not a tag!");
    corrupt(md.repository_graph(r("r")).await.unwrap_err(), "not a tag!");
    sqlx::query("UPDATE manifests SET size = -5").execute(&md.write).await.unwrap();
    corrupt(md.get_manifest(r("r"), d(M1)).await.unwrap_err(), M1);
    sqlx::query("UPDATE repositories SET name = 'Upper/Case'").execute(&md.write).await.unwrap();
    corrupt(md.list_repositories(None, 10).await.unwrap_err(), "Upper/Case");
    corrupt(md.all_repositories().await.unwrap_err(), "Upper/Case");
}

async fn metadata_keys_are_set_and_replaced(md: Metadata) {
    assert_eq!(md.get_meta("k").await.unwrap(), None);
    md.set_meta("k", "one").await.unwrap();
    md.set_meta("k", "two").await.unwrap();
    assert_eq!(md.get_meta("k").await.unwrap().as_deref(), Some("two"));
    assert_eq!(md.count_repositories().await.unwrap(), 0);
}
