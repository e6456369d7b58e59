//! The HAG's own cost against HAProxy (TCP mode), with no emulated link:
//! relay throughput and the relay's CPU per Gbit/s, and memory per idle
//! relayed connection.
//!
//! Two namespaces of our own, built by `lab::topology::Pair`: `tbench-c`
//! holds the clients and the relay under test on 127.0.0.1, `tbench-s` the
//! sink/source server on a veth (198.18.0.2, the benchmarking range; the
//! HAG refuses loopback destinations by design). Clients and the sink are
//! threads of this process (`lab::netns`), plain TCP with
//! `cubic` on both relays so that only the relay differs. The HAG's
//! clients send an RFC 8803 Connect message first and read its reply;
//! HAProxy forwards to a fixed backend.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use convert_proto::{Connect, DecodeError, Message, Tlv};
use hybrid::Direction;
use lab::netns;
use serde::{Deserialize, Serialize};

use crate::exec::{clock_ticks, cpu_seconds, rss_kib, Proc};
use crate::meter::Progress;
use crate::stats::Summary;
use crate::BenchError;

const NS_C: &str = "tbench-c";
const NS_S: &str = "tbench-s";
const SINK: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const BULK_PORT: u16 = 9000;
/// The first idle port: each relay run uses its own (`IDLE_PORT + k`), so
/// that the previous runs' TIME_WAIT connections to the sink do not use up
/// the ephemeral ports towards it (28,232 here; two earlier runs of 9,850
/// connections left 8,532).
const IDLE_PORT: u16 = 9001;
const HAG_PORT: u16 = 5124;
const HAG_ADMIN: u16 = 9102;
const HAPROXY_BULK: u16 = 5125;
const HAPROXY_IDLE: u16 = 5126;

/// What to measure.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RelayPlan {
    pub(crate) runs: usize,
    pub(crate) flows: usize,
    pub(crate) seconds: f64,
    pub(crate) idle_connections: usize,
}

/// One relay's figures (each a summary over the runs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RelayFigures {
    /// "tandem hag" or "haproxy".
    pub relay: String,
    /// Throughput towards the client (sink → relay → client), Gbit/s.
    pub download_gbit: Option<Summary>,
    /// Throughput from the client, Gbit/s.
    pub upload_gbit: Option<Summary>,
    /// The relay process's CPU during the download, cores (1.0 = one core
    /// busy).
    pub download_cpu_cores: Option<Summary>,
    /// The same during the upload.
    pub upload_cpu_cores: Option<Summary>,
    /// Download Gbit/s per core of relay CPU.
    pub download_gbit_per_core: Option<Summary>,
    /// Upload Gbit/s per core of relay CPU.
    pub upload_gbit_per_core: Option<Summary>,
    /// Resident memory with no connection, KiB.
    pub rss_idle_kib: Option<Summary>,
    /// Resident memory added per idle relayed connection, KiB.
    pub kib_per_idle_connection: Option<Summary>,
}

/// The relay-cost scenario's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RelayCost {
    /// Parallel connections of the throughput test.
    pub flows: usize,
    /// Seconds each throughput measurement lasts.
    pub seconds: f64,
    /// Idle connections opened for the memory measure.
    pub idle_connections: usize,
    /// How each relay was configured.
    pub setup: String,
    /// Tandem's HAG.
    pub hag: RelayFigures,
    /// HAProxy in TCP mode.
    pub haproxy: RelayFigures,
}

/// Our two namespaces (deleted when dropped).
fn namespaces() -> Result<lab::topology::Pair, BenchError> {
    Ok(lab::topology::Pair::build(
        [NS_C, NS_S],
        "tbr0",
        [CLIENT_SIDE, SINK],
        24,
    )?)
}

/// Removes our namespaces, left by an interrupted run.
pub(crate) fn remove_namespaces() {
    for n in [NS_C, NS_S] {
        lab::topology::remove_namespace(n);
    }
}

