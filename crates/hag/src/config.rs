//! HAG configuration: TOML read into a raw struct, then validated into
//! [`Config`] with typed durations, addresses and links; every semantic
//! error names its key and line ([`config_file`]).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use config_file::Text;
use hybrid::{Link, PerLink};
use ipnet::IpNet;
use serde::Deserialize;

/// The default port of the HAG's Convert service.
pub const DEFAULT_PORT: u16 = 5124;

pub use config_file::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: u8,
    secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    require_cookie: bool,
    current_key: u8,
    keys: Vec<RawKey>,
    cookie_validity_days: u32,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            require_cookie: false,
            current_key: 0,
            keys: Vec::new(),
            cookie_validity_days: 365,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: SocketAddr,
    #[serde(default)]
    service_addresses: Vec<IpAddr>,
    #[serde(default = "yes")]
    probe: bool,
    #[serde(default)]
    probe_listen: Option<SocketAddr>,
    #[serde(default)]
    registry: Option<std::path::PathBuf>,
    #[serde(default)]
    usage_db: Option<std::path::PathBuf>,
    #[serde(default)]
    allow_destinations: Vec<IpNet>,
    #[serde(default = "default_deny")]
    deny_private_destinations: bool,
    #[serde(default)]
    links: std::collections::BTreeMap<String, Vec<IpNet>>,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default = "default_admin")]
    admin_listen: SocketAddr,
    subscriber_prefixes: Vec<IpNet>,
    #[serde(default)]
    local_addresses: Vec<IpAddr>,
    #[serde(default)]
    deny_destinations: Vec<IpNet>,
    #[serde(default = "default_cc")]
    congestion_control: String,
    #[serde(default = "yes")]
    mptcp: bool,
    #[serde(default = "yes")]
    enable_fastopen_sysctl: bool,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    telemetry: Option<RawTelemetry>,
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
    name: String,
    token: String,
    #[serde(default = "default_hag_period")]
    period_s: u64,
    #[serde(default = "default_hag_timeout")]
    timeout_ms: u64,
}

fn default_hag_period() -> u64 {
    ops_client::DEFAULT_PERIOD_S
}
fn default_hag_timeout() -> u64 {
    ops_client::DEFAULT_TIMEOUT_MS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    header_ms: u64,
    connect_ms: u64,
    idle_secs: u64,
    drain_secs: u64,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            header_ms: 5_000,
            connect_ms: 10_000,
            idle_secs: 7_440,
            drain_secs: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_connections: usize,
    buffer_bytes: usize,
    fastopen_queue: u32,
    backlog: i32,
    backoff_secs: u8,
    per_subscriber_connections: u32,
    per_subscriber_rate: f64,
    per_subscriber_pending: u32,
    per_source_pending: u32,
    error_replies_per_sec: f64,
    mptcp_rcvbuf_bytes: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            buffer_bytes: 16 * 1024,
            fastopen_queue: 1_024,
            backlog: 4_096,
            backoff_secs: 5,
            per_subscriber_connections: 1_024,
            per_subscriber_rate: 100.0,
            per_subscriber_pending: 128,
            per_source_pending: 512,
            error_replies_per_sec: 2_000.0,
            mptcp_rcvbuf_bytes: 2 << 20,
        }
    }
}

fn default_deny() -> bool {
    true
}

/// Ranges refused as destinations unless `allow_destinations` lists them:
/// private, shared (CGNAT), link-local, loopback, "this network", multicast,
/// reserved, and their IPv6 counterparts. The operator's own ranges go in
/// `deny_destinations`.
pub const PRIVATE_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::1/128",
    "::/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9102))
}
fn default_cc() -> String {
    "cubic".into()
}
fn yes() -> bool {
    true
}

