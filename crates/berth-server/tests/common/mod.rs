//! Shared by the in-process API tests: the router over a real filesystem
//! store and SQLite database in a temporary directory.
#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use berth_metadata::Metadata;
use berth_registry::{Registry, RegistryConfig};
use berth_server::{Peer, ServerConfig};
use berth_storage::fs::FsDriver;
use berth_types::{media, Digest};
use bytes::Bytes;
use http_body_util::BodyExt;
use tower::ServiceExt;

pub struct TestApp {
    pub dir: Arc<tempfile::TempDir>,
    pub router: Router,
    /// Sent with every request (credentials, say).
    pub headers: Vec<(String, String)>,
    /// Where requests come from, as the accept loop would say (loopback unless set).
    pub peer: Peer,
}

/// A client on this machine.
pub const LOCAL: Peer =
    Peer::Tcp(std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000));
/// A client elsewhere on the network.
pub const REMOTE: Peer =
    Peer::Tcp(std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)), 40000));

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The first OCI error code of an error response.
    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"].as_str().unwrap_or("").to_owned()
    }

    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", String::from_utf8_lossy(&self.body));
        self
    }

    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.expect(status);
        assert_eq!(self.header("content-type"), "application/json");
        assert_eq!(self.code(), code, "body: {}", String::from_utf8_lossy(&self.body));
        self
    }
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with(
            RegistryConfig { delete_enabled: true, read_only: false, ..Default::default() },
            ServerConfig::default(),
        )
        .await
    }

    pub async fn with(rc: RegistryConfig, sc: ServerConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::at(dir, rc, sc).await
    }

    pub async fn at(dir: tempfile::TempDir, rc: RegistryConfig, sc: ServerConfig) -> Self {
        let router = Self::open(dir.path(), rc, sc).await;
        TestApp { dir: Arc::new(dir), router, headers: Vec::new(), peer: LOCAL }
    }

    /// The router, and the worker that runs the jobs administrators queue
    /// (as the server process runs it; it ends with the test's runtime).
    pub async fn open(dir: &std::path::Path, rc: RegistryConfig, mut sc: ServerConfig) -> Router {
        let storage = Arc::new(FsDriver::new(dir.join("store")).unwrap());
        let (meta, _) = Metadata::open_sqlite(&dir.join("meta.sqlite")).await.unwrap();
        let registry = Registry::new(storage, meta, rc);
        let mut runner = berth_jobs::Runner::new();
        sc.jobs = berth_jobs::JobsHandle::with_board(runner.board());
        let settings =
            berth_jobs::JobSettings { gc_grace: std::time::Duration::from_secs(3600), retention: Vec::new() };
        runner.spawn(Box::new(berth_jobs::AdminJobs::new(registry.clone(), settings, sc.jobs.clone())));
        berth_server::router(registry, sc)
    }

    /// Queues a job (`POST /_berth/gc…`), expects `202` with its status
    /// URL, and follows it to its end: the report of a job done, or the
    /// error of one that failed.
    pub async fn job(&self, uri: &str) -> Result<serde_json::Value, String> {
        let r = self.send(Method::POST, uri, &[], "").await;
        r.expect(202);
        let queued = r.json();
        assert_eq!(queued["state"], "queued", "{queued}");
        let status = r.header("location").strip_prefix("http://registry.test:5000").unwrap().to_owned();
        assert_eq!(status, format!("/_berth/jobs/{}", queued["id"].as_str().unwrap()));
        // Bounded: the jobs of these tests take milliseconds.
        for _ in 0..3000 {
            let job = self.get(&status).await;
            job.expect(200);
            let job = job.json();
            match job["state"].as_str() {
                Some("done") => return Ok(job["result"].clone()),
                Some("failed") => return Err(job["error"].as_str().unwrap_or("").to_owned()),
                _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        panic!("job {status} did not finish: {}", self.get("/_berth/jobs").await.json());
    }

    pub async fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        let mut b = Request::builder().method(method).uri(uri).header("host", "registry.test:5000");
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(Body::from(body.into())).unwrap();
        req.extensions_mut().insert(self.peer);
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            parts.headers.get("docker-distribution-api-version").map(|v| v.to_str().unwrap()),
            Some("registry/2.0"),
            "every response carries the API version"
        );
        Resp { status: parts.status, headers: parts.headers, body }
    }

    /// The same registry, sending `Authorization: <value>` with every request.
    pub fn authorized(&self, value: &str) -> TestApp {
        TestApp {
            dir: self.dir.clone(),
            router: self.router.clone(),
            headers: vec![("authorization".into(), value.into())],
            peer: self.peer,
        }
    }

    /// The same registry, asked from `peer`.
    pub fn asked_from(&self, peer: Peer) -> TestApp {
        TestApp { dir: self.dir.clone(), router: self.router.clone(), headers: self.headers.clone(), peer }
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.send(Method::GET, uri, &[], Bytes::new()).await
    }

    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::of_bytes(data);
        self.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], data.to_vec()).await.expect(201);
        d
    }

    pub async fn push_manifest(&self, repo: &str, reference: &str, ct: &str, body: &[u8]) -> Resp {
        self.send(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"), &[("content-type", ct)], body.to_vec())
            .await
    }

    /// Pushes a config and one layer and an OCI image manifest naming them.
    pub async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Digest, Vec<u8>) {
        let config = self.push_blob(repo, b"{\"architecture\":\"amd64\",\"os\":\"linux\"}").await;
        let l = self.push_blob(repo, layer).await;
        let m = image_manifest(&config, 37, &[(&l, layer.len())], None, None);
        self.push_manifest(repo, tag, media::OCI_MANIFEST, &m).await.expect(201);
        (Digest::of_bytes(&m), m)
    }
}

pub fn image_manifest(
    config: &Digest,
    config_size: usize,
    layers: &[(&Digest, usize)],
    subject: Option<(&Digest, usize)>,
    artifact_type: Option<&str>,
) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, s)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.as_str(), "size": s}))
        .collect();
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.as_str(), "size": config_size},
        "layers": layers,
    });
    if let Some((d, s)) = subject {
        m["subject"] = serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": d.as_str(), "size": s});
    }
    if let Some(t) = artifact_type {
        m["artifactType"] = serde_json::json!(t);
        m["annotations"] = serde_json::json!({"org.example.kind": t});
    }
    serde_json::to_vec_pretty(&m).unwrap()
}
