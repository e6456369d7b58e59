//! Connection tracking over ctnetlink (what `conntrack -L/-D --mark`
//! does), with typed messages on one connection per process.
//!
//! The messages are `netlink-packet-netfilter`'s (`ConntrackMessage`
//! inside a `NetfilterMessage`, parsed with every length checked): a
//! request is built as a typed message, never as bytes, and a reply is read
//! through its attributes, never at offsets. That crate has no typed
//! `CTA_MARK_MASK`; [`mark_mask`] builds it as a raw attribute of its
//! documented layout (a big-endian `u32`, like `CTA_MARK`).
//!
//! Two operations, both filtered by mark (the kernel applies the filter,
//! `ctnetlink_filter_match`, since Linux 4.7 for dumps and 5.x for flushes):
//!
//! * [`Conntrack::flows`]: `IPCTNL_MSG_CT_GET` dump with `CTA_MARK` and
//!   `CTA_MARK_MASK`: the entries whose mark, under the mask, equals it;
//! * [`Conntrack::delete`]: `IPCTNL_MSG_CT_DELETE` without a tuple, with
//!   the same two attributes: a flush of the matching entries. The next
//!   packet of such a flow creates a new entry (and, behind NAT, a new
//!   mapping), which is how the CPE moves UDP flows to the other link.
//!
//! [`Conntrack::shared`] is the process's `NETLINK_NETFILTER` connection
//! (opened in the calling thread's network namespace, reopened if it died);
//! [`Conntrack::connect`] opens a private one.

use std::fmt;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{DefaultNla, NetlinkMessage, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use rtnetlink::sys::protocols::NETLINK_NETFILTER;

use crate::nl::{Conn, Failure, Shared};

/// `CTA_MARK_MASK` (`include/uapi/linux/netfilter/nfnetlink_conntrack.h`).
const CTA_MARK_MASK: u16 = 21;

/// Entries whose conntrack mark, under `mask`, equals `mark`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MarkFilter {
    /// The mark (already masked).
    pub mark: u32,
    /// The bits compared.
    pub mask: u32,
}

impl fmt::Display for MarkFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mark {:#x}/{:#x}", self.mark, self.mask)
    }
}

/// One conntrack entry, by its original direction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// IP protocol number (17: UDP, 6: TCP).
    pub protocol: u8,
    /// Source address of the original direction.
    pub src: IpAddr,
    /// Destination address of the original direction.
    pub dst: IpAddr,
    /// Source port (protocols with ports only).
    pub src_port: Option<u16>,
    /// Destination port (protocols with ports only).
    pub dst_port: Option<u16>,
    /// The entry's mark (0 when the kernel sends none).
    pub mark: u32,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proto {} {}", self.protocol, self.src)?;
        if let Some(p) = self.src_port {
            write!(f, ":{p}")?;
        }
        write!(f, " → {}", self.dst)?;
        if let Some(p) = self.dst_port {
            write!(f, ":{p}")?;
        }
        write!(f, " mark {:#x}", self.mark)
    }
}

/// The operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConntrackOp {
    /// Listing the entries matching a mark.
    List(MarkFilter),
    /// Deleting the entries matching a mark.
    Delete(MarkFilter),
}

impl fmt::Display for ConntrackOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::List(m) => write!(f, "list entries with {m}"),
            Self::Delete(m) => write!(f, "delete entries with {m}"),
        }
    }
}

