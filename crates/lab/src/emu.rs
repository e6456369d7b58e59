//! Userspace link emulator: one-way delay, jitter and random loss on top of NFQUEUE.
//!
//! The lab kernel has no `netem` qdisc, so link impairments are produced in userspace:
//! an iptables rule hands every packet of a link direction to an NFQUEUE, this module
//! receives the packet *metadata* (never the payload), holds the packet for the link's
//! one-way delay and then issues an `NF_ACCEPT` verdict — or `NF_DROP` right away for a
//! packet picked for loss.
//!
//! # Rule form (for the lab integrator)
//!
//! Queue the *inbound* direction of an interface in the namespace that owns it, always
//! with `--queue-bypass`:
//!
//! ```text
//! ip netns exec NS iptables -t mangle -A PREROUTING -i VETH -j NFQUEUE --queue-num N --queue-bypass
//! ```
//!
//! * `--queue-bypass` makes the kernel *accept* packets while no emulator is bound to
//!   queue `N` (emulator not started yet, crashed, or stopped). Without it such packets
//!   are dropped and the link is dead whenever the emulator is not running.
//! * Queue numbers are per network namespace. One emulator (one netlink socket) binds
//!   each queue; a second [`spawn`] for the same number in the same namespace is
//!   refused by the kernel. Use one queue per impaired link direction.
//! * Only IPv4 traffic is queued by `iptables`; add the same rule with `ip6tables` if
//!   IPv6 must be impaired too. ARP is never delayed.
//!
//! # Timing model
//!
//! * Each packet is time-stamped when this program reads it from the queue and released
//!   (accepted) at `arrival + delay`, in FIFO order. The event loop's timer has 1 ms
//!   granularity, so it wakes [`FINE_WINDOW`] early and sleeps the rest with
//!   `nanosleep`; measured release error is ≈ +0.1…0.4 ms. Packets arriving during that
//!   short sleep are time-stamped when it ends (at high packet rates the sleeps are
//!   microseconds, since deadlines are dense).
//! * With `jitter_ms > 0` every packet draws `delay ± U(-jitter, +jitter)` (clamped at 0),
//!   **but packets are never reordered**: the release time is
//!   `max(previous release, arrival + delay + jitter_sample)`. Real access links with
//!   jitter rarely reorder within a flow, and TCP collapses under heavy reordering, so
//!   the emulator trades a slightly higher mean delay for in-order delivery.
//! * Loss is decided on arrival with probability `loss_pct / 100` using a built-in
//!   xorshift PRNG; lost packets get `NF_DROP` immediately.
//! * Changing the impairment ([`EmulatorHandle::set`] or the control file) affects
//!   packets arriving afterwards; packets already held keep their release time. A lower
//!   delay therefore takes effect once the older packets have drained (no reordering).
//!
//! # Performance choices
//!
//! * Only the first [`COPY_RANGE`] bytes of each packet are copied to userspace (no
//!   payload). Pure metadata mode (`NFQNL_COPY_META`) would be marginally cheaper but
//!   then the kernel does not report the packet length, which [`EmuStats::bytes`] needs.
//! * GSO is *not* negotiated by default, so the kernel segments GSO super-packets before
//!   queueing and loss applies per MTU-sized packet (dropping a 64 KiB GSO packet would
//!   be a burst loss of ~44 segments). [`EmuOptions::gso`] turns it on.
//! * Kernel queue length is [`QUEUE_MAX_LEN`] packets and the queue is **fail-open**
//!   (`NFQA_CFG_F_FAIL_OPEN`): when the kernel queue or the netlink socket buffer is
//!   full the kernel *accepts* the packet undelayed instead of dropping it. Overload
//!   therefore shows up as missing delay for some packets rather than as extra loss that
//!   the experiment did not ask for; watch [`EmuStats::max_queue`],
//!   [`EmuStats::enobufs`] and [`EmuStats::socket_drops`] to detect it. Use
//!   [`spawn_with`] with `fail_open: false` to get drops instead.
//! * Socket receive buffer: held packets live in the kernel *queue*; the netlink socket
//!   buffer only absorbs notifications not yet read. The default (~208 KiB, ~200
//!   notifications) is enough for paced traffic but a TCP window arriving back-to-back on
//!   an unshaped veth overruns it, and (fail-open) those packets bypass the delay.
//!   Measured, bulk TCP over an unshaped veth with 20 ms delay (2 cores): default buffer
//!   ≈ 40–80 Mbit/s with 5–40 % of the packets bypassing the delay; with a 16 MiB buffer
//!   ≈ 1 Gbit/s (~90 k packets/s at ~65 % of one core), none bypassed. Enlarging it
//!   needs `setsockopt(SO_RCVBUFFORCE)` on `nfq`'s fd, i.e. `unsafe`, which this crate
//!   forbids — so it is injected through [`EmuOptions::set_rcvbuf`]. ENOBUFS (socket
//!   overrun) is reported, counted and otherwise ignored.
//! * `nfq` has no batch verdicts: one `sendto` per verdict. The fd, needed to drive the
//!   socket from epoll, is located through `/proc` (queue → netlink port id → socket
//!   inode → fd) without `unsafe`.
//!
//! # Cross-process control
//!
//! [`run_blocking`] (the `tandem lab emu` helper process) polls a small text control
//! file every [`CONTROL_POLL`] for changes (mtime, size or inode). The lab updates it with
//! [`write_control`], which writes a temporary file and renames it over the old one, so
//! the reader never sees a partial file. Format: one `QUEUE=SPEC` per line, `#` comments,
//! where `SPEC` is the [`Impairment`] text form, e.g. `1=delay:15,jitter:2,loss:0.5`.

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nfq::{Message, Queue, Verdict};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use crate::profile::{parse_ms, parse_pct};

