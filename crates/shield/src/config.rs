//! Shield configuration: TOML read into a raw struct (`deny_unknown_fields`),
//! then validated into [`Config`] with typed addresses and durations; errors
//! are the shared `config_file::ConfigError`, naming the key and its line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::policy::Action;

pub use config_file::ConfigError;
use config_file::Text;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Vec<SocketAddr>,
    subscriber_prefixes: Vec<IpNet>,
    #[serde(default = "default_admin")]
    admin_listen: SocketAddr,
    #[serde(default)]
    udp_workers: usize,
    upstream: RawUpstream,
    #[serde(default)]
    cache: RawCache,
    warning: RawWarning,
    #[serde(default)]
    reports: Option<RawReports>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    lists: Vec<RawList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    servers: Vec<SocketAddr>,
    #[serde(default = "default_upstream_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_in_flight")]
    max_in_flight: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    max_entries: usize,
    min_ttl_secs: u32,
    max_ttl_secs: u32,
    negative_ttl_max_secs: u32,
    servfail_ttl_secs: u32,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            max_entries: 200_000,
            min_ttl_secs: 0,
            max_ttl_secs: 86_400,
            negative_ttl_max_secs: 3_600,
            servfail_ttl_secs: 5,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWarning {
    ipv4: Ipv4Addr,
    #[serde(default)]
    ipv6: Option<Ipv6Addr>,
    http_listen: Vec<SocketAddr>,
    #[serde(default = "default_block_ttl")]
    ttl_secs: u32,
    #[serde(default = "default_operator")]
    operator_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReports {
    database: PathBuf,
    #[serde(default = "default_apply_interval")]
    apply_interval_secs: u64,
    #[serde(default = "default_report_action")]
    action: Action,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    refuse_any: bool,
    rrl_responses_per_second: u32,
    rrl_slip: u32,
    rrl_ipv4_prefix_len: u8,
    rrl_ipv6_prefix_len: u8,
    client_queries_per_second: u32,
    client_burst: u32,
    tcp_max_connections: usize,
    tcp_idle_timeout_secs: u64,
    tcp_max_queries_per_connection: u32,
    table_max_entries: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            refuse_any: true,
            rrl_responses_per_second: 200,
            rrl_slip: 2,
            rrl_ipv4_prefix_len: 24,
            rrl_ipv6_prefix_len: 56,
            client_queries_per_second: 500,
            client_burst: 1_000,
            tcp_max_connections: 1_000,
            tcp_idle_timeout_secs: 10,
            tcp_max_queries_per_connection: 1_000,
            table_max_entries: 100_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    name: String,
    kind: ListKind,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    primary: Option<SocketAddr>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    allow: bool,
    #[serde(default = "default_list_action")]
    action: Action,
    #[serde(default)]
    include_subdomains: bool,
    #[serde(default)]
    ede: EdeKind,
    #[serde(default = "default_refresh")]
    refresh_secs: u64,
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9153))
}
fn default_upstream_timeout() -> u64 {
    1_500
}
fn default_in_flight() -> usize {
    4_096
}
fn default_block_ttl() -> u32 {
    60
}
fn default_operator() -> String {
    "your internet provider".into()
}
fn default_apply_interval() -> u64 {
    10
}
fn default_report_action() -> Action {
    Action::Redirect
}
fn default_list_action() -> Action {
    Action::Redirect
}
fn default_refresh() -> u64 {
    300
}

/// What a list file contains, or where an RPZ zone comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    /// One name per line; `*.name` for a whole subtree; `#` comments.
    Domains,
    /// Hosts file lines (`0.0.0.0 name ...`); the addresses are ignored.
    Hosts,
    /// An RPZ zone: from `path` (zone file) or transferred from `primary`.
    Rpz,
}

/// Which Extended DNS Error (RFC 8914) a list's blocked answers carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdeKind {
    /// INFO-CODE 15, "Blocked": the operator's policy.
    #[default]
    Blocked,
    /// INFO-CODE 17, "Filtered": a filter the subscriber asked for.
    Filtered,
}

impl EdeKind {
    /// The RFC 8914 INFO-CODE.
    pub fn code(self) -> u16 {
        match self {
            Self::Blocked => 15,
            Self::Filtered => 17,
        }
    }
}

