//! Path health and steering decisions, sans-IO: probes and byte counts in,
//! link states and "is the mobile link standby" out, with the clock passed
//! in, so every rule is tested with a simulated clock.
//!
//! - [`LinkHealth`]: one access link's probe bookkeeping. A link is down
//!   when no probe reply arrived for `down_after` (a silent blackhole is
//!   caught as surely as a cut), and up again after `up_after` replies in a
//!   row. While an up link's reply is overdue, probes go four times as often
//!   ([`LinkHealth::probe_interval`]), so that a link whose full queue drops
//!   a few probes (a saturated 1 Mbit/s uplink does) still answers one
//!   within `down_after`, and only a dead link stays silent. Round-trip time (smoothed), jitter (mean deviation, RFC 3550 style)
//!   and loss (share of the last probes that got no reply) for the metrics.
//! - [`Steering`]: whether the mobile link carries traffic (`priority`: only
//!   while the fixed line is full; `aggregate`: always; `active-standby`:
//!   only when the fixed line is down) — the kernel's `backup` priority
//!   does the rest, see `paths`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hybrid::SteeringMode;

/// How probes are judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between probes on a link.
    pub interval: Duration,
    /// No reply for this long: the link is down.
    pub down_after: Duration,
    /// Replies in a row that bring a down link back.
    pub up_after: u32,
}

/// Probes remembered for loss accounting.
const WINDOW: usize = 50;

/// One link's probe state.
#[derive(Debug)]
pub struct LinkHealth {
    cfg: HealthConfig,
    up: bool,
    /// When the current silence started (start, or the last reply).
    last_reply: Instant,
    /// When the last answered probe was sent: a probe sent before it that
    /// expires unanswered is old news and does not break the run.
    last_answered_sent: Option<Instant>,
    in_a_row: u32,
    next_seq: u32,
    /// Probes sent and not yet answered or given up: (seq, sent at).
    outstanding: VecDeque<(u32, Instant)>,
    /// Outcomes of the last probes (true: answered).
    outcomes: VecDeque<bool>,
    srtt: Option<Duration>,
    jitter: f64,
}

/// What changed on a tick: a link went down or came back (a state change,
/// not a direction of traffic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The link stopped answering.
    Down,
    /// The link answers again.
    Up,
}

impl Transition {
    /// The state entered, as in the `to` label of
    /// `tandem_cpe_link_transitions_total`: `up` or `down`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Up => "up",
        }
    }

    /// Whether the link is up after it.
    pub fn is_up(self) -> bool {
        self == Self::Up
    }
}

impl LinkHealth {
    /// A link assumed up at `now` (the first `down_after` decides).
    pub fn new(cfg: HealthConfig, now: Instant) -> Self {
        Self {
            cfg,
            up: true,
            last_reply: now,
            last_answered_sent: None,
            in_a_row: 0,
            next_seq: 0,
            outstanding: VecDeque::new(),
            outcomes: VecDeque::new(),
            srtt: None,
            jitter: 0.0,
        }
    }

