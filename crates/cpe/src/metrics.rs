//! The CPE's Prometheus metrics, in an explicit registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use hybrid::{Direction, Link};

use crate::health::Transition;

/// Label: a link and a direction of traffic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabel {
    /// [`Link::name`]: "dsl" or "lte".
    pub link: &'static str,
    /// [`Direction::name`]: "upstream" (sent by the CPE) or "downstream"
    /// (received).
    pub direction: &'static str,
}

impl BytesLabel {
    fn new(link: Link, direction: Direction) -> Self {
        Self {
            link: link.name(),
            direction: direction.name(),
        }
    }
}

/// Label: a link.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabel {
    /// [`Link::name`]: "dsl" or "lte".
    pub link: &'static str,
}

/// Label: a link and the state it entered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabel {
    /// [`Link::name`]: "dsl" or "lte".
    pub link: &'static str,
    /// [`Transition::name`]: "up" or "down".
    pub to: &'static str,
}

/// A gauge holding a float.
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

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
    pub link_bytes: Family<BytesLabel, Counter>,
    /// Connections that used more than one subflow.
    pub multipath_connections: Counter,
    /// Connections whose Convert message went in the SYN (Fast Open).
    pub syn_data: Counter,
    /// 1 while a link answers its probes.
    pub link_up: Family<LinkLabel, Gauge>,
    /// Smoothed probe round-trip time per link.
    pub link_rtt_seconds: Family<LinkLabel, FloatGauge>,
    /// Probe round-trip time mean deviation per link.
    pub link_jitter_seconds: Family<LinkLabel, FloatGauge>,
    /// Share of the last 50 probes that got no reply, per link.
    pub link_loss_ratio: Family<LinkLabel, FloatGauge>,
    /// Link state changes.
    pub link_transitions: Family<TransitionLabel, Counter>,
    /// Bytes through each WAN interface (all traffic, kernel interface
    /// counters), "downstream" received, "upstream" sent.
    pub wan_bytes: Family<BytesLabel, Counter>,
    /// 1 while the mobile link is standby (backup priority).
    pub mobile_standby: Gauge,
    /// 1 while the fixed line is full and the mobile link takes the
    /// overflow (`priority` mode).
    pub overflow: Gauge,
    /// The mobile budget per period, bytes.
    pub budget_limit_bytes: Gauge,
    /// Mobile bytes used this period.
    pub budget_used_bytes: Gauge,
    /// 1 once the budget is spent (or its count could not be read).
    pub budget_exhausted: Gauge,
    /// 1 while ops waives the budget (a line or cabinet incident).
    pub budget_waiver: Gauge,
    /// Bytes carried this period while waived (not charged).
    pub budget_waived_bytes: Gauge,
    /// Extra bytes granted by the operator now (in the limit).
    pub budget_extra_bytes: Gauge,
    /// Reports to ops by outcome: `delivered`, `refused` (ops will never
    /// take it: dropped), `dropped` (the queue was full).
    pub reports: Family<ResultLabel, Counter>,
    /// Deliveries that reached no ops over either link (the report stays
    /// queued).
    pub report_failures: Counter,
    /// Reports waiting for ops.
    pub report_queue: Gauge,
}

