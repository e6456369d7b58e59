//! CPE configuration: TOML read into a raw struct, then validated into
//! [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys (the message has the line).
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWan {
    interface: String,
    address: IpAddr,
    #[serde(default)]
    down_kbit: u64,
    #[serde(default)]
    up_kbit: u64,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBypass {
    name: String,
    #[serde(default)]
    destinations: Vec<ipnet::IpNet>,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    dscp: Vec<u8>,
    #[serde(default = "default_any")]
    link: String,
}

fn default_any() -> String {
    "any".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSteering {
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default = "yes")]
    probes: bool,
    #[serde(default)]
    probe_target: Option<SocketAddr>,
    #[serde(default = "default_probe_interval")]
    probe_interval_ms: u64,
    #[serde(default = "default_down_after")]
    down_after_ms: u64,
    #[serde(default = "default_up_after")]
    up_after_probes: u32,
    #[serde(default = "default_overflow_on")]
    overflow_on: f64,
    #[serde(default = "default_overflow_off")]
    overflow_off: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    mobile_bytes: u64,
    #[serde(default = "default_reset_day")]
    reset_day: u8,
    state_file: std::path::PathBuf,
}

fn default_reset_day() -> u8 {
    1
}

impl Default for RawSteering {
    fn default() -> Self {
        Self {
            mode: default_mode(),
            probes: true,
            probe_target: None,
            probe_interval_ms: default_probe_interval(),
            down_after_ms: default_down_after(),
            up_after_probes: default_up_after(),
            overflow_on: default_overflow_on(),
            overflow_off: default_overflow_off(),
        }
    }
}

fn default_mode() -> String {
    "priority".into()
}
fn default_probe_interval() -> u64 {
    200
}
fn default_down_after() -> u64 {
    500
}
fn default_up_after() -> u32 {
    2
}
fn default_overflow_on() -> f64 {
    0.9
}
fn default_overflow_off() -> f64 {
    0.7
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    lan_interface: String,
    hag: SocketAddr,
    #[serde(default = "default_port")]
    intercept_port: u16,
    #[serde(default = "default_admin")]
    admin_listen: SocketAddr,
    dsl: RawWan,
    lte: RawWan,
    #[serde(default = "default_cc")]
    congestion_control: String,
    #[serde(default = "default_wait")]
    first_data_wait_ms: u64,
    #[serde(default = "default_reply")]
    hag_reply_timeout_ms: u64,
    #[serde(default = "default_idle")]
    idle_timeout_secs: u64,
    #[serde(default = "default_mark")]
    fwmark: u32,
    #[serde(default = "default_table")]
    route_table: u32,
    #[serde(default = "yes")]
    manage_mptcp_endpoints: bool,
    #[serde(default)]
    cookie: Option<String>,
    #[serde(default = "default_rcvbuf")]
    mptcp_rcvbuf_bytes: usize,
    #[serde(default)]
    steering: RawSteering,
    #[serde(default)]
    budget: Option<RawBudget>,
    #[serde(default = "yes")]
    nat: bool,
    #[serde(default)]
    bypass: Vec<RawBypass>,
}

fn default_rcvbuf() -> usize {
    4 << 20
}

fn default_port() -> u16 {
    15124
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9101))
}
fn default_cc() -> String {
    "cubic".into()
}
fn default_wait() -> u64 {
    10
}
fn default_reply() -> u64 {
    5_000
}
fn default_idle() -> u64 {
    7_440
}
fn default_mark() -> u32 {
    0x7464
}
fn default_table() -> u32 {
    7464
}
fn yes() -> bool {
    true
}

/// One WAN link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wan {
    /// Interface name, e.g. "dsl0".
    pub interface: String,
    /// The CPE's address on it.
    pub address: IpAddr,
    /// The link's rate towards the home (the line's sync rate), kbit/s;
    /// 0 when not configured.
    pub down_kbit: u64,
    /// The link's rate from the home, kbit/s; 0 when not configured.
    pub up_kbit: u64,
    /// Next hop of the link's default route (none: a point-to-point link,
    /// the route goes straight out of the interface).
    pub gateway: Option<IpAddr>,
}

/// Which link a bypassed class must use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// Whichever link is active (the fixed line unless it is down).
    Any,
    /// Always the fixed line (even when it is down: e.g. IPTV, VoIP).
    Dsl,
    /// Always the mobile link.
    Lte,
}

