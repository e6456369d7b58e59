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
//! With `--homes N --cabinets C --cells K` the same builder makes a street
//! of homes through several cabinet and cell nodes ([`crate::street`]);
//! the plain lab is a street of one.
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
use crate::street::{
    self as lstreet, access_node as street_node, addr as saddr, cpe_node, hag_dev, home_node,
    port_dev, Street,
};
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
    /// The street's shape (one home unless `lab up --homes N`).
    #[serde(default)]
    pub street: Street,
}

impl State {
    /// Shape of a link.
    pub fn shape(&self, l: Link) -> LinkShape {
        match l {
            Link::Dsl => self.dsl,
            Link::Lte => self.lte,
        }
    }

    /// Link `l`'s shape for home `i`: home 1's is what `lab link set` made
    /// it, the street's others keep the profile's.
    pub fn line_shape(&self, l: Link, i: u32) -> LinkShape {
        match crate::profile::by_name(&self.profile) {
            Some(p) if i != 1 => match l {
                Link::Dsl => p.dsl,
                Link::Lte => p.lte,
            },
            _ => self.shape(l),
        }
    }

    /// Whether link `l` of home 1 is cut or blackholed by `lab link`.
    pub fn manually_down(&self, l: Link) -> bool {
        match l {
            Link::Dsl => self.dsl_cut || self.dsl_blackhole,
            Link::Lte => self.lte_cut || self.lte_blackhole,
        }
    }

    fn shape_mut(&mut self, l: Link) -> &mut LinkShape {
        match l {
            Link::Dsl => &mut self.dsl,
            Link::Lte => &mut self.lte,
        }
    }
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
        .filter(|n| n.strip_prefix(&prefix).is_some_and(crate::street::is_node))
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
    write_atomic(&dir.join("state.toml"), &text)
}

/// Writes `text` to `path` through a temporary file beside it, so a
/// reader sees the old file or the new one, never half of one.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), LabError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text).map_err(LabError::Io)?;
    std::fs::rename(&tmp, path).map_err(LabError::Io)
}

/// The bfifo limit for ~50 ms of queue at `kbit`.
fn queue_bytes(kbit: u64) -> u32 {
    let bytes = (kbit.saturating_mul(1000) / 8).saturating_mul(50) / 1000;
    u32::try_from(bytes.max(6_000)).unwrap_or(u32::MAX)
}

/// The shaping of one link direction: what leaves `dev` at `kbit`.
pub(crate) fn shape(dev: &str, kbit: u64) -> Step {
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

/// The delay queues' control file of a cabinet's or cell's node.
pub(crate) fn control_path(name: &str, node: &str) -> PathBuf {
    state_dir(name).join(format!("emu-{node}.ctl"))
}

/// Queue `2p+1`: upload direction (arriving from the CPE), `2p+2`:
/// download, for every port `p` of the node.
fn emu_entries(s: &LinkShape, ports: u32) -> Vec<(u16, Impairment)> {
    (0..ports)
        .flat_map(|p| {
            let q = u16::try_from(2 * p + 1).unwrap_or(u16::MAX);
            [(q, impairment(s)), (q + 1, impairment(s))]
        })
        .collect()
}

/// A lock on the lab's state: `lab link`, `lab fault` and the street
/// emulator change it one at a time. Released when dropped.
pub fn lock(name: &str) -> Result<nix::fcntl::Flock<std::fs::File>, LabError> {
    let dir = state_dir(name);
    if !dir.exists() {
        return Err(LabError::NotUp(name.to_owned()));
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("state.lock"))
        .map_err(LabError::Io)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| LabError::Io(e.into()))
}

