//! CPE configuration: TOML read into a raw struct, then validated into
//! [`Config`] ([`config_file`]: every semantic error names its key and its
//! line, e.g. `line 12, steering.mode: unknown steering mode "prority"`).
//!
//! Validation goes by section: interface names, the connection to the HAG
//! (addresses, ports, timeouts, marks, buffers), the cookie, steering, the
//! budget, the bypass rules.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use config_file::Text;
use hybrid::{Link, SteeringMode};
use serde::Deserialize;

pub use config_file::ConfigError;

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
    SteeringMode::default().name().into()
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
struct RawTelemetry {
    ops: SocketAddr,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    ca: Option<std::path::PathBuf>,
    subscriber: String,
    token: String,
    #[serde(default = "default_report_period")]
    period_s: u64,
    #[serde(default = "default_report_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_queue_reports")]
    queue_reports: usize,
    #[serde(default = "default_queue_bytes")]
    queue_bytes: usize,
    #[serde(default = "default_dsl_source")]
    dsl: String,
    #[serde(default = "default_mobile_source")]
    mobile: String,
}

fn default_report_period() -> u64 {
    ops_client::DEFAULT_PERIOD_S
}
fn default_report_timeout() -> u64 {
    ops_client::DEFAULT_TIMEOUT_MS
}
fn default_queue_reports() -> usize {
    360
}
fn default_queue_bytes() -> usize {
    1 << 20
}
fn default_dsl_source() -> String {
    "ubus".into()
}
fn default_mobile_source() -> String {
    "mmcli".into()
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
    #[serde(default)]
    telemetry: Option<RawTelemetry>,
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
    pub mode: SteeringMode,
    /// Where the path probes go (the HAG's probe echo); `None`: no probes,
    /// both links are taken as up.
    pub probe_target: Option<SocketAddr>,
    /// Probe timing and the up/down rules.
    pub health: crate::health::HealthConfig,
    /// The `priority` mode's thresholds.
    pub overflow: crate::health::Overflow,
}

/// Reports to ops (`[telemetry]`): what the CPE measures, every period and
/// at once on an event, over whichever link is up.
#[derive(Clone, PartialEq, Eq)]
pub struct Telemetry {
    /// Ops' API.
    pub ops: SocketAddr,
    /// The `Host` header (default: the address).
    pub host: String,
    /// TLS to ops (`tls = true`, `ca`), when configured.
    pub tls: Option<ops_client::Tls>,
    /// The subscriber this CPE serves, as ops' inventory names it.
    pub subscriber: String,
    /// The CPE's token (`tandem ops token issue --kind cpe`): reports are
    /// signed with the key derived from it; it is never sent.
    pub token: String,
    /// How often a report goes out when nothing happens.
    pub period: Duration,
    /// How long one delivery may take (connect, send, answer).
    pub timeout: Duration,
    /// Reports kept while ops cannot be reached, at most (the oldest go
    /// first).
    pub queue_reports: usize,
    /// The same bound in bytes.
    pub queue_bytes: usize,
    /// Where the DSL modem's figures come from.
    pub dsl: modem::Source,
    /// Where the mobile modem's figures come from.
    pub mobile: modem::Source,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("ops", &self.ops)
            .field("subscriber", &self.subscriber)
            .field("token", &"<secret>")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
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
    /// Reports to ops, if configured.
    pub telemetry: Option<Telemetry>,
}

impl Config {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let t = Text::new(text);
        let raw: Raw = t.parse()?;
        check_interfaces(&t, &raw)?;
        check_connection(&t, &raw)?;
        let cookie = cookie(&t, raw.cookie.as_deref())?;
        let steering = steering(&t, &raw)?;
        let budget = budget(&t, raw.budget.as_ref())?;
        let bypass = bypass(&t, &raw)?;
        let telemetry = telemetry(&t, raw.telemetry.as_ref())?;
        Ok(Self {
            telemetry,
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
            dsl: raw.dsl.into(),
            lte: raw.lte.into(),
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
        Self::from_toml(&config_file::read(path)?)
    }

    /// One link's WAN settings.
    pub fn wan(&self, link: Link) -> &Wan {
        match link {
            Link::Dsl => &self.dsl,
            Link::Lte => &self.lte,
        }
    }

    /// Which link a local address belongs to.
    pub fn link_of(&self, ip: IpAddr) -> Option<Link> {
        let ip = ip.to_canonical();
        Link::ALL.into_iter().find(|l| self.wan(*l).address == ip)
    }
}

impl From<RawWan> for Wan {
    fn from(w: RawWan) -> Self {
        Self {
            interface: w.interface,
            address: w.address,
            down_kbit: w.down_kbit,
            up_kbit: w.up_kbit,
            gateway: w.gateway,
        }
    }
}

/// Interface names go into nftables rules and netlink: a short, plain name.
fn check_interfaces(t: &Text<'_>, raw: &Raw) -> Result<(), ConfigError> {
    for (key, name) in [
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
            return Err(t.invalid(key, format!("{name:?} is not an interface name")));
        }
    }
    Ok(())
}

