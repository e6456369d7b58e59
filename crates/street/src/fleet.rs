//! A simulated fleet of homes, each with a DSL pair through a street
//! cabinet's line card, a mobile link through a cell, and a CPE that
//! reports every period exactly as `tandem cpe` does (schema, counters,
//! events, the link it chooses, a bounded queue for reports it could not
//! send), plus the HAG's own report.
//!
//! Each home's modem is a small state machine over the line model: it trains
//! at the attainable rate, its margin follows the channel, errors follow the
//! margin (and impulse noise), it retrains below −3 dB and takes 45 s to do
//! so. Background noise that real fleets have is part of it: short error
//! bursts, mobile flaps, reports lost on the way.

use std::collections::VecDeque;

use hybrid::{Link, PerLink};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use telemetry::hag::SubscriberView;
use telemetry::{Event, HagReport, Lan, LinkReport, Radio, Report, SCHEMA};

use crate::fault::Effect;
use crate::line::{Gauge, Pair, Profile};
use crate::modem::{Line, Modem};
use crate::rng::{chance, normal, poisson, uniform};

/// Lines per line card in a cabinet.
pub const CARD_PORTS: u32 = 8;
/// Seconds a modem takes to train.
pub const TRAIN_S: f64 = 45.0;
/// Seconds a CPE takes to start.
pub const BOOT_S: f64 = 60.0;
/// Reports a CPE keeps while it cannot send (oldest dropped first).
pub const QUEUE: usize = 30;

/// The shape of a fleet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FleetSpec {
    /// Homes.
    pub homes: u32,
    /// Street cabinets.
    pub cabinets: u32,
    /// Cells.
    pub cells: u32,
    /// Seed of the fleet's geography (loop lengths, radio).
    pub seed: u64,
    /// Reporting period, seconds.
    pub period_s: f64,
    /// Share of reports lost on the way.
    pub lost_reports: f64,
    /// Short error bursts per home per day.
    pub error_bursts_per_day: f64,
    /// Mobile-link flaps per home per day.
    pub lte_flaps_per_day: f64,
}

impl Default for FleetSpec {
    fn default() -> Self {
        Self {
            homes: 2000,
            cabinets: 100,
            cells: 20,
            seed: 1,
            period_s: 60.0,
            lost_reports: 0.02,
            error_bursts_per_day: 3.0,
            lte_flaps_per_day: 2.0,
        }
    }
}

/// One home in the operator's inventory (what ops imports as CSV).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InventoryRow {
    /// The registry's name.
    pub subscriber: String,
    /// The street cabinet serving the line.
    pub cabinet: String,
    /// The line card in the cabinet.
    pub card: u32,
    /// The cell serving the home.
    pub cell: String,
}

/// Whom a home is connected through.
#[derive(Clone, Debug)]
pub struct Home {
    /// Subscriber name.
    pub name: String,
    /// Cabinet index.
    pub cabinet: u32,
    /// Line card within the cabinet.
    pub card: u32,
    /// Cell index.
    pub cell: u32,
    /// The DSL pair.
    pub pair: Pair,
    dsl_rtt_ms: f64,
    lte_rtt_ms: f64,
    rsrp_dbm: f64,
    sinr_db: f64,
    devices: u32,
    /// Line rate cap of the product (kbit/s down).
    cap_kbps: f64,
}

#[derive(Clone, Debug, Default)]
struct Cpe {
    boot_id: String,
    seq: u64,
    boot_at: f64,
    /// Down (unpowered or restarting) since.
    down_since: Option<f64>,
    link_up: PerLink<bool>,
    lan_carrier: bool,
    bytes: PerLink<(u64, u64)>,
    events: Vec<Event>,
    queue: VecDeque<Report>,
    burst_until: f64,
    flap_until: f64,
    gasped: bool,
}

/// This step's conditions of the two links.
#[derive(Clone, Debug, Default)]
struct Cond {
    extra_rtt_ms: PerLink<f64>,
    loss_pct: PerLink<f64>,
    lte_off: bool,
    sinr_drop_db: f64,
}

struct State {
    home: Home,
    modem: Modem,
    cpe: Cpe,
    cond: Cond,
}

/// A fleet and its clock.
pub struct Fleet {
    spec: FleetSpec,
    homes: Vec<State>,
    rng: StdRng,
    boots: u64,
}

/// The product's rate cap by profile, kbit/s down (operators sell a tier).
fn cap(profile: Profile) -> f64 {
    match profile {
        Profile::Adsl2Plus => 24_000.0,
        Profile::Vdsl2_17a => 100_000.0,
    }
}

