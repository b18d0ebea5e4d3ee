//! Secret keys may be given in a file instead (`secretkey_file: /run/secrets/s3`,
//! as container secrets are mounted): the file is read at start, its trailing
//! newline dropped, and its content used as the key's value. Every such value
//! is a `Secret`, printed as `***`.

use anyhow::{bail, Context, Result};
use serde_yaml_ng::Value;

/// The keys that hold secrets and accept a `<key>_file` beside them.
pub(crate) const SECRET_KEYS: &[&str] = &[
    "storage.s3.accesskey",
    "storage.s3.secretkey",
    "storage.s3.sessiontoken",
    "storage.oss.accesskeyid",
    "storage.oss.accesskeysecret",
    "database.dsn",
    "http.secret",
];

fn mapping_at<'v>(root: &'v mut Value, path: &str) -> Option<&'v mut serde_yaml_ng::Mapping> {
    path.split('.').try_fold(root, |v, k| v.as_mapping_mut()?.get_mut(Value::String(k.to_owned())))?.as_mapping_mut()
}

/// Replaces every `<key>_file` of [`SECRET_KEYS`] by `<key>` with the file's content.
/// `template`: the top level under `registries`; its files are left to each
/// registry to read (their `_file` keys are only dropped here).
pub(crate) fn read_secret_files(root: &mut Value, template: bool) -> Result<()> {
    for key in SECRET_KEYS {
        let Some((parent, leaf)) = key.rsplit_once('.') else { continue };
        let Some(section) = mapping_at(root, parent) else { continue };
        let Some(file) = section.remove(Value::String(format!("{leaf}_file"))) else { continue };
        if file.is_null() || template {
            continue;
        }
        let Some(path) = file.as_str().filter(|p| !p.trim().is_empty()) else {
            bail!("{key}_file: must be the path of a file holding the value");
        };
        if section.get(Value::String(leaf.to_owned())).is_some_and(|v| !v.is_null()) {
            bail!("{key} and {key}_file are both set: give one of them");
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("{key}_file: reading {path}"))?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            bail!("{key}_file: {path} is empty");
        }
        section.insert(Value::String(leaf.to_owned()), Value::String(value.to_owned()));
    }
    Ok(())
}