/// Kernel-side NFQUEUE length (packets) configured for every bound queue.
pub const QUEUE_MAX_LEN: u32 = 8192;
/// How often [`run_blocking`] checks the control file and the stop flag.
pub const CONTROL_POLL: Duration = Duration::from_millis(200);
/// A held packet is released once its deadline is at most this far in the future.
pub const RELEASE_SLACK: Duration = Duration::from_micros(50);
/// The event loop's timer (1 ms granularity) wakes this long before the next deadline;
/// the rest is slept precisely with `nanosleep`.
pub const FINE_WINDOW: Duration = Duration::from_micros(1500);
/// Upper bound for `delay_ms` and `jitter_ms` (one minute).
pub const MAX_DELAY_MS: f64 = 60_000.0;

/// Bytes of each packet copied to userspace. Not 0 (`NFQNL_COPY_META`): only
/// `NFQNL_COPY_PACKET` makes the kernel report the packet length (`NFQA_CAP_LEN`).
pub const COPY_RANGE: u16 = 4;
/// Maximum number of messages read from the socket before timers are serviced again.
const DRAIN_BATCH: usize = 256;
/// `NETLINK_NETFILTER` protocol number as shown in `/proc/net/netlink`.
const NETLINK_NETFILTER: u32 = 12;
/// Kernel `USER_HZ`: unit of utime/stime in `/proc/*/stat` (100 on every Linux ABI).
const USER_HZ: u64 = 100;

/// Errors of the link emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An impairment, queue spec or control file line is invalid.
    #[error("invalid impairment: {0}")]
    Invalid(String),
    /// The netlink socket of a freshly bound queue could not be found through `/proc`.
    #[error("cannot locate the NFQUEUE socket of queue {queue}: {reason}")]
    SocketLookup {
        /// Queue number.
        queue: u16,
        /// Why the lookup failed.
        reason: String,
    },
    /// The emulator thread panicked.
    #[error("emulator thread panicked")]
    Panicked,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmuError {
    let context = context.into();
    move |source| EmuError::Io { context, source }
}

/// Impairment of one link direction.
///
/// Text form (used by the CLI and the control file): comma separated `key:value` pairs
/// with keys `delay` (ms), `jitter` (ms) and `loss` (percent), any order, missing keys
/// are zero; `ms` / `%` suffixes are accepted. `none` or the empty string is no
/// impairment. Example: `delay:15,jitter:2,loss:0.5`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Impairment {
    /// Mean one-way delay in milliseconds.
    pub delay_ms: f64,
    /// Each packet's delay is `delay_ms ± U(-jitter_ms, +jitter_ms)`, without reordering.
    pub jitter_ms: f64,
    /// Random loss probability in percent (0–100).
    pub loss_pct: f64,
}

impl Impairment {
    /// No impairment at all.
    pub const NONE: Self = Self {
        delay_ms: 0.0,
        jitter_ms: 0.0,
        loss_pct: 0.0,
    };

    /// Constant delay only.
    pub const fn delay(delay_ms: f64) -> Self {
        Self {
            delay_ms,
            jitter_ms: 0.0,
            loss_pct: 0.0,
        }
    }

    /// Checks that all values are finite and in range (delay/jitter ≤ [`MAX_DELAY_MS`],
    /// loss 0–100).
    pub fn validate(&self) -> Result<(), EmuError> {
        let check = |name: &str, v: f64, max: f64| {
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(())
            } else {
                Err(EmuError::Invalid(format!("{name} = {v} not in 0..={max}")))
            }
        };
        check("delay_ms", self.delay_ms, MAX_DELAY_MS)?;
        check("jitter_ms", self.jitter_ms, MAX_DELAY_MS)?;
        check("loss_pct", self.loss_pct, 100.0)
    }

    /// Returns a copy with every value clamped into its valid range (NaN becomes 0).
    pub fn sanitized(&self) -> Self {
        let clamp = |v: f64, max: f64| if v.is_nan() { 0.0 } else { v.clamp(0.0, max) };
        Self {
            delay_ms: clamp(self.delay_ms, MAX_DELAY_MS),
            jitter_ms: clamp(self.jitter_ms, MAX_DELAY_MS),
            loss_pct: clamp(self.loss_pct, 100.0),
        }
    }
}

impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delay:{},jitter:{},loss:{}",
            self.delay_ms, self.jitter_ms, self.loss_pct
        )
    }
}

impl FromStr for Impairment {
    type Err = EmuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut imp = Self::NONE;
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(imp);
        }
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once([':', '=']) else {
                return Err(EmuError::Invalid(format!(
                    "expected key:value, got {part:?}"
                )));
            };
            // The lab CLI's unit parsers: `15ms` or `15`, `1%` or `1`.
            let bad = || EmuError::Invalid(format!("bad number in {part:?}"));
            match key.trim() {
                "delay" | "delay_ms" => imp.delay_ms = parse_ms(value).ok_or_else(bad)?,
                "jitter" | "jitter_ms" => imp.jitter_ms = parse_ms(value).ok_or_else(bad)?,
                "loss" | "loss_pct" => imp.loss_pct = parse_pct(value).ok_or_else(bad)?,
                other => return Err(EmuError::Invalid(format!("unknown key {other:?}"))),
            }
        }
        imp.validate()?;
        Ok(imp)
    }
}

/// Parses `QUEUE=SPEC`, e.g. `1=delay:15,loss:0` (the `--queue` CLI argument form).
pub fn parse_queue_spec(s: &str) -> Result<(u16, Impairment), EmuError> {
    let Some((q, spec)) = s.split_once('=') else {
        return Err(EmuError::Invalid(format!("expected QUEUE=SPEC, got {s:?}")));
    };
    let q: u16 = q
        .trim()
        .parse()
        .map_err(|_| EmuError::Invalid(format!("bad queue number in {s:?}")))?;
    Ok((q, spec.parse()?))
}

/// Counters of one emulated queue.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EmuStats {
    /// Packets received from the kernel queue (including dropped ones).
    pub packets: u64,
    /// Packets dropped by the loss model.
    pub dropped: u64,
    /// Bytes (IP packet length) received, including dropped packets.
    pub bytes: u64,
    /// Highest number of packets held at once.
    pub max_queue: usize,
    /// Packets currently held.
    pub queued: usize,
    /// ENOBUFS notifications (netlink socket overrun; the kernel accepted or dropped
    /// packets without asking us, depending on fail-open). Socket-wide: shared by all
    /// queues of one [`run_blocking`] process.
    pub enobufs: u64,
    /// Messages the kernel could not deliver to the socket (`Drops` in
    /// `/proc/net/netlink`). Socket-wide like `enobufs`. Only filled by
    /// [`EmulatorHandle::stats`].
    pub socket_drops: u64,
}

/// Knobs for [`spawn_with`]. The defaults are what [`spawn`] and [`run_blocking`] use.
#[derive(Clone, Copy, Debug)]
pub struct EmuOptions {
    /// Accept (instead of drop) packets when the kernel queue or socket is full.
    pub fail_open: bool,
    /// Kernel queue length in packets.
    pub queue_max_len: u32,
    /// Netlink socket receive buffer to request through `set_rcvbuf` (the kernel
    /// doubles it).
    pub rcvbuf: usize,
    /// Called once with the NFQUEUE socket's fd and `rcvbuf` right after binding,
    /// before any packet is read. Meant for `setsockopt(SO_RCVBUFFORCE)`, which this
    /// crate cannot do itself: it is `#![forbid(unsafe_code)]` and `nfq` 0.2.5 neither
    /// exposes its fd nor sets buffers (`net.core.rmem_default` is read-only inside
    /// child namespaces). `None` keeps the default ~208 KiB buffer, which overflows
    /// when a whole TCP window arrives back-to-back on an *unshaped* veth (then, being
    /// fail-open, those packets bypass the delay). Paced (shaped) traffic is fine.
    pub set_rcvbuf: Option<RcvbufSetter>,
    /// Negotiate GSO (`NFQA_CFG_F_GSO`): the kernel queues whole GSO super-packets
    /// (up to 64 KiB) instead of segmenting them. Far cheaper for bulk TCP, but loss
    /// then drops a whole super-packet (a burst of up to ~44 segments).
    pub gso: bool,
}

impl Default for EmuOptions {
    fn default() -> Self {
        Self {
            fail_open: true,
            queue_max_len: QUEUE_MAX_LEN,
            rcvbuf: DEFAULT_RCVBUF,
            set_rcvbuf: None,
            gso: false,
        }
    }
}

/// Default [`EmuOptions::rcvbuf`]: 8 MiB requested, 16 MiB effective — room for
/// ~12,000 queued notifications (~1.3 KiB of `truesize` each), i.e. more than a full
/// [`QUEUE_MAX_LEN`] kernel queue arriving back-to-back.
pub const DEFAULT_RCVBUF: usize = 8 << 20;

