//! The lab's own namespace and netlink plumbing against the real kernel:
//! namespaces created, listed, found running processes and deleted without
//! `ip`; a `Pair` wired and shaped over rtnetlink, checked with what a user
//! checks (bytes cross it, `ip route` shows the congestion control, `tc`
//! shows the class, the shaped rate is the rate asked for).
//!
//! Needs root: `#[ignore]`d, so `cargo test` lists them as ignored; `make
//! test` runs them (`--include-ignored`). Names carry the process id, and
//! every namespace goes in `Drop`, also when a test fails.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use lab::net::{self, Step};
use lab::netns;
use lab::topology::Pair;

/// Namespaces deleted on drop.
struct Gone(Vec<String>);

impl Drop for Gone {
    fn drop(&mut self) {
        for n in &self.0 {
            lab::topology::remove_namespace(n);
        }
    }
}

fn name(what: &str) -> String {
    format!("nl{what}{}", std::process::id())
}

fn ip(ns: &str, args: &[&str]) -> String {
    let mut v = vec!["-n", ns];
    v.extend_from_slice(args);
    lab::cmd::run("ip", &v).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn namespaces_are_created_listed_and_deleted() {
    lab::require_root();
    let n = name("a");
    let _gone = Gone(vec![n.clone()]);
    netns::create(&n).unwrap();
    assert!(netns::list().contains(&n), "{:?}", netns::list());
    assert!(netns::create(&n).is_err(), "a second namespace of one name");
    // `ip` sees it as its own, and it is a new namespace: only `lo`.
    let links = ip(&n, &["-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"), "{links}");
    // A process started in it is found there, and only there.
    let mut child = lab::cmd::in_ns(&n, ["sleep", "30"]).spawn().unwrap();
    let found = lab::wait::until(Duration::from_secs(5), || {
        netns::pids(&n).contains(&child.id())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "pid {} not in {:?}", child.id(), netns::pids(&n));
    assert!(!netns::pids(&n).contains(&std::process::id()));
    netns::delete(&n).unwrap();
    assert!(!netns::list().contains(&n));
    assert!(!netns::exists(&n));
    netns::delete(&n).expect("deleting twice is no error");
    assert!(netns::pids(&n).is_empty());
    assert!(netns::create("a/b").is_err());
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn a_pair_is_wired_and_shaped_at_the_rate_asked() {
    lab::require_root();
    let (a, b) = (name("pa"), name("pb"));
    let (a_ip, b_ip) = (Ipv4Addr::new(198, 18, 7, 1), Ipv4Addr::new(198, 18, 7, 2));
    let pair = Pair::build([&a, &b], "nl0", [a_ip, b_ip], 24).unwrap();
    let routes = ip(&a, &["route"]);
    assert!(
        routes.contains("198.18.7.0/24 dev nl0") && routes.contains("congctl cubic"),
        "{routes}"
    );
    assert!(routes.contains("src 198.18.7.1"), "{routes}");
    let local = ip(&b, &["route", "show", "table", "local"]);
    assert!(
        local
            .lines()
            .any(|l| l.starts_with("local 127.0.0.1 ") && l.contains("congctl cubic")),
        "{local}"
    );
    assert!(ip(&b, &["link", "show", "nl0"]).contains("state UP"));

    // 8 Mbit/s from b to a, as the lab shapes a link's direction.
    net::apply(
        &b,
        vec![Step::Shape {
            dev: "nl0".into(),
            kbit: 8000,
            limit_bytes: 50_000,
        }],
    )
    .unwrap();
    let class = lab::cmd::run("tc", &["-n", &b, "-d", "class", "show", "dev", "nl0"]).unwrap();
    assert!(
        class.contains("class htb 1:10 root leaf 10:")
            && class.contains("quantum 1514 rate 8Mbit ceil 8Mbit")
            && class.contains("burst 1600b"),
        "{class}"
    );
    let qdiscs = lab::cmd::run("tc", &["-n", &b, "qdisc", "show", "dev", "nl0"]).unwrap();
    assert!(
        qdiscs.contains("htb 1: root") && qdiscs.contains("default 0x10"),
        "{qdiscs}"
    );
    assert!(
        qdiscs.contains("bfifo 10: parent 1:10 limit 50000b"),
        "{qdiscs}"
    );

    // A transfer b → a for 2 s: the rate is the one asked for (generous
    // bounds: a kbit/kbyte or tick mistake is 8 or 64 times off), bytes
    // intact.
    let listener = netns::run_in(&a, move || TcpListener::bind((a_ip, 7001)))
        .unwrap()
        .unwrap();
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
        let (mut s, _) = listener.accept()?;
        let start = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok((n, start.elapsed())),
                k => {
                    assert!(buf[..k].iter().all(|&x| x == 0x5a), "bytes changed");
                    n += k as u64;
                }
            }
        }
    });
    let sent = netns::run_in(&b, move || -> std::io::Result<u64> {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((a_ip, 7001)), Duration::from_secs(5))?;
        let chunk = vec![0x5au8; 16 * 1024];
        let (start, mut n) = (Instant::now(), 0u64);
        while start.elapsed() < Duration::from_secs(2) {
            s.write_all(&chunk)?;
            n += chunk.len() as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(n)
    })
    .unwrap()
    .unwrap();
    let (received, took) = reader.join().unwrap().unwrap();
    assert_eq!(received, sent);
    // The socket buffers hold some of what was written: count the time
    // until the last byte arrived.
    let mbit = received as f64 * 8.0 / took.as_secs_f64() / 1e6;
    eprintln!("{mbit:.2} Mbit/s through an 8 Mbit/s shaper");
    assert!(
        (4.0..=12.0).contains(&mbit),
        "{mbit:.2} Mbit/s through an 8 Mbit/s shaper"
    );

    // Shaping again replaces what was there.
    net::apply(
        &b,
        vec![Step::Shape {
            dev: "nl0".into(),
            kbit: 2000,
            limit_bytes: 12_500,
        }],
    )
    .unwrap();
    let class = lab::cmd::run("tc", &["-n", &b, "class", "show", "dev", "nl0"]).unwrap();
    assert_eq!(class.lines().count(), 1, "{class}");
    assert!(class.contains("rate 2Mbit ceil 2Mbit"), "{class}");

    // The counters moved by what was sent.
    let bytes = net::link_bytes(&b, "nl0").unwrap();
    assert!(bytes.tx >= received, "{bytes:?} < {received}");

    drop(pair);
    assert!(!netns::exists(&a) && !netns::exists(&b));
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn kernel_refusals_name_the_namespace_and_operation() {
    lab::require_root();
    let n = name("e");
    let _gone = Gone(vec![n.clone()]);
    netns::create(&n).unwrap();
    let e = net::apply(&n, vec![Step::up("nosuch0")]).unwrap_err();
    let s = e.to_string();
    assert!(s.contains(&n) && s.contains("get link nosuch0"), "{s}");
    assert!(matches!(
        e,
        lab::LabError::Netlink { ref error, .. } if error.errno() == Some(19)
    ));
    let e = net::veth((&n, "x0"), ("nosuch-ns", "y0")).unwrap_err();
    assert!(e.to_string().contains("nosuch-ns"), "{e}");
}
