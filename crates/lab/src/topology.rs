//! Building and tearing down the lab network.
//!
//! ```text
//!  home ─ lan ─ cpe ─ dsl0 ══ [dsl] ══ dsl0 ─ hag ─ net0 ─ net (origin server)
//!                  └─ lte0 ══ [lte] ══ lte0 ─┘
//! ```
//!
//! Six network namespaces `<lab>-home`, `-cpe`, `-dsl`, `-lte`, `-hag`,
//! `-net`. The `dsl` and `lte` namespaces are the access links ("the line in
//! the street"): they route between the CPE and the HAG, shape each direction
//! with htb and a bfifo of ~50 ms, and hold packets for the link's delay with
//! Tandem's NFQUEUE emulator ([`crate::emu`]), since this kernel has no netem.
//!
//! [`Pair`] builds the other shape the bench needs: two namespaces joined by
//! one veth, with no emulated link.
//!
//! Congestion control is chosen deliberately: every route in the end hosts'
//! namespaces carries `congctl cubic` (the host default, BBR, collapses on
//! shaped links with microsecond RTTs, and the namespace sysctl is refused).
//!
//! How it is built: the namespaces through [`crate::netns`] (files under
//! `/run/netns`, as `ip netns` keeps them), every veth, address, route,
//! rule and shaper through [`crate::net`] (typed rtnetlink, from a thread
//! inside each namespace), sysctls written from such a thread. [`Pair`]
//! is built by the same functions. Three things remain commands, run in
//! the namespace with [`crate::cmd`]:
//! - `ethtool -K DEV tso off gso off gro off` on the access links'
//!   devices: offloads are set over the ethtool generic-netlink family with
//!   named feature bitsets (or the `SIOCETHTOOL` ioctl, which would need
//!   `unsafe`), for which there is no typed crate; packing those by hand
//!   for four calls per link is the hand-packed netlink STYLE.md warns
//!   against.
//! - `iptables -t mangle … -j NFQUEUE` ([`queue_arrivals`]): no typed
//!   crate either, as for the CPE's nftables table.
//! - the daemons themselves, started with `ip netns exec` ([`cmd::in_ns`]),
//!   which also gives them the namespace's `/sys`.
//!
//! A blackholed link is two policy rules in its namespace, `iif cpe0
//! blackhole` and `iif core0 blackhole`: everything that would cross the
//! link is dropped at the routing decision, silently (no ICMP), with the
//! link up, while the link's own addresses still answer (the `local`
//! table's rule comes first), as the `iptables -I FORWARD -j DROP` it
//! replaces did.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hybrid::{Link, SteeringMode};
use mptcp_sock::route::{Family, Route, Rule, LOCAL_TABLE, MAIN_TABLE};
use serde::{Deserialize, Serialize};

use crate::cmd;
use crate::emu::{self, Impairment};
use crate::net::{self, Step};
use crate::netns::{self, sysctl};
use crate::profile::{LinkShape, Profile};
use crate::LabError;

/// The HAG's admin listener (`/metrics`, `/status`), in the `hag` node.
pub const HAG_ADMIN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9102));
/// The CPE's admin listener, in the `cpe` node.
pub const CPE_ADMIN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9101));

/// Addresses of the lab (all inside its own namespaces).
pub mod addr {
    use std::net::Ipv4Addr;
    /// The home device.
    pub const HOME: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);
    /// The CPE on the LAN.
    pub const CPE_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
    /// The CPE on the fixed line.
    pub const CPE_DSL: Ipv4Addr = Ipv4Addr::new(10, 64, 1, 2);
    /// The fixed line's router on the CPE side.
    pub const DSL_GW: Ipv4Addr = Ipv4Addr::new(10, 64, 1, 1);
    /// The CPE on the mobile link.
    pub const CPE_LTE: Ipv4Addr = Ipv4Addr::new(10, 64, 2, 2);
    /// The mobile link's router on the CPE side.
    pub const LTE_GW: Ipv4Addr = Ipv4Addr::new(10, 64, 2, 1);
    /// The fixed line's router on the HAG side.
    pub const DSL_CORE: Ipv4Addr = Ipv4Addr::new(10, 65, 1, 1);
    /// The HAG on the fixed line's side.
    pub const HAG_DSL: Ipv4Addr = Ipv4Addr::new(10, 65, 1, 2);
    /// The mobile link's router on the HAG side.
    pub const LTE_CORE: Ipv4Addr = Ipv4Addr::new(10, 65, 2, 1);
    /// The HAG on the mobile link's side.
    pub const HAG_LTE: Ipv4Addr = Ipv4Addr::new(10, 65, 2, 2);
    /// The HAG's Convert service address (reachable over both links).
    pub const HAG_SERVICE: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 1);
    /// The HAG on the internet side.
    pub const HAG_NET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    /// The origin server on the "internet".
    pub const ORIGIN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    /// `tandem ops`, in the operator's core (the `net` node), reached from
    /// the CPE over either access link through the HAG's node.
    pub const OPS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
    /// The attacker / outsider on the "internet".
    pub const OUTSIDER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);
    /// A hostile host inside the access networks (a compromised home),
    /// attached straight to the HAG (no emulated link in between).
    pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(10, 64, 9, 2);
    /// The HAG on the attacker's segment.
    pub const HAG_ATK: Ipv4Addr = Ipv4Addr::new(10, 64, 9, 1);
}

/// Port of the origin HTTP server.
pub const ORIGIN_PORT: u16 = 80;
/// Port of ops' API.
pub const OPS_PORT: u16 = 8470;
/// Ops' admin listener, in the `net` node.
pub const OPS_ADMIN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9103));
/// The lab home's subscriber name (the HAG's registry and ops' inventory).
pub const HOME_SUBSCRIBER: &str = "home-1";
/// Port of the HAG's Convert service in the lab.
pub const HAG_PORT: u16 = 5124;

/// Lab nodes (network namespaces).
pub const NODES: &[&str] = &["home", "cpe", "dsl", "lte", "hag", "net", "atk", "dns"];

