//! Everything Tandem does over rtnetlink, in one place: policy rules and
//! routes (what `ip rule` and `ip route` do), links and addresses (`ip
//! link`, `ip addr`, [`link`]) and traffic control (`tc qdisc`, `tc class`,
//! [`tc`]), all on the one connection type [`RouteNetlink`].
//!
//! [`RouteNetlink::shared`] hands out the process's connection: one
//! `NETLINK_ROUTE` socket, opened in the calling thread's network namespace
//! on first use, its task spawned on the current tokio runtime; if it died
//! (that runtime shut down), the next call opens a new one.
//! [`RouteNetlink::connect`] opens a private one, for a thread with its own
//! runtime or in another namespace.
//!
//! The operations are typed: a [`Rule`] (`priority P [from PREFIX] [fwmark
//! M/MASK] [iif DEV] lookup T|blackhole`) and a [`Route`] (`[local] PREFIX
//! [via GW] dev #IF [scope link] [src A] [congctl C] table T`), for either
//! [`Family`]; a veth pair whose peer is created in another namespace
//! ([`link::Veth`]), addresses, link state and counters; an htb root, htb
//! class and bfifo queue ([`tc::Qdisc`], [`tc::HtbClass`]). A kernel
//! refusal is a [`RouteError::Kernel`]
//! carrying the operation and the kernel's errno (and its extended-ack text
//! when it gave one), so that callers can tell "not there" (`ENOENT`,
//! `ESRCH`) from real failures without reading strings.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteMessage, RouteMetric, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::RouteMessageBuilder;

use crate::nl::{Conn, Failure, Shared};

pub mod link;
pub mod tc;

/// The main routing table (`table main`).
pub const MAIN_TABLE: u32 = 254;
/// The local routing table (`table local`): local and broadcast addresses.
pub const LOCAL_TABLE: u32 = 255;

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Self; 2] = [Self::V4, Self::V6];

    /// The family of `addr`.
    #[must_use]
    pub const fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// The unspecified address (`0.0.0.0` or `::`): with prefix 0, the
    /// default route.
    #[must_use]
    pub const fn unspecified(self) -> IpAddr {
        match self {
            Self::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Self::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    const fn address_family(self) -> AddressFamily {
        match self {
            Self::V4 => AddressFamily::Inet,
            Self::V6 => AddressFamily::Inet6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
        })
    }
}

/// A firewall-mark selector: packets whose mark, under `mask`, equals
/// `value` (`fwmark VALUE/MASK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FwMark {
    /// The mark.
    pub value: u32,
    /// The bits compared; `None` sends no mask (the kernel compares all).
    pub mask: Option<u32>,
}

/// What a rule does with the packets it selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleTarget {
    /// Look the route up in this table (`lookup T`).
    Lookup(u32),
    /// Drop the packet silently (`blackhole`): no route, no ICMP error.
    Blackhole,
    /// Another action (`blackhole`, `goto`, …), by its `FR_ACT_*` number;
    /// only listed, never added by Tandem.
    Other(u8),
}

/// A policy-routing rule (`ip rule`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Address family.
    pub family: Family,
    /// Priority (`pref`); rules are tried in increasing order.
    pub priority: u32,
    /// `fwmark` selector, if any.
    pub fwmark: Option<FwMark>,
    /// `iif` selector (input interface name), if any.
    pub iif: Option<String>,
    /// `from` selector: source prefix (address, length), if any.
    pub from: Option<(IpAddr, u8)>,
    /// What the rule does.
    pub target: RuleTarget,
}

impl Rule {
    /// `priority P fwmark MARK[/MASK] lookup TABLE`.
    #[must_use]
    pub const fn fwmark(
        family: Family,
        priority: u32,
        mark: u32,
        mask: Option<u32>,
        table: u32,
    ) -> Self {
        Self {
            family,
            priority,
            fwmark: Some(FwMark { value: mark, mask }),
            iif: None,
            from: None,
            target: RuleTarget::Lookup(table),
        }
    }