/// Sets a socket's receive buffer: `fn(fd, bytes)`. See [`EmuOptions::set_rcvbuf`].
pub type RcvbufSetter = fn(RawFd, usize) -> io::Result<()>;

/// Small fast PRNG (xorshift64*), good enough for loss and jitter sampling.
struct XorShift64(u64);

impl XorShift64 {
    fn seeded(salt: u64) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // splitmix64 finaliser so that close seeds diverge; never zero.
        let mut z =
            nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(z | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One queue (link direction) inside an engine.
struct Lane {
    queue_num: u16,
    imp: Arc<Mutex<Impairment>>,
    stats: Arc<Mutex<EmuStats>>,
    held: VecDeque<(Instant, Message)>,
    last_release: Option<Instant>,
    rng: XorShift64,
}

impl Lane {
    fn new(queue_num: u16, imp: Impairment) -> Self {
        Self {
            queue_num,
            imp: Arc::new(Mutex::new(imp)),
            stats: Arc::new(Mutex::new(EmuStats::default())),
            held: VecDeque::new(),
            last_release: None,
            rng: XorShift64::seeded(u64::from(queue_num) + 1),
        }
    }

    /// Takes a freshly received packet. Returns it back if it must be verdicted now.
    fn admit(&mut self, mut msg: Message, now: Instant) -> Option<Message> {
        let imp = *lock(&self.imp);
        let len = msg.get_original_len() as u64;
        let mut stats = lock(&self.stats);
        stats.packets += 1;
        stats.bytes += len;
        if imp.loss_pct > 0.0 && self.rng.next_f64() * 100.0 < imp.loss_pct {
            stats.dropped += 1;
            msg.set_verdict(Verdict::Drop);
            return Some(msg);
        }
        let mut delay_ms = imp.delay_ms;
        if imp.jitter_ms > 0.0 {
            delay_ms += imp.jitter_ms * (2.0 * self.rng.next_f64() - 1.0);
        }
        let mut release = now + Duration::from_secs_f64(delay_ms.max(0.0) / 1000.0);
        if let Some(last) = self.last_release {
            release = release.max(last);
        }
        self.last_release = Some(release);
        msg.set_verdict(Verdict::Accept);
        if self.held.is_empty() && release <= now + RELEASE_SLACK {
            return Some(msg);
        }
        self.held.push_back((release, msg));
        stats.queued = self.held.len();
        stats.max_queue = stats.max_queue.max(self.held.len());
        None
    }
}

/// Non-owning fd wrapper so that tokio can poll the socket owned by [`Queue`].
struct NlFd(RawFd);

impl AsRawFd for NlFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Shared stop/wake signalling between the engine and its controller.
struct Control {
    stop: Arc<AtomicBool>,
    wake: Arc<Notify>,
    control_file: Option<ControlFile>,
    handle_signals: bool,
}

/// One netlink socket bound to one or more queues, plus their lanes.
struct Engine {
    queue: Queue,
    fd: RawFd,
    lanes: Vec<Lane>,
    enobufs: u64,
    errors: u64,
}

impl Engine {
    /// Opens a socket in the calling thread's network namespace and binds all queues.
    fn open(queues: &[(u16, Impairment)], opts: EmuOptions) -> Result<(Self, u64), EmuError> {
        let first = queues
            .first()
            .ok_or_else(|| EmuError::Invalid("no queue given".into()))?
            .0;
        for (i, (q, imp)) in queues.iter().enumerate() {
            imp.validate()?;
            if queues[..i].iter().any(|(o, _)| o == q) {
                return Err(EmuError::Invalid(format!("queue {q} given twice")));
            }
        }
        let mut queue = Queue::open().map_err(io_err("open NFQUEUE netlink socket"))?;
        for &(n, _) in queues {
            queue
                .bind(n)
                .map_err(io_err(format!("bind NFQUEUE {n} (already in use?)")))?;
            queue
                .set_copy_range(n, COPY_RANGE)
                .map_err(io_err(format!("NFQUEUE {n}: set copy range")))?;
            if opts.gso {
                queue
                    .set_recv_gso(n, true)
                    .map_err(io_err(format!("NFQUEUE {n}: enable GSO")))?;
            }
            queue
                .set_queue_max_len(n, opts.queue_max_len)
                .map_err(io_err(format!("NFQUEUE {n}: set queue max len")))?;
            queue
                .set_fail_open(n, opts.fail_open)
                .map_err(io_err(format!("NFQUEUE {n}: set fail-open")))?;
        }
        queue
            .set_recv_enobufs(true)
            .map_err(io_err("NFQUEUE: enable ENOBUFS reports"))?;
        let (fd, inode) = find_queue_socket(first)?;
        if let Some(setter) = opts.set_rcvbuf {
            // `queue` (owner of `fd`) is alive for the whole call.
            if let Err(e) = setter(fd, opts.rcvbuf) {
                tracing::warn!(error = %e, "cannot enlarge the NFQUEUE socket buffer; bursts may bypass the emulator");
            }
        }
        queue.set_nonblocking(true);
        let lanes = queues.iter().map(|&(n, imp)| Lane::new(n, imp)).collect();
        Ok((
            Self {
                queue,
                fd,
                lanes,
                enobufs: 0,
                errors: 0,
            },
            inode,
        ))
    }

    fn verdict(&mut self, msg: Message) {
        if let Err(e) = self.queue.verdict(msg) {
            self.errors += 1;
            if self.errors.is_power_of_two() {
                tracing::warn!(error = %e, total = self.errors, "NFQUEUE verdict failed");
            }
        }
    }

    /// Reads up to [`DRAIN_BATCH`] messages. Returns `true` once the socket is empty.
    fn drain(&mut self) -> Result<bool, EmuError> {
        for _ in 0..DRAIN_BATCH {
            match self.queue.recv() {
                Ok(msg) => {
                    let now = Instant::now();
                    let q = msg.get_queue_num();
                    let out = match self.lanes.iter_mut().find(|l| l.queue_num == q) {
                        Some(lane) => lane.admit(msg, now),
                        None => Some(msg), // not ours (cannot happen): accept
                    };
                    if let Some(msg) = out {
                        self.verdict(msg);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.enobufs += 1;
                    for lane in &self.lanes {
                        lock(&lane.stats).enobufs = self.enobufs;
                    }
                    if self.enobufs.is_power_of_two() {
                        tracing::warn!(
                            total = self.enobufs,
                            "NFQUEUE socket overrun (ENOBUFS): kernel bypassed the emulator"
                        );
                    }
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK)) => {
                    return Err(EmuError::Io {
                        context: "NFQUEUE recv".into(),
                        source: e,
                    });
                }
                Err(e) => {
                    // E.g. an NLMSG_ERROR answering a verdict: report and go on.
                    self.errors += 1;
                    if self.errors.is_power_of_two() {
                        tracing::warn!(error = %e, total = self.errors, "NFQUEUE recv error");
                    }
                }
            }
        }
        Ok(false)
    }

    /// Accepts every held packet whose deadline is within [`RELEASE_SLACK`] of `now`.
    fn release_due(&mut self, now: Instant) {
        let horizon = now + RELEASE_SLACK;
        for i in 0..self.lanes.len() {
            let mut released = false;
            while self.lanes[i]
                .held
                .front()
                .is_some_and(|(deadline, _)| *deadline <= horizon)
            {
                if let Some((_, msg)) = self.lanes[i].held.pop_front() {
                    self.verdict(msg);
                    released = true;
                }
            }
            if released {
                let lane = &self.lanes[i];
                lock(&lane.stats).queued = lane.held.len();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.lanes
            .iter()
            .filter_map(|l| l.held.front().map(|(d, _)| *d))
            .min()
    }

    async fn run(&mut self, ctl: &mut Control) -> Result<(), EmuError> {
        // Soundness: `AsyncFd` requires the fd to stay open and refer to the same socket
        // for its whole lifetime. `self.queue` owns the fd and is only closed by
        // `shutdown`/drop, which need `self` by value — i.e. after this borrow and after
        // `afd` is dropped below. tokio deprecated this safe constructor in favour of the
        // `unsafe fn register_with_interest` (same contract); we keep the safe one so the
        // crate can stay `#![forbid(unsafe_code)]`.
        #[allow(deprecated)]
        let afd = AsyncFd::with_interest(NlFd(self.fd), Interest::READABLE)
            .map_err(io_err("register NFQUEUE socket with epoll"))?;
        let result = self.event_loop(&afd, ctl).await;
        // Deregister before the socket can be closed.
        drop(afd);
        result
    }

    async fn event_loop(&mut self, afd: &AsyncFd<NlFd>, ctl: &mut Control) -> Result<(), EmuError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut tick = tokio::time::interval(CONTROL_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut signals = if ctl.handle_signals {
            let term =
                signal(SignalKind::terminate()).map_err(io_err("install SIGTERM handler"))?;
            let int = signal(SignalKind::interrupt()).map_err(io_err("install SIGINT handler"))?;
            Some((term, int))
        } else {
            None
        };
        loop {
            // Precise last stretch: the timer wheel only has 1 ms resolution.
            if let Some(d) = self.next_deadline() {
                let left = d.saturating_duration_since(Instant::now());
                if left > RELEASE_SLACK && left <= FINE_WINDOW {
                    std::thread::sleep(left);
                }
            }
            self.release_due(Instant::now());
            if ctl.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let now = Instant::now();
            let wake_at = self
                .next_deadline()
                .map_or(now + Duration::from_secs(3600), |d| {
                    d.checked_sub(FINE_WINDOW).unwrap_or(d)
                });
            tokio::select! {
                biased;
                () = ctl.wake.notified() => {}
                () = wait_signal(&mut signals) => {
                    tracing::info!("emulator: termination signal received");
                    return Ok(());
                }
                _ = tick.tick() => {
                    if let Some(cf) = ctl.control_file.as_mut() {
                        cf.poll(&self.lanes);
                    }
                }
                ready = afd.readable() => {
                    let mut guard = ready.map_err(io_err("poll NFQUEUE socket"))?;
                    if self.drain()? {
                        guard.clear_ready();
                    }
                }
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }
    }

    /// Releases everything, drains the socket (accepting) and unbinds all queues.
    fn shutdown(mut self) -> Result<(), EmuError> {
        for i in 0..self.lanes.len() {
            while let Some((_, msg)) = self.lanes[i].held.pop_front() {
                self.verdict(msg);
            }
            lock(&self.lanes[i].stats).queued = 0;
        }
        for _ in 0..100_000 {
            match self.queue.recv() {
                Ok(mut msg) => {
                    msg.set_verdict(Verdict::Accept);
                    self.verdict(msg);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {}
            }
        }
        self.queue.set_nonblocking(false);
        let mut result = Ok(());
        for lane in &self.lanes {
            if let Err(e) = self.queue.unbind(lane.queue_num) {
                tracing::warn!(queue = lane.queue_num, error = %e, "NFQUEUE unbind failed");
                if result.is_ok() {
                    result = Err(EmuError::Io {
                        context: format!("unbind NFQUEUE {}", lane.queue_num),
                        source: e,
                    });
                }
            }
        }
        for lane in &self.lanes {
            let s = *lock(&lane.stats);
            tracing::info!(
                queue = lane.queue_num,
                packets = s.packets,
                dropped = s.dropped,
                bytes = s.bytes,
                max_queue = s.max_queue,
                enobufs = s.enobufs,
                "emulator stopped"
            );
        }
        result
    }
}

async fn wait_signal(
    signals: &mut Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
) {
    match signals {
        Some((term, int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        None => std::future::pending().await,
    }
}

fn build_runtime() -> Result<tokio::runtime::Runtime, EmuError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("build emulator runtime"))
}

/// Finds `(fd, socket inode)` of the netlink socket of this process bound to `queue`
/// in the calling thread's network namespace.
fn find_queue_socket(queue: u16) -> Result<(RawFd, u64), EmuError> {
    let fail = |reason: String| EmuError::SocketLookup { queue, reason };
    let qs = fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue")
        .map_err(|e| fail(format!("read nfnetlink_queue: {e}")))?;
    let portid = qs
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let q: u16 = it.next()?.parse().ok()?;
            let p: u32 = it.next()?.parse().ok()?;
            (q == queue).then_some(p)
        })
        .next()
        .ok_or_else(|| fail("queue not listed in nfnetlink_queue".into()))?;
    let (inode, _) = netlink_socket_row(|_, pid| pid == portid)
        .map_err(|e| fail(format!("read /proc/thread-self/net/netlink: {e}")))?
        .ok_or_else(|| fail(format!("no netlink socket with port id {portid}")))?;
    let want = format!("socket:[{inode}]");
    let dir =
        fs::read_dir("/proc/self/fd").map_err(|e| fail(format!("read /proc/self/fd: {e}")))?;
    for entry in dir.flatten() {
        if fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == want.as_str()) {
            if let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                return Ok((fd, inode));
            }
        }
    }
    Err(fail(format!("no fd refers to {want}")))
}

/// Scans a `/proc/.../net/netlink` table for a `NETLINK_NETFILTER` socket matching
/// `pred(inode, portid)`; returns `(inode, drops)`.
fn netlink_socket_row_in(
    path: &Path,
    pred: impl Fn(u64, u32) -> bool,
) -> io::Result<Option<(u64, u64)>> {
    let text = fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(eth), Some(pid), Some(drops), Some(ino)) =
        (col("Eth"), col("Pid"), col("Drops"), col("Inode"))
    else {
        return Err(io::Error::other("unexpected /proc/net/netlink header"));
    };
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
        let (Some(e), Some(p), Some(d), Some(n)) = (get(eth), get(pid), get(drops), get(ino))
        else {
            continue;
        };
        if e == u64::from(NETLINK_NETFILTER) && pred(n, p as u32) {
            return Ok(Some((n, d)));
        }
    }
    Ok(None)
}

