//! MPTCP in-kernel path manager control over generic netlink.
//!
//! This module talks to the kernel's `mptcp_pm` generic-netlink family (the
//! same interface `ip mptcp endpoint …` / `ip mptcp limits …` use) without
//! shelling out to `ip`. It covers the in-kernel path manager's per-network-
//! namespace state:
//!
//! * **endpoints** — local addresses the kernel may use to open additional
//!   subflows (`subflow`), announce to the peer (`signal`), mark as `backup`,
//!   or use towards every known remote address (`fullmesh`);
//! * **limits** — how many extra subflows per connection the kernel may
//!   create, and how many `ADD_ADDR` announcements from the peer it accepts.
//!
//! The state is per network namespace. A [`PathManager`] opens its netlink
//! socket in the network namespace of the calling thread at the time
//! [`PathManager::connect`] runs, and keeps operating on that namespace even if
//! the thread later moves elsewhere.
//!
//! Wire-format notes (checked against `net/mptcp/pm_netlink.c`):
//!
//! * command and attribute numbers come from `include/uapi/linux/mptcp_pm.h`
//!   (family `"mptcp_pm"`, version 1);
//! * the address is always sent nested in `MPTCP_PM_ATTR_ADDR` with
//!   `NLA_F_NESTED` set (strict validation requires it);
//! * `MPTCP_PM_ADDR_ATTR_PORT` is a `u16` in **host** byte order (the kernel
//!   does `htons(nla_get_u16(..))` on input and `ntohs()` on output), unlike
//!   the addresses, which are in network byte order;
//! * `MPTCP_PM_ADDR_ATTR_FLAGS` is a `u32` bitmask, `MPTCP_PM_ADDR_ATTR_ID` a
//!   `u8` and `MPTCP_PM_ADDR_ATTR_IF_IDX` an `s32`;
//! * `MPTCP_PM_ADDR_ATTR_ID` must be **omitted** (not sent as 0) to let the
//!   kernel choose an id: an explicit 0 is taken literally.
//!
//! Kernel errors come back as netlink error messages; they are reported as
//! [`PmError::Netlink`] carrying the operation name, the positive errno and,
//! when the kernel supplied one, its extended-ack message.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::StreamExt;
use genetlink::{GenetlinkError, GenetlinkHandle};
use netlink_packet_core::{
    parse_i32, parse_u16, parse_u32, parse_u8, DecodeError, DefaultNla, Emitable, ErrorContext,
    NetlinkMessage, NetlinkPayload, Nla, NlaBuffer, NlasIterator, Parseable, ParseableParametrized,
    NLA_F_NESTED, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::AsyncSocket;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------
// uapi constants (include/uapi/linux/mptcp_pm.h, include/uapi/linux/mptcp.h)
// ---------------------------------------------------------------------------

const MPTCP_PM_NAME: &str = "mptcp_pm";
const MPTCP_PM_VER: u8 = 1;

const MPTCP_PM_CMD_ADD_ADDR: u8 = 1;
const MPTCP_PM_CMD_DEL_ADDR: u8 = 2;
const MPTCP_PM_CMD_GET_ADDR: u8 = 3;
const MPTCP_PM_CMD_FLUSH_ADDRS: u8 = 4;
const MPTCP_PM_CMD_SET_LIMITS: u8 = 5;
const MPTCP_PM_CMD_GET_LIMITS: u8 = 6;
const MPTCP_PM_CMD_SET_FLAGS: u8 = 7;

const MPTCP_PM_ATTR_ADDR: u16 = 1;
const MPTCP_PM_ATTR_RCV_ADD_ADDRS: u16 = 2;
const MPTCP_PM_ATTR_SUBFLOWS: u16 = 3;

const MPTCP_PM_ADDR_ATTR_FAMILY: u16 = 1;
const MPTCP_PM_ADDR_ATTR_ID: u16 = 2;
const MPTCP_PM_ADDR_ATTR_ADDR4: u16 = 3;
const MPTCP_PM_ADDR_ATTR_ADDR6: u16 = 4;
const MPTCP_PM_ADDR_ATTR_PORT: u16 = 5;
const MPTCP_PM_ADDR_ATTR_FLAGS: u16 = 6;
const MPTCP_PM_ADDR_ATTR_IF_IDX: u16 = 7;

const MPTCP_PM_ADDR_FLAG_SIGNAL: u32 = 1 << 0;
const MPTCP_PM_ADDR_FLAG_SUBFLOW: u32 = 1 << 1;
const MPTCP_PM_ADDR_FLAG_BACKUP: u32 = 1 << 2;
const MPTCP_PM_ADDR_FLAG_FULLMESH: u32 = 1 << 3;
const MPTCP_PM_ADDR_FLAG_IMPLICIT: u32 = 1 << 4;

/// `NLMSGERR_ATTR_MSG` from `include/uapi/linux/netlink.h`.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;

// libc's AF_* are c_int; the attribute is a u16.
const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// Flags of an in-kernel path-manager endpoint (`MPTCP_PM_ADDR_FLAG_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointFlags {
    /// Announce this address to the peer with `ADD_ADDR` (`signal`).
    pub signal: bool,
    /// Open an additional subflow from this address (`subflow`).
    pub subflow: bool,
    /// Subflows using this address are backup (low-priority) subflows
    /// (`backup`, sent as `MP_PRIO`/`MP_JOIN` backup bit).
    pub backup: bool,
    /// Create a subflow from this address to every known remote address
    /// (`fullmesh`). Not allowed together with `signal`.
    pub fullmesh: bool,
    /// Read-only: the kernel created this endpoint itself for the address of
    /// an initial subflow (`implicit`). Ignored when sending; the kernel
    /// rejects attempts to create implicit endpoints.
    pub implicit: bool,
}