impl Fleet {
    /// Builds a fleet: loop lengths from 0.2 to 4.5 km (rural: most are
    /// long), VDSL2 under 1.2 km and ADSL2+ beyond, each cabinet's homes in
    /// one or two cells.
    pub fn new(spec: FleetSpec) -> Self {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let cabinets = spec.cabinets.max(1);
        let cells = spec.cells.max(1);
        let homes = (0..spec.homes)
            .map(|i| {
                let cabinet = i % cabinets;
                let port = i / cabinets;
                let card = port / CARD_PORTS;
                // A cabinet sits in one cell; one home in five sees the next.
                let base_cell = cabinet * cells / cabinets;
                let cell = if chance(&mut rng, 0.2) {
                    (base_cell + 1) % cells
                } else {
                    base_cell
                };
                let length_km = (0.2 + 4.3 * rng.random::<f64>().powf(0.8)).min(4.5);
                let gauge = match rng.random_range(0..10) {
                    0..=5 => Gauge::Mm04,
                    6..=8 => Gauge::Mm05,
                    _ => Gauge::Mm06,
                };
                let profile = if length_km < 1.2 {
                    Profile::Vdsl2_17a
                } else {
                    Profile::Adsl2Plus
                };
                let pair = Pair {
                    length_km,
                    gauge,
                    profile,
                    disturbers: rng.random_range(4..24),
                };
                State {
                    home: Home {
                        name: format!("home-{:05}", i + 1),
                        cabinet,
                        card,
                        cell,
                        pair,
                        dsl_rtt_ms: uniform(&mut rng, 8.0, 25.0) + 3.0 * length_km,
                        lte_rtt_ms: uniform(&mut rng, 30.0, 70.0),
                        rsrp_dbm: uniform(&mut rng, -115.0, -75.0),
                        sinr_db: uniform(&mut rng, 2.0, 25.0),
                        devices: rng.random_range(1..12),
                        cap_kbps: cap(profile),
                    },
                    modem: Modem::default(),
                    cpe: Cpe::default(),
                    cond: Cond::default(),
                }
            })
            .collect();
        let mut f = Self {
            spec,
            homes,
            rng,
            boots: 0,
        };
        for i in 0..f.homes.len() {
            f.boot(i, 0.0);
        }
        f
    }

    /// The fleet's spec.
    pub fn spec(&self) -> &FleetSpec {
        &self.spec
    }

    /// The homes.
    pub fn homes(&self) -> impl ExactSizeIterator<Item = &Home> {
        self.homes.iter().map(|s| &s.home)
    }

    /// Cabinet name of index `c`.
    pub fn cabinet_name(c: u32) -> String {
        format!("cab-{:03}", c + 1)
    }

    /// Cell name of index `c`.
    pub fn cell_name(c: u32) -> String {
        format!("cell-{:02}", c + 1)
    }

    /// The operator's inventory of this fleet.
    pub fn inventory(&self) -> Vec<InventoryRow> {
        self.homes()
            .map(|h| InventoryRow {
                subscriber: h.name.clone(),
                cabinet: Self::cabinet_name(h.cabinet),
                card: h.card,
                cell: Self::cell_name(h.cell),
            })
            .collect()
    }

    fn boot(&mut self, i: usize, t: f64) {
        self.boots += 1;
        let id = format!(
            "{:016x}",
            self.spec.seed.wrapping_mul(1_000_003) ^ self.boots
        );
        let s = &mut self.homes[i];
        s.cpe.boot_id = id;
        s.cpe.seq = 0;
        s.cpe.boot_at = t;
        s.cpe.down_since = None;
        s.cpe.events = vec![Event::Boot];
        s.cpe.link_up = PerLink::new(true, true);
        s.cpe.lan_carrier = true;
        s.cpe.bytes = PerLink::default();
        s.cpe.gasped = false;
        // The modem restarts with the CPE: it trains again.
        s.modem.restart(t, TRAIN_S);
    }

