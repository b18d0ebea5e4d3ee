//! Both registries on the same S3-compatible store: a single-node Garage
//! started by `scripts/garage.sh`, each registry under its own root
//! directory of one bucket, blob bytes passing through the registry
//! (`storage.redirect.disable`), so what differs is each registry's S3 work.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::server::{config_with_storage, Kind, Server};
use crate::{blob_section, Better, Env, Report};

struct Garage {
    dir: std::path::PathBuf,
    vars: Vec<(String, String)>,
}

impl Garage {
    fn start(dir: &Path) -> Result<Garage> {
        let out =
            Command::new("scripts/garage.sh").arg("start").arg(dir).output().context("running scripts/garage.sh")?;
        if !out.status.success() {
            bail!("garage.sh start failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        Ok(Garage { dir: dir.to_owned(), vars })
    }

    fn var(&self, k: &str) -> Result<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .with_context(|| format!("garage.sh printed no {k}"))
    }

    /// The `s3:` section both registries read, under `root`.
    fn storage(&self, root: &str) -> Result<String> {
        Ok(format!(
            "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: {}\n    regionendpoint: {}\n    bucket: {}\n    \
             rootdirectory: /{root}\n    forcepathstyle: true\n    secure: false\n    v4auth: true\n  redirect:\n    disable: true\n",
            self.var("GARAGE_ACCESS_KEY")?,
            self.var("GARAGE_SECRET_KEY")?,
            self.var("GARAGE_REGION")?,
            self.var("GARAGE_ENDPOINTS")?.split_whitespace().next().unwrap_or_default(),
            self.var("GARAGE_BUCKET")?,
        ))
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = Command::new("scripts/garage.sh").arg("stop").arg(&self.dir).output();
    }
}

pub fn s3(env: &Env, rt: &tokio::runtime::Runtime, report: &mut Report) -> Result<()> {
    let garage = Garage::start(&env.work.path().join("garage"))?;
    let db = env.work.path().join("s3-metadata.sqlite");
    let berth_storage = garage.storage("berth")?;
    let berth = Server::start_with(&env.bins, Kind::Berth, env.work.path(), |port| {
        config_with_storage(Kind::Berth, &berth_storage, port, true, &format!("database:\n  path: {}\n", db.display()))
    })?;
    let ref_storage = garage.storage("reference")?;
    let reference = Server::start_with(&env.bins, Kind::Reference, env.work.path(), |port| {
        config_with_storage(Kind::Reference, &ref_storage, port, true, "")
    })?;
    let sizes: &[usize] = if env.quick { &[16] } else { &[64] };
    let section = "blobs on Garage (S3)";
    rt.block_on(blob_section(&[&berth, &reference], report, section, sizes))?;
    report.add(section, "peak RSS over the section", "MiB", Better::Lower, berth.memory().1, reference.memory().1);
    berth.stop();
    reference.stop();
    Ok(())
}