    /// Registers a probe sent at `now`; returns its sequence number.
    pub fn sent(&mut self, now: Instant) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.outstanding.push_back((seq, now));
        while self.outstanding.len() > WINDOW {
            if let Some((_, sent)) = self.outstanding.pop_front() {
                self.lost(sent);
            }
        }
        seq
    }

    /// A reply to probe `seq` arrived at `now`. Replies to unknown or
    /// already answered probes are ignored.
    pub fn reply(&mut self, seq: u32, now: Instant) {
        let Some(i) = self.outstanding.iter().position(|(s, _)| *s == seq) else {
            return;
        };
        let (_, sent) = self.outstanding.remove(i).unwrap_or((seq, now));
        let rtt = now.saturating_duration_since(sent);
        if let Some(prev) = self.srtt {
            let d = (rtt.as_secs_f64() - prev.as_secs_f64()).abs();
            self.jitter += (d - self.jitter) / 16.0;
            self.srtt = Some(Duration::from_secs_f64(
                prev.as_secs_f64() * 7.0 / 8.0 + rtt.as_secs_f64() / 8.0,
            ));
        } else {
            self.srtt = Some(rtt);
        }
        self.last_reply = now;
        self.last_answered_sent = Some(self.last_answered_sent.map_or(sent, |t| t.max(sent)));
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.outcome(true);
    }

    /// Records a probe's fate; a probe lost after the last answered one
    /// breaks the run of replies.
    fn lost(&mut self, sent: Instant) {
        if self.last_answered_sent.is_none_or(|t| sent > t) {
            self.in_a_row = 0;
        }
        self.outcome(false);
    }

    fn outcome(&mut self, answered: bool) {
        self.outcomes.push_back(answered);
        while self.outcomes.len() > WINDOW {
            self.outcomes.pop_front();
        }
    }

    /// Expires unanswered probes and decides the state at `now`.
    pub fn tick(&mut self, now: Instant) -> Option<Transition> {
        // A probe unanswered for `down_after` is lost.
        while let Some(&(_, sent)) = self.outstanding.front() {
            if now.saturating_duration_since(sent) < self.cfg.down_after {
                break;
            }
            self.outstanding.pop_front();
            self.lost(sent);
        }
        if self.up && now.saturating_duration_since(self.last_reply) >= self.cfg.down_after {
            self.up = false;
            self.in_a_row = 0;
            return Some(Transition::Down);
        }
        if !self.up && self.in_a_row >= self.cfg.up_after {
            self.up = true;
            // Loss is measured while the link is up: the probes lost while
            // it was down were its being down (reported as such), and would
            // otherwise read as a lossy link for 50 probes after it is back.
            self.outcomes.clear();
            for _ in 0..self.in_a_row.min(WINDOW as u32) {
                self.outcome(true);
            }
            return Some(Transition::Up);
        }
        None
    }

    /// Time until the next probe after one sent at `now`: the interval, or a
    /// quarter of it (at least 20 ms) while the link is up and has been
    /// silent for more than 1.5 intervals.
    ///
    /// Measured in the rural lab before this: eight uploads filling the
    /// fixed line's 1 Mbit/s uplink dropped two or three probes in a row
    /// now and then, and the path manager took a working line down (and
    /// closed its subflows) for 0.3 s.
    pub fn probe_interval(&self, now: Instant) -> Duration {
        let i = self.cfg.interval;
        if self.up && now.saturating_duration_since(self.last_reply) > i * 3 / 2 {
            (i / 4).max(Duration::from_millis(20))
        } else {
            i
        }
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Smoothed round-trip time, once a reply arrived.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Mean deviation of the round-trip time, seconds.
    pub fn jitter_secs(&self) -> f64 {
        self.jitter
    }

    /// Share of the last probes (up to 50) that got no reply.
    pub fn loss(&self) -> f64 {
        if self.outcomes.is_empty() {
            return 0.0;
        }
        self.outcomes.iter().filter(|a| !**a).count() as f64 / self.outcomes.len() as f64
    }
}

/// The `priority` mode's thresholds, as shares of the fixed line's rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Overflow {
    /// Fixed-line utilisation (either direction) that brings the mobile
    /// link in.
    pub on: f64,
    /// Total load (fixed + mobile, both directions) under which it leaves
    /// again: the load fits on the fixed line with room to spare.
    pub off: f64,
    /// Samples in a row above `on` before it comes in.
    pub on_samples: u32,
    /// Samples in a row under `off` before it leaves.
    pub off_samples: u32,
}

/// Bytes per second measured on each link over the last sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    /// Fixed line, received.
    pub dsl_down: f64,
    /// Fixed line, sent.
    pub dsl_up: f64,
    /// Mobile link, received.
    pub lte_down: f64,
    /// Mobile link, sent.
    pub lte_up: f64,
}

/// Decides whether the mobile link is standby (backup priority).
#[derive(Debug)]
pub struct Steering {
    mode: SteeringMode,
    thresholds: Overflow,
    /// The fixed line's rates, bytes per second (down, up).
    capacity: (f64, f64),
    overflowing: bool,
    streak: u32,
}

