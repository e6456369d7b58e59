//! OpenWrt's DSL statistics: the JSON `ubus call dsl metrics` prints
//! (the `dsl` ubus object of `ltq-vdsl-app`/`ltq-adsl-app`, the Lantiq
//! xRX200 family and its successors), read into TR-181's
//! `Device.DSL.Line.{i}.` and `Device.DSL.Channel.{i}.`.
//!
//! The fields used, as OpenWrt prints them:
//!
//! | ubus | meaning | TR-181 |
//! |---|---|---|
//! | `up`, `state` | showtime; the modem's state in words ("Showtime with TC-Layer sync", "Training", "Idle", …) | `Status`, `LinkStatus` |
//! | `uptime` | seconds in showtime | `Stats.LastShowtimeStart` |
//! | `downstream`/`upstream` `.snr` | SNR margin, dB | `…NoiseMargin` (0.1 dB) |
//! | `.latn` (or `.satn`) | line (signal) attenuation, dB | `…Attenuation` (0.1 dB) |
//! | `.actatp` | aggregate transmit power, dBm | `…Power` (0.1 dB) |
//! | `.data_rate`, `.attndr` | net data rate and attainable rate, bit/s | `Channel.…CurrRate`, `…MaxBitRate` (kbit/s) |
//! | `errors.near`/`.far` `.es`, `.ses` | errored and severely errored seconds | `Stats.Total.ErroredSecs`, `SeverelyErroredSecs` (near end) |
//! | `.crc_p` (+ `.crcp_p`) | CRC errors | `Channel.Stats.Total.XTURCRCErrors` (near), `XTUCCRCErrors` (far) |
//! | `.fecs` | seconds with FEC corrections | `XTURFECErrors`, `XTUCFECErrors` |
//!
//! Two honest approximations: the Lantiq driver counts FEC in *seconds*
//! with corrections, not corrections, so the FEC fields are a lower bound;
//! and `actatp` is in dBm where TR-181 says dBmV (ops does not use the
//! powers). Every other field of the output is ignored, so a newer driver
//! that adds fields still parses; a field this needs that is missing or out
//! of range is an error naming it.

use serde::Deserialize;
use telemetry::{
    Channel, ChannelStats, ChannelStatsTotal, DslLine, LineStats, LineStatsTotal, LineStatus,
    LinkStatus,
};

use crate::Error;

#[derive(Deserialize)]
struct Metrics {
    #[serde(default)]
    up: Option<bool>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    uptime: Option<u64>,
    #[serde(default)]
    upstream: Option<Direction>,
    #[serde(default)]
    downstream: Option<Direction>,
    #[serde(default)]
    errors: Option<Errors>,
}

#[derive(Deserialize, Default)]
struct Direction {
    #[serde(default)]
    snr: Option<f64>,
    #[serde(default)]
    latn: Option<f64>,
    #[serde(default)]
    satn: Option<f64>,
    #[serde(default)]
    actatp: Option<f64>,
    #[serde(default)]
    data_rate: Option<u64>,
    #[serde(default)]
    attndr: Option<u64>,
}

#[derive(Deserialize, Default)]
struct Errors {
    #[serde(default)]
    near: Counters,
    #[serde(default)]
    far: Counters,
}

#[derive(Deserialize, Default)]
struct Counters {
    #[serde(default)]
    es: u64,
    #[serde(default)]
    ses: u64,
    #[serde(default)]
    fecs: u64,
    #[serde(default)]
    crc_p: u64,
    #[serde(default)]
    crcp_p: u64,
}

