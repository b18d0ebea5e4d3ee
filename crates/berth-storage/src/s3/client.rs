//! A small S3 client: AWS Signature Version 4 over reqwest, the operations
//! the driver needs, and the few XML documents they answer with.
//!
//! Request payloads are sent as `UNSIGNED-PAYLOAD` (the data is hashed once
//! already, for its digest); idempotent requests are retried on transport
//! errors and 5xx answers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use berth_types::secret::Secret;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest as _, Sha256};

/// How the client reaches and signs for one bucket.
#[derive(Clone)]
pub(crate) struct ClientConfig {
    /// `scheme://host[:port]`, no path.
    pub endpoint: Url,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
    pub path_style: bool,
    pub skip_verify: bool,
    /// PEM certificates trusted besides the built-in roots.
    pub ca_bundle: Option<Vec<u8>>,
    pub user_agent: String,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(crate) enum S3Error {
    /// 404 (NoSuchKey, NoSuchUpload, ...).
    NotFound(String),
    /// 416 on a ranged GET.
    RangeNotSatisfiable,
    Status {
        status: StatusCode,
        code: String,
        message: String,
    },
    Transport(String),
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Error::NotFound(c) => write!(f, "not found ({c})"),
            S3Error::RangeNotSatisfiable => f.write_str("range not satisfiable"),
            S3Error::Status { status, code, message } => write!(f, "S3 answered {status} {code}: {message}"),
            S3Error::Transport(e) => write!(f, "S3 request failed: {e}"),
        }
    }
}

pub(crate) type S3Result<T> = Result<T, S3Error>;

/// An error with every cause under it (`error sending request for url (…):
/// client error (Connect): tcp connect error: Connection refused`), so the
/// root cause (a DNS failure, a refused connection, TLS) and the address tried
/// reach the message.
pub(crate) fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    // The kind of failure first, in words, then the whole chain.
    let lower = out.to_ascii_lowercase();
    let kind = if lower.contains("dns error") || lower.contains("failed to lookup address") {
        "DNS lookup failed"
    } else if lower.contains("connection refused") {
        "connection refused"
    } else if ["certificate", "corrupt message", "handshake", "peer is incompatible", "tls"]
        .iter()
        .any(|w| lower.contains(w))
    {
        "TLS handshake failed"
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "timed out"
    } else {
        return out;
    };
    format!("{kind}: {out}")
}

/// One object of a listing.
#[derive(Debug, Clone)]
pub(crate) struct ListedObject {
    pub key: String,
}

#[derive(Debug, Default)]
pub(crate) struct ListPage {
    pub objects: Vec<ListedObject>,
    pub prefixes: Vec<String>,
    pub next: Option<String>,
}

const ATTEMPTS: u32 = 5;

pub(crate) struct Client {
    http: reqwest::Client,
    cfg: ClientConfig,
}

/// A request before signing.
struct Req<'a> {
    method: Method,
    key: Option<&'a str>,
    query: Vec<(&'static str, String)>,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// Whether sending it twice is harmless (not so for creating an upload).
    retry: bool,
}

impl<'a> Req<'a> {
    fn new(method: Method, key: &'a str) -> Self {
        Req { method, key: Some(key), query: Vec::new(), headers: Vec::new(), body: Bytes::new(), retry: true }
    }
    fn once(mut self) -> Self {
        self.retry = false;
        self
    }
    fn query(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.query.push((k, v.into()));
        self
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_ascii_lowercase(), v.into()));
        self
    }
    fn headers(mut self, h: &[(String, String)]) -> Self {
        self.headers.extend(h.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())));
        self
    }
    fn body(mut self, b: Bytes) -> Self {
        self.body = b;
        self
    }
}

