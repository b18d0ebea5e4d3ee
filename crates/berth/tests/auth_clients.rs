//! Authentication with real clients: docker login then push and pull (htpasswd,
//! the built-in token issuer, and an external token issuer verified by a
//! certificate bundle), skopeo and podman with credentials, oras with basic
//! auth, a read-only user whose push is refused, a user limited to one
//! namespace.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;

/// Users: alice (everything), reader (pull only), carol (only carol/**).
fn users(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("htpasswd");
    for (u, p) in [("alice", "alice-pw"), ("reader", "reader-pw"), ("carol", "carol-pw")] {
        run_with_input(
            Command::new(berth_bin()).args(["htpasswd", "add", u, "--password-stdin", "--file"]).arg(&path),
            &format!("{p}\n"),
        );
    }
    path
}

/// Access rules: alice may do everything, reader may pull, and `extra`.
fn rules(extra: &str) -> String {
    format!(
        "  access:\n    rules:\n      - repositories: [\"**\"]\n        users: [alice]\n        actions: [pull, push, delete]\n      \
         - repositories: [\"**\"]\n        users: [reader]\n        actions: [pull]\n{extra}"
    )
}

/// carol owns carol/**.
fn carol_rules() -> String {
    rules("      - repositories: [\"carol/**\"]\n        users: [carol]\n        actions: [pull, push, delete]\n")
}

fn htpasswd_registry(dir: &Path) -> Berth {
    let extra = format!("auth:\n  htpasswd:\n    realm: Berth\n    path: {}\n{}", users(dir).display(), carol_rules());
    Berth::start(&write_config(dir, &dir.join("store"), &extra))
}

fn issuer_registry(dir: &Path) -> Berth {
    let extra = format!(
        "auth:\n  htpasswd:\n    realm: Berth\n    path: {}\n  issuer:\n    service: berth-test\n    key: {}\n{}",
        users(dir).display(),
        dir.join("issuer.pem").display(),
        carol_rules()
    );
    Berth::start(&write_config(dir, &dir.join("store"), &extra))
}

fn docker_login(d: &Dockerd, addr: &str, user: &str, pw: &str) {
    let out = run_with_input(d.cmd().args(["login", "-u", user, "--password-stdin", addr]), pw);
    assert!(out.contains("Login Succeeded"), "{out}");
}

fn push_pull_with_docker(d: &Dockerd, addr: &str, repo: &str) {
    let img = test_image();
    let target = format!("{addr}/{repo}:v1");
    run(d.cmd().args(["load", "-q", "-i"]).arg(&img.docker_archive));
    run(d.cmd().args(["tag", &img.image_name, &target]));
    run(d.cmd().args(["push", &target]));
    run(d.cmd().args(["rmi", "-f", &target]));
    run(d.cmd().args(["pull", "-q", &target]));
    let id = run(d.cmd().args(["image", "inspect", "-f", "{{.Id}}", &target]));
    assert_eq!(id.trim(), img.config_digest);
}