/// What `lab up` recorded, read back by the other commands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    /// Lab name (namespace prefix).
    pub name: String,
    /// Profile name.
    pub profile: String,
    /// Current shape of the fixed line.
    pub dsl: LinkShape,
    /// Current shape of the mobile link.
    pub lte: LinkShape,
    /// Whether each link is cut.
    pub dsl_cut: bool,
    /// Whether the mobile link is cut.
    pub lte_cut: bool,
    /// Whether the fixed line silently drops everything (link up).
    #[serde(default)]
    pub dsl_blackhole: bool,
    /// Whether the mobile link silently drops everything (link up).
    #[serde(default)]
    pub lte_blackhole: bool,
    /// Processes the lab started: (role, pid).
    pub pids: Vec<(String, u32)>,
    /// When the fixed line's modem last entered showtime, Unix seconds.
    #[serde(default)]
    pub dsl_showtime_since: u64,
}

impl State {
    /// Shape of a link.
    pub fn shape(&self, l: Link) -> LinkShape {
        match l {
            Link::Dsl => self.dsl,
            Link::Lte => self.lte,
        }
    }

    /// Seconds the fixed line's modem has been in showtime.
    pub fn dsl_showtime_s(&self) -> u64 {
        unix_now().saturating_sub(self.dsl_showtime_since)
    }

    fn shape_mut(&mut self, l: Link) -> &mut LinkShape {
        match l {
            Link::Dsl => &mut self.dsl,
            Link::Lte => &mut self.lte,
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The directory holding a lab's state, configs and logs.
pub fn state_dir(name: &str) -> PathBuf {
    PathBuf::from("/run/tandem-lab").join(name)
}

/// The namespace of a node.
pub fn ns(name: &str, node: &str) -> String {
    format!("{name}-{node}")
}

/// Names of the namespaces that exist for this lab.
pub fn existing_namespaces(name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    netns::list()
        .into_iter()
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|node| NODES.contains(&node))
        })
        .collect()
}

/// Reads a lab's state.
pub fn load_state(name: &str) -> Result<State, LabError> {
    let path = state_dir(name).join("state.toml");
    let text = std::fs::read_to_string(&path).map_err(|_| LabError::NotUp(name.to_string()))?;
    toml::from_str(&text).map_err(|e| LabError::State(e.to_string()))
}

/// Writes a lab's state.
pub fn save_state(s: &State) -> Result<(), LabError> {
    let dir = state_dir(&s.name);
    std::fs::create_dir_all(&dir).map_err(LabError::Io)?;
    let text = toml::to_string(s).map_err(|e| LabError::State(e.to_string()))?;
    let tmp = dir.join("state.toml.tmp");
    std::fs::write(&tmp, text).map_err(LabError::Io)?;
    std::fs::rename(tmp, dir.join("state.toml")).map_err(LabError::Io)
}

/// The bfifo limit for ~50 ms of queue at `kbit`.
fn queue_bytes(kbit: u64) -> u32 {
    let bytes = (kbit.saturating_mul(1000) / 8).saturating_mul(50) / 1000;
    u32::try_from(bytes.max(6_000)).unwrap_or(u32::MAX)
}

/// The shaping of one link direction: what leaves `dev` at `kbit`.
fn shape(dev: &str, kbit: u64) -> Step {
    Step::Shape {
        dev: dev.to_owned(),
        kbit,
        limit_bytes: queue_bytes(kbit),
    }
}

/// One-way impairment of a link: half its RTT each way.
fn impairment(s: &LinkShape) -> Impairment {
    Impairment {
        delay_ms: s.rtt_ms / 2.0,
        jitter_ms: s.jitter_ms,
        loss_pct: s.loss_pct,
    }
}

fn control_path(name: &str, l: Link) -> PathBuf {
    state_dir(name).join(format!("emu-{}.ctl", l.name()))
}

/// Queue 1: upload direction (arriving from the CPE), queue 2: download.
fn emu_entries(s: &LinkShape) -> Vec<(u16, Impairment)> {
    vec![(1, impairment(s)), (2, impairment(s))]
}

fn spawn_bg(exe: &Path, ns: &str, args: &[&str], log: &Path) -> Result<u32, LabError> {
    let logf = std::fs::File::create(log).map_err(LabError::Io)?;
    let errf = logf.try_clone().map_err(LabError::Io)?;
    let mut c = cmd::in_ns(
        ns,
        [exe.as_os_str()]
            .into_iter()
            .chain(args.iter().map(OsStr::new)),
    );
    c.stdout(logf).stderr(errf);
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let child = c.spawn().map_err(|e| LabError::Command {
        cmd: format!("{} {}", exe.display(), args.join(" ")),
        msg: e.to_string(),
    })?;
    Ok(child.id())
}

/// Two network namespaces joined by one veth pair, outside any lab: the
/// shape of a measurement that needs no emulated link (the bench's relay
/// cost against HAProxy, the emulator's tests). Each side has its address
/// on the veth, the loopback up, MPTCP enabled and, as in the lab, `congctl
/// cubic` on its subnet route and on the loopback's local route (see the
/// module docs): built with the lab's own [`netns::create`], [`net::veth`]
/// and [`net::apply`] steps.
/// Both namespaces, and whatever still runs in them, go when it is dropped.
#[derive(Debug)]
pub struct Pair {
    names: [String; 2],
}