impl EndpointFlags {
    /// A `subflow` endpoint.
    pub const SUBFLOW: Self = Self {
        signal: false,
        subflow: true,
        backup: false,
        fullmesh: false,
        implicit: false,
    };
    /// A `signal` endpoint.
    pub const SIGNAL: Self = Self {
        signal: true,
        subflow: false,
        backup: false,
        fullmesh: false,
        implicit: false,
    };

    /// The kernel bitmask (`MPTCP_PM_ADDR_FLAG_*`) for these flags.
    #[must_use]
    pub const fn bits(self) -> u32 {
        let mut b = 0;
        if self.signal {
            b |= MPTCP_PM_ADDR_FLAG_SIGNAL;
        }
        if self.subflow {
            b |= MPTCP_PM_ADDR_FLAG_SUBFLOW;
        }
        if self.backup {
            b |= MPTCP_PM_ADDR_FLAG_BACKUP;
        }
        if self.fullmesh {
            b |= MPTCP_PM_ADDR_FLAG_FULLMESH;
        }
        if self.implicit {
            b |= MPTCP_PM_ADDR_FLAG_IMPLICIT;
        }
        b
    }

    /// Decodes a kernel bitmask; bits this type does not know are dropped.
    #[must_use]
    pub const fn from_bits(bits: u32) -> Self {
        Self {
            signal: bits & MPTCP_PM_ADDR_FLAG_SIGNAL != 0,
            subflow: bits & MPTCP_PM_ADDR_FLAG_SUBFLOW != 0,
            backup: bits & MPTCP_PM_ADDR_FLAG_BACKUP != 0,
            fullmesh: bits & MPTCP_PM_ADDR_FLAG_FULLMESH != 0,
            implicit: bits & MPTCP_PM_ADDR_FLAG_IMPLICIT != 0,
        }
    }

    /// The same flags with `backup` set to `on`.
    #[must_use]
    pub const fn with_backup(mut self, on: bool) -> Self {
        self.backup = on;
        self
    }

    /// The flags a caller can configure (everything except `implicit`).
    const fn settable(self) -> Self {
        Self {
            implicit: false,
            ..self
        }
    }
}

impl fmt::Display for EndpointFlags {
    /// Space-separated flag names in the order `ip mptcp endpoint show` uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.signal, "signal"),
            (self.subflow, "subflow"),
            (self.backup, "backup"),
            (self.fullmesh, "fullmesh"),
            (self.implicit, "implicit"),
        ];
        let mut first = true;
        for (_, name) in names.iter().filter(|(on, _)| *on) {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(name)?;
            first = false;
        }
        Ok(())
    }
}

/// One in-kernel path-manager endpoint (`ip mptcp endpoint`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Endpoint id (1..=255). When adding, 0 lets the kernel choose.
    pub id: u8,
    /// Local address.
    pub addr: IpAddr,
    /// Port, only meaningful for `signal`-only endpoints (the kernel then
    /// opens an extra MPTCP listener on it). `None` (or 0) for no port.
    pub port: Option<u16>,
    /// Interface index the endpoint is bound to (`dev`), if any.
    pub ifindex: Option<u32>,
    /// Endpoint flags.
    pub flags: EndpointFlags,
}

impl Endpoint {
    /// An endpoint for `addr` with the given flags, kernel-chosen id, no port
    /// and no interface.
    #[must_use]
    pub const fn new(addr: IpAddr, flags: EndpointFlags) -> Self {
        Self {
            id: 0,
            addr,
            port: None,
            ifindex: None,
            flags,
        }
    }

    /// The port the kernel will actually store: it drops the port unless the
    /// endpoint is `signal` without `subflow`.
    fn effective_port(&self) -> Option<u16> {
        let signal_only = self.flags.signal && !self.flags.subflow;
        self.port.filter(|&p| p != 0 && signal_only)
    }

