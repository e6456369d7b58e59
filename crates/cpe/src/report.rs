//! Reports to ops (`[telemetry]`): every period, and at once on an event
//! (a link up or down, a DSL retrain, the LAN's carrier, the CPE's start,
//! a dying gasp), the CPE posts one signed report ([`telemetry::Report`])
//! to ops' `/api/v1/reports`.
//!
//! **Which link.** Each delivery is one TCP connection bound to a link's
//! address (the CPE's policy routes send it out of that link): the active
//! link first (the fixed line unless it is down), then the other one, both
//! tried whatever the probes say (probes go to the HAG; ops may answer
//! when the HAG does not). The report's `via` names the link that carried
//! it, so with the fixed line cut the report says it came over mobile.
//!
//! **Backlog.** Reports are queued (bounded by count and bytes, oldest
//! dropped first and counted) and sent oldest first; a report ops will
//! never take (`4xx` other than `401`/`408`/`409`/`429`) is dropped with
//! its reason in the log; `401` is retried (a token issued after the CPE
//! started reaches ops within seconds).
//!
//! **Readings.** The DSL line and the radio come from [`modem`] drivers
//! (`ubus call dsl metrics`, `mmcli`, or a file in their format: the
//! lab's line model). A reading that fails is left out of the report and
//! logged once per distinct error.
//!
//! **Dying gasp.** `SIGPWR` (what a power-fail monitor sends) makes the CPE
//! send a report with the `dying_gasp` event at once, one attempt per link.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hybrid::Link;
use ops_client::{Outcome, Queue};
use telemetry::{DslLine, Event, Key, Lan, LinkReport, Report};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::{Config, Telemetry};
use crate::metrics::{Metrics, ResultLabel};
use crate::paths::{interface_bytes, PathState};

/// How often the LAN carrier is looked at and the period checked.
const TICK: Duration = Duration::from_secs(1);

/// Reports sent per round at most (a long backlog drains over rounds).
const ROUND: usize = 60;

