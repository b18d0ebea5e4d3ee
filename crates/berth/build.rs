//! Puts the commit and the build date into the binary (`berth version`).
//! The script runs again only when the checked-out commit changes.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    let commit = std::env::var("BERTH_COMMIT")
        .ok()
        .or_else(|| run("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // SOURCE_DATE_EPOCH makes the date reproducible.
    let date = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(secs) => run("date", &["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d"]),
        Err(_) => run("date", &["-u", "+%Y-%m-%d"]),
    };
    println!("cargo:rustc-env=BERTH_COMMIT={commit}");
    println!("cargo:rustc-env=BERTH_BUILD_DATE={}", date.unwrap_or_else(|| "unknown".to_owned()));
    println!("cargo:rerun-if-env-changed=BERTH_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    if let Some(dir) = run("git", &["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/packed-refs");
        if let Some(r) = run("git", &["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{r}");
        }
    }
}
