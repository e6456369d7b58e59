//! Socket creation: MPTCP listeners and Fast Open connectors.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// What went wrong while preparing a socket; says which step.
#[derive(Debug, thiserror::Error)]
pub enum SockError {
    /// A system call failed.
    #[error("{step}: {source}")]
    Io {
        /// The step that failed, e.g. "bind 10.0.0.1:443".
        step: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
}

impl SockError {
    fn io(step: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            step: step.into(),
            source,
        }
    }

    /// The underlying I/O error kind.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Self::Io { source, .. } => source.kind(),
        }
    }
}

/// How to open a listening socket.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// Ask for Multipath TCP (falls back to TCP when the kernel refuses).
    pub mptcp: bool,
    /// Server-side TCP Fast Open queue length; 0 disables Fast Open.
    pub fastopen_queue: u32,
    /// Accept data in a SYN that carries no Fast Open cookie (RFC 8803 allows
    /// it on a managed network). Needs `fastopen_queue > 0`.
    pub fastopen_no_cookie: bool,
    /// `IP_TRANSPARENT`: accept connections for addresses that are not local
    /// (TPROXY interception).
    pub transparent: bool,
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// Congestion control for accepted connections, e.g. "cubic".
    pub congestion: Option<String>,
    /// Fixed receive buffer for accepted connections (`SO_RCVBUF`, which
    /// turns autotuning off), see [`ConnectOptions::rcvbuf`].
    pub rcvbuf: Option<usize>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self {
            mptcp: true,
            fastopen_queue: 0,
            fastopen_no_cookie: false,
            transparent: false,
            backlog: 1024,
            congestion: None,
            rcvbuf: None,
        }
    }
}

/// How to open a connecting socket.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Ask for Multipath TCP (falls back to TCP when the kernel refuses).
    pub mptcp: bool,
    /// Client-side TCP Fast Open: `connect` returns at once and the first
    /// `write` leaves in the SYN.
    pub fastopen: bool,
    /// Send data in the SYN even without a cookie from the server.
    pub fastopen_no_cookie: bool,
    /// Local address to bind before connecting (selects the first subflow's
    /// link).
    pub bind: Option<SocketAddr>,
    /// Congestion control, e.g. "cubic".
    pub congestion: Option<String>,
    /// `SO_MARK` for policy routing.
    pub mark: Option<u32>,
    /// Fixed receive buffer (`SO_RCVBUF`, autotuning off). Multipath TCP
    /// over links of very different delay needs room for the data that
    /// waits, out of order, for the slower link: with the kernel's 128 KiB
    /// start, the receiver drops in-window data it has no room for
    /// (`MPTcpExtNoDSSInWindow`) and the connection crawls on data-level
    /// retransmissions (measured in the lab: 0.7 instead of 34 Mbit/s).
    pub rcvbuf: Option<usize>,
}

fn new_socket(addr: &SocketAddr, mptcp: bool) -> Result<(Socket, bool), SockError> {
    let domain = Domain::for_address(*addr);
    if mptcp {
        match Socket::new(domain, Type::STREAM, Some(Protocol::MPTCP)) {
            Ok(s) => return Ok((s, true)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPROTONOSUPPORT) | Some(libc::ENOPROTOOPT) | Some(libc::EINVAL)
                ) =>
            {
                tracing::warn!("kernel refused an MPTCP socket ({e}); using plain TCP");
            }
            Err(e) => return Err(SockError::io("socket(MPTCP)", e)),
        }
    }
    Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
        .map(|s| (s, false))
        .map_err(|e| SockError::io("socket(TCP)", e))
}

