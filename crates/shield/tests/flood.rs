//! Flood resistance in network namespaces: an attacker namespace sends a
//! bounded flood of queries with spoofed sources (a victim network's
//! addresses; the answers would go back toward it) while a legitimate
//! client in its own namespace resolves with dig. The client must get at
//! least 99 % of its answers, and the shield must send no more bytes
//! toward the spoofed sources than the flood brought in.

mod common;
use common::*;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};

/// A network namespace deleted on drop (its veths go with it).
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("shf{tag}{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Self(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn link(a: &Netns, a_if: &str, a_ip: &str, b: &Netns, b_if: &str, b_ip: &str) {
    sh(&format!(
        "ip link add {a_if} netns {} type veth peer name {b_if} netns {}",
        a.0, b.0
    ));
    sh(&format!("ip -n {} addr add {a_ip} dev {a_if}", a.0));
    sh(&format!("ip -n {} addr add {b_ip} dev {b_if}", b.0));
    sh(&format!("ip -n {} link set {a_if} up", a.0));
    sh(&format!("ip -n {} link set {b_if} up", b.0));
}

fn counter(ns: &Netns, dev: &str, what: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "cat"])
        .arg(format!("/sys/class/net/{dev}/statistics/{what}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Sends `count` queries at about `pps` from spoofed sources in
/// 10.77.5.0/24, from inside the attacker namespace.
fn flood(ns: String, target: SocketAddr, count: usize, pps: u64) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        lab::netns::enter(&ns).unwrap();
        let mut socks = Vec::new();
        for host in 1..=64u8 {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .unwrap();
            // Sending from an address that is not ours: the spoof.
            s.set_ip_transparent_v4(true).unwrap();
            let src = SocketAddrV4::new(Ipv4Addr::new(10, 77, 5, host), 40_000 + u16::from(host));
            s.bind(&src.into()).unwrap();
            socks.push(s);
        }
        let queries: Vec<Vec<u8>> = [
            ("big.shield.test.", RecordType::TXT),
            ("www.shield.test.", RecordType::A),
            ("shield.test.", RecordType::ANY),
            ("login.phish.shield.test.", RecordType::A),
        ]
        .iter()
        .map(|(n, t)| {
            let mut m = Message::query();
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(Name::from_ascii(n).unwrap(), *t));
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.set_edns(e);
            m.to_vec().unwrap()
        })
        .collect();
        let start = Instant::now();
        let mut sent = 0;
        for i in 0..count {
            let s = &socks[i % socks.len()];
            let q = &queries[i % queries.len()];
            if s.send_to(q, &target.into()).is_ok() {
                sent += 1;
            }
            // Pace: stay near `pps`, bounded in time by count / pps.
            let due = Duration::from_micros(i as u64 * 1_000_000 / pps);
            let el = start.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
        sent
    })
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn spoofed_flood_leaves_real_clients_answered_without_amplification() {
    lab::require_root();
    let shield_ns = Netns::new("s");
    let client_ns = Netns::new("c");
    let attacker_ns = Netns::new("a");
    link(
        &shield_ns,
        "tocl",
        "10.201.1.1/24",
        &client_ns,
        "tosh",
        "10.201.1.10/24",
    );
    link(
        &shield_ns,
        "toat",
        "10.201.2.1/24",
        &attacker_ns,
        "tosh",
        "10.201.2.10/24",
    );
    sh(&format!(
        "ip -n {} route add default via 10.201.1.1",
        client_ns.0
    ));
    sh(&format!(
        "ip -n {} route add default via 10.201.2.1",
        attacker_ns.0
    ));
    // Answers to the spoofed (victim) network leave through the attacker link.
    sh(&format!(
        "ip -n {} route add 10.77.0.0/16 via 10.201.2.10",
        shield_ns.0
    ));

    let dir = TempDir::new("flood");
    let nsd_addr: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let mut zone = SHIELD_TEST_ZONE.to_string();
    zone.push_str(&big_txt_records());
    let _nsd = start_nsd(&dir, nsd_addr, &[("shield.test", zone)], Some(&shield_ns.0));
    write(&dir.path("feed.txt"), "login.phish.shield.test\n");
    let cfg = format!(
        r#"listen = ["10.201.1.1:53", "10.201.2.1:53"]
subscriber_prefixes = ["10.201.1.0/24", "10.77.0.0/16"]
admin_listen = "127.0.0.1:0"
udp_workers = 2
[upstream]
servers = ["{nsd_addr}"]
[warning]
ipv4 = "10.201.1.80"
http_listen = ["127.0.0.1:0"]
[limits]
rrl_responses_per_second = 20
rrl_slip = 2
client_queries_per_second = 50
client_burst = 100
[[lists]]
name = "feed"
kind = "domains"
path = "{}"
"#,
        dir.path("feed.txt").display()
    );
    let s = Shield::start_in(Some(&shield_ns.0), &cfg);
    let server: SocketAddr = "10.201.1.1:53".parse().unwrap();
    // Warm the cache.
    let d = dig(Some(&client_ns.0), server, &["big.shield.test", "TXT"]);
    assert_eq!(d.answers.len(), 12, "{}", d.raw);

    let rx0 = counter(&shield_ns, "toat", "rx_bytes");
    let tx0 = counter(&shield_ns, "toat", "tx_bytes");
    let flood_n = 30_000;
    let attacker = flood(
        attacker_ns.0.clone(),
        "10.201.2.1:53".parse().unwrap(),
        flood_n,
        6_000,
    );

    // Meanwhile, the real client resolves 200 names with dig (batch mode).
    let names = [
        "www.shield.test A",
        "alias.shield.test A",
        "big.shield.test TXT",
        "login.phish.shield.test A",
    ];
    let batch: String = (0..200)
        .map(|i| format!("{}\n", names[i % names.len()]))
        .collect();
    write(&dir.path("batch"), &batch);
    let out = in_ns(Some(&client_ns.0), "dig")
        .args(["@10.201.1.1", "+tries=2", "+time=1", "-f"])
        .arg(dir.path("batch"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let answered = text.matches("status: NOERROR").count();
    let sent = attacker.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let rx = counter(&shield_ns, "toat", "rx_bytes") - rx0;
    let tx = counter(&shield_ns, "toat", "tx_bytes") - tx0;
    let slipped = s.metric("tandem_shield_rrl_slipped_total");
    println!(
        "flood: {sent} queries, {rx} bytes in, {tx} bytes out ({:.3}x); {slipped} slipped; \
         client: {answered}/200 answered",
        tx as f64 / rx.max(1) as f64
    );
    assert!(sent >= flood_n * 99 / 100, "the flood ran: {sent}");
    assert!(rx > 1_000_000, "the flood reached the shield: {rx} bytes");
    assert!(answered >= 198, "client got {answered}/200:\n{text}");
    assert!(tx <= rx, "amplification: {tx} bytes out for {rx} in");
    assert!(slipped > 0.0, "RRL slip never triggered");
}
