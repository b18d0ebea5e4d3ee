//! `storage.s3` (distribution's keys) and `storage.oss` (Alibaba OSS through
//! its S3-compatible API), both turned into one [`S3Config`] for the driver.

use std::time::Duration;

use anyhow::{bail, Result};
use berth_storage::s3::{S3Config, MIN_CHUNK_SIZE};
use berth_types::secret::Secret;
use serde::Deserialize;

/// How long a presigned blob URL stays valid (distribution: 20 minutes).
const REDIRECT_TTL: Duration = Duration::from_secs(20 * 60);

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    #[serde(default)]
    pub accesskey: Option<String>,
    #[serde(default)]
    pub secretkey: Option<Secret>,
    #[serde(default)]
    pub sessiontoken: Option<Secret>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub regionendpoint: Option<String>,
    #[serde(default)]
    pub forcepathstyle: Option<bool>,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub encrypt: Option<bool>,
    #[serde(default)]
    pub keyid: Option<String>,
    #[serde(default)]
    pub secure: Option<bool>,
    #[serde(default)]
    pub skipverify: Option<bool>,
    #[serde(default)]
    pub v4auth: Option<bool>,
    #[serde(default)]
    pub chunksize: Option<u64>,
    #[serde(default)]
    pub multipartcopychunksize: Option<u64>,
    #[serde(default)]
    pub multipartcopymaxconcurrency: Option<u64>,
    #[serde(default)]
    pub multipartcopythresholdsize: Option<u64>,
    #[serde(default)]
    pub rootdirectory: Option<String>,
    #[serde(default)]
    pub storageclass: Option<String>,
    #[serde(default)]
    pub objectacl: Option<String>,
    #[serde(default)]
    pub useragent: Option<String>,
    #[serde(default)]
    pub usedualstack: Option<bool>,
    #[serde(default)]
    pub accelerate: Option<bool>,
    /// The AWS SDK's log level in distribution; Berth logs through its own.
    #[serde(default)]
    #[allow(dead_code)] // accepted for compatibility
    pub loglevel: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OssSection {
    #[serde(default)]
    pub accesskeyid: Option<String>,
    #[serde(default)]
    pub accesskeysecret: Option<Secret>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub internal: Option<bool>,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub encrypt: Option<bool>,
    #[serde(default)]
    pub encryptionkeyid: Option<String>,
    #[serde(default)]
    pub secure: Option<bool>,
    #[serde(default)]
    pub chunksize: Option<u64>,
    #[serde(default)]
    pub rootdirectory: Option<String>,
}

/// `host[:port]` or a URL; without a scheme, `secure` chooses it.
fn endpoint_url(key: &str, endpoint: &str, secure: bool) -> Result<String> {
    let e = endpoint.trim().trim_end_matches('/');
    if e.is_empty() {
        bail!("{key}: empty endpoint");
    }
    let url = if e.contains("://") { e.to_owned() } else { format!("{}://{e}", if secure { "https" } else { "http" }) };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("{key}: {endpoint:?} is not an http or https endpoint");
    }
    Ok(url)
}

/// The certificates of `AWS_CA_BUNDLE`, as AWS's SDKs (and so distribution)
/// read them: a private CA of an on-premises store. Read when the driver is
/// built, not when the configuration is checked.
pub fn ca_bundle(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Vec<u8>>> {
    match env("AWS_CA_BUNDLE").filter(|p| !p.is_empty()) {
        Some(p) => std::fs::read(&p).map(Some).map_err(|e| anyhow::anyhow!("AWS_CA_BUNDLE: reading {p}: {e}")),
        None => Ok(None),
    }
}

/// The regional endpoint of AWS S3 for `region` (product behaviour: the
/// default when `regionendpoint` is absent).
fn aws_endpoint(region: &str, secure: bool) -> String {
    let scheme = if secure { "https" } else { "http" };
    let domain = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    format!("{scheme}://s3.{region}.{domain}")
}

/// The endpoint of Alibaba OSS for `region` (`oss-cn-beijing`), its
/// `-internal` one inside Alibaba's network, as distribution's oss driver
/// derives them.
fn oss_endpoint(region: &str, internal: bool, secure: bool) -> String {
    let scheme = if secure { "https" } else { "http" };
    let suffix = if internal { "-internal" } else { "" };
    format!("{scheme}://{region}{suffix}.aliyuncs.com")
}

/// A part size within S3's limits.
fn part_size(key: &str, value: Option<u64>, default: u64) -> Result<u64> {
    let n = value.unwrap_or(default);
    if n < MIN_CHUNK_SIZE as u64 || n > 5 << 30 {
        bail!("{key}: {n} is outside {MIN_CHUNK_SIZE}..=5GiB (S3's part sizes)");
    }
    Ok(n)
}

/// A key that must be set and not empty.
fn required(key: &str, value: &Option<String>, what: &str) -> Result<String> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v.to_owned()),
        _ => bail!("{key}: {what}"),
    }
}

