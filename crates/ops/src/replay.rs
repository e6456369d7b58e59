//! `tandem ops replay`: the engine on a JSON-lines file of recorded or
//! hand-written telemetry, in file order. Each line is one CPE report
//! ([`telemetry::Report`], with `subscriber`) or one HAG report
//! ([`telemetry::HagReport`], with `hag`); blank lines and lines starting
//! with `#` are skipped. Time is the reports' own `sent_at_ms`.
//!
//! After each CPE report the engine diagnoses that home, and once a minute
//! of report time every home (so that silence is seen); every change of a
//! home's diagnosis is printed, so the output reads as what ops would have
//! said, and when.

use std::io::BufRead;

use hybrid::Location;
use telemetry::{HagReport, Report};

use crate::engine::{Diagnosis, Engine};

/// The longest line accepted.
pub const MAX_LINE: usize = telemetry::hag::MAX_HAG_REPORT_BYTES;

/// A replay that cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading failed.
    #[error("reading line {line}")]
    Io {
        /// 1-based line.
        line: u64,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not a report (with its line number).
    #[error("line {line}")]
    Report {
        /// 1-based line.
        line: u64,
        /// The cause.
        source: telemetry::Error,
    },
    /// A line longer than [`MAX_LINE`].
    #[error("line {0} is longer than {MAX_LINE} bytes")]
    TooLong(u64),
    /// A report from a subscriber not in the inventory.
    #[error("line {line}")]
    Unknown {
        /// 1-based line.
        line: u64,
        /// The cause.
        source: crate::engine::UnknownSubscriber,
    },
}

/// One printed change.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Change {
    /// When (the report's time), Unix ms.
    pub at_ms: u64,
    /// The new diagnosis.
    pub diagnosis: Diagnosis,
}

/// Replays `input` into `engine`, calling `out` for every change of a
/// home's diagnosis. Returns the number of reports read.
pub fn replay(
    engine: &mut Engine,
    input: impl BufRead,
    mut out: impl FnMut(&Change),
) -> Result<u64, Error> {
    let mut last: Vec<Option<(Location, &'static str)>> = vec![None; engine.inventory().len()];
    let mut n = 0;
    let mut latest_ms = 0;
    for (k, line) in input.split(b'\n').enumerate() {
        let line_no = k as u64 + 1;
        let bytes = line.map_err(|source| Error::Io {
            line: line_no,
            source,
        })?;
        if bytes.len() > MAX_LINE {
            return Err(Error::TooLong(line_no));
        }
        let text = String::from_utf8_lossy(&bytes);
        let t = text.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        n += 1;
        // A HAG report has a `hag` field; a CPE report never does.
        #[derive(serde::Deserialize)]
        struct Kind {
            #[serde(default)]
            hag: Option<serde::de::IgnoredAny>,
        }
        let is_hag = serde_json::from_str::<Kind>(t).is_ok_and(|k| k.hag.is_some());
        if is_hag {
            let h = HagReport::parse(t.as_bytes()).map_err(|source| Error::Report {
                line: line_no,
                source,
            })?;
            latest_ms = latest_ms.max(h.sent_at_ms);
            engine.ingest_hag(&h);
            continue;
        }
        let r = Report::parse(t.as_bytes()).map_err(|source| Error::Report {
            line: line_no,
            source,
        })?;
        // Once a minute of report time, every home is looked at again: a
        // home that went silent sends nothing to be diagnosed on.
        if r.sent_at_ms / 60_000 > latest_ms / 60_000 && latest_ms > 0 {
            for (j, seen) in last.iter_mut().enumerate() {
                if seen.is_none() {
                    continue;
                }
                let d = engine.diagnose(j, r.sent_at_ms);
                let key = (d.location, d.fault);
                if *seen != Some(key) {
                    *seen = Some(key);
                    out(&Change {
                        at_ms: r.sent_at_ms,
                        diagnosis: d,
                    });
                }
            }
        }
        latest_ms = latest_ms.max(r.sent_at_ms);
        let i = engine
            .ingest(&r, r.sent_at_ms)
            .map_err(|source| Error::Unknown {
                line: line_no,
                source,
            })?;
        let d = engine.diagnose(i, latest_ms);
        let key = (d.location, d.fault);
        if last[i] != Some(key) {
            last[i] = Some(key);
            out(&Change {
                at_ms: latest_ms,
                diagnosis: d,
            });
        }
    }
    Ok(n)
}
