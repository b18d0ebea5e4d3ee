//! In-process API tests: the router over a real filesystem store and SQLite
//! database in a temporary directory, driven request by request.

mod common;

use axum::http::{Method, StatusCode};
use berth_registry::RegistryConfig;
use berth_server::ServerConfig;
use berth_types::{media, Digest};
use bytes::Bytes;
use common::*;

#[tokio::test]
async fn base_endpoint_answers_200_json() {
    let app = TestApp::new().await;
    for uri in ["/v2/", "/v2"] {
        let r = app.get(uri).await;
        r.expect(200);
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(&r.body[..], b"{}");
    }
    app.send(Method::HEAD, "/v2/", &[], Bytes::new()).await.expect(200);
    app.get("/nope").await.expect(404);
    // The root answers 200 for load balancer probes, as distribution's does.
    let r = app.get("/").await;
    r.expect(200);
    assert_eq!(r.header("cache-control"), "no-cache");
}

#[tokio::test]
async fn monolithic_push_then_head_and_get() {
    let app = TestApp::new().await;
    let data = b"some layer content".to_vec();
    let d = Digest::of_bytes(&data);
    let r = app.send(Method::POST, &format!("/v2/a/b/blobs/uploads/?digest={d}"), &[], data.clone()).await;
    r.expect(201);
    assert_eq!(r.header("location"), format!("http://registry.test:5000/v2/a/b/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), d.as_str());

    let h = app.send(Method::HEAD, &format!("/v2/a/b/blobs/{d}"), &[], Bytes::new()).await;
    h.expect(200);
    assert_eq!(h.header("content-length"), data.len().to_string());
    assert_eq!(h.header("docker-content-digest"), d.as_str());
    assert_eq!(h.header("content-type"), "application/octet-stream");
    assert!(h.body.is_empty());

    let g = app.get(&format!("/v2/a/b/blobs/{d}")).await;
    g.expect(200);
    assert_eq!(&g.body[..], &data[..]);
    assert_eq!(g.header("etag"), format!("\"{d}\""));

    // Not linked into another repository.
    app.get(&format!("/v2/other/blobs/{d}")).await.expect_error(404, "BLOB_UNKNOWN");
    // A percent-encoded colon is the same digest.
    app.get(&format!("/v2/a/b/blobs/{}", d.as_str().replace(':', "%3A"))).await.expect(200);
    // Conditional requests.
    app.send(Method::GET, &format!("/v2/a/b/blobs/{d}"), &[("if-none-match", &format!("\"{d}\""))], Bytes::new())
        .await
        .expect(304);
    let r = app.send(Method::HEAD, &format!("/v2/a/b/blobs/{d}"), &[("if-none-match", "*")], Bytes::new()).await;
    r.expect(304);
    assert_eq!(r.header("content-length"), data.len().to_string(), "the size a 200 would have");
    let other = format!("\"{}\"", Digest::of_bytes(b"other"));
    app.send(Method::GET, &format!("/v2/a/b/blobs/{d}"), &[("if-none-match", &other)], Bytes::new()).await.expect(200);
}

#[tokio::test]
async fn blob_ranges_answer_206_or_416() {
    let app = TestApp::new().await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let d = app.push_blob("r", &data).await;
    let uri = format!("/v2/r/blobs/{d}");
    let r = app.send(Method::GET, &uri, &[("range", "bytes=10-19")], Bytes::new()).await;
    r.expect(206);
    assert_eq!(&r.body[..], &data[10..20]);
    assert_eq!(r.header("content-range"), "bytes 10-19/1000");
    assert_eq!(r.header("content-length"), "10");
    let r = app.send(Method::GET, &uri, &[("range", "bytes=990-")], Bytes::new()).await;
    r.expect(206);
    assert_eq!(&r.body[..], &data[990..]);
    let r = app.send(Method::GET, &uri, &[("range", "bytes=-5")], Bytes::new()).await;
    r.expect(206);
    assert_eq!(&r.body[..], &data[995..]);
    let r = app.send(Method::GET, &uri, &[("range", "bytes=995-5000")], Bytes::new()).await;
    r.expect(206);
    assert_eq!(r.header("content-range"), "bytes 995-999/1000");
    let r = app.send(Method::GET, &uri, &[("range", "bytes=1000-")], Bytes::new()).await;
    r.expect(416);
    assert_eq!(r.header("content-range"), "bytes */1000");
    assert_eq!(r.header("docker-content-digest"), d.as_str());
    // Unparsable ranges are ignored, as HTTP allows.
    app.send(Method::GET, &uri, &[("range", "items=1-2")], Bytes::new()).await.expect(200);
}

#[tokio::test]
async fn chunked_upload_checks_content_range() {
    let app = TestApp::new().await;
    let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 256) as u8).collect();
    let d = Digest::of_bytes(&data);
    let r = app.send(Method::POST, "/v2/team/app/blobs/uploads/", &[], Bytes::new()).await;
    r.expect(202);
    assert_eq!(r.header("range"), "0-0");
    let id = r.header("docker-upload-uuid").to_owned();
    let loc = r.header("location").to_owned();
    assert_eq!(loc, format!("http://registry.test:5000/v2/team/app/blobs/uploads/{id}"));
    let path = loc.trim_start_matches("http://registry.test:5000").to_owned();

    let r = app
        .send(Method::PATCH, &path, &[("content-range", "0-99"), ("content-length", "100")], data[..100].to_vec())
        .await;
    r.expect(202);
    assert_eq!(r.header("range"), "0-99");
    assert_eq!(r.header("docker-upload-uuid"), id);
    assert_eq!(r.header("location"), loc);

    // Out of order, and a retried old chunk, both answer 416 with where the upload stands.
    for range in ["150-199", "0-99"] {
        let (a, b): (usize, usize) = {
            let (a, b) = range.split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        let r = app.send(Method::PATCH, &path, &[("content-range", range)], data[a..=b].to_vec()).await;
        r.expect_error(416, "RANGE_INVALID");
        assert_eq!(r.header("range"), "0-99");
        assert_eq!(r.header("location"), loc);
    }
    // A malformed Content-Range is refused the same way.
    app.send(Method::PATCH, &path, &[("content-range", "x-y")], data[100..200].to_vec())
        .await
        .expect_error(416, "RANGE_INVALID");

    let s = app.get(&path).await;
    s.expect(204);
    assert_eq!(s.header("range"), "0-99");
    let s = app.send(Method::HEAD, &path, &[], Bytes::new()).await;
    s.expect(204);
    assert_eq!(s.header("range"), "0-99");
    assert_eq!(s.header("docker-upload-uuid"), id);

    // A chunk without Content-Range is appended (streamed upload).
    app.send(Method::PATCH, &path, &[], data[100..200].to_vec()).await.expect(202);
    // Final chunk with the PUT.
    let r = app
        .send(Method::PUT, &format!("{path}?digest={d}"), &[("content-range", "200-299")], data[200..].to_vec())
        .await;
    r.expect(201);
    assert_eq!(r.header("location"), format!("http://registry.test:5000/v2/team/app/blobs/{d}"));
    assert_eq!(&app.get(&format!("/v2/team/app/blobs/{d}")).await.body[..], &data[..]);
    // The session is gone.
    app.get(&path).await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn upload_put_requires_a_matching_digest() {
    let app = TestApp::new().await;
    let r = app.send(Method::POST, "/v2/r/blobs/uploads/", &[], Bytes::new()).await;
    let path = r.header("location").trim_start_matches("http://registry.test:5000").to_owned();
    app.send(Method::PATCH, &path, &[], b"abc".to_vec()).await.expect(202);
    app.send(Method::PUT, &path, &[], Bytes::new()).await.expect_error(400, "DIGEST_INVALID");
    app.send(Method::PUT, &format!("{path}?digest=sha256:nothex"), &[], Bytes::new())
        .await
        .expect_error(400, "DIGEST_INVALID");
    let wrong = Digest::of_bytes(b"xyz");
    app.send(Method::PUT, &format!("{path}?digest={wrong}"), &[], Bytes::new())
        .await
        .expect_error(400, "DIGEST_INVALID");
    // A digest mismatch ends the session, and nothing is stored.
    app.get(&path).await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.get(&format!("/v2/r/blobs/{}", Digest::of_bytes(b"abc"))).await.expect_error(404, "BLOB_UNKNOWN");
    // Monolithic with a wrong digest.
    app.send(Method::POST, &format!("/v2/r/blobs/uploads/?digest={wrong}"), &[], b"abc".to_vec())
        .await
        .expect_error(400, "DIGEST_INVALID");
    app.send(Method::POST, "/v2/r/blobs/uploads/?digest=md5:abc", &[], b"abc".to_vec())
        .await
        .expect_error(400, "DIGEST_INVALID");
    // Declared length differs from the body.
    let r = app.send(Method::POST, "/v2/r/blobs/uploads/", &[], Bytes::new()).await;
    let path = r.header("location").trim_start_matches("http://registry.test:5000").to_owned();
    app.send(Method::PATCH, &path, &[("content-range", "0-9")], b"abc".to_vec())
        .await
        .expect_error(400, "SIZE_INVALID");
    app.send(Method::PATCH, &path, &[("content-range", "0-9"), ("content-length", "3")], b"abc".to_vec())
        .await
        .expect_error(400, "SIZE_INVALID");
    // Nothing was appended by the refused chunks.
    assert_eq!(app.get(&path).await.header("range"), "0-0");
}

#[tokio::test]
async fn upload_sessions_can_be_cancelled_and_unknown_ones_are_404() {
    let app = TestApp::new().await;
    let r = app.send(Method::POST, "/v2/r/blobs/uploads/", &[], Bytes::new()).await;
    let path = r.header("location").trim_start_matches("http://registry.test:5000").to_owned();
    app.send(Method::PATCH, &path, &[], b"partial".to_vec()).await.expect(202);
    let r = app.send(Method::DELETE, &path, &[], Bytes::new()).await;
    r.expect(204);
    assert!(path.ends_with(r.header("docker-upload-uuid")));
    app.get(&path).await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.send(Method::DELETE, &path, &[], Bytes::new()).await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.send(Method::PATCH, &path, &[], b"more".to_vec()).await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.get("/v2/r/blobs/uploads/not-a-uuid").await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.get(&format!("/v2/r/blobs/uploads/{}", uuid::Uuid::new_v4())).await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    // A session belongs to its repository.
    let r = app.send(Method::POST, "/v2/r/blobs/uploads/", &[], Bytes::new()).await;
    let id = r.header("docker-upload-uuid").to_owned();
    app.get(&format!("/v2/other/blobs/uploads/{id}")).await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn cross_repository_mount() {
    let app = TestApp::new().await;
    let d = app.push_blob("src/repo", b"shared layer").await;
    let r = app.send(Method::POST, &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"), &[], Bytes::new()).await;
    r.expect(201);
    assert_eq!(r.header("location"), format!("http://registry.test:5000/v2/dst/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), d.as_str());
    app.get(&format!("/v2/dst/blobs/{d}")).await.expect(200);
    // Source lacks it, or is no valid name: a normal upload session.
    let other = Digest::of_bytes(b"not there");
    for q in [format!("mount={other}&from=src/repo"), format!("mount={d}&from=NOPE"), format!("mount={other}")] {
        let r = app.send(Method::POST, &format!("/v2/dst2/blobs/uploads/?{q}"), &[], Bytes::new()).await;
        r.expect(202);
        assert!(!r.header("docker-upload-uuid").is_empty());
    }
    // Even an invalid digest only means "no mount": a normal session.
    let r = app.send(Method::POST, "/v2/dst/blobs/uploads/?mount=bad&from=src/repo", &[], Bytes::new()).await;
    r.expect(202);
    assert!(!r.header("docker-upload-uuid").is_empty());
    // Without `from`, the blob is found where it is (the OCI spec's automatic mount).
    let r = app.send(Method::POST, &format!("/v2/dst3/blobs/uploads/?mount={d}"), &[], Bytes::new()).await;
    r.expect(201);
    app.get(&format!("/v2/dst3/blobs/{d}")).await.expect(200);
    // uploads.automaticmount: false turns that off.
    let off =
        TestApp::with(RegistryConfig::default(), ServerConfig { automatic_mount: false, ..Default::default() }).await;
    let d = off.push_blob("src/repo", b"shared layer").await;
    off.send(Method::POST, &format!("/v2/dst/blobs/uploads/?mount={d}"), &[], Bytes::new()).await.expect(202);
    off.get(&format!("/v2/dst/blobs/{d}")).await.expect_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn manifests_by_tag_and_digest_are_byte_exact() {
    let app = TestApp::new().await;
    let (digest, m) = app.push_image("lib/app", "v1", b"layer one").await;
    for reference in ["v1".to_owned(), digest.to_string()] {
        let r = app
            .send(
                Method::GET,
                &format!("/v2/lib/app/manifests/{reference}"),
                &[("accept", media::OCI_MANIFEST)],
                Bytes::new(),
            )
            .await;
        r.expect(200);
        assert_eq!(&r.body[..], &m[..]);
        assert_eq!(r.header("content-type"), media::OCI_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), digest.as_str());
        assert_eq!(r.header("content-length"), m.len().to_string());
        let h = app.send(Method::HEAD, &format!("/v2/lib/app/manifests/{reference}"), &[], Bytes::new()).await;
        h.expect(200);
        assert_eq!(h.header("content-length"), m.len().to_string());
        assert_eq!(h.header("docker-content-digest"), digest.as_str());
        assert!(h.body.is_empty());
    }
    // A manifest is also readable as a blob of its repository.
    assert_eq!(&app.get(&format!("/v2/lib/app/blobs/{digest}")).await.body[..], &m[..]);
    // Pushing by digest: Location names the digest.
    let r = app.push_manifest("lib/app", digest.as_str(), media::OCI_MANIFEST, &m).await;
    r.expect(201);
    assert_eq!(r.header("location"), format!("http://registry.test:5000/v2/lib/app/manifests/{digest}"));
    // Accept negotiation: a client that lists only Docker types gets no OCI manifest.
    app.send(Method::GET, "/v2/lib/app/manifests/v1", &[("accept", media::DOCKER_MANIFEST)], Bytes::new())
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    let both = format!("{}, {};q=0.5", media::DOCKER_MANIFEST, media::OCI_MANIFEST);
    app.send(Method::GET, "/v2/lib/app/manifests/v1", &[("accept", &both)], Bytes::new()).await.expect(200);
    app.send(Method::GET, "/v2/lib/app/manifests/v1", &[("accept", "*/*")], Bytes::new()).await.expect(200);
    // Unknown ones.
    app.get("/v2/lib/app/manifests/v2").await.expect_error(404, "MANIFEST_UNKNOWN");
    app.get(&format!("/v2/lib/app/manifests/{}", Digest::of_bytes(b"x"))).await.expect_error(404, "MANIFEST_UNKNOWN");
    app.get("/v2/nope/manifests/v1").await.expect_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn docker_schema2_and_manifest_list() {
    let app = TestApp::new().await;
    let config = app.push_blob("d", b"{}").await;
    let layer = app.push_blob("d", b"tar.gz bytes").await;
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2, "digest": config.as_str()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 12, "digest": layer.as_str()}]
    }))
    .unwrap();
    let md = Digest::of_bytes(&m);
    app.push_manifest("d", "amd64", media::DOCKER_MANIFEST, &m).await.expect(201);
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::DOCKER_MANIFEST_LIST,
        "manifests": [{"mediaType": media::DOCKER_MANIFEST, "size": m.len(), "digest": md.as_str(),
                       "platform": {"architecture": "amd64", "os": "linux"}}]
    }))
    .unwrap();
    app.push_manifest("d", "latest", media::DOCKER_MANIFEST_LIST, &list).await.expect(201);
    let r =
        app.send(Method::GET, "/v2/d/manifests/latest", &[("accept", media::DOCKER_MANIFEST_LIST)], Bytes::new()).await;
    r.expect(200);
    assert_eq!(r.header("content-type"), media::DOCKER_MANIFEST_LIST);
    assert_eq!(&r.body[..], &list[..]);
    // Without an Accept header the stored type is served as it is.
    let r = app.get("/v2/d/manifests/amd64").await;
    r.expect(200);
    assert_eq!(r.header("content-type"), media::DOCKER_MANIFEST);
    // A client that reads schema 2 but not lists gets the linux/amd64 image, by tag.
    for method in [Method::GET, Method::HEAD] {
        let r = app
            .send(method.clone(), "/v2/d/manifests/latest", &[("accept", media::DOCKER_MANIFEST)], Bytes::new())
            .await;
        r.expect(200);
        assert_eq!(r.header("content-type"), media::DOCKER_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), md.as_str());
        if method == Method::GET {
            assert_eq!(&r.body[..], &m[..]);
        }
    }
    // By digest the list itself is answered.
    let r = app
        .send(
            Method::GET,
            &format!("/v2/d/manifests/{}", Digest::of_bytes(&list)),
            &[("accept", media::DOCKER_MANIFEST)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.header("content-type"), media::DOCKER_MANIFEST_LIST);
}