/// Label: what became of a report.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `delivered`, `refused` or `dropped`.
    pub result: &'static str,
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
            link_up: Family::default(),
            link_rtt_seconds: Family::default(),
            link_jitter_seconds: Family::default(),
            link_loss_ratio: Family::default(),
            link_transitions: Family::default(),
            wan_bytes: Family::default(),
            mobile_standby: Gauge::default(),
            overflow: Gauge::default(),
            budget_limit_bytes: Gauge::default(),
            budget_used_bytes: Gauge::default(),
            reports: Family::default(),
            report_failures: Counter::default(),
            report_queue: Gauge::default(),
            budget_exhausted: Gauge::default(),
            budget_waiver: Gauge::default(),
            budget_waived_bytes: Gauge::default(),
            budget_extra_bytes: Gauge::default(),
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
        registry.register(
            "link_up",
            "1 while the link answers its probes",
            m.link_up.clone(),
        );
        registry.register(
            "link_rtt_seconds",
            "Smoothed probe round-trip time",
            m.link_rtt_seconds.clone(),
        );
        registry.register(
            "link_jitter_seconds",
            "Probe round-trip time mean deviation",
            m.link_jitter_seconds.clone(),
        );
        registry.register(
            "link_loss_ratio",
            "Share of the last 50 probes without a reply",
            m.link_loss_ratio.clone(),
        );
        registry.register(
            "link_transitions",
            "Link state changes",
            m.link_transitions.clone(),
        );
        registry.register(
            "wan_bytes",
            "Bytes through each WAN interface (interface counters)",
            m.wan_bytes.clone(),
        );
        registry.register(
            "mobile_standby",
            "1 while the mobile link is standby (backup priority)",
            m.mobile_standby.clone(),
        );
        registry.register(
            "overflow",
            "1 while the fixed line is full and the mobile link takes the overflow",
            m.overflow.clone(),
        );
        registry.register(
            "budget_limit_bytes",
            "Mobile data budget per period",
            m.budget_limit_bytes.clone(),
        );
        registry.register(
            "budget_used_bytes",
            "Mobile bytes used this period",
            m.budget_used_bytes.clone(),
        );
        registry.register(
            "budget_exhausted",
            "1 once the mobile budget is spent",
            m.budget_exhausted.clone(),
        );
        registry.register(
            "budget_waiver",
            "1 while ops waives the mobile budget (a line or cabinet incident on this home)",
            m.budget_waiver.clone(),
        );
        registry.register(
            "budget_waived_bytes",
            "Mobile bytes carried this period while the budget was waived (not charged)",
            m.budget_waived_bytes.clone(),
        );
        registry.register(
            "budget_extra_bytes",
            "Extra mobile bytes granted by the operator now (included in the limit)",
            m.budget_extra_bytes.clone(),
        );
        registry.register("reports", "Reports to ops by outcome", m.reports.clone());
        registry.register(
            "report_failures",
            "Report deliveries that reached no ops over either link",
            m.report_failures.clone(),
        );
        registry.register(
            "report_queue",
            "Reports waiting for ops",
            m.report_queue.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Renders the registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        admin::render(&self.registry)
    }

    /// Adds payload bytes to a link's counter.
    pub fn add_link_bytes(&self, link: Link, direction: Direction, n: u64) {
        self.link_bytes
            .get_or_create(&BytesLabel::new(link, direction))
            .inc_by(n);
    }

    fn link(l: Link) -> LinkLabel {
        LinkLabel { link: l.name() }
    }

    /// Sets a link's up/down gauge.
    pub fn set_link_up(&self, link: Link, up: bool) {
        self.link_up
            .get_or_create(&Self::link(link))
            .set(i64::from(up));
    }

    /// Sets a link's probe figures.
    pub fn set_link_health(&self, link: Link, rtt: Option<f64>, jitter: f64, loss: f64) {
        let l = Self::link(link);
        if let Some(r) = rtt {
            self.link_rtt_seconds.get_or_create(&l).set(r);
        }
        self.link_jitter_seconds.get_or_create(&l).set(jitter);
        self.link_loss_ratio.get_or_create(&l).set(loss);
    }

    /// Counts a state change.
    pub fn count_transition(&self, link: Link, to: Transition) {
        self.link_transitions
            .get_or_create(&TransitionLabel {
                link: link.name(),
                to: to.name(),
            })
            .inc();
    }

    /// Adds interface bytes (received: downstream, sent: upstream).
    pub fn add_wan_bytes(&self, link: Link, rx: u64, tx: u64) {
        for (direction, n) in [(Direction::Downstream, rx), (Direction::Upstream, tx)] {
            self.wan_bytes
                .get_or_create(&BytesLabel::new(link, direction))
                .inc_by(n);
        }
    }

    /// Sets the budget gauges.
    pub fn set_budget(&self, limit: u64, used: u64, exhausted: bool) {
        self.budget_limit_bytes
            .set(limit.min(i64::MAX as u64) as i64);
        self.budget_used_bytes.set(used.min(i64::MAX as u64) as i64);
        self.budget_exhausted.set(i64::from(exhausted));
    }

    /// Sets the gauges of ops' policy on the budget.
    pub fn set_budget_policy(&self, waiver: bool, waived: u64, extra: u64) {
        self.budget_waiver.set(i64::from(waiver));
        self.budget_waived_bytes
            .set(waived.min(i64::MAX as u64) as i64);
        self.budget_extra_bytes
            .set(extra.min(i64::MAX as u64) as i64);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_shared_names() {
        let m = Metrics::default();
        m.add_link_bytes(Link::Lte, Direction::Upstream, 7);
        m.add_wan_bytes(Link::Dsl, 3, 4);
        m.count_transition(Link::Dsl, Transition::Down);
        m.set_link_up(Link::Lte, true);
        let text = m.render();
        for line in [
            "tandem_cpe_link_bytes_total{link=\"lte\",direction=\"upstream\"} 7",
            "tandem_cpe_wan_bytes_total{link=\"dsl\",direction=\"downstream\"} 3",
            "tandem_cpe_wan_bytes_total{link=\"dsl\",direction=\"upstream\"} 4",
            "tandem_cpe_link_transitions_total{link=\"dsl\",to=\"down\"} 1",
            "tandem_cpe_link_up{link=\"lte\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
