//! `ops.toml`: TOML read into a raw struct (`deny_unknown_fields`), then
//! validated into [`Config`]; errors are the shared
//! `config_file::ConfigError`, naming the key and its line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use config_file::ConfigError;
use config_file::Text;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    api: RawApi,
    #[serde(default)]
    admin: RawAdmin,
    data: RawData,
    #[serde(default)]
    engine: RawEngine,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: SocketAddr,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_header_timeout_ms")]
    header_timeout_ms: u64,
    #[serde(default = "default_max_skew_s")]
    max_clock_skew_s: u64,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: SocketAddr,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9103)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    db: PathBuf,
    inventory: PathBuf,
    #[serde(default = "default_retention_hours")]
    retention_hours: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEngine {
    report_period_s: f64,
    hag_period_s: f64,
    scan_interval_s: f64,
}

impl Default for RawEngine {
    fn default() -> Self {
        Self {
            report_period_s: 10.0,
            hag_period_s: 10.0,
            scan_interval_s: 10.0,
        }
    }
}

fn default_max_connections() -> usize {
    4096
}
fn default_header_timeout_ms() -> u64 {
    5_000
}
fn default_max_skew_s() -> u64 {
    600
}
fn default_retention_hours() -> u64 {
    6
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where CPEs, HAGs and operators reach the API.
    pub api_listen: SocketAddr,
    /// Open API connections at most (further ones are closed on accept).
    pub max_connections: usize,
    /// A request's headers must arrive within this time.
    pub header_timeout: Duration,
    /// Reports made further than this from ops' clock are refused (a
    /// replayed old report, or a CPE whose clock is wrong).
    pub max_clock_skew: Duration,
    /// TLS on the API: the certificate chain and its key (PEM files, read
    /// when ops starts and by `check-config`).
    pub tls: Option<ApiTls>,
    /// The admin listener (`/metrics`, `/live`, `/ready`, `/status`).
    pub admin_listen: SocketAddr,
    /// The SQLite database (tokens, telemetry history, incidents).
    pub db: PathBuf,
    /// The operator's inventory (CSV: subscriber,cabinet,card,cell).
    pub inventory: PathBuf,
    /// Telemetry history kept in the database.
    pub retention: Duration,
    /// How often CPEs report.
    pub report_period: Duration,
    /// How often HAGs report.
    pub hag_period: Duration,
    /// How often every home is diagnosed for incidents.
    pub scan_interval: Duration,
}