fn netlink_socket_row(pred: impl Fn(u64, u32) -> bool) -> io::Result<Option<(u64, u64)>> {
    netlink_socket_row_in(Path::new("/proc/thread-self/net/netlink"), pred)
}

/// Kernel thread id of the calling thread (via `/proc/thread-self`).
fn current_tid() -> Option<u32> {
    let link = fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Handle of an emulator started with [`spawn`]. Dropping it stops the emulator too
/// (errors are then only logged).
pub struct EmulatorHandle {
    queue_num: u16,
    imp: Arc<Mutex<Impairment>>,
    stats: Arc<Mutex<EmuStats>>,
    stop: Arc<AtomicBool>,
    wake: Arc<Notify>,
    tid: Option<u32>,
    inode: u64,
    thread: Option<JoinHandle<Result<(), EmuError>>>,
}

impl fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("queue_num", &self.queue_num)
            .field("impairment", &self.impairment())
            .field("tid", &self.tid)
            .finish_non_exhaustive()
    }
}

/// Binds NFQUEUE `queue_num` in the network namespace of the calling thread and emulates
/// `imp` on it from a dedicated thread, with [`EmuOptions::default`].
pub fn spawn(queue_num: u16, imp: Impairment) -> Result<EmulatorHandle, EmuError> {
    spawn_with(queue_num, imp, EmuOptions::default())
}

