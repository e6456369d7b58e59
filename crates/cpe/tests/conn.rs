//! The per-connection logic in-process, without root: a `cpe::Server`
//! with TPROXY, nftables, MPTCP and the WAN addresses turned off, a device
//! that connects to its listener on 127.0.0.1, and a fake HAG on 127.0.0.1
//! built with `convert_proto`.
//!
//! Without TPROXY the "original destination" is the listener's own address,
//! which is what the device connected to: the Connect TLV must name it.

use std::net::SocketAddr;
use std::time::Duration;

use convert_proto::{ErrorTlv, Message, Tlv};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const COOKIE: &str = "0011223344556677";

/// A configuration for loopback: no probes, no endpoints, no NAT.
fn config(hag: SocketAddr) -> cpe::Config {
    let text = format!(
        r#"
lan_interface = "lo"
hag = "{hag}"
admin_listen = "127.0.0.1:0"
first_data_wait_ms = 500
hag_reply_timeout_ms = 2000
manage_mptcp_endpoints = false
nat = false
# reno: the one algorithm every user may set (cubic needs CAP_NET_ADMIN
# where it is not in net.ipv4.tcp_allowed_congestion_control).
congestion_control = "reno"
cookie = "{COOKIE}"
[dsl]
interface = "dsl0"
address = "192.0.2.1"
down_kbit = 8000
up_kbit = 1000
[lte]
interface = "lte0"
address = "192.0.2.2"
[steering]
probes = false
"#
    );
    cpe::Config::from_toml(&text).unwrap()
}

fn loopback() -> cpe::Options {
    cpe::Options {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        transparent: false,
        intercept: false,
        mptcp: false,
        bind_wan: false,
    }
}

/// A running CPE: its listener's address and metrics; stops on drop.
struct Cpe {
    addr: SocketAddr,
    metrics: std::sync::Arc<cpe::Metrics>,
    _stop: tokio::sync::oneshot::Sender<()>,
    reload: tokio::sync::mpsc::Sender<cpe::Config>,
}

async fn start(hag: SocketAddr) -> Cpe {
    let server = cpe::Server::bind_with(config(hag), loopback())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let metrics = server.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (reload, reloads) = tokio::sync::mpsc::channel(1);
    tokio::spawn(server.serve(
        async move {
            let _ = stopped.await;
        },
        reloads,
    ));
    Cpe {
        addr,
        metrics,
        _stop: stop,
        reload,
    }
}

/// The CPE's connection to the (fake) HAG; a CPE that never dials fails
/// the test instead of hanging it.
async fn accept(hag: &TcpListener) -> TcpStream {
    tokio::time::timeout(Duration::from_secs(5), hag.accept())
        .await
        .expect("the CPE dialled the HAG within 5 s")
        .unwrap()
        .0
}