    /// `priority P from ADDR/LEN lookup TABLE`, of `addr`'s family.
    #[must_use]
    pub const fn from(priority: u32, addr: IpAddr, prefix_len: u8, table: u32) -> Self {
        Self {
            family: Family::of(&addr),
            priority,
            fwmark: None,
            iif: None,
            from: Some((addr, prefix_len)),
            target: RuleTarget::Lookup(table),
        }
    }

    /// `priority P iif DEV lookup TABLE`.
    #[must_use]
    pub fn iif(family: Family, priority: u32, iif: impl Into<String>, table: u32) -> Self {
        Self {
            family,
            priority,
            fwmark: None,
            iif: Some(iif.into()),
            from: None,
            target: RuleTarget::Lookup(table),
        }
    }

    /// `priority P iif DEV blackhole`: what arrives on `DEV` to be
    /// forwarded is dropped silently (delivery to this host's own
    /// addresses still matches the `local` table's rule, priority 0).
    #[must_use]
    pub fn iif_blackhole(family: Family, priority: u32, iif: impl Into<String>) -> Self {
        Self {
            family,
            priority,
            fwmark: None,
            iif: Some(iif.into()),
            from: None,
            target: RuleTarget::Blackhole,
        }
    }

    fn message(&self) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = self.family.address_family();
        match self.target {
            RuleTarget::Lookup(table) => {
                m.header.action = RuleAction::ToTable;
                // Tables above 255 only fit the attribute.
                match u8::try_from(table) {
                    Ok(t) => m.header.table = t,
                    Err(_) => m.attributes.push(RuleAttribute::Table(table)),
                }
            }
            RuleTarget::Blackhole => m.header.action = RuleAction::Blackhole,
            RuleTarget::Other(a) => m.header.action = RuleAction::from(a),
        }
        m.attributes.push(RuleAttribute::Priority(self.priority));
        if let Some((addr, len)) = self.from {
            m.header.src_len = len;
            m.attributes.push(RuleAttribute::Source(addr));
        }
        if let Some(FwMark { value, mask }) = self.fwmark {
            m.attributes.push(RuleAttribute::FwMark(value));
            if let Some(mask) = mask {
                m.attributes.push(RuleAttribute::FwMask(mask));
            }
        }
        if let Some(iif) = &self.iif {
            m.attributes.push(RuleAttribute::Iifname(iif.clone()));
        }
        m
    }

    /// The rule a kernel dump entry describes; `None` for another family.
    fn from_message(m: &RuleMessage) -> Option<Self> {
        let family = match m.header.family {
            AddressFamily::Inet => Family::V4,
            AddressFamily::Inet6 => Family::V6,
            _ => return None,
        };
        let mut table = u32::from(m.header.table);
        let (mut priority, mut mark, mut mask, mut iif, mut from) = (0, None, None, None, None);
        for a in &m.attributes {
            match a {
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Priority(p) => priority = *p,
                RuleAttribute::FwMark(v) => mark = Some(*v),
                RuleAttribute::FwMask(v) => mask = Some(*v),
                RuleAttribute::Iifname(n) => iif = Some(n.clone()),
                RuleAttribute::Source(a) => from = Some((*a, m.header.src_len)),
                _ => {}
            }
        }
        let target = match m.header.action {
            RuleAction::ToTable => RuleTarget::Lookup(table),
            RuleAction::Blackhole => RuleTarget::Blackhole,
            other => RuleTarget::Other(u8::from(other)),
        };
        Some(Self {
            family,
            priority,
            fwmark: mark.map(|value| FwMark { value, mask }),
            iif,
            from,
            target,
        })
    }
}

