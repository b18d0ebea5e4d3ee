//! Shared helpers for end-to-end tests: the real `berth` binary on a free
//! loopback port, the reference registry, real clients, and a test image.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod garage;
pub mod push;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// Fails loudly when a client the test needs is missing: `scripts/test.sh`
/// installs them all. `BERTH_E2E_ALLOW_MISSING=1` turns that into a skip for
/// a developer machine without them.
pub fn require(tool: &str) -> bool {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("BERTH_E2E_ALLOW_MISSING").as_deref() == Ok("1") {
            eprintln!("SKIPPED: {tool} is not installed");
            return false;
        }
        panic!("{tool} is not installed: run scripts/install-test-deps.sh (or set BERTH_E2E_ALLOW_MISSING=1)");
    }
    true
}

/// Runs a command, panicking with its output unless it succeeds.
#[track_caller]
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs a command with `input` on its standard input.
pub fn output_with_input(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Like [`run`], with `input` on standard input.
#[track_caller]
pub fn run_with_input(cmd: &mut Command, input: &str) -> String {
    let out = output_with_input(cmd, input);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running `berth serve`, stopped (SIGTERM) when dropped.
pub struct Berth {
    pub child: Child,
    pub addr: String,
    pub config: PathBuf,
}

pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

/// A configuration listening on a free loopback port with its store at `root`.
pub fn write_config(dir: &Path, root: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join("berth.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n{extra}",
            root.display()
        ),
    )
    .expect("write config");
    cfg
}

/// Set to 1, every configuration a test starts Berth with gains a
/// `registries:` block holding one registry (answering 127.0.0.1 and
/// localhost, and, as the default, every other host): the suite then checks
/// that adding the key to a single-registry deployment changes nothing.
pub const ONE_REGISTRY_VAR: &str = "BERTH_TEST_ONE_REGISTRY";

/// Whether it added the block.
fn as_one_of_registries(config: &Path) -> bool {
    if std::env::var(ONE_REGISTRY_VAR).as_deref() != Ok("1") {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(config) else { return false };
    if text.lines().any(|l| l.starts_with("registries:")) || text.trim_start().starts_with('{') {
        return false;
    }
    let block = "registries:\n  main:\n    hosts: [127.0.0.1, localhost]\ndefault: main\n";
    std::fs::write(config, format!("{}\n{block}", text.trim_end())).expect("add a registries block");
    true
}

impl Berth {
    pub fn start(config: &Path) -> Berth {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> Berth {
        let wrapped = as_one_of_registries(config);
        let mut cmd = Command::new(berth_bin());
        cmd.arg("serve").arg(config).stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn berth");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Wrapped, the address counts once the registry says it serves as one.
            let (mut addr, mut registry, mut sent) = (None, !wrapped, false);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.split("listening on http://").nth(1) {
                    addr = Some(a.trim().to_owned());
                }
                registry |= line.starts_with("berth registry main at ");
                if let (false, true, Some(a)) = (sent, registry, &addr) {
                    let _ = tx.send(a.clone());
                    sent = true;
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("berth did not announce its address in 60 s");
        Berth { child, addr, config: config.to_owned() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops with SIGTERM and returns whether it exited cleanly.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Kills with SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// The reference registry (distribution 2.8) on a free loopback port.
pub struct Reference {
    child: Child,
    pub addr: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Reference {
    pub fn start(dir: &Path, root: &Path) -> Reference {
        Self::start_with_storage(dir, &format!("  filesystem:\n    rootdirectory: {}\n", root.display()))
    }

    /// With `storage` as the YAML under `storage:` (indented two spaces).
    pub fn start_with_storage(dir: &Path, storage: &str) -> Reference {
        let port = free_port();
        let cfg = dir.join("reference.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n{storage}  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
            ),
        )
        .expect("write reference config");
        let child = Command::new("docker-registry")
            // Its S3 SDK reads a CA bundle from here, and fails on one it cannot use.
            .env_remove("AWS_CA_BUNDLE")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn docker-registry");
        let addr = format!("127.0.0.1:{port}");
        wait_http_ok(&format!("http://{addr}/v2/"));
        Reference { child, addr }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP status curl gets for `args` (a method, headers, a URL).
pub fn curl_status(args: &[&str]) -> String {
    run(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]).args(args))
}

pub fn wait_http_ok(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "--max-time", "2", url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{url} did not answer in 30 s");
}

/// The image built by `scripts/make-test-image.sh`, once per test binary.
pub struct TestImage {
    pub dir: PathBuf,
    pub oci_ref: String,
    pub docker_archive: PathBuf,
    pub image_name: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

pub fn test_image() -> &'static TestImage {
    static IMAGE: OnceLock<TestImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("berth-test-image-{}", std::process::id()));
        let out = run(Command::new(repo_root().join("scripts/make-test-image.sh")).arg(&dir));
        let get = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("make-test-image.sh printed no {k}: {out}"))
                .to_owned()
        };
        TestImage {
            oci_ref: get("OCI_REF"),
            docker_archive: PathBuf::from(get("DOCKER_ARCHIVE")),
            image_name: get("IMAGE_NAME"),
            manifest_digest: get("MANIFEST_DIGEST"),
            config_digest: get("CONFIG_DIGEST"),
            layer_digests: get("LAYER_DIGESTS").split_whitespace().map(str::to_owned).collect(),
            dir,
        }
    })
}

/// `skopeo inspect --raw` of an image, as parsed JSON.
pub fn skopeo_raw_manifest(image: &str) -> serde_json::Value {
    let raw =
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{image}")]));
    serde_json::from_str(&raw).expect("manifest JSON")
}

pub fn skopeo_copy(src: &str, dst: &str) {
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        src,
        dst,
    ]));
}