    /// Whether `self` (as read from the kernel) already is what `want` asks for.
    fn satisfies(&self, want: &Self) -> bool {
        self.addr == want.addr
            && (want.id == 0 || self.id == want.id)
            && self.port.filter(|&p| p != 0) == want.effective_port()
            && self.ifindex.filter(|&i| i != 0) == want.ifindex.filter(|&i| i != 0)
            && self.flags == want.flags.settable()
    }
}

impl fmt::Display for Endpoint {
    /// Formats like `ip mptcp endpoint show`: `10.0.0.1 port 80 id 3 subflow dev #4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        if let Some(p) = self.port.filter(|&p| p != 0) {
            write!(f, " port {p}")?;
        }
        write!(f, " id {}", self.id)?;
        if self.flags != EndpointFlags::default() {
            write!(f, " {}", self.flags)?;
        }
        if let Some(i) = self.ifindex {
            write!(f, " dev #{i}")?;
        }
        Ok(())
    }
}

/// In-kernel path-manager limits (`ip mptcp limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Maximum number of additional subflows per MPTCP connection
    /// (`MPTCP_PM_ATTR_SUBFLOWS`).
    pub subflows: u32,
    /// Maximum number of `ADD_ADDR` announcements accepted from the peer per
    /// connection (`MPTCP_PM_ATTR_RCV_ADD_ADDRS`).
    pub add_addr_accepted: u32,
}

/// Errors from [`PathManager`].
#[derive(Debug, thiserror::Error)]
pub enum PmError {
    /// Creating or using the netlink socket failed, or the request was
    /// rejected locally as invalid.
    #[error("mptcp_pm netlink I/O error: {0}")]
    Io(#[from] io::Error),
    /// The kernel answered the operation `op` with an error.
    #[error(
        "mptcp_pm {op} failed: {}{}",
        io::Error::from_raw_os_error(*.errno),
        fmt_extack(.msg)
    )]
    Netlink {
        /// Which operation failed (e.g. `"add_endpoint"`).
        op: &'static str,
        /// The positive errno the kernel returned (e.g. `libc::EEXIST`).
        errno: i32,
        /// The kernel's extended-ack message, empty if it gave none.
        msg: String,
    },
    /// A kernel reply could not be decoded (message says which operation).
    #[error("mptcp_pm decode error: {0}")]
    Decode(String),
    /// The `mptcp_pm` generic-netlink family does not exist (kernel without
    /// MPTCP support).
    #[error("generic netlink family \"mptcp_pm\" not found (kernel without MPTCP?)")]
    FamilyNotFound,
}

pub(crate) fn fmt_extack(msg: &str) -> String {
    if msg.is_empty() {
        String::new()
    } else {
        format!(": {msg}")
    }
}

impl PmError {
    /// The kernel errno if this is a [`PmError::Netlink`] error (or an I/O
    /// error carrying an OS error code).
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Netlink { errno, .. } => Some(*errno),
            Self::Io(e) => e.raw_os_error(),
            Self::Decode(_) | Self::FamilyNotFound => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------

/// Attributes nested inside `MPTCP_PM_ATTR_ADDR`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AddrAttr {
    Family(u16),
    Id(u8),
    Addr4(Ipv4Addr),
    Addr6(Ipv6Addr),
    /// Host byte order.
    Port(u16),
    Flags(u32),
    IfIndex(i32),
    Other(DefaultNla),
}

