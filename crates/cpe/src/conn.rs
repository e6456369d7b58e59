//! One intercepted LAN connection: Convert over MPTCP to the HAG, relay.
//!
//! [`serve`] runs its phases in order: [`admit`] (the original destination,
//! the device's first bytes, the Convert message to the HAG in the SYN, the
//! HAG's reply), then the relay and the per-link byte counts. A failure of
//! admission is a [`ConnError`] that says which side and which phase failed,
//! with the cause; it decides the metric and whether the device sees a reset.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use convert_proto::{Connect, ErrorCode, Message, Tlv};
use hybrid::Direction;
use relay::{PreambleError, RelayOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::paths::PathState;

/// How connections to the HAG are opened. The defaults are production's;
/// in-process tests turn off what needs a real CPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dial {
    /// Multipath TCP (off: plain TCP, for a kernel without MPTCP).
    pub(crate) mptcp: bool,
    /// Bind the first subflow to the active WAN link's address (off: the
    /// kernel picks the source, for a host without the WAN addresses).
    pub(crate) bind_wan: bool,
}

/// The phase of the connection to the HAG that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HagPhase {
    /// Opening the socket (and its deferred Fast Open connect).
    Connect,
    /// Sending the SYN with the Convert message and the first bytes.
    Send,
}

impl std::fmt::Display for HagPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Send => "sending the Convert message",
        })
    }
}

