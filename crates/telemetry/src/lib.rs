//! The telemetry report a CPE sends to ops every reporting period and at
//! once on an event, and the HAG's per-subscriber view.
//!
//! The wire format is JSON, one object per report, versioned by its
//! `schema` field ([`SCHEMA`]); a JSON-lines file of reports is what
//! `tandem ops replay` reads. The DSL modem's figures keep their TR-181
//! names and units (`Device.DSL.Line.{i}.`: noise margins and attenuations in
//! 0.1 dB, powers in 0.1 dBmV, rates in kbit/s; the channel's counters), so
//! an operator can map them to their ACS without a table.
//!
//! A report is authenticated with the subscriber's credential: ops and the
//! CPE derive a key from it ([`key`]) and the CPE sends the keyed BLAKE3 of
//! the body ([`sign`], [`verify`]). Each report names itself with `(boot_id, seq)`: a
//! new boot has a new random `boot_id`, and `seq` grows within one, so the
//! ingest can refuse a replayed report (ops' ingest does that check; this
//! crate only carries the fields).
//!
//! What it does not do: any I/O. [`Report::parse`] bounds the input (size,
//! string lengths, counts) and checks every field's range, so hostile input
//! is an error, never a panic.
#![forbid(unsafe_code)]

use std::fmt;

use hybrid::Link;
use serde::{Deserialize, Serialize};

pub mod hag;
pub mod policy;

pub use hag::HagReport;
pub use policy::{HagPolicy, Policy};

/// The schema version this crate writes and reads.
pub const SCHEMA: u32 = 1;

/// The largest report accepted, in bytes.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;

/// The most events one report carries (the CPE drops the oldest beyond).
pub const MAX_EVENTS: usize = 32;

/// The longest subscriber name, boot id or cell id.
pub const MAX_NAME: usize = 64;

/// A report that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Larger than [`MAX_REPORT_BYTES`].
    #[error("report of {0} bytes is larger than the {MAX_REPORT_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not JSON of the report's shape (the parser's message says where).
    #[error("malformed report: {0}")]
    Malformed(serde_json::Error),
    /// A schema version this build does not read.
    #[error("report schema {0} is not supported (this build reads {SCHEMA})")]
    Schema(u32),
    /// A field out of its range.
    #[error("report field {field}: {problem}")]
    Field {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The signature does not match the body.
    #[error("report signature does not match")]
    BadSignature,
}

// By hand rather than `#[from]`: the message already carries the parser's
// words, and a source would print them twice in an error chain.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Malformed(e)
    }
}

fn field(field: &'static str, problem: impl Into<String>) -> Error {
    Error::Field {
        field,
        problem: problem.into(),
    }
}

/// Something that happened on the CPE, sent at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Event {
    /// The CPE started (first report of a boot).
    Boot,
    /// A link's probes say it went down.
    LinkDown {
        /// Which link.
        link: Link,
    },
    /// A link's probes say it came back.
    LinkUp {
        /// Which link.
        link: Link,
    },
    /// The DSL modem lost showtime and trained again.
    Retrain,
    /// Power is failing: the last report before the CPE goes dark.
    DyingGasp,
    /// The LAN port lost or regained carrier.
    LanCarrier {
        /// Whether carrier is now present.
        up: bool,
    },
}

impl Event {
    /// The event's name in the API and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Boot => "boot",
            Self::LinkDown { .. } => "link_down",
            Self::LinkUp { .. } => "link_up",
            Self::Retrain => "retrain",
            Self::DyingGasp => "dying_gasp",
            Self::LanCarrier { .. } => "lan_carrier",
        }
    }
}

/// What the CPE's probes measure on one access link since the last report.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    /// Which link.
    pub link: Link,
    /// The probes' verdict now.
    pub up: bool,
    /// Mean probe round trip to the HAG, milliseconds (absent if none came back).
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// Mean deviation of the round trip, milliseconds.
    #[serde(default)]
    pub jitter_ms: Option<f64>,
    /// Probes lost, percent of those sent since the last report.
    pub loss_pct: f64,
    /// Bytes sent on the link since boot (the WAN interface's counter).
    pub tx_bytes: u64,
    /// Bytes received on the link since boot.
    pub rx_bytes: u64,
}

