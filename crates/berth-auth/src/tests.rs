use std::time::Duration;

use base64::Engine;

use super::*;

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

fn repo(name: &str, actions: &[Action]) -> Need {
    Need::Repository { name: RepoName::parse(name).unwrap(), actions: Actions::of(actions) }
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

struct Env {
    dir: tempfile::TempDir,
    authz: Arc<Authorizer>,
}

fn env(issuer: bool, rules: Vec<RuleConfig>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    htpasswd::set_password(&path, "alice", "alice-pw").unwrap();
    htpasswd::set_password(&path, "reader", "reader-pw").unwrap();
    let cfg = AuthConfig {
        htpasswd: Some(HtpasswdConfig { realm: "Berth".into(), path }),
        issuer: issuer.then(|| IssuerConfig {
            service: "registry.test".into(),
            issuer: "berth-test".into(),
            key: dir.path().join("keys/issuer.pem"),
            expiration: Duration::from_secs(300),
            refreshexpiration: Duration::from_secs(3600),
            path: "/auth/token".into(),
            realm: None,
        }),
        access: AccessConfig { groups: Default::default(), rules, admins: vec!["alice".into()] },
        ..Default::default()
    };
    let mut authz = Authorizer::new(cfg, None).unwrap().unwrap();
    Arc::get_mut(&mut authz).unwrap().failure_delay = Duration::from_millis(1);
    Env { dir, authz }
}

fn creds(auth: Option<&str>) -> Credentials<'_> {
    Credentials { authorization: auth, base_url: "http://registry.test:5000" }
}

fn default_rules() -> Vec<RuleConfig> {
    vec![
        rule(&["**"], &["alice"], false, &[Action::Pull, Action::Push, Action::Delete]),
        rule(&["**"], &["reader"], false, &[Action::Pull]),
        rule(&["public/**"], &[], true, &[Action::Pull]),
    ]
}

#[tokio::test]
async fn basic_auth_checks_passwords_and_rules() {
    // Without an anonymous rule, distribution's htpasswd behaviour: Basic challenges.
    let e = env(false, default_rules()[..2].to_vec());
    let a = basic("alice", "alice-pw");
    let r = basic("reader", "reader-pw");
    let push = repo("team/app", &[Action::Pull, Action::Push]);
    assert!(e.authz.issuer().is_none());
    assert!(e.authz.authorize(&creds(Some(&a)), &push).await.is_ok());
    // A read-only user is refused the push with 403.
    assert_eq!(e.authz.authorize(&creds(Some(&r)), &push).await.err(), Some(Refusal::Denied));
    assert!(e.authz.authorize(&creds(Some(&r)), &repo("team/app", &[Action::Pull])).await.is_ok());
    // Wrong password, and no credentials: 401 with the basic challenge.
    match e.authz.authorize(&creds(Some(&basic("alice", "nope"))), &push).await {
        Err(Refusal::Unauthorized { challenge, .. }) => assert_eq!(challenge, "Basic realm=\"Berth\""),
        other => panic!("{other:?}", other = other.map(|g| g.identity)),
    }
    assert!(matches!(e.authz.authorize(&creds(None), &push).await, Err(Refusal::Unauthorized { .. })));
    assert!(e.authz.authorize(&creds(Some(&r)), &Need::Login).await.is_ok());
    assert!(matches!(
        e.authz.authorize(&creds(Some("Basic !!!")), &Need::Login).await,
        Err(Refusal::Unauthorized { .. })
    ));
}

