//! The faults of a hybrid-access network and what each does to the world:
//! to the DSL pair's physics ([`line::Impairment`](crate::line::Impairment)),
//! to the CPE (power, LAN, reboots), to the mobile link and to the core.
//! The lab injects them into real namespaces and the simulated fleet into
//! its model, from the same [`Effect`].

use std::fmt;
use std::str::FromStr;

use hybrid::Location;
use serde::{Deserialize, Serialize};

use crate::line::Impairment;

/// What a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One home.
    Home,
    /// A street cabinet (all of its lines, or one line card's).
    Cabinet,
    /// A cell (every home it serves).
    Cell,
    /// The core (every home).
    Core,
}

macro_rules! faults {
    ($( $v:ident => $name:literal, $loc:ident, $scope:ident, $doc:literal; )*) => {
        /// A kind of fault.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FaultKind {
            $( #[doc = $doc] $v, )*
        }

        impl FaultKind {
            /// Every kind.
            pub const ALL: &'static [Self] = &[$(Self::$v),*];

            /// The name in the lab's CLI and the campaigns.
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => $name,)* }
            }

            /// Where the fault is: the diagnosis ops should reach.
            pub fn location(self) -> Location {
                match self { $(Self::$v => Location::$loc,)* }
            }

            /// What it hits.
            pub fn scope(self) -> Scope {
                match self { $(Self::$v => Scope::$scope,)* }
            }

            /// One line on what it is.
            pub fn describe(self) -> &'static str {
                match self { $(Self::$v => $doc,)* }
            }
        }
    };
}

faults! {
    MissingMicrofilter => "missing-microfilter", Home, Home,
        "a phone plugged in without a microfilter: margin dips and errors while it is off the hook, retrains when it rings";
    InHomeWiring => "in-home-wiring", Home, Home,
        "bad in-home wiring: extra loss and impulse noise from the house";
    RebootLoop => "reboot-loop", Home, Home,
        "the CPE restarts every few minutes";
    PowerLoss => "power-loss", Customer, Home,
        "power off at home: a dying gasp, then silence";
    LanUnplugged => "lan-unplugged", Customer, Home,
        "the LAN cable is unplugged: no carrier, no devices";
    WaterIngress => "water-ingress", Line, Home,
        "water in the drop: loss and noise grow, the margin decays, errors, retrains";
    BrokenPair => "broken-pair", Line, Home,
        "the pair is broken: loss of sync";
    Crosstalk => "crosstalk", Line, Home,
        "a new neighbour's line in the binder: crosstalk, the margin drops at once";
    CabinetPower => "cabinet-power", Cabinet, Cabinet,
        "the street cabinet lost power: every line on it loses sync";
    LineCard => "line-card", Cabinet, Cabinet,
        "one line card of the cabinet is failing: its lines err, lose packets, retrain or drop";
    CellOutage => "cell-outage", Mobile, Cell,
        "the cell is off the air";
    CellCongestion => "cell-congestion", Mobile, Cell,
        "the cell is congested: delay and loss on the mobile link";
    HagUnreachable => "hag-unreachable", Core, Core,
        "the HAG does not answer on either link";
    UpstreamLoss => "upstream-loss", Core, Core,
        "the HAG's upstream loses connections to the internet";
}

/// A fault name that is not one of the kinds.
#[derive(Debug, thiserror::Error)]
#[error("unknown fault {0:?} (expected one of: {names})", names = FaultKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownFault(pub String);

impl FromStr for FaultKind {
    type Err = UnknownFault;
    fn from_str(s: &str) -> Result<Self, UnknownFault> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownFault(s.to_string()))
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for FaultKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for FaultKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a fault does at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Effect {
    /// The pair's impairment.
    pub line: Impairment,
    /// Impulse-noise events per minute (bursts of errors regardless of margin).
    pub impulses_per_min: f64,
    /// Packets lost on the fixed line beyond the modem (a failing line card), percent.
    pub dsl_loss_pct: f64,
    /// The modem retrains now (a ringing unfiltered phone).
    pub retrain: bool,
    /// The CPE has no power.
    pub unpowered: bool,
    /// The LAN port has no carrier.
    pub lan_down: bool,
    /// The CPE is restarting (down for this long in each cycle).
    pub rebooting: bool,
    /// The mobile link is off the air.
    pub lte_down: bool,
    /// Extra round trip on the mobile link, ms.
    pub lte_extra_rtt_ms: f64,
    /// Loss on the mobile link, percent.
    pub lte_loss_pct: f64,
    /// SINR lost, dB.
    pub sinr_drop_db: f64,
    /// The HAG answers no probe.
    pub hag_down: bool,
    /// Share of the HAG's upstream connections that fail.
    pub upstream_error_ratio: f64,
}

impl Effect {
    /// Both effects at once (a home with two faults, or a home fault under
    /// a cabinet one): the worse of each figure.
    pub fn and(self, o: Self) -> Self {
        Self {
            line: Impairment {
                extra_loss_db: self.line.extra_loss_db + o.line.extra_loss_db,
                noise_db: self.line.noise_db.max(o.line.noise_db),
                low_band_noise_db: self.line.low_band_noise_db.max(o.line.low_band_noise_db),
                extra_disturbers: self.line.extra_disturbers + o.line.extra_disturbers,
                cut: self.line.cut || o.line.cut,
            },
            impulses_per_min: self.impulses_per_min + o.impulses_per_min,
            dsl_loss_pct: self.dsl_loss_pct.max(o.dsl_loss_pct),
            retrain: self.retrain || o.retrain,
            unpowered: self.unpowered || o.unpowered,
            lan_down: self.lan_down || o.lan_down,
            rebooting: self.rebooting || o.rebooting,
            lte_down: self.lte_down || o.lte_down,
            lte_extra_rtt_ms: self.lte_extra_rtt_ms.max(o.lte_extra_rtt_ms),
            lte_loss_pct: self.lte_loss_pct.max(o.lte_loss_pct),
            sinr_drop_db: self.sinr_drop_db.max(o.sinr_drop_db),
            hag_down: self.hag_down || o.hag_down,
            upstream_error_ratio: self.upstream_error_ratio.max(o.upstream_error_ratio),
        }
    }
}

