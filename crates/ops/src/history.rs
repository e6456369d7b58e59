//! What ops remembers of each home: one bucket per minute over a bounded
//! window (gauges at their worst and last, counters as deltas, events as
//! counts), the home's own healthy reference (what its line looks like when
//! nothing is wrong), and its last report's identity.
//!
//! Memory is bounded per home: [`HISTORY_MINUTES`] buckets of a few dozen
//! bytes, whatever the report rate.

use std::collections::VecDeque;

use hybrid::Link;
use telemetry::{Event, LinkStatus, Report};

/// Minutes of history kept per home.
pub const HISTORY_MINUTES: usize = 90;

/// One minute of a home.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bucket {
    /// Minute (Unix milliseconds / 60,000).
    pub minute: u64,
    /// Reports in it.
    pub reports: u16,
    /// Reports with the DSL line in showtime.
    pub showtime: u16,
    /// Reports with no signal on the DSL line.
    pub no_signal: u16,
    /// Reports with the DSL modem training (signal, no showtime).
    pub training: u16,
    /// Worst downstream margin in showtime, dB.
    pub ds_margin_min: f32,
    /// Worst upstream margin in showtime, dB.
    pub us_margin_min: f32,
    /// Downstream attenuation (last in showtime), dB.
    pub ds_atn: f32,
    /// Current downstream rate (last in showtime), kbit/s.
    pub ds_rate: f32,
    /// CRC errors (both directions).
    pub crc: u32,
    /// FEC corrections (both directions).
    pub fec: u32,
    /// Errored seconds.
    pub es: u16,
    /// Severely errored seconds.
    pub ses: u16,
    /// Retrains seen.
    pub retrains: u16,
    /// Boots seen.
    pub boots: u16,
    /// Reports whose DSL probes were up.
    pub dsl_probe_up: u16,
    /// Worst DSL probe loss, percent.
    pub dsl_loss: f32,
    /// Reports whose mobile probes were up.
    pub lte_probe_up: u16,
    /// Reports with the mobile modem registered.
    pub registered: u16,
    /// Mean mobile round trip (of the reports with one), ms.
    pub lte_rtt: f32,
    /// Worst mobile probe loss, percent.
    pub lte_loss: f32,
    /// Reports with LAN carrier.
    pub lan_carrier: u16,
    /// Reports that came over the mobile link.
    pub via_lte: u16,
    /// A dying gasp came.
    pub gasp: bool,
}

/// A home's healthy reference: slow averages over the times its line was
/// quiet.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reference {
    /// Samples folded in.
    pub samples: u32,
    /// Downstream attenuation, dB.
    pub ds_atn: f64,
    /// Downstream margin, dB.
    pub ds_margin: f64,
    /// Upstream margin, dB.
    pub us_margin: f64,
    /// Downstream rate, kbit/s.
    pub ds_rate: f64,
    /// Mobile round trip, ms.
    pub lte_rtt: f64,
    /// Mobile samples folded in.
    pub lte_samples: u32,
}

/// Cumulative counters of the last report, for deltas.
#[derive(Clone, Debug, Default)]
struct Counters {
    boot_id: String,
    seq: u64,
    crc: u64,
    fec: u64,
    es: u64,
    ses: u64,
    showtime_start: Option<u64>,
    sent_at_ms: u64,
    uptime_s: u64,
    /// The line lost its signal and has not been in showtime since.
    lost_sync: bool,
}

/// Everything ops keeps of one home.
#[derive(Clone, Debug, Default)]
pub struct Home {
    /// Minute buckets, oldest first.
    pub buckets: VecDeque<Bucket>,
    /// Healthy reference.
    pub reference: Reference,
    /// When the last report (by its clock) was made, Unix ms.
    pub last_ms: u64,
    /// When the last report arrived (ops' clock), Unix ms.
    pub last_arrival_ms: u64,
    /// The last report's events and state, for the quick view.
    pub last: Option<Last>,
    /// The minute a technician's repair was recorded (an incident on the
    /// home resolved): the line is judged from the next minute on, so a
    /// mended fault's errors and retrains are not its present.
    pub repaired_minute: Option<u64>,
    counters: Counters,
}