#[tokio::test]
async fn an_anonymous_rule_turns_on_the_token_flow_and_empty_credentials_are_anonymous() {
    let e = env(false, default_rules());
    assert!(e.authz.implicit_issuer(), "an anonymous rule with htpasswd runs the issuer");
    assert_eq!(e.authz.token_path(), Some("/auth/token"));
    let push = repo("team/app", &[Action::Pull, Action::Push]);
    // No credentials: a Bearer challenge (Docker pulls anonymously only through it).
    match e.authz.authorize(&creds(None), &Need::Login).await {
        Err(Refusal::Unauthorized { challenge, .. }) => {
            assert_eq!(challenge, "Bearer realm=\"http://registry.test:5000/auth/token\",service=\"berth\"")
        }
        other => panic!("{:?}", other.map(|g| g.identity)),
    }
    // skopeo and podman without stored credentials send empty ones: anonymous, no failed login.
    let empty = basic("", "");
    assert_eq!(empty, "Basic Og==");
    let started = std::time::Instant::now();
    let g = e.authz.authorize(&creds(Some(&empty)), &repo("public/x", &[Action::Pull])).await.unwrap();
    assert_eq!(g.identity, Identity::anonymous());
    assert!(e.authz.authorize(&creds(Some(&empty)), &repo("team/x", &[Action::Pull])).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(400), "no failed-login delay");
    // Passwords still work, as before, beside the tokens; a missing right is a 403 for them.
    assert!(e.authz.authorize(&creds(Some(&basic("alice", "alice-pw"))), &push).await.is_ok());
    assert_eq!(
        e.authz.authorize(&creds(Some(&basic("reader", "reader-pw"))), &push).await.err(),
        Some(Refusal::Denied)
    );
    // An anonymous token logs in at /v2/ and pulls what anonymous callers may.
    let issuer = e.authz.issuer().unwrap();
    let req = issuer::TokenRequest {
        basic: Some(("".into(), "".into())),
        scopes: Scope::parse_list("repository:public/x:pull"),
        ..Default::default()
    };
    let t = issuer.issue(&e.authz, &req).await.unwrap();
    let bearer = format!("Bearer {}", t.token);
    assert!(e.authz.authorize(&creds(Some(&bearer)), &Need::Login).await.is_ok());
    assert!(e.authz.authorize(&creds(Some(&bearer)), &repo("public/x", &[Action::Pull])).await.is_ok());
    assert!(t.refresh_token.is_none(), "no refresh token for anonymous callers");
}

#[tokio::test]
async fn removing_a_user_revokes_its_refresh_and_access_tokens() {
    let e = env(true, default_rules());
    let issuer = e.authz.issuer().unwrap();
    let login = issuer::TokenRequest {
        grant_type: Some("password".into()),
        username: Some("reader".into()),
        password: Some("reader-pw".into()),
        scopes: Scope::parse_list("repository:team/app:pull"),
        offline: true,
        ..Default::default()
    };
    let t = issuer.issue(&e.authz, &login).await.unwrap();
    let refresh = t.refresh_token.clone().expect("a refresh token");
    let by_refresh = issuer::TokenRequest {
        grant_type: Some("refresh_token".into()),
        refresh_token: Some(refresh.clone()),
        scopes: Scope::parse_list("repository:team/app:pull"),
        ..Default::default()
    };
    let t2 = issuer.issue(&e.authz, &by_refresh).await.unwrap();
    let bearer = format!("Bearer {}", t2.token);
    let pull = repo("team/app", &[Action::Pull]);
    assert!(e.authz.authorize(&creds(Some(&bearer)), &pull).await.is_ok());

    // The user goes from the file: its refresh token and the access token minted from it stop working.
    let path = e.dir.path().join("htpasswd");
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("reader:")).collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(issuer.issue(&e.authz, &by_refresh).await.err(), Some(issuer::TokenError::Unauthorized));
    assert!(matches!(e.authz.authorize(&creds(Some(&bearer)), &pull).await, Err(Refusal::Unauthorized { .. })));
    // The rules apply to what is left.
    assert!(e.authz.authorize(&creds(Some(&basic("alice", "alice-pw"))), &pull).await.is_ok());
}

