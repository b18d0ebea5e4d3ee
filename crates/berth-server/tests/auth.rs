//! Authentication and access control through the HTTP API, in process:
//! htpasswd with rules, the built-in token issuer, and tokens of an external
//! issuer verified with a certificate bundle or a JWK set.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use base64::Engine;
use berth_auth::{AccessConfig, Action, AuthConfig, Authorizer, HtpasswdConfig, IssuerConfig, RuleConfig, TokenConfig};
use berth_registry::RegistryConfig;
use berth_server::ServerConfig;
use bytes::Bytes;
use common::*;

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

fn rule(repos: &[&str], users: &[&str], anonymous: bool, actions: &[Action]) -> RuleConfig {
    RuleConfig {
        repositories: repos.iter().map(|s| s.to_string()).collect(),
        users: users.iter().map(|s| s.to_string()).collect(),
        groups: vec![],
        anonymous,
        authenticated: false,
        actions: actions.to_vec(),
    }
}

const ALL: &[Action] = &[Action::Pull, Action::Push, Action::Delete];

fn rules() -> AccessConfig {
    AccessConfig {
        groups: Default::default(),
        admins: vec![],
        rules: vec![
            rule(&["**"], &["alice"], false, ALL),
            rule(&["team/**"], &["reader"], false, &[Action::Pull]),
            rule(&["carol/**"], &["carol"], false, ALL),
            rule(&["public/**"], &[], true, &[Action::Pull]),
        ],
    }
}

fn htpasswd(dir: &Path) -> HtpasswdConfig {
    let path = dir.join("htpasswd");
    for (u, p) in [("alice", "alice-pw"), ("reader", "reader-pw"), ("carol", "carol-pw")] {
        berth_auth::htpasswd::set_password(&path, u, p).unwrap();
    }
    HtpasswdConfig { realm: "Berth".into(), path }
}

async fn app_with(auth: AuthConfig) -> TestApp {
    let mut a = Authorizer::new(auth, None).unwrap().unwrap();
    Arc::get_mut(&mut a).unwrap().failure_delay = Duration::from_millis(1);
    let sc = ServerConfig { auth: Some(a), ..ServerConfig::default() };
    TestApp::with(RegistryConfig { delete_enabled: true, read_only: false, ..Default::default() }, sc).await
}

