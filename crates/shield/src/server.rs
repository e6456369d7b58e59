//! DNS listeners: UDP workers on `SO_REUSEPORT` sockets and a TCP accept
//! loop, with the per-client query limit, RRL with slip, and bounded TCP
//! connections with idle timeouts.
//!
//! A UDP worker polls each query's answer once in place: answers from the
//! lists or the cache are sent without leaving the worker; a query that
//! must wait for an upstream is moved to its own task.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};

use crate::ratelimit::{Limiter, Verdict};
use crate::resolver::{short_answer, Shared, Transport};

/// Rate limiters shared by all listeners.
#[derive(Debug)]
pub(crate) struct Limits {
    pub(crate) client: Limiter,
    pub(crate) rrl: Limiter,
}

impl Limits {
    pub(crate) fn new(l: &crate::config::Limits) -> Self {
        Self {
            client: Limiter::new(
                l.client_queries_per_second,
                l.client_burst,
                0,
                32,
                128,
                l.table_max_entries,
            ),
            rrl: Limiter::new(
                l.rrl_responses_per_second,
                l.rrl_responses_per_second,
                l.rrl_slip,
                l.rrl_ipv4_prefix_len,
                l.rrl_ipv6_prefix_len,
                l.table_max_entries,
            ),
        }
    }
}

/// Binds `n` UDP sockets to `addr` with `SO_REUSEPORT` (the first one picks
/// the port when it is 0).
pub(crate) fn bind_udp(addr: SocketAddr, n: usize) -> std::io::Result<Vec<UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_port(true)?;
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        let std: std::net::UdpSocket = s.into();
        addr = std.local_addr()?;
        out.push(UdpSocket::from_std(std)?);
    }
    Ok(out)
}

/// Binds a TCP listener.
pub(crate) fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// One UDP worker.
pub(crate) async fn udp_worker(
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    sock: Arc<UdpSocket>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            _ = stop.changed() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("udp recv: {e}");
                    continue;
                }
            },
        };
        let m = &shared.metrics;
        m.query("udp");
        m.udp_bytes_in.inc_by(n as u64);
        let now = Instant::now();
        if limits.client.check(peer.ip(), now) != Verdict::Pass {
            m.drop_reason("client_rate");
            continue;
        }
        match limits.rrl.check(peer.ip(), now) {
            Verdict::Pass => {}
            Verdict::Drop => {
                m.drop_reason("rrl");
                continue;
            }
            Verdict::Slip => {
                if let Some(r) = short_answer(&buf[..n], ResponseCode::NoError, true) {
                    m.rrl_slipped.inc();
                    if sock.send_to(&r, peer).await.is_ok() {
                        m.udp_bytes_out.inc_by(r.len() as u64);
                    }
                }
                continue;
            }
        }
        let query = buf[..n].to_vec();
        let sh = shared.clone();
        let fut = async move { sh.handle(&query, peer, Transport::Udp).await };
        let mut fut = Box::pin(fut);
        match poll_once(fut.as_mut()) {
            Poll::Ready(reply) => {
                if let Some(r) = reply {
                    if sock.send_to(&r, peer).await.is_ok() {
                        m.udp_bytes_out.inc_by(r.len() as u64);
                    }
                }
            }
            Poll::Pending => {
                let sock = sock.clone();
                let metrics = shared.metrics.clone();
                tokio::spawn(async move {
                    if let Some(r) = fut.await {
                        if sock.send_to(&r, peer).await.is_ok() {
                            metrics.udp_bytes_out.inc_by(r.len() as u64);
                        }
                    }
                });
            }
        }
    }
}

/// The TCP accept loop.
pub(crate) async fn tcp_accept(
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(shared.config.limits.tcp_max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("tcp accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.metrics.tcp_refused.inc();
            drop(stream);
            continue;
        };
        let sh = shared.clone();
        let lim = limits.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            sh.metrics.tcp_connections.inc();
            tcp_conn(&sh, &lim, stream, peer, stop).await;
            sh.metrics.tcp_connections.dec();
            drop(permit);
        });
    }
}

async fn tcp_conn(
    shared: &Shared,
    limits: &Limits,
    mut s: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let _ = s.set_nodelay(true);
    let idle = shared.config.limits.tcp_idle_timeout;
    let mut buf = Vec::new();
    for _ in 0..shared.config.limits.tcp_max_queries_per_connection {
        let mut len = [0u8; 2];
        let read = tokio::select! {
            _ = stop.changed() => return,
            r = tokio::time::timeout(idle, s.read_exact(&mut len)) => r,
        };
        match read {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let n = u16::from_be_bytes(len) as usize;
        if n < 12 {
            return;
        }
        buf.resize(n, 0);
        match tokio::time::timeout(idle, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        shared.metrics.query("tcp");
        if limits.client.check(peer.ip(), Instant::now()) != Verdict::Pass {
            shared.metrics.drop_reason("client_rate");
            return;
        }
        let Some(reply) = shared.handle(&buf, peer, Transport::Tcp).await else {
            continue;
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        out.extend_from_slice(&reply);
        match tokio::time::timeout(idle, s.write_all(&out)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
