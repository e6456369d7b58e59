//! A physical model of one DSL line: loop length and wire gauge give the
//! attenuation of every tone, the transmit mask and the noise (background
//! plus far-end crosstalk from the other pairs of the binder) give its SNR,
//! and the SNR gives the bits each tone carries, hence the attainable rate
//! and, for a line trained at a given rate, its noise margin.
//!
//! Sources of the figures:
//! - Attenuation at 300 kHz per km: 13.81 dB (0.4 mm, 26 AWG), 11.90 dB
//!   (0.5 mm, 24 AWG), 8.62 dB (0.64 mm, 22 AWG), the table modems' reported
//!   attenuation is usually read against (speedguide.net, "How does signal
//!   attenuation relate to wire gauge and distance", FAQ 373). Across
//!   frequency the loss grows with the square root of the frequency (skin
//!   effect, the dominant term of a pair's attenuation; LNTwww "Attenuation
//!   of copper cables").
//! - Far-end crosstalk: the ANSI T1.417 simplified model,
//!   `FEXT(f) = S(f) · |H(f)|² · 8·10⁻²⁰ · (n/49)^0.6 · f² · d` with f in Hz
//!   and d in feet, n disturbers.
//! - Band plans: ADSL2+ Annex A (G.992.5: upstream tones 6–31, downstream
//!   33–511), VDSL2 17a with plan 998ADE17 (G.993.2 Annex B: downstream
//!   0.138–3.75, 5.2–8.5, 12–17.664 MHz; upstream 3.75–5.2, 8.5–12 MHz).
//!   Transmit PSD: ADSL2+ −40 dBm/Hz down, −38 up; VDSL2 −60 dBm/Hz.
//!   Tone spacing 4.3125 kHz, 4,000 DMT symbols per second.
//! - Bit loading: Shannon with an SNR gap of 9.75 dB (uncoded QAM at
//!   10⁻⁷) less 3 dB of coding gain, plus the margin; 1 to 15 bits per tone.
//!   Background noise −140 dBm/Hz.
//!
//! The model is deliberately the textbook one: it is what gives the
//! readings of the lab's modems and the simulated fleet their physics
//! (longer and thinner lines are slower and noisier, water adds loss, a new
//! neighbour adds crosstalk), not a predictor of one real pair.

use serde::{Deserialize, Serialize};

/// Tones are evaluated in groups of this many (a group's centre stands for
/// all of them): 16 keeps an evaluation in the microseconds.
const GROUP: usize = 16;
const TONE_HZ: f64 = 4312.5;
const SYMBOLS_PER_S: f64 = 4000.0;
/// SNR gap, dB: 9.75 dB for 10⁻⁷ less 3 dB coding gain.
const GAP_DB: f64 = 6.75;
/// Target margin the modem trains at, dB.
pub const TARGET_MARGIN_DB: f64 = 6.0;
const NOISE_DBM_HZ: f64 = -140.0;
const FEET_PER_KM: f64 = 3280.84;

/// A frequency band, Hz (low, high).
type Band = (f64, f64);

/// Wire gauge of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gauge {
    /// 0.4 mm (26 AWG).
    Mm04,
    /// 0.5 mm (24 AWG).
    Mm05,
    /// 0.64 mm (22 AWG).
    Mm06,
}

impl Gauge {
    /// Attenuation at 300 kHz, dB per km.
    pub fn db_per_km_300k(self) -> f64 {
        match self {
            Self::Mm04 => 13.81,
            Self::Mm05 => 11.90,
            Self::Mm06 => 8.62,
        }
    }
}

/// The DSL standard the line runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// ADSL2+ Annex A.
    Adsl2Plus,
    /// VDSL2 profile 17a, band plan 998ADE17.
    Vdsl2_17a,
}

impl Profile {
    /// (downstream bands, upstream bands) in Hz.
    fn bands(self) -> (&'static [Band], &'static [Band]) {
        match self {
            Self::Adsl2Plus => (&[(138e3, 2208e3)], &[(25.875e3, 138e3)]),
            Self::Vdsl2_17a => (
                &[(138e3, 3750e3), (5200e3, 8500e3), (12000e3, 17664e3)],
                &[(3750e3, 5200e3), (8500e3, 12000e3)],
            ),
        }
    }

    /// Transmit PSD (down, up), dBm/Hz.
    fn tx_psd(self) -> (f64, f64) {
        match self {
            Self::Adsl2Plus => (-40.0, -38.0),
            Self::Vdsl2_17a => (-60.0, -60.0),
        }
    }

    /// Transmit power as a modem reports it (down, up), 0.1 dBmV-like units.
    fn power(self) -> (i32, i32) {
        match self {
            Self::Adsl2Plus => (195, 125),
            Self::Vdsl2_17a => (145, 70),
        }
    }
}

/// The pair itself.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// Loop length from the cabinet (or exchange) to the home, km.
    pub length_km: f64,
    /// Wire gauge.
    pub gauge: Gauge,
    /// DSL standard.
    pub profile: Profile,
    /// Other DSL pairs in the binder (crosstalk sources).
    pub disturbers: u32,
}

