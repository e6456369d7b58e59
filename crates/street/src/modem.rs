//! A DSL modem over the line model: it trains at the attainable rate
//! (capped by the product's tier), its margin follows the channel, errors
//! follow the margin and impulse noise, it drops and retrains below −3 dB,
//! on a ring, on a run of severe seconds, and (as operators' DLM does) when
//! the margin has stayed 12 dB above target for ten minutes, to win the
//! rate back. The simulated fleet ([`crate::fleet`]) runs one per home, and
//! so does the lab's street (`tandem lab up --homes N`), whose modems'
//! readings and real shaped rates come from it.

use rand::{Rng, RngExt};
use telemetry::{
    Channel as TrChannel, ChannelStats, ChannelStatsTotal, DslLine, LineStats, LineStatsTotal,
    LineStatus, LinkStatus,
};

use crate::fault::Effect;
use crate::line::{Channel, Impairment, Pair};
use crate::rng::{normal, poisson};

/// CRC errors per second at a margin (0.05/s at 0 dB, ten times more per
/// 1.5 dB less).
pub fn crc_rate(margin_db: f64) -> f64 {
    (0.05 * 10f64.powf(-margin_db / 1.5)).min(200.0)
}

/// The least rate, each way, a modem goes into showtime at, kbit/s.
pub const MIN_TRAIN_KBPS: f64 = 64.0;

/// One modem's state.
#[derive(Clone, Debug, Default)]
pub struct Modem {
    trained: (f64, f64),
    showtime_since: Option<f64>,
    training_until: Option<f64>,
    es: u64,
    ses: u64,
    crc: (u64, u64),
    fec: (u64, u64),
    cache: Option<(ImpKey, Channel)>,
    /// This step's margins (down, up), dB.
    margins: Option<(f64, f64)>,
    /// The margins' exact values for a channel and trained rates (the
    /// bisection is the model's costly part: redone only on a change).
    exact: Option<Exact>,
    retrain_edge: bool,
}

/// A channel, the trained rates (down, up) and their exact margins.
type Exact = (ImpKey, (f64, f64), (f64, f64));

#[derive(Clone, Copy, Debug, PartialEq)]
struct ImpKey([i64; 5]);

impl ImpKey {
    fn of(i: &Impairment) -> Self {
        Self([
            (i.extra_loss_db * 10.0).round() as i64,
            (i.noise_db * 10.0).round() as i64,
            (i.low_band_noise_db * 2.0).round() as i64,
            i64::from(i.extra_disturbers),
            i64::from(i.cut),
        ])
    }

    /// The impairment at the key's resolution: one key, one channel.
    fn impairment(self) -> Impairment {
        let [loss, noise, low, disturbers, cut] = self.0;
        Impairment {
            extra_loss_db: loss as f64 / 10.0,
            noise_db: noise as f64 / 10.0,
            low_band_noise_db: low as f64 / 2.0,
            extra_disturbers: u32::try_from(disturbers).unwrap_or(0),
            cut: cut != 0,
        }
    }
}

/// The line-side parameters a modem steps with.
#[derive(Clone, Copy, Debug)]
pub struct Line {
    /// The pair.
    pub pair: Pair,
    /// The product's rate cap (down kbit/s, up kbit/s).
    pub cap_kbps: (f64, f64),
    /// Seconds a training takes.
    pub train_s: f64,
}

impl Modem {
    /// The modem restarts (with its CPE) at `t`: counters from zero, it
    /// trains again for `train_s`.
    pub fn restart(&mut self, t: f64, train_s: f64) {
        self.showtime_since = None;
        self.training_until = Some(t + train_s);
        self.es = 0;
        self.ses = 0;
        self.crc = (0, 0);
        self.fec = (0, 0);
    }

    /// In showtime at `t` without training, at the rate `imp` lets the
    /// line attain (a line the lab restores by hand, or whose tier it
    /// changes, comes back at once).
    pub fn resync(&mut self, line: &Line, imp: &Impairment, t: f64) {
        let key = ImpKey::of(imp);
        if self.cache.as_ref().is_none_or(|(k, _)| *k != key) {
            self.cache = Some((key, line.pair.channel(&key.impairment())));
        }
        if let Some((_, ch)) = &self.cache {
            self.trained = (
                ch.down.attainable_kbps.min(line.cap_kbps.0),
                ch.up.attainable_kbps.min(line.cap_kbps.1),
            );
            if !ch.cut {
                self.margins = Some((
                    ch.margin_db(true, self.trained.0),
                    ch.margin_db(false, self.trained.1),
                ));
            }
        }
        self.showtime_since = Some(t);
        self.training_until = None;
    }

