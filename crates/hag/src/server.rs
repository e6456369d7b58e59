//! The Convert service: accept, read the Convert message, authorise, connect
//! to the destination, reply, relay.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use convert_proto::{ErrorTlv, Message, Tlv};
use relay::{PreambleError, RelayEnd, RelayOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn, Instrument};

use crate::config::Config;
use crate::metrics::{DirLabel, Metrics};

/// Shared state of the running service.
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) local: HashSet<IpAddr>,
    pub(crate) slots: Arc<Semaphore>,
}

/// Why a destination is refused before any connection attempt.
fn refused_destination(state: &State, dest: &SocketAddr) -> Option<&'static str> {
    let ip = dest.ip().to_canonical();
    if dest.port() == 0 {
        return Some("port 0");
    }
    if ip.is_loopback() || ip.is_unspecified() {
        return Some("loopback or unspecified");
    }
    if ip.is_multicast() {
        return Some("multicast");
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Some("broadcast");
        }
    }
    if state.local.contains(&ip) {
        return Some("the HAG itself");
    }
    if state
        .config
        .deny_destinations
        .iter()
        .any(|n| n.contains(&ip))
    {
        return Some("denied prefix");
    }
    None
}

fn is_subscriber(state: &State, peer: &SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    state
        .config
        .subscriber_prefixes
        .iter()
        .any(|n| n.contains(&ip))
}

/// Maps a failed connection attempt to the RFC 8803 error.
fn connect_error(e: &io::Error) -> ErrorTlv {
    // ICMP destination-unreachable codes: 0 net, 1 host.
    match e.raw_os_error() {
        Some(libc_errno::ECONNREFUSED) => ErrorTlv::connection_reset(),
        Some(libc_errno::ENETUNREACH) => ErrorTlv::destination_unreachable(0),
        Some(libc_errno::EHOSTUNREACH) => ErrorTlv::destination_unreachable(1),
        _ if e.kind() == io::ErrorKind::TimedOut => ErrorTlv::destination_unreachable(1),
        _ => ErrorTlv::network_failure(0),
    }
}

/// errno values used above (from nix, which re-exports libc's).
mod libc_errno {
    pub(super) const ECONNREFUSED: i32 = nix::errno::Errno::ECONNREFUSED as i32;
    pub(super) const ENETUNREACH: i32 = nix::errno::Errno::ENETUNREACH as i32;
    pub(super) const EHOSTUNREACH: i32 = nix::errno::Errno::EHOSTUNREACH as i32;
}

