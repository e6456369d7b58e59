//! The Convert service: the accept loop and one connection's life, one
//! function per concern: where the connection came from ([`check_origin`]),
//! reading the Convert message under the per-source limit
//! ([`read_request`]), who the client is ([`authenticate`]), its limits,
//! the destination ([`crate::destination`]), connecting, the reply, then
//! relaying and accounting ([`relay_and_account`]). Every refusal is a
//! [`Refusal`], answered and counted in one place ([`refuse`]).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use convert_proto::{Message, Tlv};
use hybrid::{Link, PerLink};
use registry::Snapshot;
use relay::{PreambleError, RelayEnd, RelayOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn, Instrument};

use crate::config::Config;
use crate::destination::{self, UpstreamError, UpstreamPhase};
use crate::limits::{Limits, Slot, SubKey};
use crate::metrics::Metrics;
use crate::refusal::Refusal;

/// Shared state of the running service.
pub(crate) struct State {
    /// The configuration in force (replaced on SIGHUP).
    pub(crate) config: RwLock<Arc<Config>>,
    /// The subscriber registry as last read.
    pub(crate) subscribers: Arc<RwLock<Arc<Snapshot>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) local: HashSet<IpAddr>,
    pub(crate) slots: Arc<Semaphore>,
    /// The slots' number (fixed at start: a reload does not resize it).
    pub(crate) slots_total: u32,
    pub(crate) limits: Arc<Limits>,
    /// Becomes true when running connections must end now (drain timeout).
    pub(crate) stop: watch::Receiver<bool>,
    /// The persistent usage count, if kept.
    pub(crate) usage: Option<crate::usage::Writer>,
    /// Each subscriber's connections, for the reports to ops.
    pub(crate) view: crate::report::View,
    /// The subscribers whose mobile bytes are waived, as ops last said.
    pub(crate) waivers: crate::report::Waivers,
}