/// Like [`spawn`] with explicit [`EmuOptions`].
pub fn spawn_with(
    queue_num: u16,
    imp: Impairment,
    opts: EmuOptions,
) -> Result<EmulatorHandle, EmuError> {
    // The socket is created here so that it lives in the caller's namespace.
    let (mut engine, inode) = Engine::open(&[(queue_num, imp)], opts)?;
    let runtime = build_runtime()?;
    let lane = &engine.lanes[0];
    let (imp_shared, stats) = (Arc::clone(&lane.imp), Arc::clone(&lane.stats));
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    let mut ctl = Control {
        stop: Arc::clone(&stop),
        wake: Arc::clone(&wake),
        control_file: None,
        handle_signals: false,
    };
    let (started_tx, started_rx) = mpsc::sync_channel::<Option<u32>>(1);
    let thread = std::thread::Builder::new()
        .name(format!("emu-q{queue_num}"))
        .spawn(move || {
            let _ = started_tx.send(current_tid());
            let result = runtime.block_on(engine.run(&mut ctl));
            if let Err(e) = &result {
                tracing::error!(queue = queue_num, error = %e, "emulator failed");
            }
            let fin = engine.shutdown();
            result.and(fin)
        })
        .map_err(io_err("spawn emulator thread"))?;
    let tid = started_rx.recv().ok().flatten();
    tracing::debug!(queue = queue_num, %imp, ?tid, "emulator started");
    Ok(EmulatorHandle {
        queue_num,
        imp: imp_shared,
        stats,
        stop,
        wake,
        tid,
        inode,
        thread: Some(thread),
    })
}

