//! Figures the diagnosis reads off one home's history at a moment: what
//! its line, its links and its CPE did over the last minutes, against its
//! own healthy reference.

use crate::history::{Bucket, Home};

/// One home's figures at `now`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Features {
    /// Seconds since ops last heard from the CPE: since its last report
    /// was made, or arrived if that is later (a CPE sending its queue of
    /// old reports is talking, not silent).
    pub silent_s: f64,
    /// The last report was a dying gasp.
    pub gasp: bool,
    /// Boots in the last 30 minutes.
    pub boots_30m: u32,
    /// Minutes with a dying gasp in the last 30 minutes.
    pub gasps_30m: u32,
    /// Uptime at the last report, seconds.
    pub uptime_s: u64,
    /// LAN carrier in the last report.
    pub lan_carrier: bool,
    /// DSL in showtime in the last report.
    pub showtime: bool,
    /// DSL had no signal in the last report.
    pub no_signal: bool,
    /// Minutes with no signal in the last 10.
    pub no_signal_min_10m: u32,
    /// Whether the DSL modem was training (signal, no showtime) at the last report.
    pub training: bool,
    /// Minutes of the last 10 the DSL modem trained without reaching showtime.
    pub training_min_10m: u32,
    /// Retrains in the last 30 minutes.
    pub retrains_30m: u32,
    /// CRC per minute over the last 10 minutes.
    pub crc_per_min_10m: f64,
    /// FEC per minute over the last 10 minutes.
    pub fec_per_min_10m: f64,
    /// Severely errored seconds in the last 10 minutes.
    pub ses_10m: u32,
    /// Minutes of the last 10 with CRC errors above 30.
    pub err_minutes_10m: u32,
    /// Downstream margin now (last showtime minute), dB.
    pub ds_margin: f64,
    /// Upstream margin now, dB.
    pub us_margin: f64,
    /// Downstream attenuation now, dB.
    pub ds_atn: f64,
    /// Attenuation now less the reference, dB.
    pub atn_delta: f64,
    /// Current rate less the reference, share of the reference (negative: slower).
    pub rate_change: f64,
    /// Downstream margin now less the reference, dB.
    pub ds_margin_delta: f64,
    /// Upstream margin now less the reference, dB.
    pub us_margin_delta: f64,
    /// Number of separate low-margin or retrain episodes in the last 60 minutes.
    pub episodes_60m: u32,
    /// Attenuation now less its lowest of 2 to 5 minutes ago, dB (still rising?).
    pub atn_recent_rise: f64,
    /// The largest rise of the attenuation from one minute to the next over
    /// the window, dB (a step puts most of the change in one minute).
    pub atn_max_jump: f64,
    /// Share of the last 10 minutes (in showtime) with both margins at
    /// least 1.5 dB under the reference.
    pub low_margin_share_10m: f64,
    /// Minutes of the last 60 with a margin 6 dB above the reference (a line
    /// trained down during a disturbance that has gone).
    pub high_margin_min_60m: u32,
    /// Share of the minutes since the first bad one that were bad.
    pub bad_share: f64,
    /// The reference is known.
    pub reference: bool,
    /// DSL probes up in the last report.
    pub dsl_probe_up: bool,
    /// DSL probe loss of the second worst of the last 5 minutes, percent.
    pub dsl_loss_5m: f64,
    /// Mobile probes up in the last report.
    pub lte_probe_up: bool,
    /// Mobile modem registered in the last report.
    pub registered: bool,
    /// Mobile round trip over the last 5 minutes less the reference, ms.
    pub lte_rtt_delta: f64,
    /// Mobile loss of the second worst of the last 5 minutes, percent.
    pub lte_loss_5m: f64,
    /// The last report came over the mobile link.
    pub via_lte: bool,
    /// Minutes of history.
    pub minutes: u32,
}