#[test]
fn docker_with_htpasswd_users_and_rules() {
    if !require("dockerd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let b = htpasswd_registry(dir.path());
    let d = Dockerd::start();
    // Without login the engine is turned away.
    let img = test_image();
    run(d.cmd().args(["load", "-q", "-i"]).arg(&img.docker_archive));
    run(d.cmd().args(["tag", &img.image_name, &format!("{}/team/app:v1", b.addr)]));
    let out = output(d.cmd().args(["push", &format!("{}/team/app:v1", b.addr)]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no basic auth credentials"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = output_with_input(d.cmd().args(["login", "-u", "alice", "--password-stdin", &b.addr]), "wrong");
    assert!(!bad.status.success());

    docker_login(&d, &b.addr, "alice", "alice-pw");
    push_pull_with_docker(&d, &b.addr, "team/app");

    // A read-only user pulls, and its push is refused.
    docker_login(&d, &b.addr, "reader", "reader-pw");
    run(d.cmd().args(["pull", "-q", &format!("{}/team/app:v1", b.addr)]));
    run(d.cmd().args(["tag", &img.image_name, &format!("{}/team/other:v1", b.addr)]));
    let out = output(d.cmd().args(["push", &format!("{}/team/other:v1", b.addr)]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("denied"), "{}", String::from_utf8_lossy(&out.stderr));

    // A user limited to its namespace pushes there and nowhere else.
    docker_login(&d, &b.addr, "carol", "carol-pw");
    run(d.cmd().args(["tag", &img.image_name, &format!("{}/carol/app:v1", b.addr)]));
    run(d.cmd().args(["push", &format!("{}/carol/app:v1", b.addr)]));
    let out = output(d.cmd().args(["push", &format!("{}/team/other:v1", b.addr)]));
    assert!(!out.status.success());
}

#[test]
fn docker_with_the_built_in_token_issuer() {
    if !require("dockerd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let b = issuer_registry(dir.path());
    let d = Dockerd::start();
    docker_login(&d, &b.addr, "alice", "alice-pw");
    push_pull_with_docker(&d, &b.addr, "team/tokened");
    docker_login(&d, &b.addr, "reader", "reader-pw");
    run(d.cmd().args(["pull", "-q", &format!("{}/team/tokened:v1", b.addr)]));
    let img = test_image();
    run(d.cmd().args(["tag", &img.image_name, &format!("{}/team/nope:v1", b.addr)]));
    let out = output(d.cmd().args(["push", &format!("{}/team/nope:v1", b.addr)]));
    assert!(!out.status.success(), "a read-only user's push goes through");
}

#[test]
fn skopeo_and_podman_log_in() {
    if !require("skopeo") || !require("podman") {
        return;
    }
    let img = test_image();
    for issuer in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = if issuer { issuer_registry(dir.path()) } else { htpasswd_registry(dir.path()) };
        let authfile = dir.path().join("auth.json");
        let out = run_with_input(
            Command::new("skopeo")
                .args(["login", "--tls-verify=false", "-u", "alice", "--password-stdin", "--authfile"])
                .arg(&authfile)
                .arg(&b.addr),
            "alice-pw",
        );
        assert!(out.contains("Login Succeeded"), "{out}");
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false", "--authfile"])
            .arg(&authfile)
            .arg(&img.oci_ref)
            .arg(format!("docker://{}/team/skopeo:v1", b.addr)));
        // Credentials given directly, as a read-only user: pull works, push does not.
        let back = dir.path().join("back");
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--src-creds",
            "reader:reader-pw",
            &format!("docker://{}/team/skopeo:v1", b.addr),
            &format!("oci:{}:v1", back.display()),
        ]));
        assert_eq!(layout_blobs(&back), layout_blobs(&oci_layout_path(&img.oci_ref)));
        let out = output(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            "reader:reader-pw",
            &img.oci_ref,
            &format!("docker://{}/team/refused:v1", b.addr),
        ]));
        assert!(!out.status.success(), "reader pushed (issuer={issuer})");

        // podman: login, push, pull.
        let work = dir.path().join("podman");
        let podman = |args: &[&str]| {
            let mut c = common::podman(&work);
            c.args(args).env("REGISTRY_AUTH_FILE", dir.path().join("podman-auth.json"));
            c
        };
        run_with_input(
            &mut podman(&["login", "--tls-verify=false", "-u", "carol", "--password-stdin", &b.addr]),
            "carol-pw",
        );
        run(podman(&["load", "-q", "-i"]).arg(&img.docker_archive));
        let target = format!("{}/carol/podman:v1", b.addr);
        run(&mut podman(&["push", "-q", "--tls-verify=false", &img.image_name, &target]));
        run(&mut podman(&["rmi", "-a", "-f"]));
        run(&mut podman(&["pull", "-q", "--tls-verify=false", &target]));
        let out =
            output(&mut podman(&["push", "-q", "--tls-verify=false", &target, &format!("{}/team/podman:v1", b.addr)]));
        assert!(!out.status.success(), "carol pushed outside her namespace (issuer={issuer})");
        let _ = Command::new("sh").arg("-c").arg(format!("rm -rf {}", work.display())).status();
    }
}

