//! A private Garage cluster (scripts/garage.sh) for tests, stopped when dropped.

use std::path::Path;
use std::process::Command;

use super::{repo_root, run};

pub struct Garage {
    pub dir: tempfile::TempDir,
    /// S3 API of each node.
    pub endpoints: Vec<String>,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

fn script() -> std::path::PathBuf {
    repo_root().join("scripts/garage.sh")
}

impl Garage {
    /// Starts `nodes` nodes (replication min(nodes, 3)) with one bucket. None
    /// when Garage is missing and `BERTH_E2E_ALLOW_MISSING=1`; otherwise a
    /// missing Garage fails the test (`scripts/install-test-deps.sh` builds it).
    pub fn start(nodes: usize) -> Option<Garage> {
        let dir = tempfile::Builder::new().prefix("berth-garage").tempdir().expect("tempdir");
        let probe = Command::new(script()).arg("stop").arg(dir.path()).output().expect("run garage.sh");
        if !probe.status.success() {
            if std::env::var("BERTH_E2E_ALLOW_MISSING").as_deref() == Ok("1") {
                eprintln!("SKIPPED: garage is not installed");
                return None;
            }
            panic!(
                "garage is not installed: run scripts/install-test-deps.sh (or set BERTH_E2E_ALLOW_MISSING=1): {}",
                String::from_utf8_lossy(&probe.stderr)
            );
        }
        let started = Command::new(script()).arg("start").arg(dir.path()).arg(nodes.to_string()).output();
        let started = started.expect("run garage.sh start");
        if !started.status.success() {
            // Nodes that did start must not outlive the test.
            let _ = Command::new(script()).arg("stop").arg(dir.path()).output();
            panic!("garage.sh start failed: {}", String::from_utf8_lossy(&started.stderr));
        }
        let out = String::from_utf8_lossy(&started.stdout).into_owned();
        let get = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("garage.sh printed no {k}: {out}"))
                .trim_matches('"')
                .to_owned()
        };
        Some(Garage {
            endpoints: get("GARAGE_ENDPOINTS").split_whitespace().map(str::to_owned).collect(),
            region: get("GARAGE_REGION"),
            bucket: get("GARAGE_BUCKET"),
            access_key: get("GARAGE_ACCESS_KEY"),
            secret_key: get("GARAGE_SECRET_KEY"),
            dir,
        })
    }

    pub fn stop_node(&self, n: usize) {
        run(Command::new(script()).arg("stop-node").arg(self.dir.path()).arg(n.to_string()));
    }

    pub fn start_node(&self, n: usize) {
        run(Command::new(script()).arg("start-node").arg(self.dir.path()).arg(n.to_string()));
    }

    /// The `s3:` driver section (indented under `storage:`) for node 1,
    /// keys as distribution reads them, so both registries take it.
    pub fn s3_yaml(&self, root: &str) -> String {
        self.s3_yaml_at(0, root)
    }

    pub fn s3_yaml_at(&self, node: usize, root: &str) -> String {
        format!(
            "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: {}\n    regionendpoint: {}\n    bucket: {}\n    \
             rootdirectory: /{root}\n    forcepathstyle: true\n    secure: false\n    v4auth: true\n    chunksize: 5242880\n",
            self.access_key, self.secret_key, self.region, self.endpoints[node], self.bucket
        )
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(self.dir.path()).output();
    }
}
