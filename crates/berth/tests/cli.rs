//! The command line and the process as a user meets them: a port in use
//! leaves the disk alone, `version`, completions and closed pipes, htpasswd's
//! password limit, `config check` validating every file it names, logs that
//! cannot be forged and carry distribution's fields, and an object store that
//! cannot be reached named with its cause.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn a_port_in_use_leaves_the_disk_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port();
    let store = dir.path().join("store");
    let cfg = dir.path().join("berth.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            store.display()
        ),
    )
    .unwrap();
    let out = output(Command::new(berth_bin()).arg("serve").arg(&cfg).env("BERTH_DATA_DIR", dir.path().join("data")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("listening on 127.0.0.1:{port}")) && err.contains("in use"), "{err}");
    let left: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, vec!["berth.yml"], "no store, database or data directory was created");
}

#[test]
fn version_completions_and_a_closed_pipe() {
    let v = run(Command::new(berth_bin()).arg("version"));
    let (commit, date) = v
        .trim()
        .strip_prefix("berth ")
        .and_then(|r| r.split_once(" (commit "))
        .and_then(|(_, r)| r.strip_suffix(')'))
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("{v}"));
    assert!(commit == "unknown" || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())), "{v}");
    assert!(date.len() == 10 && date.as_bytes()[4] == b'-', "{v}");
    assert_eq!(run(Command::new(berth_bin()).arg("--version")).trim(), v.trim());
    for shell in ["bash", "zsh", "fish"] {
        let c = run(Command::new(berth_bin()).args(["completions", shell]));
        assert!(c.contains("berth") && c.contains("retention") && c.contains("completions"), "{shell}");
    }
    // A reader that goes away before reading: no panic, no failure.
    for args in [&["completions", "bash"][..], &["--help"], &["version"], &["gc", "--help"]] {
        let mut child =
            Command::new(berth_bin()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked") && out.status.code() != Some(101), "{args:?}: {err}");
    }
    // Every argument and flag says what it is.
    for cmd in [&["serve", "--help"][..], &["gc", "--help"], &["retention", "--help"], &["repo", "delete", "--help"]] {
        let help = run(Command::new(berth_bin()).args(cmd));
        for line in help.lines().filter(|l| l.trim_start().starts_with('-') || l.trim_start().starts_with('[')) {
            let words = line.split_whitespace().count();
            assert!(words >= 3, "{cmd:?}: no help text on {line:?}");
        }
    }
}

#[test]
fn htpasswd_add_refuses_passwords_bcrypt_would_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("htpasswd");
    let add = |user: &str, pw: &str| {
        output_with_input(
            Command::new(berth_bin()).args(["htpasswd", "add", user, "--password-stdin", "--file"]).arg(&file),
            &format!("{pw}\n"),
        )
    };
    assert!(add("alice", &"a".repeat(72)).status.success());
    let out = add("bob", &"b".repeat(73));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("73 bytes") && err.contains("at most 72"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1, "bob was not written");
}

fn check(dir: &Path, yaml: &str) -> std::process::Output {
    let cfg = dir.join("check.yml");
    std::fs::write(&cfg, yaml).unwrap();
    output(Command::new(berth_bin()).args(["config", "check"]).arg(&cfg))
}

