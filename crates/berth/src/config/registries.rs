//! Berth's `registries:` key: several registries in one process, each chosen
//! by the host names it answers, each with its own storage, database, auth
//! and lifecycle. Top-level keys are the defaults every registry inherits;
//! a registry's own keys are merged over them. `{registry}` and each variable
//! a host pattern captures (`registry.{cluster}.example.test` with
//! `vars: {cluster: [a, b]}`) may be used in its values; a pattern makes one
//! registry per allowed value (`yt.a`, `yt.b`), so a name outside the
//! allow-list never reaches storage.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Context, Result};
use serde_yaml_ng::{Mapping, Value};

use super::Config;

/// One registry of a process serving several.
#[derive(Debug, Clone)]
pub struct VirtualRegistry {
    /// Its key under `registries`, with its captured values after dots (`yt.hume`).
    pub name: String,
    /// The host names it answers, lowercase, with or without a port.
    pub hosts: Vec<String>,
    /// Its whole configuration: the top level with its own keys merged over it.
    pub config: Config,
}

/// The keys a registry may set for itself; the rest belong to the process.
const OWN_KEYS: &[&str] = &[
    "hosts",
    "vars",
    "storage",
    "database",
    "auth",
    "gc",
    "retention",
    "quotas",
    "uploads",
    "catalog",
    "admin",
    "http",
];
/// Under `http`, what is the registry's own (the rest is the listener's).
const OWN_HTTP_KEYS: &[&str] = &["host", "relativeurls", "headers", "secret"];
/// Keys of which a section holds one; a registry naming one drops the others it inherits.
const EXCLUSIVE: &[(&str, &[&[&str]])] = &[
    ("storage", &[&["filesystem"], &["inmemory"], &["s3"], &["oss"]]),
    ("auth", &[&["token"], &["htpasswd", "issuer", "external"]]),
    ("database", &[&["path"], &["dsn", "dsn_file", "schema"]]),
];
/// Placeholders other parts fill per request, left alone by substitution.
const RESERVED_VARS: &[&str] = &["registry", "user", "password", "repository", "namespace", "action"];
/// The most registries one pattern may make.
const MAX_INSTANCES: usize = 256;

/// Takes `registries` and `default` out of the configuration's root.
pub(super) fn take(root: &mut Value) -> Result<Option<(Mapping, Option<String>)>> {
    let Some(map) = root.as_mapping_mut() else { return Ok(None) };
    let registries = map.remove("registries");
    let default = map.remove("default");
    let default = match default {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => bail!("default: must name one of the registries"),
    };
    match registries {
        None | Some(Value::Null) => {
            if default.is_some() {
                bail!("default: names a registry, but there is no registries key");
            }
            Ok(None)
        }
        Some(Value::Mapping(m)) if !m.is_empty() => Ok(Some((m, default))),
        Some(_) => bail!("registries: must map names to registries (registries: {{ci: {{hosts: [...]}}}})"),
    }
}

