//! What ops answers a report with: the policy in force for the sender.
//!
//! A CPE's accepted report is answered with its [`Policy`]: whether its
//! mobile budget is waived (an open `line` or `cabinet` incident: the home
//! runs on the mobile link through no fault of its own, so those bytes are
//! counted apart and not charged) and the extra mobile budget the operator
//! granted it. A HAG's accepted report is answered with [`HagPolicy`]: the
//! subscribers whose mobile bytes it records as waived rather than billed.
//!
//! Ops signs the answer with the same key as the sender's reports
//! ([`crate::sign`], in the answer's `X-Tandem-Signature`), so the sender
//! takes only a policy ops made for it. A policy holds for `valid_s` after it
//! arrived: a sender that stops hearing from ops falls back to no waiver and
//! no grant rather than keeping one forever.

use serde::{Deserialize, Serialize};

use crate::{check_name, field, Error, SCHEMA};

/// The largest policy answer accepted, in bytes (a HAG's lists every waived
/// subscriber it serves).
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// The most subscribers one HAG policy lists.
pub const MAX_WAIVED: usize = 16_384;

/// The longest a policy may hold without being renewed, seconds.
pub const MAX_VALID_S: u32 = 3_600;

/// Why a home's budget is waived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    /// The incident's number in ops.
    pub incident: i64,
    /// Its location: `line` or `cabinet`.
    pub location: String,
}

/// A CPE's policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Schema version: [`SCHEMA`].
    pub schema: u32,
    /// The subscriber it is for.
    pub subscriber: String,
    /// When ops made it, Unix milliseconds.
    pub issued_ms: u64,
    /// How long it holds after it arrived, seconds.
    pub valid_s: u32,
    /// The waiver, while a `line` or `cabinet` incident on the home is open.
    pub waiver: Option<Waiver>,
    /// Extra mobile bytes granted for now, on top of the configured budget.
    pub extra_bytes: u64,
}

/// A HAG's policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HagPolicy {
    /// Schema version: [`SCHEMA`].
    pub schema: u32,
    /// The HAG it is for.
    pub hag: String,
    /// When ops made it, Unix milliseconds.
    pub issued_ms: u64,
    /// How long it holds after it arrived, seconds.
    pub valid_s: u32,
    /// The subscribers whose budget is waived now.
    pub waived: Vec<String>,
}

fn check_common(schema: u32, valid_s: u32) -> Result<(), Error> {
    if schema != SCHEMA {
        return Err(Error::Schema(schema));
    }
    if !(1..=MAX_VALID_S).contains(&valid_s) {
        return Err(field(
            "valid_s",
            format!("{valid_s} is not 1..={MAX_VALID_S}"),
        ));
    }
    Ok(())
}

impl Policy {
    /// Parses and checks a CPE's policy.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        if body.len() > MAX_POLICY_BYTES {
            return Err(Error::TooLarge(body.len()));
        }
        let p: Self = serde_json::from_slice(body)?;
        check_common(p.schema, p.valid_s)?;
        check_name("subscriber", &p.subscriber)?;
        if let Some(w) = &p.waiver {
            if !matches!(w.location.as_str(), "line" | "cabinet") {
                return Err(field("waiver.location", "must be line or cabinet"));
            }
        }
        Ok(p)
    }

    /// No waiver, no grant.
    pub fn none(subscriber: &str, issued_ms: u64, valid_s: u32) -> Self {
        Self {
            schema: SCHEMA,
            subscriber: subscriber.to_owned(),
            issued_ms,
            valid_s,
            waiver: None,
            extra_bytes: 0,
        }
    }
}

impl HagPolicy {
    /// Parses and checks a HAG's policy.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        if body.len() > MAX_POLICY_BYTES {
            return Err(Error::TooLarge(body.len()));
        }
        let p: Self = serde_json::from_slice(body)?;
        check_common(p.schema, p.valid_s)?;
        check_name("hag", &p.hag)?;
        if p.waived.len() > MAX_WAIVED {
            return Err(field(
                "waived",
                format!("{} listed, at most {MAX_WAIVED}", p.waived.len()),
            ));
        }
        for s in &p.waived {
            check_name("waived", s)?;
        }
        Ok(p)
    }
}
