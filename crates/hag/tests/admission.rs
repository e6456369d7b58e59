//! The HAG's admission logic in-process on loopback, without root: a HAG
//! bound on 127.0.0.1 port 0 (`mptcp = false`), a plain TCP client sending
//! real Convert messages, and for each rule the RFC 8803 Error TLV received
//! and the `/metrics` refusal counter that moved.
//!
//! Loopback is always refused as a destination, so a full relay cannot run
//! here (the end-to-end tests in `crates/tandem/tests/` do that); what comes
//! after the destination check is tested with a destination that fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use convert_proto::{Connect, ErrorCode, Message, Tlv};
use hag::cookie::{Key, KeyRing};

const KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";

/// A HAG running on its own runtime; stopped on drop.
struct Hag {
    addr: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Hag {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Starts a HAG whose configuration is the loopback basics plus `extra`
/// (`@DIR@` is replaced by a fresh directory, for the registry).
fn start(tag: &str, extra: &str) -> Hag {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-admission-{tag}-"))
        .tempdir()
        .unwrap();
    let extra = extra.replace("@DIR@", &dir.path().display().to_string());
    let (top, tables) = match extra.find('[') {
        Some(i) if extra[..i].ends_with('\n') || i == 0 => extra.split_at(i),
        _ => (extra.as_str(), ""),
    };
    let access = if top.contains("subscriber_prefixes") {
        ""
    } else {
        "subscriber_prefixes = [\"127.0.0.0/8\"]\n"
    };
    let text = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nprobe = false\nmptcp = false\n\
         enable_fastopen_sysctl = false\ncongestion_control = \"reno\"\n{access}{top}\n\
         [timeouts]\nheader_ms = 1000\nconnect_ms = 300\n{tables}"
    );
    let config = hag::Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(hag::Server::bind(config)).unwrap();
    let (addr, admin) = (server.local_addr(), server.admin_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    rt.spawn(async move {
        let _keep = _reload_tx;
        server
            .serve(
                async {
                    let _ = rx.await;
                },
                reload_rx,
            )
            .await
    });
    Hag {
        addr,
        admin,
        dir,
        shutdown: Some(tx),
        rt: Some(rt),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `wire`, reads the reply until the HAG closes.
fn ask(addr: SocketAddr, wire: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(wire).unwrap();
    read_reply(&mut s)
}

/// Reads until one whole Convert message, the end of the stream or the
/// read timeout.
fn read_reply(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match Message::decode(&out) {
            Err(convert_proto::DecodeError::Incomplete { .. }) => {}
            _ => return out,
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The Error TLV's code in a reply (`None`: no error, or no reply).
fn code(reply: &[u8]) -> Option<ErrorCode> {
    let (m, _) = Message::decode(reply).ok()?;
    m.error().map(|e| e.code)
}

fn connect_msg(dest: &str, cookie: Option<&[u8]>) -> Vec<u8> {
    let mut tlvs = vec![Tlv::Connect(Connect::new(dest.parse().unwrap()))];
    if let Some(c) = cookie {
        tlvs.push(Tlv::Cookie(c.to_vec()));
    }
    Message { tlvs }.to_bytes()
}

/// A destination refused by no rule: used where a request must pass every
/// check (whether it then connects depends on the machine's network).
const PUBLIC: &str = "192.0.2.1:80";

impl Hag {
    fn metrics(&self) -> String {
        let mut s = connect(self.admin);
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: hag\r\nConnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&read_all(&mut s)).into_owned()
    }

    /// `tandem_hag_refused{reason}` now.
    fn refused(&self, reason: &str) -> u64 {
        let key = format!("tandem_hag_refused_total{{reason=\"{reason}\"}} ");
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(&key).and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Asserts the counter of `reason` reaches `n` (refusals are counted
    /// before the reply is written, but a silent close races the read).
    fn expect_refused(&self, reason: &str, n: u64) {
        assert!(
            lab::wait::until(Duration::from_secs(3), || self.refused(reason) == n),
            "refused{{reason={reason:?}}} = {}, want {n}\n{}",
            self.refused(reason),
            self.metrics()
        );
    }

    fn registry(&self) -> registry::Registry {
        registry::Registry::open(&self.dir.path().join("subs.db")).unwrap()
    }
}

fn ring() -> KeyRing {
    KeyRing {
        current: 1,
        keys: [(1, Key::from_hex(KEY).unwrap())].into(),
    }
}

fn cookie_for(id: u32) -> Vec<u8> {
    let now = hag::cookie::now_unix();
    ring().issue(id, now, now + 3600).unwrap().to_vec()
}

const COOKIES: &str = "registry = \"@DIR@/subs.db\"\n[auth]\nrequire_cookie = true\ncurrent_key = 1\n[[auth.keys]]\nid = 1\nsecret = \"0101010101010101010101010101010101010101010101010101010101010101\"\n";

#[test]
fn connections_must_come_to_a_service_address_from_the_access_networks() {
    // Listening on every address, serving only 127.0.0.2: 127.0.0.1 is
    // "internet-facing".
    let h = start("svc", "service_addresses = [\"127.0.0.2\"]\n");
    let port = h.addr.port();
    let r = ask(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &connect_msg(PUBLIC, None),
    );
    assert_eq!(code(&r), Some(ErrorCode::NOT_AUTHORIZED));
    h.expect_refused("not_service_address", 1);
    drop(h);

    let h = start("access", "subscriber_prefixes = [\"10.64.0.0/16\"]\n");
    let r = ask(h.addr, &connect_msg(PUBLIC, None));
    assert_eq!(code(&r), Some(ErrorCode::NOT_AUTHORIZED));
    h.expect_refused("outside_access_networks", 1);
}

#[test]
fn per_source_pending_and_global_limits() {
    let h = start(
        "source",
        "[limits]\nper_source_pending = 1\nbackoff_secs = 7\n",
    );
    let silent = connect(h.addr); // holds the source's one pending slot
    std::thread::sleep(Duration::from_millis(50));
    let r = ask(h.addr, &connect_msg(PUBLIC, None));
    let (m, _) = Message::decode(&r).unwrap();
    let e = m.error().unwrap();
    assert_eq!(
        (e.code, e.backoff_secs()),
        (ErrorCode::RESOURCE_EXCEEDED, Some(7))
    );
    h.expect_refused("limit_pending", 1);
    drop(silent);
    drop(h);

    let h = start("global", "[limits]\nmax_connections = 1\n");
    let _silent = connect(h.addr);
    std::thread::sleep(Duration::from_millis(50));
    let r = ask(h.addr, &connect_msg(PUBLIC, None));
    assert_eq!(code(&r), Some(ErrorCode::RESOURCE_EXCEEDED));
    h.expect_refused("limit_global", 1);
}

#[test]
fn invalid_messages_timeouts_and_info() {
    let h = start("msg", "");
    // Wrong magic: Malformed Message echoing what was received.
    let wire = [0x01, 0x01, 0x22, 0x64];
    let r = ask(h.addr, &wire);
    let (m, _) = Message::decode(&r).unwrap();
    let e = m.error().unwrap();
    assert_eq!(e.code, ErrorCode::MALFORMED_MESSAGE);
    assert_eq!(e.echoed_message(), Some(&wire[..]));
    h.expect_refused("invalid_message", 1);

    // Nothing sent: closed without a reply once the header deadline passes.
    let mut s = connect(h.addr);
    assert!(read_all(&mut s).is_empty());
    h.expect_refused("header_timeout", 1);

    // A message without Connect.
    let r = ask(h.addr, &Message { tlvs: vec![] }.to_bytes());
    assert_eq!(code(&r), Some(ErrorCode::MALFORMED_MESSAGE));
    h.expect_refused("no_connect", 1);

    // Info alone: the supported extensions, not a refusal.
    let r = ask(
        h.addr,
        &Message {
            tlvs: vec![Tlv::Info],
        }
        .to_bytes(),
    );
    let (m, _) = Message::decode(&r).unwrap();
    assert_eq!(m.supported_tcp_extensions(), Some(&[30u8][..]));
    assert!(m.error().is_none());
    assert_eq!(h.refused("no_connect"), 1);
}

#[test]
fn cookies_subscribers_revocation_and_source_acl() {
    let h = start("auth", COOKIES);
    let reg = h.registry();
    let home = reg.add("home-1", &[]).unwrap();
    let acl = reg
        .add("home-acl", &["10.9.0.0/16".parse().unwrap()])
        .unwrap();

    let r = ask(h.addr, &connect_msg(PUBLIC, None));
    assert_eq!(code(&r), Some(ErrorCode::MISSING_COOKIE));
    h.expect_refused("missing_cookie", 1);

    let mut forged = cookie_for(home.id);
    forged[20] ^= 1;
    let r = ask(h.addr, &connect_msg(PUBLIC, Some(&forged)));
    assert_eq!(code(&r), Some(ErrorCode::NOT_AUTHORIZED));
    h.expect_refused("invalid_cookie", 1);

    let r = ask(h.addr, &connect_msg(PUBLIC, Some(&cookie_for(9_999))));
    assert_eq!(code(&r), Some(ErrorCode::NOT_AUTHORIZED));
    h.expect_refused("unknown_subscriber", 1);

    // The HAG follows the registry file (polled each second).
    let good = cookie_for(home.id);
    let passes =
        || code(&ask(h.addr, &connect_msg(PUBLIC, Some(&good)))) != Some(ErrorCode::NOT_AUTHORIZED);
    assert!(
        lab::wait::until(Duration::from_secs(5), passes),
        "home-1 admitted"
    );
    assert_eq!(h.refused("revoked"), 0);
    reg.revoke("home-1").unwrap();
    assert!(
        lab::wait::until(Duration::from_secs(5), || !passes()),
        "home-1 refused once revoked"
    );
    assert!(h.refused("revoked") >= 1);

    let r = ask(h.addr, &connect_msg(PUBLIC, Some(&cookie_for(acl.id))));
    assert_eq!(code(&r), Some(ErrorCode::NOT_AUTHORIZED));
    h.expect_refused("source_not_allowed", 1);
}

#[test]
fn per_subscriber_rate_limit() {
    // 0.5 new connections per second: a burst of one.
    let h = start(
        "rate",
        &format!("{COOKIES}[limits]\nper_subscriber_rate = 0.5\n"),
    );
    let reg = h.registry();
    let home = reg.add("home-1", &[]).unwrap();
    let c = cookie_for(home.id);
    let first = || code(&ask(h.addr, &connect_msg("10.1.2.3:80", Some(&c))));
    // The registry snapshot is read at start and then every second.
    assert!(lab::wait::until(Duration::from_secs(5), || first()
        == Some(ErrorCode::NOT_AUTHORIZED)
        && h.refused("destination_denied") >= 1));
    let r = ask(h.addr, &connect_msg("10.1.2.3:80", Some(&c)));
    assert_eq!(code(&r), Some(ErrorCode::RESOURCE_EXCEEDED));
    assert!(h.refused("limit_rate") >= 1);
}

#[test]
fn destinations_refused_and_allowed() {
    let h = start(
        "dest",
        "local_addresses = [\"198.51.100.7\"]\nallow_destinations = [\"10.255.255.0/24\"]\n",
    );
    let refused = [
        "127.0.0.1:80",       // loopback
        "[::1]:443",          // loopback
        "198.51.100.7:80",    // the HAG itself
        "93.184.216.34:0",    // port 0
        "255.255.255.255:80", // broadcast
        "224.0.0.1:80",       // multicast
        "10.1.2.3:80",        // private
        "192.168.1.1:443",    // private
        "172.16.0.1:80",      // private
        "100.64.0.1:80",      // shared (CGNAT)
        "169.254.169.254:80", // link-local (cloud metadata)
        "[fc00::1]:80",       // unique local
    ];
    for (i, d) in refused.iter().enumerate() {
        let r = ask(h.addr, &connect_msg(d, None));
        assert_eq!(code(&r), Some(ErrorCode::NOT_AUTHORIZED), "{d}");
        h.expect_refused("destination_denied", i as u64 + 1);
    }
    // Allowed although private: tried. Whether it connects depends on the
    // machine's network: either the Convert reply (relayed) or the mapped
    // connect error, never Not Authorized.
    let r = ask(h.addr, &connect_msg("10.255.255.1:80", None));
    let (m, _) = Message::decode(&r).expect("a reply");
    match m.error() {
        None => assert!(lab::wait::until(Duration::from_secs(3), || h
            .metrics()
            .contains("tandem_hag_relayed_total 1"))),
        Some(e) => {
            assert!(
                [
                    ErrorCode::DESTINATION_UNREACHABLE,
                    ErrorCode::CONNECTION_RESET,
                    ErrorCode::NETWORK_FAILURE
                ]
                .contains(&e.code),
                "{:?}",
                e.code
            );
            h.expect_refused("destination_failed", 1);
        }
    }
    assert_eq!(h.refused("destination_denied"), refused.len() as u64);
}

#[test]
fn error_replies_over_their_rate_close_without_a_reply() {
    let h = start("replyrate", "[limits]\nerror_replies_per_sec = 0.0\n");
    let r = ask(h.addr, &connect_msg("127.0.0.1:80", None));
    assert!(r.is_empty(), "{r:?}");
    h.expect_refused("destination_denied", 1);
    h.expect_refused("error_reply_rate", 1);
}

/// A stand-in for ops on loopback: keeps every HAG report posted to it
/// (signature and body) and answers `204`.
fn fake_ops(
    rt: &tokio::runtime::Runtime,
) -> (SocketAddr, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use axum::routing::post;
    let (tx, rx) = std::sync::mpsc::channel();
    let app = axum::Router::new().route(
        "/api/v1/hag-reports",
        post(move |h: axum::http::HeaderMap, body: axum::body::Bytes| {
            let sig = h
                .get("x-tandem-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let _ = tx.send((sig, body.to_vec()));
            async { axum::http::StatusCode::NO_CONTENT }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

#[test]
fn reports_to_ops_are_signed_and_count_the_upstream_and_each_subscriber() {
    const TOKEN: &str = "hag-test-token-0123456789";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (ops, rx) = fake_ops(&rt);
    let h = start(
        "report",
        &format!(
            "{COOKIES}[telemetry]\nops = \"{ops}\"\nname = \"hag-1\"\ntoken = \"{TOKEN}\"\nperiod_s = 1\n"
        ),
    );
    let home = h.registry().add("home-1", &[]).unwrap();
    let good = cookie_for(home.id);
    // Admitted (the registry is polled each second), then its connection to
    // a destination that does not answer fails: an upstream error.
    assert!(
        lab::wait::until(Duration::from_secs(5), || {
            code(&ask(h.addr, &connect_msg(PUBLIC, Some(&good)))) != Some(ErrorCode::NOT_AUTHORIZED)
        }),
        "home-1 admitted"
    );
    let key = telemetry::key(TOKEN.as_bytes());
    let (mut connects, mut errors, mut last, mut listed) = (0, 0, 0, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && !(listed && errors >= 1) {
        let Ok((sig, body)) = rx.recv_timeout(Duration::from_secs(3)) else {
            break;
        };
        telemetry::verify(&key, &body, &sig).expect("signed with the HAG's token");
        let r = telemetry::HagReport::parse(&body).expect("a valid HAG report");
        assert_eq!(r.hag, "hag-1");
        assert!(
            r.sent_at_ms > last,
            "dated strictly later than the one before"
        );
        last = r.sent_at_ms;
        connects += r.upstream_connects;
        errors += r.upstream_errors;
        if let Some(s) = r.subscribers.iter().find(|s| s.subscriber == "home-1") {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let age = now.saturating_sub(s.last_seen_ms);
            assert!(age < 10_000, "last seen {age} ms ago");
            listed = true;
        }
    }
    assert!(listed, "home-1 listed in the HAG's reports");
    assert!(
        connects >= 1 && errors >= 1,
        "connects {connects}, errors {errors}"
    );
    let m = h.metrics();
    assert!(
        m.contains("tandem_hag_ops_reports_total{reason=\"delivered\"}"),
        "{m}"
    );
    drop(h);
    rt.shutdown_timeout(Duration::from_secs(2));
}
