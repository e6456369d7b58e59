//! The monthly mobile data budget: byte accounting and its persistence.
//!
//! The caller reads the mobile interface's cumulative rx+tx counter from the
//! kernel every few hundred milliseconds and hands it to
//! [`Tracker::observe`], which turns the raw counter into bytes used in the
//! current billing period, rolls the period over on the configured day of the
//! month (00:00 UTC) and says when the budget is spent, early enough that the
//! real overrun stays under 1 % (see [`Observation::exhausted`]). The caller
//! calls [`Tracker::persist`] every few seconds, on exit and whenever an
//! observation is [`dirty`](Observation::dirty); a crash or power loss loses
//! at most the bytes counted since the last persist.
//!
//! What it does not do: no I/O besides the state file (no reading of
//! interface counters, no clock: times are arguments), no switching of the
//! mobile link (the caller puts it on standby when exhausted), no time zones
//! (periods start at 00:00 UTC). Calendar arithmetic is `jiff`'s civil
//! dates (proleptic Gregorian calendar).
//!
//! The state file is JSON. If it is corrupt, [`Tracker::open`] refuses to
//! start with [`BudgetError::Corrupt`] rather than reset a billing count to
//! zero; the operator may inspect it and delete it, which restarts the
//! period's count at 0.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use jiff::Unit;
use serde::{Deserialize, Serialize};

/// The default [`BudgetConfig::stop_margin`]: stop at 99.5 % of the limit.
pub const DEFAULT_STOP_MARGIN: f64 = 0.005;

/// Seconds ahead for which the current rate is projected: how long the
/// mobile link keeps carrying traffic once told to go standby. The CPE acts
/// on the same sample, but the HAG still sends what it had already queued
/// on the mobile subflow: about 0.45 s of it at 60 Mbit/s in the lab (a
/// 0.25 s projection overran a 40 MB budget by 0.94 %).
const REACTION_SECS: f64 = 0.5;

/// Time constant of the rate EWMA, in seconds.
const RATE_TAU_SECS: f64 = 1.0;

/// Version of the state file's format.
const STATE_VERSION: u32 = 1;

const SECS_PER_DAY: i64 = 86_400;

/// The budget's configuration.
#[derive(Clone, Debug)]
pub struct BudgetConfig {
    /// Bytes (rx + tx) allowed on the mobile link per billing period.
    pub limit_bytes: u64,
    /// Day of the month (1..=28) on which a period starts, at 00:00 UTC.
    pub reset_day: u8,
    /// The JSON state file; its directory must exist.
    pub state_path: PathBuf,
    /// Fraction of the limit kept in reserve: the budget is exhausted at
    /// `limit * (1 - stop_margin)`. In `0.0..1.0`; [`DEFAULT_STOP_MARGIN`]
    /// is the default.
    pub stop_margin: f64,
}

impl BudgetConfig {
    /// A configuration with the default stop margin.
    pub fn new(limit_bytes: u64, reset_day: u8, state_path: PathBuf) -> Self {
        Self {
            limit_bytes,
            reset_day,
            state_path,
            stop_margin: DEFAULT_STOP_MARGIN,
        }
    }
}

/// Why the budget could not be loaded, checked or saved.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// Reading or writing a file failed.
    #[error("budget state {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The state file exists but cannot be used. It is not reset silently:
    /// the operator may delete it, which restarts the period's count at 0.
    #[error(
        "budget state {} is corrupt ({reason}); delete it to restart this period's count at 0",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        reason: Corruption,
    },
    /// The configuration is out of range.
    #[error("invalid budget configuration: {0}")]
    Config(#[from] ConfigRange),
}

/// What is wrong with a budget state file.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    /// It is not the JSON of a state.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// It was written by a version of the format this one does not know.
    #[error("unknown version {0}")]
    Version(u32),
    /// Its period ends before it starts.
    #[error("period {label} ends before it starts")]
    Period {
        /// The period's label.
        label: String,
    },
}

