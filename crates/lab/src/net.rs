//! The network inside the lab's namespaces, over rtnetlink: veth pairs
//! between two namespaces, link state, addresses, routes, policy rules, a
//! link's rate shaping, interface counters and MPTCP limits. No `ip`, no
//! `tc`: every change is a typed request through `mptcp_sock::route` (the
//! one place Tandem speaks rtnetlink) or `mptcp_sock::pm`.
//!
//! How: netlink talks to the namespace its socket was opened in, so each
//! call runs on a thread inside the namespace ([`crate::netns::run_in`])
//! that opens its own connection on a small tokio runtime of its own, runs
//! its requests in order and ends. [`apply`] takes a list of [`Step`]s for
//! one namespace (the lab's build and the bench's [`crate::topology::Pair`]
//! are such lists, naming devices; indexes are looked up inside); [`veth`]
//! creates a pair from the first namespace with the peer put straight
//! into the second (`IFLA_NET_NS_FD`), then brings both ends up.
//!
//! Shaping ([`Step::Shape`]) is what `tc` did before: the root qdisc
//! replaced by htb (`handle 1: default 10`), one class `1:10` with rate
//! and ceiling, quantum 1514, and under it a bfifo of the given limit.
//!
//! What it does not do: offloads (`ethtool -K`) and the NFQUEUE rules
//! (`iptables`) stay commands, in [`crate::topology`]; see its module docs
//! for why.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;

use mptcp_sock::pm::PathManager;
use mptcp_sock::route::link::{LinkBytes, Veth};
use mptcp_sock::route::tc::{Handle, HtbClass, Parent, Qdisc, QdiscKind};
use mptcp_sock::route::{Route, RouteError, RouteNetlink, Rule};

use crate::LabError;

/// The htb class every shaped link's traffic goes through (`1:10`).
const CLASS: Handle = Handle::new(1, 0x10);
/// `tc`'s quantum for the class: one full Ethernet frame per round.
const QUANTUM_BYTES: u32 = 1514;

/// One change to a namespace's network, devices named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `ip link set DEV up`.
    Up(String),
    /// `ip link set DEV down`.
    Down(String),
    /// `ip addr add IP/LEN dev DEV`.
    Address {
        /// The device.
        dev: String,
        /// The address.
        ip: Ipv4Addr,
        /// Its prefix length.
        prefix_len: u8,
    },
    /// `ip route add|replace ROUTE [dev DEV]`.
    Route {
        /// The route; its `oif` is set from `dev`.
        route: Route,
        /// The output device, if the route names one.
        dev: Option<String>,
        /// Replace the table's route to the same destination (else add:
        /// an error if there is one).
        replace: bool,
    },
    /// `ip rule add RULE`.
    AddRule(Rule),
    /// `ip rule del RULE`; one that is not there is no error.
    DeleteRule(Rule),
    /// Rate shaping of what leaves `dev`, replacing any before: htb root,
    /// class `1:10` at `kbit` (rate and ceiling), a bfifo of `limit_bytes`.
    Shape {
        /// The device.
        dev: String,
        /// Rate, kbit/s.
        kbit: u64,
        /// The queue's limit, bytes.
        limit_bytes: u32,
    },
}

impl Step {
    /// [`Step::Up`].
    pub fn up(dev: &str) -> Self {
        Self::Up(dev.to_owned())
    }

    /// [`Step::Address`].
    pub fn address(dev: &str, ip: Ipv4Addr, prefix_len: u8) -> Self {
        Self::Address {
            dev: dev.to_owned(),
            ip,
            prefix_len,
        }
    }

    /// [`Step::Route`], added.
    pub fn add_route(route: Route, dev: Option<&str>) -> Self {
        Self::Route {
            route,
            dev: dev.map(str::to_owned),
            replace: false,
        }
    }

    /// [`Step::Route`], replacing.
    pub fn replace_route(route: Route, dev: Option<&str>) -> Self {
        Self::Route {
            route,
            dev: dev.map(str::to_owned),
            replace: true,
        }
    }

    async fn run(self, nl: &RouteNetlink) -> Result<(), RouteError> {
        match self {
            Self::Up(dev) => nl.set_link_up(nl.link_index(&dev).await?, true).await,
            Self::Down(dev) => nl.set_link_up(nl.link_index(&dev).await?, false).await,
            Self::Address {
                dev,
                ip,
                prefix_len,
            } => {
                let index = nl.link_index(&dev).await?;
                nl.add_address(index, IpAddr::V4(ip), prefix_len).await
            }
            Self::Route {
                mut route,
                dev,
                replace,
            } => {
                if let Some(dev) = dev {
                    route.oif = Some(nl.link_index(&dev).await?);
                }
                if replace {
                    nl.replace_route(&route).await
                } else {
                    nl.add_route(&route).await
                }
            }
            Self::AddRule(rule) => nl.add_rule(&rule).await,
            Self::DeleteRule(rule) => match nl.delete_rule(&rule).await {
                Err(e) if e.is_not_found() => Ok(()),
                other => other,
            },
            Self::Shape {
                dev,
                kbit,
                limit_bytes,
            } => shape(nl, nl.link_index(&dev).await?, kbit, limit_bytes).await,
        }
    }
}

