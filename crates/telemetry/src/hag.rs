//! The HAG's report to ops: its own health towards the internet and its
//! view of each subscriber it serves, so that a home silent everywhere is
//! told apart from a HAG problem.

use serde::{Deserialize, Serialize};

use crate::{check_name, field, Error, MAX_REPORT_BYTES, SCHEMA};

/// The most subscribers one HAG report lists (a HAG sends several reports
/// when it serves more).
pub const MAX_SUBSCRIBERS: usize = 256;

/// The largest HAG report accepted, in bytes.
pub const MAX_HAG_REPORT_BYTES: usize = MAX_REPORT_BYTES * 8;

/// One subscriber as the HAG sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriberView {
    /// The registry's name.
    pub subscriber: String,
    /// Open MPTCP subflows over the fixed line.
    pub subflows_dsl: u32,
    /// Open MPTCP subflows over the mobile link.
    pub subflows_lte: u32,
    /// Connections open now.
    pub connections: u32,
    /// TCP retransmissions on this subscriber's subflows since the last report.
    pub retransmits: u64,
    /// When the HAG last heard from the subscriber, Unix milliseconds.
    pub last_seen_ms: u64,
}

/// One HAG report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HagReport {
    /// Schema version: [`SCHEMA`].
    pub schema: u32,
    /// The HAG's name (as in ops' configuration).
    pub hag: String,
    /// When the HAG made the report, Unix milliseconds.
    pub sent_at_ms: u64,
    /// Connections to destinations opened since the last report.
    pub upstream_connects: u64,
    /// Connections to destinations that failed since the last report.
    pub upstream_errors: u64,
    /// The subscribers it serves.
    pub subscribers: Vec<SubscriberView>,
}

impl HagReport {
    /// Parses and checks one HAG report.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        if body.len() > MAX_HAG_REPORT_BYTES {
            return Err(Error::TooLarge(body.len()));
        }
        let r: Self = serde_json::from_slice(body)?;
        if r.schema != SCHEMA {
            return Err(Error::Schema(r.schema));
        }
        check_name("hag", &r.hag)?;
        if r.subscribers.len() > MAX_SUBSCRIBERS {
            return Err(field(
                "subscribers",
                format!("{} listed, at most {MAX_SUBSCRIBERS}", r.subscribers.len()),
            ));
        }
        for s in &r.subscribers {
            check_name("subscribers.subscriber", &s.subscriber)?;
        }
        if r.upstream_errors > r.upstream_connects {
            return Err(field("upstream_errors", "more errors than connects"));
        }
        Ok(r)
    }

    /// The share of upstream connections that failed, if any were tried.
    pub fn upstream_error_ratio(&self) -> Option<f64> {
        (self.upstream_connects > 0)
            .then(|| self.upstream_errors as f64 / self.upstream_connects as f64)
    }
}
