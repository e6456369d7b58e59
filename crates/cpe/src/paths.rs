//! The path manager: watches both access links and tells the kernel's
//! Multipath TCP what to do with them.
//!
//! Every `probe_interval` it sends one probe ([`relay::probe`]) per link
//! from that link's address to the HAG's probe echo, and reads the links'
//! interface counters (`/proc/net/dev`, this network namespace). From that:
//!
//! - **Failover.** A link that stops answering ([`crate::health`]) loses its
//!   in-kernel path-manager endpoint: the kernel closes the link's subflows
//!   on every connection and tells the HAG (`RM_ADDR`), which re-sends what
//!   was in flight on the other link. When the link answers again its
//!   endpoint is added back and the kernel opens a *fresh* subflow on it for
//!   every connection: the old subflow, stuck in retransmission back-off,
//!   would take seconds to notice the link is back. New connections start
//!   on whichever link is up ([`PathState::bind_address`]). With both links
//!   silent nothing is removed (the probes, not the links, may be at fault).
//! - **Steering.** The mobile link's endpoint carries the kernel's `backup`
//!   flag whenever the mobile link should be standby ([`Steering`]); a change
//!   is announced to the HAG with `MP_PRIO`, so both directions follow.
//! - **Budget.** The mobile link's bytes are counted against the monthly
//!   budget ([`crate::budget`]); once spent, the mobile link is standby
//!   (failover only), never cut.
//!
//! State changes are logged and exported as metrics (per link: up, RTT,
//! jitter, loss, bytes).
//!
//! The parts, one concern each, driven by `Paths::tick` every 50 ms:
//! `Prober` (probe sockets, schedule, replies, [`LinkHealth`] per link),
//! `WanCounters` (`/proc/net/dev`: load for the steering, `wan_bytes`),
//! `BudgetSampler` (the mobile counter into [`crate::budget`], saving it),
//! [`Steering`] (the decision, sans-IO, in [`crate::health`]) and `Applier`
//! (MPTCP endpoints and the forwarding's active link). A reloaded
//! configuration is applied in `Paths::apply_config`. A new per-link
//! concern (a UDP scheduler, a shaper) is one more part called from
//! `Paths::tick`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hybrid::{Link, PerLink};
use mptcp_sock::pm::{Endpoint, EndpointFlags, PathManager, PmError};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::budget::{BudgetConfig, Tracker};
use crate::config::Config;
use crate::health::{LinkHealth, Load, Steering, Transition};
use crate::metrics::Metrics;
use crate::wan::Forwarding;

/// How often silence is judged.
const CHECK: Duration = Duration::from_millis(50);

/// How often the links' load is sampled (interface counters) for the
/// `priority` mode. Two samples over `overflow_on` bring the mobile link in,
/// so the fixed line must be full for 100 ms; sampled every probe interval
/// (200 ms), that took 0.4–0.6 s, and a 6 s download reached 91 % of the
/// two links' sum instead of the 98 % of `aggregate` (rural lab bench).
pub(crate) const LOAD_SAMPLE: Duration = CHECK;

/// How often a probe socket that could not be opened (a link whose address
/// is missing: a modem not up yet) is tried again.
const REOPEN_PROBES: Duration = Duration::from_secs(5);

/// How often the budget is saved when nothing forces it.
const PERSIST_EVERY: Duration = Duration::from_secs(5);

/// What the probes measure on a link, for the reports to ops.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkView {
    /// Smoothed round trip to the HAG, ms (none: no reply yet).
    pub rtt_ms: Option<f64>,
    /// Round-trip variation, ms.
    pub jitter_ms: Option<f64>,
    /// Probes lost in the recent window, percent.
    pub loss_pct: f64,
}

/// What the connections and the reporter need to know of the links.
#[derive(Debug)]
pub struct PathState {
    up: PerLink<AtomicBool>,
    views: std::sync::Mutex<PerLink<LinkView>>,
    events: std::sync::Mutex<std::collections::VecDeque<telemetry::Event>>,
    event: tokio::sync::Notify,
    /// Ops' policy (budget waiver, extra budget) and until when it holds.
    policy: std::sync::Mutex<Option<(telemetry::Policy, Instant)>>,
}