impl EmulatorHandle {
    /// Changes the impairment for packets arriving from now on (values are clamped into
    /// range, see [`Impairment::sanitized`]).
    pub fn set(&self, imp: Impairment) {
        let imp = imp.sanitized();
        *lock(&self.imp) = imp;
        tracing::debug!(queue = self.queue_num, %imp, "emulator impairment changed");
    }

    /// Current impairment.
    pub fn impairment(&self) -> Impairment {
        *lock(&self.imp)
    }

    /// The queue number this emulator is bound to.
    pub fn queue_num(&self) -> u16 {
        self.queue_num
    }

    /// Snapshot of the counters.
    pub fn stats(&self) -> EmuStats {
        let mut s = *lock(&self.stats);
        if let Some(tid) = self.tid {
            let path = PathBuf::from(format!("/proc/self/task/{tid}/net/netlink"));
            if let Ok(Some((_, drops))) = netlink_socket_row_in(&path, |ino, _| ino == self.inode) {
                s.socket_drops = drops;
            }
        }
        s
    }

    /// CPU time (user + system) consumed so far by the emulator thread, at the kernel's
    /// 10 ms `USER_HZ` resolution. `None` if it cannot be read.
    pub fn cpu_time(&self) -> Option<Duration> {
        let tid = self.tid?;
        let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = f.get(11)?.parse().ok()?;
        let stime: u64 = f.get(12)?.parse().ok()?;
        Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
    }

    /// Stops the emulator: accepts all held packets, unbinds the queue and joins the
    /// thread. With `--queue-bypass` on the rule, traffic then flows unimpaired.
    pub fn stop(mut self) -> Result<(), EmuError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), EmuError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::Release);
        self.wake.notify_one();
        thread.join().map_err(|_| EmuError::Panicked)?
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::warn!(queue = self.queue_num, error = %e, "emulator stop failed");
        }
    }
}

/// Polls the control file for changes and applies them to the lanes.
struct ControlFile {
    path: PathBuf,
    seen: Option<(i64, i64, u64, u64)>,
}

impl ControlFile {
    fn signature(&self) -> Option<(i64, i64, u64, u64)> {
        let m = fs::metadata(&self.path).ok()?;
        Some((m.mtime(), m.mtime_nsec(), m.ino(), m.len()))
    }