    /// Advances every home to time `t` (seconds since the start) with each
    /// home's current fault effect (`effects[i]`, default when none) and
    /// `core` for the HAG, and returns the reports that reached ops in this
    /// step (late ones from CPE queues included) and the HAG's reports.
    pub fn step(
        &mut self,
        t: f64,
        effects: &[Effect],
        core: &Effect,
        start_unix_ms: u64,
    ) -> (Vec<Report>, Vec<HagReport>) {
        let dt = self.spec.period_s;
        let mut out = Vec::with_capacity(self.homes.len());
        let mut views = Vec::with_capacity(self.homes.len());
        let now_ms = start_unix_ms + (t * 1000.0) as u64;
        for i in 0..self.homes.len() {
            let e = effects.get(i).copied().unwrap_or_default().and(*core);
            // Background noise: an error burst, a mobile flap.
            let burst_p = self.spec.error_bursts_per_day * dt / 86_400.0;
            let flap_p = self.spec.lte_flaps_per_day * dt / 86_400.0;
            if chance(&mut self.rng, burst_p) {
                self.homes[i].cpe.burst_until = t + uniform(&mut self.rng, 30.0, 180.0);
            }
            if chance(&mut self.rng, flap_p) {
                self.homes[i].cpe.flap_until = t + uniform(&mut self.rng, 10.0, 2.0 * dt);
            }
            if let Some(r) = self.home_step(i, t, dt, &e, now_ms) {
                let lost = chance(&mut self.rng, self.spec.lost_reports);
                let s = &mut self.homes[i];
                match (r, lost) {
                    (Delivery::Sent(r), false) => {
                        out.extend(s.cpe.queue.drain(..));
                        out.push(r);
                    }
                    (Delivery::Sent(_), true) => {}
                    (Delivery::Queued(r), _) => {
                        if s.cpe.queue.len() == QUEUE {
                            s.cpe.queue.pop_front();
                        }
                        s.cpe.queue.push_back(r);
                    }
                }
            }
            let s = &self.homes[i];
            if s.cpe.down_since.is_none() {
                views.push(SubscriberView {
                    subscriber: s.home.name.clone(),
                    subflows_dsl: u32::from(s.cpe.link_up[Link::Dsl]),
                    subflows_lte: u32::from(s.cpe.link_up[Link::Lte]),
                    connections: s.home.devices,
                    retransmits: 0,
                    last_seen_ms: now_ms,
                });
            }
        }
        let mut hag = Vec::new();
        if !core.hag_down {
            let connects = poisson(&mut self.rng, f64::from(self.spec.homes) * dt / 30.0);
            let ratio = core.upstream_error_ratio + 0.003;
            let errors = poisson(&mut self.rng, connects as f64 * ratio).min(connects);
            for (n, chunk) in views.chunks(telemetry::hag::MAX_SUBSCRIBERS).enumerate() {
                hag.push(HagReport {
                    schema: SCHEMA,
                    hag: "hag-1".into(),
                    sent_at_ms: now_ms,
                    upstream_connects: if n == 0 { connects } else { 0 },
                    upstream_errors: if n == 0 { errors } else { 0 },
                    subscribers: chunk.to_vec(),
                });
            }
        }
        (out, hag)
    }

    fn home_step(
        &mut self,
        i: usize,
        t: f64,
        dt: f64,
        e: &Effect,
        now_ms: u64,
    ) -> Option<Delivery> {
        // Power and restarts first: a CPE that is off says nothing.
        let gasp_p = 0.9;
        if e.unpowered || e.rebooting {
            let gasp = e.unpowered && !self.homes[i].cpe.gasped && chance(&mut self.rng, gasp_p);
            let s = &mut self.homes[i];
            let first = s.cpe.down_since.is_none();
            if first {
                s.cpe.down_since = Some(t);
            }
            if e.unpowered && first {
                s.cpe.gasped = true;
                if gasp {
                    s.cpe.events.push(Event::DyingGasp);
                    return Some(Delivery::Sent(self.report(i, t, now_ms)));
                }
            }
            return None;
        }
        if self.homes[i].cpe.down_since.is_some() {
            // Back: a new boot.
            self.boot(i, t - BOOT_S.min(dt) / 2.0);
        }
        self.modem_step(i, t, dt, e);
        self.links_step(i, t, dt, e);
        let s = &mut self.homes[i];
        let carrier = !e.lan_down;
        if carrier != s.cpe.lan_carrier {
            s.cpe.lan_carrier = carrier;
            s.cpe.events.push(Event::LanCarrier { up: carrier });
        }
        let r = self.report(i, t, now_ms);
        let s = &self.homes[i];
        let reachable = s.modem.in_showtime() && e.dsl_loss_pct < 100.0
            || (!e.lte_down && t >= s.cpe.flap_until);
        Some(if reachable {
            Delivery::Sent(r)
        } else {
            Delivery::Queued(r)
        })
    }

    fn modem_step(&mut self, i: usize, t: f64, dt: f64, e: &Effect) {
        let burst = t < self.homes[i].cpe.burst_until;
        let s = &mut self.homes[i];
        let line = Line {
            pair: s.home.pair,
            cap_kbps: (s.home.cap_kbps, s.home.cap_kbps / 8.0),
            train_s: TRAIN_S,
        };
        if s.modem.step(&line, t, dt, e, burst, &mut self.rng) {
            s.cpe.events.push(Event::Retrain);
        }
    }

