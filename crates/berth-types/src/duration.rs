//! Durations as Go writes them (`168h`, `1h30m`, `10s`, `250ms`), the form
//! distribution's configuration uses, parsed with checked arithmetic and
//! bounded as Go's are, and the saturating millisecond arithmetic every cutoff
//! computed from one uses.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration accepted: Go's (`math.MaxInt64` nanoseconds, about 292 years).
pub const MAX: Duration = Duration::from_nanos(i64::MAX as u64);

fn too_long(s: &str) -> String {
    format!("duration {s:?} is too long (at most 2562047h)")
}

/// Parses `<number><unit>` sequences (units ns, us, µs, ms, s, m, h). A bare
/// integer is `bare_unit` each. Anything over [`MAX`] is an error, never an
/// overflow.
pub fn parse(s: &str, bare_unit: Duration) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = s.parse().map_err(|_| too_long(s))?;
        let nanos = u128::from(n).checked_mul(bare_unit.as_nanos()).filter(|ns| *ns <= MAX.as_nanos());
        // At most MAX, so it fits in u64 nanoseconds.
        return nanos.map(|ns| Duration::from_nanos(ns as u64)).ok_or_else(|| too_long(s));
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
        let term = Duration::try_from_secs_f64(value * unit).map_err(|_| too_long(s))?;
        total = total.checked_add(term).filter(|t| *t <= MAX).ok_or_else(|| too_long(s))?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// A duration as a person writes it in the configuration: `6h`, `30m`, `90s`, `250ms`.
pub fn display(d: Duration) -> String {
    let (secs, ms) = (d.as_secs(), d.subsec_millis());
    match (secs, ms) {
        (0, ms) => format!("{ms}ms"),
        (s, 0) if s % 3600 == 0 => format!("{}h", s / 3600),
        (s, 0) if s % 60 == 0 => format!("{}m", s / 60),
        (s, 0) => format!("{s}s"),
        (s, ms) => format!("{s}.{ms:03}s"),
    }
}

/// A duration in milliseconds as the metadata stores times, saturating at `i64::MAX`.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `now_ms - d` without overflow: a grace period longer than the epoch is
/// "before anything", never a time in the future.
pub fn millis_before(now_ms: i64, d: Duration) -> i64 {
    now_ms.saturating_sub(millis(d))
}

fn deserialize<'de, D: Deserializer<'de>>(d: D, bare_unit: Duration) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Str(String),
    }
    let text = match Raw::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a duration such as 90s, 10m or 24h"))?
    {
        Raw::Int(n) => n.to_string(),
        Raw::Str(s) => s,
    };
    parse(&text, bare_unit).map_err(serde::de::Error::custom)
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
    use proptest::prelude::*;

    #[test]
    fn go_durations() {
        let ns = Duration::from_nanos(1);
        assert_eq!(parse("168h", ns).unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse("1h30m", ns).unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms", ns).unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1000000000", ns).unwrap(), Duration::from_secs(1));
        // A week in nanoseconds, as Go configurations write it.
        assert_eq!(parse("604800000000000", ns).unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse("300", Duration::from_secs(1)).unwrap(), Duration::from_secs(300));
        for bad in ["", "h", "10x", "1.2.3s", "3 days", "-1s"] {
            assert!(parse(bad, ns).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_back_as_written() {
        for (d, text) in [(3600 * 6, "6h"), (1800, "30m"), (90, "90s")] {
            assert_eq!(display(Duration::from_secs(d)), text);
            assert_eq!(parse(text, Duration::from_secs(1)).unwrap(), Duration::from_secs(d));
        }
        assert_eq!(display(Duration::from_millis(250)), "250ms");
        assert_eq!(display(Duration::from_millis(1500)), "1.500s");
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        let s = Duration::from_secs(1);
        for huge in [
            "99999999999999999999999h",
            "18446744073709551616s",
            "18446744073709551615",
            "2562048h",
            "2562047h2562047h",
            "1e400s",
            "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999ms",
        ] {
            let e = parse(huge, s).unwrap_err();
            assert!(e.contains("too long") || e.contains("invalid"), "{huge}: {e}");
        }
        assert_eq!(parse("2562047h", s).unwrap(), Duration::from_secs(2_562_047 * 3600));
        // The largest grace still gives a cutoff before now, never after.
        let now = 1_795_444_461_000;
        assert_eq!(millis_before(now, MAX), now - MAX.as_millis() as i64);
        assert!(millis_before(now, Duration::MAX) < 0);
        assert_eq!(millis_before(-5, Duration::MAX), i64::MIN, "saturates");
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "[0-9.]{0,30}(ns|us|ms|s|m|h){0,1}([0-9.]{0,25}(s|h)){0,3}") {
            if let Ok(d) = parse(&text, Duration::from_secs(1)) {
                prop_assert!(d <= MAX);
            }
        }
    }
}
