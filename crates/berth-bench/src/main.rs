//! `berth-bench`: runs Berth and the reference registry (distribution 2.8)
//! side by side on loopback with the same workloads, prints a table of each
//! figure for both with the ratio, and writes the same as JSON.
//!
//! Not a test: nothing here passes or fails. Every loop is bounded in count,
//! and every request in time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;

mod blobs;
mod gc;
mod load;
mod s3;
mod server;
mod store;
mod wrk;

use server::{Binaries, Kind, Server};

#[derive(Parser)]
#[command(about = "Benchmark Berth against the reference registry")]
struct Args {
    /// A shorter run: small blobs only, short load phases, fewer repositories.
    #[arg(long)]
    quick: bool,
    /// The berth binary (a release build).
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    /// The reference registry binary (Debian package docker-registry).
    #[arg(long, default_value = "docker-registry")]
    reference: PathBuf,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// Only these sections (blobs, pushes, requests, images, uploads, blobs-tmpfs, startup, listing, gc, s3).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seconds of each wrk run.
    #[arg(long)]
    wrk_secs: Option<u32>,
    /// Repositories in the listing store.
    #[arg(long)]
    repos: Option<usize>,
}

/// Whether a larger figure is better.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Better {
    Higher,
    Lower,
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    section: String,
    metric: String,
    unit: String,
    better: Better,
    berth: f64,
    reference: f64,
    /// How many times better Berth is (above 1: Berth leads).
    advantage: f64,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn add(&mut self, section: &str, metric: &str, unit: &str, better: Better, berth: f64, reference: f64) {
        let advantage = match better {
            Better::Higher if reference > 0.0 => berth / reference,
            Better::Lower if berth > 0.0 => reference / berth,
            _ => f64::NAN,
        };
        let row = Row {
            section: section.into(),
            metric: metric.into(),
            unit: unit.into(),
            better,
            berth,
            reference,
            advantage,
        };
        eprintln!(
            "  {:<58} {:>12} {:>12} {:>7}",
            format!("{metric} ({unit})"),
            fmt(berth),
            fmt(reference),
            adv(advantage)
        );
        self.rows.push(row);
    }

    fn note(&mut self, s: String) {
        eprintln!("  note: {s}");
        self.notes.push(s);
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn adv(a: f64) -> String {
    if a.is_nan() {
        "-".into()
    } else {
        format!("{a:.2}x")
    }
}

fn header(title: &str) {
    eprintln!("\n== {title}");
    eprintln!("  {:<58} {:>12} {:>12} {:>7}", "metric", "berth", "dist 2.8", "berth");
}

struct Env {
    bins: Binaries,
    work: tempfile::TempDir,
    quick: bool,
    wrk_secs: u32,
}

impl Env {
    fn wants(&self, only: &[String], section: &str) -> bool {
        only.is_empty() || only.iter().any(|s| s == section)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bins = Binaries { berth: args.berth.clone(), reference: which(&args.reference)? };
    if !bins.berth.exists() {
        bail!("{} not found: build it with cargo build --release -p berth", bins.berth.display());
    }
    let env = Env {
        bins,
        work: tempfile::Builder::new().prefix("berth-bench").tempdir()?,
        quick: args.quick,
        wrk_secs: args.wrk_secs.unwrap_or(if args.quick { 3 } else { 10 }),
    };
    let repos = args.repos.unwrap_or(if args.quick { 1000 } else { 10_000 });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut report = Report::default();
    let started = Instant::now();

    let run_main = ["blobs", "pushes", "requests", "images"].iter().any(|s| env.wants(&args.only, s));
    if run_main {
        let berth = Server::start(&env.bins, Kind::Berth, &env.work.path().join("berth-store"), env.work.path())?;
        let reference = Server::start(&env.bins, Kind::Reference, &env.work.path().join("ref-store"), env.work.path())?;
        let idle = (berth.memory().0, reference.memory().0);
        let servers = [&berth, &reference];
        if env.wants(&args.only, "blobs") {
            let sizes: &[usize] = if env.quick { &[64] } else { &[64, 512] };
            rt.block_on(blob_section(&servers, &mut report, "blobs", sizes))?;
        }
        if env.wants(&args.only, "pushes") {
            rt.block_on(small_pushes(&env, &servers, &mut report))?;
        }
        if env.wants(&args.only, "requests") {
            rt.block_on(requests(&env, &servers, &mut report))?;
        }
        if env.wants(&args.only, "images") {
            images(&env, &servers, &mut report)?;
        }
        header("memory");
        report.add("memory", "idle RSS after start", "MiB", Better::Lower, idle.0, idle.1);
        report.add(
            "memory",
            "peak RSS over the run above",
            "MiB",
            Better::Lower,
            berth.memory().1,
            reference.memory().1,
        );
        berth.stop();
        reference.stop();
    }
    if env.wants(&args.only, "uploads") {
        rt.block_on(concurrent(&env, &mut report))?;
    }
    if env.wants(&args.only, "blobs-tmpfs") {
        blobs_in_memory(&env, &rt, &mut report)?;
    }
    if env.wants(&args.only, "startup") {
        startup(&env, &mut report)?;
    }
    if env.wants(&args.only, "listing") {
        rt.block_on(listing(&env, repos, &mut report))?;
    }
    if env.wants(&args.only, "gc") {
        gc::gc(&env, &mut report)?;
    }
    if env.wants(&args.only, "s3") {
        s3::s3(&env, &rt, &mut report)?;
    }

    let out = serde_json::json!({
        "machine": machine(),
        "quick": env.quick,
        "duration_s": started.elapsed().as_secs_f64(),
        "rows": report.rows,
        "notes": report.notes,
    });
    if let Some(p) = args.out.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&out)?)?;
    print_markdown(&report);
    eprintln!("\nresults written to {} ({:.0} s)", args.out.display(), started.elapsed().as_secs_f64());
    Ok(())
}

