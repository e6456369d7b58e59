//! Resolution through a real upstream (NSD) with dig as the client: cache,
//! negative caching, truncation and TCP retry, upstream failover, refusal
//! of non-subscribers (no open resolver) and of ANY.

mod common;
use common::*;

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
    let nsd_addr = addr(&net, 53, free_port(&format!("{net}.53")));
    let _nsd = start_nsd(
        &dir,
        nsd_addr,
        &[("shield.test", SHIELD_TEST_ZONE.into())],
        None,
    );
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
