//! The configuration read as distribution's tests and users write it.

use super::database::redact_dsn;
use super::*;

fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config> {
    let mut v: Value = serde_yaml_ng::from_str(yaml).unwrap();
    if v.is_null() {
        v = Value::Mapping(Mapping::new());
    }
    apply_env(&mut v, env.iter().map(|(a, b)| (a.to_string(), b.to_string())))?;
    Config::from_value(v)
}

#[test]
fn distribution_config_is_read() {
    let c = load(
        r#"
version: 0.1
log:
  level: debug
  formatter: json
  fields:
    service: registry
    environment: development
  accesslog:
    disabled: true
storage:
  cache:
    layerinfo: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
      age: 2h30m
      interval: 10m
      dryrun: true
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:5001
  secret: asecretforlocaldevelopment
  host: https://registry.example.test
  relativeurls: false
  draintimeout: 5s
  headers:
    X-Content-Type-Options: [nosniff]
compatibility:
  schema1:
    disablesignaturestore: true
"#,
        &[],
    )
    .unwrap();
    assert_eq!(c.log_level().as_deref(), Some("debug"));
    assert!(c.log.accesslog.disabled);
    assert_eq!(c.storage.filesystem.clone().unwrap().rootdirectory.unwrap(), PathBuf::from("/var/lib/registry"));
    assert!(c.storage.delete.enabled);
    let p = &c.storage.maintenance.uploadpurging;
    assert_eq!(
        (p.enabled, p.age, p.interval, p.dryrun),
        (false, Duration::from_secs(9000), Duration::from_secs(600), true)
    );
    assert!(c.storage.maintenance.readonly.enabled);
    assert_eq!(c.http.addr, "127.0.0.1:5001");
    assert_eq!(c.http.draintimeout, Duration::from_secs(5));
    assert_eq!(c.http.headers["X-Content-Type-Options"], vec!["nosniff"]);
}

#[test]
fn defaults_match_distribution() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.http.addr, ":5000");
    assert!(!c.storage.delete.enabled);
    assert!(c.storage.maintenance.uploadpurging.enabled);
    assert_eq!(c.storage.maintenance.uploadpurging.age, Duration::from_secs(168 * 3600));
    assert_eq!(c.catalog.maxentries, 1000);
}

#[test]
fn environment_overrides_keys() {
    let c = load(
        "storage:\n  filesystem:\n    rootdirectory: /a\nhttp:\n  addr: :5000\n",
        &[
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/b"),
            ("REGISTRY_HTTP_ADDR", "127.0.0.1:6000"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
            ("REGISTRY_LOG_LEVEL", "warn"),
            ("REGISTRY_DATABASE_PATH", "/tmp/x.sqlite"),
            ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "1h"),
            ("UNRELATED", "x"),
        ],
    )
    .unwrap();
    assert_eq!(c.storage.filesystem.clone().unwrap().rootdirectory.unwrap(), PathBuf::from("/b"));
    assert_eq!(c.http.addr, "127.0.0.1:6000");
    assert!(c.storage.delete.enabled);
    assert_eq!(c.log_level().as_deref(), Some("warn"));
    assert_eq!(c.database.path.unwrap(), PathBuf::from("/tmp/x.sqlite"));
    assert_eq!(c.storage.maintenance.uploadpurging.age, Duration::from_secs(3600));
}

