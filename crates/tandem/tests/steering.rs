//! Steering and failover, end to end in the lab: the real HAG and CPE over
//! the kernel's Multipath TCP on shaped, delayed links, a client in the home
//! that checks what a user sees (every byte intact, the longest stall), and
//! the access links' own interface counters for what each link carried.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{expected, metric, Lab};
use lab::Link;
use sha2::{Digest, Sha256};

/// What the home's client got.
#[derive(Debug)]
struct Fetched {
    bytes: u64,
    sha256: String,
    /// Longest time between two reads of the body.
    longest_stall: Duration,
    elapsed: Duration,
}

impl Fetched {
    fn mbit(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// `GET path` from the origin, from the home, over HTTP/1.0 (the body ends
/// when the server closes): through the CPE's interception and the HAG.
fn fetch(lab: &Lab, path: String) -> JoinHandle<Result<Fetched, String>> {
    lab.spawn_in_ns("home", move || {
        let t0 = Instant::now();
        let addr = "203.0.113.10:80".parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| format!("connect: {e}"))?;
        // A stall this long fails the test instead of hanging it.
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: origin\r\n\r\n").as_bytes())
            .map_err(|e| format!("request: {e}"))?;
        let mut buf = vec![0u8; 1 << 16];
        let mut head = Vec::new();
        let mut in_body = false;
        let (mut hash, mut bytes) = (Sha256::new(), 0u64);
        let (mut last, mut longest) = (Instant::now(), Duration::ZERO);
        loop {
            let n = s
                .read(&mut buf)
                .map_err(|e| format!("read after {bytes} body bytes: {e}"))?;
            if n == 0 {
                break;
            }
            let now = Instant::now();
            if in_body {
                longest = longest.max(now - last);
                hash.update(&buf[..n]);
                bytes += n as u64;
            } else {
                head.extend_from_slice(&buf[..n]);
                let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let status = String::from_utf8_lossy(&head[..p]).into_owned();
                if !status.starts_with("HTTP/1.0 200") && !status.starts_with("HTTP/1.1 200") {
                    return Err(format!("status: {status}"));
                }
                hash.update(&head[p + 4..]);
                bytes += (head.len() - p - 4) as u64;
                in_body = true;
            }
            last = now;
        }
        Ok(Fetched {
            bytes,
            sha256: hex::encode(hash.finalize()),
            longest_stall: longest,
            elapsed: t0.elapsed(),
        })
    })
}

/// Fetches and checks the bytes.
fn fetch_ok(lab: &Lab, path: &str, size: u64) -> Fetched {
    let got = fetch(lab, path.to_string())
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(got.bytes, size, "{path}");
    assert_eq!(got.sha256, expected(size), "{path}: corrupted");
    got
}

/// Bytes each link carried towards the home, from its interface counters.
fn down_bytes(lab: &Lab) -> (u64, u64) {
    let d = lab::topology::link_bytes(&lab.name, Link::Dsl).unwrap().0;
    let l = lab::topology::link_bytes(&lab.name, Link::Lte).unwrap().0;
    (d, l)
}

/// Share of the bytes towards the home that the mobile link carried while
/// `f` ran.
fn mobile_share<T>(lab: &Lab, f: impl FnOnce() -> T) -> (T, f64) {
    let (d0, l0) = down_bytes(lab);
    let out = f();
    let (d1, l1) = down_bytes(lab);
    let (d, l) = ((d1 - d0) as f64, (l1 - l0) as f64);
    (out, l / (d + l).max(1.0))
}

/// The links' downward counters every 100 ms, on a thread of its own.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Instant, u64, u64)>>,
}