fn root_prefix(root: Option<&str>) -> String {
    root.unwrap_or_default().trim_matches('/').to_owned()
}

fn env_or(v: Option<&String>, var: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    v.cloned().filter(|s| !s.is_empty()).or_else(|| env(var).filter(|s| !s.is_empty()))
}

fn secret_env_or(v: Option<&Secret>, var: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<Secret> {
    v.cloned().filter(|s| !s.is_empty()).or_else(|| env(var).filter(|s| !s.is_empty()).map(Secret::from))
}

fn user_agent(custom: Option<&str>) -> String {
    custom.map(str::to_owned).unwrap_or_else(|| format!("berth/{}", env!("CARGO_PKG_VERSION")))
}

impl S3Section {
    /// The driver configuration; `env` supplies the AWS_* credentials when
    /// the keys are not in the file.
    pub fn driver_config(&self, redirect: bool, env: &dyn Fn(&str) -> Option<String>) -> Result<S3Config> {
        let bucket = required("storage.s3.bucket", &self.bucket, "a bucket is required")?;
        let region = required("storage.s3.region", &self.region, "a region is required (for Garage: its s3_region)")?;
        if self.accelerate == Some(true) || self.usedualstack == Some(true) {
            bail!("storage.s3: accelerate and usedualstack endpoints are not derived: set regionendpoint to the endpoint to use");
        }
        let secure = self.secure.unwrap_or(true);
        // As distribution: a regionendpoint (MinIO, Garage, Ceph) is addressed
        // path-style unless forcepathstyle says otherwise; without one, the
        // region's AWS endpoint, virtual-hosted.
        let (endpoint, path_style) = match self.regionendpoint.as_deref().filter(|e| !e.trim().is_empty()) {
            Some(e) => (endpoint_url("storage.s3.regionendpoint", e, secure)?, self.forcepathstyle.unwrap_or(true)),
            None => (aws_endpoint(&region, secure), self.forcepathstyle.unwrap_or(false)),
        };
        if self.v4auth == Some(false) {
            tracing::warn!("storage.s3.v4auth: false is ignored: requests are signed with Signature Version 4");
        }
        let access_key = env_or(self.accesskey.as_ref(), "AWS_ACCESS_KEY_ID", env);
        let secret_key = secret_env_or(self.secretkey.as_ref(), "AWS_SECRET_ACCESS_KEY", env);
        let (Some(access_key), Some(secret_key)) = (access_key, secret_key) else {
            bail!("storage.s3: accesskey and secretkey are required (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");
        };
        let chunk_size = part_size("storage.s3.chunksize", self.chunksize, 10 << 20)?;
        let copy_chunk = part_size("storage.s3.multipartcopychunksize", self.multipartcopychunksize, 32 << 20)?;
        let copy_threshold = self.multipartcopythresholdsize.unwrap_or(32 << 20).min(5 << 30);
        let copy_concurrency = self.multipartcopymaxconcurrency.unwrap_or(100).clamp(1, 1000) as usize;
        let storage_class = match self.storageclass.as_deref() {
            None => Some("STANDARD".to_owned()),
            Some(c) if c.eq_ignore_ascii_case("none") => None,
            Some(c) => Some(c.to_owned()),
        };
        let mut extra_headers = Vec::new();
        if let Some(acl) = self.objectacl.as_deref().filter(|a| !a.is_empty() && *a != "private") {
            extra_headers.push(("x-amz-acl".to_owned(), acl.to_owned()));
        }
        Ok(S3Config {
            endpoint,
            region,
            bucket,
            access_key,
            secret_key,
            session_token: secret_env_or(self.sessiontoken.as_ref(), "AWS_SESSION_TOKEN", env),
            root: root_prefix(self.rootdirectory.as_deref()),
            path_style,
            skip_verify: self.skipverify.unwrap_or(false),
            ca_bundle: None,
            chunk_size: chunk_size as usize,
            copy_threshold,
            copy_chunk_size: copy_chunk,
            copy_concurrency,
            storage_class,
            encrypt: self.encrypt.unwrap_or(false).then(|| self.keyid.clone().filter(|k| !k.is_empty())),
            extra_headers,
            redirect: redirect.then_some(REDIRECT_TTL),
            user_agent: user_agent(self.useragent.as_deref()),
        })
    }
}

impl OssSection {
    /// OSS through its S3-compatible API: virtual-hosted bucket addressing
    /// at `endpoint`, server-side encryption as S3 asks for it.
    pub fn driver_config(&self, redirect: bool, env: &dyn Fn(&str) -> Option<String>) -> Result<S3Config> {
        let bucket = required("storage.oss.bucket", &self.bucket, "a bucket is required")?;
        let region = required("storage.oss.region", &self.region, "a region is required")?;
        let secure = self.secure.unwrap_or(true);
        let endpoint = match self.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
            Some(e) => endpoint_url("storage.oss.endpoint", e, secure)?,
            None => oss_endpoint(&region, self.internal.unwrap_or(false), secure),
        };
        let access_key = env_or(self.accesskeyid.as_ref(), "OSS_ACCESS_KEY_ID", env);
        let secret_key = secret_env_or(self.accesskeysecret.as_ref(), "OSS_ACCESS_KEY_SECRET", env);
        let (Some(access_key), Some(secret_key)) = (access_key, secret_key) else {
            bail!("storage.oss: accesskeyid and accesskeysecret are required");
        };
        let chunk_size = part_size("storage.oss.chunksize", self.chunksize, 10 << 20)?;
        Ok(S3Config {
            endpoint,
            region,
            bucket,
            access_key,
            secret_key,
            session_token: None,
            root: root_prefix(self.rootdirectory.as_deref()),
            path_style: false,
            skip_verify: false,
            ca_bundle: None,
            chunk_size: chunk_size as usize,
            copy_threshold: 32 << 20,
            copy_chunk_size: 32 << 20,
            copy_concurrency: 16,
            storage_class: None,
            encrypt: self.encrypt.unwrap_or(false).then(|| self.encryptionkeyid.clone().filter(|k| !k.is_empty())),
            extra_headers: Vec::new(),
            redirect: redirect.then_some(REDIRECT_TTL),
            user_agent: user_agent(None),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn section(yaml: &str) -> S3Section {
        super::super::lenient::from_yaml(yaml).expect("valid section")
    }

    #[test]
    fn distribution_keys_map_onto_the_driver() {
        let s = section(
            "accesskey: AK\nsecretkey: SK\nregion: garage\nregionendpoint: http://127.0.0.1:3900\n\
             forcepathstyle: true\nbucket: reg\nrootdirectory: /base/dir/\nsecure: false\nv4auth: true\n\
             chunksize: '6291456'\nmultipartcopythresholdsize: 67108864\nstorageclass: REDUCED_REDUNDANCY\n\
             encrypt: 'true'\nkeyid: k1\nobjectacl: bucket-owner-full-control\nloglevel: debug\n",
        );
        let c = s.driver_config(true, &no_env).unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.region.as_str(), c.bucket.as_str()),
            ("http://127.0.0.1:3900", "garage", "reg")
        );
        assert_eq!((c.root.as_str(), c.path_style, c.chunk_size), ("base/dir", true, 6 << 20));
        assert_eq!((c.copy_threshold, c.storage_class.as_deref()), (64 << 20, Some("REDUCED_REDUNDANCY")));
        assert_eq!(c.encrypt, Some(Some("k1".to_owned())));
        assert_eq!(c.extra_headers, vec![("x-amz-acl".to_owned(), "bucket-owner-full-control".to_owned())]);
        assert_eq!(c.redirect, Some(REDIRECT_TTL));
        assert_eq!(s.driver_config(false, &no_env).unwrap().redirect, None);
    }

    #[test]
    fn endpoint_scheme_follows_secure_and_credentials_come_from_the_environment() {
        let s = section("region: r\nregionendpoint: 127.0.0.1:3900\nbucket: b\nstorageclass: NONE\n");
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AK".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".to_owned()),
            _ => None,
        };
        let c = s.driver_config(false, &env).unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.access_key.as_str(), c.storage_class),
            ("https://127.0.0.1:3900", "AK", None)
        );
        let e = s.driver_config(false, &no_env).unwrap_err().to_string();
        assert!(e.contains("accesskey"), "{e}");
        assert_eq!(ca_bundle(&env).unwrap(), None);
        let missing_ca = |k: &str| (k == "AWS_CA_BUNDLE").then(|| "/nonexistent/ca.pem".to_owned());
        let e = ca_bundle(&missing_ca).unwrap_err().to_string();
        assert!(e.starts_with("AWS_CA_BUNDLE: reading /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let base = "accesskey: a\nsecretkey: s\nregion: r\nregionendpoint: http://127.0.0.1:1\nbucket: b\n";
        for (extra, key) in [
            ("chunksize: 1024\n", "storage.s3.chunksize"),
            ("accelerate: true\n", "storage.s3:"),
            ("multipartcopychunksize: 10\n", "storage.s3.multipartcopychunksize"),
        ] {
            let e = section(&format!("{base}{extra}")).driver_config(false, &no_env).unwrap_err().to_string();
            assert!(e.starts_with(key), "{extra}: {e}");
        }
        for (yaml, key) in [
            ("region: r\nregionendpoint: http://x\n", "storage.s3.bucket"),
            ("bucket: b\nregionendpoint: http://x\n", "storage.s3.region"),
            ("bucket: b\nregion: r\nregionendpoint: ftp://x\n", "storage.s3.regionendpoint"),
        ] {
            let e = section(&format!("accesskey: a\nsecretkey: s\n{yaml}")).driver_config(false, &no_env).unwrap_err();
            assert!(e.to_string().starts_with(key), "{yaml}: {e}");
        }
        assert!(super::super::lenient::from_yaml::<S3Section>("secure: maybe\n").is_err());
    }

    #[test]
    fn addressing_follows_distribution() {
        let base = "accesskey: a\nsecretkey: s\nbucket: b\n";
        let c = |extra: &str| section(&format!("{base}{extra}")).driver_config(false, &no_env).unwrap();
        // A regionendpoint (MinIO, Garage, an in-cluster store) is addressed path-style...
        let x = c("region: garage\nregionendpoint: http://minio.example.test:9000\n");
        assert_eq!((x.endpoint.as_str(), x.path_style), ("http://minio.example.test:9000", true));
        // ...unless forcepathstyle: false says otherwise.
        let x = c("region: garage\nregionendpoint: http://s3.example.test\nforcepathstyle: false\n");
        assert!(!x.path_style);
        // Without one, the region's AWS endpoint, virtual-hosted.
        let x = c("region: eu-west-1\n");
        assert_eq!((x.endpoint.as_str(), x.path_style), ("https://s3.eu-west-1.amazonaws.com", false));
        let x = c("region: cn-north-1\nsecure: false\n");
        assert_eq!(x.endpoint, "http://s3.cn-north-1.amazonaws.com.cn");
        let x = c("region: us-east-1\nforcepathstyle: 'yes'\n");
        assert!(x.path_style);
    }

    #[test]
    fn oss_maps_onto_virtual_hosted_s3() {
        let o: OssSection = super::super::lenient::from_yaml(
            "accesskeyid: AK\naccesskeysecret: SK\nregion: oss-r\nendpoint: oss.internal.test\nbucket: b\n\
             encrypt: true\nrootdirectory: /r\nchunksize: 5242880\n",
        )
        .unwrap();
        let c = o.driver_config(true, &no_env).unwrap();
        assert_eq!((c.endpoint.as_str(), c.path_style, c.root.as_str()), ("https://oss.internal.test", false, "r"));
        assert_eq!((c.encrypt, c.chunk_size), (Some(None), 5 << 20));
        // Without an endpoint, the region's, as distribution's oss driver derives it.
        let c = OssSection { endpoint: None, ..o.clone() }.driver_config(true, &no_env).unwrap();
        assert_eq!((c.endpoint.as_str(), c.path_style), ("https://oss-r.aliyuncs.com", false));
        let c = OssSection { endpoint: None, internal: Some(true), secure: Some(false), ..o }
            .driver_config(true, &no_env)
            .unwrap();
        assert_eq!(c.endpoint, "http://oss-r-internal.aliyuncs.com");
    }
}