/// The modem's state in words → TR-181's `LinkStatus`. OpenWrt prints the
/// driver's line state names; the ones that mean "training" differ by
/// driver version, so they are matched by their words.
fn link_status(up: bool, state: &str) -> LinkStatus {
    let s = state.to_ascii_lowercase();
    if up || s.starts_with("showtime") {
        LinkStatus::Up
    } else if s.contains("handshake") {
        LinkStatus::EstablishingLink
    } else if s.contains("training")
        || s.contains("init")
        || s.contains("discovery")
        || s.contains("analysis")
        || s.contains("resync")
    {
        // "Not initialized" is the driver not running at all.
        if s.starts_with("not init") {
            LinkStatus::Disabled
        } else {
            LinkStatus::Initializing
        }
    } else if s.contains("exception") || s.contains("fail") {
        LinkStatus::Error
    } else if s.contains("disabled") {
        LinkStatus::Disabled
    } else {
        // "Idle", "Silent", "Down", "Idle request", …: no far end.
        LinkStatus::NoSignal
    }
}

/// Tenths of a unit, range checked.
fn tenths(what: &'static str, v: Option<f64>, lo: f64, hi: f64) -> Result<i32, Error> {
    let v = v.ok_or(Error::Missing(what))?;
    if !v.is_finite() || v < lo || v > hi {
        return Err(Error::Range {
            field: what,
            value: v,
        });
    }
    // In range, so the cast cannot overflow.
    Ok((v * 10.0).round() as i32)
}

fn kbit(what: &'static str, bits: Option<u64>) -> Result<u32, Error> {
    let b = bits.ok_or(Error::Missing(what))?;
    u32::try_from(b / 1000).map_err(|_| Error::Range {
        field: what,
        value: b as f64,
    })
}

/// Parses `ubus call dsl metrics` output.
pub fn parse(json: &[u8]) -> Result<DslLine, Error> {
    let m: Metrics = serde_json::from_slice(json).map_err(Error::Json)?;
    let state = m.state.unwrap_or_default();
    let up = m.up.unwrap_or(false);
    let link_status = link_status(up, &state);
    let showtime = link_status == LinkStatus::Up;
    let ds = m.downstream.unwrap_or_default();
    let us = m.upstream.unwrap_or_default();
    let errors = m.errors.unwrap_or_default();
    // Out of showtime the modem has no margin or rates to give: it prints
    // zeros or leaves them out.
    let (ds_margin, us_margin, ds_att, us_att, ds_pow, us_pow) = if showtime {
        (
            tenths("downstream.snr", ds.snr, -64.0, 64.0)?,
            tenths("upstream.snr", us.snr, -64.0, 64.0)?,
            tenths("downstream.latn", ds.latn.or(ds.satn), 0.0, 128.0)?,
            tenths("upstream.latn", us.latn.or(us.satn), 0.0, 128.0)?,
            tenths("downstream.actatp", ds.actatp.or(Some(0.0)), -100.0, 100.0)?,
            tenths("upstream.actatp", us.actatp.or(Some(0.0)), -100.0, 100.0)?,
        )
    } else {
        let att = |d: &Direction, what| {
            d.latn
                .or(d.satn)
                .map_or(Ok(0), |v| tenths(what, Some(v), 0.0, 128.0))
        };
        (
            0,
            0,
            att(&ds, "downstream.latn")?,
            att(&us, "upstream.latn")?,
            0,
            0,
        )
    };
    let rate = |what, v: Option<u64>| {
        if showtime {
            kbit(what, v)
        } else {
            Ok(v.map_or(Ok(0), |b| kbit(what, Some(b)))?)
        }
    };
    Ok(DslLine {
        status: if showtime {
            LineStatus::Up
        } else if link_status == LinkStatus::Disabled {
            LineStatus::Dormant
        } else {
            LineStatus::Down
        },
        link_status,
        upstream_max_bit_rate: rate("upstream.attndr", us.attndr)?,
        downstream_max_bit_rate: rate("downstream.attndr", ds.attndr)?,
        upstream_noise_margin: us_margin,
        downstream_noise_margin: ds_margin,
        upstream_attenuation: us_att,
        downstream_attenuation: ds_att,
        upstream_power: us_pow,
        downstream_power: ds_pow,
        stats: LineStats {
            last_showtime_start: if showtime { m.uptime.unwrap_or(0) } else { 0 },
            total: LineStatsTotal {
                errored_secs: errors.near.es,
                severely_errored_secs: errors.near.ses,
            },
        },
        channel: Channel {
            upstream_curr_rate: if showtime {
                kbit("upstream.data_rate", us.data_rate)?
            } else {
                0
            },
            downstream_curr_rate: if showtime {
                kbit("downstream.data_rate", ds.data_rate)?
            } else {
                0
            },
            stats: ChannelStats {
                total: ChannelStatsTotal {
                    xtur_crc_errors: errors.near.crc_p.saturating_add(errors.near.crcp_p),
                    xtuc_crc_errors: errors.far.crc_p.saturating_add(errors.far.crcp_p),
                    xtur_fec_errors: errors.near.fecs,
                    xtuc_fec_errors: errors.far.fecs,
                },
            },
        },
    })
}