/// The home network side.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lan {
    /// Whether the LAN port has carrier.
    pub carrier: bool,
    /// Devices seen on the LAN in the last period.
    pub devices: u32,
    /// Connections the CPE carries now.
    pub flows: u32,
}

/// `Device.DSL.Line.{i}.Status` (TR-181).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineStatus {
    /// In showtime.
    Up,
    /// No showtime.
    Down,
    /// The modem does not know.
    Unknown,
    /// Powered but idle.
    Dormant,
    /// No line interface.
    NotPresent,
    /// A lower layer is down.
    LowerLayerDown,
    /// The interface is in error.
    Error,
}

/// `Device.DSL.Line.{i}.LinkStatus` (TR-181).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkStatus {
    /// Showtime.
    Up,
    /// Training.
    Initializing,
    /// Handshake.
    EstablishingLink,
    /// No signal from the far end (a cut pair, a dead port).
    NoSignal,
    /// Administratively off.
    Disabled,
    /// In error.
    Error,
}

/// `Device.DSL.Line.{i}.Stats.Total.` (TR-181): counters since the modem started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LineStatsTotal {
    /// Seconds with at least one error.
    pub errored_secs: u64,
    /// Seconds with many errors (≥ 18 CRC in G.997.1).
    pub severely_errored_secs: u64,
}

/// `Device.DSL.Line.{i}.Stats.` (TR-181).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LineStats {
    /// Seconds since the most recent showtime began (0 when not in showtime).
    pub last_showtime_start: u64,
    /// Totals since the modem started.
    pub total: LineStatsTotal,
}

/// `Device.DSL.Channel.{i}.Stats.Total.` (TR-181): error counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStatsTotal {
    /// CRC errors detected by the modem (downstream).
    #[serde(rename = "XTURCRCErrors")]
    pub xtur_crc_errors: u64,
    /// CRC errors detected by the DSLAM (upstream).
    #[serde(rename = "XTUCCRCErrors")]
    pub xtuc_crc_errors: u64,
    /// FEC corrections at the modem (downstream).
    #[serde(rename = "XTURFECErrors")]
    pub xtur_fec_errors: u64,
    /// FEC corrections at the DSLAM (upstream).
    #[serde(rename = "XTUCFECErrors")]
    pub xtuc_fec_errors: u64,
}

/// `Device.DSL.Channel.{i}.Stats.` (TR-181).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChannelStats {
    /// Totals since the modem started.
    pub total: ChannelStatsTotal,
}

/// `Device.DSL.Channel.{i}.` (TR-181): the current bearer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Channel {
    /// Current upstream rate, kbit/s.
    pub upstream_curr_rate: u32,
    /// Current downstream rate, kbit/s.
    pub downstream_curr_rate: u32,
    /// Error counters.
    pub stats: ChannelStats,
}

/// The DSL modem's line figures: `Device.DSL.Line.{i}.` with its channel,
/// TR-181 names and units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DslLine {
    /// The interface's status.
    pub status: LineStatus,
    /// The link's training state.
    pub link_status: LinkStatus,
    /// Attainable upstream rate, kbit/s.
    pub upstream_max_bit_rate: u32,
    /// Attainable downstream rate, kbit/s.
    pub downstream_max_bit_rate: u32,
    /// Upstream SNR margin, 0.1 dB.
    pub upstream_noise_margin: i32,
    /// Downstream SNR margin, 0.1 dB.
    pub downstream_noise_margin: i32,
    /// Upstream attenuation, 0.1 dB.
    pub upstream_attenuation: i32,
    /// Downstream attenuation, 0.1 dB.
    pub downstream_attenuation: i32,
    /// Upstream transmit power, 0.1 dBmV.
    pub upstream_power: i32,
    /// Downstream transmit power, 0.1 dBmV.
    pub downstream_power: i32,
    /// Showtime and error statistics.
    pub stats: LineStats,
    /// The current bearer and its error counters.
    pub channel: Channel,
}

