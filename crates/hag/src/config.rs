//! HAG configuration: TOML read into a raw struct, then validated into
//! [`Config`] with typed durations and addresses.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// The default port of the HAG's Convert service.
pub const DEFAULT_PORT: u16 = 5124;

/// A configuration that could not be used, with where and why.
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
struct Raw {
    listen: SocketAddr,
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
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            buffer_bytes: 16 * 1024,
            fastopen_queue: 4_096,
            backlog: 4_096,
            backoff_secs: 5,
        }
    }
}

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
    /// Further destination prefixes refused.
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
}

impl Config {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let t = &raw.timeouts;
        let l = &raw.limits;
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if raw.subscriber_prefixes.is_empty() {
            return invalid("subscriber_prefixes is empty: nobody could use the HAG");
        }
        if t.header_ms == 0 || t.connect_ms == 0 || t.idle_secs == 0 {
            return invalid("timeouts must be greater than zero");
        }
        if l.max_connections == 0 {
            return invalid("limits.max_connections must be at least 1");
        }
        if !(1024..=16 * 1024 * 1024).contains(&l.buffer_bytes) {
            return invalid("limits.buffer_bytes must be between 1024 and 16777216");
        }
        if raw.congestion_control.is_empty() {
            return invalid("congestion_control is empty");
        }
        Ok(Self {
            listen: raw.listen,
            admin_listen: raw.admin_listen,
            subscriber_prefixes: raw.subscriber_prefixes,
            local_addresses: raw.local_addresses,
            deny_destinations: raw.deny_destinations,
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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }
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
        assert!(matches!(e, ConfigError::Invalid(_)));
    }
}