/// Where a list's entries come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListSource {
    /// A file, re-read when its modification time changes.
    File(PathBuf),
    /// An RPZ zone transferred with AXFR, then IXFR on NOTIFY or refresh.
    Transfer {
        /// The primary server.
        primary: SocketAddr,
        /// The zone's name, lowercase, without the final dot.
        zone: String,
    },
}

/// One configured list.
#[derive(Clone, Debug)]
pub struct ListConfig {
    /// Name shown in the EDE text, the metrics and the logs.
    pub name: String,
    /// Format.
    pub kind: ListKind,
    /// Where the entries come from.
    pub source: ListSource,
    /// For an RPZ zone file: its origin, when the file has no `$ORIGIN`.
    pub rpz_origin: Option<String>,
    /// An allowlist: a match lets the query through, whatever other lists say.
    pub allow: bool,
    /// Action for entries of domain and hosts lists (RPZ entries carry their own).
    pub action: Action,
    /// A plain name in a domain or hosts list also covers its subdomains.
    pub include_subdomains: bool,
    /// EDE code on blocked answers.
    pub ede: EdeKind,
    /// File poll interval, or RPZ refresh when the SOA does not say less.
    pub refresh: Duration,
}

/// Citizen reports.
#[derive(Clone, Debug)]
pub struct ReportsConfig {
    /// SQLite database file.
    pub database: PathBuf,
    /// How often confirmed reports are re-read into the local lists.
    pub apply_interval: Duration,
    /// Action for domains confirmed as phishing.
    pub action: Action,
}

/// Flood resistance.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Answer REFUSED to QTYPE ANY.
    pub refuse_any: bool,
    /// UDP responses per second per client prefix (0: no RRL).
    pub rrl_responses_per_second: u32,
    /// Every n-th rate-limited response is sent truncated (0: never).
    pub rrl_slip: u32,
    /// IPv4 prefix length that makes one RRL client.
    pub rrl_ipv4_prefix_len: u8,
    /// IPv6 prefix length that makes one RRL client.
    pub rrl_ipv6_prefix_len: u8,
    /// Queries per second per client address (0: no limit).
    pub client_queries_per_second: u32,
    /// Burst above that rate.
    pub client_burst: u32,
    /// TCP connections at once.
    pub tcp_max_connections: usize,
    /// A TCP connection idle this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Queries on one TCP connection before it is closed.
    pub tcp_max_queries_per_connection: u32,
    /// Entries in each rate-limit table.
    pub table_max_entries: usize,
}

/// A validated shield configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// DNS listeners (UDP and TCP on each).
    pub listen: Vec<SocketAddr>,
    /// Clients allowed to resolve; everybody else gets REFUSED.
    pub subscriber_prefixes: Vec<IpNet>,
    /// Admin listener: `/metrics`, `/live`, `/ready`, `/status`.
    pub admin_listen: SocketAddr,
    /// UDP sockets per listen address (SO_REUSEPORT), each served by a task.
    pub udp_workers: usize,
    /// Upstream resolvers, in order of preference.
    pub upstreams: Vec<SocketAddr>,
    /// Deadline for one upstream attempt.
    pub upstream_timeout: Duration,
    /// Upstream queries at once.
    pub upstream_max_in_flight: usize,
    /// Cache entries at most.
    pub cache_max_entries: usize,
    /// TTLs are raised to at least this.
    pub cache_min_ttl_secs: u32,
    /// TTLs are capped to this.
    pub cache_max_ttl_secs: u32,
    /// Negative answers (RFC 2308) are cached at most this long.
    pub negative_ttl_max_secs: u32,
    /// SERVFAIL from all upstreams is cached this long (RFC 2308 §7.1).
    pub servfail_ttl_secs: u32,
    /// The warning page's IPv4 address (redirect answers).
    pub warning_ipv4: Ipv4Addr,
    /// The warning page's IPv6 address (AAAA redirects; NODATA if absent).
    pub warning_ipv6: Option<Ipv6Addr>,
    /// Where the warning page's HTTP server listens.
    pub warning_http_listen: Vec<SocketAddr>,
    /// TTL of synthesized blocked answers.
    pub block_ttl_secs: u32,
    /// Operator name shown on the warning page.
    pub operator_name: String,
    /// Citizen reports (absent: no reports API, no local lists).
    pub reports: Option<ReportsConfig>,
    /// Flood resistance.
    pub limits: Limits,
    /// Lists in the order they are consulted (allowlists first at run time).
    pub lists: Vec<ListConfig>,
}