impl Steering {
    /// `capacity_bps`: the fixed line's (down, up) rate in bytes per second.
    pub fn new(mode: SteeringMode, thresholds: Overflow, capacity_bps: (f64, f64)) -> Self {
        Self {
            mode,
            thresholds,
            capacity: capacity_bps,
            overflowing: false,
            streak: 0,
        }
    }

    /// The mode.
    pub fn mode(&self) -> SteeringMode {
        self.mode
    }

    /// Changes the mode (reload); the overflow state starts again.
    pub fn set_mode(&mut self, mode: SteeringMode, thresholds: Overflow, capacity_bps: (f64, f64)) {
        if (mode, thresholds, capacity_bps) != (self.mode, self.thresholds, self.capacity) {
            *self = Self::new(mode, thresholds, capacity_bps);
        }
    }

    /// Takes one load sample (the `priority` mode's input).
    pub fn observe(&mut self, l: Load) {
        let (cd, cu) = (self.capacity.0.max(1.0), self.capacity.1.max(1.0));
        let t = self.thresholds;
        if self.overflowing {
            let total = ((l.dsl_down + l.lte_down) / cd).max((l.dsl_up + l.lte_up) / cu);
            self.streak = if total < t.off { self.streak + 1 } else { 0 };
            if self.streak >= t.off_samples {
                self.overflowing = false;
                self.streak = 0;
            }
        } else {
            let fixed = (l.dsl_down / cd).max(l.dsl_up / cu);
            self.streak = if fixed >= t.on { self.streak + 1 } else { 0 };
            if self.streak >= t.on_samples {
                self.overflowing = true;
                self.streak = 0;
            }
        }
    }

    /// Whether the fixed line is full and the mobile link takes the
    /// overflow (`priority` mode).
    pub fn overflowing(&self) -> bool {
        self.overflowing
    }

