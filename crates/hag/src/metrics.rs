//! The HAG's Prometheus metrics, in an explicit registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label: why a connection was refused or failed (an RFC 8803 error name or
/// a local reason such as "header_timeout").
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: String,
}

/// Label: direction of bytes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirLabel {
    /// "upstream" (subscriber → internet) or "downstream".
    pub direction: String,
}

/// Every metric the HAG exports.
pub struct Metrics {
    /// Registry rendered on `/metrics`.
    pub registry: Registry,
    /// Connections accepted on the Convert listener.
    pub accepted: Counter,
    /// Connections relayed after a successful Convert handshake.
    pub relayed: Counter,
    /// Connections currently open.
    pub active: Gauge,
    /// Error TLVs sent, by error name.
    pub errors_sent: Family<ReasonLabel, Counter>,
    /// Connections closed without a reply, by reason.
    pub closed_without_reply: Family<ReasonLabel, Counter>,
    /// Bytes relayed.
    pub bytes: Family<DirLabel, Counter>,
    /// From accept to the Convert reply.
    pub handshake_seconds: Histogram,
    /// Connections whose first bytes came in the SYN (TCP Fast Open).
    pub syn_data: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tandem_hag");
        let m = Self {
            accepted: Counter::default(),
            relayed: Counter::default(),
            active: Gauge::default(),
            errors_sent: Family::default(),
            closed_without_reply: Family::default(),
            bytes: Family::default(),
            handshake_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            syn_data: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "accepted",
            "Connections accepted on the Convert listener",
            m.accepted.clone(),
        );
        registry.register(
            "relayed",
            "Connections relayed after a successful Convert handshake",
            m.relayed.clone(),
        );
        registry.register(
            "active_connections",
            "Connections open now",
            m.active.clone(),
        );
        registry.register(
            "errors_sent",
            "RFC 8803 Error TLVs sent, by error",
            m.errors_sent.clone(),
        );
        registry.register(
            "closed_without_reply",
            "Connections closed without a Convert reply, by reason",
            m.closed_without_reply.clone(),
        );
        registry.register("bytes", "Bytes relayed, by direction", m.bytes.clone());
        registry.register(
            "handshake_seconds",
            "Time from accept to the Convert reply",
            m.handshake_seconds.clone(),
        );
        registry.register(
            "syn_data",
            "Connections whose Convert message arrived in the SYN (TCP Fast Open)",
            m.syn_data.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Counts an Error TLV sent.
    pub fn error_sent(&self, reason: &str) {
        self.errors_sent
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a close without reply.
    pub fn closed(&self, reason: &str) {
        self.closed_without_reply
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Renders the registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