/// Addresses, ports, timeouts, marks and buffers of the connections to the
/// HAG.
fn check_connection(t: &Text<'_>, raw: &Raw) -> Result<(), ConfigError> {
    if raw.dsl.address == raw.lte.address {
        return Err(t.invalid("lte.address", "dsl.address and lte.address must differ"));
    }
    if raw.intercept_port == 0 {
        return Err(t.invalid("intercept_port", "ports must not be 0"));
    }
    if raw.hag.port() == 0 {
        return Err(t.invalid("hag", "ports must not be 0"));
    }
    if raw.first_data_wait_ms > 1_000 {
        return Err(t.invalid(
            "first_data_wait_ms",
            "above 1000 would delay every connection",
        ));
    }
    for (key, value) in [
        ("hag_reply_timeout_ms", raw.hag_reply_timeout_ms),
        ("idle_timeout_secs", raw.idle_timeout_secs),
    ] {
        if value == 0 {
            return Err(t.invalid(key, "timeouts must be greater than zero"));
        }
    }
    if raw.fwmark == 0 {
        return Err(t.invalid("fwmark", "must be non-zero"));
    }
    if raw.route_table == 0 || (252..=255).contains(&raw.route_table) {
        return Err(t.invalid("route_table", "must not be 0 or 252..255 (reserved tables)"));
    }
    if raw.mptcp_rcvbuf_bytes != 0 && !(65_536..=256 << 20).contains(&raw.mptcp_rcvbuf_bytes) {
        return Err(t.invalid(
            "mptcp_rcvbuf_bytes",
            "must be 0 or between 65536 and 268435456",
        ));
    }
    Ok(())
}

/// The subscriber credential: hex, whole 32-bit words (the Cookie TLV's
/// length is in words), at most 512 bytes.
fn cookie(t: &Text<'_>, text: Option<&str>) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(text) = text else {
        return Ok(None);
    };
    match hex::decode(text) {
        Ok(b) if !b.is_empty() && b.len() % 4 == 0 && b.len() <= 512 => Ok(Some(b)),
        _ => Err(t.invalid("cookie", "must be hex, a multiple of 4 bytes, at most 512")),
    }
}

fn steering(t: &Text<'_>, raw: &Raw) -> Result<Steering, ConfigError> {
    let st = &raw.steering;
    let mode: SteeringMode = st
        .mode
        .parse()
        .map_err(|e: hybrid::UnknownName| t.invalid("steering.mode", e.to_string()))?;
    if mode == SteeringMode::Priority && (raw.dsl.down_kbit == 0 || raw.dsl.up_kbit == 0) {
        return Err(t.invalid(
            "steering.mode",
            "\"priority\" (the default) needs the fixed line's rates (dsl.down_kbit, dsl.up_kbit: its sync rate) to know when it is full",
        ));
    }
    if !(50..=5_000).contains(&st.probe_interval_ms) {
        return Err(t.invalid("steering.probe_interval_ms", "must be 50..=5000"));
    }
    if st.down_after_ms < 2 * st.probe_interval_ms || st.down_after_ms > 60_000 {
        return Err(t.invalid(
            "steering.down_after_ms",
            "must be at least two probe intervals, and at most 60000",
        ));
    }
    if st.up_after_probes == 0 {
        return Err(t.invalid("steering.up_after_probes", "must be at least 1"));
    }
    if !(0.1..=1.0).contains(&st.overflow_on) {
        return Err(t.invalid("steering.overflow_on", "must be 0.1..=1.0"));
    }
    if !(0.05..=1.0).contains(&st.overflow_off) || st.overflow_off >= st.overflow_on {
        return Err(t.invalid(
            "steering.overflow_off",
            "must be 0.05..=1.0 and below overflow_on",
        ));
    }
    Ok(Steering {
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
    })
}

