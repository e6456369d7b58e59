//! Link profiles: what the fixed and mobile links look like.

use serde::{Deserialize, Serialize};

/// One access link's shape. Rates are in kbit/s; `rtt_ms` is the round-trip
/// delay the link adds (half in each direction).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkShape {
    /// Download rate (towards the home), kbit/s.
    pub down_kbit: u64,
    /// Upload rate (from the home), kbit/s.
    pub up_kbit: u64,
    /// Round-trip delay added by the link, ms.
    pub rtt_ms: f64,
    /// Jitter on each direction's one-way delay, ms.
    pub jitter_ms: f64,
    /// Random loss in each direction, percent.
    pub loss_pct: f64,
}

/// A named pair of links.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The fixed line.
    pub dsl: LinkShape,
    /// The mobile link.
    pub lte: LinkShape,
}

const fn shape(down_mbit: u64, up_mbit: u64, rtt_ms: f64) -> LinkShape {
    LinkShape {
        down_kbit: down_mbit * 1000,
        up_kbit: up_mbit * 1000,
        rtt_ms,
        jitter_ms: 0.0,
        loss_pct: 0.0,
    }
}

/// The names [`by_name`] knows.
pub const NAMES: &[&str] = &["rural", "suburban", "fast"];

/// Looks a profile up by name.
///
/// - `rural`: DSL 8/1 Mbit/s 15 ms, LTE 30/10 Mbit/s 45 ms;
/// - `suburban`: DSL 30/5 Mbit/s 10 ms, LTE 60/20 Mbit/s 35 ms;
/// - `fast`: DSL 50/50 Mbit/s 2 ms, LTE 50/50 Mbit/s 4 ms (quick functional tests).
pub fn by_name(name: &str) -> Option<Profile> {
    match name {
        "rural" => Some(Profile {
            dsl: shape(8, 1, 15.0),
            lte: shape(30, 10, 45.0),
        }),
        "suburban" => Some(Profile {
            dsl: shape(30, 5, 10.0),
            lte: shape(60, 20, 35.0),
        }),
        "fast" => Some(Profile {
            dsl: shape(50, 50, 2.0),
            lte: shape(50, 50, 4.0),
        }),
        _ => None,
    }
}

/// Parses a rate such as `8mbit`, `512kbit`, `1.5Mbit`, `20M` into kbit/s.
pub fn parse_rate(s: &str) -> Option<u64> {
    let l = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = l.strip_suffix("gbit").or_else(|| l.strip_suffix('g')) {
        (n, 1_000_000.0)
    } else if let Some(n) = l.strip_suffix("mbit").or_else(|| l.strip_suffix('m')) {
        (n, 1_000.0)
    } else if let Some(n) = l.strip_suffix("kbit").or_else(|| l.strip_suffix('k')) {
        (n, 1.0)
    } else {
        return None;
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v > 0.0 && v * mult <= 100_000_000.0).then(|| (v * mult).round() as u64)
}

/// Parses a duration in ms such as `15ms`, `15`, `0.5ms`.
pub fn parse_ms(s: &str) -> Option<f64> {
    let v: f64 = s.trim().trim_end_matches("ms").parse().ok()?;
    (v.is_finite() && (0.0..=60_000.0).contains(&v)).then_some(v)
}

/// Parses a percentage such as `1%` or `0.5`.
pub fn parse_pct(s: &str) -> Option<f64> {
    let v: f64 = s.trim().trim_end_matches('%').parse().ok()?;
    (v.is_finite() && (0.0..=100.0).contains(&v)).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_match_the_issue() {
        let r = by_name("rural").unwrap();
        assert_eq!(
            (r.dsl.down_kbit, r.dsl.up_kbit, r.dsl.rtt_ms),
            (8000, 1000, 15.0)
        );
        assert_eq!(
            (r.lte.down_kbit, r.lte.up_kbit, r.lte.rtt_ms),
            (30000, 10000, 45.0)
        );
        let s = by_name("suburban").unwrap();
        assert_eq!(
            (s.dsl.down_kbit, s.lte.up_kbit, s.lte.rtt_ms),
            (30000, 20000, 35.0)
        );
        assert!(by_name("moon").is_none());
    }

    #[test]
    fn units() {
        assert_eq!(parse_rate("8mbit"), Some(8000));
        assert_eq!(parse_rate("1.5M"), Some(1500));
        assert_eq!(parse_rate("512kbit"), Some(512));
        assert_eq!(parse_rate("8"), None);
        assert_eq!(parse_rate("-3mbit"), None);
        assert_eq!(parse_ms("15ms"), Some(15.0));
        assert_eq!(parse_pct("1%"), Some(1.0));
        assert_eq!(parse_pct("101%"), None);
    }
}