impl Pair {
    /// Builds namespaces `a` and `b` (removing leftovers of those names
    /// first), joined by a veth named `dev` on both sides, with `a_ip` and
    /// `b_ip` on a `/prefix_len` network.
    pub fn build(
        [a, b]: [&str; 2],
        dev: &str,
        [a_ip, b_ip]: [Ipv4Addr; 2],
        prefix_len: u8,
    ) -> Result<Self, LabError> {
        if prefix_len > 32 {
            return Err(LabError::Invalid(format!("prefix length {prefix_len}")));
        }
        for n in [a, b] {
            remove_namespace(n);
        }
        let pair = Self {
            names: [a.to_owned(), b.to_owned()],
        };
        for n in [a, b] {
            netns::create(n)?;
        }
        net::veth((a, dev), (b, dev))?;
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        let subnet = Ipv4Addr::from(u32::from(a_ip) & mask);
        for (n, ip) in [(a, a_ip), (b, b_ip)] {
            let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
            net::apply(
                n,
                vec![
                    Step::up("lo"),
                    Step::address(dev, ip, prefix_len),
                    Step::replace_route(subnet_route(subnet, prefix_len, ip), Some(dev)),
                    Step::replace_route(
                        Route::local(LOCAL_TABLE, lo, 32, 0)
                            .with_prefsrc(lo)
                            .with_congctl(CC),
                        Some("lo"),
                    ),
                ],
            )?;
            sysctl(n, "net.mptcp.enabled", "1")?;
        }
        Ok(pair)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for n in &self.names {
            remove_namespace(n);
        }
    }
}