impl fmt::Display for Rule {
    /// Like `ip rule`: `ipv4 priority 91 fwmark 0x1000000/0xf000000 lookup 101`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} priority {}", self.family, self.priority)?;
        if let Some((addr, len)) = self.from {
            write!(f, " from {addr}/{len}")?;
        }
        if let Some(m) = self.fwmark {
            write!(f, " fwmark {:#x}", m.value)?;
            if let Some(mask) = m.mask {
                write!(f, "/{mask:#x}")?;
            }
        }
        if let Some(iif) = &self.iif {
            write!(f, " iif {iif}")?;
        }
        match self.target {
            RuleTarget::Lookup(t) => write!(f, " lookup {t}"),
            RuleTarget::Blackhole => f.write_str(" blackhole"),
            RuleTarget::Other(a) => write!(f, " action {a}"),
        }
    }
}

/// The kind of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// A normal route: packets leave through the interface.
    Unicast,
    /// `local`: packets are delivered to this host (scope host), as a
    /// TPROXY setup needs.
    Local,
}

/// How far a route's destination is (`scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Beyond a gateway (the default of a route with one).
    Universe,
    /// On the link itself (`scope link`): what `ip route` gives a unicast
    /// route with no gateway, and what a gateway must be reachable by.
    Link,
    /// This host (`scope host`): local routes.
    Host,
}

/// A route in one table (`ip route … table T`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Routing table.
    pub table: u32,
    /// Destination prefix address; its family is the route's.
    pub destination: IpAddr,
    /// Destination prefix length (0: the default route).
    pub prefix_len: u8,
    /// Unicast or local.
    pub kind: RouteKind,
    /// Scope.
    pub scope: Scope,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Next hop, of the destination's family (ignored otherwise).
    pub gateway: Option<IpAddr>,
    /// Preferred source address (`src`), of the destination's family
    /// (ignored otherwise).
    pub prefsrc: Option<IpAddr>,
    /// Congestion control of the connections using the route (`congctl
    /// NAME`, the `RTAX_CC_ALGO` metric): it wins over the namespace's
    /// default, as a socket option would.
    pub congctl: Option<String>,
}

impl Route {
    /// `default [via GW] dev #OIF table TABLE`.
    #[must_use]
    pub const fn default_via(
        family: Family,
        table: u32,
        oif: u32,
        gateway: Option<IpAddr>,
    ) -> Self {
        Self {
            table,
            destination: family.unspecified(),
            prefix_len: 0,
            kind: RouteKind::Unicast,
            scope: Scope::Universe,
            oif: Some(oif),
            gateway,
            prefsrc: None,
            congctl: None,
        }
    }

    /// `local default dev #OIF table TABLE` (scope host).
    #[must_use]
    pub const fn local_default(family: Family, table: u32, oif: u32) -> Self {
        Self::local(table, family.unspecified(), 0, oif)
    }

    /// `local DEST/LEN dev #OIF table TABLE` (scope host).
    #[must_use]
    pub const fn local(table: u32, destination: IpAddr, prefix_len: u8, oif: u32) -> Self {
        Self {
            table,
            destination,
            prefix_len,
            kind: RouteKind::Local,
            scope: Scope::Host,
            oif: Some(oif),
            gateway: None,
            prefsrc: None,
            congctl: None,
        }
    }

    /// `DEST/LEN dev #OIF scope link table TABLE`: a destination on the
    /// link, as `ip route add DEST/LEN dev DEV` makes it.
    #[must_use]
    pub const fn on_link(table: u32, destination: IpAddr, prefix_len: u8, oif: u32) -> Self {
        Self {
            table,
            destination,
            prefix_len,
            kind: RouteKind::Unicast,
            scope: Scope::Link,
            oif: Some(oif),
            gateway: None,
            prefsrc: None,
            congctl: None,
        }
    }