fn telemetry(t: &Text<'_>, raw: Option<&RawTelemetry>) -> Result<Option<Telemetry>, ConfigError> {
    let Some(r) = raw else {
        return Ok(None);
    };
    telemetry::check_name("subscriber", &r.subscriber)
        .map_err(|e| t.invalid("telemetry.subscriber", e.to_string()))?;
    let endpoint = ops_client::check_endpoint(&ops_client::EndpointSpec {
        ops: r.ops,
        host: r.host.as_deref(),
        tls: r.tls,
        ca: r.ca.as_deref(),
        token: &r.token,
        period_s: r.period_s,
        timeout_ms: r.timeout_ms,
        kind: "cpe",
    })
    .map_err(|(key, why)| t.invalid(&format!("telemetry.{key}"), why))?;
    if !(1..=100_000).contains(&r.queue_reports) {
        return Err(t.invalid("telemetry.queue_reports", "must be 1..=100000"));
    }
    if !(telemetry::MAX_REPORT_BYTES..=256 << 20).contains(&r.queue_bytes) {
        return Err(t.invalid(
            "telemetry.queue_bytes",
            format!(
                "must be {}..=268435456 (at least one report)",
                telemetry::MAX_REPORT_BYTES
            ),
        ));
    }
    let source = |key: &str, v: &str| {
        modem::Source::parse(v).ok_or_else(|| {
            t.invalid(
                key,
                format!("{v:?} is not a source: none, ubus, mmcli or file:PATH"),
            )
        })
    };
    Ok(Some(Telemetry {
        ops: r.ops,
        host: endpoint.host,
        tls: endpoint.tls,
        subscriber: r.subscriber.clone(),
        token: r.token.clone(),
        period: endpoint.period,
        timeout: endpoint.timeout,
        queue_reports: r.queue_reports,
        queue_bytes: r.queue_bytes,
        dsl: source("telemetry.dsl", &r.dsl)?,
        mobile: source("telemetry.mobile", &r.mobile)?,
    }))
}

fn budget(t: &Text<'_>, raw: Option<&RawBudget>) -> Result<Option<Budget>, ConfigError> {
    let Some(b) = raw else {
        return Ok(None);
    };
    if b.mobile_bytes == 0 {
        return Err(t.invalid("budget.mobile_bytes", "must be > 0"));
    }
    if !(1..=28).contains(&b.reset_day) {
        return Err(t.invalid("budget.reset_day", "must be 1..=28"));
    }
    if b.state_file.file_name().is_none() {
        return Err(t.invalid("budget.state_file", "must name a file"));
    }
    Ok(Some(Budget {
        limit_bytes: b.mobile_bytes,
        reset_day: b.reset_day,
        state_path: b.state_file.clone(),
    }))
}