/// A budget setting out of its range.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum ConfigRange {
    /// [`BudgetConfig::reset_day`] not in 1..=28.
    #[error("reset_day {0} is not in 1..=28")]
    ResetDay(u8),
    /// [`BudgetConfig::stop_margin`] not in 0.0..1.0.
    #[error("stop_margin {0} is not in 0.0..1.0")]
    StopMargin(f64),
}

/// A billing period: `[start_unix, end_unix)`, in unix seconds (UTC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// First second of the period (00:00 UTC on the reset day).
    pub start_unix: i64,
    /// First second of the next period.
    pub end_unix: i64,
    /// `"YYYY-MM"`: the month in which the period starts.
    pub label: String,
}

/// 1970-01-01.
const EPOCH: Date = jiff::civil::date(1970, 1, 1);

/// Days since 1970-01-01 of a date.
fn day_number(date: Date) -> i64 {
    date.since((Unit::Day, EPOCH))
        .map_or(0, |s| i64::from(s.get_days()))
}

/// The date of a day since 1970-01-01; days outside `jiff`'s range (years
/// -9999..=9999) saturate to its ends.
fn date_of_day(days: i64) -> Date {
    let edge = if days < 0 { Date::MIN } else { Date::MAX };
    // A span holds at most ±7,304,484 days, more than the range.
    let span = jiff::Span::new().days(days.clamp(-7_000_000, 7_000_000));
    EPOCH.checked_add(span).unwrap_or(edge)
}

/// The billing period containing `unix` (seconds, UTC) when periods start on
/// `reset_day` at 00:00 UTC. `reset_day` is clamped to 1..=28 (every month
/// has those days). Times beyond `jiff`'s years -9999..=9999 saturate rather
/// than panic.
pub fn period_containing(unix: i64, reset_day: u8) -> Period {
    let reset = reset_day.clamp(1, 28) as i8;
    let date = date_of_day(unix.div_euclid(SECS_PER_DAY));
    // The reset day is whole days, so comparing the day of the month suffices.
    let this_month = Date::new(date.year(), date.month(), reset).unwrap_or(date);
    let start = if date.day() >= reset {
        this_month
    } else {
        this_month
            .checked_sub(jiff::Span::new().months(1))
            .unwrap_or(Date::MIN)
    };
    let end = start
        .checked_add(jiff::Span::new().months(1))
        .unwrap_or(Date::MAX);
    Period {
        start_unix: day_number(start).saturating_mul(SECS_PER_DAY),
        end_unix: day_number(end).saturating_mul(SECS_PER_DAY),
        label: format!("{:04}-{:02}", start.year(), start.month()),
    }
}

/// What [`Tracker::observe`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Bytes used in the current period.
    pub used: u64,
    /// The period's limit.
    pub limit: u64,
    /// The current period's label (`"YYYY-MM"`).
    pub period_label: String,
    /// The budget is spent: put the mobile link on standby. True once
    /// `used + rate * 0.5 s >= limit * (1 - stop_margin)`, where the rate is
    /// the larger of the EWMA and the last sample's rate; it then stays true
    /// until the period rolls over (no flapping). The real overrun stays
    /// under 1 % provided the caller acts within 0.5 s and observes often
    /// enough that one interval's bytes are well under 0.5 % of the limit.
    pub exhausted: bool,
    /// This observation started a new period (count restarted at 0).
    pub rolled_over: bool,
    /// Something important changed (rollover, exhaustion): persist now.
    pub dirty: bool,
    /// Bytes carried in this period while the budget was waived (counted
    /// apart, not in `used`).
    pub waived: u64,
    /// The extra bytes granted now (in `limit`).
    pub extra: u64,
    /// The budget is waived now.
    pub waiver: bool,
}

/// The state file's content.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    version: u32,
    period: Period,
    used_bytes: u64,
    /// The limit under which `exhausted` was decided.
    limit_bytes: u64,
    exhausted: bool,
    /// Bytes carried while the budget was waived (files written before
    /// waivers have none).
    #[serde(default)]
    waived_bytes: u64,
}