impl Default for PathState {
    fn default() -> Self {
        Self {
            up: PerLink::from_fn(|_| AtomicBool::new(true)),
            views: std::sync::Mutex::new(PerLink::from_fn(|_| LinkView::default())),
            events: std::sync::Mutex::new(std::collections::VecDeque::new()),
            event: tokio::sync::Notify::new(),
            policy: std::sync::Mutex::new(None),
        }
    }
}

impl PathState {
    /// Whether `link` answers its probes (both are up until probed).
    pub fn is_up(&self, link: Link) -> bool {
        self.up[link].load(Ordering::Relaxed)
    }

    fn set_up(&self, link: Link, up: bool) {
        self.up[link].store(up, Ordering::Relaxed);
    }

    /// The probes' latest view of `link`.
    pub fn view(&self, link: Link) -> LinkView {
        self.views.lock().unwrap_or_else(|p| p.into_inner())[link]
    }

    fn set_view(&self, link: Link, v: LinkView) {
        self.views.lock().unwrap_or_else(|p| p.into_inner())[link] = v;
    }

    /// Records an event for the next report (sent at once); past
    /// [`telemetry::MAX_EVENTS`] waiting, the oldest is dropped.
    pub fn push_event(&self, e: telemetry::Event) {
        let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= telemetry::MAX_EVENTS {
            q.pop_front();
        }
        q.push_back(e);
        drop(q);
        self.event.notify_one();
    }

    /// The events recorded since the last call.
    pub fn take_events(&self) -> Vec<telemetry::Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }

    /// Resolves when an event is recorded (at once if one was recorded
    /// since the last wait).
    pub async fn event_recorded(&self) {
        self.event.notified().await;
    }

    /// Takes ops' policy, which holds for its `valid_s` unless renewed; one
    /// older than the one held (an answer that arrived late) is ignored.
    pub fn set_policy(&self, p: telemetry::Policy) {
        let mut g = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_ref()
            .is_some_and(|(cur, _)| cur.issued_ms > p.issued_ms)
        {
            return;
        }
        let until = Instant::now() + Duration::from_secs(u64::from(p.valid_s));
        let (was, now) = (
            g.as_ref().map(|(c, _)| (c.waiver.clone(), c.extra_bytes)),
            (p.waiver.clone(), p.extra_bytes),
        );
        if was.as_ref() != Some(&now) {
            match &p.waiver {
                Some(w) => {
                    info!(incident = w.incident, location = %w.location, extra_bytes = p.extra_bytes, "ops: mobile budget waived")
                }
                None => info!(extra_bytes = p.extra_bytes, "ops: mobile budget not waived"),
            }
        }
        *g = Some((p, until));
    }

    /// The policy in force now: `(waived, extra bytes)`; nothing once the
    /// last one ran out.
    pub fn policy(&self) -> (bool, u64) {
        let g = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some((p, until)) if Instant::now() < *until => (p.waiver.is_some(), p.extra_bytes),
            _ => (false, 0),
        }
    }

    /// The link new connections (and the LAN's forwarded traffic) start on:
    /// the fixed line unless it is down and the mobile link up.
    pub fn active_link(&self) -> Link {
        if !self.is_up(Link::Dsl) && self.is_up(Link::Lte) {
            Link::Lte
        } else {
            Link::Dsl
        }
    }

    /// The address a new connection's first subflow leaves from (that of
    /// [`PathState::active_link`]).
    pub fn bind_address(&self, c: &Config) -> IpAddr {
        c.wan(self.active_link()).address
    }
}

/// A test clock: `TANDEM_TEST_CLOCK_UNIX=<seconds>` makes the budget's
/// calendar start at that time (then run at the real pace), so that a test
/// can cross a month boundary. Not for production use.
pub const TEST_CLOCK_ENV: &str = "TANDEM_TEST_CLOCK_UNIX";