impl DslLine {
    /// Whether the line is in showtime.
    pub fn in_showtime(&self) -> bool {
        self.status == LineStatus::Up && self.link_status == LinkStatus::Up
    }

    /// Downstream margin in dB.
    pub fn ds_margin_db(&self) -> f64 {
        f64::from(self.downstream_noise_margin) / 10.0
    }

    /// Upstream margin in dB.
    pub fn us_margin_db(&self) -> f64 {
        f64::from(self.upstream_noise_margin) / 10.0
    }

    /// Downstream attenuation in dB.
    pub fn ds_attenuation_db(&self) -> f64 {
        f64::from(self.downstream_attenuation) / 10.0
    }
}

/// The mobile modem's radio figures (ModemManager's `--signal-get` names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Radio {
    /// Whether the modem is registered on a cell.
    pub registered: bool,
    /// Reference signal received power, dBm.
    #[serde(default)]
    pub rsrp_dbm: Option<f64>,
    /// Reference signal received quality, dB.
    #[serde(default)]
    pub rsrq_db: Option<f64>,
    /// Signal to interference plus noise, dB.
    #[serde(default)]
    pub sinr_db: Option<f64>,
    /// The serving cell's id (as the modem shows it).
    #[serde(default)]
    pub cell_id: Option<String>,
}

/// One CPE report, schema [`SCHEMA`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Schema version: [`SCHEMA`].
    pub schema: u32,
    /// The subscriber the CPE serves (the registry's name).
    pub subscriber: String,
    /// Random per CPE start (hex), with `seq` the report's identity.
    pub boot_id: String,
    /// Sequence number within the boot, from 1.
    pub seq: u64,
    /// When the CPE made the report, Unix milliseconds (CPE clock).
    pub sent_at_ms: u64,
    /// Seconds since the CPE started.
    pub uptime_s: u64,
    /// Which link carried the report (the one that was up).
    pub via: Link,
    /// Events since the previous report, oldest first.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Both access links, as the probes see them.
    pub links: Vec<LinkReport>,
    /// The LAN side.
    pub lan: Lan,
    /// The DSL modem's line figures, if the CPE has a DSL modem source.
    #[serde(default)]
    pub dsl: Option<DslLine>,
    /// The mobile modem's figures, if the CPE has a mobile modem source.
    #[serde(default)]
    pub mobile: Option<Radio>,
}