    fn links_step(&mut self, i: usize, t: f64, dt: f64, e: &Effect) {
        let showtime = self.homes[i].modem.in_showtime();
        let flap = t < self.homes[i].cpe.flap_until;
        let dsl_up = showtime && !e.hag_down && e.dsl_loss_pct < 100.0;
        let lte_up = !e.lte_down && !flap && !e.hag_down;
        let crc_loss = self.homes[i].modem.crc_loss_pct();
        let s = &mut self.homes[i];
        s.cond = Cond {
            extra_rtt_ms: PerLink::new(0.0, e.lte_extra_rtt_ms),
            loss_pct: PerLink::new(
                (e.dsl_loss_pct + crc_loss).min(100.0),
                e.lte_loss_pct.min(100.0),
            ),
            lte_off: e.lte_down || flap,
            sinr_drop_db: e.sinr_drop_db,
        };
        for (l, up) in [(Link::Dsl, dsl_up), (Link::Lte, lte_up)] {
            if s.cpe.link_up[l] != up {
                s.cpe.link_up[l] = up;
                s.cpe.events.push(if up {
                    Event::LinkUp { link: l }
                } else {
                    Event::LinkDown { link: l }
                });
            }
        }
        // Traffic: the fixed line carries the home, the mobile link the rest.
        let kbps = f64::from(s.home.devices) * 300.0;
        let bytes = (kbps * 125.0 * dt) as u64;
        if dsl_up {
            s.cpe.bytes[Link::Dsl].0 += bytes / 8;
            s.cpe.bytes[Link::Dsl].1 += bytes;
        } else if lte_up {
            s.cpe.bytes[Link::Lte].0 += bytes / 8;
            s.cpe.bytes[Link::Lte].1 += bytes;
        }
    }

    fn report(&mut self, i: usize, t: f64, now_ms: u64) -> Report {
        let e_noise = (
            normal(&mut self.rng, 0.0, 1.0),
            normal(&mut self.rng, 0.0, 2.0),
            normal(&mut self.rng, 0.0, 0.08),
        );
        let s = &mut self.homes[i];
        s.cpe.seq += 1;
        let showtime = s.modem.in_showtime();
        let dsl = s.modem.reading(t, e_noise.2);
        let home = &s.home;
        let links = Link::ALL
            .into_iter()
            .map(|l| {
                let up = s.cpe.link_up[l];
                let (base, jitter) = match l {
                    Link::Dsl => (home.dsl_rtt_ms, 0.8),
                    Link::Lte => (home.lte_rtt_ms, 6.0),
                };
                LinkReport {
                    link: l,
                    up,
                    rtt_ms: up.then(|| {
                        (base + s.cond.extra_rtt_ms[l] + e_noise.0.abs() * jitter).max(0.1)
                    }),
                    jitter_ms: up.then_some(jitter),
                    loss_pct: if up { s.cond.loss_pct[l] } else { 100.0 },
                    tx_bytes: s.cpe.bytes[l].0,
                    rx_bytes: s.cpe.bytes[l].1,
                }
            })
            .collect();
        let via = if s.cpe.link_up[Link::Dsl] || (showtime && !s.cpe.link_up[Link::Lte]) {
            Link::Dsl
        } else {
            Link::Lte
        };
        let registered = !s.cond.lte_off;
        Report {
            schema: SCHEMA,
            subscriber: home.name.clone(),
            boot_id: s.cpe.boot_id.clone(),
            seq: s.cpe.seq,
            sent_at_ms: now_ms,
            uptime_s: (t - s.cpe.boot_at).max(0.0) as u64,
            via,
            events: std::mem::take(&mut s.cpe.events),
            links,
            lan: Lan {
                carrier: s.cpe.lan_carrier,
                devices: if s.cpe.lan_carrier { home.devices } else { 0 },
                flows: if s.cpe.lan_carrier {
                    home.devices * 3
                } else {
                    0
                },
            },
            dsl,
            mobile: Some(Radio {
                registered,
                rsrp_dbm: registered.then(|| (home.rsrp_dbm + e_noise.1).clamp(-140.0, -44.0)),
                rsrq_db: registered.then(|| (-10.0 + e_noise.1 / 2.0).clamp(-20.0, -3.0)),
                sinr_db: registered.then(|| {
                    (home.sinr_db - s.cond.sinr_drop_db + e_noise.1 / 2.0).clamp(-20.0, 40.0)
                }),
                cell_id: registered.then(|| Self::cell_name(home.cell)),
            }),
        }
    }
}

enum Delivery {
    Sent(Report),
    Queued(Report),
}