/// A validated HAG configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address the Convert service listens on (MPTCP and TCP).
    pub listen: SocketAddr,
    /// Loopback admin listener: `/metrics`, `/live`, `/ready`.
    pub admin_listen: SocketAddr,
    /// Source prefixes allowed to use the converter (the access networks).
    pub subscriber_prefixes: Vec<IpNet>,
    /// The HAG's own addresses, refused as destinations (interface addresses
    /// are added automatically at start).
    pub local_addresses: Vec<IpAddr>,
    /// Destination prefixes refused (with `deny_private_destinations`, the
    /// private and special ranges too).
    pub deny_destinations: Vec<IpNet>,
    /// Congestion control for both sides, e.g. "cubic".
    pub congestion_control: String,
    /// Listen with Multipath TCP.
    pub mptcp: bool,
    /// Turn on server-side Fast Open in this namespace's
    /// `net.ipv4.tcp_fastopen` at start.
    pub enable_fastopen_sysctl: bool,
    /// Deadline for a whole Convert message after accept.
    pub header_timeout: Duration,
    /// Deadline for connecting to the destination.
    pub connect_timeout: Duration,
    /// Idle timeout of a relayed connection.
    pub idle_timeout: Duration,
    /// How long SIGTERM waits for running connections.
    pub drain_timeout: Duration,
    /// Connections at once, beyond which Resource Exceeded is answered.
    pub max_connections: usize,
    /// Relay buffer per direction.
    pub buffer_bytes: usize,
    /// Server-side Fast Open queue length.
    pub fastopen_queue: u32,
    /// Listen backlog.
    pub backlog: i32,
    /// Back-off sent with Resource Exceeded.
    pub backoff_secs: u8,
    /// Local addresses clients may reach the service on; a connection that
    /// arrived on another (an internet-facing address) is refused.
    pub service_addresses: Vec<IpAddr>,
    /// The subscriber registry (SQLite); required with cookies.
    pub registry: Option<std::path::PathBuf>,
    /// Where per-subscriber, per-link usage is kept across restarts (the
    /// billing count); defaults to beside the registry.
    pub usage_db: Option<std::path::PathBuf>,
    /// UDP address of the path-probe echo service the CPEs measure their
    /// links with (`None`: off). Defaults to the `listen` address and port.
    pub probe_listen: Option<SocketAddr>,
    /// Destinations allowed even though a deny rule covers them.
    pub allow_destinations: Vec<IpNet>,
    /// The prefixes of the CPE addresses on each access link (per-link
    /// byte counters), e.g. `dsl = ["10.64.1.0/24"]`; empty: not counted.
    pub links: PerLink<Vec<IpNet>>,
    /// Require a valid Cookie TLV.
    pub require_cookie: bool,
    /// The keys that verify cookies; `current` signs new ones.
    pub keys: crate::cookie::KeyRing,
    /// Validity of newly issued cookies.
    pub cookie_validity: Duration,
    /// Per-subscriber and per-source limits.
    pub limits: crate::limits::LimitConfig,
    /// Receive buffer of each accepted MPTCP connection (0: autotuning);
    /// see `mptcp_sock::ConnectOptions::rcvbuf`.
    pub mptcp_rcvbuf_bytes: usize,
    /// Reports to ops (`[telemetry]`), if configured.
    pub telemetry: Option<Telemetry>,
}