/// Kills (SIGKILL) whatever runs in namespace `name` and deletes it; a
/// namespace that does not exist is no error. For namespaces of a
/// [`Pair`] left by an interrupted run; a lab goes with [`down`].
pub fn remove_namespace(name: &str) {
    use nix::sys::signal::{kill, Signal};
    for p in netns::pids(name) {
        if let Ok(p) = i32::try_from(p) {
            let _ = kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    if let Err(e) = netns::delete(name) {
        tracing::warn!("{e}");
    }
}

/// Options of `lab up`.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Lab name (namespace prefix), at most 8 characters.
    pub name: String,
    /// Profile name.
    pub profile_name: String,
    /// The profile.
    pub profile: Profile,
    /// Also start the HAG and the CPE (the origin server always runs).
    pub tandem: bool,
    /// Also start the authoritative DNS server and `tandem shield` as the
    /// home's resolver.
    pub shield: bool,
    /// The `tandem` executable to run inside the namespaces.
    pub exe: PathBuf,
}

fn build(o: &UpOptions) -> Result<State, LabError> {
    for node in NODES {
        netns::create(&ns(&o.name, node))?;
    }
    wire(&o.name)?;
    kernel_settings(&o.name)?;
    routes(&o.name)?;
    for l in Link::ALL {
        access_link(&o.name, l, o.profile_link(l))?;
    }
    Ok(State {
        name: o.name.clone(),
        profile: o.profile_name.clone(),
        dsl: o.profile.dsl,
        lte: o.profile.lte,
        dsl_cut: false,
        lte_cut: false,
        dsl_blackhole: false,
        lte_blackhole: false,
        pids: Vec::new(),
        dsl_showtime_since: unix_now(),
    })
}

/// The veth pairs between the nodes and their addresses.
fn wire(name: &str) -> Result<(), LabError> {
    let n = |node: &str| ns(name, node);
    // (ns A, dev A, ns B, dev B)
    let veths = [
        ("home", "eth0", "cpe", "lan0"),
        ("cpe", "dsl0", "dsl", "cpe0"),
        ("dsl", "core0", "hag", "dsl0"),
        ("cpe", "lte0", "lte", "cpe0"),
        ("lte", "core0", "hag", "lte0"),
        ("hag", "net0", "net", "eth0"),
        ("hag", "atk0", "atk", "eth0"),
        ("hag", "dns0", "dns", "eth0"),
    ];
    for (a, da, b, db) in veths {
        net::veth((&n(a), da), (&n(b), db))?;
    }
    let addrs = [
        ("home", "eth0", addr::HOME, 24),
        ("cpe", "lan0", addr::CPE_LAN, 24),
        ("cpe", "dsl0", addr::CPE_DSL, 24),
        ("dsl", "cpe0", addr::DSL_GW, 24),
        ("dsl", "core0", addr::DSL_CORE, 24),
        ("hag", "dsl0", addr::HAG_DSL, 24),
        ("cpe", "lte0", addr::CPE_LTE, 24),
        ("lte", "cpe0", addr::LTE_GW, 24),
        ("lte", "core0", addr::LTE_CORE, 24),
        ("hag", "lte0", addr::HAG_LTE, 24),
        ("hag", "lo", addr::HAG_SERVICE, 32),
        ("hag", "net0", addr::HAG_NET, 24),
        ("net", "eth0", addr::ORIGIN, 24),
        ("net", "eth0", addr::OUTSIDER, 24),
        ("net", "eth0", addr::OPS, 24),
        ("hag", "atk0", addr::HAG_ATK, 24),
        ("atk", "eth0", addr::ATTACKER, 24),
        ("hag", "dns0", crate::dns::HAG_DNS, 24),
        ("dns", "eth0", crate::dns::SHIELD, 24),
        ("dns", "eth0", crate::dns::WARNING, 24),
        ("net", "eth0", crate::dns::AUTHORITY, 24),
    ];
    let mut steps: Vec<(&str, Step)> = NODES.iter().map(|node| (*node, Step::up("lo"))).collect();
    steps.extend(
        addrs
            .into_iter()
            .map(|(node, dev, ip, plen)| (node, Step::address(dev, ip, plen))),
    );
    apply_all(name, steps)
}

/// Applies `(node, step)`s, each node's in order, one thread per node.
fn apply_all(name: &str, steps: Vec<(&str, Step)>) -> Result<(), LabError> {
    for node in NODES {
        let mine: Vec<Step> = steps
            .iter()
            .filter(|(n, _)| n == node)
            .map(|(_, s)| s.clone())
            .collect();
        if !mine.is_empty() {
            net::apply(&ns(name, node), mine)?;
        }
    }
    Ok(())
}

/// The congestion control on the end hosts' routes (see the module docs).
const CC: &str = "cubic";

/// `SUBNET/LEN dev DEV src SRC congctl cubic` in the main table: a
/// subnet's route, replacing the one the kernel made for the address.
fn subnet_route(subnet: Ipv4Addr, prefix_len: u8, src: Ipv4Addr) -> Route {
    Route::on_link(MAIN_TABLE, IpAddr::V4(subnet), prefix_len, 0)
        .with_prefsrc(IpAddr::V4(src))
        .with_congctl(CC)
}

/// `DEST/LEN via GW [dev DEV] [table T]`, the default route for
/// `0.0.0.0/0`.
fn via(table: u32, dest: Ipv4Addr, prefix_len: u8, gw: Ipv4Addr) -> Route {
    Route::via(table, IpAddr::V4(dest), prefix_len, IpAddr::V4(gw))
}

/// The default route via `gw`.
fn default_via(table: u32, gw: Ipv4Addr) -> Route {
    via(table, Ipv4Addr::UNSPECIFIED, 0, gw)
}

/// Every node's sysctls: no reverse-path filter, no IPv6, MPTCP on;
/// forwarding on the routers.
fn kernel_settings(name: &str) -> Result<(), LabError> {
    let n = |node: &str| ns(name, node);
    for node in NODES {
        sysctl(&n(node), "net.ipv4.conf.all.rp_filter", "0")?;
        sysctl(&n(node), "net.ipv4.conf.default.rp_filter", "0")?;
        sysctl(&n(node), "net.ipv6.conf.all.disable_ipv6", "1")?;
        sysctl(&n(node), "net.mptcp.enabled", "1")?;
    }
    for node in ["cpe", "dsl", "lte", "hag"] {
        sysctl(&n(node), "net.ipv4.ip_forward", "1")?;
    }
    Ok(())
}

/// Every node's routes and the CPE's per-link tables and rules.
fn routes(name: &str) -> Result<(), LabError> {
    // End hosts' routes carry `congctl cubic` (see module docs).
    let lan = Ipv4Addr::new(192, 168, 100, 0);
    let internet = Ipv4Addr::new(203, 0, 113, 0);
    let (dsl_net, lte_net) = (Ipv4Addr::new(10, 64, 1, 0), Ipv4Addr::new(10, 64, 2, 0));
    let add = Step::add_route;
    let replace = Step::replace_route;
    let steps = vec![
        (
            "home",
            replace(subnet_route(lan, 24, addr::HOME), Some("eth0")),
        ),
        (
            "home",
            add(
                default_via(MAIN_TABLE, addr::CPE_LAN).with_congctl(CC),
                None,
            ),
        ),
        (
            "cpe",
            replace(subnet_route(lan, 24, addr::CPE_LAN), Some("lan0")),
        ),
        (
            "cpe",
            add(
                default_via(MAIN_TABLE, addr::DSL_GW).with_congctl(CC),
                Some("dsl0"),
            ),
        ),
        (
            "cpe",
            add(default_via(10, addr::DSL_GW).with_congctl(CC), Some("dsl0")),
        ),
        (
            "cpe",
            add(default_via(20, addr::LTE_GW).with_congctl(CC), Some("lte0")),
        ),
        (
            "cpe",
            Step::AddRule(Rule::from(100, addr::CPE_DSL.into(), 32, 10)),
        ),
        (
            "cpe",
            Step::AddRule(Rule::from(100, addr::CPE_LTE.into(), 32, 20)),
        ),
        ("dsl", add(default_via(MAIN_TABLE, addr::HAG_DSL), None)),
        ("lte", add(default_via(MAIN_TABLE, addr::HAG_LTE), None)),
        (
            "hag",
            add(
                via(MAIN_TABLE, dsl_net, 24, addr::DSL_CORE).with_congctl(CC),
                None,
            ),
        ),
        (
            "hag",
            add(
                via(MAIN_TABLE, lte_net, 24, addr::LTE_CORE).with_congctl(CC),
                None,
            ),
        ),
        (
            "hag",
            replace(subnet_route(internet, 24, addr::HAG_NET), Some("net0")),
        ),
        (
            "net",
            replace(subnet_route(internet, 24, addr::ORIGIN), Some("eth0")),
        ),
        (
            "net",
            add(
                default_via(MAIN_TABLE, addr::HAG_NET).with_congctl(CC),
                None,
            ),
        ),
        (
            "atk",
            add(
                default_via(MAIN_TABLE, addr::HAG_ATK).with_congctl(CC),
                None,
            ),
        ),
        (
            "dns",
            add(
                default_via(MAIN_TABLE, crate::dns::HAG_DNS).with_congctl(CC),
                None,
            ),
        ),
        // The home's non-TCP traffic (DNS) is routed over the fixed line.
        ("dsl", add(via(MAIN_TABLE, lan, 24, addr::CPE_DSL), None)),
        ("hag", add(via(MAIN_TABLE, lan, 24, addr::DSL_CORE), None)),
    ];
    apply_all(name, steps)
}

/// One access link: no segmentation offloads (htb would send 64 KB
/// bursts), shaping in both directions, delay queues where packets arrive.
fn access_link(name: &str, l: Link, shape_of: LinkShape) -> Result<(), LabError> {
    let n = |node: &str| ns(name, node);
    let node = n(l.name());
    for (peer, dev) in [
        (n("cpe"), format!("{}0", l.name())),
        (n("hag"), format!("{}0", l.name())),
    ] {
        cmd::run_in(
            &peer,
            "ethtool",
            &["-K", &dev, "tso", "off", "gso", "off", "gro", "off"],
        )?;
    }
    for dev in ["cpe0", "core0"] {
        cmd::run_in(
            &node,
            "ethtool",
            &["-K", dev, "tso", "off", "gso", "off", "gro", "off"],
        )?;
    }
    net::apply(
        &node,
        vec![
            shape("cpe0", shape_of.down_kbit),
            shape("core0", shape_of.up_kbit),
        ],
    )?;
    for (dev, q) in [("cpe0", 1), ("core0", 2)] {
        queue_arrivals(&node, dev, q)?;
    }
    Ok(())
}

/// Sends the packets arriving on `dev` in namespace `ns` to NFQUEUE
/// `queue`, where the emulator ([`crate::emu`]) delays or drops them; they
/// pass untouched while no emulator listens (`--queue-bypass`).
pub fn queue_arrivals(ns: &str, dev: &str, queue: u16) -> Result<(), LabError> {
    let q = queue.to_string();
    cmd::run_in(
        ns,
        "iptables",
        &[
            "-t",
            "mangle",
            "-A",
            "PREROUTING",
            "-i",
            dev,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &q,
            "--queue-bypass",
        ],
    )
    .map(drop)
}

impl UpOptions {
    fn profile_link(&self, l: Link) -> LinkShape {
        match l {
            Link::Dsl => self.profile.dsl,
            Link::Lte => self.profile.lte,
        }
    }
}

/// The HAG configuration the lab uses: cookies required, the registry and
/// a fresh key in the lab's state directory.
pub fn hag_config(dir: &Path, key_hex: &str) -> String {
    format!(
        "# Written by `tandem lab up`.\n\
         listen = \"{}:{HAG_PORT}\"\n\
         admin_listen = \"{HAG_ADMIN}\"\n\
         subscriber_prefixes = [\"10.64.0.0/16\"]\n\
         congestion_control = \"cubic\"\n\
         registry = \"{}\"\n\
         [links]\ndsl = [\"10.64.1.0/24\"]\nlte = [\"10.64.2.0/24\"]\n\
         [auth]\nrequire_cookie = true\ncurrent_key = 1\n\
         [[auth.keys]]\nid = 1\nsecret = \"{key_hex}\"\n",
        addr::HAG_SERVICE,
        dir.join("subscribers.db").display()
    )
}

/// The CPE configuration the lab uses: the links' rates from the profile
/// (the fixed line's "sync rate" the `priority` mode measures against).
pub fn cpe_config(p: &Profile) -> String {
    format!(
        "# Written by `tandem lab up`.\n\
         lan_interface = \"lan0\"\n\
         hag = \"{}:{HAG_PORT}\"\n\
         admin_listen = \"{CPE_ADMIN}\"\n\
         congestion_control = \"cubic\"\n\
         [dsl]\ninterface = \"dsl0\"\naddress = \"{}\"\ngateway = \"{}\"\ndown_kbit = {}\nup_kbit = {}\n\
         [lte]\ninterface = \"lte0\"\naddress = \"{}\"\ngateway = \"{}\"\ndown_kbit = {}\nup_kbit = {}\n",
        addr::HAG_SERVICE,
        addr::CPE_DSL,
        addr::DSL_GW,
        p.dsl.down_kbit,
        p.dsl.up_kbit,
        addr::CPE_LTE,
        addr::LTE_GW,
        p.lte.down_kbit,
        p.lte.up_kbit,
    )
}

fn random_key() -> Result<String, LabError> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(LabError::Random)?;
    Ok(hex::encode(k))
}