    /// `DEST/LEN via GW table TABLE` (the kernel finds the interface).
    #[must_use]
    pub const fn via(table: u32, destination: IpAddr, prefix_len: u8, gateway: IpAddr) -> Self {
        Self {
            table,
            destination,
            prefix_len,
            kind: RouteKind::Unicast,
            scope: Scope::Universe,
            oif: None,
            gateway: Some(gateway),
            prefsrc: None,
            congctl: None,
        }
    }

    /// The same route through interface `oif` (`dev`).
    #[must_use]
    pub const fn with_oif(mut self, oif: u32) -> Self {
        self.oif = Some(oif);
        self
    }

    /// The same route with preferred source address `src`.
    #[must_use]
    pub const fn with_prefsrc(mut self, src: IpAddr) -> Self {
        self.prefsrc = Some(src);
        self
    }

    /// The same route with congestion control `name` (`congctl cubic`).
    #[must_use]
    pub fn with_congctl(mut self, name: impl Into<String>) -> Self {
        self.congctl = Some(name.into());
        self
    }

    /// The route's family (its destination's).
    #[must_use]
    pub const fn family(&self) -> Family {
        Family::of(&self.destination)
    }

    fn message(&self) -> RouteMessage {
        macro_rules! build {
            ($builder:expr, $dest:expr, $gw:expr, $src:expr) => {{
                let mut b = $builder
                    .destination_prefix($dest, self.prefix_len)
                    .table_id(self.table)
                    .scope(match self.scope {
                        Scope::Universe => RouteScope::Universe,
                        Scope::Link => RouteScope::Link,
                        Scope::Host => RouteScope::Host,
                    });
                if let Some(oif) = self.oif {
                    b = b.output_interface(oif);
                }
                if let Some(gw) = $gw {
                    b = b.gateway(gw);
                }
                if let Some(src) = $src {
                    b = b.pref_source(src);
                }
                if self.kind == RouteKind::Local {
                    b = b.kind(RouteType::Local);
                }
                if let Some(cc) = &self.congctl {
                    b.get_mut().attributes.push(RouteAttribute::Metrics(vec![
                        RouteMetric::CcAlgo(cc.clone()),
                    ]));
                }
                b.build()
            }};
        }
        match self.destination {
            IpAddr::V4(d) => {
                let v4 = |a: Option<IpAddr>| match a {
                    Some(IpAddr::V4(g)) => Some(g),
                    _ => None,
                };
                build!(
                    RouteMessageBuilder::<Ipv4Addr>::new(),
                    d,
                    v4(self.gateway),
                    v4(self.prefsrc)
                )
            }
            IpAddr::V6(d) => {
                let v6 = |a: Option<IpAddr>| match a {
                    Some(IpAddr::V6(g)) => Some(g),
                    _ => None,
                };
                build!(
                    RouteMessageBuilder::<Ipv6Addr>::new(),
                    d,
                    v6(self.gateway),
                    v6(self.prefsrc)
                )
            }
        }
    }
}

impl fmt::Display for Route {
    /// Like `ip route`: `local default dev #1 table 100`,
    /// `10.0.0.0/8 via 10.64.1.1 dev #4 table 101`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == RouteKind::Local {
            f.write_str("local ")?;
        }
        if self.prefix_len == 0 && self.destination.is_unspecified() {
            write!(f, "default ({})", self.family())?;
        } else {
            write!(f, "{}/{}", self.destination, self.prefix_len)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        if self.scope == Scope::Link {
            f.write_str(" scope link")?;
        }
        if let Some(src) = self.prefsrc {
            write!(f, " src {src}")?;
        }
        if let Some(cc) = &self.congctl {
            write!(f, " congctl {cc}")?;
        }
        write!(f, " table {}", self.table)
    }
}