/// The HAG's reports to ops (`[telemetry]`): its upstream's health and its
/// view of each subscriber, every period.
#[derive(Clone, PartialEq, Eq)]
pub struct Telemetry {
    /// Ops' API.
    pub ops: SocketAddr,
    /// The `Host` header (default: the address).
    pub host: String,
    /// TLS to ops (`tls = true`, `ca`), when configured.
    pub tls: Option<ops_client::Tls>,
    /// This HAG's name, as its token was issued for
    /// (`tandem ops token issue --kind hag NAME`).
    pub name: String,
    /// The token: reports are signed with the key derived from it; it is
    /// never sent.
    pub token: String,
    /// How often a report goes out.
    pub period: Duration,
    /// How long one delivery may take (connect, send, answer).
    pub timeout: Duration,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Telemetry")
            .field("ops", &self.ops)
            .field("host", &self.host)
            .field("name", &self.name)
            .field("period", &self.period)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let text = Text::new(text);
        let raw: Raw = text.parse()?;
        check_general(&text, &raw)?;
        check_limits(&text, &raw.limits)?;
        let keys = key_ring(&text, &raw)?;
        let links = links(&text, &raw.links)?;
        let service_addresses = service_addresses(&text, &raw)?;
        let telemetry = telemetry(&text, raw.telemetry.as_ref())?;
        let t = &raw.timeouts;
        let l = &raw.limits;
        let mut deny = raw.deny_destinations.clone();
        if raw.deny_private_destinations {
            deny.extend(
                PRIVATE_RANGES
                    .iter()
                    .filter_map(|r| r.parse::<IpNet>().ok()),
            );
        }
        Ok(Self {
            listen: raw.listen,
            probe_listen: raw.probe.then(|| raw.probe_listen.unwrap_or(raw.listen)),
            admin_listen: raw.admin_listen,
            subscriber_prefixes: raw.subscriber_prefixes,
            local_addresses: raw.local_addresses,
            deny_destinations: deny,
            service_addresses,
            usage_db: raw
                .usage_db
                .clone()
                .or_else(|| raw.registry.as_deref().map(registry::usage::default_path)),
            registry: raw.registry,
            allow_destinations: raw.allow_destinations,
            links,
            require_cookie: raw.auth.require_cookie,
            keys,
            cookie_validity: Duration::from_secs(u64::from(raw.auth.cookie_validity_days) * 86_400),
            mptcp_rcvbuf_bytes: l.mptcp_rcvbuf_bytes,
            telemetry,
            limits: crate::limits::LimitConfig {
                per_subscriber_connections: l.per_subscriber_connections,
                per_subscriber_rate: l.per_subscriber_rate,
                per_subscriber_pending: l.per_subscriber_pending,
                per_source_pending: l.per_source_pending,
                error_replies_per_sec: l.error_replies_per_sec,
            },
            congestion_control: raw.congestion_control,
            mptcp: raw.mptcp,
            enable_fastopen_sysctl: raw.enable_fastopen_sysctl,
            header_timeout: Duration::from_millis(t.header_ms),
            connect_timeout: Duration::from_millis(t.connect_ms),
            idle_timeout: Duration::from_secs(t.idle_secs),
            drain_timeout: Duration::from_secs(t.drain_secs),
            max_connections: l.max_connections,
            buffer_bytes: l.buffer_bytes,
            fastopen_queue: l.fastopen_queue,
            backlog: l.backlog,
            backoff_secs: l.backoff_secs,
        })
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&config_file::read(path)?)
    }

    /// The access link whose CPE prefixes hold `ip`, if any.
    pub fn link_of(&self, ip: IpAddr) -> Option<Link> {
        self.links
            .iter()
            .find(|(_, nets)| nets.iter().any(|n| n.contains(&ip)))
            .map(|(link, _)| link)
    }

    /// Whether any link prefix is configured (per-link counting is on).
    pub fn counts_links(&self) -> bool {
        self.links.iter().any(|(_, nets)| !nets.is_empty())
    }
}

/// The access networks, the timeouts and the congestion control.
fn check_general(text: &Text<'_>, raw: &Raw) -> Result<(), ConfigError> {
    if raw.subscriber_prefixes.is_empty() {
        return Err(text.invalid(
            "subscriber_prefixes",
            "subscriber_prefixes is empty: nobody could use the HAG",
        ));
    }
    let t = &raw.timeouts;
    for (key, v) in [
        ("timeouts.header_ms", t.header_ms),
        ("timeouts.connect_ms", t.connect_ms),
        ("timeouts.idle_secs", t.idle_secs),
    ] {
        if v == 0 {
            return Err(text.invalid(key, "timeouts must be greater than zero"));
        }
    }
    if raw.congestion_control.is_empty() {
        return Err(text.invalid("congestion_control", "congestion_control is empty"));
    }
    Ok(())
}

/// `[limits]`.
fn check_limits(text: &Text<'_>, l: &RawLimits) -> Result<(), ConfigError> {
    if l.max_connections == 0 {
        return Err(text.invalid(
            "limits.max_connections",
            "limits.max_connections must be at least 1",
        ));
    }
    if !(1024..=16 * 1024 * 1024).contains(&l.buffer_bytes) {
        return Err(text.invalid(
            "limits.buffer_bytes",
            "limits.buffer_bytes must be between 1024 and 16777216",
        ));
    }
    let positive = "per-subscriber and per-source limits must be positive";
    for (key, zero) in [
        (
            "limits.per_subscriber_connections",
            l.per_subscriber_connections == 0,
        ),
        (
            "limits.per_subscriber_pending",
            l.per_subscriber_pending == 0,
        ),
        ("limits.per_source_pending", l.per_source_pending == 0),
        (
            "limits.per_subscriber_rate",
            !l.per_subscriber_rate.is_finite() || l.per_subscriber_rate <= 0.0,
        ),
        (
            "limits.error_replies_per_sec",
            !l.error_replies_per_sec.is_finite() || l.error_replies_per_sec < 0.0,
        ),
    ] {
        if zero {
            return Err(text.invalid(key, positive));
        }
    }
    Ok(())
}

