//! The lab CPEs' modems: files in the real tools' formats (`ubus call dsl
//! metrics`, `mmcli`'s JSON) that each CPE reads through its drivers
//! (`[telemetry] dsl = "file:..."`), rewritten every second by the street
//! emulator ([`crate::fault::run`]) from each home's modem model
//! ([`street::modem`]), so the showtime counter advances and what a modem
//! says agrees with what its link does within a second: a line out of sync
//! has no signal, a mobile link off the air no registration.

use std::path::{Path, PathBuf};

use telemetry::Radio;

/// The serving cell's id as the modem shows it.
pub const CELL_ID: &str = "0A1B2C01";

/// Home `i`'s DSL modem's file in a lab's state directory.
pub fn dsl_path(dir: &Path, i: u32) -> PathBuf {
    if i == 1 {
        dir.join("modem-dsl.json")
    } else {
        dir.join(format!("modem-dsl-{i}.json"))
    }
}

/// Home `i`'s mobile modem's file.
pub fn lte_path(dir: &Path, i: u32) -> PathBuf {
    if i == 1 {
        dir.join("modem-lte.json")
    } else {
        dir.join(format!("modem-lte-{i}.json"))
    }
}

/// What a mobile modem reports on `cell` (cut: searching, no cell),
/// `sinr_drop_db` below its usual signal (a congested cell).
pub fn radio(cut: bool, cell: &str, sinr_drop_db: f64) -> Radio {
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
            sinr_db: Some(15.0 - sinr_drop_db),
            cell_id: Some(cell.into()),
        }
    }
}
