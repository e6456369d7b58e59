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
        Ok(Self {
            cookie,
            mptcp_rcvbuf_bytes: raw.mptcp_rcvbuf_bytes,
            lan_interface: raw.lan_interface,
            hag: raw.hag,
            intercept_port: raw.intercept_port,
            admin_listen: raw.admin_listen,
            dsl: Wan {
                interface: raw.dsl.interface,
                address: raw.dsl.address,
            },
            lte: Wan {
                interface: raw.lte.interface,
                address: raw.lte.address,
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
    fn unknown_key_refused_with_line() {
        let bad = format!("{GOOD}\nbogus = 1\n");
        let e = Config::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }
}