impl Nla for AddrAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Family(_) | Self::Port(_) => 2,
            Self::Id(_) => 1,
            Self::Addr4(_) | Self::Flags(_) | Self::IfIndex(_) => 4,
            Self::Addr6(_) => 16,
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Family(_) => MPTCP_PM_ADDR_ATTR_FAMILY,
            Self::Id(_) => MPTCP_PM_ADDR_ATTR_ID,
            Self::Addr4(_) => MPTCP_PM_ADDR_ATTR_ADDR4,
            Self::Addr6(_) => MPTCP_PM_ADDR_ATTR_ADDR6,
            Self::Port(_) => MPTCP_PM_ADDR_ATTR_PORT,
            Self::Flags(_) => MPTCP_PM_ADDR_ATTR_FLAGS,
            Self::IfIndex(_) => MPTCP_PM_ADDR_ATTR_IF_IDX,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Family(v) | Self::Port(v) => buffer[..2].copy_from_slice(&v.to_ne_bytes()),
            Self::Id(v) => buffer[0] = *v,
            Self::Addr4(a) => buffer[..4].copy_from_slice(&a.octets()),
            Self::Addr6(a) => buffer[..16].copy_from_slice(&a.octets()),
            Self::Flags(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            Self::IfIndex(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            Self::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for AddrAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            MPTCP_PM_ADDR_ATTR_FAMILY => Self::Family(parse_u16(v).context("family")?),
            MPTCP_PM_ADDR_ATTR_ID => Self::Id(parse_u8(v).context("id")?),
            MPTCP_PM_ADDR_ATTR_ADDR4 => {
                let o: [u8; 4] = v
                    .try_into()
                    .map_err(|_| DecodeError::invalid_ip_address(v.len()))?;
                Self::Addr4(Ipv4Addr::from(o))
            }
            MPTCP_PM_ADDR_ATTR_ADDR6 => {
                let o: [u8; 16] = v
                    .try_into()
                    .map_err(|_| DecodeError::invalid_ip_address(v.len()))?;
                Self::Addr6(Ipv6Addr::from(o))
            }
            MPTCP_PM_ADDR_ATTR_PORT => Self::Port(parse_u16(v).context("port")?),
            MPTCP_PM_ADDR_ATTR_FLAGS => Self::Flags(parse_u32(v).context("flags")?),
            MPTCP_PM_ADDR_ATTR_IF_IDX => Self::IfIndex(parse_i32(v).context("if_idx")?),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Top-level `mptcp_pm` attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PmAttr {
    Addr(Vec<AddrAttr>),
    RcvAddAddrs(u32),
    Subflows(u32),
    Other(DefaultNla),
}

impl Nla for PmAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Addr(attrs) => attrs.as_slice().buffer_len(),
            Self::RcvAddAddrs(_) | Self::Subflows(_) => 4,
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            // The kernel validates strictly: nested attributes need NLA_F_NESTED.
            Self::Addr(_) => MPTCP_PM_ATTR_ADDR | NLA_F_NESTED,
            Self::RcvAddAddrs(_) => MPTCP_PM_ATTR_RCV_ADD_ADDRS,
            Self::Subflows(_) => MPTCP_PM_ATTR_SUBFLOWS,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Addr(attrs) => attrs.as_slice().emit(buffer),
            Self::RcvAddAddrs(v) | Self::Subflows(v) => {
                buffer[..4].copy_from_slice(&v.to_ne_bytes());
            }
            Self::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for PmAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            MPTCP_PM_ATTR_ADDR => {
                let mut attrs = Vec::new();
                for nla in NlasIterator::new(v) {
                    let nla = nla.context("MPTCP_PM_ATTR_ADDR")?;
                    attrs.push(AddrAttr::parse(&nla).context("MPTCP_PM_ATTR_ADDR")?);
                }
                Self::Addr(attrs)
            }
            MPTCP_PM_ATTR_RCV_ADD_ADDRS => {
                Self::RcvAddAddrs(parse_u32(v).context("MPTCP_PM_ATTR_RCV_ADD_ADDRS")?)
            }
            MPTCP_PM_ATTR_SUBFLOWS => {
                Self::Subflows(parse_u32(v).context("MPTCP_PM_ATTR_SUBFLOWS")?)
            }
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A generic-netlink payload of the `mptcp_pm` family.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PmMessage {
    cmd: u8,
    attrs: Vec<PmAttr>,
}

impl PmMessage {
    const fn new(cmd: u8, attrs: Vec<PmAttr>) -> Self {
        Self { cmd, attrs }
    }
}

impl GenlFamily for PmMessage {
    fn family_name() -> &'static str {
        MPTCP_PM_NAME
    }

    fn version(&self) -> u8 {
        MPTCP_PM_VER
    }

    fn command(&self) -> u8 {
        self.cmd
    }
}

impl Emitable for PmMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for PmMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        // Replies carry various commands (GET_ADDR for dumps, the request's
        // command for doit replies): accept any and let callers interpret.
        let mut attrs = Vec::new();
        for nla in NlasIterator::new(buf) {
            let nla = nla.context("mptcp_pm attribute")?;
            attrs.push(PmAttr::parse(&nla)?);
        }
        Ok(Self {
            cmd: header.cmd,
            attrs,
        })
    }
}

/// Encodes an endpoint as the nested `MPTCP_PM_ATTR_ADDR` attribute.
fn endpoint_attrs(ep: &Endpoint) -> Result<Vec<AddrAttr>, PmError> {
    let mut a = Vec::with_capacity(6);
    match ep.addr {
        IpAddr::V4(v4) => {
            a.push(AddrAttr::Family(AF_INET));
            a.push(AddrAttr::Addr4(v4));
        }
        IpAddr::V6(v6) => {
            a.push(AddrAttr::Family(AF_INET6));
            a.push(AddrAttr::Addr6(v6));
        }
    }
    // Omit the id to let the kernel allocate one: an explicit 0 is kept as 0.
    if ep.id != 0 {
        a.push(AddrAttr::Id(ep.id));
    }
    if let Some(port) = ep.port.filter(|&p| p != 0) {
        a.push(AddrAttr::Port(port));
    }
    a.push(AddrAttr::Flags(ep.flags.settable().bits()));
    if let Some(ifindex) = ep.ifindex.filter(|&i| i != 0) {
        let ifindex = i32::try_from(ifindex).map_err(|_| {
            PmError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ifindex {ifindex} out of range"),
            ))
        })?;
        a.push(AddrAttr::IfIndex(ifindex));
    }
    Ok(a)
}

