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

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mptcp_sock::pm::{Endpoint, EndpointFlags, PathManager, PmError};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::budget::{BudgetConfig, Tracker};
use crate::config::{Config, Steering as SteeringConfig};
use crate::health::{LinkHealth, Load, Steering, Transition};
use crate::metrics::Metrics;

/// How often silence is judged.
const CHECK: Duration = Duration::from_millis(50);

/// How often the links' load is sampled (interface counters) for the
/// `priority` mode. Two samples over `overflow_on` bring the mobile link in,
/// so the fixed line must be full for 100 ms; sampled every probe interval
/// (200 ms), that took 0.4–0.6 s, and a 6 s download reached 91 % of the
/// two links' sum instead of the 98 % of `aggregate` (rural lab bench).
pub(crate) const LOAD_SAMPLE: Duration = CHECK;

/// The two access links, as indices.
const LINKS: [&str; 2] = ["dsl", "lte"];

/// What the connections need to know of the links.
#[derive(Debug)]
pub struct PathState {
    up: [AtomicBool; 2],
}

impl Default for PathState {
    fn default() -> Self {
        Self {
            up: [AtomicBool::new(true), AtomicBool::new(true)],
        }
    }
}

impl PathState {
    /// Whether link `i` (0: fixed, 1: mobile) is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.up[i].load(Ordering::Relaxed)
    }

    /// The address a new connection's first subflow leaves from: the fixed
    /// line unless it is down and the mobile link up.
    pub fn bind_address(&self, c: &Config) -> IpAddr {
        if !self.is_up(0) && self.is_up(1) {
            c.lte.address
        } else {
            c.dsl.address
        }
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

/// The endpoints as the kernel has them (as far as we know).
#[derive(Debug, Default)]
struct Endpoints {
    id: [Option<u8>; 2],
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
    present: [bool; 2],
    mobile_backup: bool,
}

fn wanted(up: [bool; 2], mobile_standby: bool) -> Wanted {
    // With both links silent, keep both: the probes may be what fails.
    let none = !up[0] && !up[1];
    Wanted {
        present: [up[0] || none, up[1] || none],
        mobile_backup: mobile_standby,
    }
}

impl Endpoints {
    /// Brings the kernel's endpoints to `w`.
    async fn apply(&mut self, pm: &mut PathManager, c: &Config, w: Wanted) -> Result<(), PmError> {
        let addrs = [c.dsl.address, c.lte.address];
        let fixed_back = w.present[0] && self.id[0].is_none();
        for i in 0..2 {
            let backup = i == 1 && w.mobile_backup;
            match (w.present[i], self.id[i]) {
                (true, None) => {
                    let id = pm.ensure_endpoint(&endpoint(addrs[i], backup)).await?;
                    self.id[i] = Some(id);
                    if i == 1 {
                        self.mobile_backup = backup;
                    }
                    info!(link = LINKS[i], endpoint = id, backup, "MPTCP endpoint added: the kernel opens a subflow on this link for every connection");
                }
                (false, Some(id)) => {
                    self.id[i] = None;
                    match pm.del_endpoint(id).await {
                        Ok(()) => {}
                        // Already gone (someone flushed them): that is what we want.
                        Err(e) if e.errno() == Some(libc_einval()) => {}
                        Err(e) => return Err(e),
                    }
                    info!(link = LINKS[i], endpoint = id, "MPTCP endpoint removed: the link's subflows are closed, the other link carries on");
                }
                _ => {}
            }
        }
        if let Some(id) = self.id[1] {
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
            present: [true, true],
            mobile_backup: standby,
        },
    )
    .await?;
    Ok(e)
}

/// One probe socket per link, bound to the link's address (the policy
/// routes send it out of that link).
async fn probe_socket(addr: IpAddr, target: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::new(addr, 0)).await?;
    s.connect(target).await?;
    Ok(s)
}

fn steering_of(c: &SteeringConfig, cfg: &Config) -> Steering {
    Steering::new(c.mode, c.overflow, capacity(cfg))
}

fn capacity(c: &Config) -> (f64, f64) {
    (
        c.dsl.down_kbit as f64 * 1000.0 / 8.0,
        c.dsl.up_kbit as f64 * 1000.0 / 8.0,
    )
}

