//! `REGISTRY_*` environment overrides applied to the configuration tree, as distribution
//! applies them.

use anyhow::{anyhow, Result};
use serde_yaml_ng::{Mapping, Value};

pub(crate) fn lookup<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(root, |v, k| v.as_mapping().and_then(|m| m.get(Value::String(k.to_owned()))))
}

/// Applies `REGISTRY_A_B_C=value` as `a.b.c: value` (value read as YAML),
/// as distribution does. `REGISTRY_STORAGE=<driver>` selects the driver.
pub fn apply_env(root: &mut Value, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
    let mut vars: Vec<(Vec<String>, String)> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("REGISTRY_")?;
            let path: Vec<String> = rest.split('_').map(str::to_ascii_lowercase).collect();
            (!path.iter().any(String::is_empty)).then_some((path, v))
        })
        .collect();
    // Shorter paths first, so a driver selection comes before its parameters.
    vars.sort();
    vars.sort_by_key(|(p, _)| p.len());
    for (path, raw) in vars {
        if path == ["storage"] {
            let driver = raw.trim().to_ascii_lowercase();
            let storage = ensure_mapping(root, &["storage".to_owned()])?;
            for d in ["filesystem", "inmemory", "s3", "oss", "gcs", "azure", "swift"] {
                if d != driver {
                    storage.remove(Value::String(d.to_owned()));
                }
            }
            storage.entry(Value::String(driver)).or_insert_with(|| Value::Mapping(Mapping::new()));
            continue;
        }
        // Mappings and lists are read as YAML; a scalar stays text, and the
        // key's type decides how it is read (as distribution's Go YAML does).
        let value = match serde_yaml_ng::from_str::<Value>(&raw) {
            Ok(v @ (Value::Mapping(_) | Value::Sequence(_) | Value::Null)) => v,
            _ => Value::String(raw.clone()),
        };
        let (last, parents) = path.split_last().ok_or_else(|| anyhow!("empty variable"))?;
        let parent = ensure_mapping(root, parents)?;
        parent.insert(Value::String(last.clone()), value);
    }
    Ok(())
}

pub(crate) fn ensure_mapping<'v>(root: &'v mut Value, path: &[String]) -> Result<&'v mut Mapping> {
    let mut cur = root;
    for k in path {
        if !cur.is_mapping() {
            *cur = Value::Mapping(Mapping::new());
        }
        let m = cur.as_mapping_mut().ok_or_else(|| anyhow!("not a mapping"))?;
        cur = m.entry(Value::String(k.clone())).or_insert_with(|| Value::Mapping(Mapping::new()));
        if cur.is_null() {
            *cur = Value::Mapping(Mapping::new());
        }
    }
    if !cur.is_mapping() {
        *cur = Value::Mapping(Mapping::new());
    }
    cur.as_mapping_mut().ok_or_else(|| anyhow!("not a mapping"))
}