impl Report {
    /// Parses and checks one report.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(Error::TooLarge(body.len()));
        }
        // The schema first, so a newer CPE gets "schema" and not "unknown field".
        #[derive(Deserialize)]
        struct Version {
            schema: u32,
        }
        let v: Version = serde_json::from_slice(body)?;
        if v.schema != SCHEMA {
            return Err(Error::Schema(v.schema));
        }
        let r: Self = serde_json::from_slice(body)?;
        r.check()?;
        Ok(r)
    }

    /// Checks every field's range.
    pub fn check(&self) -> Result<(), Error> {
        if self.schema != SCHEMA {
            return Err(Error::Schema(self.schema));
        }
        check_name("subscriber", &self.subscriber)?;
        check_name("boot_id", &self.boot_id)?;
        if self.seq == 0 {
            return Err(field("seq", "starts at 1"));
        }
        if self.events.len() > MAX_EVENTS {
            return Err(field(
                "events",
                format!("{} events, at most {MAX_EVENTS}", self.events.len()),
            ));
        }
        if self.links.len() > Link::ALL.len() {
            return Err(field("links", "more entries than links"));
        }
        for (i, l) in self.links.iter().enumerate() {
            if self.links[..i].iter().any(|o| o.link == l.link) {
                return Err(field("links", format!("{} listed twice", l.link)));
            }
            check_f64("links.loss_pct", l.loss_pct, 0.0, 100.0)?;
            if let Some(v) = l.rtt_ms {
                check_f64("links.rtt_ms", v, 0.0, 60_000.0)?;
            }
            if let Some(v) = l.jitter_ms {
                check_f64("links.jitter_ms", v, 0.0, 60_000.0)?;
            }
        }
        if let Some(d) = &self.dsl {
            for (name, v) in [
                ("dsl.UpstreamNoiseMargin", d.upstream_noise_margin),
                ("dsl.DownstreamNoiseMargin", d.downstream_noise_margin),
            ] {
                if !(-640..=640).contains(&v) {
                    return Err(field(name, format!("{v} is outside ±64 dB")));
                }
            }
            for (name, v) in [
                ("dsl.UpstreamAttenuation", d.upstream_attenuation),
                ("dsl.DownstreamAttenuation", d.downstream_attenuation),
            ] {
                if !(0..=1280).contains(&v) {
                    return Err(field(name, format!("{v} is outside 0..128 dB")));
                }
            }
        }
        if let Some(m) = &self.mobile {
            if let Some(c) = &m.cell_id {
                check_name("mobile.cell_id", c)?;
            }
            for (name, v, lo, hi) in [
                ("mobile.rsrp_dbm", m.rsrp_dbm, -160.0, 0.0),
                ("mobile.rsrq_db", m.rsrq_db, -40.0, 10.0),
                ("mobile.sinr_db", m.sinr_db, -30.0, 50.0),
            ] {
                if let Some(v) = v {
                    check_f64(name, v, lo, hi)?;
                }
            }
        }
        Ok(())
    }

    /// The probes' view of `link`, if reported.
    pub fn link(&self, link: Link) -> Option<&LinkReport> {
        self.links.iter().find(|l| l.link == link)
    }

    /// The report as one JSON line.
    pub fn to_json(&self) -> String {
        // A report is plain data: serialising it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Checks a name the schema carries (subscriber, boot id, cell id): 1 to
/// [`MAX_NAME`] of `A-Z a-z 0-9 - _ . :`.
pub fn check_name(what: &'static str, s: &str) -> Result<(), Error> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(field(
            what,
            format!("length {} is not 1..={MAX_NAME}", s.len()),
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(field(what, "only letters, digits and -_.: are allowed"));
    }
    Ok(())
}

fn check_f64(what: &'static str, v: f64, lo: f64, hi: f64) -> Result<(), Error> {
    if !v.is_finite() || v < lo || v > hi {
        return Err(field(what, format!("{v} is outside {lo}..={hi}")));
    }
    Ok(())
}

/// A report key: derived from the subscriber's credential.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Key {
    /// A key kept as its 32 bytes (ops stores keys, never tokens).
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// The key's bytes, to store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `other` is the same key (in constant time).
    pub fn same(&self, other: &Self) -> bool {
        // blake3::Hash's equality is constant time.
        blake3::Hash::from(self.0) == blake3::Hash::from(other.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The report key for a subscriber credential (the Convert cookie or a
/// per-CPE token): BLAKE3's key derivation with a context of its own, so the
/// key signs nothing else and the credential never travels with a report.
pub fn key(credential: &[u8]) -> Key {
    Key(blake3::derive_key(
        "tandem 2026 telemetry report v1",
        credential,
    ))
}

/// The signature of a report body (hex, 64 characters).
pub fn sign(key: &Key, body: &[u8]) -> String {
    hex::encode(blake3::keyed_hash(&key.0, body).as_bytes())
}

/// Checks a body's signature (in constant time).
pub fn verify(key: &Key, body: &[u8], signature: &str) -> Result<(), Error> {
    let mut want = [0u8; 32];
    hex::decode_to_slice(signature.trim(), &mut want).map_err(|_| Error::BadSignature)?;
    let got = blake3::keyed_hash(&key.0, body);
    // blake3::Hash's equality is constant time.
    if got == blake3::Hash::from(want) {
        Ok(())
    } else {
        Err(Error::BadSignature)
    }
}

#[cfg(test)]
mod tests;
