//! The HAG's Prometheus metrics, in an explicit registry.

use hybrid::{Direction, Link};
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

/// Label: a subscriber and a direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriberLabel {
    /// Registry name ("unauthenticated" without cookies).
    pub subscriber: String,
    /// [`Direction::name`]: "upstream" (subscriber → internet) or
    /// "downstream".
    pub direction: &'static str,
}

/// Label: an access link and a direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabel {
    /// [`Link::name`]: "dsl" or "lte".
    pub link: &'static str,
    /// [`Direction::name`]: "upstream" or "downstream".
    pub direction: &'static str,
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
    /// Handshakes waiting for their upstream connect (set when rendered).
    pub pending: Gauge,
    /// Error TLVs sent, by error name.
    pub errors_sent: Family<ReasonLabel, Counter>,
    /// Connections refused or abandoned before relaying, by reason.
    pub refused: Family<ReasonLabel, Counter>,
    /// Bytes relayed per subscriber.
    pub subscriber_bytes: Family<SubscriberLabel, Counter>,
    /// Payload bytes per access link (from the subflows' kernel counters).
    pub link_bytes: Family<LinkLabel, Counter>,
    /// From accept to the Convert reply.
    pub handshake_seconds: Histogram,
    /// Connections whose first bytes came in the SYN (TCP Fast Open).
    pub syn_data: Counter,
    /// Path probes received, by outcome.
    pub probes: Family<ReasonLabel, Counter>,
    /// Bytes (both directions) per subscriber and access link.
    pub subscriber_link_bytes: Family<SubscriberLinkLabel, Counter>,
    /// Usage records not saved because the writer's queue was full.
    pub usage_dropped: Counter,
    /// Reports to ops, by result (delivered, refused, failed).
    pub ops_reports: Family<ReasonLabel, Counter>,
    /// Bytes carried while their subscriber's budget was waived (recorded
    /// apart in the usage, not billed).
    pub waived_bytes: Counter,
    /// Connections to destinations attempted.
    pub upstream_connects: Counter,
    /// Connections to destinations that failed.
    pub upstream_errors: Counter,
}

/// Label: a subscriber and an access link.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriberLinkLabel {
    /// Subscriber name.
    pub subscriber: String,
    /// [`Link::name`]: "dsl" or "lte".
    pub link: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tandem_hag");
        let m = Self {
            accepted: Counter::default(),
            relayed: Counter::default(),
            active: Gauge::default(),
            pending: Gauge::default(),
            errors_sent: Family::default(),
            refused: Family::default(),
            subscriber_bytes: Family::default(),
            link_bytes: Family::default(),
            handshake_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            syn_data: Counter::default(),
            probes: Family::default(),
            subscriber_link_bytes: Family::default(),
            usage_dropped: Counter::default(),
            ops_reports: Family::default(),
            waived_bytes: Counter::default(),
            upstream_connects: Counter::default(),
            upstream_errors: Counter::default(),
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
            "pending_handshakes",
            "Subscribers' handshakes waiting for their upstream connect",
            m.pending.clone(),
        );
        registry.register(
            "errors_sent",
            "RFC 8803 Error TLVs sent, by error",
            m.errors_sent.clone(),
        );
        registry.register(
            "refused",
            "Connections refused or abandoned before relaying, by reason",
            m.refused.clone(),
        );
        registry.register(
            "subscriber_bytes",
            "Bytes relayed per subscriber and direction",
            m.subscriber_bytes.clone(),
        );
        registry.register(
            "link_bytes",
            "Payload bytes per access link and direction (kernel subflow counters)",
            m.link_bytes.clone(),
        );
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
        registry.register(
            "probes",
            "Path probes from CPEs, by outcome (answered, malformed, outside_access_networks, rate_limited)",
            m.probes.clone(),
        );
        registry.register(
            "subscriber_link_bytes",
            "Bytes (both directions) per subscriber and access link since start (the persistent count: tandem hag subscriber usage)",
            m.subscriber_link_bytes.clone(),
        );
        registry.register(
            "usage_dropped",
            "Usage records not saved (writer queue full)",
            m.usage_dropped.clone(),
        );
        registry.register(
            "ops_reports",
            "Reports to ops, by result (delivered, refused, failed)",
            m.ops_reports.clone(),
        );
        registry.register(
            "waived_bytes",
            "Bytes carried while their subscriber's mobile budget was waived by ops (recorded apart, not billed)",
            m.waived_bytes.clone(),
        );
        registry.register(
            "upstream_connects",
            "Connections to destinations attempted",
            m.upstream_connects.clone(),
        );
        registry.register(
            "upstream_errors",
            "Connections to destinations that failed (refused, reset, unreachable, timed out)",
            m.upstream_errors.clone(),
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

    /// Counts a path probe by outcome.
    pub fn count_probe(&self, outcome: &str) {
        self.probes
            .get_or_create(&ReasonLabel {
                reason: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a report to ops by result.
    pub fn ops_report(&self, result: &str) {
        self.ops_reports
            .get_or_create(&ReasonLabel {
                reason: result.to_string(),
            })
            .inc();
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Adds a finished connection's bytes to its subscriber.
    pub fn add_subscriber_bytes(&self, subscriber: &str, upstream: u64, downstream: u64) {
        for (direction, n) in [
            (Direction::Upstream, upstream),
            (Direction::Downstream, downstream),
        ] {
            self.subscriber_bytes
                .get_or_create(&SubscriberLabel {
                    subscriber: subscriber.to_string(),
                    direction: direction.name(),
                })
                .inc_by(n);
        }
    }

    /// Adds bytes to a subscriber's count on an access link.
    pub fn add_subscriber_link_bytes(&self, subscriber: &str, link: Link, n: u64) {
        self.subscriber_link_bytes
            .get_or_create(&SubscriberLinkLabel {
                subscriber: subscriber.to_string(),
                link: link.name(),
            })
            .inc_by(n);
    }

    /// Adds bytes to an access link.
    pub fn add_link_bytes(&self, link: Link, upstream: u64, downstream: u64) {
        for (direction, n) in [
            (Direction::Upstream, upstream),
            (Direction::Downstream, downstream),
        ] {
            self.link_bytes
                .get_or_create(&LinkLabel {
                    link: link.name(),
                    direction: direction.name(),
                })
                .inc_by(n);
        }
    }

    /// Renders the registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        admin::render(&self.registry)
    }
}
