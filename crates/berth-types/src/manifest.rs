//! Manifest media types and parsing. The raw bytes stay the source of truth;
//! parsing extracts what the registry needs (references, subject, artifact type).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Largest manifest accepted, as distribution limits it.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const OCI_NONDISTRIBUTABLE_PREFIX: &str = "application/vnd.oci.image.layer.nondistributable.";

    /// The manifest media types the registry stores and serves.
    pub const SUPPORTED: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

    pub fn is_manifest_type(mt: &str) -> bool {
        SUPPORTED.contains(&mt) || mt == DOCKER_SCHEMA1 || mt == DOCKER_SCHEMA1_SIGNED
    }

    /// `type/subtype` with restricted-name characters (RFC 6838), as the image spec requires.
    pub fn is_valid(mt: &str) -> bool {
        let Some((t, s)) = mt.split_once('/') else {
            return false;
        };
        let name_ok = |x: &str| {
            !x.is_empty()
                && x.len() <= 127
                && x.as_bytes()[0].is_ascii_alphanumeric()
                && x.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        name_ok(t) && name_ok(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

fn invalid(msg: impl Into<String>) -> ManifestError {
    ManifestError(msg.into())
}

/// A content descriptor as it appears in manifests and indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    /// Foreign (non-distributable) layers with URLs live elsewhere, so a
    /// registry does not require them to be present.
    pub fn is_foreign(&self) -> bool {
        let foreign_type = self.media_type == media::DOCKER_FOREIGN_LAYER
            || self.media_type.starts_with(media::OCI_NONDISTRIBUTABLE_PREFIX);
        foreign_type && self.urls.as_ref().is_some_and(|u| !u.is_empty())
    }

    fn validate(&self, what: &str) -> Result<(), ManifestError> {
        if !media::is_valid(&self.media_type) {
            return Err(invalid(format!("{what}: invalid mediaType {:?}", self.media_type)));
        }
        if self.size < 0 {
            return Err(invalid(format!("{what}: negative size")));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
    // Present only in schema 1 manifests; used to name them in the error.
    fs_layers: Option<serde_json::Value>,
}

/// What the registry needs to know about a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestInfo {
    pub media_type: String,
    pub kind: ManifestKind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for image manifests without one, the config's media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Strips parameters (`; charset=...`) and whitespace from a Content-Type value.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// How deep arrays and objects may nest in a manifest (real ones use fewer than 10).
pub const MAX_JSON_DEPTH: usize = 64;

/// The deepest nesting of arrays and objects in a JSON text (brackets inside
/// strings do not count). Malformed text is left to the parser.
pub fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

impl ManifestInfo {
    /// Parses a manifest pushed with the given Content-Type. The media type
    /// comes from the body's `mediaType` when present and must then agree with
    /// a manifest Content-Type; without it the Content-Type or the shape decides.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, ManifestError> {
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(invalid("manifest is larger than 4 MiB"));
        }
        // Fields Berth does not read are skipped by serde without its
        // recursion limit; bound the nesting of the whole document first.
        if json_depth(body) > MAX_JSON_DEPTH {
            return Err(invalid(format!("manifest JSON is nested deeper than {MAX_JSON_DEPTH} levels")));
        }
        let raw: RawManifest = serde_json::from_slice(body).map_err(|e| invalid(format!("malformed manifest: {e}")))?;
        let ct = content_type.map(essence).filter(|c| !c.is_empty());
        let ct_is_manifest = ct.is_some_and(media::is_manifest_type);

        let media_type = match (&raw.media_type, ct) {
            (Some(mt), Some(ct)) if ct_is_manifest && mt != ct => {
                return Err(invalid(format!("mediaType {mt:?} in manifest does not match Content-Type {ct:?}")));
            }
            (Some(mt), _) => mt.clone(),
            (None, Some(ct)) if ct_is_manifest => ct.to_owned(),
            (None, _) if raw.fs_layers.is_some() => media::DOCKER_SCHEMA1.to_owned(),
            (None, _) if raw.manifests.is_some() => media::OCI_INDEX.to_owned(),
            (None, _) => media::OCI_MANIFEST.to_owned(),
        };
        if media_type == media::DOCKER_SCHEMA1 || media_type == media::DOCKER_SCHEMA1_SIGNED {
            return Err(invalid("schema 1 manifests are not supported"));
        }
        if !media::SUPPORTED.contains(&media_type.as_str()) {
            return Err(invalid(format!("unsupported manifest media type {media_type:?}")));
        }
        match raw.schema_version.as_ref().and_then(|v| v.as_i64()) {
            Some(2) => {}
            _ => return Err(invalid("schemaVersion must be 2")),
        }
        if let Some(at) = &raw.artifact_type {
            if !media::is_valid(at) {
                return Err(invalid(format!("invalid artifactType {at:?}")));
            }
        }
        if let Some(s) = &raw.subject {
            s.validate("subject")?;
        }

        let kind = if media_type == media::OCI_INDEX || media_type == media::DOCKER_MANIFEST_LIST {
            ManifestKind::Index
        } else {
            ManifestKind::Image
        };
        match kind {
            ManifestKind::Image => {
                // A document that could be read as both kinds is ambiguous (CVE-2021-41190).
                if raw.manifests.is_some() {
                    return Err(invalid("image manifest must not contain \"manifests\""));
                }
                let config = raw.config.ok_or_else(|| invalid("image manifest has no config"))?;
                config.validate("config")?;
                let layers = raw.layers.ok_or_else(|| invalid("image manifest has no layers"))?;
                for (i, l) in layers.iter().enumerate() {
                    l.validate(&format!("layers[{i}]"))?;
                }
                let artifact_type = raw.artifact_type.or_else(|| Some(config.media_type.clone()));
                Ok(ManifestInfo {
                    media_type,
                    kind,
                    config: Some(config),
                    layers,
                    manifests: Vec::new(),
                    subject: raw.subject,
                    artifact_type,
                    annotations: raw.annotations,
                })
            }
            ManifestKind::Index => {
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(invalid("index must not contain \"config\" or \"layers\""));
                }
                let manifests = raw.manifests.ok_or_else(|| invalid("index has no manifests"))?;
                for (i, m) in manifests.iter().enumerate() {
                    m.validate(&format!("manifests[{i}]"))?;
                }
                Ok(ManifestInfo {
                    media_type,
                    kind,
                    config: None,
                    layers: Vec::new(),
                    manifests,
                    subject: raw.subject,
                    artifact_type: raw.artifact_type,
                    annotations: raw.annotations,
                })
            }
        }
    }

    /// Blobs this manifest needs in its repository: config and layers, minus foreign layers.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter().filter(|l| !l.is_foreign()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(mt: Option<&str>) -> String {
        let mt = mt.map(|m| format!("\"mediaType\":\"{m}\",")).unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":10}}]}}"#
        )
    }

    #[test]
    fn parses_oci_image_without_media_type() {
        let m = ManifestInfo::parse(Some(media::OCI_MANIFEST), image(None).as_bytes()).unwrap();
        assert_eq!(m.media_type, media::OCI_MANIFEST);
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().count(), 2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
    }

    #[test]
    fn deep_nesting_in_unknown_fields_is_refused() {
        let deep = |n: usize| {
            let base = image(Some(media::OCI_MANIFEST));
            let unknown = format!("{}1{}", "[".repeat(n), "]".repeat(n));
            format!("{},\"x-extra\":{unknown}}}", &base[..base.len() - 1])
        };
        ManifestInfo::parse(None, deep(MAX_JSON_DEPTH - 1).as_bytes()).unwrap();
        let e = ManifestInfo::parse(None, deep(100_000).as_bytes()).unwrap_err();
        assert!(e.0.contains("nested deeper than 64"), "{}", e.0);
        // Brackets inside strings are text.
        let quoted = format!("{},\"x\":\"{}\\\"[[\"}}", &image(None)[..image(None).len() - 1], "[{".repeat(200));
        ManifestInfo::parse(None, quoted.as_bytes()).unwrap();
        assert_eq!(json_depth(br#"{"a":[{"b":"]]]"}]}"#), 3);
    }

    #[test]
    fn media_type_mismatch_is_rejected() {
        let body = image(Some(media::OCI_MANIFEST));
        assert!(ManifestInfo::parse(Some(media::DOCKER_MANIFEST), body.as_bytes()).is_err());
        // A generic Content-Type defers to the body.
        let m = ManifestInfo::parse(Some("application/json"), body.as_bytes()).unwrap();
        assert_eq!(m.media_type, media::OCI_MANIFEST);
    }

    #[test]
    fn ambiguous_documents_are_rejected() {
        let body = format!(r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[],"layers":[]}}"#, media::OCI_INDEX);
        assert!(ManifestInfo::parse(None, body.as_bytes()).is_err());
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"a/b","digest":"{D1}","size":1}},"layers":[],"manifests":[]}}"#,
            media::OCI_MANIFEST
        );
        assert!(ManifestInfo::parse(None, body.as_bytes()).is_err());
    }

    #[test]
    fn index_children_and_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/x.test","manifests":[{{"mediaType":"{}","digest":"{D1}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}}],"subject":{{"mediaType":"{}","digest":"{D2}","size":3}}}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            media::OCI_MANIFEST
        );
        let m = ManifestInfo::parse(Some(media::OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.manifests.len(), 1);
        assert_eq!(m.subject.unwrap().digest.as_str(), D2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.test"));
    }

    #[test]
    fn rejects_bad_documents() {
        let cases = [
            "",
            "null",
            "[]",
            "{",
            r#"{"schemaVersion":1,"fsLayers":[]}"#,
            r#"{"schemaVersion":3}"#,
            r#"{"schemaVersion":2}"#,
            r#"{"schemaVersion":2,"mediaType":"application/vnd.foo+json","config":{}}"#,
            r#"{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:zz","size":1},"layers":[]}"#,
            r#"{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":-1},"layers":[]}"#,
        ];
        for c in cases {
            assert!(ManifestInfo::parse(None, c.as_bytes()).is_err(), "{c}");
        }
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"{}","digest":"{D2}","size":10,"urls":["https://example.invalid/l"]}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_FOREIGN_LAYER
        );
        let m = ManifestInfo::parse(Some(media::DOCKER_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.required_blobs().count(), 1);
    }

    proptest! {
        #[test]
        fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), ct in "\\PC{0,40}") {
            let _ = ManifestInfo::parse(Some(&ct), &body);
        }
    }
}
