//! What the kernel knows about one MPTCP connection: `MPTCP_INFO`, and per
//! subflow `MPTCP_TCPINFO` (a `tcp_info` each) zipped with
//! `MPTCP_SUBFLOW_ADDRS` (its local and remote address).
//!
//! The structures are read as byte buffers at the offsets of the kernel's
//! uapi headers (`linux/mptcp.h`, `linux/tcp.h`); the kernel reports how many
//! bytes it filled and fields past that are left at zero, so an older kernel
//! gives zeros rather than garbage.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

const SOL_MPTCP: i32 = 284;
const MPTCP_INFO: i32 = 1;
const MPTCP_TCPINFO: i32 = 2;
const MPTCP_SUBFLOW_ADDRS: i32 = 3;
/// `tcpi_options` bit: data in the SYN was sent and acknowledged, or received.
const TCPI_OPT_SYN_DATA: u8 = 32;

/// Connection-level counters (`struct mptcp_info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MptcpInfo {
    /// Subflows currently established besides the initial one.
    pub subflows: u8,
    /// Subflows ever created (kernel ≥ 6.10), 0 when unknown.
    pub subflows_total: u8,
    /// Data-level bytes sent, received and acknowledged.
    pub bytes_sent: u64,
    /// Data-level bytes received.
    pub bytes_received: u64,
    /// Data-level bytes acknowledged by the peer.
    pub bytes_acked: u64,
    /// Data-level bytes retransmitted.
    pub bytes_retrans: u64,
    /// `mptcpi_flags`: bit 0 fallback to TCP, bit 1 remote key received.
    pub flags: u32,
}

impl MptcpInfo {
    /// The connection fell back to plain TCP.
    pub fn fallback(&self) -> bool {
        self.flags & 1 != 0
    }

    /// The peer's key arrived: on a server, the third ACK of the MP_CAPABLE
    /// handshake was received and the connection is fully established.
    pub fn remote_key_received(&self) -> bool {
        self.flags & 2 != 0
    }
}

/// One subflow: its addresses and its TCP counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubflowInfo {
    /// Local address (tells which link it uses).
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// `tcpi_bytes_acked`: payload bytes this subflow sent that were acked.
    pub bytes_acked: u64,
    /// `tcpi_bytes_received`: payload bytes this subflow received.
    pub bytes_received: u64,
    /// Smoothed RTT in microseconds.
    pub rtt_us: u32,
    /// `tcpi_total_retrans`: segments this subflow retransmitted.
    pub total_retrans: u32,
    /// Milliseconds since this subflow last received anything (the lesser
    /// of `tcpi_last_data_recv` and `tcpi_last_ack_recv`).
    pub last_recv_ms: u32,
    /// The SYN carried data that the peer accepted (`TCPI_OPT_SYN_DATA`):
    /// TCP Fast Open worked on this subflow.
    pub syn_data: bool,
}

fn getsockopt_buf(sock: &impl AsFd, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
    let fd = sock.as_fd().as_raw_fd();
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `fd` is borrowed from a live socket for the call; `buf` is a
    // valid writable buffer of `len` bytes and the kernel writes at most `len`
    // bytes and updates `len`.
    let rc = unsafe { libc::getsockopt(fd, level, name, buf.as_mut_ptr().cast(), &mut len) };
    if rc == 0 {
        Ok((len as usize).min(buf.len()))
    } else {
        Err(io::Error::last_os_error())
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_ne_bytes(a)
        })
        .unwrap_or(0)
}

/// Reads `MPTCP_INFO`. Fails with `EOPNOTSUPP` on a plain TCP socket.
pub fn mptcp_info(sock: &impl AsFd) -> io::Result<MptcpInfo> {
    let mut buf = [0u8; 256];
    let n = getsockopt_buf(sock, SOL_MPTCP, MPTCP_INFO, &mut buf)?;
    let b = &buf[..n];
    Ok(MptcpInfo {
        subflows: b.first().copied().unwrap_or(0),
        flags: u32_at(b, 8),
        bytes_retrans: u64_at(b, 48),
        bytes_sent: u64_at(b, 56),
        bytes_received: u64_at(b, 64),
        bytes_acked: u64_at(b, 72),
        subflows_total: b.get(80).copied().unwrap_or(0),
    })
}