impl Sampler {
    fn start(lab: &Lab) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, name) = (stop.clone(), lab.name.clone());
        let thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            // Bounded: at most 10 minutes of samples.
            for _ in 0..6000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let d = lab::topology::link_bytes(&name, Link::Dsl).map_or(0, |x| x.0);
                let l = lab::topology::link_bytes(&name, Link::Lte).map_or(0, |x| x.0);
                v.push((Instant::now(), d, l));
                std::thread::sleep(Duration::from_millis(100));
            }
            v
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<(Instant, u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// How long after `at` the link first carried more than 2 Mbit/s towards
/// the home over a sample interval.
fn carrying_again(samples: &[(Instant, u64, u64)], at: Instant, link: Link) -> Option<Duration> {
    samples.windows(2).find_map(|w| {
        let ((t0, d0, l0), (t1, d1, l1)) = (w[0], w[1]);
        if t0 < at {
            return None;
        }
        let bytes = match link {
            Link::Dsl => d1 - d0,
            Link::Lte => l1 - l0,
        };
        let rate = bytes as f64 / (t1 - t0).as_secs_f64();
        (rate > 250_000.0).then(|| t1 - at)
    })
}

fn link_cmd(lab: &Lab, link: &str, action: &str) {
    let (ok, out) = lab.tandem(&["lab", "link", link, action, "--name", &lab.name]);
    assert!(ok, "lab link {link} {action}: {out}");
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn failover_is_hitless_on_cuts_and_blackholes_of_either_link() {
    lab::require_root();
    let lab = Lab::up("fo", "rural");
    // About a minute at the rural profile's rates with the outages below.
    let size = 240_000_000u64;
    let sampler = Sampler::start(&lab);
    let t0 = Instant::now();
    let dl = fetch(&lab, format!("/bytes/{size}"));
    let events = [
        (6, "dsl", "cut"),
        (12, "dsl", "restore"),
        (18, "dsl", "blackhole"),
        (24, "dsl", "restore"),
        (30, "lte", "cut"),
        (36, "lte", "restore"),
        (42, "lte", "blackhole"),
        (48, "lte", "restore"),
    ];
    let mut restored = Vec::new();
    for (at, link, action) in events {
        let due = t0 + Duration::from_secs(at);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        link_cmd(&lab, link, action);
        if action == "restore" {
            restored.push((Instant::now(), link));
        }
    }
    let got = dl
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the download broke: {e}"));
    let samples = sampler.finish();
    println!(
        "{} bytes in {:.1} s ({:.1} Mbit/s), longest stall {} ms",
        got.bytes,
        got.elapsed.as_secs_f64(),
        got.mbit(),
        got.longest_stall.as_millis()
    );
    assert_eq!(got.bytes, size);
    assert_eq!(got.sha256, expected(size), "corrupted across failovers");
    assert!(
        got.longest_stall < Duration::from_secs(1),
        "stalled {:?}",
        got.longest_stall
    );
    for (at, link) in restored {
        let l = if link == "dsl" { Link::Dsl } else { Link::Lte };
        let back = carrying_again(&samples, at, l);
        println!("{link} carrying again {back:?} after its restore");
        assert!(
            back.is_some_and(|d| d < Duration::from_secs(2)),
            "{link} not carrying within 2 s of its restore: {back:?}"
        );
    }
    // The CPE saw every change and exported it.
    let cpe = lab.metrics("cpe");
    for link in ["dsl", "lte"] {
        for to in ["down", "up"] {
            let series =
                format!("tandem_cpe_link_transitions_total{{link=\"{link}\",to=\"{to}\"}}");
            assert!(metric(&cpe, &series) >= 2.0, "{series}: {cpe}");
        }
        assert_eq!(
            metric(&cpe, &format!("tandem_cpe_link_up{{link=\"{link}\"}}")),
            1.0
        );
        assert!(
            metric(
                &cpe,
                &format!("tandem_cpe_link_rtt_seconds{{link=\"{link}\"}}")
            ) > 0.0
        );
        assert!(
            cpe.contains(&format!("tandem_cpe_link_loss_ratio{{link=\"{link}\"}}")),
            "{cpe}"
        );
        assert!(
            metric(
                &cpe,
                &format!("tandem_cpe_wan_bytes_total{{link=\"{link}\",direction=\"downstream\"}}")
            ) > 10e6,
            "{cpe}"
        );
    }
    let log = lab.log("cpe.log");
    assert!(log.contains("link down") && log.contains("MPTCP endpoint removed"));
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn priority_mode_uses_the_mobile_link_only_for_the_overflow() {
    lab::require_root();
    let lab = Lab::up("pr", "rural");
    let standby = || metric(&lab.metrics("cpe"), "tandem_cpe_mobile_standby");
    assert_eq!(standby(), 1.0, "idle: the mobile link is standby");
    // A steady stream at 70 % of the fixed line's 8 Mbit/s for 10 s.
    let size = 7_000_000;
    let (got, share) = mobile_share(&lab, || {
        fetch_ok(&lab, &format!("/bytes/{size}?rate=700000"), size)
    });
    println!(
        "steady 5.6 Mbit/s: {:.1} Mbit/s, mobile share {:.3} %",
        got.mbit(),
        share * 100.0
    );
    assert!(
        share < 0.01,
        "the mobile link carried {:.2} %",
        share * 100.0
    );
    // A bulk download: the fixed line fills, the mobile link takes the rest.
    let size = 60_000_000;
    let (got, share) = mobile_share(&lab, || fetch_ok(&lab, &format!("/bytes/{size}"), size));
    println!(
        "bulk: {:.1} Mbit/s, mobile share {:.1} %",
        got.mbit(),
        share * 100.0
    );
    assert!(share > 0.5, "mobile share {share}");
    assert!(
        got.mbit() > 16.0,
        "no overflow onto the mobile link: {got:?}"
    );
    assert!(lab.log("cpe.log").contains("mobile link priority changed"));
    // Idle again: back to standby.
    assert!(
        lab::wait::until(Duration::from_secs(5), || standby() == 1.0),
        "the mobile link did not return to standby"
    );
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn active_standby_and_aggregate_modes_follow_sighup() {
    lab::require_root();
    let lab = Lab::up("as", "rural");
    let cpe = || lab.metrics("cpe");
    // Returns once the CPE's /status shows the new configuration in force
    // (steering included).
    lab.reconfigure_cpe(|t| format!("{t}[steering]\nmode = \"active-standby\"\n"));
    // A bulk download stays on the fixed line, full as it is.
    let size = 10_000_000;
    let (got, share) = mobile_share(&lab, || fetch_ok(&lab, &format!("/bytes/{size}"), size));
    println!(
        "active-standby bulk: {:.1} Mbit/s, mobile share {:.3} %",
        got.mbit(),
        share * 100.0
    );
    assert!(share < 0.01, "mobile share {share}");
    assert_eq!(metric(&cpe(), "tandem_cpe_mobile_standby"), 1.0);
    // The fixed line fails silently mid-download: the mobile link takes
    // over and the download completes.
    let size = 40_000_000;
    let dl = fetch(&lab, format!("/bytes/{size}"));
    std::thread::sleep(Duration::from_secs(3));
    let (d0, l0) = down_bytes(&lab);
    link_cmd(&lab, "dsl", "blackhole");
    let got = dl.join().unwrap().expect("download across the failure");
    let (d1, l1) = down_bytes(&lab);
    link_cmd(&lab, "dsl", "restore");
    assert_eq!(got.sha256, expected(size));
    println!(
        "after the blackhole: dsl {} B, lte {} B, longest stall {} ms",
        d1 - d0,
        l1 - l0,
        got.longest_stall.as_millis()
    );
    assert!(l1 - l0 > 10_000_000, "the mobile link did not take over");
    assert!(got.longest_stall < Duration::from_secs(1));
    // Aggregate, switched with SIGHUP while a download runs (which goes on
    // undisturbed): the mobile link is never standby; a bulk download uses
    // both links from the start.
    let running_size = 4_000_000;
    let running = fetch(&lab, format!("/bytes/{running_size}?rate=500000"));
    std::thread::sleep(Duration::from_secs(2));
    lab.reconfigure_cpe(|t| t.replace("mode = \"active-standby\"", "mode = \"aggregate\""));
    assert!(
        lab::wait::until(Duration::from_secs(5), || metric(
            &cpe(),
            "tandem_cpe_mobile_standby"
        ) == 0.0),
        "aggregate: the mobile link stayed standby"
    );
    let got = running
        .join()
        .unwrap()
        .expect("the download running across the reload");
    assert_eq!(got.sha256, expected(running_size), "cut by the reload");
    let eps = lab.ok("cpe", &["ip", "mptcp", "endpoint", "show"]);
    assert!(
        eps.contains("10.64.2.2") && !eps.contains("backup"),
        "{eps}"
    );
    let size = 20_000_000;
    let (got, share) = mobile_share(&lab, || fetch_ok(&lab, &format!("/bytes/{size}"), size));
    println!(
        "aggregate bulk: {:.1} Mbit/s, mobile share {:.1} %",
        got.mbit(),
        share * 100.0
    );
    assert!(share > 0.5 && got.mbit() > 16.0, "{got:?} share {share}");
}

/// A CPE this test started (in place of the lab's), stopped when dropped.
struct OwnCpe(std::process::Child);

impl OwnCpe {
    /// Stops the running CPE (the lab's, or `previous`) and starts one with
    /// the budget's test clock at `clock_unix`.
    fn start(lab: &Lab, previous: Option<Self>, clock_unix: i64) -> Self {
        match previous {
            Some(p) => drop(p),
            None => {
                let pid = lab.pid("cpe");
                lab.signal("cpe", nix::sys::signal::Signal::SIGTERM);
                assert!(
                    lab::wait::until(Duration::from_secs(10), || !std::path::Path::new(&format!(
                        "/proc/{pid}"
                    ))
                    .exists()),
                    "the lab's CPE did not stop"
                );
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(lab.file("cpe-own.log"))
            .unwrap();
        let child = lab::cmd::in_ns(&lab.ns("cpe"), ["env"])
            .arg(format!("TANDEM_TEST_CLOCK_UNIX={clock_unix}"))
            .args([
                common::TANDEM,
                "cpe",
                "run",
                "--config",
                &lab.file("cpe.toml"),
            ])
            .stderr(log)
            .spawn()
            .unwrap();
        lab.wait_ready("cpe");
        Self(child)
    }
}

impl Drop for OwnCpe {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        // Bounded: the CPE exits at once on SIGTERM; kill it otherwise.
        if !lab::wait::until(Duration::from_secs(10), || {
            self.0.try_wait().ok().flatten().is_some()
        }) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The HAG's persistent count for `link` (up + down bytes, this month).
fn hag_usage(lab: &Lab, link: &str) -> u64 {
    let (ok, out) = lab.tandem(&[
        "hag",
        "subscriber",
        "usage",
        "home-1",
        "--config",
        &lab.file("hag.toml"),
    ]);
    assert!(ok, "{out}");
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // subscriber, month, link, up, down, waived up, waived down
            if f.len() != 7 || f[2] != link {
                return None;
            }
            Some(f[3].parse::<u64>().ok()? + f[4].parse::<u64>().ok()?)
        })
        .sum()
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn mobile_budget_is_not_overrun_survives_restarts_and_rolls_over() {
    lab::require_root();
    let lab = Lab::up("bu", "suburban");
    let limit = 40_000_000u64;
    let cfg = lab.file("cpe.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{text}[steering]\nmode = \"aggregate\"\n[budget]\nmobile_bytes = {limit}\nreset_day = 1\nstate_file = \"{}\"\n",
            lab.file("budget.json")
        ),
    )
    .unwrap();
    // The calendar starts 60 s before 1 December 2026, 00:00 UTC.
    const DEC_1: i64 = 1_796_083_200;
    let started = Instant::now();
    let clock = || DEC_1 - 60 + started.elapsed().as_secs() as i64;
    let mut cpe = OwnCpe::start(&lab, None, clock());
    let m = |series: &str| metric(&lab.metrics("cpe"), series);
    let lte_both = || {
        let (d, u) = lab::topology::link_bytes(&lab.name, Link::Lte).unwrap();
        d + u
    };
    let hag_before = hag_usage(&lab, "lte");

    // Spend the budget with a bulk download: it completes (no hard cut)
    // and the mobile link stops at the budget.
    let l0 = lte_both();
    let size = 70_000_000;
    let got = fetch_ok(&lab, &format!("/bytes/{size}"), size);
    let on_lte = lte_both() - l0;
    let used = m("tandem_cpe_budget_used_bytes");
    println!(
        "budget {limit}: the mobile link carried {on_lte} B ({:.2} %), the CPE counted {used}; download {:.1} Mbit/s",
        on_lte as f64 * 100.0 / limit as f64,
        got.mbit()
    );
    assert_eq!(m("tandem_cpe_budget_exhausted"), 1.0);
    assert_eq!(m("tandem_cpe_mobile_standby"), 1.0);
    assert!(
        on_lte as f64 <= limit as f64 * 1.01,
        "budget overrun: {on_lte} of {limit}"
    );
    // It stops near the budget: early by about half a second at the link's
    // rate (the projection that keeps the overrun under 1 %).
    assert!(used >= limit as f64 * 0.8, "stopped early: {used}");
    // Spent: traffic stays on the fixed line.
    let size = 10_000_000;
    let (_, share) = mobile_share(&lab, || fetch_ok(&lab, &format!("/bytes/{size}"), size));
    assert!(share < 0.01, "mobile share after the budget: {share}");

    // The HAG counted the mobile bytes too (payload only: a little less
    // than the link's own counters), and keeps them across its restart.
    assert!(lab::wait::until(Duration::from_secs(5), || {
        hag_usage(&lab, "lte") - hag_before > limit * 8 / 10
    }));
    let hag_lte = hag_usage(&lab, "lte");
    println!(
        "the HAG counted {} B on the mobile link",
        hag_lte - hag_before
    );
    assert!((hag_lte - hag_before) as f64 <= on_lte as f64 * 1.02);
    let hag_pid = lab.pid("hag");
    lab.signal("hag", nix::sys::signal::Signal::SIGTERM);
    assert!(lab::wait::until(Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{hag_pid}")).exists()
    }));
    let mut hag = lab.spawn_tandem("hag", &["hag", "run", "--config", &lab.file("hag.toml")]);
    lab.wait_ready("hag");
    assert_eq!(
        hag_usage(&lab, "lte"),
        hag_lte,
        "the HAG lost usage across its restart"
    );

    // A CPE restart mid-month keeps the count and the spent state.
    let before = m("tandem_cpe_budget_used_bytes");
    cpe = OwnCpe::start(&lab, Some(cpe), clock());
    assert!(m("tandem_cpe_budget_used_bytes") >= before);
    assert_eq!(m("tandem_cpe_budget_exhausted"), 1.0);
    assert_eq!(m("tandem_cpe_mobile_standby"), 1.0);

    // 1 December: a new period, the count starts again, the mobile link is
    // used again.
    assert!(
        lab::wait::until(Duration::from_secs(60), || m("tandem_cpe_budget_exhausted")
            == 0.0),
        "no rollover (clock {})",
        clock()
    );
    assert!(m("tandem_cpe_budget_used_bytes") < 1_000_000.0);
    assert!(lab::wait::until(Duration::from_secs(3), || m(
        "tandem_cpe_mobile_standby"
    ) == 0.0));
    let size = 20_000_000;
    let (_, share) = mobile_share(&lab, || fetch_ok(&lab, &format!("/bytes/{size}"), size));
    assert!(share > 0.3, "mobile share in the new period: {share}");
    drop(cpe);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hag.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = hag.wait();
}

/// A UDP echo on the "internet" that answers each datagram with the address
/// it came from (so the home sees which link its flow used); stops when
/// `stop` is set (it wakes every 100 ms to look).
fn udp_echo(lab: &Lab, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    lab.spawn_in_ns("net", move || {
        let s = std::net::UdpSocket::bind("203.0.113.10:7").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = s.recv_from(&mut buf) {
                let mut reply = buf[..n.min(8)].to_vec();
                reply.extend_from_slice(peer.ip().to_string().as_bytes());
                let _ = s.send_to(&reply, peer);
            }
        }
    })
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn udp_and_dns_leave_on_the_fixed_line_and_fail_over_to_mobile() {
    lab::require_root();
    let lab = Lab::up("ud", "rural");
    let stop = Arc::new(AtomicBool::new(false));
    let echo = udp_echo(&lab, stop.clone());
    // One datagram every 50 ms for 16 s; the replies say which address
    // (link) the flow was NATed to.
    let t0 = Instant::now();
    let client = lab.spawn_in_ns("home", move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect("203.0.113.10:7").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for seq in 0u64..320 {
            let _ = s.send(&seq.to_be_bytes());
            let until = Instant::now() + Duration::from_millis(50);
            while Instant::now() < until {
                if let Ok(n) = s.recv(&mut buf) {
                    if n > 8 {
                        got.push((
                            Instant::now(),
                            String::from_utf8_lossy(&buf[8..n]).into_owned(),
                        ));
                    }
                }
            }
        }
        got
    });
    // DNS through the shield, every 300 ms, all the while.
    let dns_stop = Arc::new(AtomicBool::new(false));
    let (ds, ns) = (dns_stop.clone(), lab.ns("home"));
    let dns = std::thread::spawn(move || {
        let (mut asked, mut failed) = (0, Vec::new());
        for i in 0..60 {
            if ds.load(Ordering::Relaxed) {
                break;
            }
            let out = lab::cmd::in_ns(&ns, ["dig", "+tries=2", "+time=1"])
                .arg(format!("n{i}.example.test"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            asked += 1;
            if !text.contains("status: NXDOMAIN") {
                failed.push(text);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        (asked, failed)
    });
    std::thread::sleep((t0 + Duration::from_secs(3)).saturating_duration_since(Instant::now()));
    let cut = Instant::now();
    link_cmd(&lab, "dsl", "blackhole");
    std::thread::sleep((t0 + Duration::from_secs(9)).saturating_duration_since(Instant::now()));
    let restored = Instant::now();
    link_cmd(&lab, "dsl", "restore");
    let got = client.join().unwrap();
    dns_stop.store(true, Ordering::Relaxed);
    let (asked, failed) = dns.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();

    let before: Vec<_> = got.iter().filter(|(t, _)| *t < cut).collect();
    assert!(before.len() > 30, "UDP did not work before the cut");
    assert!(
        before.iter().all(|(_, a)| a == "10.64.1.2"),
        "UDP must leave on the fixed line"
    );
    let moved = got
        .iter()
        .find(|(t, a)| *t > cut && a == "10.64.2.2")
        .map(|(t, _)| *t - cut);
    let back = got
        .iter()
        .find(|(t, a)| *t > restored && a == "10.64.1.2")
        .map(|(t, _)| *t - restored);
    println!("UDP on the mobile link {moved:?} after the cut, back on the fixed line {back:?} after the restore; DNS: {} of {asked} failed", failed.len());
    assert!(
        moved.is_some_and(|d| d < Duration::from_secs(1)),
        "UDP not on the mobile link within 1 s: {moved:?}"
    );
    assert!(
        got.iter()
            .filter(|(t, _)| *t > cut + Duration::from_secs(1) && *t < restored)
            .all(|(_, a)| a == "10.64.2.2"),
        "UDP during the outage must use the mobile link"
    );
    assert!(
        back.is_some_and(|d| d < Duration::from_secs(2)),
        "UDP did not come back to the fixed line: {back:?}"
    );
    assert!(asked >= 20, "DNS loop ran {asked} times");
    assert!(
        failed.is_empty(),
        "DNS failed during the failover: {failed:?}"
    );
    assert!(lab.log("cpe.log").contains("moved to the other link"));
}

/// A TCP server on the "internet" that answers each connection with the
/// address it came from; stops when `stop` is set.
fn tcp_whoami(lab: &Lab, ports: &'static [u16], stop: Arc<AtomicBool>) -> JoinHandle<()> {
    lab.spawn_in_ns("net", move || {
        let ls: Vec<_> = ports
            .iter()
            .map(|p| {
                let l = std::net::TcpListener::bind(("203.0.113.10", *p)).unwrap();
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect();
        while !stop.load(Ordering::Relaxed) {
            for l in &ls {
                if let Ok((mut s, peer)) = l.accept() {
                    let _ = s.write_all(format!("{}\n", peer.ip()).as_bytes());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// From the home, connects to `port` (with DSCP `dscp` if given) and
/// returns the address the server saw.
fn whoami(lab: &Lab, port: u16, dscp: Option<u32>) -> String {
    lab.in_ns("home", move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if let Some(d) = dscp {
            s.set_tos_v4(d << 2).unwrap();
        }
        let addr: std::net::SocketAddr = ([203, 0, 113, 10], port).into();
        s.connect_timeout(&addr.into(), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("port {port}: {e}"));
        let mut s: TcpStream = s.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.trim().to_string()
    })
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn bypass_rules_keep_classes_off_the_hag_and_on_their_link() {
    lab::require_root();
    let lab = Lab::up("by", "fast");
    let stop = Arc::new(AtomicBool::new(false));
    let server = tcp_whoami(&lab, &[9, 10, 11, 12], stop.clone());
    // Through the HAG, the server sees the HAG's address.
    assert_eq!(whoami(&lab, 10, None), "203.0.113.1");
    lab.reconfigure_cpe(|t| {
        format!(
            "{t}[[bypass]]\nname = \"direct\"\nports = [9]\n\
             [[bypass]]\nname = \"mobile-only\"\nports = [11]\nlink = \"lte\"\n\
             [[bypass]]\nname = \"voice\"\ndscp = [46]\nlink = \"dsl\"\n"
        )
    });
    assert!(lab::wait::until(Duration::from_secs(3), || lab
        .log("cpe.log")
        .contains("interception rules updated")));
    let relayed = || metric(&lab.metrics("hag"), "tandem_hag_relayed_total");
    let before = relayed();
    // Bypassed: straight out, NATed to the fixed line's address.
    assert_eq!(whoami(&lab, 9, None), "10.64.1.2");
    // Pinned to the mobile link.
    assert_eq!(whoami(&lab, 11, None), "10.64.2.2");
    // By DSCP (EF, 46): direct on the fixed line; the same port without it
    // goes through the HAG.
    assert_eq!(whoami(&lab, 12, Some(46)), "10.64.1.2");
    assert_eq!(
        relayed(),
        before,
        "a bypassed connection went through the HAG"
    );
    assert_eq!(whoami(&lab, 12, None), "203.0.113.1");
    assert!(relayed() > before);
    let rules = lab.ok("cpe", &["nft", "list", "table", "inet", "tandem_cpe"]);
    assert!(rules.contains("bypass voice"), "{rules}");
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}