#[tokio::test]
async fn manifest_validation_errors() {
    let app = TestApp::new().await;
    let config = app.push_blob("v", b"{}").await;
    let missing = Digest::of_bytes(b"missing");
    let m = image_manifest(&config, 2, &[(&missing, 7)], None, None);
    let r = app.push_manifest("v", "t", media::OCI_MANIFEST, &m).await;
    r.expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(r.json()["errors"][0]["detail"], missing.as_str());

    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_INDEX,
        "manifests": [{"mediaType": media::OCI_MANIFEST, "size": 10, "digest": missing.as_str()}]
    }))
    .unwrap();
    app.push_manifest("v", "idx", media::OCI_INDEX, &index).await.expect_error(400, "MANIFEST_BLOB_UNKNOWN");

    app.push_manifest("v", "t", media::OCI_MANIFEST, b"{not json").await.expect_error(400, "MANIFEST_INVALID");
    // 100,000 levels in a field Berth does not read: refused, and the server is fine.
    let good = image_manifest(&config, 2, &[], None, None);
    let deep = format!(
        "{},\"x-unread\":{}0{}}}",
        std::str::from_utf8(&good[..good.len() - 1]).unwrap(),
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = app.push_manifest("v", "deep", media::OCI_MANIFEST, deep.as_bytes()).await;
    r.expect_error(400, "MANIFEST_INVALID");
    assert!(r.json()["errors"][0]["detail"].as_str().unwrap().contains("nested deeper"));
    app.push_manifest("v", "t", media::OCI_MANIFEST, b"").await.expect_error(400, "MANIFEST_INVALID");
    let good = image_manifest(&config, 2, &[], None, None);
    app.push_manifest("v", "t", media::DOCKER_MANIFEST, &good).await.expect_error(400, "MANIFEST_INVALID");
    app.push_manifest(
        "v",
        "t",
        "application/vnd.example.unknown+json",
        br#"{"schemaVersion":2,"mediaType":"application/vnd.example.unknown+json"}"#,
    )
    .await
    .expect_error(400, "MANIFEST_INVALID");
    app.push_manifest("v", &Digest::of_bytes(b"other").to_string(), media::OCI_MANIFEST, &good)
        .await
        .expect_error(400, "DIGEST_INVALID");
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    app.push_manifest("v", "t", media::OCI_MANIFEST, &huge).await.expect_error(413, "MANIFEST_INVALID");
    app.push_manifest("v", "bad!tag", media::OCI_MANIFEST, &good).await.expect_error(400, "TAG_INVALID");
    app.push_manifest("v", "sha256:abc", media::OCI_MANIFEST, &good).await.expect_error(400, "DIGEST_INVALID");
    // Nothing of the failures was recorded.
    app.get("/v2/v/tags/list").await.expect_error(404, "NAME_UNKNOWN");
    app.push_manifest("v", "t", media::OCI_MANIFEST, &good).await.expect(201);
}