/// Header of the `MPTCP_TCPINFO`/`MPTCP_SUBFLOW_ADDRS` answers
/// (`struct mptcp_subflow_data`): 4 × u32.
const SUBFLOW_DATA_LEN: usize = 16;
const MAX_SUBFLOWS: usize = 8;

/// Asks for an array of per-subflow records of `elem` bytes each; returns the
/// records actually filled.
fn subflow_array(sock: &impl AsFd, name: i32, elem: usize) -> io::Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; SUBFLOW_DATA_LEN + elem * MAX_SUBFLOWS];
    buf[0..4].copy_from_slice(&(SUBFLOW_DATA_LEN as u32).to_ne_bytes());
    // num_subflows (out), size_kernel (out), size_user (in)
    buf[12..16].copy_from_slice(&(elem as u32).to_ne_bytes());
    let n = getsockopt_buf(sock, SOL_MPTCP, name, &mut buf)?;
    let b = &buf[..n];
    let num = u32_at(b, 4) as usize;
    let size_user = (u32_at(b, 12) as usize).min(elem);
    let mut out = Vec::new();
    for i in 0..num.min(MAX_SUBFLOWS) {
        let start = SUBFLOW_DATA_LEN + i * elem;
        match b.get(start..start + size_user) {
            Some(rec) => out.push(rec.to_vec()),
            None => break,
        }
    }
    Ok(out)
}

/// `struct tcp_info` is 232+ bytes on 6.x; ask for 256.
const TCP_INFO_LEN: usize = 256;
/// Each address of `struct mptcp_subflow_addrs` is a union that includes
/// `struct __kernel_sockaddr_storage`: 128 bytes; local then remote.
const ADDR_LEN: usize = 128;

fn sockaddr_at(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]) as i32;
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match family {
        libc::AF_INET => {
            let ip = Ipv4Addr::new(*b.get(4)?, *b.get(5)?, *b.get(6)?, *b.get(7)?);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        libc::AF_INET6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(b.get(8..24)?);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}

/// Reads every live subflow's addresses and counters.
pub fn subflows(sock: &impl AsFd) -> io::Result<Vec<SubflowInfo>> {
    let infos = subflow_array(sock, MPTCP_TCPINFO, TCP_INFO_LEN)?;
    let addrs = subflow_array(sock, MPTCP_SUBFLOW_ADDRS, 2 * ADDR_LEN)?;
    Ok(infos
        .iter()
        .zip(addrs.iter())
        .filter_map(|(ti, ad)| {
            Some(SubflowInfo {
                local: sockaddr_at(ad.get(..ADDR_LEN)?)?,
                remote: sockaddr_at(ad.get(ADDR_LEN..)?)?,
                rtt_us: u32_at(ti, 68),
                total_retrans: u32_at(ti, 100),
                last_recv_ms: u32_at(ti, 52).min(u32_at(ti, 56)),
                syn_data: ti.get(5).is_some_and(|o| o & TCPI_OPT_SYN_DATA != 0),
                bytes_acked: u64_at(ti, 120),
                bytes_received: u64_at(ti, 128),
            })
        })
        .collect())
}

/// Whether the connection's first bytes rode in the SYN (TCP Fast Open), for
/// an MPTCP socket (its initial subflow) or a plain TCP one.
pub fn syn_data(sock: &impl AsFd) -> io::Result<bool> {
    match subflows(sock) {
        Ok(s) if !s.is_empty() => return Ok(s[0].syn_data),
        _ => {}
    }
    let mut buf = [0u8; TCP_INFO_LEN];
    let n = getsockopt_buf(sock, libc::IPPROTO_TCP, libc::TCP_INFO, &mut buf)?;
    Ok(buf[..n].get(5).is_some_and(|o| o & TCPI_OPT_SYN_DATA != 0))
}

/// Byte counts per subflow, kept across samples: subflows disappear from the
/// kernel's list when they close, so the last sample of each is kept.
#[derive(Clone, Debug, Default)]
pub struct SubflowTotals {
    per_subflow: std::collections::HashMap<(SocketAddr, SocketAddr), (u64, u64)>,
}

impl SubflowTotals {
    /// Takes one sample of the connection's live subflows.
    pub fn sample(&mut self, sock: &impl AsFd) {
        if let Ok(list) = subflows(sock) {
            self.add(&list);
        }
    }

    /// Folds in one sample.
    pub fn add(&mut self, list: &[SubflowInfo]) {
        for s in list {
            let e = self.per_subflow.entry((s.local, s.remote)).or_default();
            e.0 = e.0.max(s.bytes_acked);
            e.1 = e.1.max(s.bytes_received);
        }
    }

    /// Totals (bytes sent and acknowledged, bytes received) grouped by the
    /// local (`local = true`) or remote address of each subflow.
    pub fn by_address(&self, local: bool) -> std::collections::HashMap<IpAddr, (u64, u64)> {
        let mut out: std::collections::HashMap<IpAddr, (u64, u64)> = Default::default();
        for ((l, r), (tx, rx)) in &self.per_subflow {
            let ip = if local { l.ip() } else { r.ip() }.to_canonical();
            let e = out.entry(ip).or_default();
            e.0 += tx;
            e.1 += rx;
        }
        out
    }
}

/// A task sampling a connection's subflows until [`Sampler::finish`].
pub struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<SubflowTotals>,
}