/// The operation that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteOp {
    /// Listing the rules of a family.
    ListRules(Family),
    /// Adding a rule.
    AddRule(Rule),
    /// Deleting a rule.
    DeleteRule(Rule),
    /// Adding a route (fails if it exists).
    AddRoute(Route),
    /// Adding or replacing a route.
    ReplaceRoute(Route),
    /// Deleting a route.
    DeleteRoute(Route),
    /// Looking a link up by name.
    GetLink(String),
    /// Adding a veth pair.
    AddVeth {
        /// This end's name.
        name: String,
        /// The peer's name.
        peer: String,
    },
    /// Setting a link up or down.
    SetLink {
        /// Interface index.
        index: u32,
        /// Up (true) or down.
        up: bool,
    },
    /// Adding an address to an interface.
    AddAddress {
        /// Interface index.
        index: u32,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix_len: u8,
    },
    /// Adding a queueing discipline.
    AddQdisc(tc::Qdisc),
    /// Deleting an interface's root queueing discipline.
    DeleteRootQdisc(u32),
    /// Adding an htb class.
    AddClass(tc::HtbClass),
}

impl fmt::Display for RouteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ListRules(fam) => write!(f, "list {fam} rules"),
            Self::AddRule(r) => write!(f, "add rule {r}"),
            Self::DeleteRule(r) => write!(f, "delete rule {r}"),
            Self::AddRoute(r) => write!(f, "add route {r}"),
            Self::ReplaceRoute(r) => write!(f, "replace route {r}"),
            Self::DeleteRoute(r) => write!(f, "delete route {r}"),
            Self::GetLink(name) => write!(f, "get link {name}"),
            Self::AddVeth { name, peer } => write!(f, "add veth {name} peer {peer}"),
            Self::SetLink { index, up } => {
                write!(f, "set link #{index} {}", if *up { "up" } else { "down" })
            }
            Self::AddAddress {
                index,
                addr,
                prefix_len,
            } => write!(f, "add address {addr}/{prefix_len} dev #{index}"),
            Self::AddQdisc(q) => write!(f, "add qdisc {q}"),
            Self::DeleteRootQdisc(index) => write!(f, "delete root qdisc dev #{index}"),
            Self::AddClass(c) => write!(f, "add class {c}"),
        }
    }
}

/// Errors from [`RouteNetlink`].
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The netlink socket could not be opened (or no tokio runtime runs).
    #[error("rtnetlink: opening the connection: {0}")]
    Open(#[source] io::Error),
    /// The kernel refused the operation.
    #[error(
        "rtnetlink {op} failed: {}{}",
        io::Error::from_raw_os_error(*.errno),
        crate::pm::fmt_extack(.msg)
    )]
    Kernel {
        /// What was asked (boxed: a route or class is large).
        op: Box<RouteOp>,
        /// The positive errno (e.g. `libc::EEXIST`).
        errno: i32,
        /// The kernel's extended-ack message, empty if it gave none.
        msg: String,
    },
    /// The connection died before the kernel answered.
    #[error("rtnetlink {op}: the netlink connection closed")]
    Closed {
        /// What was asked (boxed: a route or class is large).
        op: Box<RouteOp>,
    },
    /// No complete answer in time.
    #[error("rtnetlink {op}: no answer from the kernel")]
    Timeout {
        /// What was asked (boxed: a route or class is large).
        op: Box<RouteOp>,
    },
}

impl RouteError {
    /// The kernel's errno, if the kernel answered.
    #[must_use]
    pub const fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Open(_) | Self::Closed { .. } | Self::Timeout { .. } => None,
        }
    }

    /// Whether the kernel said the rule, route, link or qdisc is not there
    /// (`ENOENT`, `ESRCH`, `ENODEV`): what a best-effort removal ignores.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT | libc::ESRCH | libc::ENODEV)
        )
    }
}

static SHARED: Shared<RouteNetlinkMessage> = Shared::new();

/// A handle to an rtnetlink connection (cheap to clone).
#[derive(Clone, Debug)]
pub struct RouteNetlink {
    conn: Conn<RouteNetlinkMessage>,
}