#[test]
fn oras_with_basic_auth() {
    let py = venv_python();
    if !py.exists() {
        if std::env::var("BERTH_E2E_ALLOW_MISSING").as_deref() == Ok("1") {
            return;
        }
        panic!("{} missing: run scripts/install-test-deps.sh", py.display());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let b = htpasswd_registry(dir.path());
    let file = dir.path().join("artifact.bin");
    std::fs::write(&file, b"an artifact behind a login").expect("write");
    let script = repo_root().join("scripts/oras-roundtrip.py");
    let out = run(Command::new(&py)
        .arg(&script)
        .arg(&b.addr)
        .arg("carol/artifact:v1")
        .arg(&file)
        .args(["--user", "carol", "--password", "carol-pw"])
        .env("BERTH_ORAS_RETRY_SLEEP", "0.1"));
    assert!(out.contains("OK:"), "{out}");
    let out = output(
        Command::new(&py)
            .arg(&script)
            .arg(&b.addr)
            .arg("team/artifact:v1")
            .arg(&file)
            .args(["--user", "carol", "--password", "carol-pw"])
            .env("BERTH_ORAS_RETRY_SLEEP", "0.1"),
    );
    assert!(!out.status.success(), "carol pushed outside her namespace");
}

/// A token server of "another company" for `auth.token`: GET /token with
/// basic auth (password `pw` for anyone) grants the requested scopes in an
/// ES256 token signed by a key whose certificate the registry trusts.
struct TokenServer {
    addr: String,
    _rt: tokio::runtime::Runtime,
}

fn token_server(key_pem: Vec<u8>, kid: String) -> TokenServer {
    use base64::Engine;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let key = Arc::new(jsonwebtoken::EncodingKey::from_ec_pem(&key_pem).expect("key"));
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (key, kid) = (key.clone(), kid.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (key, kid) = (key.clone(), kid.clone());
                    async move {
                        let creds = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Basic "))
                            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                            .and_then(|v| String::from_utf8(v).ok());
                        let user = match creds.as_deref().and_then(|c| c.split_once(':')) {
                            Some((u, "pw")) => u.to_owned(),
                            _ => {
                                let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from("{}")));
                                *r.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                                return Ok::<_, std::convert::Infallible>(r);
                            }
                        };
                        let q = req.uri().query().unwrap_or("").to_owned();
                        let access: Vec<serde_json::Value> = q
                            .split('&')
                            .filter_map(|kv| kv.strip_prefix("scope="))
                            .map(|s| s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ",").replace('+', " "))
                            .flat_map(|s| s.split(' ').map(str::to_owned).collect::<Vec<_>>())
                            .filter_map(|s| {
                                let mut p = s.splitn(3, ':');
                                let (t, n, a) = (p.next()?, p.next()?, p.next()?);
                                Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
                            })
                            .collect();
                        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                        let claims = serde_json::json!({
                            "iss": "corp-auth", "sub": user, "aud": "berth-test",
                            "exp": now + 300, "nbf": now - 5, "iat": now - 5, "access": access
                        });
                        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                        h.kid = Some(kid);
                        let token = jsonwebtoken::encode(&h, &claims, &key).unwrap_or_default();
                        let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
                        Ok(hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    TokenServer { addr, _rt: rt }
}

#[test]
fn docker_with_an_external_token_issuer() {
    if !require("dockerd") || !require("openssl") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, cert) = (dir.path().join("signer.key"), dir.path().join("signer.crt"));
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=corp-auth",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let spki = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform DER", cert.display()))
        .output()
        .expect("openssl")
        .stdout;
    let kid = berth_auth::token::libtrust_kid(&spki);
    let ts = token_server(std::fs::read(&key).expect("key"), kid);
    let extra = format!(
        "auth:\n  token:\n    realm: http://{}/token\n    service: berth-test\n    issuer: corp-auth\n    rootcertbundle: {}\n",
        ts.addr,
        cert.display()
    );
    let b = Berth::start(&write_config(dir.path(), &dir.path().join("store"), &extra));
    let d = Dockerd::start();
    docker_login(&d, &b.addr, "ci-bot", "pw");
    push_pull_with_docker(&d, &b.addr, "corp/app");
    let bad = output_with_input(d.cmd().args(["login", "-u", "ci-bot", "--password-stdin", &b.addr]), "nope");
    assert!(!bad.status.success());
}