/// The inverse of [`parse`], for the lab's line model and tests: the JSON
/// an OpenWrt modem would print for `line` (with the fields [`parse`] reads
/// and the ones around them a real modem prints).
pub fn render(line: &DslLine) -> String {
    let showtime = line.in_showtime();
    let dir = |margin: i32, att: i32, pow: i32, rate: u32, max: u32| {
        serde_json::json!({
            "vector": false,
            "trellis": true,
            "bitswap": true,
            "retx": false,
            "virtual_noise": false,
            "interleave_delay": 0,
            "data_rate": u64::from(rate) * 1000,
            "latn": f64::from(att) / 10.0,
            "satn": f64::from(att) / 10.0,
            "snr": f64::from(margin) / 10.0,
            "actps": -90.1,
            "actatp": f64::from(pow) / 10.0,
            "attndr": u64::from(max) * 1000,
        })
    };
    let t = line.channel.stats.total;
    let v = serde_json::json!({
        "api_version": "4.17.18.6",
        "firmware_version": "5.9.1.4.0.7",
        "chipset": "Lantiq-VRX200",
        "driver_version": "1.5.17.6",
        "state": match line.link_status {
            LinkStatus::Up => "Showtime with TC-Layer sync",
            LinkStatus::Initializing => "Training",
            LinkStatus::EstablishingLink => "Handshake",
            LinkStatus::NoSignal => "Idle",
            LinkStatus::Disabled => "Not initialized",
            LinkStatus::Error => "Exception",
        },
        "state_num": if showtime { 7 } else { 1 },
        "up": showtime,
        "uptime": line.stats.last_showtime_start,
        "mode": "G.993.2 (VDSL2, Profile 17a)",
        "upstream": dir(
            line.upstream_noise_margin,
            line.upstream_attenuation,
            line.upstream_power,
            line.channel.upstream_curr_rate,
            line.upstream_max_bit_rate,
        ),
        "downstream": dir(
            line.downstream_noise_margin,
            line.downstream_attenuation,
            line.downstream_power,
            line.channel.downstream_curr_rate,
            line.downstream_max_bit_rate,
        ),
        "errors": {
            "near": {
                "es": line.stats.total.errored_secs,
                "ses": line.stats.total.severely_errored_secs,
                "loss": 0, "uas": 0, "lofs": 0,
                "fecs": t.xtur_fec_errors,
                "hec": 0, "ibe": 0,
                "crc_p": t.xtur_crc_errors,
                "crcp_p": 0, "cv_p": 0, "cvp_p": 0,
            },
            "far": {
                "es": 0, "ses": 0, "loss": 0, "uas": 0, "lofs": 0,
                "fecs": t.xtuc_fec_errors,
                "hec": 0, "ibe": 0,
                "crc_p": t.xtuc_crc_errors,
                "crcp_p": 0, "cv_p": 0, "cvp_p": 0,
            },
        },
    });
    v.to_string()
}