#[test]
fn storage_driver_selected_by_environment() {
    let c = load("storage:\n  filesystem:\n    rootdirectory: /a\n", &[("REGISTRY_STORAGE", "inmemory")]).unwrap();
    assert!(c.storage.filesystem.is_none());
    assert!(c.storage.inmemory.is_some());
    let e = load("", &[("REGISTRY_STORAGE", "s3"), ("REGISTRY_STORAGE_S3_BUCKET", "b")]).unwrap_err();
    assert!(e.to_string().starts_with("storage.s3.region:"), "{e}");
    let c = load(
        "storage:\n  filesystem:\n    rootdirectory: /a\n",
        &[
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_BUCKET", "b"),
            ("REGISTRY_STORAGE_S3_REGION", "garage"),
            ("REGISTRY_STORAGE_S3_REGIONENDPOINT", "http://127.0.0.1:3900"),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", "AK"),
            ("REGISTRY_STORAGE_S3_SECRETKEY", "SK"),
            ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
            ("REGISTRY_STORAGE_S3_CHUNKSIZE", "5242880"),
            ("REGISTRY_STORAGE_REDIRECT_DISABLE", "true"),
            ("REGISTRY_DATABASE_PATH", "/var/lib/registry/metadata.sqlite"),
        ],
    )
    .unwrap();
    let s3 = c.object_store(&|_| None).unwrap().expect("s3 selected");
    assert!(c.storage.filesystem.is_none());
    assert_eq!((s3.bucket.as_str(), s3.path_style, s3.chunk_size, s3.redirect), ("b", true, 5 << 20, None));
    let e = load("storage:\n  s3: {}\n  filesystem: {}\n", &[]).unwrap_err();
    assert!(e.to_string().contains("not filesystem and s3"), "{e}");
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("auth:\n  htpasswd:\n    realm: x\n", "auth.htpasswd"),
        ("auth:\n  silly:\n    realm: x\n", "auth.silly"),
        ("auth:\n  issuer:\n    key: /k.pem\n", "auth.issuer"),
        ("http:\n  tls:\n    certificate: /x\n", "http.tls:"),
        ("storage:\n  s3:\n    bucket: b\n", "storage.s3.region:"),
        ("storage:\n  s3:\n    chunksize: lots\n", "storage.s3.chunksize"),
        ("storage:\n  oss:\n    bucket: b\n", "storage.oss.region:"),
        ("notifications:\n  endpoints: []\n", "notifications:"),
        ("http:\n  adr: :5000\n", "http.adr"),
        ("storage:\n  filesystem:\n    rootdir: /x\n", "storage.filesystem.rootdir"),
        ("bogus: 1\n", "bogus"),
        ("version: 0.2\n", "version:"),
        ("log:\n  level: loud\n", "log.level:"),
        ("storage:\n  maintenance:\n    uploadpurging:\n      age: 3 days\n", "storage.maintenance.uploadpurging.age"),
        ("http:\n  host: registry.test\n", "http.host:"),
        ("compatibility:\n  schema1:\n    enabled: true\n", "compatibility.schema1.enabled"),
        ("http:\n  headers:\n    \"bad header\": [x]\n", "http.headers.bad header"),
        ("catalog:\n  maxentries: -1\n", "catalog.maxentries"),
        ("gc:\n  grace: soon\n", "gc.grace"),
        ("gc:\n  enabled: true\n  interval: 0s\n", "gc.interval"),
        ("retention:\n  policies:\n    - repositories: []\n", "retention.policies[0].repositories"),
        ("retention:\n  policies:\n    - repositories: [\"a//b\"]\n", "retention.policies[0].repositories"),
        ("retention:\n  policies:\n    - repositories: [a]\n      keep: 3\n", "keep"),
        ("quotas:\n  - namespace: team\n    limit: 10 parsecs\n", "quotas[0].limit"),
        ("quotas:\n  - namespace: Team\n    limit: 1GiB\n", "quotas[0].namespace"),
        ("auth:\n  htpasswd:\n    realm: r\n    path: /x\n  access:\n    admins: [\"group:ops\"]\n", "admins"),
    ];
    for (yaml, key) in cases {
        let e = load(yaml, &[]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(key), "{yaml:?}: {msg}");
    }
}

#[test]
fn an_object_store_needs_to_be_told_where_its_index_lives() {
    let s3 = "storage:\n  s3:\n    region: r\n    regionendpoint: http://127.0.0.1:3900\n    bucket: b\n";
    let e = load(s3, &[]).unwrap_err().to_string();
    assert!(e.starts_with("database: storage.s3 keeps content in a bucket"), "{e}");
    assert!(e.contains("database.path") && e.contains("database.driver: postgres"), "{e}");
    load(&format!("{s3}database:\n  path: /var/lib/registry/metadata.sqlite\n"), &[]).unwrap();
    load(s3, &[("REGISTRY_DATABASE_PATH", "/data/m.sqlite")]).unwrap();
}