#[tokio::test]
async fn deleting_a_tag_untags_and_deleting_a_digest_removes() {
    let app = TestApp::new().await;
    let (digest, _) = app.push_image("del", "a", b"l").await;
    let (_, m) = app.push_image("del", "b", b"l").await;
    assert_eq!(Digest::of_bytes(&m), digest);
    app.send(Method::DELETE, "/v2/del/manifests/a", &[], Bytes::new()).await.expect(202);
    app.get("/v2/del/manifests/a").await.expect_error(404, "MANIFEST_UNKNOWN");
    app.get("/v2/del/manifests/b").await.expect(200);
    assert_eq!(app.get("/v2/del/tags/list").await.json()["tags"], serde_json::json!(["b"]));
    app.send(Method::DELETE, &format!("/v2/del/manifests/{digest}"), &[], Bytes::new()).await.expect(202);
    app.get("/v2/del/manifests/b").await.expect_error(404, "MANIFEST_UNKNOWN");
    app.get(&format!("/v2/del/manifests/{digest}")).await.expect_error(404, "MANIFEST_UNKNOWN");
    app.send(Method::DELETE, &format!("/v2/del/manifests/{digest}"), &[], Bytes::new())
        .await
        .expect_error(404, "MANIFEST_UNKNOWN");
    app.send(Method::DELETE, "/v2/del/manifests/zzz", &[], Bytes::new()).await.expect_error(404, "MANIFEST_UNKNOWN");
    // Blob delete unlinks from the repository.
    let d = app.push_blob("del", b"blob").await;
    app.send(Method::DELETE, &format!("/v2/del/blobs/{d}"), &[], Bytes::new()).await.expect(202);
    app.get(&format!("/v2/del/blobs/{d}")).await.expect_error(404, "BLOB_UNKNOWN");
    app.send(Method::DELETE, &format!("/v2/del/blobs/{d}"), &[], Bytes::new()).await.expect_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn deletes_are_unsupported_unless_enabled() {
    let app = TestApp::with(RegistryConfig::default(), ServerConfig::default()).await;
    let (digest, _) = app.push_image("r", "t", b"x").await;
    app.send(Method::DELETE, &format!("/v2/r/manifests/{digest}"), &[], Bytes::new())
        .await
        .expect_error(405, "UNSUPPORTED");
    app.send(Method::DELETE, "/v2/r/manifests/t", &[], Bytes::new()).await.expect_error(405, "UNSUPPORTED");
    app.get("/v2/r/manifests/t").await.expect(200);
}

#[tokio::test]
async fn read_only_mode_refuses_writes_and_serves_reads() {
    let app = TestApp::new().await;
    let (digest, m) = app.push_image("r", "t", b"x").await;
    // A second registry over the same store, in read-only mode.
    let ro = TestApp {
        router: TestApp::open(
            app.dir.path(),
            RegistryConfig { delete_enabled: true, read_only: true, ..Default::default() },
            ServerConfig::default(),
        )
        .await,
        dir: app.dir.clone(),
        headers: Vec::new(),
        peer: LOCAL,
    };
    let r = ro.get("/v2/r/manifests/t").await;
    r.expect(200);
    assert_eq!(&r.body[..], &m[..]);
    ro.send(Method::POST, "/v2/r/blobs/uploads/", &[], Bytes::new()).await.expect_error(405, "UNSUPPORTED");
    ro.push_manifest("r", "t2", media::OCI_MANIFEST, &m).await.expect_error(405, "UNSUPPORTED");
    ro.send(Method::DELETE, &format!("/v2/r/manifests/{digest}"), &[], Bytes::new())
        .await
        .expect_error(405, "UNSUPPORTED");
    ro.get("/v2/r/manifests/t").await.expect(200);
}

#[tokio::test]
async fn tags_list_paginates_with_link_headers() {
    let app = TestApp::new().await;
    for t in ["c", "a", "e", "b", "d"] {
        app.push_image("p", t, b"same").await;
    }
    let r = app.get("/v2/p/tags/list").await;
    r.expect(200);
    assert_eq!(r.json(), serde_json::json!({"name": "p", "tags": ["a", "b", "c", "d", "e"]}));
    assert_eq!(r.header("link"), "");
    let r = app.get("/v2/p/tags/list?n=2").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(r.header("link"), "</v2/p/tags/list?n=2&last=b>; rel=\"next\"");
    let r = app.get("/v2/p/tags/list?n=2&last=b").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["c", "d"]));
    let r = app.get("/v2/p/tags/list?n=2&last=d").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["e"]));
    assert_eq!(r.header("link"), "");
    assert_eq!(app.get("/v2/p/tags/list?n=0").await.json()["tags"], serde_json::json!([]));
    app.get("/v2/p/tags/list?n=-1").await.expect_error(400, "PAGINATION_NUMBER_INVALID");
    app.get("/v2/p/tags/list?n=abc").await.expect_error(400, "PAGINATION_NUMBER_INVALID");
    app.get("/v2/unknown/tags/list").await.expect_error(404, "NAME_UNKNOWN");
}

