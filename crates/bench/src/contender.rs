//! The contenders: what a home would otherwise run, and Tandem, each on the
//! same lab links in the same run.
//!
//! | id | what | client runs in | server |
//! |---|---|---|---|
//! | `dsl` | plain TCP over the fixed line | cpe, bound to the DSL address | the origin |
//! | `lte` | plain TCP over the mobile link | cpe, bound to the LTE address | the origin |
//! | `mptcp` | end-to-end kernel MPTCP (`mptcpize run` on both ends) | cpe | a second origin under `mptcpize` |
//! | `shadowsocks` | shadowsocks-libev over MPTCP (`--mptcp`), SOCKS5 | cpe (`ss-local`) | `ss-server` in the hag node, then the origin |
//! | `tandem[-MODE]` | Tandem, one entry per steering mode | home (diverted by the CPE) | the origin through the HAG |
//!
//! Steering modes: each [`TandemMode`] in [`TANDEM_MODES`] is a contender;
//! before a Tandem contender is measured, the lab CPE is switched to its
//! mode (`lab::topology::set_steering`, a SIGHUP) when it runs another one.

use hybrid::{Direction, SteeringMode};
use lab::profile::Profile;
use lab::topology::addr;

/// Port of the second origin server, run under `mptcpize` (contender 3).
pub const MPTCP_ORIGIN_PORT: u16 = 8080;
/// Port of `ss-server` on the HAG node's service address (contender 4).
pub const SS_SERVER_PORT: u16 = 8388;
/// Port of `ss-local`'s SOCKS5 listener on the CPE's loopback.
pub const SOCKS_PORT: u16 = 1080;
/// The shadowsocks cipher (shadowsocks-libev's default AEAD cipher).
pub const SS_METHOD: &str = "chacha20-ietf-poly1305";

/// A Tandem steering mode as a contender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TandemMode {
    /// The CPE's `[steering] mode`.
    pub mode: SteeringMode,
    /// What it does.
    pub description: &'static str,
}

/// Tandem's steering modes (`tandem cpe`'s `[steering] mode`). The CPE's
/// default mode is the contender `tandem`; the others are measured as
/// `tandem-<mode>`.
pub const TANDEM_MODES: &[TandemMode] = &[
    TandemMode {
        mode: SteeringMode::Priority,
        description: "steering mode priority (the default): fixed line first, the mobile link (MPTCP backup priority) only for the overflow once the fixed line is full",
    },
    TandemMode {
        mode: SteeringMode::Aggregate,
        description: "steering mode aggregate: both links always, the kernel's scheduler (lowest-RTT subflow with room first)",
    },
    TandemMode {
        mode: SteeringMode::ActiveStandby,
        description: "steering mode active-standby: the mobile link only while the fixed line is down",
    },
];

impl TandemMode {
    /// Whether it is the CPE's default mode (the contender `tandem`).
    pub fn is_default(&self) -> bool {
        self.mode == SteeringMode::default()
    }
}

/// How a contender carries traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 1: plain TCP over the fixed line.
    FixedOnly,
    /// 2: plain TCP over the mobile link.
    MobileOnly,
    /// 3: end-to-end kernel MPTCP.
    MptcpEndToEnd,
    /// 4: a userspace proxy relay over MPTCP (shadowsocks-libev).
    Shadowsocks,
    /// 5: Tandem in a steering mode.
    Tandem(TandemMode),
}

/// One contender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contender {
    /// Stable id used in the results (`dsl`, `lte`, `mptcp`, `shadowsocks`,
    /// `tandem`, `tandem-<mode>`).
    pub id: String,
    /// Human label.
    pub label: String,
    /// What it is.
    pub kind: Kind,
}

/// How a contender's client reaches the origin.
#[derive(Clone, Debug)]
pub(crate) struct ClientPath {
    /// The lab node the client runs in.
    pub(crate) node: &'static str,
    /// Words before `curl` (e.g. `mptcpize run`).
    pub(crate) prefix: Vec<String>,
    /// Extra curl options (source address, SOCKS proxy).
    pub(crate) curl: Vec<String>,
    /// The origin's port.
    pub(crate) port: u16,
}

impl ClientPath {
    /// The URL of `path` on the origin this contender uses.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", addr::ORIGIN, self.port)
    }
}

impl Contender {
    /// Every contender, in the order of the issue.
    pub fn all() -> Vec<Self> {
        let mut v = vec![
            Self {
                id: "dsl".into(),
                label: "1 fixed line only (TCP)".into(),
                kind: Kind::FixedOnly,
            },
            Self {
                id: "lte".into(),
                label: "2 mobile only (TCP)".into(),
                kind: Kind::MobileOnly,
            },
            Self {
                id: "mptcp".into(),
                label: "3 end-to-end MPTCP (mptcpize)".into(),
                kind: Kind::MptcpEndToEnd,
            },
            Self {
                id: "shadowsocks".into(),
                label: "4 shadowsocks-libev over MPTCP".into(),
                kind: Kind::Shadowsocks,
            },
        ];
        for m in TANDEM_MODES {
            let (id, label) = if m.is_default() {
                ("tandem".to_string(), "5 Tandem".to_string())
            } else {
                (
                    format!("tandem-{}", m.mode),
                    format!("5 Tandem ({})", m.mode),
                )
            };
            v.push(Self {
                id,
                label,
                kind: Kind::Tandem(*m),
            });
        }
        v
    }