/// Errors from [`Conntrack`].
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The netlink socket could not be opened (or no tokio runtime runs).
    #[error("ctnetlink: opening the connection: {0}")]
    Open(#[source] io::Error),
    /// The kernel refused the operation.
    #[error(
        "conntrack {op} failed: {}{}",
        io::Error::from_raw_os_error(*.errno),
        crate::pm::fmt_extack(.msg)
    )]
    Kernel {
        /// What was asked.
        op: ConntrackOp,
        /// The positive errno.
        errno: i32,
        /// The kernel's extended-ack message, empty if it gave none.
        msg: String,
    },
    /// The connection died before the kernel answered.
    #[error("conntrack {op}: the netlink connection closed")]
    Closed {
        /// What was asked.
        op: ConntrackOp,
    },
    /// No complete answer in time.
    #[error("conntrack {op}: no answer from the kernel")]
    Timeout {
        /// What was asked.
        op: ConntrackOp,
    },
    /// A reply the kernel sent does not describe an entry.
    #[error("conntrack {op}: malformed entry: {what}")]
    Malformed {
        /// What was asked.
        op: ConntrackOp,
        /// What is missing.
        what: &'static str,
    },
}

impl ConntrackError {
    /// The kernel's errno, if the kernel answered with one.
    #[must_use]
    pub const fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// The `CTA_MARK_MASK` attribute.
#[must_use]
pub fn mark_mask(mask: u32) -> ConntrackAttribute {
    ConntrackAttribute::Other(DefaultNla::new(CTA_MARK_MASK, mask.to_be_bytes().to_vec()))
}

fn filter_attrs(m: MarkFilter) -> Vec<ConntrackAttribute> {
    vec![ConntrackAttribute::CtaMark(m.mark), mark_mask(m.mask)]
}

/// Both families (`AF_UNSPEC`), `NFNETLINK_V0`, resource id 0.
fn header() -> NetfilterHeader {
    NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0)
}

/// The request of [`Conntrack::delete`].
#[must_use]
pub fn delete_request(m: MarkFilter) -> NetlinkMessage<NetfilterMessage> {
    let mut nl = NetlinkMessage::from(NetfilterMessage::new(
        header(),
        ConntrackMessage::Delete(filter_attrs(m)),
    ));
    nl.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    nl.finalize();
    nl
}

/// The request of [`Conntrack::flows`].
#[must_use]
pub fn dump_request(m: MarkFilter) -> NetlinkMessage<NetfilterMessage> {
    let mut nl = NetlinkMessage::from(NetfilterMessage::new(
        header(),
        ConntrackMessage::Get(filter_attrs(m)),
    ));
    nl.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    nl.finalize();
    nl
}