/// Starts a relay in our client namespace and waits until it listens on
/// `port` of the loopback.
fn spawn_ready(name: &str, argv: &[String], log: &Path, port: u16) -> Result<Proc, BenchError> {
    let mut p = Proc::spawn(name, NS_C, argv, log)?;
    lab::topology::wait_port(NS_C, Ipv4Addr::LOCALHOST, port, Duration::from_secs(10))?;
    p.check_running()?;
    Ok(p)
}

/// The sink/source server in `tbench-s`: port 9000 serves one command byte
/// per connection (`D`: send until the client goes, `U`: read and count),
/// port 9001 keeps connections open and counts them.
struct Sink {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    idle_count: Arc<AtomicUsize>,
    idle: Arc<Mutex<Vec<TcpStream>>>,
    threads: Vec<JoinHandle<()>>,
}

/// A listener on the sink address with a backlog that holds a burst of
/// relayed connections (std's 128 drops SYNs under the idle-connection
/// burst, and the relay's connect then times out).
fn listen(port: u16) -> Result<TcpListener, String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    s.set_reuse_address(true).map_err(|e| e.to_string())?;
    s.bind(&SocketAddr::from((SINK, port)).into())
        .map_err(|e| format!("binding {SINK}:{port}: {e}"))?;
    s.listen(4096).map_err(|e| e.to_string())?;
    Ok(s.into())
}