/// Builds every registry from the top level `base` (without `registries`)
/// and each registry's block; `default` must name one.
pub(super) fn build(base: &Value, registries: &Mapping, default: Option<&str>) -> Result<Vec<VirtualRegistry>> {
    let mut out: Vec<VirtualRegistry> = Vec::new();
    for (key, block) in registries {
        let name = key.as_str().ok_or_else(|| anyhow!("registries: names must be strings"))?;
        if !valid_word(name) {
            bail!("registries.{name}: a name is lowercase letters, digits and '-'");
        }
        let at = format!("registries.{name}");
        let block = block.as_mapping().ok_or_else(|| anyhow!("{at}: must be a mapping of keys"))?;
        for (k, v) in block {
            let k = k.as_str().unwrap_or("");
            if !OWN_KEYS.contains(&k) {
                bail!(
                    "{at}.{k}: set once for the process, at the top level (a registry may set {})",
                    OWN_KEYS.join(", ")
                );
            }
            if k == "http" {
                for hk in v.as_mapping().into_iter().flat_map(|m| m.keys()) {
                    let hk = hk.as_str().unwrap_or("");
                    if !OWN_HTTP_KEYS.contains(&hk) {
                        bail!(
                            "{at}.http.{hk}: set once for the process, at the top level (a registry may set http.{})",
                            OWN_HTTP_KEYS.join(", http.")
                        );
                    }
                }
            }
        }
        let hosts: Vec<String> = match block.get("hosts") {
            None => Vec::new(),
            Some(v) => serde_yaml_ng::from_value(v.clone()).map_err(|_| {
                anyhow!("{at}.hosts: a list of host names (registry.example.test, \"registry.example.test:5000\")")
            })?,
        };
        let vars: BTreeMap<String, Vec<String>> = match block.get("vars") {
            None => BTreeMap::new(),
            Some(v) => serde_yaml_ng::from_value(v.clone()).map_err(|_| {
                anyhow!("{at}.vars: maps each variable to its allowed values (vars: {{cluster: [a, b]}})")
            })?,
        };
        if hosts.is_empty() && default != Some(name) {
            bail!("{at}.hosts: say which host names it answers (or make it the default)");
        }
        let used = check_hosts(&at, &hosts, &vars)?;
        for (var, values) in &vars {
            if RESERVED_VARS.contains(&var.as_str()) {
                bail!("{at}.vars.{var}: {{{var}}} is a placeholder of access rules and identity calls; name the variable otherwise");
            }
            if !used.contains(var) {
                bail!("{at}.vars.{var}: no host pattern captures {{{var}}}");
            }
            if values.is_empty() {
                bail!("{at}.vars.{var}: list the values allowed");
            }
            if let Some(bad) = values.iter().find(|v| !valid_word(v)) {
                bail!("{at}.vars.{var}: {bad:?} is not lowercase letters, digits and '-'");
            }
        }
        let mut own = block.clone();
        own.remove("hosts");
        own.remove("vars");
        for assignment in assignments(&vars).with_context(|| at.clone())? {
            let mut subst: Vec<(String, String)> = vec![("registry".to_owned(), name.to_owned())];
            subst.extend(assignment.iter().map(|(k, v)| (k.clone(), v.clone())));
            let instance = std::iter::once(name.to_owned())
                .chain(assignment.iter().map(|(_, v)| v.clone()))
                .collect::<Vec<_>>()
                .join(".");
            let mut merged = base.clone();
            merge(&mut merged, &Value::Mapping(own.clone()), "");
            substitute(&mut merged, &subst);
            let config = Config::from_value(merged).with_context(|| format!("registry {instance}"))?;
            let hosts = hosts.iter().map(|h| replace_vars(h, &subst).to_ascii_lowercase()).collect();
            out.push(VirtualRegistry { name: instance, hosts, config });
        }
    }
    if let Some(d) = default {
        if !out.iter().any(|r| r.name == d) {
            let names: Vec<&str> = out.iter().map(|r| r.name.as_str()).collect();
            bail!("default: {d:?} is not one of the registries ({})", names.join(", "));
        }
    }
    check_apart(&out)?;
    Ok(out)
}

fn valid_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks the host names and patterns; returns the variables they capture.
fn check_hosts(at: &str, hosts: &[String], vars: &BTreeMap<String, Vec<String>>) -> Result<BTreeSet<String>> {
    let mut used = BTreeSet::new();
    for (i, h) in hosts.iter().enumerate() {
        let mut rest = h.as_str();
        let mut plain = String::new();
        while let Some(open) = rest.find('{') {
            plain.push_str(&rest[..open]);
            let close = rest[open..].find('}').ok_or_else(|| anyhow!("{at}.hosts[{i}]: {h:?} has an unclosed {{"))?;
            let var = &rest[open + 1..open + close];
            if !vars.contains_key(var) {
                bail!("{at}.hosts[{i}]: {h:?} captures {{{var}}}: list its allowed values in {at}.vars.{var}");
            }
            used.insert(var.to_owned());
            plain.push('x');
            rest = &rest[open + close + 1..];
        }
        plain.push_str(rest);
        let ok = !plain.is_empty()
            && plain.len() <= 255
            && plain.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            && !plain.starts_with(':');
        if !ok {
            bail!("{at}.hosts[{i}]: {h:?} is not a host name with an optional port");
        }
    }
    Ok(used)
}

/// Every combination of the variables' values (one empty one without variables).
fn assignments(vars: &BTreeMap<String, Vec<String>>) -> Result<Vec<Vec<(String, String)>>> {
    let mut all: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (var, values) in vars {
        let mut next = Vec::new();
        for a in &all {
            for v in values {
                let mut b = a.clone();
                b.push((var.clone(), v.clone()));
                next.push(b);
            }
        }
        if next.len() > MAX_INSTANCES {
            bail!("vars: at most {MAX_INSTANCES} registries from one pattern");
        }
        all = next;
    }
    Ok(all)
}