    /// Whether the modem is in showtime (carries data).
    pub fn in_showtime(&self) -> bool {
        self.showtime_since.is_some()
    }

    /// The trained rates (down, up), kbit/s.
    pub fn trained(&self) -> (f64, f64) {
        self.trained
    }

    /// Packets lost to CRC errors on the line at this step's margin, percent.
    pub fn crc_loss_pct(&self) -> f64 {
        self.margins
            .map_or(0.0, |(md, _)| (crc_rate(md) * 0.02).min(5.0))
    }

    /// Advances the modem by `dt` seconds to `t` under `e` (`burst`: a
    /// short burst of background errors). Returns whether it lost sync or
    /// started retraining in this step (the CPE's `retrain` event).
    pub fn step(
        &mut self,
        line: &Line,
        t: f64,
        dt: f64,
        e: &Effect,
        burst: bool,
        rng: &mut impl Rng,
    ) -> bool {
        let key = ImpKey::of(&e.line);
        if self.cache.as_ref().is_none_or(|(k, _)| *k != key) {
            self.cache = Some((key, line.pair.channel(&key.impairment())));
        }
        let Some((_, ch)) = self.cache.as_ref() else {
            return false;
        };
        if ch.cut {
            self.training_until = None;
            return self.showtime_since.take().is_some();
        }
        if self.showtime_since.is_none() && self.training_until.is_none() {
            self.training_until = Some(t + line.train_s.min(dt * 0.75));
        }
        if let Some(until) = self.training_until {
            if t < until {
                return false;
            }
            let trained = (
                ch.down.attainable_kbps.min(line.cap_kbps.0),
                ch.up.attainable_kbps.min(line.cap_kbps.1),
            );
            if trained.0 < MIN_TRAIN_KBPS || trained.1 < MIN_TRAIN_KBPS {
                // Too little to carry anything in one direction: the
                // training fails and starts again (signal present, no sync).
                self.training_until = Some(t + line.train_s);
                return false;
            }
            self.training_until = None;
            self.showtime_since = Some(until);
            self.trained = trained;
        }
        let (md0, mu0) = match self.exact {
            Some((k, tr, m)) if k == key && tr == self.trained => m,
            _ => {
                let m = (
                    ch.margin_db(true, self.trained.0),
                    ch.margin_db(false, self.trained.1),
                );
                self.exact = Some((key, self.trained, m));
                m
            }
        };
        let md = md0 + normal(rng, 0.0, 0.3);
        let mu = mu0 + normal(rng, 0.0, 0.3);
        let impulses = poisson(
            rng,
            (e.impulses_per_min + if burst { 20.0 } else { 0.0 }) * dt / 60.0,
        );
        let (ld, lu) = (crc_rate(md), crc_rate(mu));
        let crc_d = poisson(rng, ld * dt) + impulses * rng.random_range(3..30);
        let crc_u = poisson(rng, lu * dt) + impulses * rng.random_range(0..10);
        let lam = ld + lu;
        let es = (dt * (1.0 - (-lam).exp())) as u64 + impulses;
        let ses = if lam > 10.0 {
            (dt * ((lam - 10.0) / 20.0).min(1.0)) as u64
        } else {
            0
        } + impulses / 3;
        self.crc.0 += crc_d;
        self.crc.1 += crc_u;
        self.fec.0 += crc_d * 20 + impulses * 200 + poisson(rng, dt * 0.5);
        self.fec.1 += crc_u * 20 + poisson(rng, dt * 0.2);
        // Whole seconds: a step shorter than one counts at most one.
        let whole = (dt as u64).max(1);
        self.es += es.min(whole);
        self.ses += ses.min(whole);
        let ring = e.retrain && !self.retrain_edge;
        self.retrain_edge = e.retrain;
        let since = self.showtime_since.map_or(0.0, |s0| t - s0);
        let headroom = md.min(mu) > crate::line::TARGET_MARGIN_DB + 12.0 && since >= 600.0;
        // Keep the margins of this step for the report.
        self.margins = Some((md, mu));
        if md.min(mu) < -3.0 || ring || ses as f64 >= dt * 0.5 || headroom {
            self.showtime_since = None;
            self.training_until = Some(t + line.train_s);
            return true;
        }
        false
    }