fn setsockopt_int(sock: &impl AsFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    let fd = sock.as_fd().as_raw_fd();
    // SAFETY: `fd` is borrowed from a live socket for the duration of the call;
    // the option value points to a local i32 whose size is passed exactly.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the congestion control algorithm on a socket (MPTCP applies it to
/// every subflow).
pub fn set_congestion(sock: &impl AsFd, name: &str) -> io::Result<()> {
    SockRef::from(sock).set_tcp_congestion(name.as_bytes())
}

/// Whether a connected or listening socket is Multipath TCP.
pub fn is_mptcp(sock: &impl AsFd) -> bool {
    SockRef::from(sock)
        .protocol()
        .ok()
        .flatten()
        .is_some_and(|p| p == Protocol::MPTCP)
}

/// `SO_RCVBUFFORCE` (past `net.core.rmem_max`, needs CAP_NET_ADMIN), else
/// `SO_RCVBUF`.
fn set_rcvbuf(sock: &Socket, n: usize) -> Result<(), SockError> {
    if set_rcvbuf_force(sock.as_raw_fd(), n / 2).is_ok() {
        return Ok(());
    }
    sock.set_recv_buffer_size(n)
        .map_err(|e| SockError::io("SO_RCVBUF", e))
}

/// Opens a listening socket as `opts` says. Returns the listener and whether
/// it really is MPTCP.
pub fn listen(addr: SocketAddr, opts: &ListenOptions) -> Result<(TcpListener, bool), SockError> {
    let (sock, mptcp) = new_socket(&addr, opts.mptcp)?;
    sock.set_reuse_address(true)
        .map_err(|e| SockError::io("SO_REUSEADDR", e))?;
    if addr.is_ipv6() {
        sock.set_only_v6(false).ok();
    }
    if opts.transparent {
        let r = if addr.is_ipv4() {
            sock.set_ip_transparent_v4(true)
        } else {
            sock.set_ip_transparent_v6(true)
        };
        r.map_err(|e| SockError::io("IP_TRANSPARENT", e))?;
    }
    if let Some(cc) = &opts.congestion {
        set_congestion(&sock, cc).map_err(|e| SockError::io(format!("TCP_CONGESTION {cc}"), e))?;
    }
    if let Some(n) = opts.rcvbuf {
        set_rcvbuf(&sock, n)?;
    }
    sock.bind(&addr.into())
        .map_err(|e| SockError::io(format!("bind {addr}"), e))?;
    if opts.fastopen_queue > 0 {
        setsockopt_int(
            &sock,
            libc::IPPROTO_TCP,
            libc::TCP_FASTOPEN,
            opts.fastopen_queue as i32,
        )
        .map_err(|e| SockError::io("TCP_FASTOPEN", e))?;
        if opts.fastopen_no_cookie {
            setsockopt_int(&sock, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_NO_COOKIE, 1)
                .map_err(|e| SockError::io("TCP_FASTOPEN_NO_COOKIE", e))?;
        }
    }
    sock.listen(opts.backlog)
        .map_err(|e| SockError::io(format!("listen {addr}"), e))?;
    sock.set_nonblocking(true)
        .map_err(|e| SockError::io("O_NONBLOCK", e))?;
    Ok((sock.into(), mptcp))
}

/// Starts a connection to `dest`. With Fast Open the kernel sends nothing yet:
/// the SYN leaves with the first write, carrying its bytes. Without it, the
/// connection is in progress (non-blocking) when this returns. The caller wraps
/// the result in `tokio::net::TcpStream::from_std`.
///
/// Returns the stream and whether it is MPTCP.
pub fn connect_fastopen(
    dest: SocketAddr,
    opts: &ConnectOptions,
) -> Result<(TcpStream, bool), SockError> {
    let (sock, mptcp) = new_socket(&dest, opts.mptcp)?;
    if let Some(cc) = &opts.congestion {
        set_congestion(&sock, cc).map_err(|e| SockError::io(format!("TCP_CONGESTION {cc}"), e))?;
    }
    if let Some(mark) = opts.mark {
        sock.set_mark(mark)
            .map_err(|e| SockError::io("SO_MARK", e))?;
    }
    sock.set_tcp_nodelay(true).ok();
    if let Some(n) = opts.rcvbuf {
        set_rcvbuf(&sock, n)?;
    }
    if let Some(bind) = opts.bind {
        sock.bind(&bind.into())
            .map_err(|e| SockError::io(format!("bind {bind}"), e))?;
    }
    if opts.fastopen {
        setsockopt_int(&sock, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT, 1)
            .map_err(|e| SockError::io("TCP_FASTOPEN_CONNECT", e))?;
        if opts.fastopen_no_cookie {
            setsockopt_int(&sock, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_NO_COOKIE, 1)
                .map_err(|e| SockError::io("TCP_FASTOPEN_NO_COOKIE", e))?;
        }
    }
    sock.set_nonblocking(true)
        .map_err(|e| SockError::io("O_NONBLOCK", e))?;
    match sock.connect(&dest.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(SockError::io(format!("connect {dest}"), e)),
    }
    Ok((sock.into(), mptcp))
}

/// Makes the next close send RST instead of FIN (`SO_LINGER` with a zero
/// timeout, which never blocks), so that the peer sees a failure.
pub fn set_reset_on_close(sock: &impl AsFd) {
    let _ = SockRef::from(sock).set_linger(Some(std::time::Duration::ZERO));
}

/// `SO_RCVBUFFORCE` on a socket known only by its raw descriptor (the link
/// emulator's netlink socket, which its crate does not expose otherwise).
/// Root may exceed `net.core.rmem_max` this way; the kernel doubles the value.
pub fn set_rcvbuf_force(fd: std::os::fd::RawFd, bytes: usize) -> io::Result<()> {
    let val = i32::try_from(bytes).unwrap_or(i32::MAX);
    // SAFETY: setsockopt only reads `size_of::<i32>()` bytes from a live local
    // i32; an invalid `fd` makes the kernel answer EBADF, nothing worse.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&val as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
