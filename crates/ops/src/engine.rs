//! Tandem's diagnosis: where a home's fault is, whom to send, and why.
//!
//! It reads more than a line's own counters, which is all a classic DLM
//! rule sees ([`crate::baseline`]):
//! - **correlation**: the other lines of the same street cabinet and line
//!   card, the other homes of the same cell, the whole fleet for the core;
//! - **history**: the home's own healthy reference and the shape of a
//!   change over time (water rises over tens of minutes, a wiring fault is
//!   a step, an unfiltered phone comes and goes);
//! - **both links' views**: the modem in sync but the probes over it
//!   losing packets points past the modem; a CPE still reporting over the
//!   mobile link with the fixed line dead is a line fault, a CPE silent on
//!   both with a dying gasp is a power cut at home;
//! - **missing data**: silence is evidence, and so is the HAG's report (or
//!   its absence).
//!
//! Every rule states its evidence in words and numbers.

use hybrid::{Dispatch, Location};
use serde::Serialize;
use telemetry::{HagReport, Report};

use crate::features::Features;
use crate::history::Home;
use crate::inventory::Inventory;

/// What a diagnosis groups: the incident it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Group {
    /// One home.
    Home(String),
    /// A whole street cabinet.
    Cabinet(String),
    /// One line card of a cabinet.
    Card(String, u32),
    /// A cell.
    Cell(String),
    /// The core.
    Core,
}

/// One home's diagnosis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnosis {
    /// The home.
    pub subscriber: String,
    /// Where the fault is.
    pub location: Location,
    /// Whom to send.
    pub dispatch: Dispatch,
    /// The likely fault, in the lab's vocabulary (`water-ingress`, ...).
    pub fault: &'static str,
    /// What to do.
    pub action: &'static str,
    /// How sure, 0..1.
    pub confidence: f64,
    /// Why, in words and numbers.
    pub evidence: Vec<String>,
    /// The incident it belongs to.
    pub group: Group,
    /// The rule that decided.
    pub rule: &'static str,
}

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often CPEs report, seconds (silence is judged against it).
    pub report_period_s: f64,
    /// How often the HAG reports, seconds.
    pub hag_period_s: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            report_period_s: 10.0,
            hag_period_s: 10.0,
        }
    }
}

/// The HAG's recent reports: `(sent_at_ms, connects, errors)`, the last
/// [`UPSTREAM_WINDOW_MS`].
#[derive(Clone, Debug, Default)]
struct HagState {
    last_ms: u64,
    reports: std::collections::VecDeque<(u64, u64, u64)>,
}

/// How far back the upstream's failure ratio looks, at most.
const UPSTREAM_WINDOW_MS: u64 = 5 * 60_000;
/// The ratio is judged on the last minute of connections (so it follows a
/// fault's start and end within a minute) ...
const UPSTREAM_RECENT_MS: u64 = 60_000;
/// ... or further back, when the minute had fewer than this many.
const UPSTREAM_MIN: u64 = 20;

/// What the HAG last said about one subscriber.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// The HAG report's date.
    at_ms: u64,
    /// When the HAG last heard from the subscriber.
    last_seen_ms: u64,
    connections: u32,
}

/// The engine: inventory, every home's history, the HAG's view.
#[derive(Debug)]
pub struct Engine {
    inventory: Inventory,
    homes: Vec<Home>,
    hag: HagState,
    /// Each home as the HAG last listed it.
    seen: Vec<Option<Seen>>,
    settings: Settings,
    unknown: u64,
    /// The fleet's share of homes whose probes fail on both links, per
    /// minute (one pass over the fleet per minute, not per diagnosis).
    fleet_share: std::cell::Cell<Option<(u64, f64)>>,
}

/// A report from a subscriber the inventory does not list.
#[derive(Debug, thiserror::Error)]
#[error("subscriber {0:?} is not in the inventory")]
pub struct UnknownSubscriber(pub String);

/// What the other homes of a cabinet, a line card or a cell show now.
struct Neighbours {
    reporting: u32,
    lost: u32,
    degraded: u32,
    /// Out of showtime and training again, with signal, now.
    training: u32,
    lte_down: u32,
    lte_bad: u32,
}