#[tokio::test]
async fn catalog_paginates_and_bounds_n() {
    let app =
        TestApp::with(RegistryConfig::default(), ServerConfig { catalog_max_entries: 3, ..ServerConfig::default() })
            .await;
    for r in ["x/b", "x/a", "c", "x/a/z"] {
        app.push_image(r, "t", b"l").await;
    }
    let r = app.get("/v2/_catalog").await;
    r.expect(200);
    assert_eq!(r.json()["repositories"], serde_json::json!(["c", "x/a", "x/a/z"]));
    assert_eq!(r.header("link"), "</v2/_catalog?n=3&last=x%2Fa%2Fz>; rel=\"next\"");
    let r = app.get("/v2/_catalog?n=3&last=x%2Fa%2Fz").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["x/b"]));
    let r = app.get("/v2/_catalog?n=1&last=c").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["x/a"]));
    app.get("/v2/_catalog?n=4").await.expect_error(400, "PAGINATION_NUMBER_INVALID");
    app.get("/v2/_catalog?n=x").await.expect_error(400, "PAGINATION_NUMBER_INVALID");
}

#[tokio::test]
async fn referrers_list_and_filter() {
    let app = TestApp::new().await;
    let (subject, sm) = app.push_image("art", "v1", b"image layer").await;
    let empty_config = app.push_blob("art", b"{}").await;
    // A referrer whose subject does not exist yet is accepted.
    let ghost = Digest::of_bytes(b"not pushed yet");
    let sig = image_manifest(&empty_config, 2, &[], Some((&ghost, 10)), Some("application/vnd.example.sig"));
    let r = app.push_manifest("art", &Digest::of_bytes(&sig).to_string(), media::OCI_MANIFEST, &sig).await;
    r.expect(201);
    assert_eq!(r.header("oci-subject"), ghost.as_str());

    let sbom = image_manifest(&empty_config, 2, &[], Some((&subject, sm.len())), Some("application/vnd.example.sbom"));
    let sig2 = image_manifest(&empty_config, 2, &[], Some((&subject, sm.len())), Some("application/vnd.example.sig"));
    for m in [&sbom, &sig2] {
        app.push_manifest("art", &Digest::of_bytes(m).to_string(), media::OCI_MANIFEST, m).await.expect(201);
    }
    let r = app.get(&format!("/v2/art/referrers/{subject}")).await;
    r.expect(200);
    assert_eq!(r.header("content-type"), media::OCI_INDEX);
    assert_eq!(r.header("oci-filters-applied"), "");
    let idx = r.json();
    assert_eq!(idx["schemaVersion"], 2);
    assert_eq!(idx["mediaType"], media::OCI_INDEX);
    let ms = idx["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    let sbom_d = Digest::of_bytes(&sbom);
    let entry = ms.iter().find(|m| m["digest"] == sbom_d.as_str()).unwrap();
    assert_eq!(entry["artifactType"], "application/vnd.example.sbom");
    assert_eq!(entry["size"], sbom.len());
    assert_eq!(entry["mediaType"], media::OCI_MANIFEST);
    assert_eq!(entry["annotations"]["org.example.kind"], "application/vnd.example.sbom");

    let r = app.get(&format!("/v2/art/referrers/{subject}?artifactType=application/vnd.example.sig")).await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    let ms = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0]["digest"], Digest::of_bytes(&sig2).as_str());
    // The earlier referrer shows up once its subject is pushed... and already now by digest.
    assert_eq!(app.get(&format!("/v2/art/referrers/{ghost}")).await.json()["manifests"].as_array().unwrap().len(), 1);
    // Unknown subject: an empty index.
    let r = app.get(&format!("/v2/art/referrers/{}", Digest::of_bytes(b"nothing"))).await;
    r.expect(200);
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    app.get("/v2/art/referrers/sha256:zz").await.expect_error(400, "DIGEST_INVALID");
    app.get("/v2/art/referrers/latest").await.expect_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn invalid_names_methods_and_paths() {
    let app = TestApp::new().await;
    app.get("/v2/UPPER/tags/list").await.expect_error(400, "NAME_INVALID");
    app.get("/v2/a..b/manifests/latest").await.expect_error(400, "NAME_INVALID");
    let long = "a".repeat(256);
    app.get(&format!("/v2/{long}/tags/list")).await.expect_error(400, "NAME_INVALID");
    app.send(Method::POST, "/v2/Bad/blobs/uploads/", &[], Bytes::new()).await.expect_error(400, "NAME_INVALID");
    app.get("/v2/a/blobs/sha256:123").await.expect_error(400, "DIGEST_INVALID");
    // A read of a reference that is neither a tag nor a digest finds nothing (end-3: 404 only);
    // a write of one is refused as invalid.
    app.get("/v2/a/manifests/-bad").await.expect_error(404, "MANIFEST_UNKNOWN");
    app.get("/v2/a/manifests/sha256:123").await.expect_error(404, "MANIFEST_UNKNOWN");
    app.send(Method::HEAD, "/v2/a/manifests/-bad", &[], Bytes::new()).await.expect(404);
    app.send(Method::PUT, "/v2/a/manifests/-bad", &[], Bytes::new()).await.expect_error(400, "TAG_INVALID");
    app.send(Method::PUT, "/v2/a/manifests/sha256:123", &[], Bytes::new()).await.expect_error(400, "DIGEST_INVALID");
    // Upload ids in the one spelling Berth hands out.
    let r = app.send(Method::POST, "/v2/a/blobs/uploads/", &[], Bytes::new()).await;
    r.expect(202);
    let id = r.header("docker-upload-uuid").to_owned();
    app.get(&format!("/v2/a/blobs/uploads/{id}")).await.expect(204);
    for other in [id.to_uppercase(), id.replace('-', ""), format!("{{{id}}}")] {
        app.get(&format!("/v2/a/blobs/uploads/{other}")).await.expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    }
    let r = app.send(Method::POST, "/v2/a/manifests/latest", &[], Bytes::new()).await;
    r.expect_error(405, "UNSUPPORTED");
    assert_eq!(r.header("allow"), "GET, HEAD, PUT, DELETE");
    app.send(Method::PUT, "/v2/a/tags/list", &[], Bytes::new()).await.expect_error(405, "UNSUPPORTED");
    app.send(Method::PATCH, &format!("/v2/a/blobs/{}", Digest::of_bytes(b"")), &[], Bytes::new())
        .await
        .expect_error(405, "UNSUPPORTED");
    app.get("/v2/a/unknown/thing").await.expect_error(404, "NOT_FOUND");
    app.get("/v2/a%zz/tags/list").await.expect(404);
}