/// Runs until `stop` turns true; `configs` brings reloaded configurations
/// (their steering and budget apply at once). Moves `forwarding` (the
/// LAN's UDP and bypassed traffic) to the link that is up, and hands it back
/// at exit. Endpoints are left in place at exit (connections keep running
/// while the CPE restarts).
pub async fn run(
    config: Arc<Config>,
    mut configs: watch::Receiver<Arc<Config>>,
    state: Arc<PathState>,
    metrics: Arc<Metrics>,
    mut forwarding: Option<crate::wan::Forwarding>,
    mut stop: watch::Receiver<bool>,
) -> Option<crate::wan::Forwarding> {
    let mut c = config;
    let clock = Clock::new();
    let nonce: u32 = rand_nonce();
    let mut steering = steering_of(&c.steering, &c);
    let mut budget = open_budget(&c, &clock, &metrics);
    let mut pm = None;
    let mut eps = Endpoints::default();
    if c.manage_mptcp_endpoints {
        match PathManager::connect().await {
            Ok(mut p) => match install(&mut p, &c, steering.mobile_standby(false)).await {
                Ok(e) => {
                    eps = e;
                    pm = Some(p);
                }
                Err(e) => warn!("configuring MPTCP endpoints: {e}; failover and steering are off"),
            },
            Err(e) => warn!("MPTCP path manager: {e}; failover and steering are off"),
        }
    }
    let mut socks: [Option<UdpSocket>; 2] = [None, None];
    open_probes(&c, &mut socks, true).await;
    let mut last_open = Instant::now();
    let now = Instant::now();
    let mut health = [
        LinkHealth::new(c.steering.health, now),
        LinkHealth::new(c.steering.health, now),
    ];
    let devs = |c: &Config| [c.dsl.interface.clone(), c.lte.interface.clone()];
    let mut last_counts: [Option<(u64, u64)>; 2] = devs(&c).map(|d| interface_bytes(&d));
    let mut last_sample = Instant::now();
    let mut last_persist = Instant::now();
    // Silence is judged every 50 ms (a link is declared down within 50 ms
    // of `down_after`), probes and load samples go every probe interval.
    let mut ticker = tokio::time::interval(CHECK.min(c.steering.health.interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_sample = Instant::now();
    let mut next_probe = [Instant::now(); 2];
    let (mut buf0, mut buf1) = ([0u8; 64], [0u8; 64]);
    for (i, l) in LINKS.iter().enumerate() {
        metrics.set_link_up(l, state.is_up(i));
    }
    metrics
        .mobile_standby
        .set(i64::from(steering.mobile_standby(false)));
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = configs.changed() => {
                if r.is_err() { break; }
                let new = configs.borrow_and_update().clone();
                steering.set_mode(new.steering.mode, new.steering.overflow, capacity(&new));
                let budget_changed = match (&new.budget, &c.budget) {
                    (Some(a), Some(b)) => a.limit_bytes != b.limit_bytes || a.reset_day != b.reset_day || a.state_path != b.state_path,
                    (a, b) => a.is_some() != b.is_some(),
                };
                c = new;
                if budget_changed {
                    budget.persist();
                    budget = open_budget(&c, &clock, &metrics);
                }
                info!(mode = steering.mode().name(), "steering reloaded");
            }
            r = recv(&socks[0], &mut buf0) => on_reply(r, &buf0, nonce, 0, &mut health),
            r = recv(&socks[1], &mut buf1) => on_reply(r, &buf1, nonce, 1, &mut health),
            _ = ticker.tick() => {
                let now = Instant::now();
                // A link whose address was missing at start (a modem not
                // up yet) is probed once it appears.
                if socks.iter().any(Option::is_none) && last_open.elapsed() >= Duration::from_secs(5) {
                    open_probes(&c, &mut socks, false).await;
                    last_open = now;
                }
                let sample_now = now >= next_sample;
                if sample_now {
                    next_sample = now + LOAD_SAMPLE;
                }
                // Probes, each link on its own schedule (faster while its
                // replies are overdue).
                let mut changed = false;
                for i in 0..2 {
                    let Some(s) = &socks[i] else { continue };
                    if now >= next_probe[i] {
                        let seq = health[i].sent(now);
                        next_probe[i] = now + health[i].probe_interval(now);
                        let p = relay::probe::Probe { nonce, link: i as u8, seq };
                        // A send error (no route: the link is down) is a lost probe.
                        let _ = s.try_send(&p.encode());
                    }
                    if let Some(t) = health[i].tick(now) {
                        changed = true;
                        let up = t == Transition::Up;
                        state.up[i].store(up, Ordering::Relaxed);
                        metrics.set_link_up(LINKS[i], up);
                        metrics.count_transition(LINKS[i], if up { "up" } else { "down" });
                        if up {
                            info!(link = LINKS[i], "link up: probes answered again");
                        } else {
                            warn!(link = LINKS[i], after_ms = c.steering.health.down_after.as_millis() as u64, "link down: no probe reply");
                        }
                    }
                    metrics.set_link_health(
                        LINKS[i],
                        health[i].rtt().map(|d| d.as_secs_f64()),
                        health[i].jitter_secs(),
                        health[i].loss(),
                    );
                }
                if !sample_now && !changed {
                    continue;
                }
                // Load.
                let dt = now.duration_since(last_sample).as_secs_f64().max(1e-3);
                last_sample = now;
                let counts = {
                    let text = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
                    devs(&c).map(|d| parse_net_dev(&text, &d))
                };
                let mut rates = [(0.0, 0.0); 2];
                for i in 0..2 {
                    if let (Some(new), Some(old)) = (counts[i], last_counts[i]) {
                        let (rx, tx) = (new.0.saturating_sub(old.0), new.1.saturating_sub(old.1));
                        metrics.add_wan_bytes(LINKS[i], rx, tx);
                        rates[i] = (rx as f64 / dt, tx as f64 / dt);
                    }
                }
                last_counts = counts;
                steering.observe(Load {
                    dsl_down: rates[0].0,
                    dsl_up: rates[0].1,
                    lte_down: rates[1].0,
                    lte_up: rates[1].1,
                });
                // Budget: the mobile interface's bytes both ways.
                let mut spent = matches!(budget, Budget::Unreadable);
                if let (Budget::Tracking(t), Some((rx, tx))) = (&mut budget, counts[1]) {
                    let o = t.observe(rx.saturating_add(tx), clock.now_ms());
                    if o.rolled_over {
                        info!(period = %o.period_label, "mobile budget: new period");
                    }
                    if o.exhausted && o.dirty {
                        warn!(used = o.used, limit = o.limit, "mobile budget spent: the mobile link is standby (failover only) until the period ends");
                    }
                    metrics.set_budget(o.limit, o.used, o.exhausted);
                    spent = o.exhausted;
                    if o.dirty || last_persist.elapsed() >= Duration::from_secs(5) {
                        budget.persist();
                        last_persist = Instant::now();
                    }
                }
                let standby = steering.mobile_standby(spent);
                metrics.mobile_standby.set(i64::from(standby));
                metrics.overflow.set(i64::from(steering.overflowing()));
                if changed {
                    if let Some(f) = forwarding.as_mut() {
                        // The fixed line unless it is down and the mobile up.
                        let active = usize::from(!state.is_up(0) && state.is_up(1));
                        if let Err(e) = f.set_active(active).await {
                            warn!("forwarding: {e}");
                        }
                    }
                }
                if let Some(p) = pm.as_mut() {
                    let w = wanted([state.is_up(0), state.is_up(1)], standby);
                    if let Err(e) = eps.apply(p, &c, w).await {
                        warn!("MPTCP path manager: {e}");
                        // Learn the kernel's view again next time.
                        eps = Endpoints::default();
                    }
                }
            }
        }
    }
    budget.persist();
    forwarding
}

