//! Repository and tag patterns for access rules, retention and quotas:
//! `team/app` (exactly), `team/*` (one level below), `team/**` (any depth
//! below), `**` (everything); `*` inside a component matches any characters
//! of that component (`team/app-*`).

use crate::RepoName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern(Vec<String>);

impl RepoPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<String> = s.split('/').map(str::to_owned).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!("invalid repository pattern {s:?}"));
        }
        Ok(RepoPattern(parts))
    }

    /// The pattern with `{name}` replaced in every component.
    pub fn replace(&self, name: &str, value: &str) -> RepoPattern {
        RepoPattern(self.0.iter().map(|c| c.replace(&format!("{{{name}}}"), value)).collect())
    }

    /// Whether a `{placeholder}` is left in the pattern.
    pub fn has_placeholder(&self) -> bool {
        self.0.iter().any(|c| c.contains('{'))
    }

    pub fn matches(&self, repo: &RepoName) -> bool {
        let name: Vec<&str> = repo.as_str().split('/').collect();
        path_matches(&self.0, &name)
    }
}

/// `**` spans one or more components; other components match by [`glob`].
fn path_matches(pattern: &[String], name: &[&str]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(p), _) if p == "**" => (1..=name.len()).any(|k| path_matches(&pattern[1..], &name[k..])),
        (Some(p), Some(n)) => glob(p, n) && path_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|k| go(rest, &s[k..])),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

/// Sizes as people write them: `1048576`, `500MB`, `10GiB`, `1.5TiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" | "k" => 1024.0,
        "mb" => 1e6,
        "mib" | "m" => 1024.0 * 1024.0,
        "gb" => 1e9,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "tb" => 1e12,
        "tib" | "t" => 1024f64.powi(4),
        u => return Err(format!("invalid size unit {u:?} in {s:?}")),
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let m = |p: &str, n: &str| RepoPattern::parse(p).unwrap().matches(&RepoName::parse(n).unwrap());
        assert!(m("team/app", "team/app"));
        assert!(!m("team/app", "team/app/x"));
        assert!(m("team/*", "team/app"));
        assert!(!m("team/*", "team/app/x"));
        assert!(m("team/**", "team/app/x/y"));
        assert!(!m("team/**", "team"));
        assert!(m("**", "a/b/c"));
        assert!(m("team/app-*", "team/app-web"));
        assert!(!m("team/app-*", "team/web"));
        assert!(m("**/images/*", "home/nirvana/images/ubuntu"));
        assert_eq!(
            RepoPattern::parse("home/{user}/**").unwrap().replace("user", "bob"),
            RepoPattern::parse("home/bob/**").unwrap()
        );
        assert!(RepoPattern::parse("a//b").is_err());
    }

    #[test]
    fn tag_globs() {
        assert!(glob("v*", "v1.2"));
        assert!(glob("*-rc*", "1.0-rc2"));
        assert!(!glob("v*", "latest"));
        assert!(glob("latest", "latest"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert!(parse_size("99999999999999999999999999TiB").unwrap_err().contains("too large"));
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