/// The reporter's state between reports.
struct Reporter {
    t: Telemetry,
    lan_interface: String,
    wan: hybrid::PerLink<(std::net::IpAddr, String)>,
    bind_wan: bool,
    key: Key,
    boot_id: String,
    seq: u64,
    started: Instant,
    queue: Queue,
    modems: modem::Modems,
    state: Arc<PathState>,
    metrics: Arc<Metrics>,
    events: Vec<Event>,
    last_dsl: Option<DslLine>,
    /// The line has been in showtime since this CPE started (its first
    /// training after a start is no retrain).
    synced: bool,
    lan_carrier: Option<bool>,
    last_error: [Option<String>; 2],
    /// The last TLS failure with ops, said once (a wrong CA or name is a
    /// configuration to mend, not a link that is down).
    tls_failure: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn boot_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        b = (now_ms() ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    hex::encode(b)
}

/// Whether `dev` has carrier (`/sys/class/net/DEV/carrier`); `None` when
/// it cannot be read (no such device).
fn carrier(dev: &str) -> Option<bool> {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/carrier"))
        .ok()
        .map(|s| s.trim() == "1")
}

/// Devices with a complete neighbour entry on `dev` (`/proc/net/arp`).
fn lan_devices(dev: &str) -> u32 {
    let Ok(text) = std::fs::read_to_string("/proc/net/arp") else {
        return 0;
    };
    let n = text
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 6 && f[5] == dev && f[2] == "0x2"
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Reporter {
    fn new(
        c: &Config,
        t: Telemetry,
        bind_wan: bool,
        state: Arc<PathState>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let modems = modem::Modems {
            dsl: t.dsl.clone(),
            mobile: t.mobile.clone(),
        };
        Self {
            key: telemetry::key(t.token.as_bytes()),
            queue: Queue::new(t.queue_reports, t.queue_bytes),
            lan_interface: c.lan_interface.clone(),
            wan: hybrid::PerLink::from_fn(|l| (c.wan(l).address, c.wan(l).interface.clone())),
            bind_wan,
            boot_id: boot_id(),
            seq: 0,
            started: Instant::now(),
            modems,
            state,
            metrics,
            events: vec![Event::Boot],
            last_dsl: None,
            synced: false,
            lan_carrier: carrier(&c.lan_interface),
            last_error: [None, None],
            tls_failure: None,
            t,
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .reports
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Logs a reading's error once until it changes.
    fn reading_failed(&mut self, which: usize, what: &str, e: Option<modem::Error>) {
        let msg = e.map(|e| e.to_string());
        if msg != self.last_error[which] {
            match &msg {
                Some(m) => warn!("{what} reading: {m}; reports go without it"),
                None => info!("{what} reading works again"),
            }
            self.last_error[which] = msg;
        }
    }

    /// Looks at the LAN's carrier: a change is an event.
    fn watch_lan(&mut self) {
        let now = carrier(&self.lan_interface);
        if let (Some(was), Some(is)) = (self.lan_carrier, now) {
            if was != is {
                self.events.push(Event::LanCarrier { up: is });
            }
        }
        if now.is_some() {
            self.lan_carrier = now;
        }
    }

    /// Builds the next report (the readings are taken now) and queues it.
    async fn build(&mut self) {
        let dsl = match self.modems.dsl().await {
            Ok(d) => {
                self.reading_failed(0, "DSL modem", None);
                d
            }
            Err(e) => {
                self.reading_failed(0, "DSL modem", Some(e));
                None
            }
        };
        if let (Some(prev), Some(cur)) = (&self.last_dsl, &dsl) {
            // A new showtime that began after the last one: the line
            // trained again in between.
            if cur.in_showtime()
                && ((!prev.in_showtime() && self.synced)
                    || cur.stats.last_showtime_start < prev.stats.last_showtime_start)
            {
                self.events.push(Event::Retrain);
            }
        }
        if dsl.as_ref().is_some_and(DslLine::in_showtime) {
            self.synced = true;
        }
        if dsl.is_some() {
            self.last_dsl = dsl;
        }
        let mobile = match self.modems.radio().await {
            Ok(r) => {
                self.reading_failed(1, "mobile modem", None);
                r
            }
            Err(e) => {
                self.reading_failed(1, "mobile modem", Some(e));
                None
            }
        };
        self.events.extend(self.state.take_events());
        let excess = self.events.len().saturating_sub(telemetry::MAX_EVENTS);
        self.events.drain(..excess);
        self.seq += 1;
        let links = Link::ALL
            .into_iter()
            .map(|l| {
                let v = self.state.view(l);
                let (rx, tx) = interface_bytes(&self.wan[l].1).unwrap_or((0, 0));
                LinkReport {
                    link: l,
                    up: self.state.is_up(l),
                    rtt_ms: v.rtt_ms.map(|x| x.min(60_000.0)),
                    jitter_ms: v.jitter_ms.map(|x| x.min(60_000.0)),
                    loss_pct: v.loss_pct,
                    tx_bytes: tx,
                    rx_bytes: rx,
                }
            })
            .collect();
        let mut r = Report {
            schema: telemetry::SCHEMA,
            subscriber: self.t.subscriber.clone(),
            boot_id: self.boot_id.clone(),
            seq: self.seq,
            sent_at_ms: now_ms(),
            uptime_s: self.started.elapsed().as_secs(),
            via: self.state.active_link(),
            events: std::mem::take(&mut self.events),
            links,
            lan: Lan {
                carrier: self.lan_carrier.unwrap_or(false),
                devices: lan_devices(&self.lan_interface),
                flows: u32::try_from(self.metrics.active.get().max(0)).unwrap_or(u32::MAX),
            },
            dsl,
            mobile,
        };
        // A reading out of the schema's ranges is dropped, not the report.
        if let Err(e) = r.check() {
            warn!("report: {e}; sent without the modem readings");
            r.dsl = None;
            r.mobile = None;
            if let Err(e) = r.check() {
                warn!("report: {e}; not sent");
                return;
            }
        }
        let before = self.queue.dropped();
        self.queue.push(Bytes::from(r.to_json()));
        for _ in before..self.queue.dropped() {
            self.count("dropped");
        }
        self.metrics.report_queue.set(self.queue.len() as i64);
    }

    /// One connection to ops out of `link`.
    async fn connect(&self, link: Link) -> std::io::Result<TcpStream> {
        let ops = self.t.ops;
        let sock = match ops {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if self.bind_wan {
            sock.bind(SocketAddr::new(self.wan[link].0, 0))?;
        }
        tokio::time::timeout(self.t.timeout, sock.connect(ops))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// Takes the policy ops answered a report with, if ops signed it with
    /// this CPE's key and made it for this subscriber.
    fn take_policy(&self, a: &ops_client::Answer) {
        if a.body.is_empty() {
            return;
        }
        if !a.signed_by(&self.key) {
            warn!("ops' answer is not signed with this CPE's key: its policy is ignored");
            return;
        }
        match telemetry::Policy::parse(&a.body) {
            Ok(p) if p.subscriber == self.t.subscriber => {
                self.metrics
                    .budget_waiver
                    .set(i64::from(p.waiver.is_some()));
                self.metrics
                    .budget_extra_bytes
                    .set(p.extra_bytes.min(i64::MAX as u64) as i64);
                self.state.set_policy(p);
            }
            Ok(p) => {
                warn!(subscriber = %p.subscriber, "ops' policy names another subscriber: ignored")
            }
            Err(e) => warn!("ops' policy: {e}: ignored"),
        }
    }

    /// Delivers `body` over the active link, then the other one; `None`:
    /// ops could not be reached over either.
    async fn deliver(&mut self, body: &Bytes) -> Option<(Outcome, String)> {
        let first = self.state.active_link();
        let mut failures = Vec::new();
        for link in [first, first.other()] {
            let stream = match self.connect(link).await {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{link}: {e}"));
                    continue;
                }
            };
            // The report names the link that carries it.
            let body = match Report::parse(body) {
                Ok(mut r) if r.via != link => {
                    r.via = link;
                    Bytes::from(r.to_json())
                }
                _ => body.clone(),
            };
            match ops_client::post_report(
                stream,
                self.t.tls.as_ref(),
                &self.t.host,
                "/api/v1/reports",
                &self.key,
                body,
                self.t.timeout,
            )
            .await
            {
                Ok(a) => {
                    if a.status.is_success() {
                        self.take_policy(&a);
                    }
                    if self.tls_failure.take().is_some() {
                        info!("TLS with ops works again");
                    }
                    return Some((Outcome::of(a.status), format!("{} {}", a.status, a.text())));
                }
                Err(e @ ops_client::Error::Tls(_)) => {
                    let why = e.to_string();
                    if self.tls_failure.as_deref() != Some(why.as_str()) {
                        warn!("ops not reached over {link}: {why}; check [telemetry] tls, ca and host");
                        self.tls_failure = Some(why);
                    }
                    failures.push(format!("{link}: {e}"));
                }
                Err(e) => failures.push(format!("{link}: {e}")),
            }
        }
        debug!("ops not reached: {}", failures.join("; "));
        None
    }

    /// Sends what is queued, oldest first, until ops cannot be reached or
    /// asks to wait; at most [`ROUND`] reports. Returns whether reports
    /// remain that ops would take now (the round ended first).
    async fn flush(&mut self) -> bool {
        let mut more = false;
        for i in 0..=ROUND {
            let Some(body) = self.queue.front().cloned() else {
                break;
            };
            if i == ROUND {
                more = true;
                break;
            }
            match self.deliver(&body).await {
                Some((Outcome::Delivered, _)) => {
                    self.queue.pop();
                    self.count("delivered");
                }
                Some((Outcome::Refused, why)) => {
                    self.queue.pop();
                    self.count("refused");
                    warn!("ops refused a report: {why}; dropped");
                }
                Some((Outcome::Retry, why)) => {
                    debug!("ops asks to retry: {why}");
                    self.metrics.report_failures.inc();
                    break;
                }
                None => {
                    self.metrics.report_failures.inc();
                    break;
                }
            }
        }
        self.metrics.report_queue.set(self.queue.len() as i64);
        more
    }
}

/// Runs the reporter until `stop` turns true. `bind_wan` off (in-process
/// tests) lets the kernel pick the source address.
pub async fn run(
    config: Arc<Config>,
    t: Telemetry,
    bind_wan: bool,
    state: Arc<PathState>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut r = Reporter::new(&config, t, bind_wan, state.clone(), metrics);
    if let Err(e) = r.modems.setup(r.t.period).await {
        warn!("mobile modem setup: {e}");
    }
    info!(ops = %r.t.ops, subscriber = %r.t.subscriber, period_s = r.t.period.as_secs(), "reporting to ops");
    let mut gasp = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        nix::sys::signal::Signal::SIGPWR as i32,
    ))
    .ok();
    let mut next = Instant::now();
    let mut more = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = tokio::select! {
            _ = stop.changed() => break,
            Some(()) = async { match gasp.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                warn!("power failing (SIGPWR): dying gasp to ops");
                r.events.push(Event::DyingGasp);
                true
            }
            () = state.event_recorded() => {
                // Let the events of one change (both links at once) arrive
                // together.
                tokio::time::sleep(Duration::from_millis(50)).await;
                true
            }
            _ = tick.tick() => {
                r.watch_lan();
                !r.events.is_empty() || Instant::now() >= next
            }
        };
        if now {
            r.build().await;
            next = Instant::now() + r.t.period;
            more = r.flush().await;
        } else if more {
            // A long backlog drains a round per tick while ops takes it.
            more = r.flush().await;
        }
    }
}