/// An identity service for `auth.external` (seed 000): `/check?login=&token=`
/// answers `{"login": ..., "status": "VALID"}` for `token-<login>`, and
/// `/may?user=&path=&action=` allows pulls, and pushes under `home/<user>/`.
fn identity_service() -> TokenServer {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let q: std::collections::HashMap<String, String> = req
                        .uri()
                        .query()
                        .unwrap_or("")
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.replace("%2F", "/")))
                        .collect();
                    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
                    let (status, body) = match req.uri().path() {
                        "/check" if get("token") == format!("token-{}", get("login")) => {
                            (200, serde_json::json!({"login": get("login"), "status": "VALID"}))
                        }
                        "/check" => (200, serde_json::json!({"status": "INVALID"})),
                        "/may"
                            if get("action") == "pull"
                                || get("path").starts_with(&format!("home/{}/", get("user"))) =>
                        {
                            (200, serde_json::json!({}))
                        }
                        _ => (403, serde_json::json!({})),
                    };
                    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body.to_string())));
                    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    TokenServer { addr, _rt: rt }
}

#[test]
fn docker_login_with_a_token_checked_by_an_identity_service() {
    if !require("dockerd") {
        return;
    }
    let id = identity_service();
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "auth:
  external:
    realm: Corp
    validate:
      url: http://{a}/check?login={{user}}&token={{password}}
      userfield: /login
      validfield: /status
      validvalue: VALID
      timeout: 2s
    authorize:
      url: http://{a}/may?user={{user}}&path={{repository}}&action={{action}}
      timeout: 2s
  access:
    rules:
      - repositories: [\"**\"]
        authenticated: true
        actions: [pull, push]
",
        a = id.addr
    );
    let b = Berth::start(&write_config(dir.path(), &dir.path().join("store"), &extra));
    let d = Dockerd::start();
    let bad = output_with_input(d.cmd().args(["login", "-u", "nirvana", "--password-stdin", &b.addr]), "token-someone");
    assert!(!bad.status.success());
    docker_login(&d, &b.addr, "nirvana", "token-nirvana");
    push_pull_with_docker(&d, &b.addr, "home/nirvana/images/ubuntu");
    let img = test_image();
    let other = format!("{}/home/other/images/ubuntu:v1", b.addr);
    run(d.cmd().args(["tag", &img.image_name, &other]));
    let out = output(d.cmd().args(["push", &other]));
    assert!(!out.status.success(), "a push outside the user's home was allowed");
}