/// Accounting of the mobile link's bytes in the current billing period.
#[derive(Debug)]
pub struct Tracker {
    cfg: BudgetConfig,
    period: Period,
    used: u64,
    /// The last raw counter value; `None` until the first observation after
    /// [`Tracker::open`] (counters are not trusted across restarts).
    last_raw: Option<u64>,
    /// Time of the last observation, unix milliseconds.
    last_ms: Option<i64>,
    /// EWMA of the rate, bytes/s; `None` before the first rate sample.
    rate_ewma: Option<f64>,
    /// Rate over the last observation interval, bytes/s.
    rate_last: f64,
    exhausted: bool,
    /// Bytes carried while waived, this period.
    waived: u64,
    /// Ops' policy now: the budget is waived; extra bytes granted.
    waiver: bool,
    extra: u64,
}

impl Tracker {
    /// Loads the state file if present (a missing file is a fresh count at 0)
    /// and starts a new period at 0 if the stored one has ended while the CPE
    /// was down. A stored period that has not started yet (the clock went
    /// back, e.g. before NTP sync) is kept, so no count is lost.
    ///
    /// The first [`observe`](Self::observe) afterwards only sets the counter
    /// base: the interface counter may have been reset in between.
    pub fn open(cfg: BudgetConfig, now_unix: i64) -> Result<Self, BudgetError> {
        if !(1..=28).contains(&cfg.reset_day) {
            return Err(ConfigRange::ResetDay(cfg.reset_day).into());
        }
        if !(0.0..1.0).contains(&cfg.stop_margin) {
            return Err(ConfigRange::StopMargin(cfg.stop_margin).into());
        }
        let mut tracker = Self {
            period: period_containing(now_unix, cfg.reset_day),
            used: 0,
            last_raw: None,
            last_ms: None,
            rate_ewma: None,
            rate_last: 0.0,
            exhausted: false,
            waived: 0,
            waiver: false,
            extra: 0,
            cfg,
        };
        if let Some(state) = load(&tracker.cfg.state_path)? {
            if now_unix < state.period.end_unix {
                tracker.period = state.period;
                tracker.used = state.used_bytes;
                tracker.waived = state.waived_bytes;
                // A changed limit re-decides exhaustion from the count.
                tracker.exhausted = (state.exhausted
                    && state.limit_bytes == tracker.cfg.limit_bytes)
                    || tracker.over_threshold(0.0);
            }
        }
        Ok(tracker)
    }

    /// Accounts the raw cumulative counter (rx + tx bytes of the mobile
    /// interface) read at `now_unix_ms`. A counter below the last one was
    /// reset: its whole value is counted (bytes since the reset). An
    /// observation past the period's end starts the new period at 0 and
    /// counts its bytes there.
    pub fn observe(&mut self, raw_counter: u64, now_unix_ms: i64) -> Observation {
        let delta = match self.last_raw {
            None => 0,
            Some(last) if raw_counter >= last => raw_counter - last,
            Some(_) => raw_counter,
        };
        self.last_raw = Some(raw_counter);

        let now = now_unix_ms.div_euclid(1000);
        let rolled_over = now >= self.period.end_unix;
        if rolled_over {
            self.period = period_containing(now, self.cfg.reset_day);
            self.used = 0;
            self.waived = 0;
            self.exhausted = false;
        }
        if self.waiver {
            self.waived = self.waived.saturating_add(delta);
        } else {
            self.used = self.used.saturating_add(delta);
        }
        self.update_rate(delta, now_unix_ms);

        let projected = self.rate_ewma.unwrap_or(0.0).max(self.rate_last) * REACTION_SECS;
        let newly_exhausted = !self.waiver && !self.exhausted && self.over_threshold(projected);
        self.exhausted |= newly_exhausted;
        Observation {
            used: self.used,
            limit: self.limit(),
            period_label: self.period.label.clone(),
            exhausted: self.exhausted && !self.waiver,
            rolled_over,
            dirty: rolled_over || newly_exhausted,
            waived: self.waived,
            extra: self.extra,
            waiver: self.waiver,
        }
    }

