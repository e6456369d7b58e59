//! The rule baseline: how operators' DLM and first-line diagnosis decide
//! today, from one line's own recent counters and state (thresholds on
//! margin, errors and retrains over a 15-minute bin, the modem's sync
//! state, a dying gasp), with the CPE's basic TR-069 figures (uptime, LAN
//! state, the mobile modem's registration). No correlation across homes, no
//! history beyond the bin, no probes. Tandem's engine is judged against it.

use hybrid::{Dispatch, Location};

use crate::history::Home;

/// The baseline's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Where.
    pub location: Location,
    /// Whom to send.
    pub dispatch: Dispatch,
    /// The rule.
    pub rule: &'static str,
}

fn v(location: Location, rule: &'static str) -> Verdict {
    Verdict {
        location,
        dispatch: location.dispatch(),
        rule,
    }
}

/// The baseline's verdict on `h` at `now_ms`, with CPEs reporting every
/// `period_s`.
pub fn diagnose(h: &Home, now_ms: u64, period_s: f64) -> Verdict {
    let Some(last) = h.last else {
        return v(Location::Line, "no-data");
    };
    let silent = now_ms.saturating_sub(h.last_ms) as f64 / 1000.0 > (2.5 * period_s).max(25.0);
    if silent {
        // The DSLAM sees loss of power (dying gasp) or loss of signal.
        return if last.gasp {
            v(Location::Customer, "dying-gasp")
        } else {
            v(Location::Line, "loss-of-signal")
        };
    }
    if !last.showtime {
        return v(Location::Line, "no-sync");
    }
    let from = (now_ms / 60_000).saturating_sub(15);
    let bin: Vec<_> = h.since(from).collect();
    let retrains: u32 = bin.iter().map(|b| u32::from(b.retrains)).sum();
    let es: u32 = bin.iter().map(|b| u32::from(b.es)).sum();
    let crc: u64 = bin.iter().map(|b| u64::from(b.crc)).sum();
    let boots: u32 = bin.iter().map(|b| u32::from(b.boots)).sum();
    let margin = last.ds_margin.min(last.us_margin);
    if boots >= 1 && last.uptime_s < 900 {
        return v(Location::Home, "cpe-restarted");
    }
    if !last.lan_carrier {
        return v(Location::Customer, "lan-down");
    }
    if retrains >= 2 || margin < 3.0 {
        return v(Location::Line, "unstable-line");
    }
    if es >= 30 || crc >= 500 {
        // High errors with a good margin: impulse noise in the premises.
        return if margin >= 6.0 {
            v(Location::Home, "impulse-noise")
        } else {
            v(Location::Line, "errors")
        };
    }
    if !last.registered || !last.lte_probe_up {
        return v(Location::Mobile, "mobile-down");
    }
    // The line tests clean: escalate to the NOC.
    v(Location::Core, "line-clean")
}