/// A deterministic hash of (seed, n) in 0..1, for the schedules of
/// episodic faults (the same fault behaves the same in the lab and in a
/// re-run of a campaign).
fn unit(seed: u64, n: u64) -> f64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// What fault `kind` of `severity` (0..=1) does `elapsed_s` seconds after
/// its onset. `seed` fixes the fault's own schedule (when an unfiltered
/// phone is picked up, how fast water gets in).
pub fn effect(kind: FaultKind, severity: f64, elapsed_s: f64, seed: u64) -> Effect {
    let s = severity.clamp(0.0, 1.0);
    let t = elapsed_s.max(0.0);
    let mut e = Effect::default();
    match kind {
        FaultKind::MissingMicrofilter => {
            // The phone is used every 6 to 16 minutes for 1.5 to 4 minutes;
            // each call starts with a ring, which retrains the line half of
            // the time. On hook it still loads the line a little.
            let period = 360.0 + 600.0 * unit(seed, 1);
            let n = (t / period).floor();
            let into = t - n * period;
            let call = 90.0 + 150.0 * unit(seed, 2 + n as u64);
            e.line.extra_loss_db = 0.3;
            e.line.low_band_noise_db = 10.0;
            if into < call {
                e.line.low_band_noise_db = 45.0 + 30.0 * s;
                e.impulses_per_min = 2.0 + 6.0 * s;
                e.retrain = into < 60.0 && unit(seed, 1000 + n as u64) < 0.5;
            }
        }
        FaultKind::InHomeWiring => {
            e.line.extra_loss_db = 2.0 + 5.0 * s;
            e.line.noise_db = 1.0 + 3.0 * s;
            e.impulses_per_min = 1.0 + 5.0 * s;
        }
        FaultKind::RebootLoop => {
            // Up for 2 to 5 minutes, then 60 s restarting.
            let period = 180.0 + 180.0 * (1.0 - s) + 60.0;
            e.rebooting = t % period >= period - 60.0;
        }
        FaultKind::PowerLoss => e.unpowered = true,
        FaultKind::LanUnplugged => e.lan_down = true,
        FaultKind::WaterIngress => {
            // Water gets in over 20 to 80 minutes.
            let ramp = 1200.0 + 3600.0 * unit(seed, 3);
            let w = (t / ramp).min(1.0);
            e.line.extra_loss_db = (3.0 + 9.0 * s) * w;
            e.line.noise_db = (1.0 + 5.0 * s) * w;
            e.impulses_per_min = (0.5 + 3.0 * s) * w;
        }
        FaultKind::BrokenPair | FaultKind::CabinetPower => e.line.cut = true,
        FaultKind::Crosstalk => {
            e.line.extra_disturbers = 15 + (45.0 * s) as u32;
            e.line.noise_db = 2.0 * s;
        }
        FaultKind::LineCard => {
            if s >= 0.85 {
                e.line.cut = true;
            } else {
                e.line.noise_db = 4.0 + 10.0 * s;
                e.impulses_per_min = 6.0 + 30.0 * s;
                e.dsl_loss_pct = 2.0 + 18.0 * s;
            }
        }
        FaultKind::CellOutage => e.lte_down = true,
        FaultKind::CellCongestion => {
            e.lte_extra_rtt_ms = 80.0 + 320.0 * s;
            e.lte_loss_pct = 1.0 + 9.0 * s;
            e.sinr_drop_db = 3.0 * s;
        }
        FaultKind::HagUnreachable => e.hag_down = true,
        FaultKind::UpstreamLoss => e.upstream_error_ratio = 0.1 + 0.5 * s,
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_every_class_has_faults() {
        for &k in FaultKind::ALL {
            assert_eq!(k.name().parse::<FaultKind>().unwrap(), k);
        }
        for loc in [
            Location::Home,
            Location::Line,
            Location::Cabinet,
            Location::Mobile,
            Location::Core,
            Location::Customer,
        ] {
            assert!(FaultKind::ALL.iter().any(|k| k.location() == loc), "{loc}");
        }
        let e = "flood".parse::<FaultKind>().unwrap_err().to_string();
        assert!(e.contains("water-ingress"), "{e}");
    }

    #[test]
    fn water_gets_worse_and_a_phone_comes_and_goes() {
        let early = effect(FaultKind::WaterIngress, 0.8, 60.0, 7);
        let late = effect(FaultKind::WaterIngress, 0.8, 6000.0, 7);
        assert!(late.line.extra_loss_db > early.line.extra_loss_db + 5.0);
        let calls: Vec<bool> = (0..120)
            .map(|m| {
                effect(FaultKind::MissingMicrofilter, 0.8, m as f64 * 30.0, 7)
                    .line
                    .low_band_noise_db
                    > 10.0
            })
            .collect();
        assert!(calls.iter().any(|&c| c) && calls.iter().any(|&c| !c));
        let boots = (0..60)
            .filter(|m| effect(FaultKind::RebootLoop, 0.5, *m as f64 * 10.0, 1).rebooting)
            .count();
        assert!(boots > 0 && boots < 60);
    }
}