#[tokio::test]
async fn locations_follow_proxy_headers_and_configuration() {
    let app = TestApp::new().await;
    let r = app
        .send(
            Method::POST,
            "/v2/r/blobs/uploads/",
            &[("x-forwarded-proto", "https"), ("x-forwarded-host", "registry.example.test")],
            Bytes::new(),
        )
        .await;
    assert!(
        r.header("location").starts_with("https://registry.example.test/v2/r/blobs/uploads/"),
        "{}",
        r.header("location")
    );
    let r = app
        .send(
            Method::POST,
            "/v2/r/blobs/uploads/",
            &[("forwarded", "for=1.2.3.4;proto=https;host=fwd.test")],
            Bytes::new(),
        )
        .await;
    assert!(r.header("location").starts_with("https://fwd.test/v2/"), "{}", r.header("location"));

    let app = TestApp::with(
        RegistryConfig::default(),
        ServerConfig {
            host: Some("https://public.test:8443/".into()),
            headers: vec![("x-content-type-options".parse().unwrap(), "nosniff".parse().unwrap())],
            ..ServerConfig::default()
        },
    )
    .await;
    let r = app.send(Method::POST, "/v2/r/blobs/uploads/", &[], Bytes::new()).await;
    assert!(r.header("location").starts_with("https://public.test:8443/v2/r/blobs/uploads/"));
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    let app =
        TestApp::with(RegistryConfig::default(), ServerConfig { relative_urls: true, ..ServerConfig::default() }).await;
    let r = app.send(Method::POST, "/v2/r/blobs/uploads/", &[], Bytes::new()).await;
    assert!(r.header("location").starts_with("/v2/r/blobs/uploads/"));
}