/// Replaces the root qdisc of `ifindex` by htb → class 1:10 → bfifo.
async fn shape(
    nl: &RouteNetlink,
    ifindex: u32,
    kbit: u64,
    limit_bytes: u32,
) -> Result<(), RouteError> {
    match nl.delete_root_qdisc(ifindex).await {
        // Only the kernel's default there: nothing to delete.
        Err(e) if !e.is_not_found() => return Err(e),
        _ => {}
    }
    let root = Handle::new(1, 0);
    nl.add_qdisc(&Qdisc {
        ifindex,
        parent: Parent::Root,
        handle: root,
        kind: QdiscKind::Htb {
            default_class: CLASS.minor,
        },
    })
    .await?;
    nl.add_htb_class(&HtbClass::kbit(ifindex, root, CLASS, kbit, kbit).with_quantum(QUANTUM_BYTES))
        .await?;
    nl.add_qdisc(&Qdisc {
        ifindex,
        parent: Parent::Class(CLASS),
        handle: Handle::new(CLASS.minor, 0),
        kind: QdiscKind::Bfifo { limit_bytes },
    })
    .await
}

/// A runtime for one thread's netlink requests in `ns`.
fn runtime(ns: &str) -> Result<tokio::runtime::Runtime, LabError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LabError::Netns {
            ns: ns.to_owned(),
            msg: format!("a runtime for netlink: {e}"),
        })
}

/// Runs `f` with a netlink connection opened inside namespace `ns`, on a
/// thread there with its own runtime.
fn with_netlink<T, F, Fut>(ns: &str, f: F) -> Result<T, LabError>
where
    T: Send + 'static,
    F: FnOnce(RouteNetlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, RouteError>>,
{
    let name = ns.to_owned();
    crate::netns::run_in(ns, move || {
        let rt = runtime(&name)?;
        rt.block_on(async { f(RouteNetlink::connect()?).await })
            .map_err(|error| LabError::Netlink { ns: name, error })
    })?
}

/// Applies `steps` in namespace `ns`, in order; stops at the first that
/// fails.
pub fn apply(ns: &str, steps: Vec<Step>) -> Result<(), LabError> {
    with_netlink(ns, move |nl| async move {
        for s in steps {
            s.run(&nl).await?;
        }
        Ok(())
    })
}

/// Creates a veth pair: device `a_dev` in namespace `a_ns`, its peer
/// `b_dev` in `b_ns`, and brings both up (each from its namespace, once
/// they are paired).
pub fn veth((a_ns, a_dev): (&str, &str), (b_ns, b_dev): (&str, &str)) -> Result<(), LabError> {
    let peer_ns = std::fs::File::open(crate::netns::path(b_ns)).map_err(|e| LabError::Netns {
        ns: b_ns.to_owned(),
        msg: e.to_string(),
    })?;
    let (name, peer) = (a_dev.to_owned(), b_dev.to_owned());
    with_netlink(a_ns, move |nl| async move {
        nl.add_veth(&Veth {
            name: &name,
            peer: &peer,
            peer_netns: Some(peer_ns.as_fd()),
        })
        .await?;
        nl.set_link_up(nl.link_index(&name).await?, true).await
    })?;
    apply(b_ns, vec![Step::up(b_dev)])
}

/// The byte counters of `dev` in namespace `ns`.
pub fn link_bytes(ns: &str, dev: &str) -> Result<LinkBytes, LabError> {
    let dev = dev.to_owned();
    with_netlink(ns, move |nl| async move { nl.link_bytes(&dev).await })
}

/// Sets how many additional subflows an MPTCP connection in namespace `ns`
/// may have (`ip mptcp limits set subflows N`; the other limit is kept).
pub fn mptcp_subflows(ns: &str, subflows: u32) -> Result<(), LabError> {
    let name = ns.to_owned();
    crate::netns::run_in(ns, move || {
        let rt = runtime(&name)?;
        rt.block_on(async {
            let mut pm = PathManager::connect().await?;
            let mut limits = pm.limits().await?;
            limits.subflows = subflows;
            pm.set_limits(limits).await
        })
        .map_err(|error| LabError::PathManager { ns: name, error })
    })?
}