/// Reads one Convert message and then at least `more` bytes after it.
async fn read_convert(s: &mut TcpStream, more: usize) -> (Message, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        if let Ok((m, n)) = Message::decode(&buf) {
            if buf.len() - n >= more {
                return (m, buf[n..].to_vec());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("the CPE sent too little")
            .unwrap();
        assert!(n > 0, "the CPE closed after {} bytes", buf.len());
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the peer closes or resets; returns whether it was a reset.
async fn was_reset(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the CPE neither closed nor reset the device's connection")
        {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn metric(m: &cpe::Metrics, line: &str) -> bool {
    m.render().lines().any(|l| l == line)
}

#[tokio::test]
async fn convert_message_carries_destination_cookie_and_first_bytes_then_relays() {
    let hag = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cpe = start(hag.local_addr().unwrap()).await;
    let mut device = TcpStream::connect(cpe.addr).await.unwrap();
    device.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut up = accept(&hag).await;
    let (msg, first) = read_convert(&mut up, 16).await;
    assert_eq!(msg.connect().map(|c| c.remote), Some(cpe.addr));
    assert_eq!(msg.cookie(), Some(&hex::decode(COOKIE).unwrap()[..]));
    assert_eq!(
        first, b"GET / HTTP/1.1\r\n",
        "the first bytes follow the message"
    );
    // Reply with bytes after it: they reach the device first.
    let mut reply = Message::empty().to_bytes();
    reply.extend_from_slice(b"HTTP/1.1 200");
    up.write_all(&reply).await.unwrap();
    let mut got = [0u8; 12];
    device.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"HTTP/1.1 200");
    // Both ways, then a clean close.
    device.write_all(b"more").await.unwrap();
    let mut got = [0u8; 4];
    up.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"more");
    up.write_all(b" OK").await.unwrap();
    drop(up);
    let mut rest = Vec::new();
    device.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b" OK");
    assert!(metric(&cpe.metrics, "tandem_cpe_relayed_total 1"));
    assert!(metric(&cpe.metrics, "tandem_cpe_hag_reachable 1"));
}

#[tokio::test]
async fn an_error_tlv_from_the_hag_resets_the_device() {
    let hag = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cpe = start(hag.local_addr().unwrap()).await;
    let mut device = TcpStream::connect(cpe.addr).await.unwrap();
    device.write_all(b"hello").await.unwrap();
    let mut up = accept(&hag).await;
    let _ = read_convert(&mut up, 5).await;
    let refusal = Message::new(vec![Tlv::Error(ErrorTlv::not_authorized())]);
    up.write_all(&refusal.to_bytes()).await.unwrap();
    assert!(was_reset(&mut device).await, "the device must see a reset");
    assert!(metric(
        &cpe.metrics,
        "tandem_cpe_hag_errors_total{reason=\"not_authorized\"} 1"
    ));
    assert!(metric(&cpe.metrics, "tandem_cpe_relayed_total 0"));
}

#[tokio::test]
async fn an_unreachable_hag_is_counted_and_resets_the_device() {
    // A port nobody listens on: the SYN is answered with a reset.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hag = closed.local_addr().unwrap();
    drop(closed);
    let cpe = start(hag).await;
    let mut device = TcpStream::connect(cpe.addr).await.unwrap();
    device.write_all(b"hello").await.unwrap();
    assert!(was_reset(&mut device).await, "the device must see a reset");
    let text = cpe.metrics.render();
    let counted: u64 = text
        .lines()
        .filter(|l| l.starts_with("tandem_cpe_hag_unreachable_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, 1, "{text}");
    assert!(metric(&cpe.metrics, "tandem_cpe_hag_reachable 0"), "{text}");
}

#[tokio::test]
async fn a_silent_hag_times_out_and_resets_the_device() {
    let hag = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cpe = start(hag.local_addr().unwrap()).await;
    let mut device = TcpStream::connect(cpe.addr).await.unwrap();
    device.write_all(b"hello").await.unwrap();
    let _up = accept(&hag).await;
    // Never answers: after hag_reply_timeout_ms (2 s) the device is reset.
    assert!(was_reset(&mut device).await);
    assert!(metric(
        &cpe.metrics,
        "tandem_cpe_hag_unreachable_total{reason=\"timeout\"} 1"
    ));
}

#[tokio::test]
async fn a_reloaded_cookie_goes_out_on_the_next_connections() {
    let hag = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cpe = start(hag.local_addr().unwrap()).await;
    let mut new = config(hag.local_addr().unwrap());
    new.cookie = Some(vec![0xaa; 8]);
    cpe.reload.send(new).await.unwrap();
    // The reload is applied between accepts: within a few connections.
    for _ in 0..50 {
        let mut device = TcpStream::connect(cpe.addr).await.unwrap();
        device.write_all(b"x").await.unwrap();
        let mut up = accept(&hag).await;
        let (msg, _) = read_convert(&mut up, 1).await;
        if msg.cookie() == Some(&[0xaa; 8][..]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the reloaded cookie never went out");
}