#[tokio::test]
async fn htpasswd_users_are_held_to_their_rules() {
    let dir = tempfile::tempdir().unwrap();
    let app =
        app_with(AuthConfig { htpasswd: Some(htpasswd(dir.path())), access: rules(), ..Default::default() }).await;
    // An anonymous rule turns on the token flow, which Docker needs to pull anonymously.
    let r = app.get("/v2/").await;
    r.expect_error(401, "UNAUTHORIZED");
    assert_eq!(r.header("www-authenticate"), "Bearer realm=\"http://registry.test:5000/auth/token\",service=\"berth\"");
    app.authorized(&basic("alice", "wrong")).get("/v2/").await.expect_error(401, "UNAUTHORIZED");

    let alice = app.authorized(&basic("alice", "alice-pw"));
    let reader = app.authorized(&basic("reader", "reader-pw"));
    let carol = app.authorized(&basic("carol", "carol-pw"));
    alice.get("/v2/").await.expect(200);
    let (digest, _) = alice.push_image("team/app", "v1", b"layer").await;
    alice.push_image("public/base", "v1", b"layer").await;
    alice.push_image("secret/x", "v1", b"layer").await;

    // A read-only user pulls but may not push or delete.
    reader.get("/v2/team/app/manifests/v1").await.expect(200);
    let r = reader.send(Method::POST, "/v2/team/app/blobs/uploads/", &[], Bytes::new()).await;
    r.expect_error(403, "DENIED");
    // With a detail: Docker retries a DENIED error without one, for a minute.
    assert_eq!(r.json()["errors"][0]["detail"], "pull,push on team/app is not allowed");
    reader
        .send(Method::DELETE, &format!("/v2/team/app/manifests/{digest}"), &[], Bytes::new())
        .await
        .expect_error(403, "DENIED");
    reader.get("/v2/secret/x/manifests/v1").await.expect_error(403, "DENIED");
    // A user limited to one namespace.
    carol.send(Method::POST, "/v2/team/app/blobs/uploads/", &[], Bytes::new()).await.expect_error(403, "DENIED");
    carol.push_image("carol/app", "v1", b"layer").await;
    // Mounting from a repository the caller may not pull falls back to an upload.
    let layer = berth_types::Digest::of_bytes(b"layer");
    let r = carol
        .send(Method::POST, &format!("/v2/carol/app2/blobs/uploads/?mount={layer}&from=secret/x"), &[], Bytes::new())
        .await;
    r.expect(202);
    let r = carol
        .send(Method::POST, &format!("/v2/carol/app2/blobs/uploads/?mount={layer}&from=carol/app"), &[], Bytes::new())
        .await;
    r.expect(201);
    // Without `from`, a mount looks only where the caller may pull.
    let hidden = berth_types::Digest::of_bytes(b"only in secret/x");
    alice.push_blob("secret/x", b"only in secret/x").await;
    let r = carol.send(Method::POST, &format!("/v2/carol/app3/blobs/uploads/?mount={hidden}"), &[], Bytes::new()).await;
    r.expect(202);
    carol.get(&format!("/v2/carol/app3/blobs/{hidden}")).await.expect_error(404, "BLOB_UNKNOWN");
    let r = alice.send(Method::POST, &format!("/v2/team/app3/blobs/uploads/?mount={hidden}"), &[], Bytes::new()).await;
    r.expect(201);
    // Anonymous callers pull public repositories and nothing else, also
    // with the empty credentials skopeo and podman send.
    app.get("/v2/public/base/manifests/v1").await.expect(200);
    app.authorized("Basic Og==").get("/v2/public/base/manifests/v1").await.expect(200);
    let r = app.get("/v2/team/app/manifests/v1").await;
    r.expect_error(401, "UNAUTHORIZED");
    assert_eq!(
        r.header("www-authenticate"),
        "Bearer realm=\"http://registry.test:5000/auth/token\",service=\"berth\",scope=\"repository:team/app:pull\""
    );
    // The token endpoint gives anonymous callers a token for what they may pull.
    let t = app.get("/auth/token?service=berth&scope=repository:public/base:pull,push").await;
    t.expect(200);
    assert_eq!(t.json()["scope"], "repository:public/base:pull");
    let anon = app.authorized(&format!("Bearer {}", t.json()["token"].as_str().unwrap()));
    anon.get("/v2/").await.expect(200);
    anon.get("/v2/public/base/manifests/v1").await.expect(200);
    // A wrong password at the token endpoint: 401 with a challenge for the password.
    let bad = app.authorized(&basic("alice", "wrong")).get("/auth/token?service=berth").await;
    bad.expect_error(401, "UNAUTHORIZED");
    assert_eq!(bad.header("www-authenticate"), "Basic realm=\"Berth\"");
    // The catalog shows what each caller may pull.
    let names = |r: Resp| r.json()["repositories"].clone();
    // (carol/app2 holds a blob but no manifest, so it is not in the catalog.)
    assert_eq!(
        names(alice.get("/v2/_catalog").await),
        serde_json::json!(["carol/app", "public/base", "secret/x", "team/app"])
    );
    assert_eq!(names(reader.get("/v2/_catalog").await), serde_json::json!(["public/base", "team/app"]));
    assert_eq!(names(app.get("/v2/_catalog").await), serde_json::json!(["public/base"]));
    let page = alice.get("/v2/_catalog?n=2&last=carol%2Fapp2").await;
    assert_eq!(names(page), serde_json::json!(["public/base", "secret/x"]));
    let page = reader.get("/v2/_catalog?n=1").await;
    assert_eq!(page.header("link"), "</v2/_catalog?n=1&last=public%2Fbase>; rel=\"next\"");
}