/// The entry a dump reply describes.
///
/// # Errors
/// The reply is not a conntrack entry, or it has no complete original tuple
/// (protocol and both addresses).
pub fn flow_from_reply(m: &NetfilterMessage) -> Result<Flow, &'static str> {
    let NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)) = &m.inner else {
        return Err("not a conntrack entry");
    };
    let (mut protocol, mut src, mut dst) = (None, None, None);
    let (mut src_port, mut dst_port, mut mark) = (None, None, 0);
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(tuples) => {
                for t in tuples {
                    match t {
                        Tuple::Ip(ips) => {
                            for ip in ips {
                                match ip {
                                    IPTuple::SourceAddress(a) => src = Some(*a),
                                    IPTuple::DestinationAddress(a) => dst = Some(*a),
                                    _ => {}
                                }
                            }
                        }
                        Tuple::Proto(ps) => {
                            for p in ps {
                                match p {
                                    ProtoTuple::Protocol(n) => protocol = Some(u8::from(*n)),
                                    ProtoTuple::SourcePort(v) => src_port = Some(*v),
                                    ProtoTuple::DestinationPort(v) => dst_port = Some(*v),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            ConntrackAttribute::CtaMark(v) => mark = *v,
            _ => {}
        }
    }
    Ok(Flow {
        protocol: protocol.ok_or("no protocol in the original tuple")?,
        src: src.ok_or("no source address in the original tuple")?,
        dst: dst.ok_or("no destination address in the original tuple")?,
        src_port,
        dst_port,
        mark,
    })
}

static SHARED: Shared<NetfilterMessage> = Shared::new();

/// A handle to a ctnetlink connection (cheap to clone). Needs
/// `CAP_NET_ADMIN` in the namespace.
#[derive(Clone, Debug)]
pub struct Conntrack {
    conn: Conn<NetfilterMessage>,
}

impl Conntrack {
    /// The process's connection, opened on first use (in the calling
    /// thread's network namespace, its task on the current tokio runtime)
    /// and reopened if it died. Must be called within a tokio runtime.
    pub fn shared() -> Result<Self, ConntrackError> {
        SHARED
            .get(NETLINK_NETFILTER)
            .map(|conn| Self { conn })
            .map_err(ConntrackError::Open)
    }

    /// A private connection, closed when its last handle is dropped.
    pub fn connect() -> Result<Self, ConntrackError> {
        Conn::open(NETLINK_NETFILTER)
            .map(|conn| Self { conn })
            .map_err(ConntrackError::Open)
    }

    async fn request(
        &self,
        op: ConntrackOp,
        msg: NetlinkMessage<NetfilterMessage>,
    ) -> Result<Vec<NetfilterMessage>, ConntrackError> {
        tracing::trace!(%op, "ctnetlink request");
        self.conn.request(msg).await.map_err(|f| match f {
            Failure::Kernel { errno, msg } => ConntrackError::Kernel { op, errno, msg },
            Failure::Closed => ConntrackError::Closed { op },
            Failure::Timeout => ConntrackError::Timeout { op },
        })
    }

    /// The entries (both families) whose mark matches `m`.
    pub async fn flows(&self, m: MarkFilter) -> Result<Vec<Flow>, ConntrackError> {
        let op = ConntrackOp::List(m);
        let replies = self.request(op, dump_request(m)).await?;
        replies
            .iter()
            .map(|r| flow_from_reply(r).map_err(|what| ConntrackError::Malformed { op, what }))
            .collect()
    }

    /// Deletes the entries (both families) whose mark matches `m`. None
    /// matching is fine (older kernels answer `ENOENT` then).
    pub async fn delete(&self, m: MarkFilter) -> Result<(), ConntrackError> {
        match self
            .request(ConntrackOp::Delete(m), delete_request(m))
            .await
        {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            r => r.map(drop),
        }
    }
}

// Replies are parsed by `NetlinkMessage::deserialize` inside the
// connection; the tests below feed it what the kernel could send.
#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkPayload};
    use netlink_packet_netfilter::conntrack::Protocol;
    use std::net::Ipv4Addr;

    const FILTER: MarkFilter = MarkFilter {
        mark: 0x1100_0000,
        mask: 0x1f00_0000,
    };

    fn bytes(m: &NetlinkMessage<NetfilterMessage>) -> Vec<u8> {
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    /// A reply of a dump: one UDP entry 192.168.1.10:5000 → 198.51.100.7:53.
    fn entry() -> NetlinkMessage<NetfilterMessage> {
        let orig = vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(Ipv4Addr::new(192, 168, 1, 10).into()),
                IPTuple::DestinationAddress(Ipv4Addr::new(198, 51, 100, 7).into()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Udp),
                ProtoTuple::SourcePort(5000),
                ProtoTuple::DestinationPort(53),
            ]),
        ];
        let mut nl = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
                ConntrackMessage::New(vec![
                    ConntrackAttribute::CtaTupleOrig(orig),
                    ConntrackAttribute::CtaMark(0x1100_0000),
                ]),
            )),
        );
        nl.header.flags = 2; // NLM_F_MULTI
        nl.finalize();
        nl
    }

    #[test]
    fn delete_request_wire_format() {
        let b = bytes(&delete_request(FILTER));
        // nlmsghdr: length, type (subsystem 1 << 8 | IPCTNL_MSG_CT_DELETE), flags.
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), (1 << 8) | 2);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), NLM_F_REQUEST | NLM_F_ACK);
        // nfgenmsg: AF_UNSPEC, version 0, resource id 0.
        assert_eq!(b[16..20], [0, 0, 0, 0]);
        // CTA_MARK then CTA_MARK_MASK, both big-endian u32.
        assert_eq!(b[20..24], [8, 0, 8, 0]);
        assert_eq!(b[24..28], 0x1100_0000u32.to_be_bytes());
        assert_eq!(b[28..32], [8, 0, 21, 0]);
        assert_eq!(b[32..36], 0x1f00_0000u32.to_be_bytes());
        assert_eq!(b.len(), 36);
        // The dump differs in type (IPCTNL_MSG_CT_GET) and flags only.
        let d = bytes(&dump_request(FILTER));
        assert_eq!(u16::from_ne_bytes([d[4], d[5]]), (1 << 8) | 1);
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(d[16..], b[16..]);
    }

    #[test]
    fn requests_round_trip() {
        for req in [delete_request(FILTER), dump_request(FILTER)] {
            let b = bytes(&req);
            let back = NetlinkMessage::<NetfilterMessage>::deserialize(&b).unwrap();
            assert_eq!(back, req);
        }
    }

    #[test]
    fn entry_round_trips_to_a_flow() {
        let b = bytes(&entry());
        let back = NetlinkMessage::<NetfilterMessage>::deserialize(&b).unwrap();
        let NetlinkPayload::InnerMessage(m) = back.payload else {
            panic!("{back:?}");
        };
        let flow = flow_from_reply(&m).unwrap();
        assert_eq!(
            flow,
            Flow {
                protocol: 17,
                src: Ipv4Addr::new(192, 168, 1, 10).into(),
                dst: Ipv4Addr::new(198, 51, 100, 7).into(),
                src_port: Some(5000),
                dst_port: Some(53),
                mark: 0x1100_0000,
            }
        );
        assert_eq!(
            flow.to_string(),
            "proto 17 192.168.1.10:5000 → 198.51.100.7:53 mark 0x11000000"
        );
    }

    #[test]
    fn truncated_replies_are_rejected_without_panic() {
        let full = bytes(&entry());
        for n in 0..full.len() {
            let mut b = full[..n].to_vec();
            // Also with the header's length claiming the cut size, so that
            // the cut reaches the attributes instead of the outer check.
            if n >= 4 {
                b[..4].copy_from_slice(&(n as u32).to_ne_bytes());
            }
            if let Ok(m) = NetlinkMessage::<NetfilterMessage>::deserialize(&b) {
                // A cut exactly between attributes parses; what it lacks
                // must then be reported, not invented.
                if let NetlinkPayload::InnerMessage(m) = m.payload {
                    if let Ok(f) = flow_from_reply(&m) {
                        assert_eq!(n, full.len() - 8, "cut at {n} gave {f}");
                    }
                }
            }
        }
    }

    #[test]
    fn hostile_replies_are_rejected_without_panic() {
        let full = bytes(&entry());
        // Every byte of the payload set to every interesting value: lengths
        // that overrun, underrun or are zero.
        for i in 16..full.len() {
            for v in [0x00, 0x01, 0x03, 0x05, 0x7f, 0xff] {
                let mut b = full.clone();
                b[i] = v;
                if let Ok(m) = NetlinkMessage::<NetfilterMessage>::deserialize(&b) {
                    if let NetlinkPayload::InnerMessage(m) = m.payload {
                        let _ = flow_from_reply(&m);
                    }
                }
            }
        }
        // An address of 3 bytes is an error, not a short read.
        let mut b = full;
        let at = b
            .windows(8)
            .position(|w| w[..4] == [8, 0, 1, 0] && w[4..] == [192, 168, 1, 10])
            .expect("source address attribute");
        b[at] = 7;
        assert!(NetlinkMessage::<NetfilterMessage>::deserialize(&b).is_err());
        // A reply without an original tuple is not a flow.
        let bare = NetfilterMessage::new(
            header(),
            ConntrackMessage::New(vec![ConntrackAttribute::CtaMark(1)]),
        );
        assert_eq!(
            flow_from_reply(&bare),
            Err("no protocol in the original tuple")
        );
    }
}