/// Sends an Error TLV in the byte stream, then closes with FIN.
async fn send_error(stream: &mut TcpStream, err: ErrorTlv, metrics: &Metrics) {
    let name = err.code.name();
    metrics.error_sent(&name.to_lowercase().replace(' ', "_"));
    let msg = Message {
        tlvs: vec![Tlv::Error(err)],
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let _ = stream.write_all(&msg.to_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The reply after the destination accepted. RFC 8803 section 4.2.3 has the
/// converter return the TCP options of the server's SYN+ACK in an Extended
/// TCP Header TLV; this kernel does not hand the SYN+ACK to userspace, so the
/// HAG answers with the bare Convert header (no TLV): the client knows the
/// destination accepted and sees that no error follows.
fn success_reply() -> Message {
    Message::default()
}

/// Waits (at most 3 s) until an MPTCP connection accepted with data in the
/// SYN is fully established (the client's third ACK, carrying the keys, has
/// arrived).
///
/// Linux 6.18 does not push data written on a Fast Open MPTCP socket before
/// that ACK: it stays queued until the client sends something else, which in
/// a request/response exchange never comes. Measured in the lab: the reply
/// left only when the client gave up. Waiting here costs nothing in the usual
/// case, since it overlaps with connecting to the destination (which takes at
/// least one round trip beyond the HAG).
async fn fully_established(down: &TcpStream) {
    let until = Instant::now() + std::time::Duration::from_secs(3);
    while Instant::now() < until {
        match mptcp_sock::info::mptcp_info(down) {
            Ok(i) if !i.remote_key_received() && !i.fallback() => {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            _ => return, // established, fallen back, or plain TCP
        }
    }
}

async fn connect_upstream(state: &State, dest: SocketAddr) -> io::Result<TcpStream> {
    let sock = if dest.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Err(e) = mptcp_sock::set_congestion(&sock, &state.config.congestion_control) {
        debug!(
            "congestion control {}: {e}",
            state.config.congestion_control
        );
    }
    sock.set_nodelay(true)?;
    match tokio::time::timeout(state.config.connect_timeout, sock.connect(dest)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// Serves one accepted connection to its end.
async fn serve(state: Arc<State>, mut down: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let m = &state.metrics;
    if mptcp_sock::info::syn_data(&down).unwrap_or(false) {
        m.syn_data.inc();
    }
    if !is_subscriber(&state, &peer) {
        warn!("refused: source is not in the subscriber prefixes");
        send_error(&mut down, ErrorTlv::not_authorized(), m).await;
        return;
    }
    let (msg, early) = match relay::read_message(&mut down, state.config.header_timeout).await {
        Ok(x) => x,
        Err(PreambleError::Decode(e, received)) => {
            info!("invalid Convert message: {e}");
            match e.error_tlv_echoing(&received) {
                Some(tlv) => send_error(&mut down, tlv, m).await,
                None => m.closed("invalid"),
            }
            return;
        }
        Err(PreambleError::Timeout(_)) => {
            debug!("no Convert message before the deadline");
            m.closed("header_timeout");
            return;
        }
        Err(PreambleError::Closed { .. }) => {
            m.closed("closed_before_header");
            return;
        }
        Err(PreambleError::Io(e)) => {
            debug!("reading the Convert message: {e}");
            m.closed("read_error");
            return;
        }
    };
    let Some(connect) = msg.connect().cloned() else {
        // A message without Connect: only Info (a query of what we support)
        // is meaningful; anything else is malformed for a client.
        if msg.tlvs.iter().any(|t| matches!(t, Tlv::Info)) {
            let reply = Message {
                tlvs: vec![crate::supported_extensions()],
            };
            let _ = down.write_all(&reply.to_bytes()).await;
            let _ = down.shutdown().await;
        } else {
            send_error(&mut down, ErrorTlv::malformed(&[]), m).await;
        }
        return;
    };
    let dest = connect.remote;
    if let Some(why) = refused_destination(&state, &dest) {
        warn!(%dest, "refused destination: {why}");
        send_error(&mut down, ErrorTlv::not_authorized(), m).await;
        return;
    }
    // Connect to the destination while the client's handshake completes.
    let (up, ()) = tokio::join!(connect_upstream(&state, dest), fully_established(&down));
    let mut up = match up {
        Ok(s) => s,
        Err(e) => {
            let tlv = connect_error(&e);
            info!(%dest, "destination failed: {e} → {}", tlv.code);
            send_error(&mut down, tlv, m).await;
            return;
        }
    };
    if let Err(e) = down.write_all(&success_reply().to_bytes()).await {
        debug!("client gone before the reply: {e}");
        m.closed("client_gone");
        return;
    }
    m.handshake_seconds.observe(started.elapsed().as_secs_f64());
    if !early.is_empty() {
        if let Err(e) = up.write_all(&early).await {
            debug!("destination gone before the first bytes: {e}");
            mptcp_sock::set_reset_on_close(&down);
            return;
        }
    }
    m.relayed.inc();
    let opts = RelayOptions {
        idle_timeout: state.config.idle_timeout,
        buffer_size: state.config.buffer_bytes,
    };
    let out = relay::relay(down, up, opts).await;
    let upstream = out.a_to_b + early.len() as u64;
    m.bytes
        .get_or_create(&DirLabel {
            direction: "upstream".into(),
        })
        .inc_by(upstream);
    m.bytes
        .get_or_create(&DirLabel {
            direction: "downstream".into(),
        })
        .inc_by(out.b_to_a);
    match out.end {
        RelayEnd::Closed => debug!(upstream, downstream = out.b_to_a, "closed"),
        other => info!(upstream, downstream = out.b_to_a, "ended: {other:?}"),
    }
}

/// Accepts until `shutdown` resolves; each connection runs in its own task.
/// Returns the tracker of running connections so that the caller can drain.
pub(crate) async fn accept_loop(
    state: Arc<State>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        state.metrics.accepted.inc();
        let Ok(permit) = state.slots.clone().try_acquire_owned() else {
            let m = state.metrics.clone();
            let backoff = state.config.backoff_secs;
            tokio::spawn(async move {
                send_error(&mut stream, ErrorTlv::resource_exceeded(backoff), &m).await;
            });
            continue;
        };
        let st = state.clone();
        let span = tracing::info_span!("conn", %peer);
        tokio::spawn(
            async move {
                st.metrics.active.inc();
                serve(st.clone(), stream, peer).await;
                st.metrics.active.dec();
                drop(permit);
            }
            .instrument(span),
        );
    }
}