impl Neighbours {
    /// Whether `bad` of them, and this home, are at least 60 % of the
    /// reporting homes counting this one.
    fn most_with_me(&self, bad: u32) -> bool {
        f64::from(bad + 1) >= 0.6 * f64::from(self.reporting + 1)
    }

    /// Most of them lost sync with this home (at least two others).
    fn lost_sync(&self) -> bool {
        self.lost >= 2 && self.most_with_me(self.lost)
    }

    /// Most of them lost sync, err or dropped out of showtime with this
    /// home (at least two others of at least two reporting): a failing
    /// line card. A line that retrains at the same moment is as much a
    /// sign of the card as one that errs.
    fn failing(&self) -> bool {
        let bad = self.card_bad();
        self.reporting >= 2 && bad >= 2 && self.most_with_me(bad)
    }

    /// The others that lost sync, err or train again now.
    fn card_bad(&self) -> u32 {
        self.lost + self.degraded + self.training
    }

    /// Whether `n` of the others are at least `frac` of those reporting.
    fn share_at_least(&self, n: u32, frac: f64) -> bool {
        self.reporting > 0 && f64::from(n) >= frac * f64::from(self.reporting)
    }
}

impl Engine {
    /// An engine for `inventory`.
    pub fn new(inventory: Inventory, settings: Settings) -> Self {
        let homes = vec![Home::default(); inventory.len()];
        Self {
            seen: vec![None; inventory.len()],
            inventory,
            homes,
            hag: HagState::default(),
            settings,
            unknown: 0,
            fleet_share: std::cell::Cell::new(None),
        }
    }

    /// The inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Reports refused because their subscriber is unknown.
    pub fn unknown_reports(&self) -> u64 {
        self.unknown
    }

    /// One home's history.
    pub fn home(&self, i: usize) -> &Home {
        &self.homes[i]
    }

    /// Records that a technician repaired `subscriber`'s fault at `at_ms`
    /// (its incident resolved): the errors, retrains and episodes before
    /// it no longer count, for the home itself and as a neighbour. Its
    /// healthy reference is kept. Unknown subscribers are ignored.
    pub fn repaired(&mut self, subscriber: &str, at_ms: u64) {
        if let Some(i) = self.inventory.index(subscriber) {
            self.homes[i].repaired(at_ms);
        }
    }

    /// Folds in a CPE report that arrived at `arrival_ms`.
    pub fn ingest(&mut self, r: &Report, arrival_ms: u64) -> Result<usize, UnknownSubscriber> {
        let Some(i) = self.inventory.index(&r.subscriber) else {
            self.unknown += 1;
            return Err(UnknownSubscriber(r.subscriber.clone()));
        };
        self.homes[i].ingest(r, arrival_ms);
        Ok(i)
    }

    /// Folds in a HAG report.
    pub fn ingest_hag(&mut self, r: &HagReport) {
        self.hag.last_ms = self.hag.last_ms.max(r.sent_at_ms);
        if r.upstream_connects > 0 {
            self.hag
                .reports
                .push_back((r.sent_at_ms, r.upstream_connects, r.upstream_errors));
        }
        let from = self.hag.last_ms.saturating_sub(UPSTREAM_WINDOW_MS);
        while self.hag.reports.front().is_some_and(|x| x.0 < from) || self.hag.reports.len() > 4_096
        {
            self.hag.reports.pop_front();
        }
        for v in &r.subscribers {
            if let Some(i) = self.inventory.index(&v.subscriber) {
                if self.seen[i].is_none_or(|s| s.at_ms <= r.sent_at_ms) {
                    self.seen[i] = Some(Seen {
                        at_ms: r.sent_at_ms,
                        last_seen_ms: v.last_seen_ms.min(r.sent_at_ms),
                        connections: v.connections,
                    });
                }
            }
        }
    }

    /// Whether the HAG, reporting now, has heard from home `i` within the
    /// silence window: its traffic flows though its reports do not arrive.
    /// `Some(false)`: the HAG reports and has not; `None`: no HAG view.
    fn hag_hears(&self, i: usize, now_ms: u64) -> Option<(bool, Option<Seen>)> {
        if self.hag.last_ms == 0 || self.hag_silent(now_ms) {
            return None;
        }
        let window = (self.silent_after_s() * 1000.0) as u64;
        let seen = self.seen[i];
        let heard = seen.is_some_and(|s| {
            now_ms.saturating_sub(s.at_ms) <= window
                && now_ms.saturating_sub(s.last_seen_ms) <= window
        });
        Some((heard, seen))
    }