fn issuer_config(dir: &Path) -> AuthConfig {
    AuthConfig {
        htpasswd: Some(htpasswd(dir)),
        issuer: Some(IssuerConfig {
            service: "registry.test".into(),
            issuer: "berth-test".into(),
            key: dir.join("issuer.pem"),
            expiration: Duration::from_secs(300),
            refreshexpiration: Duration::from_secs(3600),
            path: "/auth/token".into(),
            realm: None,
        }),
        access: rules(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_built_in_issuer_serves_the_docker_token_flow() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(issuer_config(dir.path())).await;
    let r = app.get("/v2/team/app/manifests/v1").await;
    r.expect_error(401, "UNAUTHORIZED");
    assert_eq!(
        r.header("www-authenticate"),
        "Bearer realm=\"http://registry.test:5000/auth/token\",service=\"registry.test\",scope=\"repository:team/app:pull\""
    );
    // The administration endpoints challenge with the same absolute realm.
    let r = app.get("/_berth/quotas").await;
    r.expect_error(401, "UNAUTHORIZED");
    assert_eq!(
        r.header("www-authenticate"),
        "Bearer realm=\"http://registry.test:5000/auth/token\",service=\"registry.test\""
    );
    let r = app.send(Method::DELETE, "/_berth/repositories/team/app", &[], Bytes::new()).await;
    r.expect_error(401, "UNAUTHORIZED");
    assert!(r.header("www-authenticate").starts_with("Bearer realm=\"http://registry.test:5000/auth/token\""));
    let token = |who: &TestApp, scope: &str| {
        let who = who.authorized(who.headers.first().map(|h| h.1.as_str()).unwrap_or(""));
        let scope = scope.to_owned();
        async move {
            let r = who.get(&format!("/auth/token?service=registry.test&scope={scope}")).await;
            r.expect(200);
            let v = r.json();
            assert_eq!(v["token"], v["access_token"]);
            assert!(v["expires_in"].as_u64().unwrap() > 0);
            format!("Bearer {}", v["token"].as_str().unwrap())
        }
    };
    let alice = app.authorized(&basic("alice", "alice-pw"));
    let t = token(&alice, "repository:team/app:pull,push").await;
    let with_token = app.authorized(&t);
    with_token.push_image("team/app", "v1", b"layer").await;
    with_token.get("/v2/team/app/manifests/v1").await.expect(200);
    // The token is for team/app only: elsewhere the client is sent back for another.
    let r = with_token.send(Method::POST, "/v2/other/blobs/uploads/", &[], Bytes::new()).await;
    r.expect_error(401, "UNAUTHORIZED");
    assert!(r
        .header("www-authenticate")
        .ends_with("scope=\"repository:other:pull,push\",error=\"insufficient_scope\""));

    // A read-only user's token carries pull only; the push is refused.
    let reader = app.authorized(&basic("reader", "reader-pw"));
    let t = token(&reader, "repository:team/app:pull,push").await;
    let with_token = app.authorized(&t);
    with_token.get("/v2/team/app/manifests/v1").await.expect(200);
    with_token
        .send(Method::POST, "/v2/team/app/blobs/uploads/", &[], Bytes::new())
        .await
        .expect_error(401, "UNAUTHORIZED");

    // Wrong credentials get no token; anonymous callers get what anonymous rules allow.
    app.authorized(&basic("alice", "nope"))
        .get("/auth/token?service=registry.test&scope=repository:team/app:pull")
        .await
        .expect(401);
    let anon = app.get("/auth/token?service=registry.test&scope=repository:team/app:pull").await;
    anon.expect(200);
    let t = format!("Bearer {}", anon.json()["token"].as_str().unwrap());
    app.authorized(&t).get("/v2/team/app/manifests/v1").await.expect_error(401, "UNAUTHORIZED");
    app.get("/auth/token?service=elsewhere&scope=repository:team/app:pull").await.expect(400);

    // OAuth2 password grant (containerd) with a refresh token.
    let form = "grant_type=password&username=alice&password=alice-pw&service=registry.test&scope=repository%3Ateam%2Fapp%3Apull&access_type=offline&client_id=test";
    let r = app.send(Method::POST, "/auth/token", &[("content-type", "application/x-www-form-urlencoded")], form).await;
    r.expect(200);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let form = format!(
        "grant_type=refresh_token&refresh_token={refresh}&service=registry.test&scope=repository%3Ateam%2Fapp%3Apull"
    );
    let r = app.send(Method::POST, "/auth/token", &[("content-type", "application/x-www-form-urlencoded")], form).await;
    r.expect(200);
    app.authorized(&format!("Bearer {}", r.json()["access_token"].as_str().unwrap()))
        .get("/v2/team/app/tags/list")
        .await
        .expect(200);
    let bad = "grant_type=password&username=alice&password=x&service=registry.test";
    app.send(Method::POST, "/auth/token", &[("content-type", "application/x-www-form-urlencoded")], bad)
        .await
        .expect(401);
    // Basic credentials are accepted directly too (clients that skip the token dance).
    alice.get("/v2/team/app/tags/list").await.expect(200);
    // A garbage token.
    app.authorized("Bearer abc.def.ghi").get("/v2/").await.expect_error(401, "UNAUTHORIZED");
}

/// A key and self-signed certificate made with openssl (`ec` or `rsa`).
fn openssl_key(dir: &Path, name: &str, kind: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let newkey = if kind == "ec" {
        vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    } else {
        vec!["-newkey", "rsa:2048"]
    };
    let st = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=token-signer"])
        .args(newkey)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    (key, cert)
}

fn spki_der(cert: &Path) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform DER", cert.display()))
        .output()
        .expect("openssl");
    assert!(out.status.success());
    out.stdout
}

fn cert_der(cert: &Path) -> Vec<u8> {
    let out = Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(cert).output().expect("openssl");
    out.stdout
}

#[derive(serde::Serialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    access: Vec<serde_json::Value>,
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims(iss: &str, aud: &str, exp_in: i64, access: serde_json::Value) -> Claims {
    Claims {
        iss: iss.into(),
        sub: "ci-bot".into(),
        aud: aud.into(),
        exp: (now() as i64 + exp_in) as u64,
        nbf: now() - 10,
        iat: now() - 10,
        access: access.as_array().unwrap().clone(),
    }
}

fn sign(header: jsonwebtoken::Header, c: &Claims, key_pem: &Path) -> String {
    let pem = std::fs::read(key_pem).unwrap();
    let key = match header.alg {
        jsonwebtoken::Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    format!("Bearer {}", jsonwebtoken::encode(&header, c, &key).unwrap())
}

#[tokio::test]
async fn tokens_of_an_external_issuer_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (ec_key, ec_cert) = openssl_key(dir.path(), "ec", "ec");
    let (rsa_key, rsa_cert) = openssl_key(dir.path(), "rsa", "rsa");
    let (rogue_key, _) = openssl_key(dir.path(), "rogue", "ec");
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, [std::fs::read(&ec_cert).unwrap(), std::fs::read(&rsa_cert).unwrap()].concat()).unwrap();
    let cfg = AuthConfig {
        token: Some(TokenConfig {
            realm: "https://auth.example.test/token".into(),
            service: "registry.test".into(),
            issuer: "corp-auth".into(),
            rootcertbundle: Some(bundle),
            jwks: None,
            autoredirect: false,
            signingalgorithms: None,
        }),
        ..Default::default()
    };
    let app = app_with(cfg).await;
    let r = app.get("/v2/");
    let r = r.await;
    r.expect_error(401, "UNAUTHORIZED");
    assert_eq!(
        r.header("www-authenticate"),
        "Bearer realm=\"https://auth.example.test/token\",service=\"registry.test\""
    );

    let push = serde_json::json!([{"type": "repository", "name": "ci/app", "actions": ["pull", "push"]}]);
    let ec_kid = berth_auth::token::libtrust_kid(&spki_der(&ec_cert));
    let rsa_kid = berth_auth::token::libtrust_kid(&spki_der(&rsa_cert));
    let header = |alg, kid: &str| {
        let mut h = jsonwebtoken::Header::new(alg);
        h.kid = Some(kid.to_owned());
        h
    };
    use jsonwebtoken::Algorithm::{ES256, RS256};
    // ES256 with a libtrust kid.
    let good = sign(header(ES256, &ec_kid), &claims("corp-auth", "registry.test", 300, push.clone()), &ec_key);
    app.authorized(&good).push_image("ci/app", "v1", b"layer").await;
    // RS256 from the second certificate of the bundle.
    let rsa = sign(header(RS256, &rsa_kid), &claims("corp-auth", "registry.test", 300, push.clone()), &rsa_key);
    app.authorized(&rsa).get("/v2/ci/app/manifests/v1").await.expect(200);
    // x5c naming the certificate, no kid.
    let mut h = jsonwebtoken::Header::new(ES256);
    h.x5c = Some(vec![base64::engine::general_purpose::STANDARD.encode(cert_der(&ec_cert))]);
    let x5c = sign(h, &claims("corp-auth", "registry.test", 300, push.clone()), &ec_key);
    app.authorized(&x5c).get("/v2/ci/app/tags/list").await.expect(200);

    // Refused: other repository, expired, wrong issuer, wrong audience, untrusted key, basic auth.
    let r = app.authorized(&good).get("/v2/other/tags/list").await;
    r.expect_error(401, "UNAUTHORIZED");
    assert!(r.header("www-authenticate").contains("error=\"insufficient_scope\""));
    for bad in [
        sign(header(ES256, &ec_kid), &claims("corp-auth", "registry.test", -600, push.clone()), &ec_key),
        sign(header(ES256, &ec_kid), &claims("someone-else", "registry.test", 300, push.clone()), &ec_key),
        sign(header(ES256, &ec_kid), &claims("corp-auth", "another-registry", 300, push.clone()), &ec_key),
        sign(header(ES256, &ec_kid), &claims("corp-auth", "registry.test", 300, push.clone()), &rogue_key),
        sign(jsonwebtoken::Header::new(ES256), &claims("corp-auth", "registry.test", 300, push.clone()), &rogue_key),
    ] {
        app.authorized(&bad).get("/v2/ci/app/tags/list").await.expect_error(401, "UNAUTHORIZED");
    }
    app.authorized(&basic("ci-bot", "x")).get("/v2/ci/app/tags/list").await.expect_error(401, "UNAUTHORIZED");
    // The catalog needs registry:catalog:* in the token.
    app.authorized(&good).get("/v2/_catalog").await.expect_error(401, "UNAUTHORIZED");
    let cat = serde_json::json!([{"type": "registry", "name": "catalog", "actions": ["*"]}]);
    let t = sign(header(ES256, &ec_kid), &claims("corp-auth", "registry.test", 300, cat), &ec_key);
    app.authorized(&t).get("/v2/_catalog").await.expect(200);
}

