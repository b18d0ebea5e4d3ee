//! Starting and stopping the registries under test, and reading their memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Berth,
    Reference,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Berth => "berth",
            Kind::Reference => "distribution 2.8",
        }
    }
}

pub struct Binaries {
    pub berth: PathBuf,
    pub reference: PathBuf,
}

/// A registry process on a loopback port, with its store in `root`.
pub struct Server {
    pub kind: Kind,
    pub addr: String,
    child: Child,
    pub startup: Duration,
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn config(kind: Kind, root: &Path, port: u16, delete: bool) -> String {
    config_with_storage(kind, &format!("  filesystem:\n    rootdirectory: {}\n", root.display()), port, delete, "")
}

/// A configuration with `storage` as the driver's YAML (indented under
/// `storage:`) and `extra` top-level YAML.
pub fn config_with_storage(kind: Kind, storage: &str, port: u16, delete: bool, extra: &str) -> String {
    let level = match kind {
        Kind::Berth => "warn",
        Kind::Reference => "error",
    };
    format!(
        "version: 0.1\nlog:\n  level: {level}\n  accesslog:\n    disabled: true\nstorage:\n{storage}  delete:\n    enabled: {delete}\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}"
    )
}

impl Server {
    /// Starts a registry on `root` and waits (bounded) until `/v2/` answers.
    pub fn start(bins: &Binaries, kind: Kind, root: &Path, work: &Path) -> Result<Server> {
        std::fs::create_dir_all(root)?;
        Self::start_with(bins, kind, work, |port| config(kind, root, port, true))
    }

    /// Starts a registry with the configuration `config(port)` gives.
    pub fn start_with(bins: &Binaries, kind: Kind, work: &Path, config: impl Fn(u16) -> String) -> Result<Server> {
        let port = free_port()?;
        let cfg = work.join(format!("{}-{port}.yml", kind.label().replace(' ', "-")));
        std::fs::write(&cfg, config(port))?;
        let bin = match kind {
            Kind::Berth => &bins.berth,
            Kind::Reference => &bins.reference,
        };
        let started = Instant::now();
        let child = Command::new(bin)
            // distribution's S3 SDK fails on a CA bundle it cannot use.
            .env_remove("AWS_CA_BUNDLE")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let addr = format!("127.0.0.1:{port}");
        let mut s = Server { kind, addr, child, startup: Duration::ZERO };
        s.startup = s.wait_ready(started)?;
        Ok(s)
    }

    fn wait_ready(&mut self, started: Instant) -> Result<Duration> {
        let deadline = started + Duration::from_secs(600);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(&self.addr) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let req = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
                if stream.write_all(req.as_bytes()).is_ok() {
                    let mut buf = [0u8; 16];
                    if stream.read(&mut buf).is_ok_and(|n| n >= 12 && &buf[9..12] == b"200") {
                        return Ok(started.elapsed());
                    }
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                bail!("{} exited during startup: {st}", self.kind.label());
            }
            if Instant::now() > deadline {
                bail!("{} did not become ready", self.kind.label());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Resident and peak resident memory in MiB.
    pub fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
                .unwrap_or(0.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}
