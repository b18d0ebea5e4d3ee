//! An htpasswd file of bcrypt hashes, as distribution reads it. The file is
//! read again when it changes. bcrypt is slow on purpose, and clients send
//! basic credentials with every request, so a successful check is
//! remembered for a few minutes (keyed by a salted hash of the password).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::Digest as _;

use crate::{constant_time_eq, AuthError, HtpasswdConfig};

/// How long a verified password is trusted without running bcrypt again.
const REMEMBER: Duration = Duration::from_secs(300);
/// How often the file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(1);
/// bcrypt cost for new entries (distribution's and htpasswd's default).
pub const COST: u32 = 10;

pub struct Htpasswd {
    path: PathBuf,
    state: Mutex<State>,
    salt: [u8; 16],
}

struct State {
    entries: HashMap<String, String>,
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
    verified: HashMap<String, ([u8; 32], Instant)>,
}

fn read_entries(path: &Path) -> Result<HashMap<String, String>, AuthError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| AuthError::Io { path: path.display().to_string(), source: e })?;
    Ok(parse(&text))
}

/// `user:hash` lines; blank lines and `#` comments ignored; only bcrypt hashes kept.
pub fn parse(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            tracing::warn!(line = n + 1, "htpasswd line without ':' ignored");
            continue;
        };
        if !(hash.starts_with("$2a$")
            || hash.starts_with("$2b$")
            || hash.starts_with("$2y$")
            || hash.starts_with("$2x$"))
        {
            tracing::warn!(user, "htpasswd entry is not a bcrypt hash; ignored (only bcrypt is supported)");
            continue;
        }
        out.insert(user.to_owned(), hash.to_owned());
    }
    out
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Htpasswd {
    pub fn open(cfg: &HtpasswdConfig) -> Result<Self, AuthError> {
        let entries = read_entries(&cfg.path).map_err(|e| {
            AuthError::Config(format!(
                "auth.htpasswd.path: {e} (create it with `berth htpasswd add USER --file {}`)",
                cfg.path.display()
            ))
        })?;
        let mut salt = [0u8; 16];
        rand::fill(&mut salt);
        Ok(Htpasswd {
            path: cfg.path.clone(),
            state: Mutex::new(State {
                entries,
                stamp: stamp(&cfg.path),
                checked: Instant::now(),
                verified: HashMap::new(),
            }),
            salt,
        })
    }

    fn fingerprint(&self, password: &str) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        h.update(self.salt);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The current hash for `user`, re-reading the file if it changed.
    fn lookup(&self, user: &str) -> Option<String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.checked.elapsed() >= RECHECK {
            st.checked = Instant::now();
            let now = stamp(&self.path);
            if now != st.stamp {
                match read_entries(&self.path) {
                    Ok(e) => {
                        tracing::info!(path = %self.path.display(), users = e.len(), "htpasswd file reloaded");
                        st.entries = e;
                        st.verified.clear();
                        st.stamp = now;
                    }
                    // Keep the last good version while the file is being replaced.
                    Err(e) => tracing::warn!(error = %e, "htpasswd file could not be read; keeping the previous one"),
                }
            }
        }
        st.entries.get(user).cloned()
    }

    /// Whether `user` has an entry (re-reading the file if it changed).
    pub fn contains(&self, user: &str) -> bool {
        self.lookup(user).is_some()
    }

    pub async fn verify(&self, user: &str, password: &str) -> bool {
        let hash = self.lookup(user);
        let fp = self.fingerprint(password);
        {
            let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let (Some(_), Some((known, at))) = (&hash, st.verified.get(user)) {
                if at.elapsed() < REMEMBER && constant_time_eq(known, &fp) {
                    return true;
                }
            }
        }
        // Unknown users cost a bcrypt run too, so timing does not tell them apart.
        let (target, known_user) = match hash {
            Some(h) => (h, true),
            None => (dummy_hash().to_owned(), false),
        };
        let pw = password.to_owned();
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(pw, &target).unwrap_or(false)).await.unwrap_or(false);
        if ok && known_user {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.verified.insert(user.to_owned(), (fp, Instant::now()));
            return true;
        }
        false
    }
}

/// A real hash of the same cost, checked against for unknown users.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash("no such user", COST).unwrap_or_default())
}

/// bcrypt reads at most this many bytes of a password.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Adds or replaces `user` in the htpasswd file at `path` (created with mode
/// 0600 if missing), atomically.
pub fn set_password(path: &Path, user: &str, password: &str) -> Result<(), AuthError> {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
        return Err(AuthError::Config("the user name must not be empty or contain ':' or control characters".into()));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::Config(format!(
            "the password is {} bytes long: bcrypt uses only the first {MAX_PASSWORD_BYTES}, so any password \
             sharing them would log in; choose one of at most {MAX_PASSWORD_BYTES} bytes",
            password.len()
        )));
    }
    let hash = bcrypt::hash_with_result(password, COST)
        .map_err(|e| AuthError::Config(format!("hashing the password: {e}")))?
        .format_for_version(bcrypt::Version::TwoY);
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(AuthError::Io { path: path.display().to_string(), source: e }),
    };
    let mut lines: Vec<String> =
        old.lines().filter(|l| l.split_once(':').map(|(u, _)| u.trim()) != Some(user)).map(str::to_owned).collect();
    lines.push(format!("{user}:{hash}"));
    let io = |e| AuthError::Io { path: path.display().to_string(), source: e };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("htpasswd")));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all((lines.join("\n") + "\n").as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(path: &Path) -> HtpasswdConfig {
        HtpasswdConfig { realm: "r".into(), path: path.to_owned() }
    }

    #[tokio::test]
    async fn verifies_bcrypt_and_reloads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        set_password(&path, "alice", "s3cret").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("alice:$2y$10$"), "{text}");
        let h = Htpasswd::open(&cfg(&path)).unwrap();
        assert!(h.verify("alice", "s3cret").await);
        assert!(h.verify("alice", "s3cret").await, "remembered");
        assert!(!h.verify("alice", "wrong").await);
        assert!(!h.verify("bob", "s3cret").await);

        // A changed file is picked up: alice's password changes, bob is added.
        set_password(&path, "alice", "new").unwrap();
        set_password(&path, "bob", "pw").unwrap();
        tokio::time::sleep(RECHECK + Duration::from_millis(50)).await;
        assert!(h.verify("bob", "pw").await);
        assert!(!h.verify("alice", "s3cret").await, "the remembered old password is forgotten");
        assert!(h.verify("alice", "new").await);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn passwords_bcrypt_would_cut_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        set_password(&path, "alice", &"a".repeat(MAX_PASSWORD_BYTES)).unwrap();
        let e = set_password(&path, "bob", &"b".repeat(MAX_PASSWORD_BYTES + 1)).unwrap_err().to_string();
        assert!(e.contains("73 bytes") && e.contains("at most 72"), "{e}");
        let e = set_password(&path, "evil\nroot", "pw").unwrap_err().to_string();
        assert!(e.contains("control characters"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1, "nothing else written");
    }

    #[test]
    fn parse_keeps_only_bcrypt() {
        let e = parse("# comment\n\nalice:$2y$05$abc\nbob:{SHA}xyz\ncarol:$apr1$x\nbad line\n");
        assert_eq!(e.len(), 1);
        assert!(e.contains_key("alice"));
    }

    #[test]
    fn missing_file_names_the_key() {
        let e = Htpasswd::open(&cfg(Path::new("/nonexistent/htpasswd"))).err().unwrap();
        assert!(e.to_string().contains("auth.htpasswd.path"));
    }
}