/// Opens the missing probe sockets (when probes are on).
async fn open_probes(c: &Config, socks: &mut [Option<UdpSocket>; 2], first: bool) {
    let Some(target) = c.steering.probe_target else {
        return;
    };
    for (i, addr) in [c.dsl.address, c.lte.address].into_iter().enumerate() {
        if socks[i].is_some() {
            continue;
        }
        match probe_socket(addr, target).await {
            Ok(s) => {
                if !first {
                    info!(link = LINKS[i], "probing the link");
                }
                socks[i] = Some(s);
            }
            Err(e) if first => {
                warn!(
                    link = LINKS[i],
                    "probe socket: {e}; the link is taken as up until it can be probed"
                );
            }
            Err(_) => {}
        }
    }
}

async fn recv(s: &Option<UdpSocket>, buf: &mut [u8]) -> std::io::Result<usize> {
    match s {
        Some(s) => s.recv(buf).await,
        None => std::future::pending().await,
    }
}

fn on_reply(
    r: std::io::Result<usize>,
    buf: &[u8],
    nonce: u32,
    link: usize,
    health: &mut [LinkHealth; 2],
) {
    let Ok(n) = r else { return };
    let Some(p) = relay::probe::Probe::decode(&buf[..n]) else {
        return;
    };
    if p.nonce == nonce && usize::from(p.link) == link {
        health[link].reply(p.seq, Instant::now());
    }
}

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

impl Budget {
    fn persist(&self) {
        if let Self::Tracking(t) = self {
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

fn rand_nonce() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        return t ^ std::process::id();
    }
    u32::from_be_bytes(b)
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
        let w = wanted([true, true], true);
        assert_eq!(w.present, [true, true]);
        assert!(w.mobile_backup);
        assert_eq!(wanted([false, true], true).present, [false, true]);
        assert_eq!(wanted([true, false], false).present, [true, false]);
        assert_eq!(
            wanted([false, false], false).present,
            [true, true],
            "both silent: keep both"
        );
    }
}