/// `[auth]`: the key ring, and what cookies need.
fn key_ring(text: &Text<'_>, raw: &Raw) -> Result<crate::cookie::KeyRing, ConfigError> {
    let mut ring = crate::cookie::KeyRing {
        current: raw.auth.current_key,
        keys: Default::default(),
    };
    for (i, k) in raw.auth.keys.iter().enumerate() {
        let Some(key) = crate::cookie::Key::from_hex(&k.secret) else {
            return Err(text.invalid(
                &format!("auth.keys[{i}].secret"),
                format!("auth.keys id {}: secret must be 64 hex digits", k.id),
            ));
        };
        if ring.keys.insert(k.id, key).is_some() {
            return Err(text.invalid(
                &format!("auth.keys[{i}].id"),
                format!("auth.keys id {} twice", k.id),
            ));
        }
    }
    if raw.auth.require_cookie {
        if !ring.keys.contains_key(&ring.current) {
            return Err(text.invalid(
                "auth.require_cookie",
                "auth.require_cookie needs auth.keys with the auth.current_key id",
            ));
        }
        if raw.registry.is_none() {
            return Err(text.invalid(
                "auth.require_cookie",
                "auth.require_cookie needs a subscriber registry (registry = \"path\")",
            ));
        }
    }
    Ok(ring)
}

/// `[links]`: each key names an access link.
fn links(
    text: &Text<'_>,
    raw: &std::collections::BTreeMap<String, Vec<IpNet>>,
) -> Result<PerLink<Vec<IpNet>>, ConfigError> {
    let mut links = PerLink::<Vec<IpNet>>::default();
    for (name, nets) in raw {
        let link: Link = name.parse().map_err(|e: hybrid::UnknownName| {
            text.invalid(&format!("links.{name}"), e.to_string())
        })?;
        links[link] = nets.clone();
    }
    Ok(links)
}

/// `[telemetry]`.
fn telemetry(t: &Text<'_>, raw: Option<&RawTelemetry>) -> Result<Option<Telemetry>, ConfigError> {
    let Some(r) = raw else {
        return Ok(None);
    };
    telemetry::check_name("hag", &r.name)
        .map_err(|e| t.invalid("telemetry.name", e.to_string()))?;
    let endpoint = ops_client::check_endpoint(&ops_client::EndpointSpec {
        ops: r.ops,
        host: r.host.as_deref(),
        tls: r.tls,
        ca: r.ca.as_deref(),
        token: &r.token,
        period_s: r.period_s,
        timeout_ms: r.timeout_ms,
        kind: "hag NAME",
    })
    .map_err(|(key, why)| t.invalid(&format!("telemetry.{key}"), why))?;
    Ok(Some(Telemetry {
        ops: r.ops,
        host: endpoint.host,
        tls: endpoint.tls,
        name: r.name.clone(),
        token: r.token.clone(),
        period: endpoint.period,
        timeout: endpoint.timeout,
    }))
}

