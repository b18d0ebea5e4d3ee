//! Databases for the tests: a temporary SQLite file, or a fresh database on
//! the PostgreSQL server named by `BERTH_TEST_POSTGRES_URL` (scripts/test.sh
//! starts one with scripts/postgres.sh). Without that variable the PostgreSQL
//! tests are skipped with a line saying so, unless `CI` is set: then they fail.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

use crate::Metadata;

pub const POSTGRES_URL_VAR: &str = "BERTH_TEST_POSTGRES_URL";

/// A database that lives as long as the test holds it.
pub struct TestDb {
    pub md: Metadata,
    /// The URL of this database (PostgreSQL), to open it a second time.
    pub url: Option<String>,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<FreshPg>,
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let (md, created) = Metadata::open_sqlite(&dir.path().join("meta.sqlite")).await.unwrap();
    assert!(created);
    TestDb { md, url: None, _dir: Some(dir), _pg: None }
}

/// The server's URL, or None (after saying so) when the PostgreSQL tests are skipped.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{POSTGRES_URL_VAR} is not set, and CI is: the PostgreSQL tests must run \
             (scripts/test.sh starts a server with scripts/postgres.sh)"
        ),
        _ => {
            eprintln!("skipping {test} on PostgreSQL: {POSTGRES_URL_VAR} is not set (see scripts/postgres.sh)");
            None
        }
    }
}

/// A fresh, empty database on the test server, opened and migrated.
pub async fn postgres(test: &str) -> Option<TestDb> {
    let server = postgres_url(test)?;
    let (pg, url) = FreshPg::create(&server).await;
    let (md, created) = Metadata::open_postgres(&url, 8).await.unwrap();
    assert!(created);
    Some(TestDb { md, url: Some(url), _dir: None, _pg: Some(pg) })
}

/// A database created for one test and dropped after it.
struct FreshPg {
    server: String,
    name: String,
}

impl FreshPg {
    async fn create(server: &str) -> (FreshPg, String) {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("berth_test_{}_{}_{}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed));
        sqlx::any::install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(server)
            .await
            .unwrap_or_else(|e| panic!("connecting to {POSTGRES_URL_VAR}: {e}"));
        sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        admin.close().await.unwrap();
        let url = with_database(server, &name);
        (FreshPg { server: server.to_owned(), name }, url)
    }
}

impl Drop for FreshPg {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: use another.
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut admin = sqlx::AnyConnection::connect(&server).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::Executor::execute(&mut admin, sql.as_str()).await.ok()?;
                admin.close().await.ok()
            })
        })
        .join();
    }
}

/// `url` with its database (the path) replaced by `name`, query kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[test]
fn database_name_replaces_the_path() {
    assert_eq!(with_database("postgres://u@h:1/postgres", "x"), "postgres://u@h:1/x");
    assert_eq!(with_database("postgres://u:p@h:1", "x"), "postgres://u:p@h:1/x");
    assert_eq!(with_database("postgres://h/db?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
}