impl State {
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn subscribers(&self) -> Arc<Snapshot> {
        self.subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Refuses a connection: counts the reason, sends its Error TLV in the byte
/// stream (unless it has none or error replies are over their rate) and
/// closes with FIN.
async fn refuse(state: &State, stream: &mut TcpStream, why: &Refusal, backoff_secs: u8) {
    let m = &state.metrics;
    m.refused(why.label());
    let Some(err) = why.error_tlv(backoff_secs) else {
        return;
    };
    if !state.limits.may_reply_error() {
        m.refused(Refusal::ErrorReplyRate.label());
        return;
    }
    m.error_sent(&err.code.name().to_lowercase().replace(' ', "_"));
    let msg = Message {
        tlvs: vec![Tlv::Error(err)],
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(&msg.to_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Who the client is: a registered subscriber, or (without cookies) its
/// source address.
enum Who {
    Subscriber { id: u32, name: String },
    Address(IpAddr),
}

impl Who {
    /// The limits' key and the metrics' / billing's subscriber label.
    fn key_and_label(&self) -> (SubKey, String) {
        match self {
            Self::Subscriber { id, name } => (SubKey::Id(*id), name.clone()),
            Self::Address(ip) => (SubKey::Addr(*ip), "unauthenticated".to_string()),
        }
    }
}

/// No open proxy: only the access-facing service addresses, only the
/// access networks.
fn check_origin(c: &Config, down: &TcpStream, peer: IpAddr) -> Result<(), Refusal> {
    let local_ok = down
        .local_addr()
        .is_ok_and(|a| c.service_addresses.contains(&a.ip().to_canonical()));
    if !local_ok {
        return Err(Refusal::NotServiceAddress);
    }
    if !c.subscriber_prefixes.iter().any(|n| n.contains(&peer)) {
        warn!("refused: source is outside the access networks");
        return Err(Refusal::OutsideAccessNetworks);
    }
    Ok(())
}

/// Reads the Convert message (and the bytes that came with it) while
/// holding one of the source's pending slots.
async fn read_request(
    state: &State,
    c: &Config,
    down: &mut TcpStream,
    peer: IpAddr,
) -> Result<(Message, Vec<u8>), Refusal> {
    let _source_slot = state.limits.source(peer).map_err(Refusal::Limit)?;
    match relay::read_message(down, c.header_timeout).await {
        Ok(x) => Ok(x),
        Err(PreambleError::Decode(e, received)) => {
            info!("invalid Convert message: {e}");
            Err(Refusal::InvalidMessage(e.error_tlv_echoing(&received)))
        }
        Err(PreambleError::Timeout(_)) => {
            debug!("no Convert message before the deadline");
            Err(Refusal::HeaderTimeout)
        }
        Err(PreambleError::Closed { .. }) => Err(Refusal::ClosedBeforeHeader),
        Err(PreambleError::Io(e)) => {
            debug!("reading the Convert message: {e}");
            Err(Refusal::ReadError(e))
        }
    }
}

/// Checks the cookie (when required) and the subscriber's state.
fn authenticate(state: &State, c: &Config, msg: &Message, peer: IpAddr) -> Result<Who, Refusal> {
    if !c.require_cookie {
        return Ok(Who::Address(peer));
    }
    let cookie = msg.cookie().ok_or(Refusal::MissingCookie)?;
    let claims = c
        .keys
        .verify(cookie, crate::cookie::now_unix())
        .map_err(|e| {
            debug!("cookie refused: {e}");
            Refusal::InvalidCookie(e)
        })?;
    let subs = state.subscribers();
    let sub = subs
        .by_id
        .get(&claims.subscriber)
        .ok_or(Refusal::UnknownSubscriber)?;
    if sub.revoked_unix.is_some() {
        return Err(Refusal::Revoked);
    }
    if !sub.source_prefixes.is_empty() && !sub.source_prefixes.iter().any(|n| n.contains(&peer)) {
        return Err(Refusal::SourceNotAllowed);
    }
    Ok(Who::Subscriber {
        id: sub.id,
        name: sub.name.clone(),
    })
}

/// Connects to the destination and hands it the bytes that rode in the SYN
/// while the client's handshake completes: the destination's answer is on
/// its way by the time the reply can leave.
async fn connect_upstream(
    m: &Metrics,
    c: &Config,
    down: &TcpStream,
    dest: SocketAddr,
    early: &[u8],
) -> Result<TcpStream, Refusal> {
    let upstream = async {
        let mut up = destination::connect(c, dest)
            .await
            .map_err(|source| UpstreamError {
                phase: UpstreamPhase::Connect,
                source,
            })?;
        if !early.is_empty() {
            up.write_all(early).await.map_err(|source| UpstreamError {
                phase: UpstreamPhase::FirstBytes,
                source,
            })?;
        }
        Ok::<_, UpstreamError>(up)
    };
    let (up, ()) = tokio::join!(
        upstream,
        mptcp_sock::info::fully_established(down, Duration::from_secs(3))
    );
    m.upstream_connects.inc();
    up.map_err(|e| {
        m.upstream_errors.inc();
        info!(%dest, "destination failed: {e} → {}", e.error_tlv().code);
        Refusal::DestinationFailed(e)
    })
}

/// A connection that passed every check, connected and answered.
struct Admitted {
    up: TcpStream,
    early_len: usize,
    subscriber: String,
    /// Its id in the subscribers' view (a registered subscriber's only).
    view_id: Option<u64>,
    /// The subscriber's active-connection slot, held while relaying.
    active_slot: Slot,
}

/// Everything before relaying. `Ok(None)`: answered without relaying (an
/// Info request).
async fn handshake(
    state: &State,
    c: &Config,
    down: &mut TcpStream,
    peer: IpAddr,
    started: Instant,
) -> Result<Option<Admitted>, Refusal> {
    check_origin(c, down, peer)?;
    let (msg, early) = read_request(state, c, down, peer).await?;
    let Some(connect) = msg.connect().cloned() else {
        // Without Connect only Info (what do you support?) is meaningful.
        if !msg.has_info() {
            return Err(Refusal::NoConnect);
        }
        let reply = Message {
            tlvs: vec![crate::supported_extensions()],
        };
        let _ = down.write_all(&reply.to_bytes()).await;
        let _ = down.shutdown().await;
        return Ok(None);
    };
    let who = authenticate(state, c, &msg, peer).inspect_err(|r| info!("refused: {r}"))?;
    let (key, subscriber) = who.key_and_label();
    if matches!(who, Who::Subscriber { .. }) {
        state.view.touch(&subscriber);
    }
    let (active_slot, pending_slot) = state.limits.admit(key).map_err(|r| {
        debug!(subscriber = %subscriber, "over limit: {}", r.reason());
        Refusal::Limit(r)
    })?;
    let dest = connect.remote;
    if let Some(why) = destination::refused_destination(&state.local, c, &dest) {
        warn!(%dest, "refused destination: {why}");
        return Err(Refusal::DestinationDenied(why));
    }
    let up = connect_upstream(&state.metrics, c, down, dest, &early).await?;
    if let Err(e) = down.write_all(&Message::default().to_bytes()).await {
        debug!("client gone before the reply: {e}");
        return Err(Refusal::ClientGone(e));
    }
    state
        .metrics
        .handshake_seconds
        .observe(started.elapsed().as_secs_f64());
    drop(pending_slot);
    let view_id = matches!(who, Who::Subscriber { .. }).then(|| state.view.open(&subscriber));
    Ok(Some(Admitted {
        up,
        early_len: early.len(),
        subscriber,
        view_id,
        active_slot,
    }))
}

/// Relays until either side ends, then counts the bytes per subscriber and
/// per access link (metrics and the persistent usage).
async fn relay_and_account(state: &Arc<State>, c: &Arc<Config>, down: TcpStream, a: Admitted) {
    let m = &state.metrics;
    m.relayed.inc();
    // Bytes carried while the subscriber's budget was waived, per link
    // (up, down): sampled each second, so a waiver that starts or ends
    // mid-connection splits its bytes where it did.
    let waived: Arc<Mutex<PerLink<(u64, u64)>>> = Arc::default();
    let sampler = socket2::SockRef::from(&down)
        .try_clone()
        .ok()
        .filter(|_| c.counts_links() || a.view_id.is_some())
        .map(|dup| {
            let (st, cfg, sub, id) = (state.clone(), c.clone(), a.subscriber.clone(), a.view_id);
            let waived = waived.clone();
            let mut totals = mptcp_sock::info::SubflowTotals::default();
            let mut before = PerLink::<(u64, u64)>::default();
            mptcp_sock::info::spawn_sampler_with(dup, Duration::from_secs(1), move |list| {
                let Some(id) = id else { return };
                st.view.sample(&sub, id, list, &cfg);
                totals.add(list);
                let now = per_link(&cfg, &totals);
                if st.waivers.is_waived(&sub) {
                    let mut w = waived.lock().unwrap_or_else(PoisonError::into_inner);
                    for l in Link::ALL {
                        w[l].0 += now[l].0.saturating_sub(before[l].0);
                        w[l].1 += now[l].1.saturating_sub(before[l].1);
                    }
                }
                before = now;
            })
        });
    let opts = RelayOptions {
        idle_timeout: c.idle_timeout,
        buffer_size: c.buffer_bytes,
    };
    let mut stop = state.stop.clone();
    let stop_fut = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let out = relay::relay_until(down, a.up, opts, stop_fut).await;
    let upstream = out.a_to_b + a.early_len as u64;
    let sub = &a.subscriber;
    m.add_subscriber_bytes(sub, upstream, out.b_to_a);
    if let Some(s) = sampler {
        let totals = per_link(c, &s.finish().await);
        let waived = *waived.lock().unwrap_or_else(PoisonError::into_inner);
        for l in Link::ALL {
            let (up, down) = totals[l];
            if up == 0 && down == 0 {
                continue;
            }
            m.add_link_bytes(l, up, down);
            m.add_subscriber_link_bytes(sub, l, up + down);
            let w = (waived[l].0.min(up), waived[l].1.min(down));
            m.waived_bytes.inc_by(w.0 + w.1);
            if let Some(u) = &state.usage {
                if !u.add(sub, l, (up - w.0, down - w.1), w) {
                    m.usage_dropped.inc();
                    warn!(subscriber = %sub, "usage queue full: a record was dropped");
                }
            }
        }
    }
    if let Some(id) = a.view_id {
        state.view.close(sub, id);
    }
    drop(a.active_slot);
    match out.end {
        RelayEnd::Closed => debug!(upstream, downstream = out.b_to_a, "closed"),
        other => info!(upstream, downstream = out.b_to_a, "ended: {other:?}"),
    }
}

/// A connection's bytes per access link so far, `(up, down)` as the
/// subscriber sees them (received by the HAG, sent by it).
fn per_link(c: &Config, totals: &mptcp_sock::info::SubflowTotals) -> PerLink<(u64, u64)> {
    let mut out = PerLink::<(u64, u64)>::default();
    for (ip, (sent, received)) in totals.by_address(false) {
        if let Some(l) = c.link_of(ip) {
            out[l].0 += received;
            out[l].1 += sent;
        }
    }
    out
}

/// Serves one accepted connection to its end.
async fn serve(state: Arc<State>, mut down: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let c = state.config();
    let peer_ip = peer.ip().to_canonical();
    // The relay keeps the sender's segmentation: without this, Nagle holds
    // the first small answer behind the unacknowledged Convert reply for one
    // round trip over the access link (measured: +15 ms to first byte in
    // the rural lab).
    if let Err(e) = down.set_nodelay(true) {
        debug!("TCP_NODELAY: {e}");
    }
    if mptcp_sock::info::syn_data(&down).unwrap_or(false) {
        state.metrics.syn_data.inc();
    }
    match handshake(&state, &c, &mut down, peer_ip, started).await {
        Ok(Some(admitted)) => relay_and_account(&state, &c, down, admitted).await,
        Ok(None) => {}
        Err(why) => refuse(&state, &mut down, &why, c.backoff_secs).await,
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
                refuse(&st, &mut stream, &Refusal::GlobalLimit, backoff).await;
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