/// The addresses clients may reach the service on (default: `listen`'s).
fn service_addresses(text: &Text<'_>, raw: &Raw) -> Result<Vec<IpAddr>, ConfigError> {
    let addrs = if raw.service_addresses.is_empty() && !raw.listen.ip().is_unspecified() {
        vec![raw.listen.ip()]
    } else {
        raw.service_addresses.clone()
    };
    if addrs.is_empty() {
        return Err(text.invalid(
            "listen",
            "listening on a wildcard address needs service_addresses (the access-facing addresses)",
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(
            "listen = \"10.66.0.1:5124\"\nsubscriber_prefixes = [\"10.64.0.0/16\"]\n",
        )
        .unwrap();
        assert_eq!(c.header_timeout, Duration::from_secs(5));
        assert_eq!(c.congestion_control, "cubic");
        assert!(c.mptcp);
        assert!(!c.counts_links());
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let e = Config::from_toml(
            "listen = \"10.66.0.1:5124\"\nsubscriber_prefixes = [\"10.64.0.0/16\"]\nlisten_port = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3") && e.contains("listen_port"), "{e}");
    }

    #[test]
    fn empty_prefixes_refused() {
        let e = Config::from_toml("listen = \"10.66.0.1:5124\"\nsubscriber_prefixes = []\n")
            .unwrap_err();
        let i = e.invalid().expect("invalid");
        assert_eq!((i.key.as_str(), i.line), ("subscriber_prefixes", Some(2)));
    }

    #[test]
    fn links_are_typed_and_an_unknown_one_names_its_line() {
        let base =
            "listen = \"10.66.0.1:5124\"\nsubscriber_prefixes = [\"10.64.0.0/16\"]\n[links]\n";
        let c = Config::from_toml(&format!(
            "{base}dsl = [\"10.64.1.0/24\"]\nlte = [\"10.64.2.0/24\"]\n"
        ))
        .unwrap();
        assert_eq!(c.link_of("10.64.2.9".parse().unwrap()), Some(Link::Lte));
        assert_eq!(c.link_of("10.64.1.9".parse().unwrap()), Some(Link::Dsl));
        assert_eq!(c.link_of("10.64.3.9".parse().unwrap()), None);
        assert!(c.counts_links());
        let e =
            Config::from_toml(&format!("{base}dsl = []\nwifi = [\"10.64.3.0/24\"]\n")).unwrap_err();
        let i = e.invalid().expect("invalid");
        assert_eq!((i.key.as_str(), i.line), ("links.wifi", Some(5)), "{e}");
        assert!(!Config::from_toml(base).unwrap().counts_links());
    }

    #[test]
    fn semantic_errors_name_their_key() {
        let base = "listen = \"10.66.0.1:5124\"\nsubscriber_prefixes = [\"10.64.0.0/16\"]\n";
        for (extra, key) in [
            ("[limits]\nbuffer_bytes = 10\n", "limits.buffer_bytes"),
            ("[timeouts]\nconnect_ms = 0\n", "timeouts.connect_ms"),
            (
                "[[auth.keys]]\nid = 1\nsecret = \"zz\"\n",
                "auth.keys[0].secret",
            ),
            ("[auth]\nrequire_cookie = true\n", "auth.require_cookie"),
            (
                "[telemetry]\nops = \"10.67.0.9:9300\"\nname = \"hag 1\"\ntoken = \"0123456789abcdef\"\n",
                "telemetry.name",
            ),
            (
                "[telemetry]\nops = \"10.67.0.9:9300\"\nname = \"hag-1\"\ntoken = \"short\"\n",
                "telemetry.token",
            ),
            (
                "[telemetry]\nops = \"10.67.0.9:9300\"\nname = \"hag-1\"\ntoken = \"0123456789abcdef\"\nperiod_s = 0\n",
                "telemetry.period_s",
            ),
            (
                "[telemetry]\nops = \"0.0.0.0:9300\"\nname = \"hag-1\"\ntoken = \"0123456789abcdef\"\n",
                "telemetry.ops",
            ),
            (
                "[telemetry]\nops = \"10.67.0.9:9300\"\nname = \"hag-1\"\ntoken = \"0123456789abcdef\"\nca = \"/etc/ca.pem\"\n",
                "telemetry.ca",
            ),
            (
                "[telemetry]\nops = \"10.67.0.9:9300\"\nname = \"hag-1\"\ntoken = \"0123456789abcdef\"\ntls = true\nca = \"/nonexistent/ca.pem\"\n",
                "telemetry.ca",
            ),
        ] {
            let e = Config::from_toml(&format!("{base}{extra}")).unwrap_err();
            let i = e.invalid().expect("invalid");
            assert_eq!(i.key, key, "{e}");
            assert!(i.line.is_some(), "{e}");
        }
    }
}