#[tokio::test]
async fn issued_tokens_grant_only_what_rules_allow() {
    let e = env(true, default_rules());
    let issuer = e.authz.issuer().unwrap();
    let push_scope = Scope::parse("repository:team/app:pull,push").unwrap();
    let req = issuer::TokenRequest {
        basic: Some(("reader".into(), "reader-pw".into())),
        scopes: vec![push_scope.clone()],
        service: Some("registry.test".into()),
        ..Default::default()
    };
    let t = issuer.issue(&e.authz, &req).await.unwrap();
    assert_eq!(t.scope.as_deref(), Some("repository:team/app:pull"));
    let claims = issuer.verify(&t.token).unwrap();
    assert_eq!(claims.sub, "reader");
    assert_eq!(claims.access[0].actions, vec!["pull"]);
    // The registry accepts the token for pull and asks for more with a 401 for push.
    let bearer = format!("Bearer {}", t.token);
    assert!(e.authz.authorize(&creds(Some(&bearer)), &repo("team/app", &[Action::Pull])).await.is_ok());
    match e.authz.authorize(&creds(Some(&bearer)), &repo("team/app", &[Action::Pull, Action::Push])).await {
        Err(Refusal::Unauthorized { challenge, .. }) => {
            assert_eq!(
                challenge,
                "Bearer realm=\"http://registry.test:5000/auth/token\",service=\"registry.test\",scope=\"repository:team/app:pull,push\",error=\"insufficient_scope\""
            );
        }
        other => panic!("{:?}", other.map(|g| g.identity)),
    }
    // Wrong password: no token.
    let bad = issuer::TokenRequest { basic: Some(("alice".into(), "x".into())), ..req.clone() };
    assert_eq!(issuer.issue(&e.authz, &bad).await.err(), Some(issuer::TokenError::Unauthorized));
    // Another service's token request is refused.
    let other = issuer::TokenRequest { service: Some("elsewhere".into()), ..req.clone() };
    assert!(matches!(issuer.issue(&e.authz, &other).await, Err(issuer::TokenError::Invalid(_))));
    // Anonymous token: only what anonymous callers may do.
    let anon = issuer::TokenRequest {
        scopes: Scope::parse_list("repository:public/x:pull,push repository:team/app:pull"),
        ..Default::default()
    };
    let t = issuer.issue(&e.authz, &anon).await.unwrap();
    assert_eq!(t.scope.as_deref(), Some("repository:public/x:pull"));
    // A tampered token is refused.
    let mut parts: Vec<String> = t.token.split('.').map(str::to_owned).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"iss":"berth-test","sub":"alice","aud":"registry.test","exp":9999999999,"access":[]}"#);
    assert!(issuer.verify(&parts.join(".")).is_err());
}

#[tokio::test]
async fn oauth_password_and_refresh_grants() {
    let e = env(true, default_rules());
    let issuer = e.authz.issuer().unwrap();
    let req = issuer::TokenRequest {
        grant_type: Some("password".into()),
        username: Some("alice".into()),
        password: Some("alice-pw".into()),
        scopes: Scope::parse_list("repository:a:pull,push"),
        offline: true,
        ..Default::default()
    };
    let t = issuer.issue(&e.authz, &req).await.unwrap();
    let refresh = t.refresh_token.clone().unwrap();
    // A refresh token is not an access token.
    assert!(issuer.verify(&refresh).is_err());
    let again = issuer::TokenRequest {
        grant_type: Some("refresh_token".into()),
        refresh_token: Some(refresh),
        scopes: Scope::parse_list("repository:a:pull"),
        ..Default::default()
    };
    let t2 = issuer.issue(&e.authz, &again).await.unwrap();
    assert_eq!(issuer.verify(&t2.token).unwrap().sub, "alice");
    let forged = issuer::TokenRequest { refresh_token: Some(t.token.clone()), ..again };
    assert_eq!(issuer.issue(&e.authz, &forged).await.err(), Some(issuer::TokenError::Unauthorized));
}

#[tokio::test]
async fn issuer_key_is_generated_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = IssuerConfig {
        service: "s".into(),
        issuer: "i".into(),
        key: dir.path().join("k.pem"),
        expiration: Duration::from_secs(60),
        refreshexpiration: Duration::from_secs(60),
        path: "/auth/token".into(),
        realm: None,
    };
    let a = issuer::Issuer::load(&cfg).unwrap();
    let b = issuer::Issuer::load(&cfg).unwrap();
    assert_eq!(a.key_id(), b.key_id());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cfg.key).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn scopes_parse_and_print() {
    let s = Scope::parse("repository:team/app:push,pull,bogus").unwrap();
    assert_eq!(s.to_string(), "repository:team/app:pull,push");
    assert_eq!(Scope::parse("registry:catalog:*"), Some(Scope::Catalog));
    assert_eq!(Scope::parse("repository:BAD:pull"), None);
    assert_eq!(Scope::parse_list("repository:a:pull registry:catalog:* junk").len(), 2);
}

#[test]
fn configuration_is_checked() {
    let t = TokenConfig {
        realm: "r".into(),
        service: "s".into(),
        issuer: "i".into(),
        rootcertbundle: None,
        jwks: None,
        autoredirect: false,
        signingalgorithms: None,
    };
    let e = AuthConfig { token: Some(t), ..Default::default() }.validate().unwrap_err();
    assert!(e.to_string().contains("auth.token"), "{e}");
    assert!(!AuthConfig::default().enabled());
}