/// Why an intercepted connection was not relayed: the side, the phase and
/// the cause.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// LAN side: the accepted socket has no local address (no original
    /// destination).
    #[error("no original destination: {0}")]
    Destination(#[source] io::Error),
    /// LAN side: the device closed before sending anything.
    #[error("the device closed before sending anything")]
    LanClosed,
    /// LAN side: reading the device's first bytes failed.
    #[error("LAN read: {0}")]
    LanRead(#[source] io::Error),
    /// HAG side: it could not be reached.
    #[error("HAG unreachable ({phase}): {source}")]
    Hag {
        /// Which step.
        phase: HagPhase,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// HAG side: no valid Convert reply (silence, close, reset, nonsense).
    #[error("HAG unreachable or answered nonsense: {0}")]
    Reply(#[source] PreambleError),
    /// HAG side: it answered with an RFC 8803 Error TLV.
    #[error("HAG refused: {0}")]
    Refused(ErrorCode),
    /// LAN side: the bytes that followed the HAG's reply could not be
    /// written to the device.
    #[error("LAN write: {0}")]
    LanWrite(#[source] io::Error),
}

impl ConnError {
    /// Counts the failure, and says whether the device's connection is
    /// reset (a failure the device must see) rather than just closed.
    fn record(&self, c: &Config, m: &Metrics, dest: Option<SocketAddr>) -> bool {
        match self {
            Self::Destination(_) | Self::LanClosed | Self::LanRead(_) | Self::LanWrite(_) => {
                debug!("{self}");
                false
            }
            Self::Hag { .. } => {
                error!(hag = %c.hag, "{self}");
                Metrics::count(&m.hag_unreachable, "connect");
                m.hag_reachable.set(0);
                true
            }
            Self::Reply(e) => {
                error!(hag = %c.hag, "{self}");
                Metrics::count(&m.hag_unreachable, reply_reason(e));
                m.hag_reachable.set(0);
                true
            }
            Self::Refused(code) => {
                if let Some(dest) = dest {
                    warn!(%dest, "HAG refused: {code}");
                }
                Metrics::count(&m.hag_errors, &code.name().to_lowercase().replace(' ', "_"));
                true
            }
        }
    }
}

/// The `reason` label of `hag_unreachable` for a reply that did not come.
fn reply_reason(e: &PreambleError) -> &'static str {
    match e {
        PreambleError::Timeout(_) => "timeout",
        PreambleError::Closed { .. } => "closed",
        PreambleError::Io(_) => "io",
        PreambleError::Decode(..) => "invalid_reply",
    }
}

/// Resets the LAN connection: the device sees the failure as a reset.
fn reset(lan: TcpStream) {
    mptcp_sock::set_reset_on_close(&lan);
    drop(lan);
}

/// Writes `bytes` on a socket whose connect was deferred by Fast Open: the
/// first write sends the SYN carrying them.
async fn write_first(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Serves one intercepted connection.
pub(crate) async fn serve(
    c: Arc<Config>,
    m: Arc<Metrics>,
    p: Arc<PathState>,
    dial: Dial,
    lan: TcpStream,
) {
    m.intercepted.inc();
    m.active.inc();
    serve_inner(&c, &m, &p, dial, lan).await;
    m.active.dec();
}

async fn serve_inner(c: &Config, m: &Metrics, p: &PathState, dial: Dial, mut lan: TcpStream) {
    // A relay must not add Nagle's wait to what the HAG forwards.
    let _ = lan.set_nodelay(true);
    let dest = original_destination(&lan);
    let hag = match admit(c, m, p, dial, &mut lan).await {
        Ok(hag) => hag,
        Err(e) => {
            if e.record(c, m, dest.ok()) {
                reset(lan);
            }
            return;
        }
    };
    relay(c, m, lan, hag).await;
}

/// With TPROXY the accepted socket's local address is the original
/// destination.
fn original_destination(lan: &TcpStream) -> io::Result<SocketAddr> {
    lan.local_addr()
        .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
}

/// Admission: the Convert message (destination, cookie) and the device's
/// first bytes to the HAG in the SYN, the HAG's reply, and the bytes that
/// followed it to the device. Returns the connection to the HAG, ready to
/// relay.
async fn admit(
    c: &Config,
    m: &Metrics,
    p: &PathState,
    dial: Dial,
    lan: &mut TcpStream,
) -> Result<TcpStream, ConnError> {
    let dest = original_destination(lan).map_err(ConnError::Destination)?;
    // The device's first bytes, if it sends them at once, ride in the SYN.
    let mut first = vec![0u8; 1200];
    let n = match tokio::time::timeout(c.first_data_wait, lan.read(&mut first)).await {
        Ok(Ok(0)) => return Err(ConnError::LanClosed),
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(ConnError::LanRead(e)),
        Err(_) => 0,
    };
    first.truncate(n);
    let mut header = Message {
        tlvs: vec![Tlv::Connect(Connect {
            remote: dest,
            tcp_options: Vec::new(),
        })],
    };
    if let Some(cookie) = &c.cookie {
        header.tlvs.push(Tlv::Cookie(cookie.clone()));
    }
    let mut syn = header.to_bytes();
    syn.extend_from_slice(&first);

    let opts = mptcp_sock::ConnectOptions {
        mptcp: dial.mptcp,
        fastopen: true,
        fastopen_no_cookie: true,
        // The first subflow leaves on the fixed line, or on the mobile link
        // while the fixed line is down; the path manager adds the other.
        bind: dial.bind_wan.then(|| SocketAddr::new(p.bind_address(c), 0)),
        congestion: Some(c.congestion_control.clone()),
        mark: None,
        rcvbuf: (c.mptcp_rcvbuf_bytes > 0).then_some(c.mptcp_rcvbuf_bytes),
    };
    let mut hag = mptcp_sock::connect_fastopen(c.hag, &opts)
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
        .and_then(|(s, _)| TcpStream::from_std(s))
        .map_err(|source| ConnError::Hag {
            phase: HagPhase::Connect,
            source,
        })?;
    write_first(&hag, &syn)
        .await
        .map_err(|source| ConnError::Hag {
            phase: HagPhase::Send,
            source,
        })?;
    let (reply, early) = match relay::read_message(&mut hag, c.hag_reply_timeout).await {
        Ok(x) => x,
        Err(e) => {
            mptcp_sock::set_reset_on_close(&hag);
            return Err(ConnError::Reply(e));
        }
    };
    m.hag_reachable.set(1);
    if mptcp_sock::info::syn_data(&hag).unwrap_or(false) {
        m.syn_data.inc();
    }
    if let Some(err) = reply.error() {
        return Err(ConnError::Refused(err.code));
    }
    if !early.is_empty() {
        lan.write_all(&early).await.map_err(ConnError::LanWrite)?;
    }
    Ok(hag)
}

/// Relays until both sides are done, then counts each link's bytes (the
/// kernel's per-subflow counters, sampled while it runs).
async fn relay(c: &Config, m: &Metrics, lan: TcpStream, hag: TcpStream) {
    m.relayed.inc();
    let sampler = socket2::SockRef::from(&hag)
        .try_clone()
        .ok()
        .map(|dup| mptcp_sock::info::spawn_sampler(dup, Duration::from_millis(500)));
    let opts = RelayOptions {
        idle_timeout: c.idle_timeout,
        ..RelayOptions::default()
    };
    let out = relay::relay(lan, hag, opts).await;
    debug!(
        up = out.a_to_b,
        down = out.b_to_a,
        "relay ended: {:?}",
        out.end
    );
    if let Some(sampler) = sampler {
        let totals = sampler.finish().await;
        let mut links_used = 0;
        for (ip, (up, down)) in totals.by_address(true) {
            let Some(link) = c.link_of(ip) else { continue };
            m.add_link_bytes(link, Direction::Upstream, up);
            m.add_link_bytes(link, Direction::Downstream, down);
            if up + down > 0 {
                links_used += 1;
            }
            info!(%link, up, down, "subflow bytes");
        }
        if links_used > 1 {
            m.multipath_connections.inc();
        }
    }
}