    /// A CPE is silent after two and a half periods without a report (one
    /// lost report is noise; two in a row are not).
    fn silent_after_s(&self) -> f64 {
        (2.5 * self.settings.report_period_s).max(25.0)
    }

    fn hag_silent(&self, now_ms: u64) -> bool {
        self.hag.last_ms > 0
            && now_ms.saturating_sub(self.hag.last_ms) as f64 / 1000.0
                > (3.0 * self.settings.hag_period_s).max(45.0)
    }

    /// The upstream's failure ratio over the last minute's connections
    /// (further back, up to 5 minutes, while fewer than [`UPSTREAM_MIN`]),
    /// if at least [`UPSTREAM_MIN`] were tried.
    fn upstream_error_ratio(&self, now_ms: u64) -> Option<f64> {
        let (recent, oldest) = (
            now_ms.saturating_sub(UPSTREAM_RECENT_MS),
            now_ms.saturating_sub(UPSTREAM_WINDOW_MS),
        );
        let (mut c, mut e) = (0u64, 0u64);
        for &(at, rc, re) in self.hag.reports.iter().rev() {
            if at < oldest || (at < recent && c >= UPSTREAM_MIN) {
                break;
            }
            c += rc;
            e += re;
        }
        (c >= UPSTREAM_MIN).then(|| e as f64 / c as f64)
    }

    fn neighbours(&self, homes: &[usize], me: usize, now_ms: u64) -> Neighbours {
        let mut n = Neighbours {
            reporting: 0,
            lost: 0,
            degraded: 0,
            training: 0,
            lte_down: 0,
            lte_bad: 0,
        };
        for &j in homes {
            if j == me {
                continue;
            }
            let f = Features::of(&self.homes[j], now_ms);
            if f.silent_s > self.silent_after_s() || f.minutes == 0 {
                continue;
            }
            n.reporting += 1;
            let lost = !f.showtime && (f.no_signal || f.no_signal_min_10m >= 2);
            n.lost += u32::from(lost);
            n.degraded += u32::from(f.showtime && f.dsl_degraded());
            n.training += u32::from(!lost && !f.showtime && f.training);
            n.lte_down += u32::from(f.lte_down());
            n.lte_bad += u32::from(f.lte_bad());
        }
        n
    }

    /// The homes on home `i`'s line card (itself included).
    fn card_homes(&self, i: usize) -> Vec<usize> {
        let card = self.inventory.row(i).card;
        self.inventory
            .cabinet_homes(i)
            .iter()
            .copied()
            .filter(|&j| self.inventory.row(j).card == card)
            .collect()
    }

    fn fleet_probe_fail_share(&self, now_ms: u64) -> f64 {
        let minute = now_ms / 60_000;
        if let Some((m, share)) = self.fleet_share.get() {
            if m == minute {
                return share;
            }
        }
        let share = self.fleet_probe_fail_share_now(now_ms);
        self.fleet_share.set(Some((minute, share)));
        share
    }

    fn fleet_probe_fail_share_now(&self, now_ms: u64) -> f64 {
        let (mut n, mut fail) = (0u32, 0u32);
        for h in &self.homes {
            let f = Features::of(h, now_ms);
            if f.minutes == 0 || f.silent_s > self.silent_after_s() {
                continue;
            }
            n += 1;
            fail += u32::from(f.probes_fail_both());
        }
        if n == 0 {
            0.0
        } else {
            f64::from(fail) / f64::from(n)
        }
    }

