//! The only crate in Tandem that touches socket options and netlink.
//!
//! What it does:
//! - creates Multipath TCP sockets (falling back to plain TCP where the kernel
//!   has no MPTCP), listening ones with server-side TCP Fast Open and
//!   connecting ones with client-side Fast Open (`TCP_FASTOPEN_CONNECT`, and
//!   `TCP_FASTOPEN_NO_COOKIE` for a managed network), [`sock`];
//! - transparent-proxy listeners (`IP_TRANSPARENT`) for TPROXY interception;
//! - reads `MPTCP_INFO` and the per-subflow `MPTCP_TCPINFO` /
//!   `MPTCP_SUBFLOW_ADDRS` so that callers can tell how many bytes crossed each
//!   path, [`info`];
//! - drives the kernel's in-kernel path manager (endpoints, limits) over
//!   generic netlink, [`pm`];
//! - everything over rtnetlink, [`route`]: policy rules and routes (for
//!   the CPE), veth pairs across namespaces, link state, addresses and
//!   counters ([`route::link`]) and htb/bfifo shaping ([`route::tc`]) for
//!   the lab; and conntrack entries over ctnetlink, [`conntrack`]: typed
//!   messages, one connection per process and protocol (the private `nl`
//!   module), typed errors naming the operation and the kernel's errno.
//!
//! What it does not do: no relaying, no protocol, no policy. Callers decide
//! which options to set; this crate only knows how.
//!
//! What stays outside: nftables (the CPE loads its table with `nft -f`, as
//! there is no stable typed nftables netlink library); creating and
//! entering network namespaces (files and `setns`, the lab's `netns`
//! module), and the lab's `ethtool` and `iptables` commands.
//!
//! Every `unsafe` block is a `setsockopt`/`getsockopt` call on a file
//! descriptor borrowed from a live socket, and carries a `// SAFETY:` comment.

pub mod conntrack;
pub mod info;
mod nl;
pub mod pm;
pub mod route;
pub mod sock;

pub use info::{MptcpInfo, SubflowInfo};
pub use sock::{
    connect_fastopen, is_mptcp, listen, set_congestion, set_rcvbuf_force, set_reset_on_close,
    ConnectOptions, ListenOptions, SockError,
};