/// The API's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    /// The certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl ApiTls {
    /// Reads both files: the acceptor, or what is wrong with them.
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, String> {
        admin::tls::acceptor(&self.cert, &self.key)
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = config_file::read(path)?;
        let mut c = Self::parse(&text)?;
        // Relative data paths are relative to the configuration file.
        let base = path.parent().unwrap_or(Path::new("."));
        let mut paths = vec![&mut c.db, &mut c.inventory];
        if let Some(t) = &mut c.tls {
            paths.extend([&mut t.cert, &mut t.key]);
        }
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(c)
    }

    /// Validates a configuration's text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let t = Text::new(text);
        let raw: Raw = t.parse()?;
        if raw.api.max_connections == 0 || raw.api.max_connections > 1_000_000 {
            return Err(t.invalid("api.max_connections", "must be 1 to 1000000"));
        }
        if !(100..=60_000).contains(&raw.api.header_timeout_ms) {
            return Err(t.invalid("api.header_timeout_ms", "must be 100 to 60000"));
        }
        if !(10..=86_400).contains(&raw.api.max_clock_skew_s) {
            return Err(t.invalid("api.max_clock_skew_s", "must be 10 to 86400"));
        }
        let tls = match (raw.api.tls_cert, raw.api.tls_key) {
            (Some(cert), Some(key)) => Some(ApiTls { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(t.invalid("api.tls_key", "tls_cert needs its key (PEM) as well"))
            }
            (None, Some(_)) => {
                return Err(t.invalid(
                    "api.tls_cert",
                    "tls_key needs its certificate (PEM) as well",
                ))
            }
        };
        if raw.api.listen == raw.admin.listen {
            return Err(t.invalid("admin.listen", "must differ from api.listen"));
        }
        if !(1..=24 * 365).contains(&raw.data.retention_hours) {
            return Err(t.invalid("data.retention_hours", "must be 1 to 8760"));
        }
        for (key, v) in [
            ("engine.report_period_s", raw.engine.report_period_s),
            ("engine.hag_period_s", raw.engine.hag_period_s),
            ("engine.scan_interval_s", raw.engine.scan_interval_s),
        ] {
            if !(v.is_finite() && (1.0..=3600.0).contains(&v)) {
                return Err(t.invalid(key, "must be 1 to 3600 seconds"));
            }
        }
        Ok(Self {
            api_listen: raw.api.listen,
            max_connections: raw.api.max_connections,
            header_timeout: Duration::from_millis(raw.api.header_timeout_ms),
            max_clock_skew: Duration::from_secs(raw.api.max_clock_skew_s),
            tls,
            admin_listen: raw.admin.listen,
            db: raw.data.db,
            inventory: raw.data.inventory,
            retention: Duration::from_secs(raw.data.retention_hours * 3600),
            report_period: Duration::from_secs_f64(raw.engine.report_period_s),
            hag_period: Duration::from_secs_f64(raw.engine.hag_period_s),
            scan_interval: Duration::from_secs_f64(raw.engine.scan_interval_s),
        })
    }

    /// The engine's settings.
    pub fn settings(&self) -> crate::Settings {
        crate::Settings {
            report_period_s: self.report_period.as_secs_f64(),
            hag_period_s: self.hag_period.as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str =
        "[api]\nlisten = \"127.0.0.1:8470\"\n[data]\ndb = \"ops.db\"\ninventory = \"homes.csv\"\n";

    #[test]
    fn the_minimum_has_defaults() {
        let c = Config::parse(MIN).unwrap();
        assert_eq!(c.admin_listen, SocketAddr::from(([127, 0, 0, 1], 9103)));
        assert_eq!(c.report_period, Duration::from_secs(10));
        assert_eq!(c.retention, Duration::from_secs(6 * 3600));
    }

    #[test]
    fn mistakes_name_the_key_and_line() {
        let e = Config::parse(&format!("{MIN}[engine]\nscan_interval_s = 0\n")).unwrap_err();
        let i = e.invalid().unwrap();
        assert_eq!(i.key, "engine.scan_interval_s");
        assert_eq!(i.line, Some(7));
        let e = Config::parse(&format!("{MIN}typo = 1\n")).unwrap_err();
        assert!(e.to_string().contains("typo"), "{e}");
        let e = Config::parse("[api]\nlisten = \"nonsense\"\n").unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e =
            Config::parse(&MIN.replace("[data]", "[admin]\nlisten = \"127.0.0.1:8470\"\n[data]"))
                .unwrap_err();
        assert_eq!(e.invalid().unwrap().key, "admin.listen");
        let e = Config::parse(&MIN.replace("[data]", "tls_cert = \"c.pem\"\n[data]")).unwrap_err();
        assert_eq!(e.invalid().unwrap().key, "api.tls_key");
        let e = Config::parse(&MIN.replace("[data]", "tls_key = \"k.pem\"\n[data]")).unwrap_err();
        assert_eq!(e.invalid().unwrap().key, "api.tls_cert");
    }

    #[test]
    fn tls_files_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ops.toml");
        std::fs::write(
            &f,
            MIN.replace(
                "[data]",
                "tls_cert = \"c.pem\"\ntls_key = \"/k.pem\"\n[data]",
            ),
        )
        .unwrap();
        let c = Config::load(&f).unwrap();
        let t = c.tls.unwrap();
        assert_eq!(t.cert, dir.path().join("c.pem"));
        assert_eq!(t.key, PathBuf::from("/k.pem"));
        // Files that are not there: the error names the file.
        let Err(e) = t.acceptor() else {
            panic!("no TLS files, yet an acceptor");
        };
        assert!(e.contains("c.pem"), "{e}");
    }
}