/// Wall-clock time in milliseconds since the Unix epoch, or the test clock.
#[derive(Debug)]
struct Clock {
    base_ms: i64,
    started: Instant,
}

impl Clock {
    fn new() -> Self {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let base_ms = std::env::var(TEST_CLOCK_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map_or(real, |s| s.saturating_mul(1000));
        Self {
            base_ms,
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        self.base_ms + self.started.elapsed().as_millis() as i64
    }
}

/// Cumulative (received, sent) bytes of `dev` from `/proc/net/dev`.
pub fn interface_bytes(dev: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/dev").ok()?;
    parse_net_dev(&text, dev)
}

fn parse_net_dev(text: &str, dev: &str) -> Option<(u64, u64)> {
    text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != dev {
            return None;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        Some((*f.first()?, *f.get(8)?))
    })
}

// ---------------------------------------------------------------------------
// Probes

/// One link's prober: its socket (bound to the link's address, so the
/// policy routes send it out of that link), its health and its schedule.
#[derive(Debug)]
struct LinkProbe {
    sock: Option<UdpSocket>,
    buf: [u8; 64],
    health: LinkHealth,
    next: Instant,
}

impl LinkProbe {
    async fn recv(&mut self) -> std::io::Result<usize> {
        match &self.sock {
            Some(s) => s.recv(&mut self.buf).await,
            None => std::future::pending().await,
        }
    }
}

/// Probes both links ([`relay::probe`]) and judges their health
/// ([`LinkHealth`]): probes out on each link's schedule, replies in.
#[derive(Debug)]
struct Prober {
    nonce: u32,
    links: PerLink<LinkProbe>,
    last_open: Instant,
}

impl Prober {
    /// Opens the probe sockets; a link whose socket cannot be opened is
    /// taken as up until it can be probed.
    async fn open(c: &Config, now: Instant) -> Self {
        let mut p = Self {
            nonce: rand_nonce(),
            links: PerLink::from_fn(|_| LinkProbe {
                sock: None,
                buf: [0; 64],
                health: LinkHealth::new(c.steering.health, now),
                next: now,
            }),
            last_open: Instant::now(),
        };
        p.open_missing(c, true).await;
        p
    }

    /// Opens the missing probe sockets (when probes are on).
    async fn open_missing(&mut self, c: &Config, first: bool) {
        let Some(target) = c.steering.probe_target else {
            return;
        };
        for (link, p) in self.links.iter_mut() {
            if p.sock.is_some() {
                continue;
            }
            match probe_socket(c.wan(link).address, target).await {
                Ok(s) => {
                    if !first {
                        info!(%link, "probing the link");
                    }
                    p.sock = Some(s);
                }
                Err(e) if first => {
                    warn!(
                        %link,
                        "probe socket: {e}; the link is taken as up until it can be probed"
                    );
                }
                Err(_) => {}
            }
        }
    }

    /// A link whose address was missing at start (a modem not up yet) is
    /// probed once it appears.
    async fn reopen(&mut self, c: &Config, now: Instant) {
        if self.links.iter().any(|(_, p)| p.sock.is_none())
            && self.last_open.elapsed() >= REOPEN_PROBES
        {
            self.open_missing(c, false).await;
            self.last_open = now;
        }
    }

    /// Waits for a probe reply on either link and records it.
    async fn receive(&mut self) {
        let nonce = self.nonce;
        let mut it = self.links.iter_mut();
        let (Some((la, a)), Some((lb, b))) = (it.next(), it.next()) else {
            return std::future::pending().await;
        };
        let (link, p, r) = tokio::select! {
            r = a.recv() => (la, a, r),
            r = b.recv() => (lb, b, r),
        };
        let Ok(n) = r else { return };
        let Some(reply) = relay::probe::Probe::decode(&p.buf[..n]) else {
            return;
        };
        if reply.nonce == nonce && reply.link == probe_link_id(link) {
            p.health.reply(reply.seq, Instant::now());
        }
    }