fn which(p: &Path) -> Result<PathBuf> {
    if p.components().count() > 1 {
        return Ok(p.to_owned());
    }
    let out = Command::new("sh").arg("-c").arg(format!("command -v {}", p.display())).output()?;
    if !out.status.success() {
        bail!("{} not found: install it with scripts/install-test-deps.sh", p.display());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned());
    let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let sha =
        cpuinfo.lines().find(|l| l.starts_with("flags")).is_some_and(|l| l.split_whitespace().any(|f| f == "sha_ni"));
    let mem = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| m.lines().next().map(str::to_owned));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({"cpu": model, "cpus": cpus, "sha_ni": sha, "memory": mem, "kernel": kernel.trim()})
}

fn print_markdown(report: &Report) {
    println!("| section | metric | unit | berth | distribution 2.8 | berth advantage |");
    println!("| --- | --- | --- | ---: | ---: | ---: |");
    for r in &report.rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.section,
            r.metric,
            r.unit,
            fmt(r.berth),
            fmt(r.reference),
            adv(r.advantage)
        );
    }
    for n in &report.notes {
        println!("\n- {n}");
    }
}

/// 1,000 uploads open at once, on fresh servers so that peak RSS is this
/// load's: memory stays bounded per process however many clients push.
async fn concurrent(env: &Env, report: &mut Report) -> Result<()> {
    const UPLOADS: usize = 1000;
    let size = if env.quick { 64 << 10 } else { 256 << 10 };
    header(&format!("uploads: {UPLOADS} at once, {} KiB each in two chunks", size >> 10));
    let start = |kind: Kind, name: &str| {
        let root = env.work.path().join(name);
        std::fs::create_dir_all(&root)?;
        // Every client is on loopback: the per-address cap is lifted for the run.
        let storage = format!("  filesystem:\n    rootdirectory: {}\n", root.display());
        let limits = match kind {
            Kind::Berth => "  limits:\n    connectionsperclient: 0\n",
            Kind::Reference => "",
        };
        Server::start_with(&env.bins, kind, env.work.path(), |port| {
            server::config_with_storage(kind, &storage, port, true, limits)
        })
    };
    let berth = start(Kind::Berth, "berth-uploads")?;
    let reference = start(Kind::Reference, "ref-uploads")?;
    let c = reqwest::Client::builder().pool_max_idle_per_host(UPLOADS).build()?;
    let mut secs = [0.0; 2];
    let mut failed = [0usize; 2];
    for (i, s) in [&berth, &reference].iter().enumerate() {
        let blobs = blobs::make_blobs(UPLOADS, size);
        (secs[i], failed[i]) = blobs::concurrent_uploads(&c, &s.url(""), "uploads/app", &blobs).await?;
    }
    report.add("uploads", "time to finish them all", "s", Better::Lower, secs[0], secs[1]);
    report.add("uploads", "failed uploads", "count", Better::Lower, failed[0] as f64, failed[1] as f64);
    report.add("uploads", "peak RSS", "MiB", Better::Lower, berth.memory().1, reference.memory().1);
    berth.stop();
    reference.stop();
    Ok(())
}

