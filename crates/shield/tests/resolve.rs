//! Resolution through a real upstream (NSD) with dig as the client: cache,
//! negative caching, truncation and TCP retry, upstream failover, refusal
//! of non-subscribers (no open resolver) and of ANY.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn resolves_caches_truncates_and_fails_over() {
    let net = net(1);
    let dir = TempDir::new("resolve");
    let nsd_addr = addr(&net, 53, free_port(&format!("{net}.53")));
    let mut zone = SHIELD_TEST_ZONE.to_string();
    zone.push_str(&big_txt_records());
    let _nsd = start_nsd(&dir, nsd_addr, &[("shield.test", zone)], None);
    // The first upstream has nothing listening: the shield must fail over.
    let dead = addr(&net, 54, free_port(&format!("{net}.54")));
    let s = Shield::start(&config(&net, &[dead, nsd_addr], ""));
    let src = format!("{net}.10");
    let q = |args: &[&str]| {
        let mut a = vec!["-b", &src];
        a.extend_from_slice(args);
        dig(None, s.dns, &a)
    };

    let d = q(&["www.shield.test", "A"]);
    assert_eq!(d.status.as_deref(), Some("NOERROR"), "{}", d.raw);
    assert_eq!(d.data(), vec!["192.0.2.10"]);
    assert!(d.flags.contains("ra"), "{}", d.raw);
    assert!(d.ede.is_none());
    // ...after the dead first upstream failed (counted), not by luck.
    assert!(
        s.metric(&format!(
            "tandem_shield_upstream_failures_total{{upstream=\"{dead}\""
        )) >= 1.0,
        "{}",
        s.metrics.render()
    );

    // Second time from the cache, TTL counting down from 300.
    let before = s.metric("tandem_shield_answers_total{kind=\"cache\"}");
    let d = q(&["www.shield.test", "A"]);
    assert_eq!(d.data(), vec!["192.0.2.10"]);
    assert_eq!(
        s.metric("tandem_shield_answers_total{kind=\"cache\"}"),
        before + 1.0
    );
    let ttl: u32 = d.answers[0]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl <= 300);

    let d = q(&["alias.shield.test", "A"]);
    assert!(d.answers[0].contains("CNAME"), "{}", d.raw);
    assert_eq!(d.data().last().unwrap(), "192.0.2.10");

    let d = q(&["AAAA", "www.shield.test"]);
    assert_eq!(d.data(), vec!["2001:db8::10"]);

    // Negative caching (RFC 2308): the SOA minimum (30 s) bounds the TTL,
    // and the second NXDOMAIN comes from the cache.
    let d = q(&["nothing.shield.test", "A"]);
    assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "{}", d.raw);
    let before = s.metric("tandem_shield_answers_total{kind=\"cache\"}");
    let d = q(&["nothing.shield.test", "A"]);
    assert_eq!(d.status.as_deref(), Some("NXDOMAIN"));
    assert_eq!(
        s.metric("tandem_shield_answers_total{kind=\"cache\"}"),
        before + 1.0
    );
    let soa_ttl: u32 = d
        .raw
        .lines()
        .find(|l| l.contains("\tSOA\t"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(soa_ttl > 0 && soa_ttl <= 30, "{}", d.raw);

    // NODATA: a name with no record of that type.
    let d = q(&["TXT", "www.shield.test"]);
    assert_eq!(d.status.as_deref(), Some("NOERROR"));
    assert!(d.answers.is_empty());

    // Truncation: 12 x 180-byte TXT records do not fit in 1232 bytes. The
    // shield got them over TCP from NSD; over UDP the client sees TC...
    let d = q(&["big.shield.test", "TXT", "+ignore"]);
    assert!(d.flags.contains("tc"), "{}", d.raw);
    // ...and dig retries over TCP and gets all of them.
    let d = q(&["big.shield.test", "TXT"]);
    assert_eq!(d.answers.len(), 12, "{}", d.raw);
    let d = q(&["big.shield.test", "TXT", "+tcp"]);
    assert_eq!(d.answers.len(), 12, "{}", d.raw);

    // Without EDNS the limit is 512 bytes.
    let d = q(&["big.shield.test", "TXT", "+noedns", "+ignore"]);
    assert!(d.flags.contains("tc"), "{}", d.raw);

    // MX and name case preserved in the question.
    let d = q(&["MAIL.Shield.Test", "MX"]);
    assert_eq!(d.status.as_deref(), Some("NOERROR"));
    assert!(d.raw.contains("MAIL.Shield.Test."), "{}", d.raw);
}

#[test]
fn refuses_strangers_any_and_transfers() {
    let net = net(2);
    let dir = TempDir::new("refuse");
    let (_nsd, nsd_addr) = start_test_nsd(&net, &dir);
    let s = Shield::start(&config(&net, &[nsd_addr], ""));

    // Subscribers are <net>.0/25; <net>.200 is not one: no open resolver.
    let stranger = format!("{net}.200");
    let d = dig(None, s.dns, &["-b", &stranger, "www.shield.test"]);
    assert_eq!(d.status.as_deref(), Some("REFUSED"), "{}", d.raw);
    assert!(d.answers.is_empty());
    let d = dig(None, s.dns, &["-b", &stranger, "+tcp", "www.shield.test"]);
    assert_eq!(d.status.as_deref(), Some("REFUSED"), "{}", d.raw);
    // Not even a cached name leaks.
    let sub = format!("{net}.10");
    assert_eq!(
        dig(None, s.dns, &["-b", &sub, "www.shield.test"]).data(),
        vec!["192.0.2.10"]
    );
    let d = dig(None, s.dns, &["-b", &stranger, "www.shield.test"]);
    assert_eq!(d.status.as_deref(), Some("REFUSED"));
    assert!(s.metric("tandem_shield_answers_total{kind=\"refused\"}") >= 3.0);

    // ANY is refused, with EDE 21 (Not Supported).
    let d = dig(None, s.dns, &["-b", &sub, "www.shield.test", "ANY"]);
    assert_eq!(d.status.as_deref(), Some("REFUSED"), "{}", d.raw);
    assert!(
        d.ede.as_deref().unwrap_or("").starts_with("21"),
        "{}",
        d.raw
    );

    // Zone transfers are refused.
    let d = dig(None, s.dns, &["-b", &sub, "shield.test", "AXFR"]);
    assert!(
        !d.timed_out,
        "an AXFR must be answered (refused): {}",
        d.raw
    );
    assert!(!d.raw.contains("\tSOA\t"), "{}", d.raw);

    // The admin endpoints answer.
    let out = std::process::Command::new("curl")
        .args(["-sS", &format!("http://{}/ready", s.admin)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");
    let out = std::process::Command::new("curl")
        .args(["-sS", &format!("http://{}/metrics", s.admin)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("tandem_shield_queries_total"));
}

/// A TCP connection from `src` to the shield.
fn tcp_from(src: &str, server: std::net::SocketAddr) -> std::net::TcpStream {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    s.bind(
        &format!("{src}:0")
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    s.connect_timeout(&server.into(), Duration::from_secs(5))
        .unwrap();
    let s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends one query over DNS-over-TCP framing; returns the reply's rcode and
/// answer count, or None when the shield closed the connection instead.
fn tcp_query(s: &mut std::net::TcpStream, name: &str, id: u16) -> Option<(String, usize)> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::io::{Read, Write};
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let q = m.to_vec().unwrap();
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&q);
    s.write_all(&out).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    let r = Message::from_vec(&buf).ok()?;
    assert_eq!(r.metadata.id, id);
    Some((format!("{:?}", r.metadata.response_code), r.answers.len()))
}

/// Whether the server closed `s` (EOF or reset) within its read timeout.
fn closed_by_server(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn tcp_connections_are_bounded_and_idle_ones_closed() {
    let net = net(6);
    let dir = TempDir::new("tcplimit");
    let (_nsd, nsd_addr) = start_test_nsd(&net, &dir);
    let s = Shield::start(&config(
        &net,
        &[nsd_addr],
        "[limits]\ntcp_max_connections = 3\ntcp_idle_timeout_secs = 2\n",
    ));
    let src = format!("{net}.10");
    // Three connections are served, several queries each.
    let mut held: Vec<_> = (0..3).map(|_| tcp_from(&src, s.dns)).collect();
    for (i, c) in held.iter_mut().enumerate() {
        for k in 0..2u16 {
            let r = tcp_query(c, "www.shield.test", (i as u16) * 10 + k);
            assert_eq!(r, Some(("NoError".to_string(), 1)), "connection {i}");
        }
    }
    // The fourth is closed at once, without an answer, and counted.
    let refused_before = s.metric("tandem_shield_tcp_refused_total");
    let mut fourth = tcp_from(&src, s.dns);
    assert_eq!(tcp_query(&mut fourth, "www.shield.test", 99), None);
    assert_eq!(
        s.metric("tandem_shield_tcp_refused_total"),
        refused_before + 1.0
    );
    // Idle for longer than the timeout: the shield closes them all...
    let t = std::time::Instant::now();
    for c in &mut held {
        assert!(closed_by_server(c), "an idle connection was kept open");
    }
    let idle = t.elapsed();
    println!("idle connections closed after {idle:?}");
    assert!(
        idle >= Duration::from_millis(1500),
        "closed before the idle timeout: {idle:?}"
    );
    // ...which frees their slots for new clients.
    wait_until("slots freed", Duration::from_secs(5), || {
        s.metric("tandem_shield_tcp_connections") == 0.0
    });
    let mut again = tcp_from(&src, s.dns);
    assert_eq!(
        tcp_query(&mut again, "www.shield.test", 100),
        Some(("NoError".to_string(), 1))
    );
}