/// Waits until `ns` accepts TCP on `port` of `ip` (a service came up).
pub fn wait_port(ns: &str, ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<(), LabError> {
    netns::wait_port(ns, SocketAddr::from((ip, port)), timeout)
}

fn start_services(o: &UpOptions, st: &mut State) -> Result<(), LabError> {
    let dir = state_dir(&o.name);
    let n = |node: &str| ns(&o.name, node);
    for l in Link::ALL {
        let ctl = control_path(&o.name, l);
        emu::write_control(&ctl, &emu_entries(&st.shape(l))).map_err(LabError::Emu)?;
        let ctl_s = ctl.display().to_string();
        let pid = spawn_bg(
            &o.exe,
            &n(l.name()),
            &["lab", "emu", "--control", &ctl_s],
            &dir.join(format!("emu-{}.log", l.name())),
        )?;
        st.pids.push((format!("emu-{}", l.name()), pid));
    }
    let origin = format!("{}:{ORIGIN_PORT}", addr::ORIGIN);
    let pid = spawn_bg(
        &o.exe,
        &n("net"),
        &["lab", "origin", "--listen", &origin],
        &dir.join("origin.log"),
    )?;
    st.pids.push(("origin".into(), pid));
    save_state(st)?;
    wait_port(
        &n("net"),
        addr::ORIGIN,
        ORIGIN_PORT,
        Duration::from_secs(10),
    )?;
    if o.shield {
        let (nsd_conf, shield_conf) = crate::dns::write_files(&dir, &n("home"))?;
        let mut c = cmd::in_ns(&n("net"), ["nsd", "-d", "-c", &nsd_conf]);
        c.stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("nsd.err")).map_err(LabError::Io)?);
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let child = c.spawn().map_err(|e| LabError::Command {
            cmd: "nsd".into(),
            msg: e.to_string(),
        })?;
        st.pids.push(("nsd".into(), child.id()));
        let pid = spawn_bg(
            &o.exe,
            &n("dns"),
            &["shield", "run", "--config", &shield_conf],
            &dir.join("shield.log"),
        )?;
        st.pids.push(("shield".into(), pid));
        save_state(st)?;
        wait_port(
            &n("dns"),
            Ipv4Addr::LOCALHOST,
            9153,
            Duration::from_secs(10),
        )?;
    }
    if o.tandem {
        let hag_cfg = dir.join("hag.toml");
        let cpe_cfg = dir.join("cpe.toml");
        std::fs::write(&hag_cfg, hag_config(&dir, &random_key()?)).map_err(LabError::Io)?;
        std::fs::write(&cpe_cfg, cpe_config(&o.profile)).map_err(LabError::Io)?;
        let hag_s = hag_cfg.display().to_string();
        if o.shield {
            // The operator's DNS and warning page are reachable through Tandem.
            let text = std::fs::read_to_string(&hag_cfg).map_err(LabError::Io)?;
            let text = text.replacen(
                "registry =",
                "allow_destinations = [\"10.67.0.0/24\"]\nregistry =",
                1,
            );
            std::fs::write(&hag_cfg, text).map_err(LabError::Io)?;
        }
        let cpe_s = cpe_cfg.display().to_string();
        // The home is a registered subscriber whose cookie is bound to the
        // CPE's two WAN addresses.
        let (dsl, lte) = (
            format!("{}/32", addr::CPE_DSL),
            format!("{}/32", addr::CPE_LTE),
        );
        cmd::run(
            &o.exe.display().to_string(),
            &[
                "hag",
                "subscriber",
                "add",
                "home-1",
                "--config",
                &hag_s,
                "--cpe-config",
                &cpe_s,
                "--prefix",
                &dsl,
                "--prefix",
                &lte,
            ],
        )?;
        let pid = spawn_bg(
            &o.exe,
            &n("hag"),
            &["hag", "run", "--config", &hag_s],
            &dir.join("hag.log"),
        )?;
        st.pids.push(("hag".into(), pid));
        save_state(st)?;
        netns::wait_ready(&n("hag"), HAG_ADMIN, Duration::from_secs(10))?;
        start_ops(o, st, &cpe_cfg)?;
        let pid = spawn_bg(
            &o.exe,
            &n("cpe"),
            &["cpe", "run", "--config", &cpe_s],
            &dir.join("cpe.log"),
        )?;
        st.pids.push(("cpe".into(), pid));
        save_state(st)?;
        netns::wait_ready(&n("cpe"), CPE_ADMIN, Duration::from_secs(10))?;
    }
    Ok(())
}