#[tokio::test]
async fn empty_blob_and_post_without_body() {
    let app = TestApp::new().await;
    let d = Digest::of_bytes(b"");
    app.send(Method::POST, &format!("/v2/e/blobs/uploads/?digest={d}"), &[], Bytes::new()).await.expect(201);
    let r = app.get(&format!("/v2/e/blobs/{d}")).await;
    r.expect(200);
    assert_eq!(r.header("content-length"), "0");
    assert!(r.body.is_empty());
}

/// Arbitrary requests never make the server answer 500 or panic.
#[tokio::test]
async fn garbage_requests_never_cause_server_errors() {
    let app = TestApp::new().await;
    let (digest, _) = app.push_image("g", "t", b"x").await;
    let (kept, kept_body) = app.push_image("keep", "t", b"x").await;
    assert_eq!(kept, digest);
    let paths = [
        "/v2/g/manifests/t".to_owned(),
        format!("/v2/g/manifests/{digest}"),
        format!("/v2/g/blobs/{digest}"),
        "/v2/g/blobs/uploads/".to_owned(),
        format!("/v2/g/blobs/uploads/{}", uuid::Uuid::new_v4()),
        "/v2/g/tags/list?n=99999999999999999999999".to_owned(),
        "/v2/_catalog?n=18446744073709551615".to_owned(),
        format!("/v2/g/referrers/{digest}?artifactType="),
        "/v2/g/blobs/uploads/?digest=sha256:&mount=".to_owned(),
        "/v2/%00/tags/list".to_owned(),
    ];
    let bodies: [&[u8]; 5] = [b"", b"{}", b"\xff\xfe", br#"{"schemaVersion":2,"manifests":[{}]}"#, b"[1,2,3]"];
    let headers: [&[(&str, &str)]; 5] = [
        &[],
        &[("content-range", "5-1")],
        &[("content-range", "18446744073709551615-18446744073709551615")],
        &[("range", "bytes=99999999999999999999-")],
        &[("content-type", "application/vnd.oci.image.index.v1+json"), ("accept", ",,;;")],
    ];
    for p in &paths {
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::PATCH, Method::POST, Method::DELETE] {
            for b in bodies {
                for h in headers {
                    let r = app.send(m.clone(), p, h, b.to_vec()).await;
                    assert!(r.status.as_u16() < 500, "{m} {p} {h:?} {b:?} -> {}: {:?}", r.status, r.body);
                    if r.status.as_u16() >= 400 && m != Method::HEAD && r.status != StatusCode::RANGE_NOT_SATISFIABLE {
                        assert!(!r.code().is_empty(), "{m} {p}: error without OCI code: {:?}", r.body);
                    }
                }
            }
        }
    }
    // Another repository's data is intact.
    let r = app.get("/v2/keep/manifests/t").await;
    r.expect(200);
    assert_eq!(&r.body[..], &kept_body[..]);
}

