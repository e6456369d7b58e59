//! One intercepted LAN connection: Convert over MPTCP to the HAG, relay.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use convert_proto::{Connect, Message, Tlv};
use relay::{PreambleError, RelayOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::paths::PathState;

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
pub(crate) async fn serve(c: Arc<Config>, m: Arc<Metrics>, p: Arc<PathState>, lan: TcpStream) {
    m.intercepted.inc();
    m.active.inc();
    serve_inner(&c, &m, &p, lan).await;
    m.active.dec();
}

async fn serve_inner(c: &Config, m: &Metrics, p: &PathState, mut lan: TcpStream) {
    // A relay must not add Nagle's wait to what the HAG forwards.
    let _ = lan.set_nodelay(true);
    // With TPROXY the accepted socket's local address is the original
    // destination.
    let dest: SocketAddr = match lan.local_addr() {
        Ok(a) => SocketAddr::new(a.ip().to_canonical(), a.port()),
        Err(e) => {
            debug!("no original destination: {e}");
            return;
        }
    };
    // The device's first bytes, if it sends them at once, ride in the SYN.
    let mut first = vec![0u8; 1200];
    let n = match tokio::time::timeout(c.first_data_wait, lan.read(&mut first)).await {
        Ok(Ok(0)) => return, // closed before sending anything
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            debug!("LAN read: {e}");
            return;
        }
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
        mptcp: true,
        fastopen: true,
        fastopen_no_cookie: true,
        // The first subflow leaves on the fixed line, or on the mobile link
        // while the fixed line is down; the path manager adds the other.
        bind: Some(SocketAddr::new(p.bind_address(c), 0)),
        congestion: Some(c.congestion_control.clone()),
        mark: None,
        rcvbuf: (c.mptcp_rcvbuf_bytes > 0).then_some(c.mptcp_rcvbuf_bytes),
    };
    let hag = match mptcp_sock::connect_fastopen(c.hag, &opts)
        .map_err(|e| io::Error::new(e.kind(), e.to_string()))
        .and_then(|(s, _)| TcpStream::from_std(s))
    {
        Ok(s) => s,
        Err(e) => {
            error!(hag = %c.hag, "HAG unreachable: {e}");
            Metrics::count(&m.hag_unreachable, "connect");
            m.hag_reachable.set(0);
            reset(lan);
            return;
        }
    };
    let mut hag = hag;
    if let Err(e) = write_first(&hag, &syn).await {
        error!(hag = %c.hag, "HAG unreachable: {e}");
        Metrics::count(&m.hag_unreachable, "connect");
        m.hag_reachable.set(0);
        reset(lan);
        return;
    }
    let (reply, early) = match relay::read_message(&mut hag, c.hag_reply_timeout).await {
        Ok(x) => x,
        Err(e) => {
            let reason = match &e {
                PreambleError::Timeout(_) => "timeout",
                PreambleError::Closed { .. } => "closed",
                PreambleError::Io(_) => "io",
                PreambleError::Decode(..) => "invalid_reply",
            };
            error!(hag = %c.hag, "HAG unreachable or answered nonsense: {e}");
            Metrics::count(&m.hag_unreachable, reason);
            m.hag_reachable.set(0);
            mptcp_sock::set_reset_on_close(&hag);
            reset(lan);
            return;
        }
    };
    m.hag_reachable.set(1);
    if mptcp_sock::info::syn_data(&hag).unwrap_or(false) {
        m.syn_data.inc();
    }
    if let Some(err) = reply.error() {
        warn!(%dest, "HAG refused: {}", err.code);
        Metrics::count(
            &m.hag_errors,
            &err.code.name().to_lowercase().replace(' ', "_"),
        );
        reset(lan);
        return;
    }
    if !early.is_empty() && lan.write_all(&early).await.is_err() {
        return;
    }
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
            m.add_link_bytes(link, "up", up);
            m.add_link_bytes(link, "down", down);
            if up + down > 0 {
                links_used += 1;
            }
            info!(link, up, down, "subflow bytes");
        }
        if links_used > 1 {
            m.multipath_connections.inc();
        }
    }
}