#[tokio::test]
async fn a_jwk_set_can_hold_the_trusted_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = openssl_key(dir.path(), "jwk", "ec");
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(&key).unwrap()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, jsonwebtoken::Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("key-1".into());
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(&serde_json::json!({"keys": [jwk]})).unwrap()).unwrap();
    let cfg = AuthConfig {
        token: Some(TokenConfig {
            realm: "https://auth.example.test/token".into(),
            service: "registry.test".into(),
            issuer: "corp-auth".into(),
            rootcertbundle: None,
            jwks: Some(jwks),
            autoredirect: false,
            signingalgorithms: Some(vec!["ES256".into()]),
        }),
        ..Default::default()
    };
    let app = app_with(cfg).await;
    let pull = serde_json::json!([{"type": "repository", "name": "x", "actions": ["pull", "push"]}]);
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("key-1".into());
    let t = sign(h.clone(), &claims("corp-auth", "registry.test", 300, pull.clone()), &key);
    app.authorized(&t).push_image("x", "v1", b"l").await;
    h.kid = Some("key-2".into());
    let t = sign(h, &claims("corp-auth", "registry.test", 300, pull), &key);
    app.authorized(&t).get("/v2/x/tags/list").await.expect_error(401, "UNAUTHORIZED");
}

/// A stand-in for a company identity service: `/validate?login=&token=`
/// answers `{"login": ..., "status": "VALID"}` for tokens `good-<login>`,
/// sleeps for `slow`, names another user for `other`; `/authorize?user=&path=&action=`
/// allows pulls anywhere and pushes under `home/<user>/`. Counts the calls.
struct IdentityService {
    addr: String,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for IdentityService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn identity_service() -> IdentityService {
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let q: std::collections::HashMap<String, String> = req
                            .uri()
                            .query()
                            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                            .unwrap_or_default();
                        let get = |k: &str| q.get(k).cloned().unwrap_or_default();
                        let (status, body) = match req.uri().path() {
                            "/validate" => {
                                let (login, token) = (get("login"), get("token"));
                                if token == "slow" {
                                    tokio::time::sleep(Duration::from_secs(3)).await;
                                }
                                if token == format!("good-{login}") {
                                    (200, serde_json::json!({"login": login, "status": "VALID"}))
                                } else if token == "other" {
                                    (200, serde_json::json!({"login": "someone-else", "status": "VALID"}))
                                } else {
                                    (200, serde_json::json!({"status": "INVALID"}))
                                }
                            }
                            "/authorize" => {
                                let ok = get("action") == "pull"
                                    || get("path").starts_with(&format!("home/{}/", get("user")));
                                (if ok { 200 } else { 403 }, serde_json::json!({}))
                            }
                            _ => (404, serde_json::json!({})),
                        };
                        let mut r = hyper::Response::new(http_body_util::Full::new(Bytes::from(body.to_string())));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    IdentityService { addr, calls, task }
}

fn external_config(validate_url: &str, authorize_url: Option<&str>) -> AuthConfig {
    let call = |url: &str, user_field: bool| berth_auth::ExternalCall {
        url: url.to_owned(),
        method: "GET".into(),
        headers: Default::default(),
        body: None,
        userfield: user_field.then(|| "/login".to_owned()),
        validfield: user_field.then(|| "/status".to_owned()),
        validvalue: user_field.then(|| serde_json::json!("VALID")),
        timeout: Duration::from_millis(500),
        cachettl: Duration::from_secs(60),
    };
    AuthConfig {
        external: Some(berth_auth::ExternalConfig {
            realm: "Corp".into(),
            validate: call(validate_url, true),
            authorize: authorize_url.map(|u| call(u, false)),
            lookup: None,
        }),
        // Every authenticated user may do everything the authorization service allows.
        access: AccessConfig {
            groups: Default::default(),
            admins: vec![],
            rules: vec![RuleConfig { authenticated: true, ..rule(&["**"], &[], false, ALL) }],
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn an_external_identity_service_validates_passwords_and_authorizes() {
    use std::sync::atomic::Ordering;
    let id = identity_service().await;
    let validate = format!("http://{}/validate?login={{user}}&token={{password}}", id.addr);
    let authorize = format!("http://{}/authorize?user={{user}}&path={{repository}}&action={{action}}", id.addr);
    let app = app_with(external_config(&validate, Some(&authorize))).await;

    let nirvana = app.authorized(&basic("nirvana", "good-nirvana"));
    nirvana.get("/v2/").await.expect(200);
    let before = id.calls.load(Ordering::SeqCst);
    nirvana.get("/v2/").await.expect(200);
    assert_eq!(id.calls.load(Ordering::SeqCst), before, "a validated login is remembered");
    // Write permission is checked on the path derived from the image name.
    nirvana.push_image("home/nirvana/images/ubuntu", "22.04", b"layer").await;
    nirvana
        .send(Method::POST, "/v2/home/other/images/x/blobs/uploads/", &[], Bytes::new())
        .await
        .expect_error(403, "DENIED");
    nirvana.get("/v2/home/nirvana/images/ubuntu/manifests/22.04").await.expect(200);

    // Invalid token, a token of another user, and a slow service all fail closed.
    for (user, token) in [("nirvana", "bad"), ("nirvana", "other"), ("nirvana", "slow")] {
        let t = std::time::Instant::now();
        let r = app.authorized(&basic(user, token)).get("/v2/").await;
        r.expect_error(401, "UNAUTHORIZED");
        assert_eq!(r.header("www-authenticate"), "Basic realm=\"Corp\"");
        assert!(t.elapsed() < Duration::from_secs(3), "the timeout bounds the wait");
    }

    // The service down: nothing gets in.
    let down = format!("http://127.0.0.1:{}/validate?login={{user}}&token={{password}}", free_port());
    let app = app_with(external_config(&down, None)).await;
    app.authorized(&basic("nirvana", "good-nirvana")).get("/v2/").await.expect_error(401, "UNAUTHORIZED");
    // And an authorization service that is down denies.
    let down_authz = format!("http://127.0.0.1:{}/authorize?user={{user}}", free_port());
    let app = app_with(external_config(&validate, Some(&down_authz))).await;
    let r = app.authorized(&basic("nirvana", "good-nirvana")).get("/v2/home/nirvana/images/ubuntu/tags/list").await;
    r.expect_error(403, "DENIED");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