/// Decodes the nested `MPTCP_PM_ATTR_ADDR` attribute of a reply.
fn endpoint_from_attrs(attrs: &[AddrAttr]) -> Result<Endpoint, String> {
    let mut id = None;
    let mut addr = None;
    let mut family = None;
    let mut port = None;
    let mut ifindex = None;
    let mut flags = 0;
    for a in attrs {
        match a {
            AddrAttr::Family(f) => family = Some(*f),
            AddrAttr::Id(i) => id = Some(*i),
            AddrAttr::Addr4(v4) => addr = Some(IpAddr::V4(*v4)),
            AddrAttr::Addr6(v6) => addr = Some(IpAddr::V6(*v6)),
            AddrAttr::Port(p) => port = Some(*p).filter(|&p| p != 0),
            AddrAttr::Flags(f) => flags = *f,
            AddrAttr::IfIndex(i) => {
                ifindex = u32::try_from(*i).ok().filter(|&i| i != 0);
            }
            AddrAttr::Other(_) => {}
        }
    }
    let addr = addr.ok_or_else(|| format!("endpoint without address (family {family:?})"))?;
    let id = id.ok_or_else(|| format!("endpoint {addr} without id"))?;
    let known = EndpointFlags::from_bits(flags);
    if known.bits() != flags {
        tracing::debug!(
            flags,
            unknown = flags & !known.bits(),
            "mptcp_pm: endpoint has flags this crate does not know"
        );
    }
    Ok(Endpoint {
        id,
        addr,
        port,
        ifindex,
        flags: known,
    })
}

/// Extracts the extended-ack message (`NLMSGERR_ATTR_MSG`) from an error
/// message, if the kernel attached one.
/// `payload` is what follows the error code (`ErrorMessage::header`).
pub(crate) fn extack_message(nl_flags: u16, payload: &[u8]) -> Option<String> {
    if nl_flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let skip = if nl_flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        // The whole original request is echoed; its nlmsg_len says how long.
        let len = payload.get(..4)?;
        let len = u32::from_ne_bytes(len.try_into().ok()?) as usize;
        (len + 3) & !3
    };
    for nla in NlasIterator::new(payload.get(skip..)?) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let v = nla.value();
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            return Some(String::from_utf8_lossy(&v[..end]).into_owned());
        }
    }
    None
}

fn genl_error(op: &'static str, e: GenetlinkError) -> PmError {
    match e {
        GenetlinkError::NetlinkError(io) => {
            let errno = io.raw_os_error().unwrap_or(0);
            if op == "resolve_family" && errno == libc::ENOENT {
                PmError::FamilyNotFound
            } else {
                PmError::Netlink {
                    op,
                    errno,
                    msg: String::new(),
                }
            }
        }
        GenetlinkError::AttributeNotFound(_) | GenetlinkError::NoMessageReceived => {
            PmError::FamilyNotFound
        }
        GenetlinkError::DecodeError(d) => PmError::Decode(format!("{op}: {d}")),
        GenetlinkError::ProtocolError(p) => PmError::Io(io::Error::other(format!(
            "{op}: netlink protocol error: {p}"
        ))),
    }
}

// ---------------------------------------------------------------------------
// PathManager
// ---------------------------------------------------------------------------

/// A connection to the kernel's MPTCP in-kernel path manager (`mptcp_pm`
/// generic-netlink family) of one network namespace.
///
/// Created with [`PathManager::connect`], which spawns the netlink connection
/// task on the current tokio runtime; the task is aborted when the
/// `PathManager` is dropped. Changing endpoints and limits needs
/// `CAP_NET_ADMIN` in the namespace.
#[derive(Debug)]
pub struct PathManager {
    handle: GenetlinkHandle,
    conn: JoinHandle<()>,
}

