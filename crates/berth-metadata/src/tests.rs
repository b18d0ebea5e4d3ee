use super::*;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const M1: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const M2: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

async fn open() -> (tempfile::TempDir, Metadata) {
    let dir = tempfile::tempdir().unwrap();
    let (md, created) = Metadata::open_sqlite(&dir.path().join("meta.sqlite")).await.unwrap();
    assert!(created);
    (dir, md)
}

fn manifest<'a>(repo: &'a str, digest: &'a str, blobs: Vec<&'a str>, tag: Option<&'a str>) -> NewManifest<'a> {
    NewManifest {
        repository: repo,
        digest,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        size: 100,
        artifact_type: Some("application/x.test"),
        subject: None,
        annotations: None,
        blobs,
        children: vec![],
        tag,
        trust_references: false,
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_does_not_remigrate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.sqlite");
    let (md, _) = Metadata::open_sqlite(&path).await.unwrap();
    md.link_blob("a/b", D1, 5).await.unwrap();
    md.close().await;
    let (md, created) = Metadata::open_sqlite(&path).await.unwrap();
    assert!(!created);
    assert_eq!(md.repository_blob_size("a/b", D1).await.unwrap(), Some(5));
}

#[tokio::test]
async fn blob_links_are_per_repository() {
    let (_d, md) = open().await;
    md.link_blob("one", D1, 10).await.unwrap();
    assert_eq!(md.repository_blob_size("one", D1).await.unwrap(), Some(10));
    assert_eq!(md.repository_blob_size("two", D1).await.unwrap(), None);
    assert_eq!(md.blob_size(D1).await.unwrap(), Some(10));
    assert!(md.unlink_blob("one", D1).await.unwrap());
    assert!(!md.unlink_blob("one", D1).await.unwrap());
    assert_eq!(md.repository_blob_size("one", D1).await.unwrap(), None);
    assert_eq!(md.blob_size(D1).await.unwrap(), Some(10), "global blob record stays");
}

#[tokio::test]
async fn manifest_requires_its_blobs_and_children() {
    let (_d, md) = open().await;
    let out = md.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await.unwrap();
    assert_eq!(out, PutManifestOutcome::MissingBlob(D1.into()));
    assert_eq!(md.resolve_tag("r", "v1").await.unwrap(), None, "nothing recorded on failure");
    md.link_blob("r", D1, 1).await.unwrap();
    assert_eq!(md.put_manifest(&manifest("r", M1, vec![D1], Some("v1"))).await.unwrap(), PutManifestOutcome::Stored);
    let row = md.resolve_tag("r", "v1").await.unwrap().unwrap();
    assert_eq!(row.digest, M1);
    // The manifest is readable as a blob of the repository too.
    assert_eq!(md.repository_blob_size("r", M1).await.unwrap(), Some(100));

    let mut index = manifest("r", M2, vec![], Some("multi"));
    index.children = vec![D2];
    assert_eq!(md.put_manifest(&index).await.unwrap(), PutManifestOutcome::MissingManifest(D2.into()));
    index.children = vec![M1];
    assert_eq!(md.put_manifest(&index).await.unwrap(), PutManifestOutcome::Stored);
}

#[tokio::test]
async fn tags_move_list_and_delete() {
    let (_d, md) = open().await;
    assert_eq!(md.list_tags("r", None, 100).await.unwrap(), None);
    md.link_blob("r", D1, 1).await.unwrap();
    md.put_manifest(&manifest("r", M1, vec![D1], Some("b"))).await.unwrap();
    md.put_manifest(&manifest("r", M2, vec![D1], Some("a"))).await.unwrap();
    md.put_manifest(&manifest("r", M2, vec![D1], Some("c"))).await.unwrap();
    assert_eq!(md.list_tags("r", None, 100).await.unwrap().unwrap(), vec!["a", "b", "c"]);
    assert_eq!(md.list_tags("r", Some("a"), 1).await.unwrap().unwrap(), vec!["b"]);
    // Moving a tag.
    md.put_manifest(&manifest("r", M2, vec![D1], Some("b"))).await.unwrap();
    assert_eq!(md.resolve_tag("r", "b").await.unwrap().unwrap().digest, M2);
    assert_eq!(md.delete_tag("r", "b").await.unwrap().as_deref(), Some(M2));
    assert_eq!(md.delete_tag("r", "b").await.unwrap(), None);
    // Deleting a manifest removes the tags that point at it.
    assert_eq!(md.delete_manifest("r", M2).await.unwrap(), Some(vec!["a".to_owned(), "c".to_owned()]));
    assert_eq!(md.delete_manifest("r", M2).await.unwrap(), None);
    assert_eq!(md.list_tags("r", None, 100).await.unwrap().unwrap(), Vec::<String>::new());
    assert!(md.set_tag("r", "again", M1).await.unwrap());
    assert!(!md.set_tag("r", "nope", M2).await.unwrap(), "tag to a missing manifest is refused");
}

#[tokio::test]
async fn catalog_lists_repositories_with_manifests_in_order() {
    let (_d, md) = open().await;
    for r in ["c", "a", "b/x", "b"] {
        md.link_blob(r, D1, 1).await.unwrap();
        md.put_manifest(&manifest(r, M1, vec![D1], None)).await.unwrap();
    }
    md.link_blob("only-blobs", D1, 1).await.unwrap();
    assert_eq!(md.list_repositories(None, 10).await.unwrap(), vec!["a", "b", "b/x", "c"]);
    assert_eq!(md.list_repositories(Some("b"), 2).await.unwrap(), vec!["b/x", "c"]);
    // Like distribution, a repository stays listed after its last manifest goes.
    md.delete_manifest("c", M1).await.unwrap();
    assert_eq!(md.list_repositories(Some("b/x"), 2).await.unwrap(), vec!["c"]);
    assert_eq!(md.list_tags("c", None, 10).await.unwrap(), Some(vec![]));
    assert_eq!(md.list_tags("only-blobs", None, 10).await.unwrap(), None);
}

#[tokio::test]
async fn referrers_filter_by_subject_and_artifact_type() {
    let (_d, md) = open().await;
    md.link_blob("r", D1, 1).await.unwrap();
    let mut a = manifest("r", M1, vec![D1], None);
    a.subject = Some(D2);
    a.annotations = Some(r#"{"k":"v"}"#.into());
    md.put_manifest(&a).await.unwrap();
    let mut b = manifest("r", M2, vec![D1], None);
    b.subject = Some(D2);
    b.artifact_type = Some("application/x.other");
    md.put_manifest(&b).await.unwrap();
    assert_eq!(md.referrers("r", D2, None).await.unwrap().len(), 2);
    let only = md.referrers("r", D2, Some("application/x.other")).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].digest, M2);
    assert!(md.referrers("other", D2, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn uploads_advance_only_from_the_expected_size() {
    let (_d, md) = open().await;
    let u = UploadRow {
        id: "u1".into(),
        repository: "r".into(),
        size: 0,
        hash_state: vec![1, 2],
        storage_state: None,
        started_at: 1,
        updated_at: 1,
    };
    md.create_upload(&u).await.unwrap();
    assert!(md.advance_upload("u1", 0, 10, &[3], Some("parts")).await.unwrap());
    assert!(!md.advance_upload("u1", 0, 20, &[4], None).await.unwrap(), "stale size refused");
    let got = md.get_upload("u1").await.unwrap().unwrap();
    assert_eq!((got.size, got.hash_state, got.storage_state.as_deref()), (10, vec![3], Some("parts")));
    assert_eq!(md.stale_uploads(now_millis() + 1, 10).await.unwrap().len(), 1);
    assert!(md.delete_upload("u1").await.unwrap());
    assert_eq!(md.get_upload("u1").await.unwrap(), None);
}