    /// Applies ops' policy: while `waiver`, the mobile link's bytes are
    /// counted apart (not charged) and the budget does not hold it back;
    /// `extra` bytes granted raise the limit. A change of the grant decides
    /// exhaustion again from the count (a grant can free a spent budget,
    /// and its end spend it again).
    pub fn set_policy(&mut self, waiver: bool, extra: u64) {
        self.waiver = waiver;
        if extra != self.extra {
            self.extra = extra;
            self.exhausted = self.over_threshold(0.0);
        }
    }

    /// Bytes carried in this period while the budget was waived.
    pub fn waived(&self) -> u64 {
        self.waived
    }

    /// Writes the state atomically: `<path>.tmp`, fsync, rename over the
    /// state file, fsync of the directory. On a crash or power loss at most
    /// the bytes counted since the last successful persist are lost.
    pub fn persist(&self) -> Result<(), BudgetError> {
        let state = State {
            version: STATE_VERSION,
            period: self.period.clone(),
            used_bytes: self.used,
            limit_bytes: self.cfg.limit_bytes,
            exhausted: self.exhausted,
            waived_bytes: self.waived,
        };
        let path = &self.cfg.state_path;
        let json = serde_json::to_vec_pretty(&state).map_err(io::Error::other);
        let json = json.map_err(io_err(path))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&json).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err(path))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    }

    /// Bytes used in the current period.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The period's limit, bytes: the configured one plus what is granted
    /// now.
    pub fn limit(&self) -> u64 {
        self.cfg.limit_bytes.saturating_add(self.extra)
    }

    /// The current billing period.
    pub fn period(&self) -> &Period {
        &self.period
    }

    /// Whether `used + projected` reaches `limit * (1 - stop_margin)`.
    fn over_threshold(&self, projected: f64) -> bool {
        let threshold = self.limit() as f64 * (1.0 - self.cfg.stop_margin);
        self.used as f64 + projected >= threshold
    }

    fn update_rate(&mut self, delta: u64, now_ms: i64) {
        let prev = self.last_ms.replace(now_ms);
        let Some(prev) = prev else { return };
        let dt = now_ms.saturating_sub(prev);
        if dt <= 0 {
            // Same instant or the clock went back: no rate sample.
            return;
        }
        let dt_secs = dt as f64 / 1000.0;
        let sample = delta as f64 / dt_secs;
        self.rate_last = sample;
        self.rate_ewma = Some(match self.rate_ewma {
            None => sample,
            Some(r) => r + (1.0 - (-dt_secs / RATE_TAU_SECS).exp()) * (sample - r),
        });
    }
}

/// Maps an I/O error on `path` to [`BudgetError::Io`].
fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BudgetError {
    let path = path.to_path_buf();
    move |source| BudgetError::Io { path, source }
}