    fn poll(&mut self, lanes: &[Lane]) {
        let sig = self.signature();
        if sig.is_none() || sig == self.seen {
            return;
        }
        self.seen = sig;
        match read_control(&self.path) {
            Ok(entries) => {
                for (q, imp) in entries {
                    match lanes.iter().find(|l| l.queue_num == q) {
                        Some(lane) => {
                            let mut cur = lock(&lane.imp);
                            if *cur != imp {
                                tracing::info!(queue = q, %imp, "emulator impairment changed");
                                *cur = imp;
                            }
                        }
                        None => tracing::warn!(queue = q, "control file names an unbound queue"),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "bad control file ignored")
            }
        }
    }
}

/// Writes the control file read by [`run_blocking`] atomically (temporary file in the
/// same directory, then `rename`). One `QUEUE=SPEC` line per entry.
pub fn write_control(path: &Path, entries: &[(u16, Impairment)]) -> Result<(), EmuError> {
    let mut text = String::from("# tandem lab link emulator: QUEUE=delay:MS,jitter:MS,loss:PCT\n");
    for (q, imp) in entries {
        imp.validate()?;
        text.push_str(&format!("{q}={imp}\n"));
    }
    let name = path
        .file_name()
        .ok_or_else(|| {
            EmuError::Invalid(format!("control path {} has no file name", path.display()))
        })?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    fs::write(&tmp, text).map_err(io_err(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        EmuError::Io {
            context: format!("rename {} to {}", tmp.display(), path.display()),
            source: e,
        }
    })
}

/// Reads a control file written by [`write_control`].
pub fn read_control(path: &Path) -> Result<Vec<(u16, Impairment)>, EmuError> {
    let text = fs::read_to_string(path).map_err(io_err(format!("read {}", path.display())))?;
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(parse_queue_spec)
        .collect()
}

/// Runs one emulator for several queues in the calling thread (and its network
/// namespace) until `stop` becomes true or the process gets SIGTERM/SIGINT.
///
/// Live changes come through the `control` file (see [`write_control`]), polled every
/// [`CONTROL_POLL`]. If the file does not exist it is created with `queues`; if it
/// exists, its entries override `queues` at start. All queues share one netlink socket
/// and one thread. On return every held packet has been accepted and all queues are
/// unbound.
pub fn run_blocking(
    queues: &[(u16, Impairment)],
    control: PathBuf,
    stop: Arc<AtomicBool>,
) -> Result<(), EmuError> {
    run_blocking_with(queues, control, stop, EmuOptions::default())
}

/// [`run_blocking`] with explicit [`EmuOptions`].
pub fn run_blocking_with(
    queues: &[(u16, Impairment)],
    control: PathBuf,
    stop: Arc<AtomicBool>,
    opts: EmuOptions,
) -> Result<(), EmuError> {
    let (mut engine, _inode) = Engine::open(queues, opts)?;
    if !control.exists() {
        write_control(&control, queues)?;
    }
    let mut control_file = ControlFile {
        path: control,
        seen: None,
    };
    control_file.poll(&engine.lanes);
    let mut ctl = Control {
        stop,
        wake: Arc::new(Notify::new()),
        control_file: Some(control_file),
        handle_signals: true,
    };
    tracing::info!(queues = ?queues, "emulator running");
    let result = match build_runtime() {
        Ok(rt) => rt.block_on(engine.run(&mut ctl)),
        Err(e) => Err(e),
    };
    let fin = engine.shutdown();
    result.and(fin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impairment_text_roundtrip() {
        let imp: Impairment = "delay:15ms, jitter:2,loss:0.5%".parse().unwrap();
        assert_eq!(
            imp,
            Impairment {
                delay_ms: 15.0,
                jitter_ms: 2.0,
                loss_pct: 0.5
            }
        );
        assert_eq!(imp.to_string().parse::<Impairment>().unwrap(), imp);
        assert_eq!("none".parse::<Impairment>().unwrap(), Impairment::NONE);
        assert_eq!(
            parse_queue_spec("3=delay:30").unwrap(),
            (3, Impairment::delay(30.0))
        );
        assert!("loss:101".parse::<Impairment>().is_err());
        assert!("delay:-1".parse::<Impairment>().is_err());
        assert!("bogus:1".parse::<Impairment>().is_err());
        assert!(parse_queue_spec("x=delay:1").is_err());
    }

    #[test]
    fn control_file_roundtrip() {
        let dir = std::env::temp_dir().join(format!("emu-ctl-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl");
        let entries = [
            (1, Impairment::delay(15.0)),
            (2, "loss:50".parse().unwrap()),
        ];
        write_control(&path, &entries).unwrap();
        assert_eq!(read_control(&path).unwrap(), entries);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn xorshift_is_roughly_uniform() {
        let mut rng = XorShift64::seeded(7);
        let n = 100_000;
        let below = (0..n).filter(|_| rng.next_f64() < 0.3).count();
        let frac = below as f64 / f64::from(n);
        assert!((0.29..0.31).contains(&frac), "{frac}");
    }
}