impl Client {
    pub fn new(cfg: ClientConfig) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &cfg.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the CA bundle holds no usable certificate: {e}"))?;
            if certs.is_empty() {
                return Err("the CA bundle holds no certificate".into());
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .danger_accept_invalid_certs(cfg.skip_verify)
            .user_agent(cfg.user_agent.clone())
            .pool_max_idle_per_host(64)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| format!("building the S3 HTTP client: {e}"))?;
        Ok(Client { http, cfg })
    }

    /// Host (with a non-default port) and path of `key`, and the URL prefix.
    fn location(&self, key: Option<&str>) -> (String, String) {
        let ep = &self.cfg.endpoint;
        let mut host = ep.host_str().unwrap_or_default().to_owned();
        if let Some(p) = ep.port() {
            host = format!("{host}:{p}");
        }
        let key = key.map(|k| uri_encode(k, false)).unwrap_or_default();
        if self.cfg.path_style {
            (host, format!("/{}/{}", self.cfg.bucket, key))
        } else {
            (format!("{}.{host}", self.cfg.bucket), format!("/{key}"))
        }
    }

    /// Signs and sends `req`, retrying transport errors and 5xx answers.
    /// Answers other than 2xx become errors.
    async fn send(&self, req: Req<'_>) -> S3Result<reqwest::Response> {
        let (host, path) = self.location(req.key);
        let mut query = req.query.iter().map(|(k, v)| (uri_encode(k, true), uri_encode(v, true))).collect::<Vec<_>>();
        query.sort();
        let query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let url =
            format!("{}://{host}{path}{}{query}", self.cfg.endpoint.scheme(), if query.is_empty() { "" } else { "?" });
        let url = Url::parse(&url).map_err(|e| S3Error::Transport(format!("bad URL {url}: {e}")))?;
        let mut last = None;
        let attempts = if req.retry { ATTEMPTS } else { 1 };
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            let mut headers = req.headers.clone();
            let auth = self.sign(req.method.as_str(), &host, &path, &query, &mut headers, SystemTime::now());
            let mut map = HeaderMap::new();
            for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
                let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) else {
                    return Err(S3Error::Transport(format!("invalid header {k}")));
                };
                map.insert(k, v);
            }
            map.insert(reqwest::header::AUTHORIZATION, HeaderValue::from_str(&auth).expect("ASCII signature"));
            let sent = self
                .http
                .request(req.method.clone(), url.clone())
                .headers(map)
                .body(reqwest::Body::from(req.body.clone()))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    let err = error_from(status, &text);
                    if !status.is_server_error() {
                        return Err(err);
                    }
                    tracing::debug!(%url, attempt, error = %err, "S3 request failed; retrying");
                    last = Some(err);
                }
                Err(e) => {
                    let why = cause_chain(&e);
                    tracing::debug!(%url, attempt, error = %why, "S3 request failed; retrying");
                    last = Some(S3Error::Transport(why));
                }
            }
        }
        Err(last.unwrap_or_else(|| S3Error::Transport("no attempt made".into())))
    }

    /// Adds the signing headers to `headers` and returns the Authorization value.
    fn sign(
        &self,
        method: &str,
        host: &str,
        path: &str,
        query: &str,
        headers: &mut Vec<(String, String)>,
        now: SystemTime,
    ) -> String {
        let (date, stamp) = amz_date(now);
        headers.push(("host".into(), host.to_owned()));
        headers.push(("x-amz-date".into(), stamp.clone()));
        headers.push(("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()));
        if let Some(t) = &self.cfg.session_token {
            headers.push(("x-amz-security-token".into(), t.expose().to_owned()));
        }
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
        let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let creq = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\nUNSIGNED-PAYLOAD");
        let scope = format!("{date}/{}/s3/aws4_request", self.cfg.region);
        let signature = self.signature(&date, &stamp, &scope, &creq);
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            self.cfg.access_key
        )
    }

    fn signature(&self, date: &str, stamp: &str, scope: &str, canonical_request: &str) -> String {
        let sts = format!("AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request)));
        let k = hmac(format!("AWS4{}", self.cfg.secret_key.expose()).as_bytes(), date.as_bytes());
        let k = hmac(&k, self.cfg.region.as_bytes());
        let k = hmac(&k, b"s3");
        let k = hmac(&k, b"aws4_request");
        hex::encode(hmac(&k, sts.as_bytes()))
    }

    /// A URL anyone may GET `key` with until `expires` from now.
    pub fn presign_get(&self, key: &str, expires: Duration) -> String {
        let now = SystemTime::now();
        let (host, path) = self.location(Some(key));
        let (date, stamp) = amz_date(now);
        let scope = format!("{date}/{}/s3/aws4_request", self.cfg.region);
        let mut q: Vec<(String, String)> = vec![
            ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
            ("X-Amz-Credential".into(), format!("{}/{scope}", self.cfg.access_key)),
            ("X-Amz-Date".into(), stamp.clone()),
            ("X-Amz-Expires".into(), expires.as_secs().clamp(1, 604_800).to_string()),
            ("X-Amz-SignedHeaders".into(), "host".into()),
        ];
        if let Some(t) = &self.cfg.session_token {
            q.push(("X-Amz-Security-Token".into(), t.expose().to_owned()));
        }
        let mut q: Vec<(String, String)> = q.iter().map(|(k, v)| (uri_encode(k, true), uri_encode(v, true))).collect();
        q.sort();
        let query = q.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let creq = format!("GET\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
        let signature = self.signature(&date, &stamp, &scope, &creq);
        format!("{}://{host}{path}?{query}&X-Amz-Signature={signature}", self.cfg.endpoint.scheme())
    }

    // ---- operations ----

    pub async fn put_object(&self, key: &str, body: Bytes, extra: &[(String, String)]) -> S3Result<()> {
        self.send(Req::new(Method::PUT, key).headers(extra).body(body)).await?;
        Ok(())
    }

    /// GET of the whole object or of `range` (first byte, last byte or end).
    pub async fn get_object(&self, key: &str, range: Option<(u64, Option<u64>)>) -> S3Result<reqwest::Response> {
        let mut req = Req::new(Method::GET, key);
        if let Some((first, last)) = range {
            let last = last.map(|l| l.to_string()).unwrap_or_default();
            req = req.header("range", format!("bytes={first}-{last}"));
        }
        self.send(req).await
    }

    /// Size and modification time, or None when there is no such object.
    pub async fn head_object(&self, key: &str) -> S3Result<Option<(u64, Option<SystemTime>)>> {
        match self.send(Req::new(Method::HEAD, key)).await {
            Ok(r) => {
                // Not content_length(): a HEAD answer's body is empty.
                let size = r
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| S3Error::Transport(format!("no Content-Length in HEAD answer for {key}")))?;
                let modified = r
                    .headers()
                    .get(reqwest::header::LAST_MODIFIED)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| httpdate::parse_http_date(v).ok());
                Ok(Some((size, modified)))
            }
            Err(S3Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn delete_object(&self, key: &str) -> S3Result<()> {
        match self.send(Req::new(Method::DELETE, key)).await {
            Ok(_) | Err(S3Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes up to 1000 keys in one request; keys already gone are no error.
    pub async fn delete_objects(&self, keys: &[String]) -> S3Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut xml = String::from("<Delete><Quiet>true</Quiet>");
        for k in keys {
            xml.push_str("<Object><Key>");
            xml.push_str(&xml_escape(k));
            xml.push_str("</Key></Object>");
        }
        xml.push_str("</Delete>");
        let md5 = base64::engine::general_purpose::STANDARD.encode(<md5::Md5 as md5::Digest>::digest(xml.as_bytes()));
        let req = Req { key: None, ..Req::new(Method::POST, "") }
            .query("delete", "")
            .header("content-md5", md5)
            .header("content-type", "application/xml")
            .body(Bytes::from(xml));
        let r = self.send(req).await?;
        let text = r.text().await.map_err(|e| S3Error::Transport(cause_chain(&e)))?;
        for err in elements(&text, "Error") {
            let code = element(err, "Code").unwrap_or_default();
            if code != "NoSuchKey" {
                return Err(S3Error::Status {
                    status: StatusCode::OK,
                    code,
                    message: format!(
                        "deleting {}: {}",
                        element(err, "Key").unwrap_or_default(),
                        element(err, "Message").unwrap_or_default()
                    ),
                });
            }
        }
        Ok(())
    }

    /// One page of ListObjectsV2.
    pub async fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<&str>,
        max_keys: usize,
    ) -> S3Result<ListPage> {
        let mut req = Req { key: None, ..Req::new(Method::GET, "") }
            .query("list-type", "2")
            .query("prefix", prefix)
            .query("max-keys", max_keys.to_string());
        if let Some(d) = delimiter {
            req = req.query("delimiter", d);
        }
        if let Some(c) = continuation {
            req = req.query("continuation-token", c);
        }
        let text = self.send(req).await?.text().await.map_err(|e| S3Error::Transport(cause_chain(&e)))?;
        let mut page = ListPage::default();
        for c in elements(&text, "Contents") {
            let Some(key) = element(c, "Key") else { continue };
            page.objects.push(ListedObject { key });
        }
        for p in elements(&text, "CommonPrefixes") {
            if let Some(p) = element(p, "Prefix") {
                page.prefixes.push(p);
            }
        }
        if element(&text, "IsTruncated").as_deref() == Some("true") {
            page.next = element(&text, "NextContinuationToken");
            if page.next.is_none() {
                return Err(S3Error::Transport("truncated listing without a continuation token".into()));
            }
        }
        Ok(page)
    }

    pub async fn create_multipart(&self, key: &str, extra: &[(String, String)]) -> S3Result<String> {
        let r = self.send(Req::new(Method::POST, key).query("uploads", "").headers(extra).once()).await?;
        let text = r.text().await.map_err(|e| S3Error::Transport(cause_chain(&e)))?;
        element(&text, "UploadId").ok_or_else(|| S3Error::Transport(format!("no UploadId in answer: {text}")))
    }

    /// Uploads part `n`; returns its ETag.
    pub async fn upload_part(&self, key: &str, upload_id: &str, n: u32, body: Bytes) -> S3Result<String> {
        let req = Req::new(Method::PUT, key).query("partNumber", n.to_string()).query("uploadId", upload_id).body(body);
        let r = self.send(req).await?;
        etag(&r)
    }

    /// Copies bytes `first..=last` of `source` as part `n`; returns its ETag.
    pub async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        n: u32,
        source: &str,
        (first, last): (u64, u64),
    ) -> S3Result<String> {
        let text = self
            .send_checked(|| {
                Req::new(Method::PUT, key)
                    .query("partNumber", n.to_string())
                    .query("uploadId", upload_id)
                    .header("x-amz-copy-source", self.copy_source(source))
                    .header("x-amz-copy-source-range", format!("bytes={first}-{last}"))
            })
            .await?;
        element(&text, "ETag").ok_or_else(|| S3Error::Transport(format!("no ETag in copy answer: {text}")))
    }

    pub async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[(u32, String)]) -> S3Result<()> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            xml.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>", xml_escape(etag)));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let xml = Bytes::from(xml);
        // Errors can come with a 200 once the server started answering.
        self.send_checked(|| Req::new(Method::POST, key).query("uploadId", upload_id).body(xml.clone())).await?;
        Ok(())
    }

    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> S3Result<()> {
        match self.send(Req::new(Method::DELETE, key).query("uploadId", upload_id)).await {
            Ok(_) | Err(S3Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn copy_object(&self, source: &str, key: &str, extra: &[(String, String)]) -> S3Result<()> {
        self.send_checked(|| {
            Req::new(Method::PUT, key).header("x-amz-copy-source", self.copy_source(source)).headers(extra)
        })
        .await?;
        Ok(())
    }

    /// Sends a copy or completion, whose failure may come inside a 200 answer
    /// (InternalError, SlowDown: to be retried like a 5xx); returns the body.
    async fn send_checked<'k>(&self, req: impl Fn() -> Req<'k>) -> S3Result<String> {
        let mut attempt = 0;
        loop {
            let text = self.send(req()).await?.text().await.map_err(|e| S3Error::Transport(cause_chain(&e)))?;
            match check_embedded_error(&text) {
                Err(S3Error::Status { code, .. })
                    if attempt + 1 < ATTEMPTS && (code == "InternalError" || code == "SlowDown") =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => return Err(e),
                Ok(()) => return Ok(text),
            }
        }
    }

    fn copy_source(&self, key: &str) -> String {
        format!("/{}/{}", self.cfg.bucket, uri_encode(key, false))
    }
}

fn etag(r: &reqwest::Response) -> S3Result<String> {
    r.headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| S3Error::Transport("no ETag in answer".into()))
}

fn check_embedded_error(text: &str) -> S3Result<()> {
    if text.contains("<Error>") {
        return Err(error_from(StatusCode::OK, text));
    }
    Ok(())
}

fn error_from(status: StatusCode, body: &str) -> S3Error {
    let code = element(body, "Code").unwrap_or_default();
    let message = element(body, "Message").unwrap_or_else(|| body.chars().take(200).collect());
    match status {
        // A missing bucket is a configuration error, not a missing file.
        StatusCode::NOT_FOUND if code == "NoSuchBucket" => S3Error::Status { status, code, message },
        StatusCode::NOT_FOUND => S3Error::NotFound(if code.is_empty() { "NoSuchKey".into() } else { code }),
        StatusCode::RANGE_NOT_SATISFIABLE => S3Error::RangeNotSatisfiable,
        _ if code == "NoSuchKey" || code == "NoSuchUpload" => S3Error::NotFound(code),
        _ => S3Error::Status { status, code, message },
    }
}

pub(crate) fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Percent-encodes all but unreserved characters (and `/` in paths).
pub(crate) fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---- dates ----

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (`YYYYMMDD`, `YYYYMMDDTHHMMSSZ`) in UTC.
pub(crate) fn amz_date(t: SystemTime) -> (String, String) {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let date = format!("{y:04}{m:02}{d:02}");
    let stamp = format!("{date}T{:02}{:02}{:02}Z", s / 3600, s % 3600 / 60, s % 60);
    (date, stamp)
}

// ---- XML ----

/// The raw inner text of each `<tag>...</tag>` (not nested in itself).
pub(crate) fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

/// The unescaped text of the first `<tag>`.
pub(crate) fn element(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).first().map(|s| xml_unescape(s))
}

fn xml_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(end) = after.find(';') else {
            out.push_str(after);
            return out;
        };
        let entity = &after[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => out.push(c),
            None => out.push_str(&after[..=end]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_in_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_170_519); // 2026-12-02T00:15:19Z
        assert_eq!(amz_date(t), ("20261202".into(), "20261202T001519Z".into()));
        assert_eq!(amz_date(UNIX_EPOCH).1, "19700101T000000Z");
        assert_eq!(amz_date(UNIX_EPOCH + Duration::from_secs(1_709_251_199)).1, "20240229T235959Z");
    }

    /// RFC 4231 test cases 2 and 6 (a key longer than the block).
    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex::encode(hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn addressing_styles_and_presigned_urls() {
        let client = |path_style| {
            Client::new(ClientConfig {
                endpoint: Url::parse("http://127.0.0.1:3900").unwrap(),
                region: "garage".into(),
                bucket: "reg".into(),
                access_key: "AK".into(),
                secret_key: "SK".into(),
                session_token: None,
                path_style,
                skip_verify: false,
                ca_bundle: None,
                user_agent: "berth-test".into(),
            })
            .unwrap()
        };
        assert_eq!(client(true).location(Some("a b/c")), ("127.0.0.1:3900".into(), "/reg/a%20b/c".into()));
        assert_eq!(client(false).location(Some("k")), ("reg.127.0.0.1:3900".into(), "/k".into()));
        let u = client(true).presign_get("docker/x", Duration::from_secs(1200));
        let prefix = "http://127.0.0.1:3900/reg/docker/x?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F";
        assert!(u.starts_with(prefix), "{u}");
        assert!(u.contains("%2Fgarage%2Fs3%2Faws4_request&") && u.contains("&X-Amz-Expires=1200&"), "{u}");
        let sig = u.rsplit_once("&X-Amz-Signature=").map(|(_, s)| s).unwrap_or_default();
        assert!(sig.len() == 64 && sig.bytes().all(|b| b.is_ascii_hexdigit()), "{u}");
    }

    #[test]
    fn xml_extraction_and_escaping() {
        let x = "<ListBucketResult><Prefix>a/</Prefix><Contents><Key>a/b&amp;c</Key><Size>5</Size></Contents>\
                 <CommonPrefixes><Prefix>a/d/</Prefix></CommonPrefixes><IsTruncated>false</IsTruncated></ListBucketResult>";
        assert_eq!(element(elements(x, "Contents")[0], "Key").as_deref(), Some("a/b&c"));
        assert_eq!(element(elements(x, "CommonPrefixes")[0], "Prefix").as_deref(), Some("a/d/"));
        assert_eq!(xml_unescape("&lt;&#65;&#x42;&unknown;"), "<AB&unknown;");
        assert_eq!(xml_escape("\"a&b\""), "&quot;a&amp;b&quot;");
        assert_eq!(uri_encode("a b/c~", false), "a%20b/c~");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
    }
}