#[test]
fn environment_values_take_the_type_of_their_key() {
    let c = load(
        "",
        &[
            ("REGISTRY_HTTP_ADDR", "5300"),
            ("REGISTRY_HTTP_SECRET", "0123"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "yes"),
            ("REGISTRY_CATALOG_MAXENTRIES", "20"),
            ("REGISTRY_HTTP_RELATIVEURLS", "on"),
            ("REGISTRY_LOG_FIELDS_SERVICE", "123"),
        ],
    )
    .unwrap();
    assert_eq!(c.http.addr, "5300");
    assert_eq!(c.http.secret.as_ref().map(|s| s.expose()), Some("0123"), "text stays text, leading zero and all");
    assert!(c.storage.delete.enabled && c.http.relativeurls);
    assert_eq!(c.catalog.maxentries, 20);
    assert_eq!(c.log.fields["service"], serde_json::json!("123"));
    let e = load("", &[("REGISTRY_CATALOG_MAXENTRIES", "lots")]).unwrap_err().to_string();
    assert!(e.starts_with("catalog.maxentries: "), "{e}");
}

#[test]
fn yaml_1_1_booleans_are_read_as_distribution_reads_them() {
    let c = load(
        "storage:\n  delete:\n    enabled: yes\n  maintenance:\n    uploadpurging:\n      enabled: off\n    readonly:\n      enabled: On\nhttp:\n  relativeurls: Y\n",
        &[],
    )
    .unwrap();
    assert!(c.storage.delete.enabled);
    assert!(!c.storage.maintenance.uploadpurging.enabled);
    assert!(c.storage.maintenance.readonly.enabled);
    assert!(c.http.relativeurls);
    let e = load("storage:\n  delete:\n    enabled: maybe\n", &[]).unwrap_err().to_string();
    assert!(e.starts_with("storage.delete.enabled: "), "{e}");
}