impl RouteNetlink {
    /// The process's connection, opened on first use (in the calling
    /// thread's network namespace, its task on the current tokio runtime)
    /// and reopened if it died. Must be called within a tokio runtime.
    pub fn shared() -> Result<Self, RouteError> {
        SHARED
            .get(NETLINK_ROUTE)
            .map(|conn| Self { conn })
            .map_err(RouteError::Open)
    }

    /// A private connection, closed when its last handle is dropped: for a
    /// thread that runs its own runtime (the process's connection needs
    /// the runtime it was spawned on to be running) or another namespace.
    pub fn connect() -> Result<Self, RouteError> {
        Conn::open(NETLINK_ROUTE)
            .map(|conn| Self { conn })
            .map_err(RouteError::Open)
    }

    async fn request(
        &self,
        op: &RouteOp,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, RouteError> {
        tracing::trace!(%op, "rtnetlink request");
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = flags;
        self.conn.request(nl).await.map_err(|f| match f {
            Failure::Kernel { errno, msg } => {
                tracing::debug!(%op, errno, %msg, "rtnetlink request failed");
                RouteError::Kernel {
                    op: Box::new(op.clone()),
                    errno,
                    msg,
                }
            }
            Failure::Closed => RouteError::Closed {
                op: Box::new(op.clone()),
            },
            Failure::Timeout => RouteError::Timeout {
                op: Box::new(op.clone()),
            },
        })
    }

    /// Lists the rules of `family`, in priority order.
    pub async fn rules(&self, family: Family) -> Result<Vec<Rule>, RouteError> {
        let mut m = RuleMessage::default();
        m.header.family = family.address_family();
        let replies = self
            .request(
                &RouteOp::ListRules(family),
                RouteNetlinkMessage::GetRule(m),
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .await?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewRule(m) => Rule::from_message(m),
                _ => None,
            })
            .filter(|r| r.family == family)
            .collect())
    }

    /// Adds `rule` (`EEXIST` if the very same rule exists).
    pub async fn add_rule(&self, rule: &Rule) -> Result<(), RouteError> {
        self.request(
            &RouteOp::AddRule(rule.clone()),
            RouteNetlinkMessage::NewRule(rule.message()),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map(drop)
    }

    /// Deletes the first rule matching `rule`'s fields (`ENOENT` if none).
    pub async fn delete_rule(&self, rule: &Rule) -> Result<(), RouteError> {
        self.request(
            &RouteOp::DeleteRule(rule.clone()),
            RouteNetlinkMessage::DelRule(rule.message()),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }

    /// Adds `route` (`EEXIST` if its table has that destination already).
    pub async fn add_route(&self, route: &Route) -> Result<(), RouteError> {
        self.request(
            &RouteOp::AddRoute(route.clone()),
            RouteNetlinkMessage::NewRoute(route.message()),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map(drop)
    }

    /// Adds `route`, replacing the table's route to the same destination.
    pub async fn replace_route(&self, route: &Route) -> Result<(), RouteError> {
        self.request(
            &RouteOp::ReplaceRoute(route.clone()),
            RouteNetlinkMessage::NewRoute(route.message()),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map(drop)
    }

    /// Deletes `route` (`ESRCH` if it is not there).
    pub async fn delete_route(&self, route: &Route) -> Result<(), RouteError> {
        self.request(
            &RouteOp::DeleteRoute(route.clone()),
            RouteNetlinkMessage::DelRoute(route.message()),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, ParseableParametrized};

    #[test]
    fn rule_message_round_trips() {
        let rules = [
            Rule::fwmark(Family::V4, 91, 0x0100_0000, Some(0x0f00_0000), 101),
            Rule::fwmark(Family::V6, 90, 0x1, None, 100),
            Rule::iif(Family::V4, 93, "lan0", 300),
            Rule::from(100, "10.64.1.2".parse().unwrap(), 32, 10),
            Rule::iif_blackhole(Family::V4, 10, "cpe0"),
        ];
        for r in rules {
            let m = RouteNetlinkMessage::NewRule(r.message());
            let mut buf = vec![0; m.buffer_len()];
            m.emit(&mut buf);
            let back = RouteNetlinkMessage::parse_with_param(&buf, m.message_type()).unwrap();
            let RouteNetlinkMessage::NewRule(back) = back else {
                panic!("{back:?}");
            };
            assert_eq!(Rule::from_message(&back).as_ref(), Some(&r), "{r}");
        }
    }

    #[test]
    fn large_tables_use_the_attribute() {
        let m = Rule::fwmark(Family::V4, 91, 1, None, 1000).message();
        assert_eq!(m.header.table, 0);
        assert!(m.attributes.contains(&RuleAttribute::Table(1000)));
        assert_eq!(m.header.action, RuleAction::ToTable);
    }

    #[test]
    fn route_messages_carry_kind_scope_and_gateway() {
        let local = Route::local_default(Family::V6, 100, 1).message();
        assert_eq!(local.header.kind, RouteType::Local);
        assert_eq!(local.header.scope, RouteScope::Host);
        assert_eq!(local.header.table, 100);
        let gw: IpAddr = "10.64.1.1".parse().unwrap();
        let via = Route::default_via(Family::V4, 102, 4, Some(gw)).message();
        assert_eq!(via.header.kind, RouteType::Unicast);
        assert!(via
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_))));
        assert!(via.attributes.contains(&RouteAttribute::Oif(4)));
        // A gateway of the other family is left out.
        let v6 = Route::default_via(Family::V6, 102, 4, Some(gw)).message();
        assert!(!v6
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_))));
    }

    #[test]
    fn routes_carry_scope_source_and_congestion_control() {
        let src: IpAddr = "192.168.100.1".parse().unwrap();
        let r = Route::on_link(MAIN_TABLE, "192.168.100.0".parse().unwrap(), 24, 7)
            .with_prefsrc(src)
            .with_congctl("cubic");
        let m = r.message();
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert_eq!(m.header.destination_prefix_length, 24);
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(m
            .attributes
            .contains(&RouteAttribute::Metrics(vec![RouteMetric::CcAlgo(
                "cubic".into()
            )])));
        assert!(m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::PrefSource(_))));
        assert_eq!(
            r.to_string(),
            "192.168.100.0/24 dev #7 scope link src 192.168.100.1 congctl cubic table 254"
        );
        let via = Route::via(
            20,
            "10.64.2.0".parse().unwrap(),
            24,
            "10.65.2.1".parse().unwrap(),
        );
        let m = via.message();
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Oif(_))));
        let lo = Route::local(LOCAL_TABLE, Ipv4Addr::LOCALHOST.into(), 32, 1).message();
        assert_eq!(
            (lo.header.kind, lo.header.scope),
            (RouteType::Local, RouteScope::Host)
        );
        assert_eq!(lo.header.table, 255);
    }

    #[test]
    fn errors_name_the_operation_and_errno() {
        let e = RouteError::Kernel {
            op: Box::new(RouteOp::AddRule(Rule::fwmark(
                Family::V4,
                91,
                0x100,
                Some(0xf00),
                101,
            ))),
            errno: libc::EEXIST,
            msg: String::new(),
        };
        let s = e.to_string();
        assert!(
            s.contains("add rule ipv4 priority 91 fwmark 0x100/0xf00 lookup 101"),
            "{s}"
        );
        assert!(s.contains("os error 17"), "{s}");
        assert!(!e.is_not_found());
        let gone = RouteError::Kernel {
            op: Box::new(RouteOp::DeleteRoute(Route::local_default(
                Family::V4,
                100,
                1,
            ))),
            errno: libc::ESRCH,
            msg: String::new(),
        };
        assert!(gone.is_not_found());
        assert!(gone
            .to_string()
            .contains("delete route local default (ipv4) dev #1 table 100"));
    }
}
