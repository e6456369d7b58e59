//! The lab CPE's modems: files in the real tools' formats
//! (`ubus call dsl metrics`, `mmcli`'s JSON) that the CPE reads through
//! its drivers (`[telemetry] dsl = "file:..."`), written from the line
//! model ([`street::line`]) and rewritten every second by `tandem lab
//! modem` ([`run`]) from the lab's state, so the showtime counter
//! advances and what the modem says agrees with what the link does within
//! a second: a cut line has no signal, a cut mobile link no registration.
//!
//! The fixed line is one pair of [`PAIR`] trained at the link's shaped
//! rate (capped at what the pair attains): its attenuation, attainable
//! rates and margin at that rate are the model's.

use std::path::{Path, PathBuf};

use street::line::{Gauge, Impairment, Pair, Profile};
use telemetry::{
    Channel, ChannelStats, DslLine, LineStats, LineStatsTotal, LineStatus, LinkStatus, Radio,
};

use crate::profile::LinkShape;
use crate::LabError;

/// The lab home's pair: 0.8 km of 0.5 mm copper from the cabinet, VDSL2
/// 17a, ten other lines in the binder.
pub const PAIR: Pair = Pair {
    length_km: 0.8,
    gauge: Gauge::Mm05,
    profile: Profile::Vdsl2_17a,
    disturbers: 10,
};

/// The serving cell's id as the modem shows it.
pub const CELL_ID: &str = "0A1B2C01";

/// The DSL modem's file in a lab's state directory.
pub fn dsl_path(dir: &Path) -> PathBuf {
    dir.join("modem-dsl.json")
}

/// The mobile modem's file.
pub fn lte_path(dir: &Path) -> PathBuf {
    dir.join("modem-lte.json")
}

/// What the DSL modem reports for a line shaped to `shape` (cut: no
/// signal). `showtime_s` is how long the line has been in showtime.
pub fn dsl_line(shape: &LinkShape, cut: bool, showtime_s: u64) -> DslLine {
    let ch = PAIR.channel(&Impairment {
        cut,
        ..Impairment::default()
    });
    let tenths = |v: f64, lo: f64, hi: f64| (v.clamp(lo, hi) * 10.0).round() as i32;
    if cut {
        return DslLine {
            status: LineStatus::Down,
            link_status: LinkStatus::NoSignal,
            upstream_max_bit_rate: 0,
            downstream_max_bit_rate: 0,
            upstream_noise_margin: 0,
            downstream_noise_margin: 0,
            upstream_attenuation: 0,
            downstream_attenuation: 0,
            upstream_power: 0,
            downstream_power: 0,
            stats: LineStats::default(),
            channel: Channel::default(),
        };
    }
    let down = (shape.down_kbit as f64).min(ch.down.attainable_kbps);
    let up = (shape.up_kbit as f64).min(ch.up.attainable_kbps);
    DslLine {
        status: LineStatus::Up,
        link_status: LinkStatus::Up,
        upstream_max_bit_rate: ch.up.attainable_kbps as u32,
        downstream_max_bit_rate: ch.down.attainable_kbps as u32,
        upstream_noise_margin: tenths(ch.margin_db(false, up), -64.0, 64.0),
        downstream_noise_margin: tenths(ch.margin_db(true, down), -64.0, 64.0),
        upstream_attenuation: tenths(ch.up.attenuation_db, 0.0, 128.0),
        downstream_attenuation: tenths(ch.down.attenuation_db, 0.0, 128.0),
        upstream_power: ch.power.1,
        downstream_power: ch.power.0,
        stats: LineStats {
            last_showtime_start: showtime_s,
            total: LineStatsTotal::default(),
        },
        channel: Channel {
            upstream_curr_rate: up as u32,
            downstream_curr_rate: down as u32,
            stats: ChannelStats::default(),
        },
    }
}

/// What the mobile modem reports (cut: searching, no cell).
pub fn radio(cut: bool) -> Radio {
    if cut {
        Radio {
            registered: false,
            rsrp_dbm: None,
            rsrq_db: None,
            sinr_db: None,
            cell_id: None,
        }
    } else {
        Radio {
            registered: true,
            rsrp_dbm: Some(-92.0),
            rsrq_db: Some(-9.0),
            sinr_db: Some(15.0),
            cell_id: Some(CELL_ID.into()),
        }
    }
}

fn write_atomic(path: &Path, text: &str) -> Result<(), LabError> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(LabError::Io)?;
    std::fs::rename(&tmp, path).map_err(LabError::Io)
}

/// Writes both modems' files for the links' current state.
pub fn write(dir: &Path, st: &crate::topology::State) -> Result<(), LabError> {
    write_atomic(
        &dsl_path(dir),
        &modem::ubus::render(&dsl_line(&st.dsl, st.dsl_cut, st.dsl_showtime_s())),
    )?;
    write_atomic(&lte_path(dir), &modem::mmcli::render(&radio(st.lte_cut)))
}

/// The modem emulator (`tandem lab modem`): every second, the files from
/// the lab's state (so the showtime counter advances and a link's change
/// shows within a second), until the lab's state is gone (`lab down`) or
/// SIGTERM.
pub fn run(name: &str) -> Result<(), LabError> {
    let dir = crate::topology::state_dir(name);
    loop {
        match crate::topology::load_state(name) {
            Ok(st) => write(&dir, &st)?,
            // The lab is gone: nothing to emulate.
            Err(_) if !dir.exists() => return Ok(()),
            // Being rewritten: next second.
            Err(_) => {}
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