#[tokio::test]
async fn gc_endpoint_collects_with_its_own_or_the_asked_grace_period() {
    let app = TestApp::new().await;
    let orphan = b"pushed, never named by a manifest";
    let d = Digest::of_bytes(orphan).to_string();
    app.send(Method::POST, &format!("/v2/gc/app/blobs/uploads/?digest={d}"), &[], &orphan[..]).await.expect(201);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    // gc.grace (an hour by default) protects the fresh blob.
    let r = app.job("/_berth/gc").await.unwrap();
    assert_eq!(r["blobs_deleted"], 0);
    app.send(Method::HEAD, &format!("/v2/gc/app/blobs/{d}"), &[], "").await.expect(200);
    // The read moved the blob's use time to now: let "now" pass for a grace of 0s.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    app.send(Method::POST, "/_berth/gc?grace=soon", &[], "").await.expect_error(400, "UNSUPPORTED");
    let r = app.job("/_berth/gc?grace=0s&dryrun=true").await.unwrap();
    assert_eq!(r["blobs"], serde_json::json!([d]));
    let r = app.job("/_berth/gc?grace=0s").await.unwrap();
    assert_eq!((r["blobs_deleted"].clone(), r["bytes_freed"].clone()), (1.into(), orphan.len().into()));
    app.send(Method::HEAD, &format!("/v2/gc/app/blobs/{d}"), &[], "").await.expect(404);
    app.send(Method::GET, "/_berth/nothing", &[], "").await.expect_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn without_auth_administration_answers_only_on_this_machine() {
    let app = TestApp::new().await;
    let (untagged, _) = app.push_image("victim/app", "t", b"layer of an image about to lose its tag").await;
    app.send(Method::DELETE, "/v2/victim/app/manifests/t", &[], "").await.expect(202);
    // From the network, or from anywhere through a proxy on this machine: refused, nothing deleted.
    let remote = app.asked_from(REMOTE);
    for (who, headers) in [(&remote, vec![]), (&app, vec![("x-forwarded-for", "192.0.2.7")])] {
        for (m, uri) in [
            (Method::POST, "/_berth/gc?deleteuntagged=true&grace=0s"),
            (Method::POST, "/_berth/retention"),
            (Method::GET, "/_berth/quotas"),
            (Method::DELETE, "/_berth/repositories/victim/app"),
        ] {
            let r = who.send(m.clone(), uri, &headers, "").await;
            r.expect_error(403, "DENIED");
        }
    }
    app.get(&format!("/v2/victim/app/manifests/{untagged}")).await.expect(200);
    // On this machine it runs.
    let r = app.job("/_berth/gc?deleteuntagged=true&grace=0s").await.unwrap();
    assert_eq!(r["manifests_deleted"], 1);
    app.get(&format!("/v2/victim/app/manifests/{untagged}")).await.expect_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn an_admin_token_opens_administration_from_anywhere() {
    let token = "0123456789abcdef-admin";
    let app = TestApp::with(
        RegistryConfig { delete_enabled: true, ..Default::default() },
        ServerConfig { admin_token: Some(token.into()), ..Default::default() },
    )
    .await;
    let remote = app.asked_from(REMOTE);
    remote.send(Method::GET, "/_berth/quotas", &[], "").await.expect_error(403, "DENIED");
    remote
        .send(Method::GET, "/_berth/quotas", &[("authorization", "Bearer wrong-token-of-length")], "")
        .await
        .expect(403);
    remote.send(Method::GET, "/_berth/quotas", &[("authorization", &format!("Bearer {token}"))], "").await.expect(200);
}

#[tokio::test]
async fn administration_paths_name_the_repository_they_say() {
    let app = TestApp::new().await;
    app.push_image("hdel", "t", b"layer of hdel").await;
    app.push_image("repositories/hdel", "t", b"layer of repositories/hdel").await;
    app.send(Method::DELETE, "/_berth/repositories/repositories/hdel", &[], "").await.expect(202);
    app.get("/v2/repositories/hdel/manifests/t").await.expect_error(404, "MANIFEST_UNKNOWN");
    app.get("/v2/hdel/manifests/t").await.expect(200);
    app.send(Method::DELETE, "/_berth/repositories/nothing/here", &[], "").await.expect_error(404, "NAME_UNKNOWN");
}

#[tokio::test]
async fn collections_that_delete_manifests_need_deletes_and_a_writable_registry() {
    let no_deletes =
        TestApp::with(RegistryConfig { delete_enabled: false, ..Default::default() }, ServerConfig::default()).await;
    no_deletes
        .send(Method::POST, "/_berth/gc?deleteuntagged=true&grace=0s", &[], "")
        .await
        .expect_error(405, "UNSUPPORTED");
    no_deletes.send(Method::DELETE, "/_berth/repositories/a", &[], "").await.expect_error(405, "UNSUPPORTED");
    // A collection of unreferenced blobs needs neither (distribution's garbage-collect).
    no_deletes.job("/_berth/gc?grace=0s").await.unwrap();
    no_deletes.job("/_berth/gc?deleteuntagged=true&dryrun=true").await.unwrap();

    let read_only = TestApp::with(
        RegistryConfig { delete_enabled: true, read_only: true, ..Default::default() },
        ServerConfig::default(),
    )
    .await;
    read_only
        .send(Method::POST, "/_berth/gc?deleteuntagged=true&grace=0s", &[], "")
        .await
        .expect_error(405, "UNSUPPORTED");
    read_only.send(Method::POST, "/_berth/retention", &[], "").await.expect_error(405, "UNSUPPORTED");
    read_only.send(Method::DELETE, "/_berth/repositories/a", &[], "").await.expect_error(405, "UNSUPPORTED");
    read_only.job("/_berth/gc?grace=0s").await.unwrap();
}

#[tokio::test]
async fn the_largest_grace_periods_keep_everything() {
    let app = TestApp::new().await;
    let d = app.push_blob("g/app", b"a blob whose manifest is still being pushed").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // The largest grace periods accepted (Go's largest duration): the cutoff saturates, nothing goes.
    for grace in ["2562047h", "9223372036854ms", "9223372036s"] {
        let r = app.job(&format!("/_berth/gc?grace={grace}")).await.unwrap();
        assert_eq!(r["blobs_deleted"], 0, "{grace}");
    }
    // Beyond it: refused, never wrapped into a cutoff in the future.
    for grace in ["18446744073708551s", "99999999999999999999999h", "18446744073709551616s", "2562047h2562047h"] {
        app.send(Method::POST, &format!("/_berth/gc?grace={grace}"), &[], "").await.expect_error(400, "UNSUPPORTED");
    }
    app.send(Method::HEAD, &format!("/v2/g/app/blobs/{d}"), &[], "").await.expect(200);
}

#[tokio::test]
async fn jobs_are_queued_followed_and_listed() {
    let app = TestApp::new().await;
    app.push_blob("jobs/app", b"an orphan for the listed job").await;
    let report = app.job("/_berth/gc?grace=0s&dryrun=true").await.unwrap();
    assert_eq!(report["dry_run"], true);
    let r = app.get("/_berth/jobs").await;
    r.expect(200);
    let all = r.json();
    let job = &all["jobs"][0];
    assert_eq!((job["kind"].as_str(), job["state"].as_str()), (Some("gc"), Some("done")), "{all}");
    assert_eq!(job["request"]["dry_run"], true);
    assert_eq!(job["result"], report);
    assert!(job["started_at"].as_i64() <= job["finished_at"].as_i64());
    let workers = all["workers"].as_array().unwrap();
    assert!(workers.iter().any(|w| w["name"] == "administration jobs" && w["runs"].as_u64() >= Some(1)), "{all}");
    assert_eq!(all["backlog"], serde_json::json!({ "ready": 0, "running": 0, "delayed": 0, "dead": 0 }));
    let id = job["id"].as_str().unwrap();
    app.get(&format!("/_berth/jobs/{id}")).await.expect(200);
    app.get("/_berth/jobs/0b1f4c36-9c0c-4a8e-8d3a-3f1c9b2a7e11").await.expect_error(404, "NOT_FOUND");
    app.get("/_berth/jobs/not-an-id").await.expect_error(404, "NOT_FOUND");
    app.send(Method::POST, "/_berth/jobs", &[], "").await.expect_error(405, "UNSUPPORTED");
    app.send(Method::DELETE, &format!("/_berth/jobs/{id}"), &[], "").await.expect_error(405, "UNSUPPORTED");
    // Retention with no policies does nothing, and says so.
    let r = app.job("/_berth/retention?dryrun=true").await.unwrap();
    assert_eq!(r["tags"], serde_json::json!([]));
    // Only administrators see jobs.
    let remote = app.asked_from(REMOTE);
    remote.get("/_berth/jobs").await.expect_error(403, "DENIED");
    remote.get(&format!("/_berth/jobs/{id}")).await.expect_error(403, "DENIED");
}
