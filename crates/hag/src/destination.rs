//! The destination side: which destinations are refused before any attempt
//! (no SSRF), connecting to the others, and how a failure maps to the RFC
//! 8803 error the client receives.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};

use convert_proto::ErrorTlv;
use tokio::net::{TcpSocket, TcpStream};
use tracing::debug;

use crate::config::Config;

/// Why a destination is refused before any connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// Port 0.
    Port0,
    /// The IPv4 limited broadcast address.
    Broadcast,
    /// Loopback, unspecified or multicast: never, whatever the lists say.
    LoopbackUnspecifiedOrMulticast,
    /// One of the HAG's own addresses.
    TheHagItself,
    /// In `deny_destinations` (with the private and special ranges) and not
    /// in `allow_destinations`.
    DeniedRange,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Port0 => "port 0",
            Self::Broadcast => "broadcast",
            Self::LoopbackUnspecifiedOrMulticast => "loopback, unspecified or multicast",
            Self::TheHagItself => "the HAG itself",
            Self::DeniedRange => "denied range (private, operator or special)",
        })
    }
}

/// Why a destination is refused, `None` when it may be tried. `local` are
/// the HAG's own addresses.
pub fn refused_destination(
    local: &HashSet<IpAddr>,
    c: &Config,
    dest: &SocketAddr,
) -> Option<Denied> {
    let ip = dest.ip().to_canonical();
    if dest.port() == 0 {
        return Some(Denied::Port0);
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return Some(Denied::Broadcast);
        }
    }
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return Some(Denied::LoopbackUnspecifiedOrMulticast);
    }
    if local.contains(&ip) {
        return Some(Denied::TheHagItself);
    }
    if c.allow_destinations.iter().any(|n| n.contains(&ip)) {
        return None;
    }
    if c.deny_destinations.iter().any(|n| n.contains(&ip)) {
        return Some(Denied::DeniedRange);
    }
    None
}

/// Maps a failed connection attempt to the RFC 8803 error.
pub fn connect_error(e: &io::Error) -> ErrorTlv {
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

/// What the HAG was doing with the destination when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamPhase {
    /// Connecting (refused, unreachable, timed out).
    Connect,
    /// Writing the bytes that rode in the client's SYN.
    FirstBytes,
}

/// The destination failed before the Convert reply.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", match .phase { UpstreamPhase::Connect => "connecting", UpstreamPhase::FirstBytes => "gone before the first bytes" })]
pub struct UpstreamError {
    /// When.
    pub phase: UpstreamPhase,
    /// Why.
    #[source]
    pub source: io::Error,
}

impl UpstreamError {
    /// The error answered to the client.
    pub fn error_tlv(&self) -> ErrorTlv {
        match self.phase {
            UpstreamPhase::Connect => connect_error(&self.source),
            UpstreamPhase::FirstBytes => ErrorTlv::connection_reset(),
        }
    }
}

/// Connects to `dest` within the connect timeout, with the configured
/// congestion control and `TCP_NODELAY`.
pub(crate) async fn connect(c: &Config, dest: SocketAddr) -> io::Result<TcpStream> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use convert_proto::ErrorCode;

    fn config(extra: &str) -> Config {
        Config::from_toml(&format!(
            "listen = \"10.66.0.1:5124\"\nsubscriber_prefixes = [\"10.64.0.0/16\"]\ndeny_destinations = [\"198.18.0.0/15\"]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn destinations_refused_and_allowed() {
        let c = config("allow_destinations = [\"10.200.0.0/16\"]\n");
        let local: HashSet<IpAddr> = ["203.0.113.1".parse().unwrap()].into();
        let check = |d: &str| refused_destination(&local, &c, &d.parse().unwrap());
        assert_eq!(check("93.184.216.34:0"), Some(Denied::Port0));
        assert_eq!(check("255.255.255.255:80"), Some(Denied::Broadcast));
        for d in [
            "127.0.0.1:80",
            "0.0.0.0:80",
            "224.0.0.1:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[ff02::1]:80",
        ] {
            assert_eq!(
                check(d),
                Some(Denied::LoopbackUnspecifiedOrMulticast),
                "{d}"
            );
        }
        assert_eq!(check("203.0.113.1:80"), Some(Denied::TheHagItself));
        for d in [
            "10.1.2.3:80",
            "192.168.1.1:443",
            "172.16.0.1:80",
            "100.64.0.1:80",
            "169.254.1.1:80",
            "[fc00::1]:80",
            "198.18.0.1:80",
        ] {
            assert_eq!(check(d), Some(Denied::DeniedRange), "{d}");
        }
        assert_eq!(check("10.200.1.1:80"), None, "allow_destinations overrides");
        assert_eq!(check("93.184.216.34:443"), None);
        assert_eq!(check("[2001:db8::1]:443"), None);
        // Allowing a loopback range changes nothing.
        let c = config("allow_destinations = [\"127.0.0.0/8\"]\n");
        assert_eq!(
            refused_destination(&local, &c, &"127.0.0.1:80".parse().unwrap()),
            Some(Denied::LoopbackUnspecifiedOrMulticast)
        );
    }

    #[test]
    fn connect_errors_map_to_the_rfc_codes() {
        let os = |n| io::Error::from_raw_os_error(n);
        assert_eq!(
            connect_error(&os(libc_errno::ECONNREFUSED)).code,
            ErrorCode::CONNECTION_RESET
        );
        let unreach = connect_error(&os(libc_errno::ENETUNREACH));
        assert_eq!(unreach, ErrorTlv::destination_unreachable(0));
        assert_eq!(
            connect_error(&os(libc_errno::EHOSTUNREACH)),
            ErrorTlv::destination_unreachable(1)
        );
        assert_eq!(
            connect_error(&io::Error::new(io::ErrorKind::TimedOut, "t")),
            ErrorTlv::destination_unreachable(1)
        );
        assert_eq!(
            connect_error(&os(libc_errno::EACCES)),
            ErrorTlv::network_failure(0)
        );
        let first = UpstreamError {
            phase: UpstreamPhase::FirstBytes,
            source: io::Error::from(io::ErrorKind::BrokenPipe),
        };
        assert_eq!(first.error_tlv().code, ErrorCode::CONNECTION_RESET);
    }

    mod libc_errno {
        use nix::errno::Errno;
        pub(super) const ECONNREFUSED: i32 = Errno::ECONNREFUSED as i32;
        pub(super) const ENETUNREACH: i32 = Errno::ENETUNREACH as i32;
        pub(super) const EHOSTUNREACH: i32 = Errno::EHOSTUNREACH as i32;
        pub(super) const EACCES: i32 = Errno::EACCES as i32;
    }
}
