//! Durations as Go writes them (`168h`, `1h30m`, `10s`, `250ms`), the form
//! distribution's configuration uses.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `<number><unit>` sequences (units ns, us, µs, ms, s, m, h). A bare
/// integer is `bare_unit` each.
pub fn parse(s: &str, bare_unit: Duration) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u32>() {
        return Ok(bare_unit * n);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} has no unit"))?;
        let value: f64 = rest[..end].parse().map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("invalid duration unit {u:?} in {s:?}")),
        };
        total += Duration::from_secs_f64(value * unit);
        rest = &rest[unit_end..];
    }
    Ok(total)
}

fn deserialize<'de, D: Deserializer<'de>>(d: D, bare_unit: Duration) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u32),
        Str(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(bare_unit * n),
        Raw::Str(s) => parse(&s, bare_unit).map_err(serde::de::Error::custom),
    }
}

/// For distribution's keys: a bare number is nanoseconds, as in Go.
pub fn go<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    deserialize(d, Duration::from_nanos(1))
}

/// For Berth's own keys: a bare number is seconds.
pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    deserialize(d, Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ns = Duration::from_nanos(1);
        assert_eq!(parse("168h", ns).unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse("1h30m", ns).unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms", ns).unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1000000000", ns).unwrap(), Duration::from_secs(1));
        assert_eq!(parse("300", Duration::from_secs(1)).unwrap(), Duration::from_secs(300));
        for bad in ["", "h", "10x", "1.2.3s", "3 days"] {
            assert!(parse(bad, ns).is_err(), "{bad}");
        }
    }
}