#[test]
fn every_unsupported_key_is_named_in_one_error() {
    let e = load(
        "notifications:\n  endpoints: []\nproxy:\n  remoteurl: https://registry-1.example.test\nhttp:\n  tls:\n    certificate: /c\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("3 keys are not supported:"), "{e}");
    for key in ["notifications:", "proxy:", "http.tls:"] {
        assert!(e.contains(key), "{key} in {e}");
    }
    // redis, health and the debug server without metrics: accepted, with a warning each.
    let c = load(
        "redis:\n  addr: localhost:6379\nhealth:\n  storagedriver:\n    enabled: true\nhttp:\n  debug:\n    addr: :5001\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
    assert!(c.warnings.iter().all(|w| w.contains("accepted and ignored")), "{:?}", c.warnings);
    let e = load("http:\n  debug:\n    addr: :5001\n    prometheus:\n      enabled: true\n", &[]).unwrap_err();
    assert!(e.to_string().starts_with("http.debug.prometheus:"), "{e}");
}

#[test]
fn errors_never_show_type_names() {
    for yaml in [
        "storage:\n  filesystem: text\n",
        "http: [1, 2]\n",
        "gc:\n  grace: [1]\n",
        "catalog:\n  maxentries: {a: 1}\n",
        "auth:\n  htpasswd: 5\n",
        "retention:\n  policies: {a: 1}\n",
        "storage:\n  s3:\n    chunksize: [1]\n",
    ] {
        let e = format!("{:#}", load(yaml, &[]).unwrap_err());
        assert!(!e.contains("struct ") && !e.contains("enum ") && !e.contains("Config"), "{yaml:?}: {e}");
        assert!(!e.contains("u64") && !e.contains("usize"), "{yaml:?}: {e}");
    }
    let e = load("storage:\n  filesystem: text\n", &[]).unwrap_err().to_string();
    assert_eq!(e, "storage.filesystem: invalid type: string \"text\", expected a mapping of keys");
}

#[test]
fn connection_limits_and_berth_sections() {
    let d = load("", &[]).unwrap();
    assert_eq!(d.http.timeouts.firstbyte, Duration::from_secs(10));
    assert_eq!(d.http.limits.connectionsperclient, 256);
    assert!(d.uploads.automaticmount);
    let c = load(
        "http:\n  timeouts:\n    firstbyte: 2s\n    idle: 30s\n    bodyidle: 20s\n    minbodyrate: 0\n  limits:\n    connectionsperclient: 8\nuploads:\n  automaticmount: false\n",
        &[],
    )
    .unwrap();
    assert_eq!((c.http.timeouts.firstbyte, c.http.timeouts.idle), (Duration::from_secs(2), Duration::from_secs(30)));
    assert_eq!((c.http.timeouts.minbodyrate, c.http.limits.connectionsperclient), (0, 8));
    assert!(!c.uploads.automaticmount);
    let e = load("http:\n  timeouts:\n    idle: 99999999999999999999h\n", &[]).unwrap_err().to_string();
    assert!(e.starts_with("http.timeouts.idle: ") && e.contains("too long"), "{e}");
}

#[test]
fn lifecycle_keys_are_read() {
    let c = load(
        r#"
gc:
  enabled: true
  interval: 6h
  grace: 30m
  deleteuntagged: true
retention:
  interval: 12h
  policies:
    - repositories: ["ci/**"]
      keeplast: 20
      keeptags: ["release-*"]
      deleteuntagged: true
    - repositories: ["cache/**"]
      olderthan: 336h
quotas:
  - namespace: team-a/
    limit: 50GiB
  - namespace: team-b
    limit: 1000
"#,
        &[],
    )
    .unwrap();
    assert!(c.gc.enabled && c.gc.deleteuntagged);
    assert_eq!((c.gc.interval, c.gc.grace), (Duration::from_secs(6 * 3600), Duration::from_secs(1800)));
    let p = c.retention_policies().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!((p[0].keep_last, p[0].keep_tags.clone(), p[0].older_than), (Some(20), vec!["release-*".into()], None));
    assert_eq!(p[1].older_than, Some(Duration::from_secs(336 * 3600)));
    assert!(p[0].repositories[0].matches(&berth_types::RepoName::parse("ci/a/b").unwrap()));
    let q = c.quota_limits().unwrap();
    assert_eq!((q[0].namespace.as_str(), q[0].limit), ("team-a", 50 << 30));
    assert_eq!((q[1].namespace.as_str(), q[1].limit), ("team-b", 1000));
    let d = load("", &[]).unwrap();
    assert!(!d.gc.enabled);
    assert_eq!(d.gc.grace, Duration::from_secs(3600));
}

#[test]
fn data_dir_defaults() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| vars.iter().find(|(a, _)| *a == k).map(|(_, b)| b.to_string())
    };
    assert_eq!(default_data_dir(&env(&[("BERTH_DATA_DIR", "/d"), ("HOME", "/h")])), PathBuf::from("/d"));
    assert_eq!(default_data_dir(&env(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")])), PathBuf::from("/x/berth"));
    assert_eq!(default_data_dir(&env(&[("HOME", "/h")])), PathBuf::from("/h/.local/share/berth"));
    assert_eq!(default_data_dir(&env(&[])), PathBuf::from("berth-data"));
}

#[test]
fn database_driver_and_dsn() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.database.postgres_dsn(), None, "embedded SQLite by default");
    let c = load(
        "database:\n  driver: postgres\n  dsn: postgres://berth:s3cret@db.test:5432/berth\n  maxconnections: 5\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.database.postgres_dsn(), Some("postgres://berth:s3cret@db.test:5432/berth"));
    assert_eq!(c.database.max_connections(), 5);
    // From the environment, as distribution's keys are.
    let c = load(
        "",
        &[
            ("REGISTRY_DATABASE_DRIVER", "postgres"),
            ("REGISTRY_DATABASE_DSN", "postgresql://u:p%40ss@10.0.0.1:5433/b?sslmode=require"),
            ("REGISTRY_DATABASE_MAXCONNECTIONS", "50"),
        ],
    )
    .unwrap();
    assert_eq!(c.database.postgres_dsn(), Some("postgresql://u:p%40ss@10.0.0.1:5433/b?sslmode=require"));
    assert_eq!(c.database.max_connections(), 50);
    let c = load("database:\n  driver: postgres\n  dsn: postgres://x@h/db\n", &[]).unwrap();
    assert_eq!(c.database.max_connections(), 20);
    let c = load("database:\n  driver: postgres\n", &[("REGISTRY_DATABASE_DSN", "postgres://h/db")]).unwrap();
    assert_eq!(c.database.postgres_dsn(), Some("postgres://h/db"));
}

#[test]
fn database_errors_name_the_key_and_hide_the_password() {
    let err = |yaml: &str| load(yaml, &[]).unwrap_err().to_string();
    assert_eq!(err("database:\n  driver: mysql\n"), "database.driver: unknown driver \"mysql\" (sqlite, postgres)");
    assert!(err("database:\n  driver: postgres\n").starts_with("database.dsn: required with database.driver: postgres"));
    let e = err("database:\n  driver: postgres\n  dsn: \"host=db password=s3cret\"\n");
    assert!(e.starts_with("database.dsn: must be a URL") && !e.contains("s3cret"), "{e}");
    assert!(err("database:\n  dsn: postgres://h/db\n")
        .starts_with("database.dsn: only used with database.driver: postgres"));
    assert!(
        err("database:\n  driver: postgres\n  dsn: postgres://h/db\n  path: /x.sqlite\n").starts_with("database.path:")
    );
    assert!(err("database:\n  driver: postgres\n  dsn: postgres://h/db\n  maxconnections: 0\n")
        .starts_with("database.maxconnections:"));
    let c = load("database:\n  driver: postgres\n  dsn: postgres://berth:s3cret@db:5432/b?password=s3cret&x=1\n", &[])
        .unwrap();
    assert_eq!(c.database.redacted_dsn().unwrap(), "postgres://berth:***@db:5432/b?password=***&x=1");
    assert!(!format!("{c:?}").contains("s3cret"), "Debug output hides the password");
    assert_eq!(redact_dsn("postgres://berth@db/b"), "postgres://berth@db/b");
    assert_eq!(redact_dsn("postgres://db"), "postgres://db");
}

#[test]
fn secrets_come_from_files_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("s3-secret");
    std::fs::write(&key, "s3cret-from-a-file\n").unwrap();
    let dsn = dir.path().join("dsn");
    std::fs::write(&dsn, "postgres://berth:pw-in-file@127.0.0.1:5432/berth").unwrap();
    let yaml = format!(
        "storage:\n  s3:\n    accesskey: AK\n    secretkey_file: {}\n    region: r\n    regionendpoint: http://127.0.0.1:3900\n    bucket: b\n\
         database:\n  driver: postgres\n  dsn_file: {}\n",
        key.display(),
        dsn.display()
    );
    let c = load(&yaml, &[]).unwrap();
    let s3 = c.object_store(&|_| None).unwrap().unwrap();
    assert_eq!(s3.secret_key.expose(), "s3cret-from-a-file", "the trailing newline is dropped");
    assert_eq!(c.database.postgres_dsn(), Some("postgres://berth:pw-in-file@127.0.0.1:5432/berth"));
    let shown = format!("{s3:?} {:?}", c.storage.s3);
    assert!(!shown.contains("s3cret") && shown.contains("***"), "{shown}");

    let both = yaml.replace("    accesskey: AK\n", "    accesskey: AK\n    secretkey: inline\n");
    let e = load(&both, &[]).unwrap_err().to_string();
    assert_eq!(e, "storage.s3.secretkey and storage.s3.secretkey_file are both set: give one of them");
    let missing = format!("http:\n  secret_file: {}\n", dir.path().join("nope").display());
    let e = format!("{:#}", load(&missing, &[]).unwrap_err());
    assert!(e.starts_with("http.secret_file: reading "), "{e}");
    std::fs::write(dir.path().join("empty"), "\n").unwrap();
    let empty = format!("http:\n  secret_file: {}\n", dir.path().join("empty").display());
    assert!(load(&empty, &[]).unwrap_err().to_string().ends_with("is empty"));
    let e = load("http:\n  secret_file: [a]\n", &[]).unwrap_err().to_string();
    assert_eq!(e, "http.secret_file: must be the path of a file holding the value");
}

#[test]
fn trusted_proxies_are_ranges() {
    let c = load("http:\n  trustedproxies: [10.0.0.0/8, 192.0.2.7, \"fd00::/8\"]\n", &[]).unwrap();
    let t = c.trusted_proxies().unwrap();
    assert_eq!(t.len(), 3);
    assert!(t[0].contains("10.9.8.7".parse().unwrap()));
    assert!(load("", &[]).unwrap().trusted_proxies().unwrap().is_empty(), "none by default");
    let e = load("http:\n  trustedproxies: [10.0.0.0/40]\n", &[]).unwrap_err().to_string();
    assert_eq!(e, "http.trustedproxies[0]: \"10.0.0.0/40\": prefix must be 0 to 32");
}

const TWO: &str = r#"
version: 0.1
storage:
  delete:
    enabled: true
  filesystem:
    rootdirectory: /srv/registry/{registry}
auth:
  htpasswd:
    realm: Berth
    path: /etc/berth/htpasswd
gc:
  grace: 2h
registries:
  ci:
    hosts: [ci.example.test, "ci.example.test:5000"]
    retention:
      policies:
        - repositories: ["**"]
          keeplast: 50
  cache:
    hosts: [Cache.Example.Test]
    storage:
      delete:
        enabled: false
    auth:
      htpasswd:
        path: /etc/berth/cache.htpasswd
    quotas:
      - namespace: releases
        limit: 5GiB
default: ci
"#;

#[test]
fn registries_inherit_the_top_level_and_override_it_key_by_key() {
    let c = load(TWO, &[]).unwrap();
    assert_eq!(c.registries.len(), 2);
    assert_eq!(c.default_registry.as_deref(), Some("ci"));
    let ci = &c.registries[0];
    let cache = &c.registries[1];
    assert_eq!((ci.name.as_str(), cache.name.as_str()), ("ci", "cache"));
    assert_eq!(ci.hosts, ["ci.example.test", "ci.example.test:5000"]);
    assert_eq!(cache.hosts, ["cache.example.test"], "host names compare lowercase");
    assert_eq!(ci.config.fs_root(), Path::new("/srv/registry/ci"), "{{registry}} is the registry's name");
    assert_eq!(cache.config.fs_root(), Path::new("/srv/registry/cache"));
    assert!(ci.config.storage.delete.enabled);
    assert!(!cache.config.storage.delete.enabled, "a key set by the registry wins");
    let ht = |c: &Config| c.auth.htpasswd.clone().unwrap();
    assert_eq!(ht(&ci.config).path, Path::new("/etc/berth/htpasswd"));
    assert_eq!(ht(&cache.config).path, Path::new("/etc/berth/cache.htpasswd"));
    assert_eq!(ht(&cache.config).realm, "Berth", "the rest of a section is inherited");
    assert_eq!(ci.config.gc.grace, Duration::from_secs(7200));
    assert_eq!(ci.config.retention_policies().unwrap().len(), 1);
    assert!(cache.config.retention_policies().unwrap().is_empty());
    assert!(ci.config.quota_limits().unwrap().is_empty() && cache.config.quota_limits().unwrap().len() == 1);
    assert_eq!(c.select(Some("cache")).unwrap().1, Some("cache.example.test"));
    let e = c.select(None).unwrap_err().to_string();
    assert_eq!(e, "this configuration serves several registries (ci, cache): say which with --registry NAME");
    assert!(c.select(Some("nope")).unwrap_err().to_string().contains("not one of the registries (ci, cache)"));
    assert!(load("", &[]).unwrap().select(Some("ci")).is_err());
    assert!(load("", &[]).unwrap().registries.is_empty(), "without the key, one registry for every host");
}

#[test]
fn a_driver_or_auth_method_a_registry_names_replaces_the_inherited_one() {
    let yaml = r#"
storage:
  filesystem:
    rootdirectory: /srv/registry
auth:
  htpasswd:
    path: /etc/berth/htpasswd
registries:
  main:
    hosts: [main.example.test]
  mem:
    hosts: [mem.example.test]
    storage:
      inmemory: {}
    auth:
      token:
        realm: https://auth.example.test/token
        service: mem
        issuer: auth.example.test
        jwks: /etc/berth/jwks.json
"#;
    let c = load(yaml, &[]).unwrap();
    let mem = &c.registries[1].config;
    assert!(mem.storage.inmemory.is_some() && mem.storage.filesystem.is_none());
    assert!(mem.auth.token.is_some() && mem.auth.htpasswd.is_none());
    assert!(c.registries[0].config.auth.htpasswd.is_some());
}

#[test]
fn a_host_pattern_makes_one_registry_per_allowed_value() {
    let yaml = r#"
storage:
  filesystem:
    rootdirectory: /srv/registry/{registry}/{cluster}
registries:
  yt:
    hosts: ["registry.{cluster}.example.test"]
    vars:
      cluster: [hume, hahn, freud]
"#;
    let c = load(yaml, &[]).unwrap();
    let names: Vec<&str> = c.registries.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["yt.hume", "yt.hahn", "yt.freud"]);
    assert_eq!(c.registries[1].hosts, ["registry.hahn.example.test"]);
    assert_eq!(c.registries[1].config.fs_root(), Path::new("/srv/registry/yt/hahn"));
    assert_eq!(c.default_registry, None);
}