/// htpasswd and an anonymous rule, and no `auth.issuer`: Berth runs its
/// token issuer by itself, since Docker and containerd pull anonymously only
/// through the Bearer flow; skopeo and podman without credentials send empty
/// basic ones, which are anonymous.
#[test]
fn anonymous_pulls_and_logged_in_pushes_with_docker_podman_skopeo_and_ctr() {
    if !require("dockerd") || !require("skopeo") || !require("podman") || !require("ctr") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // docs/auth.md's rules: a publisher, a reader, and anonymous pulls of public/**.
    let public = rules("      - repositories: [\"public/**\"]\n        anonymous: true\n        actions: [pull]\n");
    let extra = format!("auth:\n  htpasswd:\n    realm: Berth\n    path: {}\n{public}", users(dir.path()).display());
    let b = Berth::start(&write_config(dir.path(), &dir.path().join("store"), &extra));
    let img = test_image();
    let public = format!("{}/public/hello:1.0", b.addr);
    let private = format!("{}/private/app:1.0", b.addr);
    for target in [&public, &private] {
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:alice-pw",
            &img.oci_ref,
            &format!("docker://{target}"),
        ]));
    }
    let none = dir.path().join("no-credentials.json");
    std::fs::write(&none, "{}").unwrap();

    // skopeo, anonymous: the public image, not the private one.
    let inspect = |image: &str| {
        output(
            Command::new("skopeo")
                .args(["inspect", "--raw", "--tls-verify=false", "--authfile"])
                .arg(&none)
                .arg(format!("docker://{image}")),
        )
    };
    assert!(inspect(&public).status.success(), "{}", String::from_utf8_lossy(&inspect(&public).stderr));
    assert!(!inspect(&private).status.success());

    // podman, anonymous, then logged in as the publisher.
    std::fs::write(dir.path().join("podman-auth.json"), "{}").unwrap();
    let work = dir.path().join("podman");
    let podman = |args: &[&str]| {
        let mut c = common::podman(&work);
        c.args(args).env("REGISTRY_AUTH_FILE", dir.path().join("podman-auth.json"));
        c
    };
    run(&mut podman(&["pull", "-q", "--tls-verify=false", &public]));
    assert!(!output(&mut podman(&["pull", "-q", "--tls-verify=false", &private])).status.success());
    run_with_input(
        &mut podman(&["login", "--tls-verify=false", "-u", "alice", "--password-stdin", &b.addr]),
        "alice-pw",
    );
    run(&mut podman(&["push", "-q", "--tls-verify=false", &public, &format!("{}/public/from-podman:1", b.addr)]));
    run(&mut podman(&["pull", "-q", "--tls-verify=false", &private]));
    let _ = Command::new("sh").arg("-c").arg(format!("rm -rf {}", work.display())).status();

    // docker, never logged in: pulls the public image, is refused the private one.
    let d = Dockerd::start();
    run(d.cmd().args(["pull", "-q", &public]));
    let id = run(d.cmd().args(["image", "inspect", "-f", "{{.Id}}", &public]));
    assert_eq!(id.trim(), img.config_digest);
    let out = output(d.cmd().args(["pull", "-q", &private]));
    assert!(!out.status.success(), "an anonymous docker pulled a private image");
    // Logged in, it pushes, and a read-only user pulls the private image.
    docker_login(&d, &b.addr, "alice", "alice-pw");
    let pushed = format!("{}/public/from-docker:1", b.addr);
    run(d.cmd().args(["tag", &public, &pushed]));
    run(d.cmd().args(["push", &pushed]));
    docker_login(&d, &b.addr, "reader", "reader-pw");
    run(d.cmd().args(["pull", "-q", &private]));
    let out = output(d.cmd().args(["push", &pushed]));
    assert!(!out.status.success(), "a read-only user pushed");

    // containerd's ctr, on the engine's containerd: anonymous pull, then a push with credentials.
    let ctr = |args: &[&str]| {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(d.containerd_socket()).args(["-n", "berth-test"]).args(args);
        c
    };
    run(&mut ctr(&["images", "pull", "--plain-http", &public]));
    assert!(!output(&mut ctr(&["images", "pull", "--plain-http", &private])).status.success());
    let from_ctr = format!("{}/public/from-ctr:1", b.addr);
    run(&mut ctr(&["images", "tag", &public, &from_ctr]));
    assert!(!output(&mut ctr(&["images", "push", "--plain-http", &from_ctr])).status.success(), "anonymous push");
    run(&mut ctr(&["images", "push", "--plain-http", "--user", "alice:alice-pw", &from_ctr]));
    run(&mut ctr(&["images", "pull", "--plain-http", "--user", "reader:reader-pw", &private]));

    // Everything pushed is there, byte for byte the same image.
    for repo in ["public/from-podman:1", "public/from-docker:1", "public/from-ctr:1"] {
        let m = skopeo_raw_manifest(&format!("{}/{repo}", b.addr));
        assert_eq!(m["config"]["digest"], img.config_digest, "{repo}");
    }
}