fn bypass(t: &Text<'_>, raw: &Raw) -> Result<Vec<Bypass>, ConfigError> {
    let mut out = Vec::new();
    for (i, b) in raw.bypass.iter().enumerate() {
        let key = |k: &str| format!("bypass[{i}].{k}");
        let link = match b.link.as_str() {
            "any" => Pin::Any,
            other => match other.parse::<Link>() {
                Ok(Link::Dsl) => Pin::Dsl,
                Ok(Link::Lte) => Pin::Lte,
                Err(_) => {
                    return Err(t.invalid(
                        &key("link"),
                        format!("bypass {:?}: {other:?}: expected any, dsl or lte", b.name),
                    ))
                }
            },
        };
        if b.name.is_empty()
            || b.name.len() > 32
            || !b
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err(t.invalid(
                &key("name"),
                format!("{:?}: 1 to 32 letters, digits, - or _", b.name),
            ));
        }
        if b.destinations.is_empty() && b.ports.is_empty() && b.dscp.is_empty() {
            return Err(t.invalid(
                &key("name"),
                format!("bypass {:?}: give destinations, ports or dscp", b.name),
            ));
        }
        let v4 = b.destinations.iter().filter(|n| n.addr().is_ipv4()).count();
        if v4 != 0 && v4 != b.destinations.len() {
            return Err(t.invalid(
                &key("destinations"),
                format!(
                    "bypass {:?}: destinations mix IPv4 and IPv6; use one rule per family",
                    b.name
                ),
            ));
        }
        if b.ports.contains(&0) {
            return Err(t.invalid(
                &key("ports"),
                format!("bypass {:?}: ports must be non-zero", b.name),
            ));
        }
        if b.dscp.iter().any(|d| *d > 63) {
            return Err(t.invalid(
                &key("dscp"),
                format!("bypass {:?}: dscp must be 0..=63", b.name),
            ));
        }
        if !raw.nat {
            return Err(t.invalid(
                "nat",
                "bypass rules need nat = true (bypassed traffic is forwarded and NATed)",
            ));
        }
        out.push(Bypass {
            name: b.name.clone(),
            destinations: b.destinations.clone(),
            ports: b.ports.clone(),
            dscp: b.dscp.clone(),
            link,
        });
    }
    Ok(out)
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
        assert_eq!(c.link_of("10.64.2.2".parse().unwrap()), Some(Link::Lte));
        assert_eq!(
            c.link_of("::ffff:10.64.1.2".parse().unwrap()),
            Some(Link::Dsl)
        );
        assert_eq!(c.link_of("10.64.3.2".parse().unwrap()), None);
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
        assert_eq!(c.steering.mode, SteeringMode::Priority);
        assert_eq!(c.steering.probe_target, Some(c.hag));
        // Priority needs the fixed line's rates.
        let no_rates = GOOD.replace("down_kbit = 8000\n", "");
        let e = Config::from_toml(&no_rates).unwrap_err().to_string();
        assert!(e.contains("dsl.down_kbit"), "{e}");
        let agg = format!("{no_rates}[steering]\nmode = \"aggregate\"\nprobes = false\n");
        let c = Config::from_toml(&agg).unwrap();
        assert_eq!(c.steering.mode, SteeringMode::Aggregate);
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

    /// The line and key an error names.
    fn where_(text: &str) -> (String, Option<usize>) {
        let e = Config::from_toml(text).unwrap_err();
        let i = e.invalid().unwrap_or_else(|| panic!("not Invalid: {e}"));
        (i.key.clone(), i.line)
    }

    #[test]
    fn semantic_errors_name_their_key_and_line() {
        // GOOD has 11 lines (the first is empty): what follows is on 12.
        assert_eq!(GOOD.lines().count(), 11);
        let t = format!("{GOOD}[steering]\nprobes = true\nmode = \"prority\"\n");
        assert_eq!(where_(&t), ("steering.mode".into(), Some(14)));
        let e = Config::from_toml(&t).unwrap_err().to_string();
        assert!(
            e.contains("line 14, steering.mode: unknown steering mode \"prority\""),
            "{e}"
        );
        let t = format!("{GOOD}[steering]\noverflow_on = 2.0\n");
        assert_eq!(where_(&t), ("steering.overflow_on".into(), Some(13)));
        let t = GOOD.replace("hag = ", "fwmark = 0\nhag = ");
        assert_eq!(where_(&t), ("fwmark".into(), Some(3)));
        let t = GOOD.replace("hag = ", "cookie = \"abc\"\nhag = ");
        assert_eq!(where_(&t), ("cookie".into(), Some(3)));
        let t = format!(
            "{GOOD}[[bypass]]\nname = \"tv\"\nports = [1]\n[[bypass]]\nname = \"voip\"\nlink = \"dls\"\nports = [5060]\n"
        );
        assert_eq!(where_(&t), ("bypass[1].link".into(), Some(17)));
        // A key left to its default has no line, but still its name.
        let t = GOOD.replace("down_kbit = 8000\n", "");
        assert_eq!(where_(&t), ("steering.mode".into(), None));
    }

    #[test]
    fn cookies_are_hex_words() {
        let with = |c: &str| {
            Config::from_toml(&GOOD.replace("hag = ", &format!("cookie = \"{c}\"\nhag = ")))
        };
        assert_eq!(
            with("0011AAff").unwrap().cookie,
            Some(vec![0, 0x11, 0xaa, 0xff])
        );
        for bad in ["", "001122", "00112233x", "zz112233", &"00".repeat(516)] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }
}