/// Two registries on one PostgreSQL database, each with its own store.
const PG_TWO: &str = "database: {driver: postgres, dsn: \"postgres://berth:pw@db.example.test/berth\"}\n\
    storage: {filesystem: {rootdirectory: \"/srv/{registry}\"}}\n\
    registries:\n  a:\n    hosts: [a.example.test]\n  b:\n    hosts: [b.example.test]\n";

#[test]
fn registries_share_a_postgres_database_each_in_its_own_schema() {
    let c = load(&format!("{PG_TWO}    database: {{schema: berth_b}}\n"), &[]).unwrap();
    let schemas: Vec<_> = c.units().iter().map(|(_, _, c)| c.database.schema.clone()).collect();
    assert_eq!(schemas, [None, Some("berth_b".to_owned())]);
    let c = load(&PG_TWO.replace("berth\"}", "berth\", schema: \"berth_{registry}\"}"), &[]).unwrap();
    let schemas: Vec<_> = c.units().iter().map(|(_, _, c)| c.database.schema.clone().unwrap()).collect();
    assert_eq!(schemas, ["berth_a", "berth_b"]);
    assert!(c.units().iter().all(|(_, _, c)| c.database.postgres_dsn().is_some()), "the DSN is inherited");
}

#[test]
fn each_registry_reads_its_own_secret_files() {
    let dir = tempfile::tempdir().unwrap();
    for c in ["hume", "hahn"] {
        std::fs::write(dir.path().join(format!("{c}-dsn")), format!("postgres://berth:pw-{c}@db.example.test/{c}\n"))
            .unwrap();
    }
    let yaml = format!(
        "storage: {{inmemory: {{}}}}\ndatabase: {{driver: postgres, dsn_file: \"{}/{{cluster}}-dsn\"}}\n\
         registries:\n  yt:\n    hosts: [\"registry.{{cluster}}.example.test\"]\n    vars: {{cluster: [hume, hahn]}}\n",
        dir.path().display()
    );
    let c = load(&yaml, &[]).unwrap();
    let dsns: Vec<_> = c.units().iter().map(|(_, _, c)| c.database.postgres_dsn().unwrap().to_owned()).collect();
    assert_eq!(
        dsns,
        ["postgres://berth:pw-hume@db.example.test/hume", "postgres://berth:pw-hahn@db.example.test/hahn"]
    );
    // A cluster whose file is missing is named.
    let e = format!("{:#}", load(&yaml.replace("hume, hahn", "hume, freud"), &[]).unwrap_err());
    assert!(e.contains("registry yt.freud: database.dsn_file: reading"), "{e}");
}