/// Samples the subflows of `sock` (a duplicate of the connection's
/// descriptor, closed when the sampler finishes) every `every`.
pub fn spawn_sampler(sock: socket2::Socket, every: std::time::Duration) -> Sampler {
    spawn_sampler_with(sock, every, |_| {})
}

/// [`spawn_sampler`], also handing each sample of the live subflows to
/// `on_sample` (a live view: which links carry the connection now, their
/// retransmissions).
pub fn spawn_sampler_with(
    sock: socket2::Socket,
    every: std::time::Duration,
    mut on_sample: impl FnMut(&[SubflowInfo]) + Send + 'static,
) -> Sampler {
    let (stop, mut rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut totals = SubflowTotals::default();
        let mut tick = tokio::time::interval(every);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = &mut rx => true,
            };
            if let Ok(list) = subflows(&sock) {
                totals.add(&list);
                on_sample(&list);
            }
            if last {
                break;
            }
        }
        totals
    });
    Sampler { stop, task }
}

impl Sampler {
    /// Takes a last sample and returns the totals.
    pub async fn finish(self) -> SubflowTotals {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// Waits (at most `limit`) until an MPTCP connection accepted with data in
/// the SYN is fully established: the client's third ACK, carrying the keys,
/// has arrived. Returns at once for plain TCP and for a fallen-back
/// connection.
///
/// Linux 6.18 does not push data written on a Fast Open MPTCP socket before
/// that ACK: it stays queued until the client sends something else, which in
/// a request/response exchange never comes (measured in the lab: the reply
/// left only when the client gave up). A server therefore writes only after
/// this; it costs nothing when the wait overlaps with connecting onwards.
///
/// The kernel wakes the socket when the ACK arrives. A second registration
/// of it with the reactor (the stream's own readiness must stay as it is)
/// ends the wait at that wake-up; a 1 ms timer is the fallback. Measured in
/// the rural lab: the reply left 0.1 ms after the ACK, against 0.1 to 2.2 ms
/// with the timer alone.
pub async fn fully_established(sock: &tokio::net::TcpStream, limit: std::time::Duration) {
    use tokio::io::{unix::AsyncFd, Interest};
    let until = std::time::Instant::now() + limit;
    let both = Interest::READABLE | Interest::WRITABLE;
    let watch = socket2::SockRef::from(sock)
        .try_clone()
        .ok()
        // SAFETY: the duplicate is an open descriptor the `Socket` owns for
        // the `AsyncFd`'s whole life, and `as_raw_fd` always returns it.
        .and_then(|dup| unsafe { AsyncFd::register_with_interest(dup, both) }.ok());
    while std::time::Instant::now() < until {
        match mptcp_info(sock) {
            Ok(i) if !i.remote_key_received() && !i.fallback() => {
                let tick = tokio::time::sleep(std::time::Duration::from_millis(1));
                match &watch {
                    Some(w) => tokio::select! {
                        r = w.ready(both) => {
                            if let Ok(mut g) = r {
                                g.clear_ready();
                            }
                        }
                        () = tick => {}
                    },
                    None => tick.await,
                }
            }
            _ => return,
        }
    }
}