    /// Diagnoses home `i` at `now_ms`.
    pub fn diagnose(&self, i: usize, now_ms: u64) -> Diagnosis {
        let f = Features::of(&self.homes[i], now_ms);
        let row = self.inventory.row(i);
        let sub = row.subscriber.clone();
        let mut ev = Vec::new();
        let d = |location: Location,
                 fault: &'static str,
                 action: &'static str,
                 confidence: f64,
                 group: Group,
                 rule: &'static str,
                 evidence: Vec<String>| Diagnosis {
            subscriber: sub.clone(),
            location,
            dispatch: location.dispatch(),
            fault,
            action,
            confidence,
            evidence,
            group,
            rule,
        };
        let home = Group::Home(row.subscriber.clone());
        let cabinet = Group::Cabinet(row.cabinet.clone());
        let card = Group::Card(row.cabinet.clone(), row.card);
        let cell = Group::Cell(row.cell.clone());

        if f.minutes == 0 {
            return d(
                Location::Customer,
                "no-reports",
                "no report ever arrived: check that the CPE is installed and powered",
                0.4,
                home,
                "never-reported",
                vec!["ops has never received a report from this CPE".into()],
            );
        }
        // 0. The last word was a dying gasp: the power went, no need to
        // wait for the silence.
        if f.gasp && f.silent_s <= self.silent_after_s() {
            ev.push(format!(
                "its last report, {:.0} s ago, was a dying gasp (power failing)",
                f.silent_s
            ));
            return d(
                Location::Customer,
                "power-loss",
                "call the customer: power is off at home",
                0.9,
                home,
                "dying-gasp",
                ev,
            );
        }
        // 1. Silent on both links.
        if f.silent_s > self.silent_after_s() {
            ev.push(format!("no report for {:.0} s", f.silent_s));
            if f.gasp {
                ev.push("its last report was a dying gasp (power failing)".into());
                return d(
                    Location::Customer,
                    "power-loss",
                    "call the customer: power is off at home",
                    0.95,
                    home,
                    "dying-gasp",
                    ev,
                );
            }
            if f.boots_30m >= 2 {
                ev.push(format!(
                    "{} restarts in the last 30 min before it went silent",
                    f.boots_30m
                ));
                return d(
                    Location::Home,
                    "reboot-loop",
                    "send a home technician with a replacement CPE",
                    0.8,
                    home,
                    "silent-after-restarts",
                    ev,
                );
            }
            // Its last report said the mobile link was down: the fixed line
            // was carrying it, and has now gone too.
            if !f.registered || !f.lte_probe_up || (f.no_signal && f.via_lte) {
                let cab = self.neighbours(self.inventory.cabinet_homes(i), i, now_ms);
                if f.no_signal {
                    ev.push("its last report said the fixed line had no signal; the mobile link has gone since".into());
                } else {
                    ev.push("its last report said the mobile link was down: the fixed line carried it, and has gone since".into());
                }
                ev.push(format!(
                    "{} of {} other reporting lines on cabinet {} lost sync",
                    cab.lost, cab.reporting, row.cabinet
                ));
                if cab.lost_sync() {
                    return d(Location::Cabinet, "cabinet-power", "send one outside-plant technician to the cabinet; one job for all its lines", 0.7, cabinet, "silent-cabinet-lost", ev);
                }
                return d(
                    Location::Line,
                    "broken-pair",
                    "send an outside-plant technician to the pair",
                    0.6,
                    home,
                    "silent-mobile-down",
                    ev,
                );
            }
            ev.push(
                "silent on the fixed line and the mobile link alike, without a dying gasp".into(),
            );
            match self.hag_hears(i, now_ms) {
                Some((true, Some(s))) => {
                    ev.push(format!(
                        "yet the HAG heard from it {:.0} s ago ({} connection(s) open): it is on, and only its reports do not arrive",
                        now_ms.saturating_sub(s.last_seen_ms) as f64 / 1000.0,
                        s.connections
                    ));
                    return d(
                        Location::Home,
                        "cpe-software",
                        "the CPE carries traffic but its reports do not reach ops: reset it remotely; send a home technician if it persists",
                        0.6,
                        home,
                        "silent-but-seen",
                        ev,
                    );
                }
                Some((false, s)) => ev.push(match s {
                    Some(s) => format!(
                        "the HAG has not heard from it either for {:.0} s",
                        now_ms.saturating_sub(s.last_seen_ms) as f64 / 1000.0
                    ),
                    None => "the HAG has no connection from it either".into(),
                }),
                _ => {}
            }
            return d(
                Location::Customer,
                "power-loss",
                "call the customer: check power and the CPE",
                0.55,
                home,
                "silent",
                ev,
            );
        }
        // 2. Restarts.
        // (One restart after a dying gasp is the power coming back.)
        if f.boots_30m >= 2
            || (f.boots_30m >= 1 && f.uptime_s < 600 && f.retrains_30m <= 1 && f.gasps_30m == 0)
        {
            ev.push(format!(
                "{} restart(s) in the last 30 min, up for {} s now",
                f.boots_30m, f.uptime_s
            ));
            let c = if f.boots_30m >= 2 { 0.9 } else { 0.6 };
            return d(
                Location::Home,
                "reboot-loop",
                "send a home technician with a replacement CPE",
                c,
                home,
                "restarts",
                ev,
            );
        }
        // 3. Neither link reaches the HAG while both modems are up.
        if f.probes_fail_both() {
            let share = self.fleet_probe_fail_share(now_ms);
            ev.push("probes to the HAG fail on both links while the DSL line is in sync and the mobile modem registered".into());
            ev.push(format!(
                "{:.0} % of reporting homes see the same",
                share * 100.0
            ));
            if self.hag_silent(now_ms) || share >= 0.1 {
                if self.hag_silent(now_ms) {
                    ev.push("the HAG itself has stopped reporting".into());
                }
                return d(
                    Location::Core,
                    "hag-unreachable",
                    "NOC: the HAG is unreachable; no truck",
                    0.95,
                    Group::Core,
                    "hag-unreachable",
                    ev,
                );
            }
            return d(
                Location::Home,
                "cpe-software",
                "reset the CPE remotely; send a home technician if it persists",
                0.5,
                home,
                "probes-fail-alone",
                ev,
            );
        }
        // 4. The fixed line has lost sync.
        if !f.showtime && (f.no_signal || f.no_signal_min_10m >= 2) {
            ev.push(format!(
                "DSL line has no signal ({} of the last 10 min){}",
                f.no_signal_min_10m,
                if f.via_lte {
                    ", the CPE reports over the mobile link"
                } else {
                    ""
                }
            ));
            let cab = self.neighbours(self.inventory.cabinet_homes(i), i, now_ms);
            let crd = self.neighbours(&self.card_homes(i), i, now_ms);
            ev.push(format!(
                "{} of {} other reporting lines on cabinet {} lost sync too",
                cab.lost, cab.reporting, row.cabinet
            ));
            if cab.lost_sync() {
                return d(Location::Cabinet, "cabinet-power", "send one outside-plant technician to the cabinet (power or backhaul); one job for all its lines", 0.9, cabinet, "cabinet-lost-sync", ev);
            }
            let card_bad = crd.card_bad();
            if crd.failing() {
                ev.push(format!(
                    "{} of {} other lines on card {} of {} lost sync, err or retrain",
                    card_bad, crd.reporting, row.card, row.cabinet
                ));
                return d(
                    Location::Cabinet,
                    "line-card",
                    "send one outside-plant technician to replace line card; one job for its lines",
                    0.85,
                    card,
                    "card-lost-sync",
                    ev,
                );
            }
            return d(
                Location::Line,
                "broken-pair",
                "send an outside-plant technician to the pair (loss of sync)",
                0.85,
                home,
                "line-lost-sync",
                ev,
            );
        }
        // 4b. The modem trains and trains, with signal, and never reaches
        // showtime: the pair is too poor to carry a rate (water, a bad
        // joint, or the house's wiring: the line is where to look first).
        if f.training && f.training_min_10m >= 4 {
            ev.push(format!(
                "DSL modem training without reaching showtime for {} of the last 10 min, with signal on the line{}",
                f.training_min_10m,
                if f.via_lte {
                    ", the CPE reports over the mobile link"
                } else {
                    ""
                }
            ));
            if f.atn_delta >= 1.0 {
                ev.push(format!(
                    "attenuation was {:+.1} dB against this line's normal at its last showtime",
                    f.atn_delta
                ));
            }
            return d(
                Location::Line,
                "line-fails-to-train",
                "send an outside-plant technician to test the pair from the cabinet to the house",
                0.55,
                home,
                "fails-to-train",
                ev,
            );
        }
        // 5. LAN.
        if !f.lan_carrier {
            ev.push("the LAN port has no carrier and no device is seen, while both access links are fine".into());
            return d(
                Location::Customer,
                "lan-unplugged",
                "call the customer: the cable to their devices is unplugged",
                0.9,
                home,
                "lan-down",
                ev,
            );
        }
        // 6. The fixed line in sync but degraded.
        if f.dsl_degraded() {
            ev.push(format!(
                "DSL: {} retrain(s) in 30 min, {:.0} CRC/min, {} severely errored s in 10 min; margin {:.1} dB down / {:.1} dB up ({:+.1} / {:+.1} against this line's normal); attenuation {:.1} dB ({:+.1})",
                f.retrains_30m, f.crc_per_min_10m, f.ses_10m, f.ds_margin, f.us_margin, f.ds_margin_delta, f.us_margin_delta, f.ds_atn, f.atn_delta
            ));
            let crd = self.neighbours(&self.card_homes(i), i, now_ms);
            let card_bad = crd.card_bad();
            if crd.failing() {
                ev.push(format!(
                    "{} of {} other lines on card {} of cabinet {} are degraded, retraining or down at the same time",
                    card_bad, crd.reporting, row.card, row.cabinet
                ));
                if f.dsl_loss_5m >= 2.0 {
                    ev.push(format!(
                        "packets lost past the modem: {:.0} %",
                        f.dsl_loss_5m
                    ));
                }
                return d(Location::Cabinet, "line-card", "send one outside-plant technician to replace the line card; one job for its lines", 0.85, card, "card-degraded", ev);
            }
            let cab = self.neighbours(self.inventory.cabinet_homes(i), i, now_ms);
            if cab.reporting >= 4 && cab.most_with_me(cab.degraded + cab.lost) {
                ev.push(format!(
                    "{} of {} other lines on cabinet {} are degraded",
                    cab.degraded + cab.lost,
                    cab.reporting,
                    row.cabinet
                ));
                return d(
                    Location::Cabinet,
                    "cabinet",
                    "send one outside-plant technician to the cabinet",
                    0.75,
                    cabinet,
                    "cabinet-degraded",
                    ev,
                );
            }
            let atn_same = f.atn_delta.abs() < 1.0;
            if atn_same
                && (f.episodes_60m >= 2
                    || (f.episodes_60m >= 1 && f.high_margin_min_60m >= 2)
                    || f.bad_share < 0.6 && f.episodes_60m >= 1)
            {
                ev.push(format!(
                    "{} separate episodes of lost margin or retrains in the last hour, attenuation unchanged: something in the home disturbs the line now and then (an unfiltered phone)",
                    f.episodes_60m
                ));
                return d(
                    Location::Home,
                    "missing-microfilter",
                    "ask the customer to fit microfilters; send a home technician if it persists",
                    0.75,
                    home,
                    "episodic",
                    ev,
                );
            }
            let step = f.atn_max_jump >= 0.6 * f.atn_delta;
            if f.atn_delta >= 1.5 && step {
                ev.push(format!(
                    "attenuation {:.1} dB over this line's normal, in one step ({:.1} dB from one minute to the next), with impulse noise ({:.0} FEC/min): in-home wiring",
                    f.atn_delta, f.atn_max_jump, f.fec_per_min_10m
                ));
                return d(
                    Location::Home,
                    "in-home-wiring",
                    "send a home technician to check the in-home wiring",
                    0.7,
                    home,
                    "atn-step",
                    ev,
                );
            }
            if f.atn_delta >= 1.5 || (f.atn_delta >= 0.5 && f.atn_recent_rise >= 0.3) {
                ev.push(format!(
                    "attenuation has risen {:.1} dB over this line's normal, gradually (at most {:.1} dB in one minute, {:+.1} dB in the last minutes): water or corrosion in the drop",
                    f.atn_delta, f.atn_max_jump, f.atn_recent_rise
                ));
                return d(
                    Location::Line,
                    "water-ingress",
                    "send an outside-plant technician to the drop and joints",
                    0.8,
                    home,
                    "atn-rising",
                    ev,
                );
            }
            if atn_same
                && (f.ds_margin_delta <= -3.0
                    || f.rate_change <= -0.15
                    || f.us_margin_delta <= -4.0
                    || f.low_margin_share_10m >= 0.6)
            {
                ev.push(format!(
                    "margin or rate lost for good ({:+.1} dB, rate {:+.0} %) with the attenuation unchanged: new crosstalk in the binder",
                    f.ds_margin_delta,
                    f.rate_change * 100.0
                ));
                return d(
                    Location::Line,
                    "crosstalk",
                    "re-profile the line (DLM) and send outside plant if it does not hold",
                    0.65,
                    home,
                    "margin-step",
                    ev,
                );
            }
            if f.dsl_loss_5m >= 2.0 && f.crc_per_min_10m < 30.0 {
                ev.push(format!("the modem is in sync with few errors but {:.0} % of probes over it are lost: the fault is past the modem", f.dsl_loss_5m));
                return d(
                    Location::Cabinet,
                    "line-card",
                    "send an outside-plant technician to the cabinet port",
                    0.5,
                    card,
                    "loss-past-modem",
                    ev,
                );
            }
            ev.push(
                "errors with the margin and attenuation normal: impulse noise from the home".into(),
            );
            return d(
                Location::Home,
                "in-home-wiring",
                "send a home technician to look for impulse noise sources",
                0.5,
                home,
                "impulse-noise",
                ev,
            );
        }
        // 7. The mobile link.
        if f.lte_down() || f.lte_bad() {
            let nb = self.neighbours(self.inventory.cell_homes(i), i, now_ms);
            if f.lte_down() {
                ev.push("the mobile link is down (modem not registered or probes failing)".into());
                if nb.share_at_least(nb.lte_down, 0.5) {
                    ev.push(format!(
                        "{} of {} other homes in cell {} lost it too",
                        nb.lte_down, nb.reporting, row.cell
                    ));
                    return d(
                        Location::Mobile,
                        "cell-outage",
                        "mobile operations: the cell is down; no truck",
                        0.9,
                        cell,
                        "cell-down",
                        ev,
                    );
                }
            } else {
                ev.push(format!(
                    "the mobile link is slow or lossy: {:+.0} ms round trip against its normal, {:.1} % loss",
                    f.lte_rtt_delta, f.lte_loss_5m
                ));
                if nb.share_at_least(nb.lte_bad, 0.4) {
                    ev.push(format!(
                        "{} of {} other homes in cell {} see the same",
                        nb.lte_bad, nb.reporting, row.cell
                    ));
                    return d(
                        Location::Mobile,
                        "cell-congestion",
                        "mobile operations: the cell is congested; no truck",
                        0.85,
                        cell,
                        "cell-slow",
                        ev,
                    );
                }
            }
            ev.push(format!("only this home of cell {} is affected", row.cell));
            return d(
                Location::Mobile,
                "mobile-link",
                "mobile operations: check this home's mobile modem and coverage",
                0.5,
                home,
                "lte-alone",
                ev,
            );
        }
        // 8. The core's upstream.
        if let Some(ratio) = self.upstream_error_ratio(now_ms).filter(|&r| r >= 0.05) {
            ev.push(format!(
                "both access links are fine; the HAG fails {:.0} % of connections to the internet",
                ratio * 100.0
            ));
            return d(
                Location::Core,
                "upstream-loss",
                "NOC: the HAG's upstream is failing; no truck",
                0.85,
                Group::Core,
                "upstream-errors",
                ev,
            );
        }
        if self.hag_silent(now_ms) {
            ev.push("both access links are fine but the HAG has stopped reporting".into());
            return d(
                Location::Core,
                "hag-unreachable",
                "NOC: check the HAG",
                0.6,
                Group::Core,
                "hag-silent",
                ev,
            );
        }
        ev.push(format!(
            "DSL in sync at {:.0} kbit/s, margin {:.1} dB, {:.0} CRC/min; mobile link up; LAN up",
            self.homes[i].last.map_or(0.0, |l| l.ds_rate),
            f.ds_margin,
            f.crc_per_min_10m
        ));
        d(
            Location::None,
            "none",
            "no fault found: monitor",
            0.6,
            home,
            "healthy",
            ev,
        )
    }
}