impl Features {
    /// The figures of `h` at `now_ms`.
    pub fn of(h: &Home, now_ms: u64) -> Self {
        let now_min = now_ms / 60_000;
        let mut f = Self {
            silent_s: now_ms.saturating_sub(h.last_ms.max(h.last_arrival_ms)) as f64 / 1000.0,
            minutes: h.buckets.len() as u32,
            reference: h.reference.dsl_known(),
            ..Self::default()
        };
        if let Some(l) = &h.last {
            f.gasp = l.gasp;
            f.uptime_s = l.uptime_s;
            f.lan_carrier = l.lan_carrier;
            f.showtime = l.showtime;
            f.no_signal = l.no_signal;
            f.training = l.training;
            f.dsl_probe_up = l.dsl_probe_up;
            f.lte_probe_up = l.lte_probe_up;
            f.registered = l.registered;
            f.via_lte = l.via_lte;
        }
        let window = |m: u64| h.since(now_min.saturating_sub(m));
        let sum = |m: u64, g: fn(&Bucket) -> u64| window(m).map(g).sum::<u64>();
        f.boots_30m = sum(30, |b| u64::from(b.boots)) as u32;
        f.gasps_30m = window(30).filter(|b| b.gasp).count() as u32;
        f.retrains_30m = sum(30, |b| u64::from(b.retrains)) as u32;
        f.no_signal_min_10m = window(10).filter(|b| b.no_signal > 0).count() as u32;
        f.training_min_10m = window(10)
            .filter(|b| b.training > 0 && b.showtime == 0)
            .count() as u32;
        let minutes_10 = window(10).count().max(1) as f64;
        f.crc_per_min_10m = sum(10, |b| u64::from(b.crc)) as f64 / minutes_10;
        f.fec_per_min_10m = sum(10, |b| u64::from(b.fec)) as f64 / minutes_10;
        f.ses_10m = sum(10, |b| u64::from(b.ses)) as u32;
        f.err_minutes_10m = window(10).filter(|b| b.crc > 30).count() as u32;
        let r = &h.reference;
        // Gauges: the last showtime minute.
        if let Some(b) = h.buckets.iter().rev().find(|b| b.showtime > 0) {
            f.ds_margin = f64::from(b.ds_margin_min);
            f.us_margin = f64::from(b.us_margin_min);
            f.ds_atn = f64::from(b.ds_atn);
            if f.reference {
                f.atn_delta = f.ds_atn - r.ds_atn;
                f.ds_margin_delta = f.ds_margin - r.ds_margin;
                f.us_margin_delta = f.us_margin - r.us_margin;
                if r.ds_rate > 0.0 {
                    f.rate_change = (f64::from(b.ds_rate) - r.ds_rate) / r.ds_rate;
                }
            }
        }
        // Episodes: runs of bad minutes (a retrain, or either margin 5 dB
        // under the reference), each ended only by a minute back within
        // 1.5 dB of it.
        if f.reference {
            let mut in_ep = false;
            for b in window(60) {
                let low = f64::from(b.us_margin_min) - r.us_margin;
                let low = low.min(f64::from(b.ds_margin_min) - r.ds_margin);
                let bad = b.retrains > 0 || (b.showtime > 0 && low < -5.0);
                let good = b.retrains == 0 && b.showtime > 0 && low > -1.5;
                if bad && !in_ep {
                    f.episodes_60m += 1;
                    in_ep = true;
                } else if good {
                    in_ep = false;
                }
            }
            let recent: Vec<&Bucket> = window(10).filter(|b| b.showtime > 0).collect();
            if !recent.is_empty() {
                let low = recent
                    .iter()
                    .filter(|b| {
                        f64::from(b.ds_margin_min) < r.ds_margin - 1.5
                            && f64::from(b.us_margin_min) < r.us_margin - 1.5
                    })
                    .count();
                f.low_margin_share_10m = low as f64 / recent.len() as f64;
            }
        }
        if f.reference && f.atn_delta > 0.5 {
            let show: Vec<(u64, f64)> = h
                .since(0)
                .filter(|b| b.showtime > 0)
                .map(|b| (b.minute, f64::from(b.ds_atn) - r.ds_atn))
                .collect();
            // The reference itself comes first: with a short history, a
            // step in the first minute is a step from the line's normal.
            let from_normal = show.first().map_or(0.0, |p| p.1);
            f.atn_max_jump = show
                .windows(2)
                .map(|w| w[1].1 - w[0].1)
                .fold(from_normal, f64::max);
            let before = show
                .iter()
                .filter(|p| p.0 + 5 >= now_min && p.0 + 2 <= now_min)
                .map(|p| p.1)
                .fold(f64::INFINITY, f64::min);
            if before.is_finite() {
                f.atn_recent_rise = f.atn_delta - before;
            }
        }
        if f.reference {
            let mut first_bad = None;
            let (mut bad, mut total) = (0u32, 0u32);
            for b in window(60) {
                if b.showtime > 0
                    && f64::from(b.ds_margin_min.min(b.us_margin_min))
                        >= r.ds_margin.min(r.us_margin) + 6.0
                {
                    f.high_margin_min_60m += 1;
                }
                let is_bad = b.retrains > 0
                    || (b.showtime > 0
                        && (f64::from(b.us_margin_min) < r.us_margin - 4.0
                            || f64::from(b.ds_margin_min) < r.ds_margin - 4.0));
                if is_bad && first_bad.is_none() {
                    first_bad = Some(b.minute);
                }
                if first_bad.is_some() {
                    total += 1;
                    bad += u32::from(is_bad);
                }
            }
            if total > 0 {
                f.bad_share = f64::from(bad) / f64::from(total);
            }
        }
        // The second worst minute of five: loss that lasts, not a burst
        // (retransmissions after an outage, one probe window's bad luck);
        // and still there in the last two minutes: loss that ended is not
        // a fault now.
        let lasting = |loss: &dyn Fn(&Bucket) -> f64| {
            let mut losses: Vec<f64> = window(5).map(loss).collect();
            losses.sort_by(|a, b| b.total_cmp(a));
            let now = window(2).map(loss).fold(0.0, f64::max);
            losses.get(1).copied().unwrap_or(0.0).min(now)
        };
        f.dsl_loss_5m = lasting(&|b| f64::from(b.dsl_loss));
        // As for the fixed line: loss that lasts two minutes of five, not
        // the burst right after a link (or the HAG) comes back.
        f.lte_loss_5m = lasting(&|b| f64::from(b.lte_loss));
        // The extra round trip over five minutes (a slow cell, not one
        // slow probe), and over the last two (gone when the cell is fine
        // again, not minutes later).
        let mean_rtt = |n: u64| {
            let rtts: Vec<f64> = window(n)
                .filter(|b| b.lte_probe_up > 0)
                .map(|b| f64::from(b.lte_rtt))
                .collect();
            (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64)
        };
        if let (Some(five), Some(two)) = (mean_rtt(5), mean_rtt(2)) {
            if r.lte_samples >= 5 {
                f.lte_rtt_delta = five.min(two) - r.lte_rtt;
            }
        }
        f
    }

