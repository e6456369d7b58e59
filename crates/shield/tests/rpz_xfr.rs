//! RPZ from a real primary (Knot DNS): AXFR at start, IXFR on NOTIFY, a
//! 10,000-entry IXFR applied while a client keeps querying — and not one
//! of its queries fails during the swaps.

mod common;
use common::*;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

/// Queries `names` in turn until `stop`, one at a time, each with a 1 s
/// deadline; counts the queries and the failures: no answer, or an answer
/// whose response code is not one of those allowed for that name (a
/// SERVFAIL during a swap is a failed query).
fn load(
    server: SocketAddr,
    src: &str,
    names: Vec<(&'static str, Vec<ResponseCode>)>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let sock = UdpSocket::bind(format!("{src}:0")).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut i = 0u16;
        while !stop.load(Ordering::Relaxed) {
            i = i.wrapping_add(1);
            let mut m = Message::query();
            m.metadata.id = i;
            m.metadata.recursion_desired = true;
            let (name, allowed) = &names[i as usize % names.len()];
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            sock.send_to(&m.to_vec().unwrap(), server).unwrap();
            sent.fetch_add(1, Ordering::Relaxed);
            let ok = loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) => match Message::from_vec(&buf[..n]) {
                        Ok(r) if r.metadata.id == i => {
                            let good = allowed.contains(&r.metadata.response_code);
                            if !good {
                                eprintln!("{name}: {:?}", r.metadata.response_code);
                            }
                            break good;
                        }
                        _ => continue,
                    },
                    Err(_) => break false,
                }
            };
            if !ok {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// The shield's configuration tail: no rate limits (the test's own load
/// must not be limited), and the RPZ zone `rpz.test` from `primary`.
fn rpz_list(primary: SocketAddr, refresh_secs: u32) -> String {
    format!(
        "[limits]\nclient_queries_per_second = 0\nrrl_responses_per_second = 0\n\n\
         [[lists]]\nname = \"rpz\"\nkind = \"rpz\"\nprimary = \"{primary}\"\nzone = \"rpz.test\"\nrefresh_secs = {refresh_secs}\n"
    )
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn axfr_then_ixfr_on_notify_with_zero_failed_queries() {
    lab::require_root();
    let net = net(4);
    let dir = TempDir::new("rpzxfr");
    let (_nsd, nsd_addr) = start_test_nsd(&net, &dir);
    let knot_addr = addr(&net, 3, free_port(&format!("{net}.3")));
    // The shield's DNS port must be known before Knot starts (NOTIFY).
    let shield_port = free_port(&format!("{net}.1"));
    let notify_to = addr(&net, 1, shield_port);
    let knot = Knot::start(
        &dir,
        knot_addr,
        "rpz.test",
        "first.phish.test CNAME .\n*.wild.phish.test CNAME rpz-drop.\n",
        1,
        notify_to,
    );
    let extra = rpz_list(knot_addr, 3600);
    let cfg = config(&net, &[nsd_addr], &extra).replace(
        &format!("listen = [\"{net}.1:0\"]"),
        &format!("listen = [\"{net}.1:{shield_port}\"]"),
    );
    let s = Shield::start(&cfg);
    wait_until("AXFR", Duration::from_secs(10), || s.policy.all_loaded());
    let src = format!("{net}.10");
    let q = |name: &str| dig(None, s.dns, &["-b", &src, name]);

    let d = q("first.phish.test");
    assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "{}", d.raw);
    assert!(d.ede.unwrap_or_default().contains("rpz"));
    assert!(q("x.wild.phish.test").timed_out);
    assert_eq!(q("www.shield.test").data(), vec!["192.0.2.10"]);

    // A client keeps querying a cached name, a blocked one and a name the
    // update will block, while the lists are swapped.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // What each name may get: before and after the update (the names no
    // list blocks are answered from upstream, which has no such zone).
    let unlisted = |name: &str| {
        let d = q(name);
        assert!(!d.timed_out, "{name}");
        let st = d.status.clone().unwrap_or_default();
        match st.as_str() {
            "NOERROR" => ResponseCode::NoError,
            "NXDOMAIN" => ResponseCode::NXDomain,
            "REFUSED" => ResponseCode::Refused,
            "SERVFAIL" => ResponseCode::ServFail,
            _ => panic!("{name}: {}", d.raw),
        }
    };
    let fresh = unlisted("n5000.ixfr.test");
    let other = unlisted("other.phish.test");
    let loader = load(
        s.dns,
        &src,
        vec![
            ("www.shield.test", vec![ResponseCode::NoError]),
            // Blocked by NXDOMAIN, then (removed) the upstream's answer.
            ("first.phish.test", vec![ResponseCode::NXDomain, other]),
            // The upstream's answer, then blocked by NXDOMAIN.
            ("n5000.ixfr.test", vec![fresh, ResponseCode::NXDomain]),
        ],
        stop.clone(),
        sent.clone(),
        failed.clone(),
    );

    // Serial 2: first.phish.test removed, 10,000 names added.
    let mut body = String::from("*.wild.phish.test CNAME rpz-drop.\n");
    for i in 0..10_000 {
        body.push_str(&format!("n{i}.ixfr.test CNAME .\n"));
    }
    knot.write_zone(2, &body);
    let updates_before = s.metric("tandem_shield_list_updates_total{list=\"rpz\"}");
    let t0 = Instant::now();
    knot.reload();
    wait_until("IXFR applied", Duration::from_secs(10), || {
        s.metric("tandem_shield_list_updates_total{list=\"rpz\"}") > updates_before
    });
    let applied = t0.elapsed();
    // The shield's own time for it: from the start of the transfer (on
    // NOTIFY) to the swap, without the primary's reload.
    let took = s.metric("tandem_shield_list_update_seconds{list=\"rpz\"}");
    println!("10,000-entry IXFR: primary reload to swap in {applied:?}; transfer + apply + swap {took:.3} s");
    assert_eq!(
        s.metric("tandem_shield_list_entries{list=\"rpz\"}"),
        10_001.0
    );
    let d = q("n9999.ixfr.test");
    assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "{}", d.raw);
    let d = q("first.phish.test");
    assert!(d.ede.is_none(), "removed by the IXFR: {}", d.raw);
    let log = std::fs::read_to_string(knot.dir.join("knot.log")).unwrap();
    assert!(
        log.contains("IXFR, outgoing"),
        "Knot served no IXFR:\n{log}"
    );

    // Serial 3: a few more changes, again by IXFR.
    body.push_str("late.phish.test CNAME *.\n");
    knot.write_zone(3, &body);
    knot.reload();
    wait_until("second IXFR", Duration::from_secs(10), || {
        q("late.phish.test").ede.is_some()
    });

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    let (n, f) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("queries during the swaps: {n}, unanswered: {f}");
    assert!(n > 100, "the load ran: {n}");
    assert_eq!(f, 0, "queries failed during the list swaps");
    assert!(took > 0.0 && took < 1.0, "10,000-entry IXFR took {took} s");
    assert!(applied < Duration::from_secs(5), "{applied:?}");
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn ixfr_on_the_refresh_timer_without_notify() {
    lab::require_root();
    let net = net(7);
    let dir = TempDir::new("rpzrefresh");
    let (_nsd, nsd_addr) = start_test_nsd(&net, &dir);
    let knot_addr = addr(&net, 3, free_port(&format!("{net}.3")));
    // Knot's NOTIFY goes to an address nobody serves: only the shield's own
    // refresh timer can bring the change.
    let nowhere = addr(&net, 99, free_port(&format!("{net}.99")));
    let knot = Knot::start(
        &dir,
        knot_addr,
        "rpz.test",
        "first.phish.test CNAME .\n",
        1,
        nowhere,
    );
    let extra = rpz_list(knot_addr, 2);
    let s = Shield::start(&config(&net, &[nsd_addr], &extra));
    wait_until("AXFR", Duration::from_secs(10), || s.policy.all_loaded());
    let src = format!("{net}.10");
    let q = |name: &str| dig(None, s.dns, &["-b", &src, name]);
    assert_eq!(q("first.phish.test").status.as_deref(), Some("NXDOMAIN"));
    assert!(q("second.phish.test").ede.is_none());

    knot.write_zone(2, "first.phish.test CNAME .\nsecond.phish.test CNAME .\n");
    knot.reload();
    let t = Instant::now();
    wait_until("IXFR on the refresh timer", Duration::from_secs(10), || {
        q("second.phish.test").ede.is_some()
    });
    println!("picked up by the 2 s refresh timer after {:?}", t.elapsed());
    let d = q("second.phish.test");
    assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "{}", d.raw);
    let log = std::fs::read_to_string(knot.dir.join("knot.log")).unwrap();
    assert!(
        log.contains("IXFR, outgoing"),
        "Knot served no IXFR:\n{log}"
    );
}