/// sha256 files under an OCI layout's blobs directory.
pub fn layout_blobs(layout: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("layout blobs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn oci_layout_path(oci_ref: &str) -> PathBuf {
    // oci:<path>:<tag>
    let rest = oci_ref.strip_prefix("oci:").expect("oci ref");
    PathBuf::from(rest.rsplit_once(':').map(|(p, _)| p).unwrap_or(rest))
}

/// The Python virtual environment with `oras`, made by scripts/install-test-deps.sh.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var("BERTH_VENV").map(PathBuf::from).unwrap_or_else(|_| repo_root().join("target/venv"));
    venv.join("bin/python")
}

/// A private docker engine, stopped when dropped.
pub struct Dockerd {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    cli: String,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        // Short path: the engine's unix sockets are limited to 107 bytes.
        let dir = tempfile::Builder::new().prefix("bd").tempdir_in("/tmp").expect("tempdir");
        let out = run(Command::new(repo_root().join("scripts/dockerd.sh")).arg("start").arg(dir.path()));
        let mut env = Vec::new();
        let mut cli = "docker".to_owned();
        for line in out.lines() {
            if let Some((k, v)) = line.split_once('=') {
                if k == "DOCKER_CLI" {
                    cli = v.to_owned();
                } else if k.starts_with("DOCKER_") {
                    env.push((k.to_owned(), v.to_owned()));
                }
            }
        }
        Dockerd { dir, env, cli }
    }

    /// The socket of the engine's containerd, for `ctr -a`.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.path().join("exec/containerd/containerd.sock")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.cli);
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/dockerd.sh")).arg("stop").arg(self.dir.path()).output();
    }
}

/// podman with a private store under `work` (vfs, no systemd), as root in a sandbox.
pub fn podman(work: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(work.join("root"))
        .arg("--runroot")
        .arg(work.join("run"))
        .arg("--tmpdir")
        .arg(work.join("tmp"))
        .args(["--storage-driver", "vfs", "--events-backend", "file", "--cgroup-manager", "cgroupfs"]);
    c
}

/// A name part no other test of this run uses: the process id and a counter.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh PostgreSQL database on the cluster `scripts/postgres.sh` runs.
pub fn postgres_database() -> Option<String> {
    let out = Command::new(repo_root().join("scripts/postgres.sh")).arg("start").output().expect("run postgres.sh");
    if !out.status.success() {
        if std::env::var("BERTH_E2E_ALLOW_MISSING").as_deref() == Ok("1") {
            eprintln!("SKIPPED: no PostgreSQL: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        panic!("scripts/postgres.sh start failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let name = format!("berth_e2e_{}", unique_suffix());
    run(Command::new("psql").args([url.as_str(), "-q", "-c", &format!("CREATE DATABASE {name}")]));
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url);
    // Over TLS: scripts/postgres.sh serves it with a self-signed certificate.
    Some(format!("{base}/{name}?sslmode=require"))
}