/// What degrades a pair beyond its length: the faults' physical effects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Impairment {
    /// Extra loss at 300 kHz, dB, growing with √f like the pair's own
    /// (water in a joint, corroded or bad in-home wiring).
    pub extra_loss_db: f64,
    /// Rise of the noise floor on every tone, dB.
    pub noise_db: f64,
    /// Rise of the noise on tones below 1.1 MHz, dB (an unfiltered phone).
    pub low_band_noise_db: f64,
    /// Extra crosstalkers (a new neighbour's line in the binder).
    pub extra_disturbers: u32,
    /// No signal at all: a cut pair or a dead DSLAM port.
    pub cut: bool,
}

/// One direction's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DirectionFigures {
    /// Attainable rate at the target margin, kbit/s.
    pub attainable_kbps: f64,
    /// Attenuation as a modem reports it, dB.
    pub attenuation_db: f64,
}

/// The pair's state under an impairment.
#[derive(Clone, Debug, PartialEq)]
pub struct Channel {
    /// Downstream.
    pub down: DirectionFigures,
    /// Upstream.
    pub up: DirectionFigures,
    /// SNR per tone group, downstream, dB (empty when cut).
    snr_down: Vec<f64>,
    /// SNR per tone group, upstream, dB.
    snr_up: Vec<f64>,
    /// Whether there is no signal.
    pub cut: bool,
    /// Reported transmit powers (down, up).
    pub power: (i32, i32),
}

fn db_to_lin(db: f64) -> f64 {
    10f64.powf(db / 10.0)
}

/// Bits one tone carries at `snr_db` with `margin_db`.
fn bits(snr_db: f64, margin_db: f64) -> f64 {
    let eff = snr_db - GAP_DB - margin_db;
    let b = (1.0 + db_to_lin(eff)).log2().floor();
    if b < 1.0 {
        0.0
    } else {
        b.min(15.0)
    }
}

/// kbit/s of a group set at a margin.
fn rate_kbps(snr: &[f64], margin_db: f64) -> f64 {
    snr.iter().map(|&s| bits(s, margin_db)).sum::<f64>() * GROUP as f64 * SYMBOLS_PER_S / 1000.0
}

impl Pair {
    /// Loss of the pair (with `extra` dB at 300 kHz) at `f` Hz, dB.
    fn loss_db(&self, extra: f64, f: f64) -> f64 {
        (self.gauge.db_per_km_300k() * self.length_km.max(0.0) + extra.max(0.0))
            * (f / 300e3).sqrt()
    }

    fn snr(&self, imp: &Impairment, bands: &[Band], tx_dbm_hz: f64) -> Vec<f64> {
        let n = f64::from(self.disturbers + imp.extra_disturbers);
        let d_ft = self.length_km.max(0.01) * FEET_PER_KM;
        let mut out = Vec::new();
        for &(lo, hi) in bands {
            let first = (lo / TONE_HZ).ceil() as usize;
            let last = (hi / TONE_HZ).floor() as usize;
            let mut t = first;
            while t + GROUP <= last + 1 {
                let f = (t as f64 + GROUP as f64 / 2.0) * TONE_HZ;
                let loss = self.loss_db(imp.extra_loss_db, f);
                let rx = tx_dbm_hz - loss;
                let mut noise = db_to_lin(NOISE_DBM_HZ + imp.noise_db);
                if f < 1.1e6 {
                    noise += db_to_lin(NOISE_DBM_HZ + imp.low_band_noise_db);
                }
                if n > 0.0 {
                    // S·|H|²·K·(n/49)^0.6·f²·d, in linear mW/Hz.
                    let fext = db_to_lin(rx) * 8e-20 * (n / 49.0).powf(0.6) * f * f * d_ft;
                    noise += fext;
                }
                out.push(rx - 10.0 * noise.log10());
                t += GROUP;
            }
        }
        out
    }

    /// The channel under `imp`.
    pub fn channel(&self, imp: &Impairment) -> Channel {
        let (down_bands, up_bands) = self.profile.bands();
        let (tx_down, tx_up) = self.profile.tx_psd();
        let cut = imp.cut;
        let (snr_down, snr_up) = if cut {
            (Vec::new(), Vec::new())
        } else {
            (
                self.snr(imp, down_bands, tx_down),
                self.snr(imp, up_bands, tx_up),
            )
        };
        // Reported attenuation: the loss at a reference tone of each
        // direction (300 kHz down, the middle of the upstream band up).
        let up_ref = match self.profile {
            Profile::Adsl2Plus => 80e3,
            Profile::Vdsl2_17a => 4.4e6,
        };
        let up_scale = match self.profile {
            Profile::Adsl2Plus => 1.0,
            // VDSL2 modems report the upstream band's loss averaged with
            // the lower bands: scale the 4.4 MHz loss down to a typical
            // reading (about 1.4 times the downstream figure).
            Profile::Vdsl2_17a => 0.37,
        };
        Channel {
            down: DirectionFigures {
                attainable_kbps: rate_kbps(&snr_down, TARGET_MARGIN_DB),
                attenuation_db: self.loss_db(imp.extra_loss_db, 300e3),
            },
            up: DirectionFigures {
                attainable_kbps: rate_kbps(&snr_up, TARGET_MARGIN_DB),
                attenuation_db: self.loss_db(imp.extra_loss_db, up_ref) * up_scale,
            },
            snr_down,
            snr_up,
            cut,
            power: self.profile.power(),
        }
    }
}

