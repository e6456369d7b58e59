//! Forwarding to the upstream resolvers: UDP with a fresh socket (random
//! port, random ID) per attempt, TCP when the answer is truncated, the next
//! upstream when one times out, fails or answers SERVFAIL/REFUSED. The
//! upstream that last answered is tried first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// Every upstream timed out or failed.
    #[error("no upstream answered ({0})")]
    Exhausted(String),
    /// Too many upstream queries at once.
    #[error("too many upstream queries in flight")]
    Busy,
}

/// The configured upstreams.
#[derive(Debug)]
pub(crate) struct Upstreams {
    servers: Vec<SocketAddr>,
    /// Failed attempts, one counter per server (same order).
    failures: Vec<prometheus_client::metrics::counter::Counter>,
    preferred: AtomicUsize,
    timeout: Duration,
    slots: Semaphore,
}

/// EDNS payload we advertise to upstreams and clients (DNS flag day 2020).
pub(crate) const EDNS_PAYLOAD: u16 = 1232;

fn matches(q: &Query, resp: &Message, id: u16) -> bool {
    resp.metadata.id == id
        && resp.metadata.message_type == MessageType::Response
        && resp.queries.len() == 1
        && resp.queries[0].name() == q.name()
        && resp.queries[0].query_type() == q.query_type()
        && resp.queries[0].query_class() == q.query_class()
}

impl Upstreams {
    /// `failures` counts each server's failed attempts (timeouts, errors,
    /// SERVFAIL or REFUSED answers).
    pub(crate) fn new(
        servers: Vec<SocketAddr>,
        timeout: Duration,
        max_in_flight: usize,
        failures: impl Fn(SocketAddr) -> prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            failures: servers.iter().map(|s| failures(*s)).collect(),
            servers,
            preferred: AtomicUsize::new(0),
            timeout,
            slots: Semaphore::new(max_in_flight),
        }
    }

    /// Resolves `q` through the upstreams. Returns the answer and the index
    /// of the upstream that gave it.
    pub(crate) async fn resolve(
        &self,
        q: &Query,
        dnssec_ok: bool,
        checking_disabled: bool,
    ) -> Result<(Message, usize), UpstreamError> {
        let Ok(_slot) = self.slots.try_acquire() else {
            return Err(UpstreamError::Busy);
        };
        let n = self.servers.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last_err = String::new();
        let mut fallback: Option<(Message, usize)> = None;
        for k in 0..n {
            let i = (first + k) % n;
            let server = self.servers[i];
            match self.attempt(server, q, dnssec_ok, checking_disabled).await {
                Ok(m)
                    if matches!(
                        m.metadata.response_code,
                        ResponseCode::ServFail | ResponseCode::Refused
                    ) =>
                {
                    self.failures[i].inc();
                    last_err = format!("{server}: {}", m.metadata.response_code);
                    fallback.get_or_insert((m, i));
                }
                Ok(m) => {
                    if i != first {
                        self.preferred.store(i, Ordering::Relaxed);
                        tracing::info!(%server, "upstream failover");
                    }
                    return Ok((m, i));
                }
                Err(e) => {
                    self.failures[i].inc();
                    tracing::debug!(%server, "upstream attempt failed: {e}");
                    last_err = format!("{server}: {e}");
                }
            }
        }
        fallback.ok_or(UpstreamError::Exhausted(last_err))
    }

    async fn attempt(
        &self,
        server: SocketAddr,
        q: &Query,
        dnssec_ok: bool,
        cd: bool,
    ) -> std::io::Result<Message> {
        let mut m = Message::query();
        let id = m.metadata.id;
        m.metadata.recursion_desired = true;
        m.metadata.checking_disabled = cd;
        m.metadata.op_code = OpCode::Query;
        m.add_query(q.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        edns.set_dnssec_ok(dnssec_ok);
        m.set_edns(edns);
        let bytes = m.to_vec().map_err(std::io::Error::other)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let udp = tokio::time::timeout_at(deadline, udp_exchange(server, &bytes, q, id)).await;
        let resp = match udp {
            Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timeout")),
            Ok(r) => r?,
        };
        if !resp.metadata.truncation {
            return Ok(resp);
        }
        // Truncated: the same question over TCP, with its own deadline.
        let deadline = tokio::time::Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline, tcp_exchange(server, &bytes, q, id)).await {
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "tcp timeout",
            )),
            Ok(r) => r,
        }
    }
}

fn unspecified(server: SocketAddr) -> SocketAddr {
    match server.ip() {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

async fn udp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    q: &Query,
    id: u16,
) -> std::io::Result<Message> {
    let sock = UdpSocket::bind(unspecified(server)).await?;
    sock.connect(server).await?;
    sock.send(bytes).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Anything that does not match (spoofed, late) is ignored.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if matches(q, &m, id) {
                return Ok(m);
            }
        }
    }
}

/// One query and answer over TCP (RFC 7766 two-byte length prefix).
pub(crate) async fn tcp_exchange(
    server: SocketAddr,
    bytes: &[u8],
    q: &Query,
    id: u16,
) -> std::io::Result<Message> {
    let mut s = TcpStream::connect(server).await?;
    s.set_nodelay(true)?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    s.write_all(&out).await?;
    let m = read_tcp_message(&mut s).await?;
    if matches(q, &m, id) {
        Ok(m)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "answer does not match the question",
        ))
    }
}

/// Reads one length-prefixed DNS message.
pub(crate) async fn read_tcp_message(s: &mut TcpStream) -> std::io::Result<Message> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await?;
    Message::from_vec(&buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