#[test]
fn config_check_validates_the_files_it_names_and_shows_the_effective_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // A file the configuration names is missing: no "configuration OK".
    for (yaml, want) in [
        (
            format!(
                "auth:\n  token:\n    realm: https://auth.example.test/token\n    service: s\n    issuer: i\n    rootcertbundle: {}\n",
                d.join("missing.pem").display()
            ),
            "auth.token.rootcertbundle",
        ),
        (format!("auth:\n  htpasswd:\n    path: {}\n", d.join("missing-htpasswd").display()), "auth.htpasswd.path"),
        (format!("admin:\n  tokenfile: {}\n", d.join("missing-token").display()), "admin.tokenfile"),
    ] {
        let out = check(d, &yaml);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{yaml}: {stdout}");
        assert!(!stdout.contains("configuration OK") && stderr.contains(want), "{yaml}: {stdout} {stderr}");
    }
    // A whole configuration: every effective setting, secrets masked, nothing created.
    run_with_input(
        Command::new(berth_bin())
            .args(["htpasswd", "add", "alice", "--password-stdin", "--file"])
            .arg(d.join("htpasswd")),
        "pw\n",
    );
    let yaml = format!(
        "storage:\n  s3:\n    accesskey: AKEXAMPLE\n    secretkey: s3cr3t-value\n    region: garage\n    regionendpoint: http://127.0.0.1:3900\n    bucket: reg\n\
         database:\n  driver: postgres\n  dsn: postgres://berth:db-pass@127.0.0.1:5432/berth\n\
         auth:\n  htpasswd:\n    path: {}\n  issuer:\n    key: {}\n  access:\n    admins: [alice]\n    rules:\n      - repositories: [\"**\"]\n        users: [alice]\n        actions: [pull, push]\n\
         gc:\n  enabled: true\n  interval: 6h\n  grace: 30m\n\
         retention:\n  policies:\n    - repositories: [\"ci/**\"]\n      keeplast: 5\n      keeptags: [\"release-*\"]\n\
         quotas:\n  - namespace: team\n    limit: 1GiB\nredis:\n  addr: localhost:6379\n",
        d.join("htpasswd").display(),
        d.join("keys/issuer.pem").display()
    );
    let out = check(d, &yaml);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("configuration OK"), "{stdout}");
    for want in [
        "s3 bucket reg at http://127.0.0.1:3900",
        "postgres at postgres://berth:***@127.0.0.1:5432/berth",
        "token issuer (its signing key will be generated at",
        "alice may pull,push on **",
        "admins:    alice",
        "every 6h",
        "grace 30m",
        "ci/**: keep the newest 5, keep tags release-*",
        "team at most 1073741824 bytes",
        "redis: accepted and ignored",
    ] {
        assert!(stdout.contains(want), "{want:?} in {stdout}");
    }
    assert!(!stdout.contains("s3cr3t-value") && !stdout.contains("db-pass"), "{stdout}");
    assert!(!d.join("keys").exists(), "config check created the issuer's key");
}

/// Starts `berth serve` with `config`, its standard error lines sent to the returned channel.
fn serve_logging(config: &Path) -> (std::process::Child, String, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(berth_bin())
        .arg("serve")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.contains("listening on http://"));
    let addr = line.and_then(|l| l.split("listening on http://").nth(1).map(str::to_owned)).expect("address");
    (child, addr, rx)
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

/// Lines logged until `until` shows up (or 10 s pass).
fn lines_until(rx: &std::sync::mpsc::Receiver<String>, until: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let done = until(&l);
                out.push(l);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    out
}