    /// Whether the mobile link should be standby now; `budget_spent`
    /// forces standby (failover only) whatever the mode.
    pub fn mobile_standby(&self, budget_spent: bool) -> bool {
        if budget_spent {
            return true;
        }
        match self.mode {
            SteeringMode::Aggregate => false,
            SteeringMode::ActiveStandby => true,
            SteeringMode::Priority => !self.overflowing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: HealthConfig = HealthConfig {
        interval: Duration::from_millis(200),
        down_after: Duration::from_millis(600),
        up_after: 2,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn answered_link_stays_up_with_rtt_and_no_loss() {
        let t0 = Instant::now();
        let mut h = LinkHealth::new(CFG, t0);
        for i in 0..20u64 {
            let now = t0 + ms(200 * i);
            let seq = h.sent(now);
            h.reply(seq, now + ms(15 + i % 3));
            assert_eq!(h.tick(now + ms(20)), None);
        }
        assert!(h.is_up());
        let rtt = h.rtt().unwrap();
        assert!(rtt >= ms(15) && rtt <= ms(17), "{rtt:?}");
        assert!(h.jitter_secs() < 0.002);
        assert_eq!(h.loss(), 0.0);
    }

    #[test]
    fn silence_is_down_within_down_after_and_replies_bring_it_back() {
        let t0 = Instant::now();
        let mut h = LinkHealth::new(CFG, t0);
        let s = h.sent(t0);
        h.reply(s, t0 + ms(10));
        // Blackhole from t0+200: probes go out, nothing comes back.
        let mut down_at = None;
        for i in 1..20u64 {
            let now = t0 + ms(200 * i);
            h.sent(now);
            if h.tick(now) == Some(Transition::Down) {
                down_at = Some(now);
                break;
            }
        }
        let down_at = down_at.expect("never went down");
        // The last reply was at t0+10: down once 600 ms of silence passed.
        assert!(down_at - t0 <= ms(800), "{:?}", down_at - t0);
        assert!(!h.is_up());
        assert!(h.loss() > 0.0);
        // One reply is not enough; two in a row are.
        let now = down_at + ms(200);
        let s = h.sent(now);
        h.reply(s, now + ms(10));
        assert_eq!(h.tick(now + ms(20)), None);
        let now = now + ms(200);
        let s = h.sent(now);
        h.reply(s, now + ms(10));
        assert_eq!(h.tick(now + ms(20)), Some(Transition::Up));
        assert!(h.is_up());
    }

    /// Probes on the schedule `probe_interval` gives; each answered unless
    /// `lost(seq)`, 15 ms later. Returns when the link went down, if it did.
    fn run(
        h: &mut LinkHealth,
        t0: Instant,
        until: Duration,
        lost: impl Fn(u32) -> bool,
    ) -> Option<Duration> {
        let mut next = t0;
        let mut pending: Vec<(u32, Instant)> = Vec::new();
        let mut now = t0;
        while now - t0 < until {
            pending.retain(|&(seq, at)| {
                if at <= now {
                    h.reply(seq, at);
                    false
                } else {
                    true
                }
            });
            if now >= next {
                let seq = h.sent(now);
                if !lost(seq) {
                    pending.push((seq, now + ms(15)));
                }
                next = now + h.probe_interval(now);
            }
            if h.tick(now) == Some(Transition::Down) {
                return Some(now - t0);
            }
            now += ms(10);
        }
        None
    }

    #[test]
    fn overdue_replies_probe_faster_and_a_lossy_link_stays_up() {
        let t0 = Instant::now();
        let mut h = LinkHealth::new(CFG, t0);
        assert_eq!(h.probe_interval(t0), ms(200));
        // Three probes in a row lost, then every other one, for 10 s: the
        // faster probes find the link alive each time.
        let down = run(&mut h, t0, Duration::from_secs(10), |seq| {
            (5..8).contains(&seq) || (seq >= 8 && seq % 2 == 0)
        });
        assert_eq!(down, None, "a lossy but working link was taken down");
        assert!(h.loss() > 0.3, "{}", h.loss());
        // The schedule: quick while overdue, the interval once answered.
        let now = t0 + Duration::from_secs(10);
        let s = h.sent(now);
        h.reply(s, now + ms(15));
        assert_eq!(h.probe_interval(now + ms(20)), ms(200));
        assert_eq!(h.probe_interval(now + ms(15) + ms(301)), ms(50));
    }

    #[test]
    fn a_dead_link_goes_down_as_fast_with_faster_probes() {
        let t0 = Instant::now();
        let mut h = LinkHealth::new(CFG, t0);
        let down = run(&mut h, t0, Duration::from_secs(5), |seq| seq >= 3);
        // Last reply: probe 2 (sent at 400 ms) answered at 415 ms.
        let down = down.expect("a dead link stayed up");
        assert!(
            down >= ms(415 + 600) && down <= ms(415 + 600 + 10),
            "{down:?}"
        );
        // Down: back to the plain interval (no fast probing of a dead link).
        assert_eq!(h.probe_interval(t0 + down), ms(200));
    }

    #[test]
    fn a_lost_probe_breaks_the_run_of_replies() {
        let t0 = Instant::now();
        let mut h = LinkHealth::new(CFG, t0);
        assert_eq!(h.tick(t0 + ms(700)), Some(Transition::Down));
        let a = h.sent(t0 + ms(800));
        h.reply(a, t0 + ms(810));
        h.sent(t0 + ms(1000)); // lost
        assert_eq!(h.tick(t0 + ms(1700)), None); // expired: run broken
        let b = h.sent(t0 + ms(1800));
        h.reply(b, t0 + ms(1810));
        assert_eq!(h.tick(t0 + ms(1820)), None, "one reply after a loss");
        let c = h.sent(t0 + ms(2000));
        h.reply(c, t0 + ms(2010));
        assert_eq!(h.tick(t0 + ms(2020)), Some(Transition::Up));
    }

    #[test]
    fn probes_lost_in_the_outage_do_not_delay_the_return() {
        let t0 = Instant::now();
        let mut h = LinkHealth::new(CFG, t0);
        assert_eq!(h.tick(t0 + ms(700)), Some(Transition::Down));
        let back = t0 + ms(2000);
        // The outage's last probes, still waiting to expire...
        h.sent(back - ms(400));
        h.sent(back - ms(200));
        // ...then the link answers again.
        let a = h.sent(back);
        h.reply(a, back + ms(10));
        let b = h.sent(back + ms(200));
        h.reply(b, back + ms(210));
        // The outage probes expire now (600 ms after they left): old news.
        assert_eq!(h.tick(back + ms(450)), Some(Transition::Up));
    }

    #[test]
    fn stray_and_duplicate_replies_are_ignored() {
        let t0 = Instant::now();
        let mut h = LinkHealth::new(CFG, t0);
        h.reply(12345, t0 + ms(100)); // never sent
        assert_eq!(h.tick(t0 + ms(600)), Some(Transition::Down));
        let s = h.sent(t0 + ms(700));
        h.reply(s, t0 + ms(710));
        h.reply(s, t0 + ms(720)); // duplicate: not a second reply in a row
        assert_eq!(h.tick(t0 + ms(730)), None);
        assert!(!h.is_up());
    }

    #[test]
    fn outstanding_probes_stay_bounded() {
        let t0 = Instant::now();
        let mut h = LinkHealth::new(CFG, t0);
        for i in 0..10_000u64 {
            h.sent(t0 + ms(i));
        }
        assert!(h.outstanding.len() <= WINDOW && h.outcomes.len() <= WINDOW);
        assert_eq!(h.loss(), 1.0);
    }

    const T: Overflow = Overflow {
        on: 0.9,
        off: 0.7,
        on_samples: 2,
        off_samples: 5,
    };
    /// 8 Mbit/s down, 1 Mbit/s up, in bytes per second.
    const CAP: (f64, f64) = (1e6, 125e3);

    fn load(dsl_down: f64, lte_down: f64) -> Load {
        Load {
            dsl_down,
            lte_down,
            ..Load::default()
        }
    }

    #[test]
    fn priority_keeps_mobile_standby_below_the_threshold() {
        let mut s = Steering::new(SteeringMode::Priority, T, CAP);
        for _ in 0..100 {
            s.observe(load(0.8e6, 0.0));
            assert!(s.mobile_standby(false));
        }
    }

    #[test]
    fn priority_brings_mobile_in_when_full_and_out_when_load_fits() {
        let mut s = Steering::new(SteeringMode::Priority, T, CAP);
        s.observe(load(0.98e6, 0.0));
        assert!(s.mobile_standby(false), "one sample is not enough");
        s.observe(load(0.98e6, 0.0));
        assert!(!s.mobile_standby(false));
        // Both links busy: stays in, even though the fixed line alone now
        // carries less than `on`.
        for _ in 0..20 {
            s.observe(load(0.6e6, 3e6));
            assert!(!s.mobile_standby(false));
        }
        // Load drops to what the fixed line carries easily: out after 5.
        for i in 0..5 {
            assert!(!s.mobile_standby(false), "left after {i}");
            s.observe(load(0.3e6, 0.1e6));
        }
        assert!(s.mobile_standby(false));
        // Upload fills the fixed line's uplink: in again.
        for _ in 0..2 {
            s.observe(Load {
                dsl_up: 124e3,
                ..Load::default()
            });
        }
        assert!(s.overflowing());
    }

    #[test]
    fn modes_and_budget() {
        let mut s = Steering::new(SteeringMode::Aggregate, T, CAP);
        assert!(!s.mobile_standby(false));
        assert!(s.mobile_standby(true), "a spent budget means standby");
        s.set_mode(SteeringMode::ActiveStandby, T, CAP);
        assert!(s.mobile_standby(false));
        s.observe(load(1e6, 0.0));
        s.observe(load(1e6, 0.0));
        assert!(s.mobile_standby(false), "active-standby ignores load");
        assert_eq!(Transition::Up.name(), "up");
        assert_eq!(Transition::Down.name(), "down");
    }
}