impl Drop for PathManager {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl PathManager {
    /// Opens a generic-netlink socket in the calling thread's current network
    /// namespace, spawns its connection task on the current tokio runtime and
    /// resolves the `mptcp_pm` family.
    ///
    /// Must be called from within a tokio runtime. Fails with
    /// [`PmError::FamilyNotFound`] if the kernel has no MPTCP support.
    pub async fn connect() -> Result<Self, PmError> {
        let (mut conn, handle, _unsolicited) = genetlink::new_connection()?;
        {
            let sock = conn.socket_mut().socket_ref();
            // Ask for the kernel's error strings and don't echo requests back
            // in error messages. Both are best effort (old kernels lack them).
            if let Err(e) = sock.set_ext_ack(true) {
                tracing::debug!(error = %e, "mptcp_pm: NETLINK_EXT_ACK not available");
            }
            if let Err(e) = sock.set_cap_ack(true) {
                tracing::debug!(error = %e, "mptcp_pm: NETLINK_CAP_ACK not available");
            }
        }
        let conn = tokio::spawn(conn);
        let pm = Self { handle, conn };
        pm.handle
            .resolve_family::<PmMessage>()
            .await
            .map_err(|e| genl_error("resolve_family", e))?;
        Ok(pm)
    }

    /// Sends one request and collects every reply payload, mapping netlink
    /// error messages to [`PmError::Netlink`].
    async fn request(
        &mut self,
        op: &'static str,
        msg: PmMessage,
        flags: u16,
    ) -> Result<Vec<PmMessage>, PmError> {
        tracing::trace!(op, ?msg, "mptcp_pm request");
        let mut nl = NetlinkMessage::from(GenlMessage::from_payload(msg));
        nl.header.flags = flags;
        let mut replies = self
            .handle
            .request(nl)
            .await
            .map_err(|e| genl_error(op, e))?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            let reply = reply.map_err(|e| PmError::Decode(format!("{op}: {e}")))?;
            match reply.payload {
                NetlinkPayload::InnerMessage(genl) => out.push(genl.payload),
                NetlinkPayload::Error(err) => {
                    if let Some(code) = err.code {
                        let errno = code.get().checked_neg().unwrap_or(i32::MAX);
                        let msg =
                            extack_message(reply.header.flags, &err.header).unwrap_or_default();
                        tracing::debug!(op, errno, %msg, "mptcp_pm request failed");
                        return Err(PmError::Netlink { op, errno, msg });
                    }
                    // A plain ACK: the request succeeded.
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Lists all endpoints (`MPTCP_PM_CMD_GET_ADDR` dump), in id order.
    pub async fn endpoints(&mut self) -> Result<Vec<Endpoint>, PmError> {
        const OP: &str = "endpoints";
        let msg = PmMessage::new(MPTCP_PM_CMD_GET_ADDR, Vec::new());
        let replies = self.request(OP, msg, NLM_F_REQUEST | NLM_F_DUMP).await?;
        let mut eps = Vec::with_capacity(replies.len());
        for reply in &replies {
            for attr in &reply.attrs {
                if let PmAttr::Addr(a) = attr {
                    eps.push(
                        endpoint_from_attrs(a)
                            .map_err(|e| PmError::Decode(format!("{OP}: {e}")))?,
                    );
                }
            }
        }
        Ok(eps)
    }

    /// Adds an endpoint (`MPTCP_PM_CMD_ADD_ADDR`). With `ep.id == 0` the
    /// kernel chooses the id (look it up with [`Self::endpoints`] or use
    /// [`Self::ensure_endpoint`]). `ep.flags.implicit` is ignored.
    ///
    /// Kernel errors include `EEXIST` (an endpoint with this address
    /// exists), `EBUSY` (the id is taken), `ERANGE` (endpoint table full)
    /// and `EINVAL` (a port without `signal`, or `signal` with `fullmesh`).
    pub async fn add_endpoint(&mut self, ep: &Endpoint) -> Result<(), PmError> {
        let attrs = vec![PmAttr::Addr(endpoint_attrs(ep)?)];
        let msg = PmMessage::new(MPTCP_PM_CMD_ADD_ADDR, attrs);
        self.request("add_endpoint", msg, NLM_F_REQUEST | NLM_F_ACK)
            .await
            .map(drop)
    }

    /// Deletes the endpoint with id `id` (`MPTCP_PM_CMD_DEL_ADDR`); the
    /// kernel closes subflows using it. `EINVAL` if no such endpoint. Id 0 is
    /// rejected locally (the kernel gives it a special meaning).
    pub async fn del_endpoint(&mut self, id: u8) -> Result<(), PmError> {
        if id == 0 {
            return Err(PmError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "del_endpoint: endpoint id 0 is reserved",
            )));
        }
        let attrs = vec![PmAttr::Addr(vec![AddrAttr::Id(id)])];
        let msg = PmMessage::new(MPTCP_PM_CMD_DEL_ADDR, attrs);
        self.request("del_endpoint", msg, NLM_F_REQUEST | NLM_F_ACK)
            .await
            .map(drop)
    }

    /// Deletes all endpoints (`MPTCP_PM_CMD_FLUSH_ADDRS`). Limits are kept.
    pub async fn flush_endpoints(&mut self) -> Result<(), PmError> {
        let msg = PmMessage::new(MPTCP_PM_CMD_FLUSH_ADDRS, Vec::new());
        self.request("flush_endpoints", msg, NLM_F_REQUEST | NLM_F_ACK)
            .await
            .map(drop)
    }

    /// Changes the flags of endpoint `id` (`MPTCP_PM_CMD_SET_FLAGS`).
    ///
    /// The kernel only changes `backup` and `fullmesh` (other flags in
    /// `flags` are ignored) and announces the new backup priority with
    /// `MP_PRIO` on existing subflows. `EINVAL` if no such endpoint or if
    /// `fullmesh` is requested on a `signal` endpoint.
    pub async fn set_endpoint_flags(
        &mut self,
        id: u8,
        flags: EndpointFlags,
    ) -> Result<(), PmError> {
        // No family: the kernel then looks the endpoint up by id.
        let attrs = vec![PmAttr::Addr(vec![
            AddrAttr::Id(id),
            AddrAttr::Flags(flags.settable().bits()),
        ])];
        let msg = PmMessage::new(MPTCP_PM_CMD_SET_FLAGS, attrs);
        self.request("set_endpoint_flags", msg, NLM_F_REQUEST | NLM_F_ACK)
            .await
            .map(drop)
    }

    /// Reads the limits (`MPTCP_PM_CMD_GET_LIMITS`).
    pub async fn limits(&mut self) -> Result<Limits, PmError> {
        const OP: &str = "limits";
        let msg = PmMessage::new(MPTCP_PM_CMD_GET_LIMITS, Vec::new());
        let replies = self.request(OP, msg, NLM_F_REQUEST).await?;
        let (mut subflows, mut add_addr_accepted) = (None, None);
        for attr in replies.iter().flat_map(|r| &r.attrs) {
            match attr {
                PmAttr::Subflows(v) => subflows = Some(*v),
                PmAttr::RcvAddAddrs(v) => add_addr_accepted = Some(*v),
                PmAttr::Addr(_) | PmAttr::Other(_) => {}
            }
        }
        match (subflows, add_addr_accepted) {
            (Some(subflows), Some(add_addr_accepted)) => Ok(Limits {
                subflows,
                add_addr_accepted,
            }),
            _ => Err(PmError::Decode(format!(
                "{OP}: reply without subflows/add_addr_accepted ({} messages)",
                replies.len()
            ))),
        }
    }

    /// Sets both limits (`MPTCP_PM_CMD_SET_LIMITS`). The kernel rejects values
    /// above its maximum (8 on most kernels) with `EINVAL`.
    pub async fn set_limits(&mut self, l: Limits) -> Result<(), PmError> {
        let attrs = vec![
            PmAttr::RcvAddAddrs(l.add_addr_accepted),
            PmAttr::Subflows(l.subflows),
        ];
        let msg = PmMessage::new(MPTCP_PM_CMD_SET_LIMITS, attrs);
        self.request("set_limits", msg, NLM_F_REQUEST | NLM_F_ACK)
            .await
            .map(drop)
    }

    /// Makes `ep` present: every endpoint whose address equals `ep.addr`, or
    /// whose interface index equals `ep.ifindex` (when set), is replaced by
    /// `ep`; other endpoints are left alone. Returns the endpoint's id.
    ///
    /// Idempotent: if exactly one matching endpoint exists and already has
    /// `ep`'s configuration (id when non-zero, port, interface, flags), nothing
    /// is changed and its id is returned.
    ///
    /// Not atomic: matching endpoints are deleted before `ep` is added, so if
    /// the add fails (e.g. `EBUSY` because a non-matching endpoint holds the
    /// explicit `ep.id`) the old endpoints are gone; concurrent writers of the
    /// same namespace can interleave.
    pub async fn ensure_endpoint(&mut self, ep: &Endpoint) -> Result<u8, PmError> {
        let current = self.endpoints().await?;
        let want_ifindex = ep.ifindex.filter(|&i| i != 0);
        let matching: Vec<&Endpoint> = current
            .iter()
            .filter(|e| e.addr == ep.addr || (want_ifindex.is_some() && e.ifindex == want_ifindex))
            .collect();
        if let [only] = matching.as_slice() {
            if only.satisfies(ep) {
                tracing::debug!(endpoint = %only, "mptcp_pm: endpoint already present");
                return Ok(only.id);
            }
        }
        for old in &matching {
            tracing::debug!(endpoint = %old, "mptcp_pm: replacing endpoint");
            self.del_endpoint(old.id).await?;
        }
        self.add_endpoint(ep).await?;
        let after = self.endpoints().await?;
        after
            .iter()
            .find(|e| e.satisfies(ep))
            .map(|e| {
                tracing::debug!(endpoint = %e, "mptcp_pm: endpoint added");
                e.id
            })
            .ok_or_else(|| {
                PmError::Decode(format!(
                    "ensure_endpoint: {ep} not listed by the kernel after adding it"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(msg: &PmMessage) -> Vec<u8> {
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    #[test]
    fn flags_bits_roundtrip() {
        for bits in 0..32 {
            assert_eq!(EndpointFlags::from_bits(bits).bits(), bits);
        }
        assert_eq!(EndpointFlags::SUBFLOW.bits(), 2);
        assert_eq!(EndpointFlags::SUBFLOW.with_backup(true).bits(), 6);
        assert_eq!(
            EndpointFlags::from_bits(0x1f).to_string(),
            "signal subflow backup fullmesh implicit"
        );
    }

    #[test]
    fn add_addr_wire_format() {
        let ep = Endpoint {
            id: 0,
            addr: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            port: Some(0x1234),
            ifindex: Some(7),
            flags: EndpointFlags::SIGNAL,
        };
        let msg = PmMessage::new(
            MPTCP_PM_CMD_ADD_ADDR,
            vec![PmAttr::Addr(endpoint_attrs(&ep).unwrap())],
        );
        let b = emit(&msg);
        // Outer attribute: type ATTR_ADDR with NLA_F_NESTED.
        assert_eq!(
            u16::from_ne_bytes([b[2], b[3]]),
            MPTCP_PM_ATTR_ADDR | NLA_F_NESTED
        );
        let inner: Vec<(u16, Vec<u8>)> = NlasIterator::new(&b[4..])
            .map(|n| {
                let n = n.unwrap();
                (n.kind(), n.value().to_vec())
            })
            .collect();
        let kinds: Vec<u16> = inner.iter().map(|(k, _)| *k).collect();
        // No id attribute when id == 0.
        assert_eq!(
            kinds,
            [
                MPTCP_PM_ADDR_ATTR_FAMILY,
                MPTCP_PM_ADDR_ATTR_ADDR4,
                MPTCP_PM_ADDR_ATTR_PORT,
                MPTCP_PM_ADDR_ATTR_FLAGS,
                MPTCP_PM_ADDR_ATTR_IF_IDX
            ]
        );
        assert_eq!(inner[1].1, [10, 1, 2, 3]);
        // Port in host byte order.
        assert_eq!(inner[2].1, 0x1234u16.to_ne_bytes());
        assert_eq!(inner[3].1, 1u32.to_ne_bytes());
        // The message parses back to the same endpoint.
        let parsed = PmMessage::parse_with_param(
            &b,
            GenlHeader {
                cmd: MPTCP_PM_CMD_GET_ADDR,
                version: 1,
            },
        )
        .unwrap();
        let [PmAttr::Addr(a)] = parsed.attrs.as_slice() else {
            panic!("unexpected {parsed:?}");
        };
        let mut back = endpoint_from_attrs(&[a.clone(), vec![AddrAttr::Id(9)]].concat()).unwrap();
        back.id = 0;
        assert_eq!(back, ep);
    }

    #[test]
    fn satisfies_normalises_port_and_implicit() {
        let want = Endpoint {
            port: Some(80),
            ..Endpoint::new("10.0.0.1".parse().unwrap(), EndpointFlags::SUBFLOW)
        };
        let have = Endpoint {
            id: 3,
            ..Endpoint::new("10.0.0.1".parse().unwrap(), EndpointFlags::SUBFLOW)
        };
        assert!(have.satisfies(&want));
        let implicit = Endpoint {
            flags: EndpointFlags::from_bits(MPTCP_PM_ADDR_FLAG_IMPLICIT),
            ..have.clone()
        };
        assert!(!implicit.satisfies(&Endpoint::new(have.addr, EndpointFlags::default())));
        assert!(!have.satisfies(&Endpoint { id: 4, ..want }));
    }

    #[test]
    fn extack_message_parsing() {
        // Capped error: original nlmsghdr (16 bytes) then TLVs.
        let mut payload = vec![0u8; NLMSG_HDRLEN];
        let text = b"address not found\0";
        let nla_len = 4 + text.len();
        payload.extend_from_slice(&(nla_len as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        payload.resize(payload.len().next_multiple_of(4), 0);
        assert_eq!(
            extack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload).as_deref(),
            Some("address not found")
        );
        assert_eq!(extack_message(NLM_F_CAPPED, &payload), None);
    }

    #[test]
    fn error_display_names_op_and_errno() {
        let e = PmError::Netlink {
            op: "add_endpoint",
            errno: libc::EEXIST,
            msg: "too many addresses or duplicate one: -17".into(),
        };
        let s = e.to_string();
        assert!(s.contains("add_endpoint"), "{s}");
        assert!(s.contains("os error 17"), "{s}");
        assert!(s.contains("duplicate"), "{s}");
        assert_eq!(e.errno(), Some(libc::EEXIST));
    }
}