#[test]
fn logs_cannot_be_forged_and_carry_distribution_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_with_input(
        Command::new(berth_bin())
            .args(["htpasswd", "add", "alice", "--password-stdin", "--file"])
            .arg(dir.path().join("htpasswd")),
        "pw\n",
    );
    let auth = format!("auth:\n  htpasswd:\n    path: {}\n", dir.path().join("htpasswd").display());
    let forged = "Basic ZXZlCklORk8gZm9yZ2VkIGxpbmU6eA=="; // "eve\nINFO forged line:x"
    for formatter in ["json", "logstash", "text"] {
        let cfg = write_config(dir.path(), &dir.path().join(format!("store-{formatter}")), &auth)
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "log:\n  level: warn\n",
            &format!("log:\n  level: info\n  formatter: {formatter}\n  fields:\n    service: registry\n"),
        );
        std::fs::write(&cfg, text).unwrap();
        let (child, addr, rx) = serve_logging(Path::new(&cfg));
        let status = curl_status(&[
            "-A",
            "agent\tINFO forged",
            "-H",
            &format!("Authorization: {forged}"),
            &format!("http://{addr}/v2/?q=1"),
        ]);
        assert_eq!(status, "401", "a forged user name is a failed login");
        let lines = lines_until(&rx, |l| l.contains("response completed"));
        // A user who logs in is named on its request's line.
        assert_eq!(curl_status(&["-u", "alice:pw", &format!("http://{addr}/v2/")]), "200");
        let ok = lines_until(&rx, |l| l.contains("response completed"));
        let line = ok.iter().find(|l| l.contains("response completed")).expect("access line of the login");
        assert!(line.contains("alice") && line.contains("auth.user.name"), "{line}");
        stop(child);
        assert!(lines.iter().all(|l| !l.starts_with("INFO forged")), "{formatter}: a forged line: {lines:#?}");
        assert!(lines.iter().all(|l| !l.contains('\x1b')), "{formatter}: colour off a terminal");
        let access = lines.iter().find(|l| l.contains("response completed")).expect("access log line");
        let failed = lines.iter().find(|l| l.contains("failed login")).expect("failed login line");
        match formatter {
            "text" => {
                assert!(failed.contains("user=\"eve\\nINFO forged line\""), "{failed}");
                for f in [
                    "http.request.method=GET",
                    "http.response.status=401",
                    "service=registry",
                    "http.request.useragent=\"agent\\tINFO forged\"",
                ] {
                    assert!(access.contains(f), "{f} in {access}");
                }
            }
            _ => {
                let v: serde_json::Value = serde_json::from_str(access).expect("one JSON object a line");
                let (msg, time) = if formatter == "json" { ("msg", "time") } else { ("message", "@timestamp") };
                assert_eq!(v[msg], "response completed");
                assert!(v[time].is_string());
                if formatter == "logstash" {
                    assert_eq!(v["@version"], "1");
                }
                assert_eq!(v["level"], "info");
                assert_eq!(v["service"], "registry", "log.fields at the top level");
                assert_eq!(v["http.request.method"], "GET");
                assert_eq!(v["http.request.uri"], "/v2/?q=1");
                assert_eq!(v["http.request.useragent"], "agent\tINFO forged");
                assert!(v["http.request.remoteaddr"].as_str().unwrap().starts_with("127.0.0.1:"));
                assert_eq!(v["http.response.status"], 401);
                assert!(v["http.response.written"].as_u64().unwrap() > 0);
                let ms = v["http.response.duration"].as_str().unwrap();
                assert!(ms.ends_with("ms") && ms.split('.').nth(1).unwrap().len() == 5, "three decimals: {ms}");
                let f: serde_json::Value = serde_json::from_str(failed).unwrap();
                assert_eq!(f["user"], "eve\nINFO forged line");
            }
        }
    }
}

#[test]
fn an_object_store_that_cannot_be_reached_is_named_with_its_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = free_port();
    // A port that answers in plain HTTP where TLS was asked for.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in plain.incoming().flatten() {
            use std::io::Write;
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    for (endpoint, cause) in [
        (format!("http://127.0.0.1:{closed}"), "Connection refused"),
        (format!("https://127.0.0.1:{plain_port}"), "TLS handshake failed"),
    ] {
        let cfg = dir.path().join("s3.yml");
        std::fs::write(
            &cfg,
            format!(
                "storage:\n  s3:\n    accesskey: a\n    secretkey: b\n    region: garage\n    regionendpoint: {endpoint}\n    bucket: reg\n\
                 database:\n  path: {}\nhttp:\n  addr: 127.0.0.1:0\n",
                dir.path().join("m.sqlite").display()
            ),
        )
        .unwrap();
        let out = output(Command::new(berth_bin()).arg("serve").arg(&cfg).env_remove("AWS_CA_BUNDLE"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(&format!("reaching bucket reg at {endpoint}")), "{err}");
        assert!(err.to_lowercase().contains(&cause.to_lowercase()), "{cause} in {err}");
    }
}