/// Ops' configuration in the lab: its database and inventory in the state
/// directory, CPEs reporting every 2 s (so a test sees a change within
/// seconds) and every home diagnosed every second.
pub fn ops_config(dir: &Path) -> String {
    format!(
        "# Written by `tandem lab up`.\n\
         [api]\nlisten = \"{}:{OPS_PORT}\"\n\
         [admin]\nlisten = \"{OPS_ADMIN}\"\n\
         [data]\ndb = \"{}\"\ninventory = \"{}\"\n\
         [engine]\nreport_period_s = {REPORT_PERIOD_S}\nscan_interval_s = 1\n",
        addr::OPS,
        dir.join("ops.db").display(),
        dir.join("homes.csv").display(),
    )
}

/// How often the lab's CPE reports to ops, seconds.
pub const REPORT_PERIOD_S: u64 = 2;

/// Where the lab keeps the operator's token for ops' API.
pub fn operator_token_path(name: &str) -> PathBuf {
    state_dir(name).join("ops-operator.token")
}

/// Starts ops in the `net` node with the lab home in its inventory, issues
/// the CPE's token (written into `cpe.toml`'s `[telemetry]` with the modem
/// files as its sources) and an operator token (kept in the state
/// directory for `lab` commands and the tests).
fn start_ops(o: &UpOptions, st: &mut State, cpe_cfg: &Path) -> Result<(), LabError> {
    let dir = state_dir(&o.name);
    let exe = o.exe.display().to_string();
    std::fs::write(
        dir.join("homes.csv"),
        format!(
            "subscriber,cabinet,card,cell\n{HOME_SUBSCRIBER},cab1,0,{}\n",
            crate::modem::CELL_ID
        ),
    )
    .map_err(LabError::Io)?;
    let ops_cfg = dir.join("ops.toml");
    std::fs::write(&ops_cfg, ops_config(&dir)).map_err(LabError::Io)?;
    let ops_s = ops_cfg.display().to_string();
    let issue = |kind: &str, who: &str| -> Result<String, LabError> {
        Ok(cmd::run(
            &exe,
            &[
                "ops", "token", "issue", "--kind", kind, who, "--config", &ops_s,
            ],
        )?
        .trim()
        .to_owned())
    };
    let cpe_token = issue("cpe", HOME_SUBSCRIBER)?;
    let operator = issue("operator", "lab")?;
    std::fs::write(operator_token_path(&o.name), format!("{operator}\n")).map_err(LabError::Io)?;
    crate::modem::write(&dir, st)?;
    let pid = spawn_bg(
        &o.exe,
        &ns(&o.name, "cpe"),
        &["lab", "modem", "--name", &o.name],
        &dir.join("modem.log"),
    )?;
    st.pids.push(("modem".into(), pid));
    let mut text = std::fs::read_to_string(cpe_cfg).map_err(LabError::Io)?;
    text.push_str(&format!(
        "\n[telemetry]\nops = \"{}:{OPS_PORT}\"\nsubscriber = \"{HOME_SUBSCRIBER}\"\n\
         token = \"{cpe_token}\"\nperiod_s = {REPORT_PERIOD_S}\ntimeout_ms = 1500\n\
         dsl = \"file:{}\"\nmobile = \"file:{}\"\n",
        addr::OPS,
        crate::modem::dsl_path(&dir).display(),
        crate::modem::lte_path(&dir).display(),
    ));
    std::fs::write(cpe_cfg, text).map_err(LabError::Io)?;
    let pid = spawn_bg(
        &o.exe,
        &ns(&o.name, "net"),
        &["ops", "run", "--config", &ops_s],
        &dir.join("ops.log"),
    )?;
    st.pids.push(("ops".into(), pid));
    save_state(st)?;
    netns::wait_ready(&ns(&o.name, "net"), OPS_ADMIN, Duration::from_secs(10))
}

/// Brings a lab up. On any failure, tears down what was built.
pub fn up(o: &UpOptions) -> Result<State, LabError> {
    if o.name.is_empty() || o.name.len() > 8 || !o.name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(LabError::Invalid(format!(
            "lab name {:?}: 1 to 8 letters or digits",
            o.name
        )));
    }
    if !existing_namespaces(&o.name).is_empty() {
        return Err(LabError::Invalid(format!(
            "lab {:?} is already up (tandem lab down --name {} first)",
            o.name, o.name
        )));
    }
    std::fs::create_dir_all(state_dir(&o.name)).map_err(LabError::Io)?;
    let result = build(o).and_then(|mut st| {
        save_state(&st)?;
        start_services(o, &mut st).map(|()| st)
    });
    if result.is_err() {
        let _ = down(&o.name);
    }
    result
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Stops the processes the lab started (SIGTERM, then SIGKILL after 5 s),
/// deletes its namespaces and its state. Safe to run twice.
pub fn down(name: &str) -> Result<(), LabError> {
    // One teardown at a time in this process (an interrupted demo or bench
    // tears down from its signal thread while the main thread may too), and
    // a namespace already gone is not an error.
    static DOWN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = DOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Ok(st) = load_state(name) {
        // CPE first: it removes its nftables table on SIGTERM.
        let mut pids = st.pids.clone();
        pids.sort_by_key(|(role, _)| if role == "cpe" { 0 } else { 1 });
        for (role, pid) in &pids {
            stop_pid(role, *pid);
        }
    }
    for n in existing_namespaces(name) {
        // Anything still running in the namespace was started by this lab.
        for p in netns::pids(&n) {
            stop_pid("leftover", p);
        }
        netns::delete(&n)?;
    }
    let _ = std::fs::remove_dir_all(state_dir(name));
    crate::dns::remove_files(&ns(name, "home"));
    Ok(())
}

