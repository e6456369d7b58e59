//! End-to-end tests of the NFQUEUE link emulator in throw-away network namespaces.
//!
//! Needs root, `iptables` (NFQUEUE target) and `iperf3`; the tests skip
//! (pass with a message) when not run as root. Every test creates its own pair of
//! namespaces `emuA<pid>-<n>` / `emuB<pid>-<n>` joined by a veth pair (the lab's
//! `Pair`) and removes them in `Drop`, also on failure. Tests are serialised because
//! they measure timing.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab::emu::{self, Impairment};

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs a command to completion, killing it after `timeout`.
fn run_timeout(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("wait_with_output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait_with_output");
            panic!(
                "{args:?} timed out: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two namespaces A and B joined by a veth pair (the lab's own
/// [`lab::topology::Pair`], deleted on drop); B queues its inbound IPv4
/// traffic.
struct Pair {
    // Field order: the namespaces are dropped after anything declared
    // before them.
    a: Ns,
    b: Ns,
    b_ip: String,
    queue: u16,
    _pair: lab::topology::Pair,
}

/// A namespace's name (`.0`, as the tests use it).
struct Ns(String);

impl Pair {
    fn new(idx: u8) -> Self {
        let pid = std::process::id();
        let (a, b) = (format!("emuA{pid}-{idx}"), format!("emuB{pid}-{idx}"));
        let net = (pid % 50) as u8 * 5 + idx;
        let dev = format!("e{pid}{idx}");
        let (a_ip, b_ip) = (
            std::net::Ipv4Addr::new(10, 77, net, 1),
            std::net::Ipv4Addr::new(10, 77, net, 2),
        );
        let queue = 100 + u16::from(idx);
        let pair = lab::topology::Pair::build([&a, &b], &dev, [a_ip, b_ip], 24)
            .unwrap_or_else(|e| panic!("{e}"));
        lab::topology::queue_arrivals(&b, &dev, None, queue).unwrap_or_else(|e| panic!("{e}"));
        Self {
            a: Ns(a),
            b: Ns(b),
            b_ip: b_ip.to_string(),
            queue,
            _pair: pair,
        }
    }

    /// Sends `count` UDP probes from A to an echo server in B, one every 50 ms, and
    /// measures their round-trip times. (`ping` is not installed on the lab machine.)
    fn rtt(&self, count: u32) -> Rtt {
        const PORT: u16 = 7777;
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let stop = Arc::clone(&stop);
            spawn_in_netns(&self.b.0, move || {
                let sock = UdpSocket::bind(("0.0.0.0", PORT)).expect("bind echo server");
                sock.set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                let mut buf = [0u8; 64];
                // Bounded: the client side always sets `stop` (guard below).
                while !stop.load(Ordering::Acquire) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
            })
        };
        struct Stop(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
                if let Some(t) = self.1.take() {
                    let _ = t.join();
                }
            }
        }
        let _server = Stop(stop, Some(server));
        std::thread::sleep(Duration::from_millis(50));
        let b_ip: std::net::Ipv4Addr = self.b_ip.parse().unwrap();
        in_netns(&self.a.0, move || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.connect((b_ip, PORT)).unwrap();
            let mut sent_at = Vec::new();
            let mut rtts = vec![None; count as usize];
            let mut buf = [0u8; 64];
            let start = Instant::now();
            let interval = Duration::from_millis(50);
            let mut recv_until = |sock: &UdpSocket, until: Instant, sent_at: &[Instant]| {
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    if left.is_zero() {
                        break;
                    }
                    sock.set_read_timeout(Some(left)).unwrap();
                    if let Ok(n) = sock.recv(&mut buf) {
                        if n >= 4 {
                            let seq = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                            if let Some(t) = sent_at.get(seq) {
                                rtts[seq] = Some(t.elapsed().as_secs_f64() * 1000.0);
                            }
                        }
                    }
                }
            };
            for seq in 0..count {
                sent_at.push(Instant::now());
                sock.send(&seq.to_be_bytes()).unwrap();
                recv_until(&sock, start + interval * (seq + 1), &sent_at);
            }
            recv_until(&sock, Instant::now() + Duration::from_millis(500), &sent_at);
            let got: Vec<f64> = rtts.iter().flatten().copied().collect();
            let n = got.len() as f64;
            let avg = got.iter().sum::<f64>() / n;
            let sd = (got.iter().map(|x| (x - avg).powi(2)).sum::<f64>() / n).sqrt();
            Rtt {
                sent: count,
                received: got.len() as u32,
                avg_ms: (!got.is_empty()).then_some(avg),
                sd_ms: (!got.is_empty()).then_some(sd),
                min_ms: got.iter().copied().reduce(f64::min),
                max_ms: got.iter().copied().reduce(f64::max),
            }
        })
    }
}