/// A traffic class that does not go through the HAG: its packets are
/// forwarded and NATed like UDP. Every selector given must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bypass {
    /// For logs and the ruleset.
    pub name: String,
    /// Destination prefixes (one address family per rule).
    pub destinations: Vec<ipnet::IpNet>,
    /// Destination ports, TCP or UDP.
    pub ports: Vec<u16>,
    /// DSCP values (0..=63).
    pub dscp: Vec<u8>,
    /// Which link it leaves on.
    pub link: Pin,
}

/// The monthly mobile data budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Bytes (both directions) the mobile link may carry per period.
    pub limit_bytes: u64,
    /// Day of the month (1..=28) a period starts, 00:00 UTC.
    pub reset_day: u8,
    /// Where the count is kept across restarts.
    pub state_path: std::path::PathBuf,
}

/// How the mobile link is used and how the links are watched.
#[derive(Clone, Debug, PartialEq)]
pub struct Steering {
    /// When the mobile link carries traffic.
    pub mode: crate::health::Mode,
    /// Where the path probes go (the HAG's probe echo); `None`: no probes,
    /// both links are taken as up.
    pub probe_target: Option<SocketAddr>,
    /// Probe timing and the up/down rules.
    pub health: crate::health::HealthConfig,
    /// The `priority` mode's thresholds.
    pub overflow: crate::health::Overflow,
}

/// A validated CPE configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// LAN interface whose TCP is intercepted.
    pub lan_interface: String,
    /// The HAG's Convert service.
    pub hag: SocketAddr,
    /// Local port the TPROXY rule diverts to.
    pub intercept_port: u16,
    /// Loopback admin listener (`/metrics`, `/live`, `/ready`).
    pub admin_listen: SocketAddr,
    /// Fixed line: carries the initial subflow.
    pub dsl: Wan,
    /// Mobile link: carries the second subflow.
    pub lte: Wan,
    /// Congestion control of the MPTCP connections.
    pub congestion_control: String,
    /// How long to wait for the device's first bytes so that they ride in the
    /// SYN with the Convert message (a server-speaks-first protocol sends
    /// none; then the SYN leaves with the Convert message alone).
    pub first_data_wait: Duration,
    /// Deadline for the HAG's Convert reply.
    pub hag_reply_timeout: Duration,
    /// Idle timeout of a relayed connection.
    pub idle_timeout: Duration,
    /// Firewall mark of diverted packets.
    pub fwmark: u32,
    /// Routing table delivering marked packets locally.
    pub route_table: u32,
    /// Set the MPTCP limits and the mobile `subflow` endpoint at start.
    pub manage_mptcp_endpoints: bool,
    /// The subscriber credential the HAG issued (`tandem hag subscriber
    /// add`), sent in the RFC 8803 Cookie TLV of every connection.
    pub cookie: Option<Vec<u8>>,
    /// Receive buffer of each MPTCP connection to the HAG (0: kernel
    /// autotuning). See `mptcp_sock::ConnectOptions::rcvbuf`.
    pub mptcp_rcvbuf_bytes: usize,
    /// Steering and path health.
    pub steering: Steering,
    /// The mobile data budget, if any.
    pub budget: Option<Budget>,
    /// Forward and NAT the LAN's other traffic (UDP, bypassed classes)
    /// over the active link, with failover.
    pub nat: bool,
    /// Classes that bypass the HAG.
    pub bypass: Vec<Bypass>,
}