    /// A one-line description for the results.
    pub fn description(&self) -> String {
        match &self.kind {
            Kind::FixedOnly => format!("curl in the CPE node bound to {} (DSL), plain TCP to the origin", addr::CPE_DSL),
            Kind::MobileOnly => format!("curl in the CPE node bound to {} (LTE), plain TCP to the origin", addr::CPE_LTE),
            Kind::MptcpEndToEnd => format!(
                "`mptcpize run curl` in the CPE node (first subflow on DSL, second from the CPE's LTE subflow endpoint) to a second origin under `mptcpize run` on port {MPTCP_ORIGIN_PORT}"
            ),
            Kind::Shadowsocks => format!(
                "curl --socks5 to ss-local (CPE node) → MPTCP over both links → ss-server on {}:{SS_SERVER_PORT} (HAG node) → plain TCP to the origin; {SS_METHOD}, --mptcp --no-delay",
                addr::HAG_SERVICE
            ),
            Kind::Tandem(m) => format!(
                "curl in the home node; the CPE diverts it to the HAG over one MPTCP connection (RFC 8803 Convert); steering: {}",
                m.description
            ),
        }
    }

    /// Whether its traffic crosses the fixed line.
    pub fn uses_dsl(&self) -> bool {
        !matches!(self.kind, Kind::MobileOnly)
    }

    /// Whether it can use both links.
    pub fn multipath(&self) -> bool {
        !matches!(self.kind, Kind::FixedOnly | Kind::MobileOnly)
    }

    /// The capacity it may use in a direction, kbit/s (the links it can use,
    /// added up).
    pub fn capacity_kbit(&self, p: &Profile, dir: Direction) -> u64 {
        let pick = |s: &lab::profile::LinkShape| match dir {
            Direction::Downstream => s.down_kbit,
            Direction::Upstream => s.up_kbit,
        };
        match self.kind {
            Kind::FixedOnly => pick(&p.dsl),
            Kind::MobileOnly => pick(&p.lte),
            _ => pick(&p.dsl) + pick(&p.lte),
        }
    }

    /// The capacity it is meant to use while both links are up, kbit/s: what
    /// a bulk transfer is sized on. Tandem in `active-standby` keeps the
    /// mobile link for failures, so it has the fixed line only (a transfer
    /// sized on both links would need six times as long on rural's upload).
    pub fn steady_kbit(&self, p: &Profile, dir: Direction) -> u64 {
        match self.kind {
            Kind::Tandem(m) if m.mode == SteeringMode::ActiveStandby => match dir {
                Direction::Downstream => p.dsl.down_kbit,
                Direction::Upstream => p.dsl.up_kbit,
            },
            _ => self.capacity_kbit(p, dir),
        }
    }

    pub(crate) fn client(&self) -> ClientPath {
        let plain = |src: std::net::Ipv4Addr| ClientPath {
            node: "cpe",
            prefix: vec![],
            curl: vec!["--interface".into(), src.to_string()],
            port: lab::topology::ORIGIN_PORT,
        };
        match &self.kind {
            Kind::FixedOnly => plain(addr::CPE_DSL),
            Kind::MobileOnly => plain(addr::CPE_LTE),
            Kind::MptcpEndToEnd => ClientPath {
                node: "cpe",
                prefix: vec!["mptcpize".into(), "run".into()],
                curl: vec!["--interface".into(), addr::CPE_DSL.to_string()],
                port: MPTCP_ORIGIN_PORT,
            },
            Kind::Shadowsocks => ClientPath {
                node: "cpe",
                prefix: vec![],
                curl: vec!["--socks5".into(), format!("127.0.0.1:{SOCKS_PORT}")],
                port: lab::topology::ORIGIN_PORT,
            },
            Kind::Tandem(_) => ClientPath {
                node: "home",
                prefix: vec![],
                curl: vec![],
                port: lab::topology::ORIGIN_PORT,
            },
        }
    }
}

/// Picks contenders by id (all when `ids` is empty); unknown ids are an
/// error naming the known ones.
pub fn select(ids: &[String]) -> Result<Vec<Contender>, String> {
    let all = Contender::all();
    if ids.is_empty() {
        return Ok(all);
    }
    let mut out = Vec::new();
    for id in ids {
        match all.iter().find(|c| &c.id == id) {
            Some(c) if !out.contains(c) => out.push(c.clone()),
            Some(_) => {}
            None => {
                return Err(format!(
                    "unknown contender {id:?}; known: {}",
                    all.iter()
                        .map(|c| c.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }
    // Keep the issue's order whatever order they were named in.
    out.sort_by_key(|c| all.iter().position(|a| a == c));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contender_of_the_issue_is_there() {
        let ids: Vec<String> = Contender::all().into_iter().map(|c| c.id).collect();
        assert_eq!(
            ids,
            [
                "dsl",
                "lte",
                "mptcp",
                "shadowsocks",
                "tandem",
                "tandem-aggregate",
                "tandem-active-standby"
            ]
        );
    }

    #[test]
    fn capacities_follow_the_links_used() {
        let p = lab::profile::by_name("rural").unwrap();
        let all = Contender::all();
        assert_eq!(all[0].capacity_kbit(&p, Direction::Downstream), 8_000);
        assert_eq!(all[1].capacity_kbit(&p, Direction::Upstream), 10_000);
        assert_eq!(all[4].capacity_kbit(&p, Direction::Downstream), 38_000);
        assert_eq!(all[4].steady_kbit(&p, Direction::Upstream), 11_000);
        let standby = all
            .iter()
            .find(|c| c.id == "tandem-active-standby")
            .unwrap();
        assert_eq!(standby.steady_kbit(&p, Direction::Upstream), 1_000);
        assert_eq!(standby.capacity_kbit(&p, Direction::Upstream), 11_000);
    }

    #[test]
    fn selection_keeps_order_and_refuses_unknown_ids() {
        let s = select(&["tandem".into(), "dsl".into()]).unwrap();
        assert_eq!(s[0].id, "dsl");
        assert!(select(&["wireguard".into()]).unwrap_err().contains("known"));
    }
}