    /// Sends the probes that are due (each link on its own schedule, faster
    /// while its replies are overdue) and judges each probed link at `now`.
    fn tick(&mut self, now: Instant) -> PerLink<Option<Transition>> {
        let nonce = self.nonce;
        let mut out = PerLink::new(None, None);
        for (link, p) in self.links.iter_mut() {
            let Some(s) = &p.sock else { continue };
            if now >= p.next {
                let seq = p.health.sent(now);
                p.next = now + p.health.probe_interval(now);
                let probe = relay::probe::Probe {
                    nonce,
                    link: probe_link_id(link),
                    seq,
                };
                // A send error (no route: the link is down) is a lost probe.
                let _ = s.try_send(&probe.encode());
            }
            out[link] = p.health.tick(now);
        }
        out
    }

    /// The health of a link that is being probed.
    fn health(&self, link: Link) -> Option<&LinkHealth> {
        let p = &self.links[link];
        p.sock.as_ref().map(|_| &p.health)
    }
}

/// The link's number in the probe's wire format (0: fixed, 1: mobile).
fn probe_link_id(link: Link) -> u8 {
    u8::from(!link.is_fixed())
}

/// One probe socket per link, bound to the link's address (the policy
/// routes send it out of that link).
async fn probe_socket(addr: IpAddr, target: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::new(addr, 0)).await?;
    s.connect(target).await?;
    Ok(s)
}

fn rand_nonce() -> u32 {
    getrandom::u32().unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        t ^ std::process::id()
    })
}

// ---------------------------------------------------------------------------
// WAN byte counters

/// The WAN interfaces' byte counters (`/proc/net/dev`): the steering's load
/// and the `wan_bytes` metric.
#[derive(Debug)]
struct WanCounters {
    last: PerLink<Option<(u64, u64)>>,
    last_sample: Instant,
}

impl WanCounters {
    fn open(c: &Config) -> Self {
        Self {
            last: PerLink::from_fn(|l| interface_bytes(&c.wan(l).interface)),
            last_sample: Instant::now(),
        }
    }

    /// Reads the counters at `now`: the cumulative (received, sent) bytes
    /// of each interface, and the rates since the last sample.
    fn sample(
        &mut self,
        c: &Config,
        now: Instant,
        m: &Metrics,
    ) -> (PerLink<Option<(u64, u64)>>, Load) {
        let dt = now.duration_since(self.last_sample).as_secs_f64().max(1e-3);
        self.last_sample = now;
        let counts = {
            let text = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
            PerLink::from_fn(|l| parse_net_dev(&text, &c.wan(l).interface))
        };
        let mut rates = PerLink::new((0.0, 0.0), (0.0, 0.0));
        for (link, rate) in rates.iter_mut() {
            if let (Some(new), Some(old)) = (counts[link], self.last[link]) {
                let (rx, tx) = (new.0.saturating_sub(old.0), new.1.saturating_sub(old.1));
                m.add_wan_bytes(link, rx, tx);
                *rate = (rx as f64 / dt, tx as f64 / dt);
            }
        }
        self.last = counts;
        let load = Load {
            dsl_down: rates[Link::Dsl].0,
            dsl_up: rates[Link::Dsl].1,
            lte_down: rates[Link::Lte].0,
            lte_up: rates[Link::Lte].1,
        };
        (counts, load)
    }
}

// ---------------------------------------------------------------------------
// Budget

/// The mobile budget as far as the path manager is concerned.
#[derive(Debug)]
enum Budget {
    /// No budget configured.
    Off,
    /// Counting.
    Tracking(Tracker),
    /// Its state file could not be read: no count is guessed, the mobile
    /// link stays standby (failover only) until the operator fixes it.
    Unreadable,
}

/// Feeds the mobile interface's counter to the budget, saves it, and says
/// whether it is spent.
#[derive(Debug)]
struct BudgetSampler {
    budget: Budget,
    clock: Clock,
    last_persist: Instant,
}

impl BudgetSampler {
    fn open(c: &Config, m: &Metrics) -> Self {
        let clock = Clock::new();
        Self {
            budget: open_budget(c, &clock, m),
            clock,
            last_persist: Instant::now(),
        }
    }

