//! The Convert service: accept, check where the connection came from, read
//! the Convert message, authenticate the subscriber, admit it under its
//! limits, check the destination, connect, reply, relay.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use convert_proto::{ErrorTlv, Message, Tlv};
use relay::{PreambleError, RelayEnd, RelayOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn, Instrument};

use crate::config::Config;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::registry::Snapshot;

/// Shared state of the running service.
pub(crate) struct State {
    /// The configuration in force (replaced on SIGHUP).
    pub(crate) config: RwLock<Arc<Config>>,
    /// The subscriber registry as last read.
    pub(crate) subscribers: Arc<RwLock<Arc<Snapshot>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) local: HashSet<IpAddr>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) limits: Arc<Limits>,
    /// Becomes true when running connections must end now (drain timeout).
    pub(crate) stop: watch::Receiver<bool>,
    /// The persistent usage count, if kept.
    pub(crate) usage: Option<crate::usage::Writer>,
}

impl State {
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn subscribers(&self) -> Arc<Snapshot> {
        self.subscribers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Why a destination is refused before any connection attempt.
fn refused_destination(state: &State, c: &Config, dest: &SocketAddr) -> Option<&'static str> {
    let ip = dest.ip().to_canonical();
    if dest.port() == 0 {
        return Some("port 0");
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Some("broadcast");
        }
    }
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return Some("loopback, unspecified or multicast");
    }
    if state.local.contains(&ip) {
        return Some("the HAG itself");
    }
    if c.allow_destinations.iter().any(|n| n.contains(&ip)) {
        return None;
    }
    if c.deny_destinations.iter().any(|n| n.contains(&ip)) {
        return Some("denied range (private, operator or special)");
    }
    None
}

/// Maps a failed connection attempt to the RFC 8803 error.
fn connect_error(e: &io::Error) -> ErrorTlv {
    use nix::errno::Errno;
    // ICMP destination-unreachable codes: 0 net, 1 host.
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ECONNREFUSED) => ErrorTlv::connection_reset(),
        Some(Errno::ENETUNREACH) => ErrorTlv::destination_unreachable(0),
        Some(Errno::EHOSTUNREACH) => ErrorTlv::destination_unreachable(1),
        _ if e.kind() == io::ErrorKind::TimedOut => ErrorTlv::destination_unreachable(1),
        _ => ErrorTlv::network_failure(0),
    }
}

fn label(err: &ErrorTlv) -> String {
    err.code.name().to_lowercase().replace(' ', "_")
}

