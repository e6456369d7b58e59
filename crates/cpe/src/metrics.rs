//! The CPE's Prometheus metrics, in an explicit registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label: a link and a direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabel {
    /// "dsl" or "lte".
    pub link: String,
    /// "up" (sent by the CPE) or "down" (received).
    pub direction: String,
}

/// Label: an RFC 8803 error or a local failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: String,
}

/// Every metric the CPE exports.
pub struct Metrics {
    /// Registry rendered on `/metrics`.
    pub registry: Registry,
    /// LAN connections intercepted.
    pub intercepted: Counter,
    /// Connections relayed after the HAG's reply.
    pub relayed: Counter,
    /// Connections open now.
    pub active: Gauge,
    /// Error TLVs received from the HAG, by error.
    pub hag_errors: Family<ReasonLabel, Counter>,
    /// Attempts that could not reach the HAG, by reason.
    pub hag_unreachable: Family<ReasonLabel, Counter>,
    /// 1 when the last attempt reached the HAG, 0 when it did not.
    pub hag_reachable: Gauge,
    /// Payload bytes per link and direction, from the kernel's per-subflow
    /// counters (`MPTCP_TCPINFO`).
    pub link_bytes: Family<LinkLabel, Counter>,
    /// Connections that used more than one subflow.
    pub multipath_connections: Counter,
    /// Connections whose Convert message went in the SYN (Fast Open).
    pub syn_data: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tandem_cpe");
        let m = Self {
            registry: Registry::default(),
            intercepted: Counter::default(),
            relayed: Counter::default(),
            active: Gauge::default(),
            hag_errors: Family::default(),
            hag_unreachable: Family::default(),
            hag_reachable: Gauge::default(),
            link_bytes: Family::default(),
            multipath_connections: Counter::default(),
            syn_data: Counter::default(),
        };
        registry.register(
            "intercepted",
            "LAN TCP connections intercepted",
            m.intercepted.clone(),
        );
        registry.register(
            "relayed",
            "Connections relayed through the HAG",
            m.relayed.clone(),
        );
        registry.register(
            "active_connections",
            "Connections open now",
            m.active.clone(),
        );
        registry.register(
            "hag_errors",
            "RFC 8803 Error TLVs received from the HAG",
            m.hag_errors.clone(),
        );
        registry.register(
            "hag_unreachable",
            "Attempts that could not reach the HAG",
            m.hag_unreachable.clone(),
        );
        registry.register(
            "hag_reachable",
            "1 when the last attempt reached the HAG",
            m.hag_reachable.clone(),
        );
        registry.register(
            "link_bytes",
            "Payload bytes per link (kernel per-subflow counters)",
            m.link_bytes.clone(),
        );
        registry.register(
            "multipath_connections",
            "Connections that carried data over more than one subflow",
            m.multipath_connections.clone(),
        );
        registry.register(
            "syn_data",
            "Connections whose Convert message rode in the SYN",
            m.syn_data.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Renders the registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Adds bytes to a link's counter.
    pub fn add_link_bytes(&self, link: &str, direction: &str, n: u64) {
        self.link_bytes
            .get_or_create(&LinkLabel {
                link: link.to_string(),
                direction: direction.to_string(),
            })
            .inc_by(n);
    }

    /// Counts a reason in a family.
    pub fn count(family: &Family<ReasonLabel, Counter>, reason: &str) {
        family
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }
}