async fn blob_section(servers: &[&Server; 2], report: &mut Report, section: &str, sizes: &[usize]) -> Result<()> {
    header(&format!(
        "{section}: push and pull (MB/s per stream, median of repeated runs, the registries taking turns)"
    ));
    let c = blobs::client();
    for &mib in sizes {
        // Every push needs new content; pulls repeat on the same blobs.
        let (push_reps, pull_reps) = if mib <= 64 { (3, 5) } else { (1, 3) };
        for clients in [1usize, 4] {
            for (mode, chunk) in [("monolithic", None), ("chunked 8 MiB", Some(8 << 20))] {
                let repo = format!("blobs/s{mib}-c{clients}-{}", if chunk.is_some() { "chunked" } else { "mono" });
                let mut push = [Vec::new(), Vec::new()];
                let mut pull = [Vec::new(), Vec::new()];
                let mut last = Vec::new();
                for _ in 0..push_reps {
                    last = blobs::make_blobs(clients, mib << 20);
                    for (i, s) in servers.iter().enumerate() {
                        let v = blobs::push_all(&c, &s.url(""), &repo, &last, chunk).await;
                        push[i].push(v.with_context(|| format!("{} push", s.kind.label()))?);
                    }
                }
                for _ in 0..pull_reps {
                    for (i, s) in servers.iter().enumerate() {
                        let v = blobs::pull_all(&c, &s.url(""), &repo, &last).await;
                        pull[i].push(v.with_context(|| format!("{} pull", s.kind.label()))?);
                    }
                }
                let [pb, pr] = push;
                let [lb, lr] = pull;
                let what = format!("{mib} MiB, {clients} client{}, {mode}", if clients > 1 { "s" } else { "" });
                report.add(section, &format!("push {what}"), "MB/s/stream", Better::Higher, median(pb), median(pr));
                report.add(section, &format!("pull {what}"), "MB/s/stream", Better::Higher, median(lb), median(lr));
            }
        }
    }
    Ok(())
}

/// The same blob workload with both stores on tmpfs: no disk, so what remains
/// is each registry's own work per byte. The difference from the disk run is
/// the price of the disk, including Berth's fsync before a blob is committed.
fn blobs_in_memory(env: &Env, rt: &tokio::runtime::Runtime, report: &mut Report) -> Result<()> {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        report.note("no /dev/shm: the tmpfs blob section was skipped".into());
        return Ok(());
    }
    let dir = tempfile::Builder::new().prefix("berth-bench").tempdir_in(shm)?;
    let berth = Server::start(&env.bins, Kind::Berth, &dir.path().join("berth"), env.work.path())?;
    let reference = Server::start(&env.bins, Kind::Reference, &dir.path().join("ref"), env.work.path())?;
    rt.block_on(blob_section(&[&berth, &reference], report, "blobs on tmpfs", &[64]))?;
    berth.stop();
    reference.stop();
    Ok(())
}

async fn small_pushes(env: &Env, servers: &[&Server; 2], report: &mut Report) -> Result<()> {
    header("1 MiB blob pushes, 8 clients");
    let c = blobs::client();
    let count = if env.quick { 160 } else { 400 };
    let mut rate = [Vec::new(), Vec::new()];
    for round in 0..3 {
        let set = blobs::make_blobs(count, 1 << 20);
        for (i, s) in servers.iter().enumerate() {
            rate[i].push(blobs::push_rate(&c, &s.url(""), &format!("pushes/small{round}"), &set, 8).await?);
        }
    }
    let [b, r] = rate;
    report.add(
        "pushes",
        &format!("1 MiB blob pushes at 8 clients ({count} blobs, median of 3)"),
        "pushes/s",
        Better::Higher,
        median(b),
        median(r),
    );
    Ok(())
}

/// A small-request case: name, method, path, headers.
type Case<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>);