    /// Opens the budget again if `new` changes it (the count is saved
    /// first, and read back if the state file is the same).
    fn reload(&mut self, old: &Config, new: &Config, m: &Metrics) {
        let changed = match (&new.budget, &old.budget) {
            (Some(a), Some(b)) => {
                a.limit_bytes != b.limit_bytes
                    || a.reset_day != b.reset_day
                    || a.state_path != b.state_path
            }
            (a, b) => a.is_some() != b.is_some(),
        };
        if changed {
            self.persist();
            self.budget = open_budget(new, &self.clock, m);
        }
    }

    /// Counts the mobile interface's bytes both ways (`counter`: its
    /// cumulative received and sent bytes) under ops' `policy` (waived,
    /// extra bytes); returns whether the budget is spent (or unreadable).
    fn observe(&mut self, counter: Option<(u64, u64)>, policy: (bool, u64), m: &Metrics) -> bool {
        let mut spent = matches!(self.budget, Budget::Unreadable) && !policy.0;
        if let (Budget::Tracking(t), Some((rx, tx))) = (&mut self.budget, counter) {
            t.set_policy(policy.0, policy.1);
            let o = t.observe(rx.saturating_add(tx), self.clock.now_ms());
            if o.rolled_over {
                info!(period = %o.period_label, "mobile budget: new period");
            }
            if o.exhausted && o.dirty {
                warn!(used = o.used, limit = o.limit, "mobile budget spent: the mobile link is standby (failover only) until the period ends");
            }
            m.set_budget(o.limit, o.used, o.exhausted);
            m.set_budget_policy(o.waiver, o.waived, o.extra);
            spent = o.exhausted;
            if o.dirty || self.last_persist.elapsed() >= PERSIST_EVERY {
                self.persist();
                self.last_persist = Instant::now();
            }
        }
        spent
    }

    fn persist(&self) {
        if let Budget::Tracking(t) = &self.budget {
            if let Err(e) = t.persist() {
                warn!("saving the mobile budget: {e}");
            }
        }
    }
}

fn open_budget(c: &Config, clock: &Clock, m: &Metrics) -> Budget {
    let Some(b) = c.budget.as_ref() else {
        return Budget::Off;
    };
    let cfg = BudgetConfig::new(b.limit_bytes, b.reset_day, b.state_path.clone());
    match Tracker::open(cfg, clock.now_ms() / 1000) {
        Ok(t) => {
            info!(
                period = %t.period().label,
                used = t.used(),
                limit = t.limit(),
                "mobile budget"
            );
            m.set_budget(t.limit(), t.used(), false);
            Budget::Tracking(t)
        }
        Err(e) => {
            warn!("mobile budget: {e}; the mobile link is kept on standby (failover only)");
            m.set_budget(b.limit_bytes, 0, true);
            Budget::Unreadable
        }
    }
}

// ---------------------------------------------------------------------------
// Applying the decisions: MPTCP endpoints and forwarding

/// The endpoints as the kernel has them (as far as we know).
#[derive(Debug, Default)]
struct Endpoints {
    id: PerLink<Option<u8>>,
    mobile_backup: bool,
}

fn endpoint(addr: IpAddr, backup: bool) -> Endpoint {
    Endpoint {
        id: 0,
        addr,
        port: None,
        ifindex: None,
        flags: EndpointFlags {
            subflow: true,
            backup,
            ..EndpointFlags::default()
        },
    }
}

/// The endpoint state wanted: which links have one, and whether the mobile
/// one is backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wanted {
    present: PerLink<bool>,
    mobile_backup: bool,
}

fn wanted(up: PerLink<bool>, mobile_standby: bool) -> Wanted {
    // With both links silent, keep both: the probes may be what fails.
    let none = !up[Link::Dsl] && !up[Link::Lte];
    Wanted {
        present: up.map(|_, u| u || none),
        mobile_backup: mobile_standby,
    }
}