/// Merges `over` into `into`: mappings key by key, anything else replaced.
/// A section's exclusive keys (a storage driver, an auth method) drop the
/// ones they exclude.
fn merge(into: &mut Value, over: &Value, path: &str) {
    match (into, over) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            if let Some((_, groups)) = EXCLUSIVE.iter().find(|(p, _)| *p == path) {
                for g in groups.iter() {
                    if g.iter().any(|k| b.contains_key(*k)) {
                        let others = groups.iter().filter(|o| *o != g).flat_map(|o| o.iter());
                        for k in others {
                            a.remove(*k);
                        }
                    }
                }
            }
            for (k, v) in b {
                let key = k.as_str().unwrap_or("");
                let child = if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
                match a.get_mut(k) {
                    Some(existing) if existing.is_mapping() && v.is_mapping() => merge(existing, v, &child),
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (into, over) => *into = over.clone(),
    }
}

/// Replaces `{var}` in every string value.
fn substitute(v: &mut Value, subst: &[(String, String)]) {
    match v {
        Value::String(s) if s.contains('{') => *s = replace_vars(s, subst),
        Value::Mapping(m) => m.iter_mut().for_each(|(_, v)| substitute(v, subst)),
        Value::Sequence(items) => items.iter_mut().for_each(|v| substitute(v, subst)),
        _ => {}
    }
}

fn replace_vars(s: &str, subst: &[(String, String)]) -> String {
    subst.iter().fold(s.to_owned(), |s, (k, v)| s.replace(&format!("{{{k}}}"), v))
}

/// Registries never share a store or a database: each must say where its own are.
fn check_apart(registries: &[VirtualRegistry]) -> Result<()> {
    let mut stores: BTreeMap<String, &str> = BTreeMap::new();
    let mut databases: BTreeMap<String, &str> = BTreeMap::new();
    for r in registries {
        let hint = "give each its own (rootdirectory: /srv/registry/{registry}, or bucket/rootdirectory per registry)";
        if let Some(store) = r.config.store_identity() {
            if let Some(other) = stores.insert(store.clone(), &r.name) {
                bail!("registries {other} and {} share the store {store}: {hint}", r.name);
            }
        }
        if let Some((db, shown)) = r.config.database_identity() {
            if let Some(other) = databases.insert(db, &r.name) {
                bail!(
                    "registries {other} and {} share the metadata database {shown}: give each its own database.path, database.dsn or database.schema (schema: berth_{{registry}})",
                    r.name
                );
            }
        }
    }
    Ok(())
}

impl Config {
    /// Where this configuration keeps content, as a name to compare; None in memory.
    fn store_identity(&self) -> Option<String> {
        let s = &self.storage;
        if let Some(s3) = &s.s3 {
            let at = s3.regionendpoint.clone().or_else(|| s3.region.clone()).unwrap_or_default();
            return Some(format!(
                "s3 bucket {} at {at} under {}",
                s3.bucket.clone().unwrap_or_default(),
                s3.rootdirectory.clone().unwrap_or_default()
            ));
        }
        if let Some(oss) = &s.oss {
            let at = oss.endpoint.clone().unwrap_or_default();
            return Some(format!(
                "oss bucket {} at {at} under {}",
                oss.bucket.clone().unwrap_or_default(),
                oss.rootdirectory.clone().unwrap_or_default()
            ));
        }
        if s.inmemory.is_some() {
            return None;
        }
        Some(format!("filesystem at {}", self.fs_root().display()))
    }

    /// Which metadata database this configuration opens: a name to compare,
    /// and one to show (without a password).
    fn database_identity(&self) -> Option<(String, String)> {
        if let Some(dsn) = self.database.postgres_dsn() {
            let schema = self.database.schema.as_deref().unwrap_or("public");
            return Some((format!("{dsn} {schema}"), format!("postgres {}", self.database.shown_postgres())));
        }
        self.sqlite_path().map(|p| (p.display().to_string(), format!("sqlite {}", p.display())))
    }
}

impl Config {
    /// The registries this configuration serves: each one's name (None for a
    /// configuration without `registries`, one registry for every host), its
    /// host names and its configuration.
    pub fn units(&self) -> Vec<(Option<&str>, &[String], &Config)> {
        if self.registries.is_empty() {
            return vec![(None, &[][..], self)];
        }
        self.registries.iter().map(|r| (Some(r.name.as_str()), &r.hosts[..], &r.config)).collect()
    }

    /// The registry a maintenance command works on (`--registry NAME`), and the host
    /// name that selects it on a running server.
    pub fn select(&self, name: Option<&str>) -> Result<(&Config, Option<&str>)> {
        let names = || self.registries.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ");
        match (name, self.registries.is_empty()) {
            (None, true) => Ok((self, None)),
            (Some(n), true) => bail!("--registry {n}: this configuration has no registries key (it is one registry)"),
            // One registry: the commands that worked before `registries` was added work on.
            (None, false) if self.registries.len() == 1 => {
                let r = &self.registries[0];
                Ok((&r.config, r.hosts.first().map(String::as_str)))
            }
            (None, false) => {
                bail!("this configuration serves several registries ({}): say which with --registry NAME", names())
            }
            (Some(n), false) => match self.registries.iter().find(|r| r.name == n) {
                Some(r) => Ok((&r.config, r.hosts.first().map(String::as_str))),
                None => bail!("--registry {n}: not one of the registries ({})", names()),
            },
        }
    }
}