    /// What the modem reports at `t` under TR-181's names (`None` before
    /// its first step). `attenuation_noise_db` is the reading's own noise.
    pub fn reading(&self, t: f64, attenuation_noise_db: f64) -> Option<DslLine> {
        let showtime = self.showtime_since;
        self.cache.as_ref().map(|(_, ch)| {
            let (md, mu) = self.margins.unwrap_or((0.0, 0.0));
            let up = showtime.is_some();
            let tenths = |v: f64, lo: f64, hi: f64| (v * 10.0).round().clamp(lo, hi) as i32;
            let when_up = |v: i32| if up { v } else { 0 };
            let attainable = |v: f64| if ch.cut { 0 } else { v as u32 };
            DslLine {
                status: if up { LineStatus::Up } else { LineStatus::Down },
                link_status: if up {
                    LinkStatus::Up
                } else if ch.cut {
                    LinkStatus::NoSignal
                } else {
                    LinkStatus::Initializing
                },
                upstream_max_bit_rate: attainable(ch.up.attainable_kbps),
                downstream_max_bit_rate: attainable(ch.down.attainable_kbps),
                upstream_noise_margin: when_up(tenths(mu, -640.0, 640.0)),
                downstream_noise_margin: when_up(tenths(md, -640.0, 640.0)),
                upstream_attenuation: when_up(tenths(
                    ch.up.attenuation_db + attenuation_noise_db,
                    0.0,
                    1280.0,
                )),
                downstream_attenuation: when_up(tenths(
                    ch.down.attenuation_db + attenuation_noise_db,
                    0.0,
                    1280.0,
                )),
                upstream_power: when_up(ch.power.1),
                downstream_power: when_up(ch.power.0),
                stats: LineStats {
                    last_showtime_start: showtime.map_or(0, |s0| (t - s0).max(0.0) as u64),
                    total: LineStatsTotal {
                        errored_secs: self.es,
                        severely_errored_secs: self.ses,
                    },
                },
                channel: TrChannel {
                    upstream_curr_rate: if up { self.trained.1 as u32 } else { 0 },
                    downstream_curr_rate: if up { self.trained.0 as u32 } else { 0 },
                    stats: ChannelStats {
                        total: ChannelStatsTotal {
                            xtur_crc_errors: self.crc.0,
                            xtuc_crc_errors: self.crc.1,
                            xtur_fec_errors: self.fec.0,
                            xtuc_fec_errors: self.fec.1,
                        },
                    },
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::{Gauge, Profile};
    use rand::SeedableRng;

    fn line() -> Line {
        Line {
            pair: Pair {
                length_km: 0.8,
                gauge: Gauge::Mm05,
                profile: Profile::Vdsl2_17a,
                disturbers: 10,
            },
            cap_kbps: (20_000.0, 5_000.0),
            train_s: 10.0,
        }
    }

    #[test]
    fn trains_at_the_cap_then_loses_sync_on_a_cut_and_errs_under_noise() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut m = Modem::default();
        let l = line();
        m.restart(0.0, l.train_s);
        let ok = Effect::default();
        for t in 1..=12 {
            m.step(&l, f64::from(t), 1.0, &ok, false, &mut rng);
        }
        assert!(m.in_showtime());
        assert_eq!(m.trained(), (20_000.0, 5_000.0));
        let r = m.reading(12.0, 0.0).unwrap();
        assert!(r.downstream_noise_margin > 60, "{r:?}");
        assert_eq!(r.channel.downstream_curr_rate, 20_000);
        // Heavy noise: the margin falls, CRCs come, then it retrains.
        let mut noisy = Effect::default();
        noisy.line.noise_db = 40.0;
        let mut dropped = false;
        for t in 13..40 {
            dropped |= m.step(&l, f64::from(t), 1.0, &noisy, false, &mut rng);
        }
        assert!(dropped);
        let mut cut = Effect::default();
        cut.line.cut = true;
        m.resync(&l, &Impairment::default(), 40.0);
        assert!(m.step(&l, 41.0, 1.0, &cut, false, &mut rng));
        // Wiring so bad that the upstream cannot carry anything: the
        // modem keeps training, with signal, and never reaches showtime.
        let far = Line {
            pair: Pair {
                length_km: 1.4,
                ..l.pair
            },
            ..l
        };
        let mut bad = Effect::default();
        bad.line.extra_loss_db = 6.0;
        bad.line.noise_db = 3.4;
        let mut m2 = Modem::default();
        m2.restart(0.0, far.train_s);
        for t in 1..60 {
            m2.step(&far, f64::from(t), 1.0, &bad, false, &mut rng);
            assert!(!m2.in_showtime(), "{t}");
        }
        assert_eq!(
            m2.reading(60.0, 0.0).unwrap().link_status,
            LinkStatus::Initializing
        );
        let r = m.reading(41.0, 0.0).unwrap();
        assert_eq!(r.link_status, LinkStatus::NoSignal);
        assert_eq!(r.downstream_max_bit_rate, 0);
    }
}