impl Channel {
    /// The noise margin, dB, of a line trained at `kbps` downstream
    /// (`down`) or upstream: the largest margin at which the channel still
    /// carries that rate (−20 dB when it cannot even at that).
    pub fn margin_db(&self, down: bool, kbps: f64) -> f64 {
        let snr = if down { &self.snr_down } else { &self.snr_up };
        if snr.is_empty() || kbps <= 0.0 {
            return if snr.is_empty() { -20.0 } else { 30.0 };
        }
        let (mut lo, mut hi) = (-20.0f64, 40.0f64);
        if rate_kbps(snr, lo) < kbps {
            return lo;
        }
        for _ in 0..24 {
            let mid = (lo + hi) / 2.0;
            if rate_kbps(snr, mid) >= kbps {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(km: f64, gauge: Gauge, profile: Profile) -> Pair {
        Pair {
            length_km: km,
            gauge,
            profile,
            disturbers: 10,
        }
    }

    #[test]
    fn longer_and_thinner_lines_are_slower() {
        let clean = Impairment::default();
        let mut last = f64::MAX;
        for km in [0.3, 1.0, 2.0, 3.0, 4.5] {
            let c = pair(km, Gauge::Mm04, Profile::Adsl2Plus).channel(&clean);
            assert!(c.down.attainable_kbps < last, "{km} km");
            last = c.down.attainable_kbps;
        }
        let thin = pair(2.0, Gauge::Mm04, Profile::Adsl2Plus).channel(&clean);
        let thick = pair(2.0, Gauge::Mm06, Profile::Adsl2Plus).channel(&clean);
        assert!(thick.down.attainable_kbps > thin.down.attainable_kbps);
    }

    #[test]
    fn rates_are_in_the_published_range() {
        // ADSL2+ reaches about 24 Mbit/s close to the exchange and a few
        // Mbit/s at 4-5 km; VDSL2 17a without vectoring 50 to 100 Mbit/s at 300 m.
        let clean = Impairment::default();
        let near = pair(0.3, Gauge::Mm05, Profile::Adsl2Plus).channel(&clean);
        assert!(
            (18_000.0..=30_000.0).contains(&near.down.attainable_kbps),
            "{near:?}"
        );
        let far = pair(4.5, Gauge::Mm04, Profile::Adsl2Plus).channel(&clean);
        assert!(
            (500.0..=6_000.0).contains(&far.down.attainable_kbps),
            "{:?}",
            far.down
        );
        let v = pair(0.3, Gauge::Mm05, Profile::Vdsl2_17a).channel(&clean);
        assert!(
            (50_000.0..=150_000.0).contains(&v.down.attainable_kbps),
            "{:?}",
            v.down
        );
        // 13.81 dB/km at 300 kHz on 0.4 mm.
        let a = pair(2.0, Gauge::Mm04, Profile::Adsl2Plus).channel(&clean);
        assert!((a.down.attenuation_db - 27.62).abs() < 0.01);
    }

    #[test]
    fn a_line_trained_at_its_attainable_rate_has_the_target_margin() {
        let p = pair(2.5, Gauge::Mm04, Profile::Adsl2Plus);
        let c = p.channel(&Impairment::default());
        let m = c.margin_db(true, c.down.attainable_kbps);
        assert!((m - TARGET_MARGIN_DB).abs() < 1.0, "{m}");
    }

    #[test]
    fn impairments_cut_margin_and_rate_the_way_they_should() {
        let p = pair(2.0, Gauge::Mm04, Profile::Adsl2Plus);
        let clean = p.channel(&Impairment::default());
        let rate = clean.down.attainable_kbps;
        let m0 = clean.margin_db(true, rate);
        let wet = p.channel(&Impairment {
            extra_loss_db: 6.0,
            ..Default::default()
        });
        assert!(wet.down.attenuation_db > clean.down.attenuation_db + 5.0);
        assert!(wet.margin_db(true, rate) < m0 - 1.0);
        let xtalk = p.channel(&Impairment {
            extra_disturbers: 30,
            ..Default::default()
        });
        assert_eq!(xtalk.down.attenuation_db, clean.down.attenuation_db);
        assert!(xtalk.margin_db(true, rate) < m0 - 1.0);
        let phone = p.channel(&Impairment {
            low_band_noise_db: 60.0,
            ..Default::default()
        });
        assert!(phone.margin_db(false, clean.up.attainable_kbps) < 0.0);
        let cut = p.channel(&Impairment {
            cut: true,
            ..Default::default()
        });
        assert_eq!(cut.down.attainable_kbps, 0.0);
        assert_eq!(cut.margin_db(true, rate), -20.0);
    }
}