    /// Whether the DSL line looks degraded (errors, retrains, lost margin
    /// or rate, packet loss) while in sync.
    pub fn dsl_degraded(&self) -> bool {
        self.retrains_30m >= 1
            || self.err_minutes_10m >= 2
            || self.ses_10m >= 3
            || (self.reference
                && (self.ds_margin_delta <= -3.0
                    || self.us_margin_delta <= -4.0
                    || self.low_margin_share_10m >= 0.6
                    || self.atn_delta >= 1.5
                    || (self.atn_delta >= 0.5 && self.atn_recent_rise >= 0.3)
                    || self.rate_change <= -0.2))
            || self.dsl_loss_5m >= 2.0
    }

    /// Whether the mobile link is down (or the modem unregistered).
    pub fn lte_down(&self) -> bool {
        !self.registered || (!self.lte_probe_up && self.dsl_probe_up)
    }

    /// Whether the mobile link is slow or lossy while up.
    pub fn lte_bad(&self) -> bool {
        self.registered && (self.lte_rtt_delta >= 60.0 || self.lte_loss_5m >= 2.0)
    }

    /// Whether the CPE's probes fail on both links although both modems
    /// are up (the HAG does not answer).
    pub fn probes_fail_both(&self) -> bool {
        self.showtime && self.registered && !self.dsl_probe_up && !self.lte_probe_up
    }
}