impl Endpoints {
    /// Brings the kernel's endpoints to `w`.
    async fn apply(&mut self, pm: &mut PathManager, c: &Config, w: Wanted) -> Result<(), PmError> {
        let fixed_back = w.present[Link::Dsl] && self.id[Link::Dsl].is_none();
        for link in Link::ALL {
            let backup = !link.is_fixed() && w.mobile_backup;
            match (w.present[link], self.id[link]) {
                (true, None) => {
                    let id = pm
                        .ensure_endpoint(&endpoint(c.wan(link).address, backup))
                        .await?;
                    self.id[link] = Some(id);
                    if !link.is_fixed() {
                        self.mobile_backup = backup;
                    }
                    info!(%link, endpoint = id, backup, "MPTCP endpoint added: the kernel opens a subflow on this link for every connection");
                }
                (false, Some(id)) => {
                    self.id[link] = None;
                    match pm.del_endpoint(id).await {
                        Ok(()) => {}
                        // Already gone (someone flushed them): that is what we want.
                        Err(e) if e.errno() == Some(libc_einval()) => {}
                        Err(e) => return Err(e),
                    }
                    info!(%link, endpoint = id, "MPTCP endpoint removed: the link's subflows are closed, the other link carries on");
                }
                _ => {}
            }
        }
        if let Some(id) = self.id[Link::Lte] {
            if fixed_back && w.mobile_backup && self.mobile_backup {
                // Connections opened while the fixed line was down started
                // on the mobile link, and their first subflow is no backup.
                // The kernel announces a priority only when it changes:
                // clear and set it again so that every mobile subflow,
                // first ones too, becomes backup.
                pm.set_endpoint_flags(id, endpoint(c.lte.address, false).flags)
                    .await?;
                self.mobile_backup = false;
            }
            if self.mobile_backup != w.mobile_backup {
                pm.set_endpoint_flags(id, endpoint(c.lte.address, w.mobile_backup).flags)
                    .await?;
                self.mobile_backup = w.mobile_backup;
                info!(
                    standby = w.mobile_backup,
                    "mobile link priority changed (MP_PRIO sent on its subflows)"
                );
            }
        }
        Ok(())
    }
}

fn libc_einval() -> i32 {
    nix::errno::Errno::EINVAL as i32
}

/// Sets the MPTCP limits and both links' `subflow` endpoints, the mobile one
/// as backup when it starts standby. Returns what was installed.
async fn install(pm: &mut PathManager, c: &Config, standby: bool) -> Result<Endpoints, PmError> {
    pm.set_limits(mptcp_sock::pm::Limits {
        subflows: 2,
        add_addr_accepted: 2,
    })
    .await?;
    let mut e = Endpoints::default();
    e.apply(
        pm,
        c,
        Wanted {
            present: PerLink::new(true, true),
            mobile_backup: standby,
        },
    )
    .await?;
    Ok(e)
}

/// Carries the decisions out: the kernel's MPTCP endpoints (failover and
/// the mobile link's backup priority) and the link the LAN's forwarded
/// traffic (UDP, bypass) leaves on.
struct Applier {
    /// `None`: endpoints are not managed (configuration, or netlink failed).
    pm: Option<PathManager>,
    eps: Endpoints,
    forwarding: Option<Forwarding>,
}

impl Applier {
    async fn open(c: &Config, standby: bool, forwarding: Option<Forwarding>) -> Self {
        let mut a = Self {
            pm: None,
            eps: Endpoints::default(),
            forwarding,
        };
        if c.manage_mptcp_endpoints {
            match PathManager::connect().await {
                Ok(mut p) => match install(&mut p, c, standby).await {
                    Ok(e) => {
                        a.eps = e;
                        a.pm = Some(p);
                    }
                    Err(e) => {
                        warn!("configuring MPTCP endpoints: {e}; failover and steering are off");
                    }
                },
                Err(e) => warn!("MPTCP path manager: {e}; failover and steering are off"),
            }
        }
        a
    }