impl Config {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for (what, name) in [
            ("lan_interface", &raw.lan_interface),
            ("dsl.interface", &raw.dsl.interface),
            ("lte.interface", &raw.lte.interface),
        ] {
            if name.is_empty()
                || name.len() > 15
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return invalid(format!("{what} {name:?} is not an interface name"));
            }
        }
        if raw.dsl.address == raw.lte.address {
            return invalid("dsl.address and lte.address must differ".into());
        }
        if raw.intercept_port == 0 || raw.hag.port() == 0 {
            return invalid("ports must not be 0".into());
        }
        if raw.first_data_wait_ms > 1_000 {
            return invalid("first_data_wait_ms above 1000 would delay every connection".into());
        }
        if raw.hag_reply_timeout_ms == 0 || raw.idle_timeout_secs == 0 {
            return invalid("timeouts must be greater than zero".into());
        }
        if raw.fwmark == 0
            || raw.route_table == 0
            || raw.route_table >= 252 && raw.route_table <= 255
        {
            return invalid("fwmark must be non-zero and route_table not 0 or 252..255".into());
        }
        let cookie = match &raw.cookie {
            None => None,
            Some(hex) => {
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>();
                match bytes {
                    Some(b)
                        if hex.len() % 2 == 0
                            && !b.is_empty()
                            && b.len() % 4 == 0
                            && b.len() <= 512 =>
                    {
                        Some(b)
                    }
                    _ => {
                        return invalid(
                            "cookie must be hex, a multiple of 4 bytes, at most 512".into(),
                        )
                    }
                }
            }
        };
        if raw.mptcp_rcvbuf_bytes != 0 && !(65_536..=256 << 20).contains(&raw.mptcp_rcvbuf_bytes) {
            return invalid("mptcp_rcvbuf_bytes must be 0 or between 65536 and 268435456".into());
        }
        let st = &raw.steering;
        let Some(mode) = crate::health::Mode::parse(&st.mode) else {
            return invalid(format!(
                "steering.mode {:?}: expected priority, aggregate or active-standby",
                st.mode
            ));
        };
        if mode == crate::health::Mode::Priority && (raw.dsl.down_kbit == 0 || raw.dsl.up_kbit == 0)
        {
            return invalid(
                "steering.mode = \"priority\" needs the fixed line's rates (dsl.down_kbit, dsl.up_kbit: its sync rate) to know when it is full".into(),
            );
        }
        if !(50..=5_000).contains(&st.probe_interval_ms)
            || st.down_after_ms < 2 * st.probe_interval_ms
            || st.down_after_ms > 60_000
            || st.up_after_probes == 0
        {
            return invalid("steering: probe_interval_ms must be 50..=5000, down_after_ms at least two intervals (and at most 60000), up_after_probes at least 1".into());
        }
        if !(0.1..=1.0).contains(&st.overflow_on)
            || !(0.05..=1.0).contains(&st.overflow_off)
            || st.overflow_off >= st.overflow_on
        {
            return invalid(
                "steering: overflow_on must be 0.1..=1.0 and overflow_off below it".into(),
            );
        }
        let budget = match &raw.budget {
            None => None,
            Some(b) => {
                if b.mobile_bytes == 0 || !(1..=28).contains(&b.reset_day) {
                    return invalid("budget: mobile_bytes must be > 0 and reset_day 1..=28".into());
                }
                if b.state_file.file_name().is_none() {
                    return invalid("budget.state_file must name a file".into());
                }
                Some(Budget {
                    limit_bytes: b.mobile_bytes,
                    reset_day: b.reset_day,
                    state_path: b.state_file.clone(),
                })
            }
        };
        let mut bypass = Vec::new();
        for b in &raw.bypass {
            let link = match b.link.as_str() {
                "any" => Pin::Any,
                "dsl" => Pin::Dsl,
                "lte" => Pin::Lte,
                other => {
                    return invalid(format!(
                        "bypass {:?}: link {other:?}: expected any, dsl or lte",
                        b.name
                    ))
                }
            };
            if b.name.is_empty()
                || b.name.len() > 32
                || !b
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return invalid(format!(
                    "bypass name {:?}: 1 to 32 letters, digits, - or _",
                    b.name
                ));
            }
            if b.destinations.is_empty() && b.ports.is_empty() && b.dscp.is_empty() {
                return invalid(format!(
                    "bypass {:?}: give destinations, ports or dscp",
                    b.name
                ));
            }
            let v4 = b.destinations.iter().filter(|n| n.addr().is_ipv4()).count();
            if v4 != 0 && v4 != b.destinations.len() {
                return invalid(format!(
                    "bypass {:?}: destinations mix IPv4 and IPv6; use one rule per family",
                    b.name
                ));
            }
            if b.ports.contains(&0) || b.dscp.iter().any(|d| *d > 63) {
                return invalid(format!(
                    "bypass {:?}: ports must be non-zero, dscp 0..=63",
                    b.name
                ));
            }
            if !raw.nat {
                return invalid(
                    "bypass rules need nat = true (bypassed traffic is forwarded and NATed)".into(),
                );
            }
            bypass.push(Bypass {
                name: b.name.clone(),
                destinations: b.destinations.clone(),
                ports: b.ports.clone(),
                dscp: b.dscp.clone(),
                link,
            });
        }
        let steering = Steering {
            mode,
            probe_target: st.probes.then(|| st.probe_target.unwrap_or(raw.hag)),
            health: crate::health::HealthConfig {
                interval: Duration::from_millis(st.probe_interval_ms),
                down_after: Duration::from_millis(st.down_after_ms),
                up_after: st.up_after_probes,
            },
            overflow: crate::health::Overflow {
                on: st.overflow_on,
                off: st.overflow_off,
                // Samples of `paths::LOAD_SAMPLE` (50 ms): full for 100 ms
                // brings the mobile link in, a second under `off` lets it go.
                on_samples: 2,
                off_samples: 20,
            },
        };
        Ok(Self {
            steering,
            budget,
            nat: raw.nat,
            bypass,
            cookie,
            mptcp_rcvbuf_bytes: raw.mptcp_rcvbuf_bytes,
            lan_interface: raw.lan_interface,
            hag: raw.hag,
            intercept_port: raw.intercept_port,
            admin_listen: raw.admin_listen,
            dsl: Wan {
                interface: raw.dsl.interface,
                address: raw.dsl.address,
                down_kbit: raw.dsl.down_kbit,
                up_kbit: raw.dsl.up_kbit,
                gateway: raw.dsl.gateway,
            },
            lte: Wan {
                interface: raw.lte.interface,
                address: raw.lte.address,
                down_kbit: raw.lte.down_kbit,
                up_kbit: raw.lte.up_kbit,
                gateway: raw.lte.gateway,
            },
            congestion_control: raw.congestion_control,
            first_data_wait: Duration::from_millis(raw.first_data_wait_ms),
            hag_reply_timeout: Duration::from_millis(raw.hag_reply_timeout_ms),
            idle_timeout: Duration::from_secs(raw.idle_timeout_secs),
            fwmark: raw.fwmark,
            route_table: raw.route_table,
            manage_mptcp_endpoints: raw.manage_mptcp_endpoints,
        })
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Which link a local address belongs to.
    pub fn link_of(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = ip.to_canonical();
        if ip == self.dsl.address {
            Some("dsl")
        } else if ip == self.lte.address {
            Some("lte")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
lan_interface = "lan0"
hag = "10.66.0.1:5124"
[dsl]
interface = "dsl0"
address = "10.64.1.2"
down_kbit = 8000
up_kbit = 1000
[lte]
interface = "lte0"
address = "10.64.2.2"
"#;

    #[test]
    fn good_config() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.link_of("10.64.2.2".parse().unwrap()), Some("lte"));
        assert_eq!(c.first_data_wait, Duration::from_millis(10));
    }

    #[test]
    fn hostile_interface_name_refused() {
        let bad = GOOD.replace("\"lan0\"", "\"lan0; flush ruleset\"");
        assert!(matches!(
            Config::from_toml(&bad),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn steering_defaults_and_checks() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.steering.mode, crate::health::Mode::Priority);
        assert_eq!(c.steering.probe_target, Some(c.hag));
        // Priority needs the fixed line's rates.
        let no_rates = GOOD.replace("down_kbit = 8000\n", "");
        let e = Config::from_toml(&no_rates).unwrap_err().to_string();
        assert!(e.contains("dsl.down_kbit"), "{e}");
        let agg = format!("{no_rates}[steering]\nmode = \"aggregate\"\nprobes = false\n");
        let c = Config::from_toml(&agg).unwrap();
        assert_eq!(c.steering.mode, crate::health::Mode::Aggregate);
        assert_eq!(c.steering.probe_target, None);
        for bad in [
            "mode = \"bonding\"",
            "down_after_ms = 100",
            "overflow_off = 0.95",
            "up_after_probes = 0",
        ] {
            let t = format!("{GOOD}[steering]\n{bad}\n");
            assert!(
                matches!(Config::from_toml(&t), Err(ConfigError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_key_refused_with_line() {
        let bad = format!("{GOOD}\nbogus = 1\n");
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