/// Reads the state file: `None` if it does not exist.
fn load(path: &Path) -> Result<Option<State>, BudgetError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |reason: Corruption| BudgetError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.into()))?;
    if state.version != STATE_VERSION {
        return Err(corrupt(Corruption::Version(state.version)));
    }
    if state.period.start_unix >= state.period.end_unix {
        return Err(corrupt(Corruption::Period {
            label: state.period.label,
        }));
    }
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(tempfile::TempDir);

    impl TempDir {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }
        fn cfg(&self, limit_bytes: u64, reset_day: u8) -> BudgetConfig {
            BudgetConfig::new(limit_bytes, reset_day, self.0.path().join("budget.json"))
        }
    }

    /// Days since 1970-01-01 of `y-m-d`.
    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        day_number(jiff::civil::date(y as i16, m as i8, d as i8))
    }

    /// `(y, m, d)` of a day since 1970-01-01.
    fn civil_from_days(days: i64) -> (i64, i64, i64) {
        let d = date_of_day(days);
        (
            i64::from(d.year()),
            i64::from(d.month()),
            i64::from(d.day()),
        )
    }

    /// Unix seconds of `y-m-d h:00:00` UTC.
    fn at(y: i64, m: i64, d: i64, h: i64) -> i64 {
        days_from_civil(y, m, d) * SECS_PER_DAY + h * 3600
    }

    /// `(start, end, label)` of the period containing `unix`.
    fn span(unix: i64, reset_day: u8) -> (i64, i64, String) {
        let p = period_containing(unix, reset_day);
        (p.start_unix, p.end_unix, p.label)
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        for days in (-800_000..800_000).step_by(13) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn period_reset_day_1_at_month_boundaries() {
        let nov = (at(2026, 11, 1, 0), at(2026, 12, 1, 0), "2026-11".into());
        assert_eq!(span(at(2026, 11, 15, 12), 1), nov);
        assert_eq!(span(at(2026, 12, 1, 0) - 1, 1), nov);
        let dec = (at(2026, 12, 1, 0), at(2027, 1, 1, 0), "2026-12".into());
        assert_eq!(span(at(2026, 12, 1, 0), 1), dec);
    }

    #[test]
    fn period_reset_day_28_february_and_leap_years() {
        // 2028 is a leap year: the period from 2028-02-28 includes 02-29.
        let feb = (at(2028, 2, 28, 0), at(2028, 3, 28, 0), "2028-02".into());
        assert_eq!(span(at(2028, 2, 29, 23), 28), feb);
        assert_eq!(feb.1 - feb.0, 29 * SECS_PER_DAY);
        let jan = (at(2028, 1, 28, 0), at(2028, 2, 28, 0), "2028-01".into());
        assert_eq!(span(at(2028, 2, 27, 23), 28), jan);
        let (start, end, label) = span(at(2027, 3, 1, 0), 28); // common year
        assert_eq!((end - start, label), (28 * SECS_PER_DAY, "2027-02".into()));
    }

    #[test]
    fn period_december_to_january() {
        let dec = (at(2026, 12, 15, 0), at(2027, 1, 15, 0), "2026-12".into());
        assert_eq!(span(at(2027, 1, 10, 5), 15), dec);
        assert_eq!(span(at(2026, 12, 31, 23), 1).1, at(2027, 1, 1, 0));
        assert_eq!(span(at(2027, 1, 1, 0), 1).2, "2027-01");
    }

    #[test]
    fn period_exactly_at_boundary_and_extremes() {
        let b = at(2026, 5, 10, 0);
        assert_eq!((span(b, 10).0, span(b - 1, 10).1), (b, b));
        // No panic on any input; out-of-range reset days are clamped.
        for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
            for d in [0, 1, 28, 29, 255] {
                let _ = period_containing(t, d);
            }
        }
        assert_eq!(span(b, 0), span(b, 1));
    }

    #[test]
    fn counts_deltas_and_counter_resets() {
        let dir = TempDir::new();
        let t0 = at(2026, 11, 3, 0) * 1000;
        let mut t = Tracker::open(dir.cfg(1 << 40, 1), t0 / 1000).unwrap();
        assert_eq!(t.observe(5_000, t0).used, 0); // only the base
        assert_eq!(t.observe(6_000, t0 + 200).used, 1_000);
        let o = t.observe(9_500, t0 + 400);
        assert_eq!((o.used, o.period_label.as_str()), (4_500, "2026-11"));
        assert!(!o.exhausted && !o.rolled_over && !o.dirty);
        // The counter was reset: the 40 bytes since then are counted.
        assert_eq!(t.observe(40, t0 + 600).used, 4_540);
        assert_eq!(t.observe(90, t0 + 800).used, 4_590);
        assert_eq!((t.used(), t.limit()), (4_590, 1 << 40));
    }

    #[test]
    fn restart_mid_month_continues_and_restart_after_month_is_zero() {
        let dir = TempDir::new();
        let t0 = at(2026, 11, 3, 0);
        let mut t = Tracker::open(dir.cfg(1 << 40, 1), t0).unwrap();
        t.observe(0, t0 * 1000);
        t.observe(7_000, t0 * 1000 + 1000);
        t.persist().unwrap();
        drop(t);
        let later = at(2026, 11, 20, 0);
        let mut t = Tracker::open(dir.cfg(1 << 40, 1), later).unwrap();
        assert_eq!((t.used(), t.period().label.as_str()), (7_000, "2026-11"));
        // The counter reset with the reboot; the first observe is the base.
        assert_eq!(t.observe(123_456, later * 1000).used, 7_000);
        assert_eq!(t.observe(123_500, later * 1000 + 200).used, 7_044);
        // Rollover while down: the next period starts at 0.
        let t = Tracker::open(dir.cfg(1 << 40, 1), at(2027, 2, 2, 0)).unwrap();
        assert_eq!((t.used(), t.period().label.as_str()), (0, "2027-02"));
    }

    #[test]
    fn rollover_while_running() {
        let dir = TempDir::new();
        let end = at(2026, 12, 5, 0);
        let mut t = Tracker::open(dir.cfg(10_000, 5), end - 10).unwrap();
        t.observe(0, (end - 10) * 1000);
        let o = t.observe(9_990, (end - 1) * 1000);
        assert!(o.exhausted && o.dirty);
        let o = t.observe(10_490, end * 1000);
        assert!(o.rolled_over && o.dirty && !o.exhausted);
        assert_eq!((o.used, o.period_label.as_str()), (500, "2026-12"));
        assert_eq!(t.period().start_unix, end);
        assert!(!t.observe(10_500, end * 1000 + 200).dirty);
    }

    #[test]
    fn exhaustion_fires_before_limit_with_margin_and_projection() {
        let dir = TempDir::new();
        let limit = 100_000_000;
        let t0 = at(2026, 11, 3, 0) * 1000;
        let mut t = Tracker::open(dir.cfg(limit, 1), t0 / 1000).unwrap();
        let step = 30_000_000 / 8 / 5; // 30 Mbit/s in 200 ms
        let (mut raw, mut ms) = (0u64, t0);
        t.observe(raw, ms);
        let first = loop {
            raw += step;
            ms += 200;
            let o = t.observe(raw, ms);
            assert!(o.used <= limit);
            if o.exhausted {
                break o;
            }
        };
        assert!(first.dirty);
        assert!(first.used * 100 >= limit * 98, "used {}", first.used);
        // The mobile link carries on for 0.5 s after the decision: the
        // overrun stays under 1 %.
        for _ in 0..3 {
            raw += step;
            ms += 200;
            assert!(t.observe(raw, ms).exhausted);
        }
        assert!(t.used() * 100 < limit * 101, "used {}", t.used());
    }

    #[test]
    fn exhaustion_holds_until_rollover_and_across_restart() {
        let dir = TempDir::new();
        let t0 = at(2026, 11, 3, 0) * 1000;
        let mut t = Tracker::open(dir.cfg(1_000_000, 1), t0 / 1000).unwrap();
        t.observe(0, t0);
        // A burst makes the projection cross the threshold...
        assert!(t.observe(900_000, t0 + 200).exhausted);
        // ...and the link going quiet does not un-exhaust it.
        let o = t.observe(900_000, t0 + 10_000);
        assert!(o.exhausted && !o.dirty);
        t.persist().unwrap();
        drop(t);
        let mut t = Tracker::open(dir.cfg(1_000_000, 1), t0 / 1000 + 60).unwrap();
        t.observe(5, t0 + 60_000);
        assert!(t.observe(5, t0 + 61_000).exhausted);
        // A raised limit re-decides from the count.
        let mut t = Tracker::open(dir.cfg(2_000_000, 1), t0 / 1000 + 60).unwrap();
        t.observe(0, t0 + 60_000);
        assert!(!t.observe(0, t0 + 61_000).exhausted);
    }

    #[test]
    fn waived_bytes_are_counted_apart_and_a_grant_raises_the_limit() {
        let dir = TempDir::new();
        let t0 = at(2026, 11, 3, 0) * 1000;
        let mut t = Tracker::open(dir.cfg(1_000_000, 1), t0 / 1000).unwrap();
        t.observe(0, t0);
        t.observe(100_000, t0 + 1_000);
        // A line incident: 5 MB on mobile, not charged, and the budget
        // (spent five times over) does not hold the link back.
        t.set_policy(true, 0);
        let o = t.observe(5_100_000, t0 + 2_000);
        assert_eq!(
            (o.used, o.waived, o.waiver, o.exhausted),
            (100_000, 5_000_000, true, false)
        );
        // Resolved: counted again from where it was.
        t.set_policy(false, 0);
        let o = t.observe(5_200_000, t0 + 3_000);
        assert_eq!((o.used, o.waived), (200_000, 5_000_000));
        // Spent; a grant of 2 MB frees it, its end spends it again.
        let o = t.observe(6_200_000, t0 + 60_000);
        assert!(o.exhausted, "{o:?}");
        t.set_policy(false, 2_000_000);
        let o = t.observe(6_200_000, t0 + 61_000);
        assert_eq!(
            (o.limit, o.extra, o.exhausted),
            (3_000_000, 2_000_000, false)
        );
        t.set_policy(false, 0);
        assert!(t.observe(6_200_000, t0 + 62_000).exhausted);
        // The waived count survives a restart and ends with the period.
        t.persist().unwrap();
        drop(t);
        let t = Tracker::open(dir.cfg(1_000_000, 1), t0 / 1000 + 100).unwrap();
        assert_eq!(t.waived(), 5_000_000);
        let mut t = Tracker::open(dir.cfg(1_000_000, 1), t0 / 1000 + 100).unwrap();
        t.observe(0, t0 + 100_000);
        let next = at(2026, 12, 1, 1) * 1000;
        let o = t.observe(10, next);
        assert!(o.rolled_over);
        assert_eq!(o.waived, 0);
    }

    #[test]
    fn corrupt_or_invalid_state_is_an_error() {
        let dir = TempDir::new();
        let cfg = dir.cfg(1_000, 1);
        let path = cfg.state_path.clone();
        for bad in [
            &b"{ not json"[..],
            b"\xff\xfe",
            b"",
            br#"{"version":1,"period":{"start_unix":10,"end_unix":5,"label":"x"},"used_bytes":1,"limit_bytes":1,"exhausted":false}"#,
            br#"{"version":9,"period":{"start_unix":0,"end_unix":5,"label":"x"},"used_bytes":1,"limit_bytes":1,"exhausted":false}"#,
        ] {
            fs::write(&path, bad).unwrap();
            match Tracker::open(cfg.clone(), 0) {
                Err(BudgetError::Corrupt { path: p, reason }) => {
                    assert_eq!(p, path);
                    assert!(!reason.to_string().is_empty());
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
        let invalid = |c| matches!(Tracker::open(c, 0), Err(BudgetError::Config { .. }));
        assert!(invalid(BudgetConfig {
            reset_day: 29,
            ..cfg.clone()
        }));
        assert!(invalid(BudgetConfig {
            stop_margin: f64::NAN,
            ..cfg
        }));
    }

    #[test]
    fn persist_into_missing_directory_is_io_error() {
        let cfg = BudgetConfig::new(1, 1, TempDir::new().0.path().join("no/b.json"));
        let t = Tracker::open(cfg, 0).unwrap();
        assert!(matches!(t.persist(), Err(BudgetError::Io { .. })));
    }

    #[test]
    fn used_never_decreases_within_a_period() {
        let dir = TempDir::new();
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..50 {
            let reset_day = (next() % 28 + 1) as u8;
            let mut ms = at(2026, 1, 1, 0) * 1000 + (next() % (400 * 86_400_000)) as i64;
            let mut t = Tracker::open(dir.cfg(next() % (1 << 36), reset_day), ms / 1000).unwrap();
            let mut raw = next();
            let (mut label, mut used) = (t.period().label.clone(), t.used());
            for _ in 0..500 {
                raw = match next() % 10 {
                    0 => next() % 1_000_000,       // counter reset
                    1 => raw.wrapping_add(next()), // big jump (may wrap)
                    _ => raw.saturating_add(next() % 100_000),
                };
                ms += (next() % 20_000_000) as i64 - 1_000; // clock may go back
                let o = t.observe(raw, ms);
                if o.rolled_over {
                    assert!(o.dirty && o.period_label != label);
                } else {
                    assert_eq!(o.period_label, label);
                    assert!(o.used >= used, "{} < {used}", o.used);
                }
                (label, used) = (o.period_label, o.used);
            }
        }
    }
}