    /// Applies the links' state and the mobile link's standby; the
    /// forwarding moves only when a link changed (`links_changed`).
    async fn apply(&mut self, c: &Config, state: &PathState, standby: bool, links_changed: bool) {
        if links_changed {
            if let Some(f) = self.forwarding.as_mut() {
                if let Err(e) = f.set_active(state.active_link()).await {
                    warn!("forwarding: {e}");
                }
            }
        }
        if let Some(p) = self.pm.as_mut() {
            let w = wanted(PerLink::from_fn(|l| state.is_up(l)), standby);
            if let Err(e) = self.eps.apply(p, c, w).await {
                warn!("MPTCP path manager: {e}");
                // Learn the kernel's view again next time.
                self.eps = Endpoints::default();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The loop

/// The path manager's parts, each with one concern; [`Paths::tick`] runs
/// them in order.
struct Paths {
    c: Arc<Config>,
    state: Arc<PathState>,
    metrics: Arc<Metrics>,
    prober: Prober,
    wan: WanCounters,
    steering: Steering,
    budget: BudgetSampler,
    applier: Applier,
    next_sample: Instant,
}

fn steering_of(c: &Config) -> Steering {
    Steering::new(c.steering.mode, c.steering.overflow, capacity(c))
}

fn capacity(c: &Config) -> (f64, f64) {
    (
        c.dsl.down_kbit as f64 * 1000.0 / 8.0,
        c.dsl.up_kbit as f64 * 1000.0 / 8.0,
    )
}

impl Paths {
    async fn start(
        c: Arc<Config>,
        state: Arc<PathState>,
        metrics: Arc<Metrics>,
        forwarding: Option<Forwarding>,
    ) -> Self {
        let steering = steering_of(&c);
        let budget = BudgetSampler::open(&c, &metrics);
        let applier = Applier::open(&c, steering.mobile_standby(false), forwarding).await;
        let prober = Prober::open(&c, Instant::now()).await;
        let wan = WanCounters::open(&c);
        for link in Link::ALL {
            metrics.set_link_up(link, state.is_up(link));
        }
        metrics
            .mobile_standby
            .set(i64::from(steering.mobile_standby(false)));
        Self {
            c,
            state,
            metrics,
            prober,
            wan,
            steering,
            budget,
            applier,
            next_sample: Instant::now(),
        }
    }

    /// Applies a reloaded configuration: its steering (mode, thresholds,
    /// the fixed line's rates) and its budget take effect at once. Probe
    /// timing keeps the configuration the CPE started with.
    fn apply_config(&mut self, new: Arc<Config>) {
        self.steering
            .set_mode(new.steering.mode, new.steering.overflow, capacity(&new));
        self.budget.reload(&self.c, &new, &self.metrics);
        self.c = new;
        info!(mode = self.steering.mode().name(), "steering reloaded");
    }

    /// One tick of the check timer: probes and link states every tick,
    /// then, every load sample or when a link changed, the load, the
    /// budget, the steering decision and its application.
    async fn tick(&mut self, now: Instant) {
        self.prober.reopen(&self.c, now).await;
        let sample_now = now >= self.next_sample;
        if sample_now {
            self.next_sample = now + LOAD_SAMPLE;
        }
        let changed = self.links(now);
        if !sample_now && !changed {
            return;
        }
        let (counts, load) = self.wan.sample(&self.c, now, &self.metrics);
        self.steering.observe(load);
        let spent = self
            .budget
            .observe(counts[Link::Lte], self.state.policy(), &self.metrics);
        let standby = self.steering.mobile_standby(spent);
        self.metrics.mobile_standby.set(i64::from(standby));
        self.metrics
            .overflow
            .set(i64::from(self.steering.overflowing()));
        self.applier
            .apply(&self.c, &self.state, standby, changed)
            .await;
    }

    /// Probes, and records the links' state changes (state, metrics, log);
    /// returns whether a link changed.
    fn links(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for (link, t) in self.prober.tick(now).iter() {
            if let Some(t) = *t {
                changed = true;
                self.state.set_up(link, t.is_up());
                self.metrics.set_link_up(link, t.is_up());
                self.metrics.count_transition(link, t);
                self.state.push_event(if t.is_up() {
                    telemetry::Event::LinkUp { link }
                } else {
                    telemetry::Event::LinkDown { link }
                });
                match t {
                    Transition::Up => info!(%link, "link up: probes answered again"),
                    Transition::Down => warn!(
                        %link,
                        after_ms = self.c.steering.health.down_after.as_millis() as u64,
                        "link down: no probe reply"
                    ),
                }
            }
            if let Some(h) = self.prober.health(link) {
                self.metrics.set_link_health(
                    link,
                    h.rtt().map(|d| d.as_secs_f64()),
                    h.jitter_secs(),
                    h.loss(),
                );
                let rtt_ms = h.rtt().map(|d| d.as_secs_f64() * 1e3);
                self.state.set_view(
                    link,
                    LinkView {
                        rtt_ms,
                        jitter_ms: rtt_ms.map(|_| h.jitter_secs() * 1e3),
                        loss_pct: (h.loss() * 100.0).clamp(0.0, 100.0),
                    },
                );
            }
        }
        changed
    }

    /// Saves the budget and hands the forwarding back.
    fn finish(self) -> Option<Forwarding> {
        self.budget.persist();
        self.applier.forwarding
    }
}

/// Runs until `stop` turns true; `configs` brings reloaded configurations
/// (their steering and budget apply at once, `Paths::apply_config`; then
/// `health` counts the new configuration generation, which the admin
/// `/status` shows). `health` turns ready once the path manager has
/// started (budget loaded, endpoints and forwarding in place).
/// Moves `forwarding` (the LAN's UDP and bypassed traffic) to the link that
/// is up, and hands it back at exit. Endpoints are left in place at exit
/// (connections keep running while the CPE restarts).
pub async fn run(
    config: Arc<Config>,
    mut configs: watch::Receiver<Arc<Config>>,
    state: Arc<PathState>,
    metrics: Arc<Metrics>,
    forwarding: Option<Forwarding>,
    health: Arc<admin::Health>,
    mut stop: watch::Receiver<bool>,
) -> Option<Forwarding> {
    // Silence is judged every 50 ms (a link is declared down within 50 ms
    // of `down_after`), probes go on each link's schedule, load samples
    // every `LOAD_SAMPLE`.
    let check = CHECK.min(config.steering.health.interval);
    let mut paths = Paths::start(config, state, metrics, forwarding).await;
    health.set_ready(true);
    let mut ticker = tokio::time::interval(check);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = configs.changed() => {
                if r.is_err() { break; }
                let new = configs.borrow_and_update().clone();
                paths.apply_config(new);
                health.config_applied();
            }
            () = paths.prober.receive() => {}
            _ = ticker.tick() => paths.tick(Instant::now()).await,
        }
    }
    paths.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_parsing() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  dsl0: 123456789  1000    0    0    0     0          0         0  987654     900    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev(text, "dsl0"), Some((123_456_789, 987_654)));
        assert_eq!(parse_net_dev(text, "lte0"), None);
        assert_eq!(parse_net_dev("garbage", "dsl0"), None);
    }

    #[test]
    fn wanted_endpoints() {
        let both = PerLink::new(true, true);
        let w = wanted(both, true);
        assert_eq!(w.present, both);
        assert!(w.mobile_backup);
        let lte_only = PerLink::new(false, true);
        assert_eq!(wanted(lte_only, true).present, lte_only);
        let dsl_only = PerLink::new(true, false);
        assert_eq!(wanted(dsl_only, false).present, dsl_only);
        assert_eq!(
            wanted(PerLink::new(false, false), false).present,
            both,
            "both silent: keep both"
        );
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;

    #[test]
    fn new_connections_start_on_the_fixed_line_unless_only_mobile_is_up() {
        let s = PathState::default();
        assert_eq!(s.active_link(), Link::Dsl);
        s.set_up(Link::Dsl, false);
        assert_eq!(s.active_link(), Link::Lte);
        s.set_up(Link::Lte, false);
        assert_eq!(s.active_link(), Link::Dsl, "both down: the fixed line");
        assert_eq!(probe_link_id(Link::Dsl), 0);
        assert_eq!(probe_link_id(Link::Lte), 1);
    }
}