impl Pair {
    /// [`Pair::rtt`] as (sent, received, avg ms, standard deviation ms); prints it all.
    fn ping(&self, count: u32) -> (u32, u32, Option<f64>, Option<f64>) {
        let r = self.rtt(count);
        println!("    {r:?}");
        (r.sent, r.received, r.avg_ms, r.sd_ms)
    }
}

/// Result of [`Pair::rtt`].
#[derive(Debug)]
#[allow(dead_code)] // fields are printed
struct Rtt {
    sent: u32,
    received: u32,
    avg_ms: Option<f64>,
    sd_ms: Option<f64>,
    min_ms: Option<f64>,
    max_ms: Option<f64>,
}

fn join_netns(ns: &str) {
    lab::netns::enter(ns).unwrap_or_else(|e| panic!("{e}"));
}

/// Spawns a thread that joins network namespace `ns` and runs `f`.
fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        join_netns(&ns);
        f()
    })
}

/// Runs `f` on a fresh thread that has joined network namespace `ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(move || {
            join_netns(ns);
            f()
        })
        .join()
        .expect("netns thread panicked")
    })
}

fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Duration::from_millis((f[11] + f[12]) * 10)
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn delay_loss_jitter_and_live_changes() {
    lab::require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pair = Pair::new(0);
    let emu = in_netns(&pair.b.0, || emu::spawn(pair.queue, Impairment::NONE)).unwrap();

    let (tx, rx, avg, _) = pair.ping(20);
    println!("delay 0: {rx}/{tx} avg {avg:?} ms");
    assert_eq!(rx, tx);
    assert!(avg.unwrap() < 5.0, "baseline rtt {avg:?}");

    emu.set(Impairment::delay(30.0));
    let (tx, rx, avg, mdev) = pair.ping(20);
    println!("delay 30: {rx}/{tx} avg {avg:?} mdev {mdev:?} ms");
    assert_eq!(rx, tx);
    let avg30 = avg.unwrap();
    assert!(
        (25.0..60.0).contains(&avg30),
        "rtt with 30 ms delay: {avg30}"
    );

    emu.set(Impairment {
        loss_pct: 50.0,
        ..Impairment::NONE
    });
    let (tx, rx, avg, _) = pair.ping(40);
    println!("loss 50%: {rx}/{tx} received, avg {avg:?} ms");
    assert!(rx > 0 && rx < tx, "loss 50%: {rx}/{tx}");

    // Live change to another delay.
    emu.set(Impairment::delay(10.0));
    let (tx, rx, avg, _) = pair.ping(20);
    println!("delay 10: {rx}/{tx} avg {avg:?} ms");
    assert_eq!(rx, tx);
    let avg10 = avg.unwrap();
    assert!(
        (8.0..25.0).contains(&avg10),
        "rtt with 10 ms delay: {avg10}"
    );
    assert!(avg30 - avg10 > 10.0, "rtt did not follow the change");

    emu.set(Impairment {
        delay_ms: 20.0,
        jitter_ms: 10.0,
        loss_pct: 0.0,
    });
    let (tx, rx, avg, mdev) = pair.ping(40);
    println!("delay 20 ± 10: {rx}/{tx} avg {avg:?} mdev {mdev:?} ms");
    assert_eq!(rx, tx);
    assert!((12.0..45.0).contains(&avg.unwrap()));
    assert!(mdev.unwrap() > 1.0, "jitter not visible: {mdev:?}");

    let stats = emu.stats();
    println!("stats: {stats:?}, emulator cpu {:?}", emu.cpu_time());
    assert!(stats.packets >= 140 && stats.dropped > 0 && stats.bytes > 0);
    assert!(stats.max_queue >= 1);
    emu.stop().unwrap();

    // After stop the queue is unbound and `--queue-bypass` lets traffic through.
    let (tx, rx, avg, _) = pair.ping(10);
    println!("after stop: {rx}/{tx} avg {avg:?} ms");
    assert_eq!(rx, tx);
    assert!(avg.unwrap() < 5.0);
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn run_blocking_follows_control_file() {
    lab::require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pair = Pair::new(2);
    let dir = tempdir();
    let ctl = dir.0.join("emu.ctl");
    let stop = Arc::new(AtomicBool::new(false));
    let queues = [(pair.queue, Impairment::delay(15.0))];

    let (stop2, ctl2) = (Arc::clone(&stop), ctl.clone());
    let runner = spawn_in_netns(&pair.b.0, move || emu::run_blocking(&queues, ctl2, stop2));
    // Stop the runner whatever happens below.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let stopper = StopOnDrop(Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(300));

    let (tx, rx, avg, _) = pair.ping(20);
    println!("run_blocking delay 15: {rx}/{tx} avg {avg:?} ms");
    assert_eq!(rx, tx);
    assert!((12.0..30.0).contains(&avg.unwrap()), "{avg:?}");
    assert_eq!(emu::read_control(&ctl).unwrap(), queues);

    emu::write_control(&ctl, &[(pair.queue, Impairment::delay(40.0))]).unwrap();
    std::thread::sleep(emu::CONTROL_POLL * 2);
    let (tx, rx, avg, _) = pair.ping(20);
    println!("run_blocking delay 40 (control file): {rx}/{tx} avg {avg:?} ms");
    assert_eq!(rx, tx);
    assert!((35.0..70.0).contains(&avg.unwrap()), "{avg:?}");

    drop(stopper);
    let started = Instant::now();
    runner.join().expect("runner panicked").unwrap();
    println!("run_blocking stopped in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// `SO_RCVBUFFORCE` for [`emu::EmuOptions::set_rcvbuf`] (the library forbids `unsafe`).
fn set_rcvbuf_force(fd: std::os::fd::RawFd, bytes: usize) -> std::io::Result<()> {
    let val = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is the emulator's open netlink socket (the library keeps it open for
    // the call); `optval` points to a live `c_int` and `optlen` is its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::from_ref(&val).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Bulk TCP A→B through the emulator (20 ms delay on B's inbound) for 3 s; returns Mbit/s.
fn bulk_tcp(idx: u8, opts: emu::EmuOptions, label: &str) -> f64 {
    let pair = Pair::new(idx);
    let emu = in_netns(&pair.b.0, || {
        emu::spawn_with(pair.queue, Impairment::delay(20.0), opts)
    })
    .unwrap();
    let port = "5201";
    let _server = ChildGuard(
        lab::cmd::in_ns(&pair.b.0, ["iperf3", "-s", "-1", "-p", port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 server"),
    );

    let cpu_emu0 = emu.cpu_time();
    let cpu_proc0 = process_cpu();
    let mut json = String::new();
    for _ in 0..20 {
        let out = run_timeout(
            &[
                "ip", "netns", "exec", &pair.a.0, "iperf3", "-c", &pair.b_ip, "-p", port, "-t",
                "3", "-J",
            ],
            Duration::from_secs(30),
        );
        json = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100)); // server not listening yet
    }
    let cpu_emu = emu.cpu_time().zip(cpu_emu0).map(|(b, a)| b - a);
    let cpu_proc = process_cpu() - cpu_proc0;

    let bps = json
        .find("\"sum_received\"")
        .and_then(|i| {
            let rest = &json[i..];
            let j = rest.find("\"bits_per_second\"")?;
            let num = rest[j + 17..].trim_start_matches([':', ' ']);
            let end = num.find([',', '\n', '}']).unwrap_or(num.len());
            num[..end].trim().parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("no throughput in iperf3 output: {json}"));
    let retrans = json.find("\"retransmits\"").and_then(|i| {
        let num = json[i + 13..].trim_start_matches([':', ' ']);
        num[..num.find([',', '\n'])?].trim().parse::<u64>().ok()
    });
    let stats = emu.stats();
    let mbps = bps / 1e6;
    println!(
        "[{label}] bulk TCP with 20 ms delay: {mbps:.1} Mbit/s, retransmits {retrans:?}, \
         emulator thread cpu {cpu_emu:?}, test process cpu {cpu_proc:?} over ~3 s"
    );
    println!("[{label}] emulator stats: {stats:?}");
    emu.stop().unwrap();
    mbps
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn throughput_smoke_with_20ms_delay() {
    lab::require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        Command::new("iperf3").arg("--version").output().is_ok(),
        "iperf3 is not installed (make deps installs it)"
    );
    // Default socket buffer: printed only (bursts on an unshaped veth overrun it).
    bulk_tcp(1, emu::EmuOptions::default(), "default rcvbuf");
    let opts = emu::EmuOptions {
        set_rcvbuf: Some(set_rcvbuf_force),
        ..emu::EmuOptions::default()
    };
    let mbps = bulk_tcp(3, opts, "16 MiB rcvbuf");
    assert!(mbps > 50.0, "only {mbps:.1} Mbit/s");
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).expect("random bytes");
    let dir = std::env::temp_dir().join(format!(
        "emu-test-{}-{}",
        std::process::id(),
        u64::from_ne_bytes(nonce)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}