async fn requests(env: &Env, servers: &[&Server; 2], report: &mut Report) -> Result<()> {
    header(&format!("small requests (wrk, 2 threads, {} s each)", env.wrk_secs));
    let c = blobs::client();
    let layers = blobs::make_blobs(2, 4096);
    for s in servers {
        for t in 0..100 {
            blobs::push_image(&c, &s.url(""), "req/img", &format!("t{t:03}"), &layers).await?;
        }
        blobs::push_image(&c, &s.url(""), "req/img", "v1", &layers).await?;
    }
    let (ceiling_addr, ceiling) = wrk::ceiling_server().await?;
    let work = env.work.path().to_owned();
    let secs = env.wrk_secs;
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let cases: [Case; 4] = [
        ("manifest GET", "GET", "/v2/req/img/manifests/v1", vec![("Accept", oci)]),
        ("manifest HEAD (own generator)", "HEAD", "/v2/req/img/manifests/v1", vec![("Accept", oci)]),
        ("tags list (101 tags)", "GET", "/v2/req/img/tags/list", vec![]),
        ("catalog", "GET", "/v2/_catalog", vec![]),
    ];
    for conns in [16u32, 64] {
        let w = work.clone();
        let addr = ceiling_addr.clone();
        let ceil =
            tokio::task::spawn_blocking(move || wrk::run(&format!("http://{addr}/"), "GET", &[], conns, secs, &w))
                .await??;
        report.note(format!(
            "wrk ceiling at {conns} connections (a server answering {{}} to everything): {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            ceil.rps, ceil.p50_ms, ceil.p99_ms
        ));
        let addr = ceiling_addr.clone();
        let ceil = tokio::task::spawn_blocking(move || load::run(&addr, "HEAD", "/", &[], conns, secs)).await??;
        report.note(format!(
            "HEAD generator (berth-bench's own, as wrk cannot send HEAD) ceiling at {conns} connections: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            ceil.rps, ceil.p50_ms, ceil.p99_ms
        ));
        for (name, method, path, headers) in &cases {
            let mut loads = Vec::new();
            for s in servers {
                let (url, w, method) = (s.url(path), work.clone(), method.to_string());
                let headers: Vec<(String, String)> =
                    headers.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
                let (addr, p) = (s.addr.clone(), path.to_string());
                let l = tokio::task::spawn_blocking(move || {
                    if method == "HEAD" {
                        return load::run(&addr, &method, &p, &headers, conns, secs);
                    }
                    let h: Vec<(&str, &str)> = headers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                    wrk::run(&url, &method, &h, conns, secs, &w)
                })
                .await??;
                loads.push(l);
            }
            let what = format!("{name}, {conns} conns");
            report.add("requests", &format!("{what}: throughput"), "req/s", Better::Higher, loads[0].rps, loads[1].rps);
            report.add("requests", &format!("{what}: p50"), "ms", Better::Lower, loads[0].p50_ms, loads[1].p50_ms);
            report.add("requests", &format!("{what}: p99"), "ms", Better::Lower, loads[0].p99_ms, loads[1].p99_ms);
        }
    }
    ceiling.abort();
    Ok(())
}

fn images(env: &Env, servers: &[&Server; 2], report: &mut Report) -> Result<()> {
    header("whole image with skopeo");
    let (layers, mib) = if env.quick { (3, 8) } else { (4, 32) };
    let layout = env.work.path().join("image-layout");
    store::write_oci_layout(&layout, layers, mib << 20)?;
    let mut push = [0.0; 2];
    let mut pull = [0.0; 2];
    for (i, s) in servers.iter().enumerate() {
        let target = format!("docker://{}/images/app:v1", s.addr);
        let t = Instant::now();
        skopeo(&["copy", "--quiet", "--dest-tls-verify=false", &format!("oci:{}:latest", layout.display()), &target])?;
        push[i] = t.elapsed().as_secs_f64();
        let back = env.work.path().join(format!("image-back-{i}"));
        let t = Instant::now();
        skopeo(&["copy", "--quiet", "--src-tls-verify=false", &target, &format!("oci:{}:v1", back.display())])?;
        pull[i] = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&back);
    }
    let what = format!("{layers} layers of {mib} MiB");
    report.add("images", &format!("skopeo copy push, {what}"), "s", Better::Lower, push[0], push[1]);
    report.add("images", &format!("skopeo copy pull, {what}"), "s", Better::Lower, pull[0], pull[1]);
    Ok(())
}