/// Normalises a domain as the lists store it: lowercase, no final dot.
/// Returns `None` for something that is not a domain name.
pub fn normalize_domain(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('.');
    if s.is_empty() || s.len() > 253 {
        return None;
    }
    let name = hickory_proto::rr::Name::from_ascii(s).ok()?;
    let mut out = name.to_lowercase().to_ascii();
    if out.ends_with('.') {
        out.pop();
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

/// The top-level values: listeners, upstreams, cache and limits.
fn check_general(t: &Text<'_>, raw: &Raw) -> Result<(), ConfigError> {
    let invalid = |key: &str, m: String| Err(t.invalid(key, m));
    if raw.listen.is_empty() {
        return invalid("listen", "is empty".into());
    }
    if raw.subscriber_prefixes.is_empty() {
        return invalid(
            "subscriber_prefixes",
            "is empty: nobody could resolve".into(),
        );
    }
    if raw.upstream.servers.is_empty() {
        return invalid("upstream.servers", "is empty".into());
    }
    if raw.upstream.timeout_ms == 0 {
        return invalid("upstream.timeout_ms", "must be > 0".into());
    }
    if raw.upstream.max_in_flight == 0 {
        return invalid("upstream.max_in_flight", "must be > 0".into());
    }
    let c = &raw.cache;
    if c.min_ttl_secs > c.max_ttl_secs {
        return invalid("cache.min_ttl_secs", "is above cache.max_ttl_secs".into());
    }
    if raw.warning.http_listen.is_empty() {
        return invalid("warning.http_listen", "is empty".into());
    }
    let l = &raw.limits;
    if l.rrl_ipv4_prefix_len > 32 {
        return invalid("limits.rrl_ipv4_prefix_len", "must be 0 to 32".into());
    }
    if l.rrl_ipv6_prefix_len > 128 {
        return invalid("limits.rrl_ipv6_prefix_len", "must be 0 to 128".into());
    }
    if l.tcp_max_connections == 0 {
        return invalid("limits.tcp_max_connections", "must be > 0".into());
    }
    if l.tcp_idle_timeout_secs == 0 {
        return invalid("limits.tcp_idle_timeout_secs", "must be > 0".into());
    }
    if l.table_max_entries < 16 {
        return invalid("limits.table_max_entries", "must be at least 16".into());
    }
    if l.client_queries_per_second > 0 && l.client_burst == 0 {
        return invalid(
            "limits.client_burst",
            "must be > 0 when limits.client_queries_per_second is set".into(),
        );
    }
    Ok(())
}

/// The block and allow lists, in order.
fn lists(t: &Text<'_>, raw: Vec<RawList>) -> Result<Vec<ListConfig>, ConfigError> {
    let invalid = |key: &str, m: String| Err(t.invalid(key, m));
    let mut lists = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("lists[{i}].{k}");
        let what = format!("list {:?}", r.name);
        if r.name.is_empty() || r.name.len() > 64 || !r.name.is_ascii() {
            return invalid(
                &key("name"),
                format!("{:?}: must be 1 to 64 ASCII characters", r.name),
            );
        }
        if lists.iter().any(|l: &ListConfig| l.name == r.name) {
            return invalid(&key("name"), format!("{what}: duplicate list name"));
        }
        let mut rpz_origin = None;
        let source = match (r.kind, r.path, r.primary, r.zone) {
            (_, Some(p), None, None) => ListSource::File(p),
            (ListKind::Rpz, Some(p), None, Some(zone)) => {
                let Some(zone) = normalize_domain(&zone) else {
                    return invalid(&key("zone"), format!("{zone:?} is not a domain name"));
                };
                rpz_origin = Some(zone);
                ListSource::File(p)
            }
            (ListKind::Rpz, None, Some(primary), Some(zone)) => {
                let Some(zone) = normalize_domain(&zone) else {
                    return invalid(&key("zone"), format!("{zone:?} is not a domain name"));
                };
                ListSource::Transfer { primary, zone }
            }
            (ListKind::Rpz, _, _, _) => {
                return invalid(
                    &format!("lists[{i}]"),
                    format!("{what}: an rpz list needs either path, or primary and zone"),
                )
            }
            _ => {
                return invalid(
                    &format!("lists[{i}]"),
                    format!("{what}: a {:?} list needs path only", r.kind),
                )
            }
        };
        if r.refresh_secs == 0 {
            return invalid(&key("refresh_secs"), "must be > 0".into());
        }
        if r.allow && r.action != Action::Passthru && r.action != Action::Redirect {
            return invalid(
                &key("action"),
                format!("{what}: an allow list takes no action"),
            );
        }
        lists.push(ListConfig {
            name: r.name,
            kind: r.kind,
            source,
            rpz_origin,
            allow: r.allow,
            action: if r.allow { Action::Passthru } else { r.action },
            include_subdomains: r.include_subdomains,
            ede: r.ede,
            refresh: Duration::from_secs(r.refresh_secs),
        });
    }
    Ok(lists)
}

/// The first list that takes a name the reports use: its index and the
/// name. Checked with the configuration, and again by `Server::bind` for a
/// configuration built in code.
pub(crate) fn reserved_list(lists: &[ListConfig]) -> Option<(usize, &'static str)> {
    lists.iter().enumerate().find_map(|(i, l)| {
        [crate::REPORTS_BLOCK_LIST, crate::REPORTS_ALLOW_LIST]
            .into_iter()
            .find(|r| l.name == *r)
            .map(|r| (i, r))
    })
}

/// The citizen reports, if configured (their list names are reserved).
fn reports(
    t: &Text<'_>,
    raw: Option<RawReports>,
    lists: &[ListConfig],
) -> Result<Option<ReportsConfig>, ConfigError> {
    let invalid = |key: &str, m: String| Err(t.invalid(key, m));
    Ok(match raw {
        None => None,
        Some(r) => {
            if r.apply_interval_secs == 0 || r.apply_interval_secs > 60 {
                return invalid("reports.apply_interval_secs", "must be 1 to 60".into());
            }
            if r.action == Action::Passthru {
                return invalid("reports.action", "cannot be passthru".into());
            }
            if let Some((i, name)) = reserved_list(lists) {
                return invalid(
                    &format!("lists[{i}].name"),
                    format!("{name:?} is reserved for the reports"),
                );
            }
            Some(ReportsConfig {
                database: r.database,
                apply_interval: Duration::from_secs(r.apply_interval_secs),
                action: r.action,
            })
        }
    })
}

impl Config {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let t = Text::new(text);
        let raw: Raw = t.parse()?;
        check_general(&t, &raw)?;
        let lists = lists(&t, raw.lists)?;
        let workers = if raw.udp_workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            raw.udp_workers
        };
        let reports = reports(&t, raw.reports, &lists)?;
        let (c, l) = (&raw.cache, &raw.limits);
        Ok(Self {
            listen: raw.listen,
            subscriber_prefixes: raw.subscriber_prefixes,
            admin_listen: raw.admin_listen,
            udp_workers: workers.clamp(1, 64),
            upstreams: raw.upstream.servers,
            upstream_timeout: Duration::from_millis(raw.upstream.timeout_ms),
            upstream_max_in_flight: raw.upstream.max_in_flight,
            cache_max_entries: c.max_entries,
            cache_min_ttl_secs: c.min_ttl_secs,
            cache_max_ttl_secs: c.max_ttl_secs,
            negative_ttl_max_secs: c.negative_ttl_max_secs,
            servfail_ttl_secs: c.servfail_ttl_secs,
            warning_ipv4: raw.warning.ipv4,
            warning_ipv6: raw.warning.ipv6,
            warning_http_listen: raw.warning.http_listen,
            block_ttl_secs: raw.warning.ttl_secs,
            operator_name: raw.warning.operator_name,
            reports,
            limits: Limits {
                refuse_any: l.refuse_any,
                rrl_responses_per_second: l.rrl_responses_per_second,
                rrl_slip: l.rrl_slip,
                rrl_ipv4_prefix_len: l.rrl_ipv4_prefix_len,
                rrl_ipv6_prefix_len: l.rrl_ipv6_prefix_len,
                client_queries_per_second: l.client_queries_per_second,
                client_burst: l.client_burst,
                tcp_max_connections: l.tcp_max_connections,
                tcp_idle_timeout: Duration::from_secs(l.tcp_idle_timeout_secs),
                tcp_max_queries_per_connection: l.tcp_max_queries_per_connection.max(1),
                table_max_entries: l.table_max_entries,
            },
            lists,
        })
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&config_file::read(path)?)
    }

    /// Is this client a subscriber?
    pub fn is_subscriber(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.subscriber_prefixes.iter().any(|p| p.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
listen = ["127.0.0.1:5353"]
subscriber_prefixes = ["127.0.0.0/8"]
[upstream]
servers = ["127.0.0.1:5300"]
[warning]
ipv4 = "127.0.0.80"
http_listen = ["127.0.0.80:8080"]
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MIN).unwrap();
        assert_eq!(c.negative_ttl_max_secs, 3_600);
        assert!(c.limits.refuse_any);
        assert_eq!(c.limits.rrl_ipv4_prefix_len, 24);
        assert!(c.is_subscriber("127.0.0.9".parse().unwrap()));
        assert!(!c.is_subscriber("10.0.0.1".parse().unwrap()));
        assert!(c.is_subscriber("::ffff:127.0.0.9".parse().unwrap()));
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let text = format!("{MIN}\n[cache]\nmax_entriez = 3\n");
        let e = Config::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains("line 11") && e.contains("max_entriez"), "{e}");
    }

    #[test]
    fn invalid_values_name_their_key_and_line() {
        let text = format!("{MIN}\n[limits]\ntable_max_entries = 3\n");
        let e = Config::from_toml(&text).unwrap_err();
        let i = e.invalid().expect("an invalid value");
        assert_eq!(
            (i.key.as_str(), i.line),
            ("limits.table_max_entries", Some(11))
        );
        assert!(e
            .to_string()
            .contains("line 11, limits.table_max_entries: must be at least 16"));
        let text = format!(
            "{MIN}\n[[lists]]\nname = \"a\"\nkind = \"domains\"\npath = \"/x\"\n\n[[lists]]\nname = \"b\"\nkind = \"domains\"\npath = \"/y\"\nrefresh_secs = 0\n"
        );
        let e = Config::from_toml(&text).unwrap_err();
        let i = e.invalid().expect("an invalid value");
        assert_eq!(
            (i.key.as_str(), i.line),
            ("lists[1].refresh_secs", Some(19))
        );
    }

    #[test]
    fn the_reports_list_names_are_reserved() {
        let text = format!(
            "{MIN}\n[[lists]]\nname = \"{}\"\nkind = \"domains\"\npath = \"/x\"\n[reports]\ndatabase = \"/tmp/r.db\"\n",
            crate::REPORTS_BLOCK_LIST
        );
        let e = Config::from_toml(&text).unwrap_err();
        let i = e.invalid().expect("an invalid value");
        assert_eq!((i.key.as_str(), i.line), ("lists[0].name", Some(11)), "{e}");
    }

    #[test]
    fn list_sources_are_checked() {
        let bad = format!("{MIN}\n[[lists]]\nname = \"x\"\nkind = \"domains\"\n");
        assert!(matches!(
            Config::from_toml(&bad).unwrap_err(),
            ConfigError::Invalid(_)
        ));
        let good = format!(
            "{MIN}\n[[lists]]\nname = \"x\"\nkind = \"rpz\"\nprimary = \"127.0.0.1:53\"\nzone = \"RPZ.Test.\"\n"
        );
        let c = Config::from_toml(&good).unwrap();
        assert_eq!(
            c.lists[0].source,
            ListSource::Transfer {
                primary: "127.0.0.1:53".parse().unwrap(),
                zone: "rpz.test".into()
            }
        );
    }

    #[test]
    fn normalize() {
        assert_eq!(
            normalize_domain("Evil.Example."),
            Some("evil.example".into())
        );
        assert_eq!(normalize_domain(""), None);
        assert_eq!(normalize_domain("a..b"), None);
    }
}