/// Sends `sig` to the process the lab runs as `role`, if it runs.
pub(crate) fn signal_role(st: &State, role: &str, sig: nix::sys::signal::Signal) {
    if let Some((_, pid)) = st.pids.iter().find(|(r, _)| r == role) {
        if pid_alive(*pid) {
            let p = nix::unistd::Pid::from_raw(*pid as i32);
            let _ = nix::sys::signal::kill(p, sig);
            // Reap it if it is our child (one the street emulator restarted).
            let _ = nix::sys::wait::waitpid(p, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
    }
}

/// Starts home `i`'s CPE again (after a power loss or a restart) and
/// records its new process.
pub(crate) fn restart_cpe(name: &str, exe: &Path, i: u32) -> Result<(), LabError> {
    let _lock = lock(name)?;
    let mut st = load_state(name)?;
    let role = cpe_node(i);
    let cfg = state_dir(name).join(cpe_config_file(i));
    let cfg_s = cfg.display().to_string();
    let pid = spawn_bg(
        exe,
        &ns(name, &role),
        &["cpe", "run", "--config", &cfg_s],
        &state_dir(name).join(format!("{role}.log")),
    )?;
    st.pids.retain(|(r, _)| r != &role);
    st.pids.push((role, pid));
    save_state(&st)
}

/// Puts back the routes through home `i`'s link `l` (a link that went
/// down loses them): the cabinet's (cell's) host route to a CPE on a port
/// past the first and, on the fixed line, to the home's LAN; the CPE's
/// default routes, best effort: the CPE may have put them back.
pub(crate) fn restore_cpe_routes(name: &str, street: &Street, i: u32, l: Link) {
    let node = ns(name, &street_node(l, street.access_of(l, i)));
    let p = street.port(l, i);
    let mut at_node = Vec::new();
    if p > 0 {
        let host = Route::on_link(MAIN_TABLE, IpAddr::V4(saddr::cpe_wan(l, i)), 32, 0);
        at_node.push(Step::replace_route(host, Some(&port_dev(p))));
    }
    if l == Link::Dsl {
        at_node.push(Step::replace_route(
            via(MAIN_TABLE, saddr::lan(i), 24, saddr::cpe_wan(l, i)),
            None,
        ));
    }
    for r in at_node {
        if let Err(e) = net::apply(&node, vec![r]) {
            tracing::warn!("restoring a route to home {i}: {e}");
        }
    }
    let gw = saddr::gateway(l);
    let (dev, table) = match l {
        Link::Dsl => ("dsl0", 10),
        Link::Lte => ("lte0", 20),
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
    for r in routes {
        if let Err(e) = net::apply(&ns(name, &cpe_node(i)), vec![r]) {
            tracing::debug!("restoring a CPE route: {e}");
        }
    }
}

/// Puts back the routes of home `i`'s LAN device after its cable is
/// plugged in again (the device down lost them).
pub(crate) fn restore_home_routes(name: &str, i: u32) {
    let steps = vec![
        Step::replace_route(
            subnet_route(saddr::lan(i), 24, saddr::home(i)),
            Some("eth0"),
        ),
        Step::replace_route(
            default_via(MAIN_TABLE, saddr::cpe_lan(i)).with_congctl(CC),
            None,
        ),
    ];
    if let Err(e) = net::apply(&ns(name, &home_node(i)), steps) {
        tracing::warn!("restoring home {i}'s LAN routes: {e}");
    }
}

fn spawn_bg(exe: &Path, ns: &str, args: &[&str], log: &Path) -> Result<u32, LabError> {
    // Appended: a CPE the street restarts keeps one log.
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(LabError::Io)?;
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
    /// The street: homes, cabinets, cells (one of each by default).
    pub street: Street,
    /// Each CPE's monthly mobile budget, bytes (`None`: no budget).
    pub mobile_budget: Option<u64>,
}

fn build(o: &UpOptions) -> Result<State, LabError> {
    let street = o.street;
    for node in street.nodes() {
        netns::create(&ns(&o.name, &node))?;
    }
    wire(&o.name, &street)?;
    kernel_settings(&o.name, &street)?;
    routes(&o.name, &street)?;
    for l in Link::ALL {
        for j in street.access(l) {
            build_access_node(&o.name, &street, l, j, o.profile_link(l))?;
        }
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
        street,
    })
}

/// The veth pairs between the nodes and their addresses.
fn wire(name: &str, street: &Street) -> Result<(), LabError> {
    let n = |node: &str| ns(name, node);
    // (node A, dev A, node B, dev B)
    let mut veths: Vec<(String, String, String, String)> = [
        ("hag", "net0", "net", "eth0"),
        ("hag", "atk0", "atk", "eth0"),
        ("hag", "dns0", "dns", "eth0"),
    ]
    .iter()
    .map(|(a, b, c, d)| ((*a).into(), (*b).into(), (*c).into(), (*d).into()))
    .collect();
    let mut addrs: Vec<(String, String, Ipv4Addr, u8)> = Vec::new();
    for i in street.homes() {
        veths.push((home_node(i), "eth0".into(), cpe_node(i), "lan0".into()));
        addrs.push((home_node(i), "eth0".into(), saddr::home(i), 24));
        addrs.push((cpe_node(i), "lan0".into(), saddr::cpe_lan(i), 24));
        for l in Link::ALL {
            let (j, p) = (street.access_of(l, i), street.port(l, i));
            let wan = format!("{}0", l.name());
            veths.push((cpe_node(i), wan.clone(), street_node(l, j), port_dev(p)));
            addrs.push((cpe_node(i), wan, saddr::cpe_wan(l, i), 24));
            // The first port has the gateway's subnet; the others answer
            // for the gateway alone and route their CPE's address (routes).
            let plen = if p == 0 { 24 } else { 32 };
            addrs.push((street_node(l, j), port_dev(p), saddr::gateway(l), plen));
        }
    }
    for l in Link::ALL {
        for j in street.access(l) {
            veths.push((
                street_node(l, j),
                "core0".into(),
                "hag".into(),
                hag_dev(l, j),
            ));
            addrs.push((street_node(l, j), "core0".into(), saddr::core(l, j), 24));
            addrs.push(("hag".into(), hag_dev(l, j), saddr::hag_side(l, j), 24));
        }
    }
    for (a, da, b, db) in &veths {
        net::veth((&n(a), da), (&n(b), db))?;
    }
    let fixed = [
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
    addrs.extend(
        fixed
            .iter()
            .map(|(a, d, ip, p)| ((*a).into(), (*d).into(), *ip, *p)),
    );
    let mut steps: Vec<(String, Step)> = street
        .nodes()
        .into_iter()
        .map(|node| (node, Step::up("lo")))
        .collect();
    steps.extend(
        addrs
            .into_iter()
            .map(|(node, dev, ip, plen)| (node, Step::address(&dev, ip, plen))),
    );
    apply_all(name, steps)
}

/// Applies `(node, step)`s, each node's in order.
fn apply_all(name: &str, steps: Vec<(String, Step)>) -> Result<(), LabError> {
    let mut nodes: Vec<&String> = steps.iter().map(|(n, _)| n).collect();
    nodes.sort();
    nodes.dedup();
    for node in nodes {
        let mine: Vec<Step> = steps
            .iter()
            .filter(|(n, _)| n == node)
            .map(|(_, s)| s.clone())
            .collect();
        net::apply(&ns(name, node), mine)?;
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
fn kernel_settings(name: &str, street: &Street) -> Result<(), LabError> {
    for node in street.nodes() {
        let n = ns(name, &node);
        sysctl(&n, "net.ipv4.conf.all.rp_filter", "0")?;
        sysctl(&n, "net.ipv4.conf.default.rp_filter", "0")?;
        sysctl(&n, "net.ipv6.conf.all.disable_ipv6", "1")?;
        sysctl(&n, "net.mptcp.enabled", "1")?;
        let stem = node.trim_end_matches(|c: char| c.is_ascii_digit());
        if ["cpe", "dsl", "lte", "hag"].contains(&stem) {
            sysctl(&n, "net.ipv4.ip_forward", "1")?;
        }
    }
    Ok(())
}

/// The routes a CPE starts with: its LAN, the default over the fixed
/// line, and one table per link chosen by source address.
fn cpe_routes(i: u32) -> Vec<Step> {
    let (dsl_gw, lte_gw) = (saddr::gateway(Link::Dsl), saddr::gateway(Link::Lte));
    vec![
        Step::replace_route(
            subnet_route(saddr::lan(i), 24, saddr::cpe_lan(i)),
            Some("lan0"),
        ),
        Step::add_route(
            default_via(MAIN_TABLE, dsl_gw).with_congctl(CC),
            Some("dsl0"),
        ),
        Step::add_route(default_via(10, dsl_gw).with_congctl(CC), Some("dsl0")),
        Step::add_route(default_via(20, lte_gw).with_congctl(CC), Some("lte0")),
        Step::AddRule(Rule::from(100, saddr::cpe_wan(Link::Dsl, i).into(), 32, 10)),
        Step::AddRule(Rule::from(100, saddr::cpe_wan(Link::Lte, i).into(), 32, 20)),
    ]
}

/// Every node's routes and the CPEs' per-link tables and rules.
fn routes(name: &str, street: &Street) -> Result<(), LabError> {
    // End hosts' routes carry `congctl cubic` (see module docs).
    let internet = Ipv4Addr::new(203, 0, 113, 0);
    let add = Step::add_route;
    let replace = Step::replace_route;
    let mut steps: Vec<(String, Step)> = Vec::new();
    let mut push = |node: &str, s: Step| steps.push((node.to_owned(), s));
    for i in street.homes() {
        let home = home_node(i);
        push(
            &home,
            replace(
                subnet_route(saddr::lan(i), 24, saddr::home(i)),
                Some("eth0"),
            ),
        );
        push(
            &home,
            add(
                default_via(MAIN_TABLE, saddr::cpe_lan(i)).with_congctl(CC),
                None,
            ),
        );
        for s in cpe_routes(i) {
            push(&cpe_node(i), s);
        }
    }
    for l in Link::ALL {
        for j in street.access(l) {
            let node = street_node(l, j);
            push(
                &node,
                add(default_via(MAIN_TABLE, saddr::hag_side(l, j)), None),
            );
            for i in street.homes_on(l, j) {
                let p = street.port(l, i);
                if p > 0 {
                    let host = Route::on_link(MAIN_TABLE, IpAddr::V4(saddr::cpe_wan(l, i)), 32, 0);
                    push(&node, add(host, Some(&port_dev(p))));
                }
                if l == Link::Dsl {
                    // The home's non-TCP traffic (DNS) is routed over the
                    // fixed line.
                    push(
                        &node,
                        add(
                            via(MAIN_TABLE, saddr::lan(i), 24, saddr::cpe_wan(l, i)),
                            None,
                        ),
                    );
                }
            }
            // The HAG: the first cabinet (cell) has the link's /24, the
            // others their homes' addresses.
            let core = saddr::core(l, j);
            if j == 1 {
                let net = Ipv4Addr::from(u32::from(saddr::gateway(l)) & !0xff);
                push(
                    "hag",
                    add(via(MAIN_TABLE, net, 24, core).with_congctl(CC), None),
                );
            } else {
                for i in street.homes_on(l, j) {
                    push(
                        "hag",
                        add(
                            via(MAIN_TABLE, saddr::cpe_wan(l, i), 32, core).with_congctl(CC),
                            None,
                        ),
                    );
                }
            }
            if l == Link::Dsl {
                for i in street.homes_on(l, j) {
                    push("hag", add(via(MAIN_TABLE, saddr::lan(i), 24, core), None));
                }
            }
        }
    }
    push(
        "hag",
        replace(subnet_route(internet, 24, addr::HAG_NET), Some("net0")),
    );
    push(
        "net",
        replace(subnet_route(internet, 24, addr::ORIGIN), Some("eth0")),
    );
    push(
        "net",
        add(
            default_via(MAIN_TABLE, addr::HAG_NET).with_congctl(CC),
            None,
        ),
    );
    push(
        "atk",
        add(
            default_via(MAIN_TABLE, addr::HAG_ATK).with_congctl(CC),
            None,
        ),
    );
    push(
        "dns",
        add(
            default_via(MAIN_TABLE, crate::dns::HAG_DNS).with_congctl(CC),
            None,
        ),
    );
    apply_all(name, steps)
}

/// Where link `l` of home `i` is shaped upwards: on its cabinet's (cell's)
/// backhaul in the plain lab, on the CPE's WAN device (where the modem
/// sends) in a street, whose backhauls carry several lines.
pub fn upload_shaper(street: &Street, l: Link, i: u32) -> (String, String) {
    if street.is_street() {
        (cpe_node(i), format!("{}0", l.name()))
    } else {
        (street_node(l, 1), "core0".into())
    }
}

/// One cabinet's or cell's node: no segmentation offloads (htb would send
/// 64 KB bursts), every line shaped in both directions, delay queues where
/// packets arrive (port `p`: queue `2p+1` upwards, `2p+2` downwards).
fn build_access_node(
    name: &str,
    street: &Street,
    l: Link,
    j: u32,
    shape_of: LinkShape,
) -> Result<(), LabError> {
    let node = ns(name, &street_node(l, j));
    let off = ["tso", "off", "gso", "off", "gro", "off"];
    let ethtool = |n: &str, dev: &str| {
        let mut args = vec!["-K", dev];
        args.extend(off);
        cmd::run_in(n, "ethtool", &args).map(drop)
    };
    ethtool(&node, "core0")?;
    ethtool(&ns(name, "hag"), &hag_dev(l, j))?;
    let mut steps = Vec::new();
    for i in street.homes_on(l, j) {
        let p = street.port(l, i);
        let wan = format!("{}0", l.name());
        ethtool(&ns(name, &cpe_node(i)), &wan)?;
        ethtool(&node, &port_dev(p))?;
        steps.push(shape(&port_dev(p), shape_of.down_kbit));
        let (up_node, up_dev) = upload_shaper(street, l, i);
        net::apply(&ns(name, &up_node), vec![shape(&up_dev, shape_of.up_kbit)])?;
        let q = u16::try_from(2 * p + 1).unwrap_or(u16::MAX);
        queue_arrivals(&node, &port_dev(p), None, q)?;
        // In a street the backhaul carries every line: each CPE's own queue.
        let to = street.is_street().then(|| saddr::cpe_wan(l, i));
        queue_arrivals(&node, "core0", to, q + 1)?;
    }
    net::apply(&node, steps)
}

/// Sends the packets arriving on `dev` in namespace `ns` (for `to` only,
/// if given) to NFQUEUE `queue`, where the emulator ([`crate::emu`])
/// delays or drops them; they pass untouched while no emulator listens
/// (`--queue-bypass`).
pub fn queue_arrivals(
    ns: &str,
    dev: &str,
    to: Option<Ipv4Addr>,
    queue: u16,
) -> Result<(), LabError> {
    let q = queue.to_string();
    let to = to.map(|a| a.to_string());
    let mut args = vec!["-t", "mangle", "-A", "PREROUTING", "-i", dev];
    if let Some(a) = &to {
        args.extend(["-d", a.as_str()]);
    }
    args.extend(["-j", "NFQUEUE", "--queue-num", &q, "--queue-bypass"]);
    cmd::run_in(ns, "iptables", &args).map(drop)
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

/// Home `i`'s CPE configuration file in the state directory.
pub fn cpe_config_file(i: u32) -> String {
    if i == 1 {
        "cpe.toml".into()
    } else {
        format!("cpe{i}.toml")
    }
}

/// The CPE configuration the lab uses for home `i`: its addresses, the
/// links' rates from the profile (the fixed line's "sync rate" the
/// `priority` mode measures against).
pub fn cpe_config(p: &Profile, i: u32) -> String {
    format!(
        "# Written by `tandem lab up`.\n\
         lan_interface = \"lan0\"\n\
         hag = \"{}:{HAG_PORT}\"\n\
         admin_listen = \"{CPE_ADMIN}\"\n\
         congestion_control = \"cubic\"\n\
         [dsl]\ninterface = \"dsl0\"\naddress = \"{}\"\ngateway = \"{}\"\ndown_kbit = {}\nup_kbit = {}\n\
         [lte]\ninterface = \"lte0\"\naddress = \"{}\"\ngateway = \"{}\"\ndown_kbit = {}\nup_kbit = {}\n",
        addr::HAG_SERVICE,
        saddr::cpe_wan(Link::Dsl, i),
        saddr::gateway(Link::Dsl),
        p.dsl.down_kbit,
        p.dsl.up_kbit,
        saddr::cpe_wan(Link::Lte, i),
        saddr::gateway(Link::Lte),
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
    let street = st.street;
    for l in Link::ALL {
        for j in street.access(l) {
            let node = street_node(l, j);
            let ctl = control_path(&o.name, &node);
            let ports = street.homes_on(l, j).len() as u32;
            emu::write_control(&ctl, &emu_entries(&st.shape(l), ports)).map_err(LabError::Emu)?;
            let ctl_s = ctl.display().to_string();
            let pid = spawn_bg(
                &o.exe,
                &n(&node),
                &["lab", "emu", "--control", &ctl_s],
                &dir.join(format!("emu-{node}.log")),
            )?;
            st.pids.push((format!("emu-{node}"), pid));
        }
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
        std::fs::write(&hag_cfg, hag_config(&dir, &random_key()?)).map_err(LabError::Io)?;
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
        // Each home is a registered subscriber whose cookie is bound to its
        // CPE's two WAN addresses.
        for i in street.homes() {
            let cpe_cfg = dir.join(cpe_config_file(i));
            let mut text = cpe_config(&o.profile, i);
            if let Some(bytes) = o.mobile_budget {
                text.push_str(&format!(
                    "[budget]\nmobile_bytes = {bytes}\nreset_day = 1\nstate_file = \"{}\"\n",
                    dir.join(format!("budget{i}.json")).display()
                ));
            }
            std::fs::write(&cpe_cfg, text).map_err(LabError::Io)?;
            let (dsl, lte) = (
                format!("{}/32", saddr::cpe_wan(Link::Dsl, i)),
                format!("{}/32", saddr::cpe_wan(Link::Lte, i)),
            );
            cmd::run(
                &o.exe.display().to_string(),
                &[
                    "hag",
                    "subscriber",
                    "add",
                    &lstreet::subscriber(i),
                    "--config",
                    &hag_s,
                    "--cpe-config",
                    &cpe_cfg.display().to_string(),
                    "--prefix",
                    &dsl,
                    "--prefix",
                    &lte,
                ],
            )?;
        }
        // Ops first: the HAG's and the CPEs' tokens go into their
        // configurations.
        start_ops(o, st)?;
        let pid = spawn_bg(
            &o.exe,
            &n("hag"),
            &["hag", "run", "--config", &hag_s],
            &dir.join("hag.log"),
        )?;
        st.pids.push(("hag".into(), pid));
        save_state(st)?;
        netns::wait_ready(&n("hag"), HAG_ADMIN, Duration::from_secs(10))?;
        for i in street.homes() {
            let role = cpe_node(i);
            let cfg = dir.join(cpe_config_file(i)).display().to_string();
            let pid = spawn_bg(
                &o.exe,
                &n(&role),
                &["cpe", "run", "--config", &cfg],
                &dir.join(format!("{role}.log")),
            )?;
            st.pids.push((role, pid));
            save_state(st)?;
        }
        for i in street.homes() {
            netns::wait_ready(&n(&cpe_node(i)), CPE_ADMIN, Duration::from_secs(10))?;
        }
        // Last: from here on it changes the state too (a CPE it restarts).
        let pid = spawn_bg(
            &o.exe,
            &n("net"),
            &["lab", "street", "--name", &o.name],
            &dir.join("street.log"),
        )?;
        st.pids.push(("street".into(), pid));
        save_state(st)?;
    }
    Ok(())
}

/// Ops' configuration in the lab: TLS on its API (the certificate of the
/// lab's own CA, [`ca_path`]), its database and inventory in the state
/// directory, CPEs reporting every 2 s (so a test sees a change within
/// seconds) and every home diagnosed every second.
pub fn ops_config(dir: &Path) -> String {
    let tls = dir.join(TLS_DIR);
    format!(
        "# Written by `tandem lab up`.\n\
         [api]\nlisten = \"{}:{OPS_PORT}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         [admin]\nlisten = \"{OPS_ADMIN}\"\n\
         [data]\ndb = \"{}\"\ninventory = \"{}\"\n\
         [engine]\nreport_period_s = {REPORT_PERIOD_S}\nhag_period_s = {REPORT_PERIOD_S}\nscan_interval_s = 1\n",
        addr::OPS,
        tls.join("ops.pem").display(),
        tls.join("ops.key").display(),
        dir.join("ops.db").display(),
        dir.join("homes.csv").display(),
    )
}

/// Where in the state directory the lab keeps its CA and ops' certificate
/// (`tandem ops tls-init`).
const TLS_DIR: &str = "tls";

/// The lab's CA certificate: what its CPEs and HAG (and `curl --cacert`)
/// check ops' certificate against.
pub fn ca_path(name: &str) -> PathBuf {
    state_dir(name).join(TLS_DIR).join("ca.pem")
}

/// The `[telemetry]` lines that make a sender speak TLS to the ops of lab
/// `name`.
fn telemetry_tls(name: &str) -> String {
    format!("tls = true\nca = \"{}\"\n", ca_path(name).display())
}

/// How often the lab's CPEs and its HAG report to ops, seconds.
pub const REPORT_PERIOD_S: u64 = 2;

/// The lab HAG's name in ops (its token's).
pub const HAG_NAME: &str = "hag-1";

/// Where the lab keeps the operator's token for ops' API.
pub fn operator_token_path(name: &str) -> PathBuf {
    state_dir(name).join("ops-operator.token")
}

/// An operator's call on ops' API in lab `name` (from the core node, with
/// the lab's operator token): the status and the body.
pub fn ops_call(
    name: &str,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> Result<(u16, String), LabError> {
    let token = std::fs::read_to_string(operator_token_path(name))
        .map_err(|_| LabError::NotUp(name.to_string()))?;
    let tls = ops_client::Tls::load(&ca_path(name), &addr::OPS.to_string())
        .map_err(|e| LabError::State(format!("the lab's CA: {e}")))?;
    netns::https_request(
        &format!("{name}-net"),
        SocketAddr::from((addr::OPS, OPS_PORT)),
        &tls,
        method,
        path,
        Some(token.trim()),
        json,
        Duration::from_secs(5),
    )
}

/// The operator's inventory of the street: each home's cabinet, line card
/// and cell, as ops imports it.
pub fn inventory_csv(street: &Street) -> String {
    let mut csv = String::from("subscriber,cabinet,card,cell\n");
    for i in street.homes() {
        csv += &format!(
            "{},{},{},{}\n",
            lstreet::subscriber(i),
            lstreet::cabinet_name(street.access_of(Link::Dsl, i)),
            street.card(i),
            lstreet::cell_id(street.access_of(Link::Lte, i)),
        );
    }
    csv
}

/// Starts ops in the `net` node with the street's homes in its inventory,
/// issues each CPE's token (written into its configuration's
/// `[telemetry]` with the modem files as its sources), the HAG's (into
/// `hag.toml`'s `[telemetry]`) and an operator token (kept in the state
/// directory for `lab` commands and the tests).
fn start_ops(o: &UpOptions, st: &mut State) -> Result<(), LabError> {
    let dir = state_dir(&o.name);
    let exe = o.exe.display().to_string();
    std::fs::write(dir.join("homes.csv"), inventory_csv(&st.street)).map_err(LabError::Io)?;
    let ops_cfg = dir.join("ops.toml");
    std::fs::write(&ops_cfg, ops_config(&dir)).map_err(LabError::Io)?;
    let ops_s = ops_cfg.display().to_string();
    // The lab's CA and ops' certificate for its address.
    cmd::run(
        &exe,
        &[
            "ops",
            "tls-init",
            "--dir",
            &dir.join(TLS_DIR).display().to_string(),
            "--name",
            &addr::OPS.to_string(),
            "--days",
            "30",
        ],
    )?;
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
    let operator = issue("operator", "lab")?;
    std::fs::write(operator_token_path(&o.name), format!("{operator}\n")).map_err(LabError::Io)?;
    let hag_token = issue("hag", HAG_NAME)?;
    let hag_cfg = dir.join("hag.toml");
    let mut text = std::fs::read_to_string(&hag_cfg).map_err(LabError::Io)?;
    text.push_str(&format!(
        "\n[telemetry]\nops = \"{}:{OPS_PORT}\"\nname = \"{HAG_NAME}\"\ntoken = \"{hag_token}\"\n\
         period_s = {REPORT_PERIOD_S}\ntimeout_ms = 1500\n{}",
        addr::OPS,
        telemetry_tls(&o.name),
    ));
    std::fs::write(&hag_cfg, text).map_err(LabError::Io)?;
    for i in st.street.homes() {
        let sub = lstreet::subscriber(i);
        let cpe_token = issue("cpe", &sub)?;
        // The modems' first readings, before the street emulator runs.
        let pair = lstreet::pair(i);
        let cap = st.dsl;
        let mut m = street::modem::Modem::default();
        let line = street::modem::Line {
            pair,
            cap_kbps: (cap.down_kbit as f64, cap.up_kbit as f64),
            train_s: crate::fault::TRAIN_S,
        };
        m.resync(&line, &street::line::Impairment::default(), 0.0);
        if let Some(r) = m.reading(0.0, 0.0) {
            std::fs::write(crate::modem::dsl_path(&dir, i), modem::ubus::render(&r))
                .map_err(LabError::Io)?;
        }
        let cell = lstreet::cell_id(st.street.access_of(Link::Lte, i));
        std::fs::write(
            crate::modem::lte_path(&dir, i),
            modem::mmcli::render(&crate::modem::radio(false, &cell, 0.0)),
        )
        .map_err(LabError::Io)?;
        let cpe_cfg = dir.join(cpe_config_file(i));
        let mut text = std::fs::read_to_string(&cpe_cfg).map_err(LabError::Io)?;
        text.push_str(&format!(
            "\n[telemetry]\nops = \"{}:{OPS_PORT}\"\nsubscriber = \"{sub}\"\n\
             token = \"{cpe_token}\"\nperiod_s = {REPORT_PERIOD_S}\ntimeout_ms = 1500\n\
             dsl = \"file:{}\"\nmobile = \"file:{}\"\n{}",
            addr::OPS,
            crate::modem::dsl_path(&dir, i).display(),
            crate::modem::lte_path(&dir, i).display(),
            telemetry_tls(&o.name),
        ));
        std::fs::write(&cpe_cfg, text).map_err(LabError::Io)?;
    }
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
        // The street emulator before them: it would start a CPE again.
        let mut pids = st.pids.clone();
        pids.sort_by_key(|(role, _)| match role.as_str() {
            "street" => 0,
            r if r.starts_with("cpe") => 1,
            _ => 2,
        });
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
    let _lock = lock(name)?;
    let mut st = load_state(name)?;
    let node = ns(name, &street_node(l, 1));
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
            // (The modem, in the street emulator, is back in sync at once.)
            restore_cpe_routes(name, &st.street, 1, l);
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
            net::apply(&node, steps)?;
            if up_kbit.is_some() {
                let (up_node, up_dev) = upload_shaper(&st.street, l, 1);
                net::apply(&ns(name, &up_node), vec![shape(&up_dev, s.up_kbit)])?;
            }
            // Home 1 is port 0; the street's other lines keep the profile's
            // shape (the street emulator adds their faults within a second).
            let others = st.line_shape(l, 2);
            let ports = st.street.homes_on(l, 1).len() as u32;
            let mut entries = emu_entries(&s, 1);
            entries.extend(emu_entries(&others, ports).into_iter().skip(2));
            emu::write_control(&control_path(name, &street_node(l, 1)), &entries)
                .map_err(LabError::Emu)?;
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
    if st.street.is_street() {
        let s = st.street;
        out += &format!(
            "  street: {} homes, {} cabinets, {} cells\n",
            s.homes, s.cabinets, s.cells
        );
        for i in s.homes() {
            out += &format!(
                "    {}: cabinet {} port {} card {}, cell {}, loop {} km\n",
                lstreet::subscriber(i),
                lstreet::cabinet_name(s.access_of(Link::Dsl, i)),
                s.port(Link::Dsl, i),
                s.card(i),
                lstreet::cell_id(s.access_of(Link::Lte, i)),
                lstreet::pair(i).length_km,
            );
        }
    }
    for (role, pid) in &st.pids {
        let alive = if pid_alive(*pid) { "running" } else { "EXITED" };
        out += &format!("  {role}: pid {pid} {alive}\n");
    }
    out += &format!(
        "  namespaces: {}\n  origin http://{}:{ORIGIN_PORT}/  hag {}:{HAG_PORT}  ops https://{}:{OPS_PORT}/api/v1/ (CA {}, operator token in {})\n",
        existing_namespaces(name).join(" "),
        addr::ORIGIN,
        addr::HAG_SERVICE,
        addr::OPS,
        ca_path(name).display(),
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