/// The last report in brief.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Last {
    /// DSL in showtime.
    pub showtime: bool,
    /// DSL has no signal.
    pub no_signal: bool,
    /// DSL modem training: signal but no showtime.
    pub training: bool,
    /// DSL probes up.
    pub dsl_probe_up: bool,
    /// Mobile probes up.
    pub lte_probe_up: bool,
    /// Mobile modem registered.
    pub registered: bool,
    /// LAN carrier.
    pub lan_carrier: bool,
    /// The report was the dying gasp.
    pub gasp: bool,
    /// Came over the mobile link.
    pub via_lte: bool,
    /// Seconds since the CPE started.
    pub uptime_s: u64,
    /// Downstream margin, dB (showtime only).
    pub ds_margin: f64,
    /// Upstream margin, dB.
    pub us_margin: f64,
    /// Downstream attenuation, dB.
    pub ds_atn: f64,
    /// Current downstream rate.
    pub ds_rate: f64,
}

fn delta(cur: u64, prev: u64) -> u64 {
    // A counter that went back was reset (modem restart): count from zero.
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

impl Home {
    /// The most memory one home's history takes (its buckets at most, the
    /// reference and counters), bytes; the boot id is bounded by the schema.
    pub fn max_bytes() -> usize {
        size_of::<Self>() + HISTORY_MINUTES * size_of::<Bucket>() + telemetry::MAX_NAME
    }

    /// Folds one report in. Reports older than the window are ignored;
    /// late ones (from a CPE's queue) land in their own minute.
    pub fn ingest(&mut self, r: &Report, arrival_ms: u64) {
        let minute = r.sent_at_ms / 60_000;
        if let Some(last) = self.buckets.back() {
            if minute + HISTORY_MINUTES as u64 <= last.minute {
                return;
            }
        }
        let c = &self.counters;
        let same_boot = c.boot_id == r.boot_id;
        let in_order = !same_boot || r.seq > c.seq;
        // A restart, not a start: the first boot ops sees of a CPE (a new
        // installation, or the first report after the history's window)
        // says nothing about the CPE's health.
        let seen_before = !c.boot_id.is_empty();
        let boot = seen_before
            && (r.events.contains(&Event::Boot)
                || (!same_boot && r.seq <= 3)
                || (same_boot && r.uptime_s + 5 < c.uptime_s));
        let mut crc = 0;
        let mut fec = 0;
        let mut es = 0;
        let mut ses = 0;
        let mut retrain = r.events.contains(&Event::Retrain);
        let showtime = r.dsl.as_ref().is_some_and(|d| d.in_showtime());
        let no_signal = r
            .dsl
            .as_ref()
            .is_some_and(|d| d.link_status == LinkStatus::NoSignal);
        if let Some(d) = &r.dsl {
            let t = &d.channel.stats.total;
            let cur_crc = t.xtur_crc_errors + t.xtuc_crc_errors;
            let cur_fec = t.xtur_fec_errors + t.xtuc_fec_errors;
            if in_order && same_boot {
                crc = delta(cur_crc, c.crc);
                fec = delta(cur_fec, c.fec);
                es = delta(d.stats.total.errored_secs, c.es);
                ses = delta(d.stats.total.severely_errored_secs, c.ses);
                if let (Some(prev), true) = (c.showtime_start, showtime) {
                    let elapsed = r.sent_at_ms.saturating_sub(c.sent_at_ms) / 1000;
                    if d.stats.last_showtime_start + 5 < prev + elapsed {
                        retrain = true;
                    }
                }
            }
            if in_order {
                self.counters.crc = cur_crc;
                self.counters.fec = cur_fec;
                self.counters.es = d.stats.total.errored_secs;
                self.counters.ses = d.stats.total.severely_errored_secs;
                self.counters.showtime_start = showtime.then_some(d.stats.last_showtime_start);
            }
        }
        // Losing the signal, and training when it comes back, are the loss
        // of sync (counted as such), not retrains of a line in trouble: a
        // cabinet's power coming back retrains every line once.
        let recovering = showtime && same_boot && self.counters.lost_sync;
        if no_signal || recovering {
            retrain = false;
        }
        if in_order && same_boot {
            self.counters.lost_sync = no_signal || (self.counters.lost_sync && !showtime);
        } else if in_order {
            self.counters.lost_sync = no_signal;
        }
        if in_order {
            self.counters.boot_id.clone_from(&r.boot_id);
            self.counters.seq = r.seq;
            self.counters.sent_at_ms = r.sent_at_ms;
            self.counters.uptime_s = r.uptime_s;
        }
        let dsl_probe = r.link(Link::Dsl);
        let lte_probe = r.link(Link::Lte);
        let registered = r.mobile.as_ref().is_some_and(|m| m.registered);
        let gasp = r.events.contains(&Event::DyingGasp);
        let training = r.dsl.is_some() && !showtime && !no_signal;
        let last = Last {
            showtime,
            no_signal,
            training,
            dsl_probe_up: dsl_probe.is_some_and(|l| l.up),
            lte_probe_up: lte_probe.is_some_and(|l| l.up),
            registered,
            lan_carrier: r.lan.carrier,
            gasp,
            via_lte: r.via == Link::Lte,
            uptime_s: r.uptime_s,
            ds_margin: r.dsl.as_ref().map_or(0.0, |d| d.ds_margin_db()),
            us_margin: r.dsl.as_ref().map_or(0.0, |d| d.us_margin_db()),
            ds_atn: r.dsl.as_ref().map_or(0.0, |d| d.ds_attenuation_db()),
            ds_rate: r
                .dsl
                .as_ref()
                .map_or(0.0, |d| f64::from(d.channel.downstream_curr_rate)),
        };
        // The bucket of this minute (appended, or an earlier one for a late report).
        let pos = match self.buckets.iter().rposition(|b| b.minute <= minute) {
            Some(p) if self.buckets[p].minute == minute => p,
            Some(p) => {
                self.buckets.insert(p + 1, Bucket::new(minute));
                p + 1
            }
            None => {
                self.buckets.push_front(Bucket::new(minute));
                0
            }
        };
        let b = &mut self.buckets[pos];
        b.reports = b.reports.saturating_add(1);
        let sat16 = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
        b.crc = b.crc.saturating_add(u32::try_from(crc).unwrap_or(u32::MAX));
        b.fec = b.fec.saturating_add(u32::try_from(fec).unwrap_or(u32::MAX));
        b.es = b.es.saturating_add(sat16(es));
        b.ses = b.ses.saturating_add(sat16(ses));
        b.retrains = b.retrains.saturating_add(u16::from(retrain));
        b.boots = b.boots.saturating_add(u16::from(boot));
        b.gasp |= gasp;
        b.no_signal = b.no_signal.saturating_add(u16::from(no_signal));
        b.training = b.training.saturating_add(u16::from(training));
        b.registered = b.registered.saturating_add(u16::from(registered));
        b.lan_carrier = b.lan_carrier.saturating_add(u16::from(r.lan.carrier));
        b.via_lte = b.via_lte.saturating_add(u16::from(last.via_lte));
        if showtime {
            b.showtime = b.showtime.saturating_add(1);
            b.ds_margin_min = if b.showtime == 1 {
                last.ds_margin as f32
            } else {
                b.ds_margin_min.min(last.ds_margin as f32)
            };
            b.us_margin_min = if b.showtime == 1 {
                last.us_margin as f32
            } else {
                b.us_margin_min.min(last.us_margin as f32)
            };
            b.ds_atn = last.ds_atn as f32;
            b.ds_rate = last.ds_rate as f32;
        }
        let shared_loss = match (dsl_probe, lte_probe) {
            (Some(d), Some(m)) if d.up && m.up => d.loss_pct.min(m.loss_pct).max(0.0),
            _ => 0.0,
        };
        if let Some(l) = dsl_probe {
            b.dsl_probe_up = b.dsl_probe_up.saturating_add(u16::from(l.up));
            // The line's own loss: while it carries traffic, past its first
            // half minute in showtime (the probes' window still holds the
            // ones lost while it was down or training).
            let settled = r
                .dsl
                .as_ref()
                .is_some_and(|d| d.in_showtime() && d.stats.last_showtime_start >= 30);
            // Loss both links see at once is past them (the HAG, the core).
            if l.up && settled {
                b.dsl_loss = b.dsl_loss.max((l.loss_pct - shared_loss) as f32);
            }
        }
        if let Some(l) = lte_probe {
            b.lte_probe_up = b.lte_probe_up.saturating_add(u16::from(l.up));
            // While it is up (down is counted as down), net of the loss
            // the fixed line sees too.
            if l.up {
                b.lte_loss = b.lte_loss.max((l.loss_pct - shared_loss) as f32);
            }
            if let Some(rtt) = l.rtt_ms.filter(|_| l.up) {
                let n = f32::from(b.lte_probe_up);
                b.lte_rtt += (rtt as f32 - b.lte_rtt) / n;
            }
        }
        let quiet = showtime && !retrain && crc <= 5 && ses == 0;
        let b = *b;
        while self.buckets.len() > HISTORY_MINUTES {
            self.buckets.pop_front();
        }
        if in_order {
            self.last = Some(last);
            self.last_ms = self.last_ms.max(r.sent_at_ms);
            self.last_arrival_ms = arrival_ms;
            if quiet {
                self.reference.fold_dsl(&last);
            }
            if b.lte_probe_up > 0 && b.lte_loss < 1.0 {
                self.reference.fold_lte(f64::from(b.lte_rtt));
            }
        }
    }

    /// The buckets since `from_minute`, and after the last repair.
    pub fn since(&self, from_minute: u64) -> impl DoubleEndedIterator<Item = &Bucket> {
        let from = self
            .repaired_minute
            .map_or(from_minute, |m| from_minute.max(m + 1));
        self.buckets.iter().filter(move |b| b.minute >= from)
    }

    /// Records a repair at `at_ms`: what came before it is the past.
    pub fn repaired(&mut self, at_ms: u64) {
        let m = at_ms / 60_000;
        self.repaired_minute = Some(self.repaired_minute.map_or(m, |r| r.max(m)));
    }
}

impl Bucket {
    fn new(minute: u64) -> Self {
        Self {
            minute,
            ..Self::default()
        }
    }
}

/// Reference weight: about three hours of minute samples.
const REF_WEIGHT: f64 = 180.0;

impl Reference {
    /// Folds in a quiet showtime sample, unless it is far from the
    /// reference (a slow fault must not become the new normal).
    fn fold_dsl(&mut self, l: &Last) {
        if self.samples < 10 {
            let n = f64::from(self.samples) + 1.0;
            self.ds_atn += (l.ds_atn - self.ds_atn) / n;
            self.ds_margin += (l.ds_margin - self.ds_margin) / n;
            self.us_margin += (l.us_margin - self.us_margin) / n;
            self.ds_rate += (l.ds_rate - self.ds_rate) / n;
            self.samples += 1;
            return;
        }
        if (l.ds_atn - self.ds_atn).abs() > 0.8 || (l.ds_margin - self.ds_margin).abs() > 2.5 {
            return;
        }
        let w = 1.0 / REF_WEIGHT;
        self.ds_atn += (l.ds_atn - self.ds_atn) * w;
        self.ds_margin += (l.ds_margin - self.ds_margin) * w;
        self.us_margin += (l.us_margin - self.us_margin) * w;
        self.ds_rate += (l.ds_rate - self.ds_rate) * w;
        self.samples = self.samples.saturating_add(1);
    }

    fn fold_lte(&mut self, rtt: f64) {
        if self.lte_samples < 10 {
            let n = f64::from(self.lte_samples) + 1.0;
            self.lte_rtt += (rtt - self.lte_rtt) / n;
            self.lte_samples += 1;
            return;
        }
        if rtt > self.lte_rtt * 1.5 + 20.0 {
            return;
        }
        self.lte_rtt += (rtt - self.lte_rtt) / REF_WEIGHT;
        self.lte_samples = self.lte_samples.saturating_add(1);
    }

    /// Whether the DSL reference has enough samples to compare against.
    pub fn dsl_known(&self) -> bool {
        self.samples >= 5
    }
}