fn stop_pid(role: &str, pid: u32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let p = Pid::from_raw(pid as i32);
    if kill(p, Signal::SIGTERM).is_err() {
        return;
    }
    let until = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && Instant::now() < until {
        // Reap if it is our child (when `up` and `down` run in one process).
        let _ = nix::sys::wait::waitpid(p, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        std::thread::sleep(Duration::from_millis(20));
    }
    if pid_alive(pid) {
        tracing::warn!(role, pid, "did not stop on SIGTERM; killing");
        let _ = kill(p, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(p, None);
    }
}

/// Byte counters of an access link: (download, upload) bytes that left the
/// link towards the CPE and towards the HAG.
pub fn link_bytes(name: &str, l: Link) -> Result<(u64, u64), LabError> {
    let node = ns(name, l.name());
    Ok((
        net::link_bytes(&node, "cpe0")?.tx,
        net::link_bytes(&node, "core0")?.tx,
    ))
}

/// A change to a link.
#[derive(Clone, Debug, PartialEq)]
pub enum LinkAction {
    /// Take the link down (carrier lost at the street cabinet).
    Cut,
    /// Silently drop everything crossing the link, both ways, with the
    /// link up (the common real failure: no carrier loss to notice).
    Blackhole,
    /// Bring it back (from a cut or a blackhole).
    Restore,
    /// Change rates, delay, jitter or loss.
    Set {
        /// Download rate, kbit/s.
        down_kbit: Option<u64>,
        /// Upload rate, kbit/s.
        up_kbit: Option<u64>,
        /// Round-trip delay, ms.
        rtt_ms: Option<f64>,
        /// Jitter, ms.
        jitter_ms: Option<f64>,
        /// Loss, percent.
        loss_pct: Option<f64>,
    },
}

/// Parses `rate=8mbit down=.. up=.. delay=15ms jitter=2ms loss=1%`.
pub fn parse_set(args: &[String]) -> Result<LinkAction, LabError> {
    let (mut down, mut up, mut rtt, mut jitter, mut loss) = (None, None, None, None, None);
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| LabError::Invalid(format!("{a:?}: expected key=value")))?;
        let bad = || LabError::Invalid(format!("{a:?}: bad value"));
        match k {
            "rate" => {
                let r = crate::profile::parse_rate(v).ok_or_else(bad)?;
                down = Some(r);
                up = Some(r);
            }
            "down" => down = Some(crate::profile::parse_rate(v).ok_or_else(bad)?),
            "up" => up = Some(crate::profile::parse_rate(v).ok_or_else(bad)?),
            "delay" | "rtt" => rtt = Some(crate::profile::parse_ms(v).ok_or_else(bad)?),
            "jitter" => jitter = Some(crate::profile::parse_ms(v).ok_or_else(bad)?),
            "loss" => loss = Some(crate::profile::parse_pct(v).ok_or_else(bad)?),
            _ => {
                return Err(LabError::Invalid(format!(
                    "{k:?}: expected rate, down, up, delay, jitter or loss"
                )))
            }
        }
    }
    if args.is_empty() {
        return Err(LabError::Invalid("nothing to set".into()));
    }
    Ok(LinkAction::Set {
        down_kbit: down,
        up_kbit: up,
        rtt_ms: rtt,
        jitter_ms: jitter,
        loss_pct: loss,
    })
}

/// Applies a change to a link of a running lab.
pub fn link(name: &str, l: Link, action: &LinkAction) -> Result<(), LabError> {
    let mut st = load_state(name)?;
    let node = ns(name, l.name());
    match action {
        LinkAction::Cut => {
            net::apply(&node, vec![Step::Down("cpe0".into())])?;
            *cut_flag(&mut st, l) = true;
        }
        LinkAction::Blackhole => {
            if !*blackhole_flag(&mut st, l) {
                net::apply(&node, blackhole_rules().map(Step::AddRule).to_vec())?;
                *blackhole_flag(&mut st, l) = true;
            }
        }
        LinkAction::Restore => {
            if *blackhole_flag(&mut st, l) {
                net::apply(&node, blackhole_rules().map(Step::DeleteRule).to_vec())?;
                *blackhole_flag(&mut st, l) = false;
            }
            net::apply(&node, vec![Step::up("cpe0")])?;
            // Link down removed the routes through that interface: re-add.
            let (gw, dev, table) = match l {
                Link::Dsl => (addr::DSL_GW, "dsl0", 10),
                Link::Lte => (addr::LTE_GW, "lte0", 20),
            };
            let mut routes = vec![Step::replace_route(
                default_via(table, gw).with_congctl(CC),
                Some(dev),
            )];
            if l == Link::Dsl {
                routes.push(Step::replace_route(
                    default_via(MAIN_TABLE, gw).with_congctl(CC),
                    Some(dev),
                ));
            }
            // Best effort, as before: the CPE may have put them back.
            for r in routes {
                if let Err(e) = net::apply(&ns(name, "cpe"), vec![r]) {
                    tracing::debug!("restoring a CPE route: {e}");
                }
            }
            if l == Link::Dsl && st.dsl_cut {
                // The modem trains again.
                st.dsl_showtime_since = unix_now();
            }
            *cut_flag(&mut st, l) = false;
        }
        LinkAction::Set {
            down_kbit,
            up_kbit,
            rtt_ms,
            jitter_ms,
            loss_pct,
        } => {
            let s = st.shape_mut(l);
            if let Some(v) = down_kbit {
                s.down_kbit = *v;
            }
            if let Some(v) = up_kbit {
                s.up_kbit = *v;
            }
            if let Some(v) = rtt_ms {
                s.rtt_ms = *v;
            }
            if let Some(v) = jitter_ms {
                s.jitter_ms = *v;
            }
            if let Some(v) = loss_pct {
                s.loss_pct = *v;
            }
            let s = *s;
            let mut steps = Vec::new();
            if down_kbit.is_some() {
                steps.push(shape("cpe0", s.down_kbit));
            }
            if up_kbit.is_some() {
                steps.push(shape("core0", s.up_kbit));
            }
            net::apply(&node, steps)?;
            emu::write_control(&control_path(name, l), &emu_entries(&s)).map_err(LabError::Emu)?;
        }
    }
    // What the modems say follows within a second (`lab modem`).
    save_state(&st)
}