fn accept_loop(l: TcpListener, stop: Arc<AtomicBool>, mut on: impl FnMut(TcpStream)) {
    let _ = l.set_nonblocking(true);
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                on(s);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

impl Sink {
    fn start(idle_ports: Vec<u16>) -> Result<Self, BenchError> {
        let (bulk, idle_ls) = netns::run_in(NS_S, move || {
            let idle = idle_ports
                .into_iter()
                .map(listen)
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, String>((listen(BULK_PORT)?, idle))
        })?
        .map_err(|e| BenchError::Setup(format!("sink listeners: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let idle_count = Arc::new(AtomicUsize::new(0));
        let idle = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        {
            let (stop, received) = (stop.clone(), received.clone());
            threads.push(std::thread::spawn(move || {
                let stop2 = stop.clone();
                accept_loop(bulk, stop, move |s| {
                    let (stop, received) = (stop2.clone(), received.clone());
                    std::thread::spawn(move || serve_bulk(s, &stop, &received));
                });
            }));
        }
        for idle_l in idle_ls {
            let (stop, idle_count, idle) = (stop.clone(), idle_count.clone(), idle.clone());
            threads.push(std::thread::spawn(move || {
                accept_loop(idle_l, stop, move |s| {
                    idle.lock().unwrap_or_else(PoisonError::into_inner).push(s);
                    idle_count.fetch_add(1, Ordering::Relaxed);
                });
            }));
        }
        Ok(Self {
            stop,
            received,
            idle_count,
            idle,
            threads,
        })
    }

    fn close_idle(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.idle_count.store(0, Ordering::Relaxed);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.close_idle();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_bulk(mut s: TcpStream, stop: &AtomicBool, received: &AtomicU64) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let mut cmd = [0u8; 1];
    if s.read_exact(&mut cmd).is_err() {
        return;
    }
    let mut buf = vec![0x5au8; 128 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let r = if cmd[0] == b'D' {
            s.write(&buf)
        } else {
            s.read(&mut buf).inspect(|&n| {
                received.fetch_add(n as u64, Ordering::Relaxed);
            })
        };
        match r {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// A relay under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relay {
    Hag,
    Haproxy,
}

impl Relay {
    fn name(self) -> &'static str {
        match self {
            Self::Hag => "tandem hag",
            Self::Haproxy => "haproxy",
        }
    }

    /// (bulk port, idle port) clients connect to.
    fn ports(self) -> (u16, u16) {
        match self {
            Self::Hag => (HAG_PORT, HAG_PORT),
            Self::Haproxy => (HAPROXY_BULK, HAPROXY_IDLE),
        }
    }

    /// What a client sends first to reach `dest_port` on the sink.
    fn preamble(self, dest_port: u16) -> Vec<u8> {
        match self {
            Self::Hag => Message::new(vec![Tlv::Connect(Connect::new(SocketAddr::V4(
                SocketAddrV4::new(SINK, dest_port),
            )))])
            .to_bytes(),
            Self::Haproxy => Vec::new(),
        }
    }

    fn start(
        self,
        exe: &Path,
        dir: &Path,
        idle_n: usize,
        idle_port: u16,
    ) -> Result<Proc, BenchError> {
        let p = match self {
            Self::Hag => {
                let cfg = dir.join("relay-hag.toml");
                std::fs::write(&cfg, hag_config())
                    .map_err(|e| BenchError::io(format!("writing {}", cfg.display()), e))?;
                let argv = [
                    "env".to_string(),
                    format!(
                        "TANDEM_LOG={}",
                        std::env::var("TANDEM_BENCH_HAG_LOG").unwrap_or_else(|_| "warn".into())
                    ),
                    exe.display().to_string(),
                    "hag".into(),
                    "run".into(),
                    "--config".into(),
                    cfg.display().to_string(),
                ];
                spawn_ready("tandem hag", &argv, &dir.join("relay-hag.log"), HAG_ADMIN)?
            }
            Self::Haproxy => {
                let cfg = dir.join("relay-haproxy.cfg");
                std::fs::write(&cfg, haproxy_config(idle_n + 64, idle_port))
                    .map_err(|e| BenchError::io(format!("writing {}", cfg.display()), e))?;
                let argv = [
                    "haproxy".to_string(),
                    "-db".into(),
                    "-f".into(),
                    cfg.display().to_string(),
                ];
                spawn_ready(
                    "haproxy",
                    &argv,
                    &dir.join("relay-haproxy.log"),
                    HAPROXY_IDLE,
                )?
            }
        };
        Ok(p)
    }
}

/// The HAG configuration of this scenario: loopback service, no cookies
/// (subscriber-prefix mode), limits raised above the idle-connection count,
/// the relay buffer at its default.
pub(crate) fn hag_config() -> String {
    format!(
        "# Written by `tandem bench` (relay cost on loopback).\n\
         listen = \"127.0.0.1:{HAG_PORT}\"\n\
         admin_listen = \"127.0.0.1:{HAG_ADMIN}\"\n\
         subscriber_prefixes = [\"127.0.0.0/8\"]\n\
         congestion_control = \"cubic\"\n\
         [limits]\n\
         max_connections = 30000\n\
         per_subscriber_connections = 30000\n\
         per_subscriber_rate = 1000000.0\n\
         per_subscriber_pending = 30000\n\
         per_source_pending = 30000\n"
    )
}

/// HAProxy in TCP mode: one frontend per sink port, no health checks, no
/// logging (the HAG logs at `warn` only), Debian's defaults otherwise.
/// `maxconn` is what the open-files limit allows (HAProxy refuses to start
/// if it cannot have two descriptors per connection).
pub(crate) fn haproxy_config(maxconn: usize, idle_port: u16) -> String {
    format!(
        "# Written by `tandem bench` (relay cost on loopback).\n\
         global\n    maxconn {maxconn}\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\
         frontend bulk\n    bind 127.0.0.1:{HAPROXY_BULK}\n    default_backend bulk\n\
         backend bulk\n    server sink {SINK}:{BULK_PORT}\n\
         frontend idle\n    bind 127.0.0.1:{HAPROXY_IDLE}\n    default_backend idle\n\
         backend idle\n    server sink {SINK}:{idle_port}\n"
    )
}

/// Connects to the relay and sends what it needs; for the HAG also reads
/// the Convert reply (returns any bytes that came after it).
fn client_connect(
    relay: Relay,
    port: u16,
    dest: u16,
    cmd: &[u8],
) -> Result<(TcpStream, usize), String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    sock.set_tcp_congestion(b"cubic")
        .map_err(|e| format!("TCP_CONGESTION: {e}"))?;
    sock.connect(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())
        .map_err(|e| format!("connecting to {}: {e}", relay.name()))?;
    let mut s: TcpStream = sock.into();
    let mut first = relay.preamble(dest);
    first.extend_from_slice(cmd);
    s.write_all(&first).map_err(|e| e.to_string())?;
    if relay != Relay::Hag {
        return Ok((s, 0));
    }
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match Message::decode(&buf) {
            Ok((msg, used)) => {
                if let Some(e) = msg.error() {
                    return Err(format!("the HAG answered error {}", e.code.name()));
                }
                return Ok((s, buf.len() - used));
            }
            Err(DecodeError::Incomplete { .. }) => {}
            Err(e) => return Err(format!("the HAG's reply: {e}")),
        }
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("reading the HAG's reply: {e}"))?;
        if n == 0 {
            return Err("the HAG closed before replying".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct Throughput {
    gbit: f64,
    cores: f64,
}

/// `flows` connections move data one way for `seconds`; the relay's CPU is
/// read over the same window.
fn throughput(
    relay: Relay,
    pid: u32,
    sink: &Sink,
    dir: Direction,
    plan: &RelayPlan,
    ticks: f64,
) -> Result<Throughput, BenchError> {
    let stop = Arc::new(AtomicBool::new(false));
    let got = Arc::new(AtomicU64::new(0));
    let download = dir == Direction::Downstream;
    let mut handles = Vec::new();
    for _ in 0..plan.flows {
        let (stop, got) = (stop.clone(), got.clone());
        handles.push(netns::spawn_in(NS_C, move || -> Result<(), String> {
            let cmd: &[u8] = if download { b"D" } else { b"U" };
            let (mut s, extra) = client_connect(relay, relay.ports().0, BULK_PORT, cmd)?;
            got.fetch_add(extra as u64, Ordering::Relaxed);
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            let mut buf = vec![0xa5u8; 128 * 1024];
            while !stop.load(Ordering::Relaxed) {
                let r = if download {
                    s.read(&mut buf).inspect(|&n| {
                        got.fetch_add(n as u64, Ordering::Relaxed);
                    })
                } else {
                    s.write(&buf)
                };
                match r {
                    Ok(0) => return Err(format!("{} closed the connection", relay.name())),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        }));
    }
    let counter = |sink: &Sink| {
        if download {
            got.load(Ordering::Relaxed)
        } else {
            sink.received.load(Ordering::Relaxed)
        }
    };
    std::thread::sleep(Duration::from_millis(500));
    let (b0, c0, t0) = (counter(sink), cpu_seconds(pid, ticks), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(plan.seconds));
    let (b1, c1, secs) = (
        counter(sink),
        cpu_seconds(pid, ticks),
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    let mut first_err = None;
    for h in handles {
        if let Err(e) = netns::join(h)
            .map_err(BenchError::Lab)
            .and_then(|r| r.map_err(BenchError::Measure))
        {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let (Some(c0), Some(c1)) = (c0, c1) else {
        return Err(BenchError::Measure(format!(
            "no CPU figures for {}",
            relay.name()
        )));
    };
    Ok(Throughput {
        gbit: (b1 - b0) as f64 * 8.0 / secs / 1e9,
        cores: (c1 - c0) / secs,
    })
}

/// Opens `n` idle relayed connections, returns (RSS before, KiB per
/// connection), closes them.
fn idle_memory(
    relay: Relay,
    pid: u32,
    sink: &Sink,
    n: usize,
    idle_port: u16,
) -> Result<(f64, f64), BenchError> {
    sink.close_idle();
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid).ok_or_else(|| BenchError::Measure("no VmRSS".into()))?;
    let pre = relay.preamble(idle_port);
    let port = relay.ports().1;
    let reached = sink.idle_count.clone();
    let conns = netns::run_in(NS_C, move || {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            // At most 500 connections not yet relayed: a steady arrival,
            // not a burst that overflows the relay's or the sink's queues.
            let until = Instant::now() + Duration::from_secs(10);
            while i >= reached.load(Ordering::Relaxed) + 500 {
                if Instant::now() > until {
                    return Err(format!(
                        "the relay stopped relaying: {} of {i} connections reached the sink",
                        reached.load(Ordering::Relaxed)
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .map_err(|e| format!("idle connection {i}: {e}"))?;
            if !pre.is_empty() {
                s.write_all(&pre)
                    .map_err(|e| format!("idle connection {i}: {e}"))?;
            }
            v.push(s);
        }
        Ok::<_, String>(v)
    })?
    .map_err(BenchError::Measure)?;
    let until = Instant::now() + Duration::from_secs(60);
    while sink.idle_count.load(Ordering::Relaxed) < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let reached = sink.idle_count.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid).ok_or_else(|| BenchError::Measure("no VmRSS".into()))?;
    drop(conns);
    sink.close_idle();
    if reached < n {
        return Err(BenchError::Measure(format!(
            "{}: {reached} of {n} idle connections reached the sink",
            relay.name()
        )));
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok((before as f64, (after as f64 - before as f64) / n as f64))
}

#[derive(Default)]
struct Runs {
    down: Vec<f64>,
    up: Vec<f64>,
    down_cores: Vec<f64>,
    up_cores: Vec<f64>,
    down_per_core: Vec<f64>,
    up_per_core: Vec<f64>,
    rss: Vec<f64>,
    per_conn: Vec<f64>,
}

impl Runs {
    fn figures(&self, relay: Relay) -> RelayFigures {
        RelayFigures {
            relay: relay.name().into(),
            download_gbit: Summary::of(&self.down),
            upload_gbit: Summary::of(&self.up),
            download_cpu_cores: Summary::of(&self.down_cores),
            upload_cpu_cores: Summary::of(&self.up_cores),
            download_gbit_per_core: Summary::of(&self.down_per_core),
            upload_gbit_per_core: Summary::of(&self.up_per_core),
            rss_idle_kib: Summary::of(&self.rss),
            kib_per_idle_connection: Summary::of(&self.per_conn),
        }
    }
}

/// Runs the scenario: per run, each relay fresh (alternating which goes
/// first): idle memory first (a fresh process), then download and upload
/// throughput. `step` is told what is running.
pub(crate) fn run(
    exe: &Path,
    dir: &Path,
    plan: &RelayPlan,
    progress: &mut Progress,
    errors: &mut Vec<String>,
) -> Result<RelayCost, BenchError> {
    let hard = raise_nofile();
    // A relayed connection holds two descriptors in the relay, and this
    // process holds both the clients' and the sink's ends.
    let fit = (hard.saturating_sub(300) / 2) as usize;
    let idle_n = plan.idle_connections.min(fit);
    let _ns = namespaces()?;
    let sink = Sink::start((0..plan.runs as u16 * 2).map(|k| IDLE_PORT + k).collect())?;
    let ticks = clock_ticks();
    let mut hag = Runs::default();
    let mut hap = Runs::default();
    for run in 0..plan.runs {
        let order = if run % 2 == 0 {
            [Relay::Hag, Relay::Haproxy]
        } else {
            [Relay::Haproxy, Relay::Hag]
        };
        for (k, relay) in order.into_iter().enumerate() {
            let idle_port = IDLE_PORT + (run * 2 + k) as u16;
            let r = match relay {
                Relay::Hag => &mut hag,
                Relay::Haproxy => &mut hap,
            };
            progress.step(format!(
                "relay cost · run {}/{} · {}",
                run + 1,
                plan.runs,
                relay.name()
            ));
            let one = (|| -> Result<String, BenchError> {
                let p = relay.start(exe, dir, idle_n, idle_port)?;
                let pid = p.pid();
                progress.update(0.1, &format!("{idle_n} idle connections"));
                let mut text = match idle_memory(relay, pid, &sink, idle_n, idle_port) {
                    Ok((rss, per)) => {
                        r.rss.push(rss);
                        r.per_conn.push(per);
                        format!("{per:.1} KiB per idle connection")
                    }
                    // The throughput figures are still worth having.
                    Err(e) => {
                        errors.push(format!("relay cost, {}: {e}", relay.name()));
                        "idle connections FAILED".to_string()
                    }
                };
                for (dir, done, short) in [
                    (Direction::Downstream, 0.4, "down"),
                    (Direction::Upstream, 0.7, "up"),
                ] {
                    progress.update(done, dir.transfer_name());
                    let t = throughput(relay, pid, &sink, dir, plan, ticks)?;
                    text += &format!(", {short} {:.2} Gbit/s on {:.2} cores", t.gbit, t.cores);
                    let per_core = t.gbit / t.cores.max(1e-6);
                    match dir {
                        Direction::Downstream => {
                            r.down.push(t.gbit);
                            r.down_cores.push(t.cores);
                            r.down_per_core.push(per_core);
                        }
                        Direction::Upstream => {
                            r.up.push(t.gbit);
                            r.up_cores.push(t.cores);
                            r.up_per_core.push(per_core);
                        }
                    }
                }
                drop(p);
                Ok(text)
            })();
            match one {
                Ok(text) => progress.finish(&text),
                Err(e) => {
                    let e = format!("relay cost, {}: {e}", relay.name());
                    progress.finish(&format!("FAILED: {e}"));
                    errors.push(e);
                }
            }
        }
    }
    drop(sink);
    Ok(RelayCost {
        flows: plan.flows,
        seconds: plan.seconds,
        idle_connections: idle_n,
        setup: format!(
            "loopback, no emulated link: {} client connection(s) → relay on 127.0.0.1 → veth → sink on {SINK}, all plain TCP with cubic; \
             tandem hag: `tandem hag run` with subscriber prefix 127.0.0.0/8, no cookies, limits raised, relay buffer 16 KiB (default), log level warn; \
             haproxy {}: `haproxy -db`, mode tcp, one frontend/backend pair per sink port, maxconn = idle connections + 64, Debian defaults otherwise (threads = cores, no splicing); \
             CPU from /proc/<pid>/stat (user + system), memory from VmRSS{}",
            plan.flows,
            haproxy_version(),
            if idle_n < plan.idle_connections {
                format!(
                    "; {idle_n} idle connections instead of {}: the open-files hard limit here is {hard} and cannot be raised (no CAP_SYS_RESOURCE), and a relayed connection takes two descriptors",
                    plan.idle_connections
                )
            } else {
                String::new()
            }
        ),
        hag: hag.figures(Relay::Hag),
        haproxy: hap.figures(Relay::Haproxy),
    })
}

fn haproxy_version() -> String {
    lab::cmd::run("haproxy", &["-v"])
        .ok()
        .and_then(|o| o.split_whitespace().nth(2).map(str::to_string))
        .unwrap_or_else(|| "(version unknown)".into())
}

/// Both ends of the idle connections are in this process: raise the
/// open-files limit (the relays inherit it). Returns the limit obtained.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = 65_536;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if setrlimit(Resource::RLIMIT_NOFILE, want.max(soft), want.max(hard)).is_ok() {
        return want.max(hard);
    }
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hag_config_is_valid() {
        let c = hag::Config::from_toml(&hag_config()).unwrap();
        assert!(!c.require_cookie);
        assert!(c.max_connections >= 10_000);
    }

    #[test]
    fn hag_clients_send_a_connect_to_the_sink() {
        let wire = Relay::Hag.preamble(IDLE_PORT);
        let (m, used) = Message::decode(&wire).unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(
            m.connect().unwrap().remote,
            SocketAddr::from((SINK, IDLE_PORT))
        );
        assert!(Relay::Haproxy.preamble(IDLE_PORT).is_empty());
        assert!(haproxy_config(100, IDLE_PORT).contains("mode tcp"));
    }
}