#[test]
fn registries_that_cannot_work_are_refused_with_the_key() {
    let cases: &[(&str, &str)] = &[
        ("registries:\n  ci:\n    hosts: [a.example.test]\n    log:\n      level: debug\n", "registries.ci.log: set once for the process, at the top level"),
        ("registries:\n  ci:\n    hosts: [a.example.test]\n    http:\n      addr: :5001\n", "registries.ci.http.addr: set once for the process"),
        ("registries:\n  ci:\n    storage: {inmemory: {}}\n", "registries.ci.hosts: say which host names it answers"),
        ("registries:\n  ci:\n    hosts: [\"r.{cluster}.example.test\"]\n    storage: {inmemory: {}}\n", "captures {cluster}: list its allowed values in registries.ci.vars.cluster"),
        ("registries:\n  ci:\n    hosts: [a.example.test]\n    vars: {cluster: [a]}\n    storage: {inmemory: {}}\n", "registries.ci.vars.cluster: no host pattern captures {cluster}"),
        ("registries:\n  ci:\n    hosts: [\"r.{c}.example.test\"]\n    vars: {c: [\"../etc\"]}\n    storage: {inmemory: {}}\n", "is not lowercase letters, digits and '-'"),
        ("registries:\n  ci:\n    hosts: [\"a b\"]\n    storage: {inmemory: {}}\n", "registries.ci.hosts[0]: \"a b\" is not a host name"),
        ("registries:\n  ci:\n    hosts: [a.example.test]\n    storage: {inmemory: {}}\ndefault: cache\n", "default: \"cache\" is not one of the registries (ci)"),
        ("default: ci\n", "default: names a registry, but there is no registries key"),
        ("registries:\n  a:\n    hosts: [a.example.test]\n  b:\n    hosts: [b.example.test]\n", "registries a and b share the store filesystem at"),
        ("registries:\n  a:\n    hosts: [a.example.test]\n    storage: {inmemory: {}}\n    gc: {interval: 0s, enabled: true}\n", "registry a: gc.interval: must be greater than zero"),
        ("registries: [a]\n", "registries: must map names to registries"),
        ("registries:\n  a:\n    hosts: [\"r.{user}.example.test\"]\n    vars: {user: [x]}\n    storage: {inmemory: {}}\n", "registries.a.vars.user: {user} is a placeholder"),
        (PG_TWO, "share the metadata database postgres postgres://berth:***@db.example.test/berth: give each its own database.path, database.dsn or database.schema"),
        ("database:\n  schema: ci\n", "database.schema: only used with database.driver: postgres"),
        ("database: {driver: postgres, dsn: \"postgres://db.example.test/b\", schema: \"ci;drop\"}\n", "database.schema: \"ci;drop\" is not a schema name"),
    ];
    for (yaml, want) in cases {
        let e = format!("{:#}", load(yaml, &[]).unwrap_err());
        assert!(e.contains(want), "{yaml}\n→ {e}\nwanted {want}");
    }
}

#[test]
fn the_configurations_of_docs_registries_md_load() {
    let doc = include_str!("../../../../docs/registries.md");
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().display().to_string();
    for name in [
        "berth-dsn",
        "s3-hume-access",
        "s3-hume-secret",
        "s3-hahn-access",
        "s3-hahn-secret",
        "s3-freud-access",
        "s3-freud-secret",
    ] {
        let value = if name == "berth-dsn" { "postgres://berth:pw@db.example.test/berth" } else { "example" };
        std::fs::write(dir.path().join(name), value).unwrap();
    }
    let blocks: Vec<&str> = doc.split("```yaml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert!(blocks.len() >= 4, "docs/registries.md shows its layouts");
    let mut registries = 0;
    for b in blocks {
        let yaml = b.replace("/run/secrets", &secrets);
        // A fragment to add at the top level is checked inside the layout before it.
        if !yaml.contains("registries:") {
            continue;
        }
        let c = load(&yaml, &[]).unwrap_or_else(|e| panic!("{e:#}\n{yaml}"));
        registries += c.units().len();
    }
    assert_eq!(registries, 2 + 2 + 3 + 2, "ci and cache, the shape, three clusters, the migration");
}