/// The rules that blackhole an access link: what arrives on either of its
/// devices is dropped instead of forwarded (see the module docs).
fn blackhole_rules() -> [Rule; 2] {
    ["cpe0", "core0"].map(|dev| Rule::iif_blackhole(Family::V4, 10, dev))
}

fn blackhole_flag(st: &mut State, l: Link) -> &mut bool {
    match l {
        Link::Dsl => &mut st.dsl_blackhole,
        Link::Lte => &mut st.lte_blackhole,
    }
}

fn cut_flag(st: &mut State, l: Link) -> &mut bool {
    match l {
        Link::Dsl => &mut st.dsl_cut,
        Link::Lte => &mut st.lte_cut,
    }
}

/// A human summary of a lab.
pub fn status(name: &str) -> Result<String, LabError> {
    let st = load_state(name)?;
    let mut out = format!("lab {} (profile {})\n", st.name, st.profile);
    for l in Link::ALL {
        let s = st.shape(l);
        let cut = match l {
            Link::Dsl if st.dsl_cut => " CUT",
            Link::Lte if st.lte_cut => " CUT",
            Link::Dsl if st.dsl_blackhole => " BLACKHOLE",
            Link::Lte if st.lte_blackhole => " BLACKHOLE",
            _ => "",
        };
        let (down, up) = link_bytes(name, l).unwrap_or((0, 0));
        out += &format!(
            "  {}: {}/{} kbit/s, rtt {} ms, jitter {} ms, loss {}%{cut}; bytes down {down} up {up}\n",
            l.name(),
            s.down_kbit,
            s.up_kbit,
            s.rtt_ms,
            s.jitter_ms,
            s.loss_pct
        );
    }
    for (role, pid) in &st.pids {
        let alive = if pid_alive(*pid) { "running" } else { "EXITED" };
        out += &format!("  {role}: pid {pid} {alive}\n");
    }
    out += &format!(
        "  namespaces: {}\n  origin http://{}:{ORIGIN_PORT}/  hag {}:{HAG_PORT}  ops http://{}:{OPS_PORT}/api/v1/ (operator token in {})\n",
        existing_namespaces(name).join(" "),
        addr::ORIGIN,
        addr::HAG_SERVICE,
        addr::OPS,
        operator_token_path(name).display(),
    );
    Ok(out)
}

/// The address of a node that the other nodes reach it at.
pub fn node_addr(node: &str) -> Option<IpAddr> {
    Some(IpAddr::V4(match node {
        "home" => addr::HOME,
        "cpe" => addr::CPE_LAN,
        "hag" => addr::HAG_SERVICE,
        "net" => addr::ORIGIN,
        _ => return None,
    }))
}

/// A CPE configuration with `steering.mode` set, in place (toml_edit, as
/// `tandem hag subscriber add --cpe-config` writes the cookie): the rest of
/// the file, its comments and the other `[steering]` keys stay as they are.
fn with_steering_mode(text: &str, mode: SteeringMode) -> Result<String, toml_edit::TomlError> {
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    if !doc.contains_table("steering") {
        doc["steering"] = toml_edit::table();
    }
    doc["steering"]["mode"] = toml_edit::value(mode.name());
    Ok(doc.to_string())
}

/// Sets the running lab CPE's steering mode: sets `steering.mode` in its
/// configuration (nothing else changes), sends it SIGHUP and waits (up to 5 s)
/// until its admin `/status` shows the next configuration generation.
pub fn set_steering(name: &str, mode: SteeringMode) -> Result<(), LabError> {
    let st = load_state(name)?;
    let dir = state_dir(name);
    let cfg = dir.join("cpe.toml");
    let text = std::fs::read_to_string(&cfg).map_err(LabError::Io)?;
    let text = with_steering_mode(&text, mode)
        .map_err(|e| LabError::State(format!("{}: {e}", cfg.display())))?;
    std::fs::write(&cfg, text).map_err(LabError::Io)?;
    let pid = st
        .pids
        .iter()
        .find(|(role, _)| role == "cpe")
        .map(|(_, p)| *p)
        .ok_or_else(|| LabError::State("the lab runs no CPE".into()))?;
    let before = netns::admin_status(&ns(name, "cpe"), CPE_ADMIN)?.config_generation;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| LabError::State(format!("signalling the CPE ({pid}): {e}")))?;
    netns::wait_reloaded(&ns(name, "cpe"), CPE_ADMIN, before, Duration::from_secs(5)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_mode_is_set_in_place() {
        let text = "# the lab's CPE\nhag = \"x\"\n[steering]\n# kept\noverflow = 0.9\nmode = \"priority\"\n[lte]\ninterface = \"lte0\"\n";
        let out = with_steering_mode(text, SteeringMode::Aggregate).unwrap();
        assert_eq!(out, text.replace("\"priority\"", "\"aggregate\""));
        let out = with_steering_mode("hag = \"x\"\n", SteeringMode::ActiveStandby).unwrap();
        let v: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(v["steering"]["mode"].as_str(), Some("active-standby"));
        assert!(with_steering_mode("hag = ", SteeringMode::Priority).is_err());
    }
}