fn skopeo(args: &[&str]) -> Result<()> {
    let out = Command::new("skopeo").args(args).output().context("running skopeo")?;
    if !out.status.success() {
        bail!("skopeo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn startup(env: &Env, report: &mut Report) -> Result<()> {
    header("startup (empty store, spawn until /v2/ answers)");
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..5 {
        for (i, kind) in [Kind::Berth, Kind::Reference].into_iter().enumerate() {
            let root = env.work.path().join(format!("startup-{round}-{i}"));
            let s = Server::start(&env.bins, kind, &root, env.work.path())?;
            times[i].push(s.startup.as_secs_f64() * 1e3);
            s.stop();
            let _ = std::fs::remove_dir_all(&root);
        }
    }
    let [b, r] = times;
    report.add("startup", "startup time, median of 5", "ms", Better::Lower, median(b), median(r));
    Ok(())
}

async fn timed<F, Fut>(reps: usize, mut f: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f().await?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(v))
}

async fn listing(env: &Env, repos: usize, report: &mut Report) -> Result<()> {
    header(&format!("listing with {repos} repositories (distribution-layout store served by both)"));
    let tags = if env.quick { 1000 } else { 10_000 };
    let master = env.work.path().join("listing-master");
    let t = Instant::now();
    store::write_listing_store(&master, repos, tags)?;
    report.note(format!(
        "listing store with {repos} repositories and {tags} tags written in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    let mut servers = Vec::new();
    for (i, kind) in [Kind::Berth, Kind::Reference].into_iter().enumerate() {
        let root = env.work.path().join(format!("listing-{i}"));
        let st = Command::new("cp").arg("-a").arg(&master).arg(&root).status()?;
        if !st.success() {
            bail!("copying the listing store failed");
        }
        servers.push(Server::start(&env.bins, kind, &root, env.work.path())?);
    }
    report.note(format!(
        "berth's first start on that store, indexing it into its database: {:.2} s (the reference needs no index)",
        servers[0].startup.as_secs_f64()
    ));
    let c = blobs::client();
    let mut full = [0.0; 2];
    let mut first = [0.0; 2];
    let mut tag_list = [0.0; 2];
    for (i, s) in servers.iter().enumerate() {
        let base = s.url("");
        // The whole catalog through pages of 1000, following Link headers.
        full[i] = timed(3, || {
            let (c, base) = (c.clone(), base.clone());
            async move {
                let mut next = Some(format!("{base}/v2/_catalog?n=1000"));
                let mut seen = 0usize;
                let mut pages = 0;
                while let Some(url) = next.take() {
                    pages += 1;
                    if pages > 1000 {
                        bail!("too many catalog pages");
                    }
                    let r = c.get(&url).send().await?;
                    if r.status() != 200 {
                        bail!("catalog answered {}", r.status());
                    }
                    next = r
                        .headers()
                        .get("link")
                        .and_then(|l| l.to_str().ok())
                        .and_then(|l| l.split(['<', '>']).nth(1))
                        .map(|p| if p.starts_with("http") { p.to_owned() } else { format!("{base}{p}") });
                    let v: serde_json::Value = r.json().await?;
                    seen += v["repositories"].as_array().map_or(0, Vec::len);
                }
                if seen != repos + 1 {
                    bail!("catalog listed {seen} repositories, expected {}", repos + 1);
                }
                Ok(())
            }
        })
        .await?;
        first[i] = timed(20, || {
            let (c, base) = (c.clone(), base.clone());
            async move {
                let r = c.get(format!("{base}/v2/_catalog?n=100&last=bench%2Fr05000")).send().await?;
                if r.status() != 200 {
                    bail!("catalog answered {}", r.status());
                }
                r.bytes().await?;
                Ok(())
            }
        })
        .await?;
        tag_list[i] = timed(5, || {
            let (c, base) = (c.clone(), base.clone());
            async move {
                let r = c.get(format!("{base}/v2/bench/many/tags/list")).send().await?;
                let v: serde_json::Value = r.json().await?;
                if v["tags"].as_array().map_or(0, Vec::len) != tags {
                    bail!("tags list is incomplete");
                }
                Ok(())
            }
        })
        .await?;
    }
    report.add(
        "listing",
        &format!("whole catalog of {} repositories, pages of 1000", repos + 1),
        "ms",
        Better::Lower,
        full[0],
        full[1],
    );
    report.add("listing", "one catalog page of 100 from the middle", "ms", Better::Lower, first[0], first[1]);
    report.add(
        "listing",
        &format!("tags list of a repository with {tags} tags"),
        "ms",
        Better::Lower,
        tag_list[0],
        tag_list[1],
    );
    for s in servers {
        s.stop();
    }
    Ok(())
}
