//! ModemManager's view of the mobile modem: the JSON of
//! `mmcli -m any --output-json` (state, registration),
//! `mmcli -m any --signal-get --output-json` (RSRP, RSRQ, SNR; needs
//! `--signal-setup=SECONDS` once, which the driver runs) and
//! `mmcli -m any --location-get --output-json` (the serving cell).
//!
//! Each prints `{"modem": {...}}`; the objects are merged, so one file with
//! all three parts (what the lab writes) reads the same as three commands.
//! mmcli prints every value as a string, `--` when unknown:
//!
//! | mmcli | meaning | report |
//! |---|---|---|
//! | `modem.generic.state` | `registered`, `connected`, `connecting`, `disconnecting` mean attached; `searching`, `enabled`, `disabled`, `failed`, `locked`, … do not | `registered` |
//! | `modem.3gpp.registration-state` | `home`, `roaming` (and the `-sms-only`, `-csfb-not-preferred` forms) mean registered | `registered` |
//! | `modem.signal.lte.rsrp`, `.rsrq`, `.snr` | dBm, dB, dB | `rsrp_dbm`, `rsrq_db`, `sinr_db` |
//! | `modem.signal.5g.…` | the same on a 5G cell, used when LTE has none | |
//! | `modem.location.3gpp.cid` | the cell id (hex) | `cell_id` |
//!
//! A value out of its physical range is dropped (`None`), not an error: a
//! modem mid-handover prints odd figures, and the rest of the report is
//! still worth sending.

use serde_json::Value;
use telemetry::Radio;

use crate::Error;

/// Merges `b`'s `modem` object into `a`'s.
fn merge(into: &mut serde_json::Map<String, Value>, from: serde_json::Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str().filter(|s| *s != "--" && !s.is_empty())
}

fn figure(v: &Value, path: &[&str], lo: f64, hi: f64) -> Option<f64> {
    let f: f64 = text(v, path)?.trim().parse().ok()?;
    (f.is_finite() && (lo..=hi).contains(&f)).then_some(f)
}

/// Parses one or more mmcli JSON documents (modem, signal, location) into
/// the radio figures.
pub fn parse(docs: &[&[u8]]) -> Result<Radio, Error> {
    let mut modem = serde_json::Map::new();
    for d in docs {
        let v: Value = serde_json::from_slice(d).map_err(Error::Json)?;
        match v.get("modem") {
            Some(Value::Object(m)) => merge(&mut modem, m.clone()),
            _ => return Err(Error::Missing("modem")),
        }
    }
    let m = Value::Object(modem);
    let state = text(&m, &["generic", "state"]).unwrap_or("unknown");
    let reg = text(&m, &["3gpp", "registration-state"]).unwrap_or("unknown");
    let attached = matches!(
        state,
        "registered" | "connected" | "connecting" | "disconnecting"
    );
    // Without a registration state (some plugins leave it out), the
    // modem's state alone says it is attached.
    let registered =
        attached && (reg.starts_with("home") || reg.starts_with("roaming") || reg == "unknown");
    let tech = if text(&m, &["signal", "lte", "rsrp"]).is_some() {
        "lte"
    } else {
        "5g"
    };
    let cell = text(&m, &["location", "3gpp", "cid"])
        .map(|c| c.trim().to_owned())
        .filter(|c| c.len() <= telemetry::MAX_NAME && c.bytes().all(|b| b.is_ascii_alphanumeric()));
    Ok(Radio {
        registered,
        rsrp_dbm: figure(&m, &["signal", tech, "rsrp"], -160.0, 0.0),
        rsrq_db: figure(&m, &["signal", tech, "rsrq"], -40.0, 10.0),
        sinr_db: figure(&m, &["signal", tech, "snr"], -30.0, 50.0),
        cell_id: if registered { cell } else { None },
    })
}

/// The inverse of [`parse`] for the lab and tests: one document with the
/// three parts as mmcli prints them.
pub fn render(r: &Radio) -> String {
    let f = |v: Option<f64>| v.map_or_else(|| "--".to_owned(), |v| format!("{v:.2}"));
    serde_json::json!({
        "modem": {
            "generic": {
                "state": if r.registered { "connected" } else { "searching" },
                "access-technologies": if r.registered { vec!["lte"] } else { vec![] },
                "signal-quality": { "recent": "yes", "value": "60" },
            },
            "3gpp": {
                "registration-state": if r.registered { "home" } else { "searching" },
                "operator-name": "Tandem Lab",
            },
            "signal": {
                "refresh": { "rate": "10" },
                "lte": {
                    "rsrp": f(r.rsrp_dbm),
                    "rsrq": f(r.rsrq_db),
                    "snr": f(r.sinr_db),
                    "rssi": "--",
                    "error-rate": "--",
                },
                "5g": { "rsrp": "--", "rsrq": "--", "snr": "--", "error-rate": "--" },
            },
            "location": {
                "3gpp": {
                    "cid": r.cell_id.clone().unwrap_or_else(|| "--".into()),
                    "lac": "--",
                    "tac": "00A1",
                    "mcc": "206",
                    "mnc": "01",
                },
            },
        }
    })
    .to_string()
}