/// Refuses a connection: counts the reason, sends the Error TLV in the byte
/// stream (unless error replies are over their rate) and closes with FIN.
async fn refuse(state: &State, stream: &mut TcpStream, err: ErrorTlv, reason: &str) {
    let m = &state.metrics;
    m.refused(reason);
    if !state.limits.may_reply_error() {
        m.refused("error_reply_rate");
        return;
    }
    m.error_sent(&label(&err));
    let msg = Message {
        tlvs: vec![Tlv::Error(err)],
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(&msg.to_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Why the destination side failed before the reply.
enum Upstream {
    Connect(io::Error),
    FirstBytes(io::Error),
}

async fn connect_upstream(c: &Config, dest: SocketAddr) -> io::Result<TcpStream> {
    let sock = if dest.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Err(e) = mptcp_sock::set_congestion(&sock, &c.congestion_control) {
        debug!("congestion control {}: {e}", c.congestion_control);
    }
    sock.set_nodelay(true)?;
    match tokio::time::timeout(c.connect_timeout, sock.connect(dest)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

fn now_unix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Who the client is: a registered subscriber, or (without cookies) its
/// source address.
enum Who {
    Subscriber { id: u32, name: String },
    Address(IpAddr),
}

/// Checks the cookie (when required) and the subscriber's state; returns the
/// identity or the error to answer.
fn authenticate(
    state: &State,
    c: &Config,
    msg: &Message,
    peer: IpAddr,
) -> Result<Who, (ErrorTlv, &'static str)> {
    let cookie = msg.cookie();
    if !c.require_cookie {
        return Ok(Who::Address(peer));
    }
    let Some(cookie) = cookie else {
        return Err((ErrorTlv::missing_cookie(), "missing_cookie"));
    };
    let claims = c.keys.verify(cookie, now_unix()).map_err(|e| {
        debug!("cookie refused: {e}");
        (ErrorTlv::not_authorized(), "invalid_cookie")
    })?;
    let subs = state.subscribers();
    let Some(sub) = subs.by_id.get(&claims.subscriber) else {
        return Err((ErrorTlv::not_authorized(), "unknown_subscriber"));
    };
    if sub.revoked_unix.is_some() {
        return Err((ErrorTlv::not_authorized(), "revoked"));
    }
    if !sub.source_prefixes.is_empty() && !sub.source_prefixes.iter().any(|n| n.contains(&peer)) {
        return Err((ErrorTlv::not_authorized(), "source_not_allowed"));
    }
    Ok(Who::Subscriber {
        id: sub.id,
        name: sub.name.clone(),
    })
}

/// Serves one accepted connection to its end.
async fn serve(state: Arc<State>, mut down: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let c = state.config();
    let m = &state.metrics;
    let peer_ip = peer.ip().to_canonical();
    // The relay keeps the sender's segmentation: without this, Nagle holds
    // the first small answer behind the unacknowledged Convert reply for one
    // round trip over the access link (measured: +15 ms to first byte in
    // the rural lab).
    if let Err(e) = down.set_nodelay(true) {
        debug!("TCP_NODELAY: {e}");
    }
    if mptcp_sock::info::syn_data(&down).unwrap_or(false) {
        m.syn_data.inc();
    }
    // No open proxy: only the access-facing service addresses, only the
    // access networks.
    let local_ok = down
        .local_addr()
        .is_ok_and(|a| c.service_addresses.contains(&a.ip().to_canonical()));
    if !local_ok {
        refuse(
            &state,
            &mut down,
            ErrorTlv::not_authorized(),
            "not_service_address",
        )
        .await;
        return;
    }
    if !c.subscriber_prefixes.iter().any(|n| n.contains(&peer_ip)) {
        warn!("refused: source is outside the access networks");
        refuse(
            &state,
            &mut down,
            ErrorTlv::not_authorized(),
            "outside_access_networks",
        )
        .await;
        return;
    }
    let source_slot = match state.limits.source(peer_ip) {
        Ok(s) => s,
        Err(r) => {
            refuse(
                &state,
                &mut down,
                ErrorTlv::resource_exceeded(c.backoff_secs),
                r.reason(),
            )
            .await;
            return;
        }
    };
    let (msg, early) = match relay::read_message(&mut down, c.header_timeout).await {
        Ok(x) => x,
        Err(PreambleError::Decode(e, received)) => {
            info!("invalid Convert message: {e}");
            match e.error_tlv_echoing(&received) {
                Some(tlv) => refuse(&state, &mut down, tlv, "invalid_message").await,
                None => m.refused("invalid_message"),
            }
            return;
        }
        Err(PreambleError::Timeout(_)) => {
            debug!("no Convert message before the deadline");
            m.refused("header_timeout");
            return;
        }
        Err(PreambleError::Closed { .. }) => {
            m.refused("closed_before_header");
            return;
        }
        Err(PreambleError::Io(e)) => {
            debug!("reading the Convert message: {e}");
            m.refused("read_error");
            return;
        }
    };
    drop(source_slot);
    let Some(connect) = msg.connect().cloned() else {
        // Without Connect only Info (what do you support?) is meaningful.
        if msg.has_info() {
            let reply = Message {
                tlvs: vec![crate::supported_extensions()],
            };
            let _ = down.write_all(&reply.to_bytes()).await;
            let _ = down.shutdown().await;
        } else {
            refuse(&state, &mut down, ErrorTlv::malformed(&[]), "no_connect").await;
        }
        return;
    };
    let who = match authenticate(&state, &c, &msg, peer_ip) {
        Ok(w) => w,
        Err((tlv, reason)) => {
            info!("refused: {reason}");
            refuse(&state, &mut down, tlv, reason).await;
            return;
        }
    };
    let (sub_key, sub_label) = match &who {
        Who::Subscriber { id, name } => (crate::limits::SubKey::Id(*id), name.clone()),
        Who::Address(ip) => (
            crate::limits::SubKey::Addr(*ip),
            "unauthenticated".to_string(),
        ),
    };
    let (active_slot, pending_slot) = match state.limits.admit(sub_key) {
        Ok(s) => s,
        Err(r) => {
            debug!(subscriber = %sub_label, "over limit: {}", r.reason());
            refuse(
                &state,
                &mut down,
                ErrorTlv::resource_exceeded(c.backoff_secs),
                r.reason(),
            )
            .await;
            return;
        }
    };
    let dest = connect.remote;
    if let Some(why) = refused_destination(&state, &c, &dest) {
        warn!(%dest, "refused destination: {why}");
        refuse(
            &state,
            &mut down,
            ErrorTlv::not_authorized(),
            "destination_denied",
        )
        .await;
        return;
    }
    // Connect to the destination and hand it the bytes that rode in the SYN
    // while the client's handshake completes: the destination's answer is
    // on its way by the time the reply can leave.
    let upstream = async {
        let mut up = connect_upstream(&c, dest)
            .await
            .map_err(Upstream::Connect)?;
        if !early.is_empty() {
            up.write_all(&early).await.map_err(Upstream::FirstBytes)?;
        }
        Ok::<_, Upstream>(up)
    };
    let (up, ()) = tokio::join!(
        upstream,
        mptcp_sock::info::fully_established(&down, Duration::from_secs(3))
    );
    let up = match up {
        Ok(s) => s,
        Err(Upstream::Connect(e)) => {
            let tlv = connect_error(&e);
            info!(%dest, "destination failed: {e} → {}", tlv.code);
            refuse(&state, &mut down, tlv, "destination_failed").await;
            return;
        }
        Err(Upstream::FirstBytes(e)) => {
            info!(%dest, "destination gone before the first bytes: {e}");
            refuse(
                &state,
                &mut down,
                ErrorTlv::connection_reset(),
                "destination_failed",
            )
            .await;
            return;
        }
    };
    if let Err(e) = down.write_all(&Message::default().to_bytes()).await {
        debug!("client gone before the reply: {e}");
        m.refused("client_gone");
        return;
    }
    m.handshake_seconds.observe(started.elapsed().as_secs_f64());
    drop(pending_slot);
    m.relayed.inc();
    let sampler = socket2::SockRef::from(&down)
        .try_clone()
        .ok()
        .filter(|_| !c.links.is_empty())
        .map(|dup| mptcp_sock::info::spawn_sampler(dup, Duration::from_secs(1)));
    let opts = RelayOptions {
        idle_timeout: c.idle_timeout,
        buffer_size: c.buffer_bytes,
    };
    let mut stop = state.stop.clone();
    let stop_fut = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let out = relay::relay_until(down, up, opts, stop_fut).await;
    let upstream = out.a_to_b + early.len() as u64;
    m.add_subscriber_bytes(&sub_label, upstream, out.b_to_a);
    if let Some(s) = sampler {
        for (ip, (sent, received)) in s.finish().await.by_address(false) {
            if let Some((link, _)) = c
                .links
                .iter()
                .find(|(_, nets)| nets.iter().any(|n| n.contains(&ip)))
            {
                m.add_link_bytes(link, received, sent);
                m.add_subscriber_link_bytes(&sub_label, link, received + sent);
                if let Some(u) = &state.usage {
                    if !u.add(&sub_label, link, received, sent) {
                        m.usage_dropped.inc();
                        warn!(subscriber = %sub_label, "usage queue full: a record was dropped");
                    }
                }
            }
        }
    }
    drop(active_slot);
    match out.end {
        RelayEnd::Closed => debug!(upstream, downstream = out.b_to_a, "closed"),
        other => info!(upstream, downstream = out.b_to_a, "ended: {other:?}"),
    }
}

/// Accepts until `shutdown` resolves; each connection runs in its own task.
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
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        state.metrics.accepted.inc();
        let Ok(permit) = state.slots.clone().try_acquire_owned() else {
            // Over the global limit: answer without holding a slot, in a
            // task bounded by the error-reply rate and a 2 s write deadline.
            let st = state.clone();
            let backoff = st.config().backoff_secs;
            tokio::spawn(async move {
                refuse(
                    &st,
                    &mut stream,
                    ErrorTlv::resource_exceeded(backoff),
                    "limit_global",
                )
                .await;
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
