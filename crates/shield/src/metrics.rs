//! The shield's Prometheus metrics, in an explicit registry, and the count
//! of distinct protected subscribers per day.
//!
//! Distinct subscribers are counted as keyed hashes (SipHash with random
//! keys drawn each UTC day) of their addresses: the set and its keys are
//! dropped when the day changes, so no address, nor anything that could be
//! matched back to one, outlives the day.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label: one value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The value.
    pub kind: String,
}

/// Labels of a blocked query.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlockLabel {
    /// The list that decided.
    pub list: String,
    /// The action taken.
    pub action: String,
}

/// Label: a list.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListLabel {
    /// The list.
    pub list: String,
}

/// Label: an upstream server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    /// Its address.
    pub upstream: String,
}

#[derive(Debug)]
struct Daily {
    day: u64,
    keys: RandomState,
    seen: HashSet<u64>,
}

fn utc_day() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// Every metric the shield exports.
#[derive(Debug)]
pub struct Metrics {
    /// Registry rendered on `/metrics`.
    pub registry: Registry,
    /// Queries received, by transport (udp, tcp).
    pub queries: Family<KindLabel, Counter>,
    /// Answers by how they were made (cache, upstream, blocked, refused,
    /// servfail, formerr, notimp, any_refused).
    pub answers: Family<KindLabel, Counter>,
    /// Blocked queries by list and action.
    pub blocked: Family<BlockLabel, Counter>,
    /// Queries not answered, by reason (client_rate, rrl_drop, action_drop).
    pub dropped: Family<KindLabel, Counter>,
    /// Truncated answers sent by RRL slip.
    pub rrl_slipped: Counter,
    /// UDP bytes received.
    pub udp_bytes_in: Counter,
    /// UDP bytes sent.
    pub udp_bytes_out: Counter,
    /// Failed upstream queries, by upstream.
    pub upstream_failures: Family<UpstreamLabel, Counter>,
    /// Upstream answer time.
    pub upstream_seconds: Histogram,
    /// Cache entries.
    pub cache_entries: Gauge,
    /// Entries per list.
    pub list_entries: Family<ListLabel, Gauge>,
    /// Successful list loads or transfers, by list.
    pub list_updates: Family<ListLabel, Counter>,
    /// Seconds the last update of each list took, from the start of its
    /// transfer or read to the swap.
    pub list_update_seconds: Family<ListLabel, Gauge<f64, AtomicU64>>,
    /// Failed list loads or transfers, by list.
    pub list_update_failures: Family<ListLabel, Counter>,
    /// TCP connections open.
    pub tcp_connections: Gauge,
    /// TCP connections refused because the limit was reached.
    pub tcp_refused: Counter,
    /// Citizen reports received, by kind.
    pub reports: Family<KindLabel, Counter>,
    /// Warning pages served.
    pub warning_pages: Counter,
    /// Distinct subscribers that got at least one blocked answer today (UTC).
    pub protected_today: Gauge,
    /// The same, for the previous UTC day.
    pub protected_yesterday: Gauge,
    daily: Mutex<Daily>,
    answer_counters: Vec<(&'static str, Counter)>,
    query_counters: Vec<(&'static str, Counter)>,
}

const ANSWER_KINDS: [&str; 9] = [
    "cache",
    "upstream",
    "blocked",
    "refused",
    "servfail",
    "formerr",
    "notimp",
    "any_refused",
    "notify",
];

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("tandem_shield");
        let m = Self {
            registry: Registry::default(),
            queries: Family::default(),
            answers: Family::default(),
            blocked: Family::default(),
            dropped: Family::default(),
            rrl_slipped: Counter::default(),
            udp_bytes_in: Counter::default(),
            udp_bytes_out: Counter::default(),
            upstream_failures: Family::default(),
            upstream_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            cache_entries: Gauge::default(),
            list_entries: Family::default(),
            list_updates: Family::default(),
            list_update_seconds: Family::default(),
            list_update_failures: Family::default(),
            tcp_connections: Gauge::default(),
            tcp_refused: Counter::default(),
            reports: Family::default(),
            warning_pages: Counter::default(),
            protected_today: Gauge::default(),
            protected_yesterday: Gauge::default(),
            daily: Mutex::new(Daily {
                day: utc_day(),
                keys: RandomState::new(),
                seen: HashSet::new(),
            }),
            answer_counters: Vec::new(),
            query_counters: Vec::new(),
        };
        r.register(
            "queries",
            "DNS queries received, by transport",
            m.queries.clone(),
        );
        r.register(
            "answers",
            "DNS answers, by how they were made",
            m.answers.clone(),
        );
        r.register(
            "blocked_queries",
            "Blocked queries, by list and action",
            m.blocked.clone(),
        );
        r.register(
            "dropped_queries",
            "Queries not answered, by reason",
            m.dropped.clone(),
        );
        r.register(
            "rrl_slipped",
            "Truncated answers sent instead of rate-limited ones",
            m.rrl_slipped.clone(),
        );
        r.register(
            "udp_received_bytes",
            "UDP bytes received",
            m.udp_bytes_in.clone(),
        );
        r.register("udp_sent_bytes", "UDP bytes sent", m.udp_bytes_out.clone());
        r.register(
            "upstream_failures",
            "Upstream attempts that failed, by upstream (\"all\": no upstream answered a query)",
            m.upstream_failures.clone(),
        );
        r.register(
            "upstream_seconds",
            "Time to get an answer from the upstreams",
            m.upstream_seconds.clone(),
        );
        r.register(
            "cache_entries",
            "Entries in the answer cache",
            m.cache_entries.clone(),
        );
        r.register("list_entries", "Names in each list", m.list_entries.clone());
        r.register(
            "list_updates",
            "List loads and zone transfers applied",
            m.list_updates.clone(),
        );
        r.register(
            "list_update_seconds",
            "Time the last update of each list took, from the start of its transfer or read to the swap",
            m.list_update_seconds.clone(),
        );
        r.register(
            "list_update_failures",
            "List loads and zone transfers that failed",
            m.list_update_failures.clone(),
        );
        r.register(
            "tcp_connections",
            "TCP connections open",
            m.tcp_connections.clone(),
        );
        r.register(
            "tcp_refused",
            "TCP connections closed at once: limit reached",
            m.tcp_refused.clone(),
        );
        r.register(
            "reports",
            "Citizen reports received, by kind",
            m.reports.clone(),
        );
        r.register(
            "warning_pages",
            "Warning pages served",
            m.warning_pages.clone(),
        );
        r.register(
            "protected_subscribers_today",
            "Distinct subscribers that got a blocked answer this UTC day",
            m.protected_today.clone(),
        );
        r.register(
            "protected_subscribers_yesterday",
            "Distinct subscribers that got a blocked answer the previous UTC day",
            m.protected_yesterday.clone(),
        );
        let answer_counters = ANSWER_KINDS
            .iter()
            .map(|k| {
                let c = m
                    .answers
                    .get_or_create(&KindLabel { kind: (*k).into() })
                    .clone();
                (*k, c)
            })
            .collect();
        let query_counters = ["udp", "tcp"]
            .iter()
            .map(|k| {
                let c = m
                    .queries
                    .get_or_create(&KindLabel { kind: (*k).into() })
                    .clone();
                (*k, c)
            })
            .collect();
        Self {
            registry: r,
            answer_counters,
            query_counters,
            ..m
        }
    }
}

impl Metrics {
    /// Counts an answer kind (a fixed set, resolved without allocating).
    pub fn answer(&self, kind: &'static str) {
        match self.answer_counters.iter().find(|(k, _)| *k == kind) {
            Some((_, c)) => {
                c.inc();
            }
            None => {
                self.answers
                    .get_or_create(&KindLabel { kind: kind.into() })
                    .inc();
            }
        }
    }

    /// Counts a query by transport.
    pub fn query(&self, transport: &'static str) {
        match self.query_counters.iter().find(|(k, _)| *k == transport) {
            Some((_, c)) => {
                c.inc();
            }
            None => {
                self.queries
                    .get_or_create(&KindLabel {
                        kind: transport.into(),
                    })
                    .inc();
            }
        }
    }

    /// Counts a dropped query.
    pub fn drop_reason(&self, kind: &str) {
        self.dropped
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// Counts a blocked query and its subscriber.
    pub fn blocked(&self, list: &str, action: &str, client: IpAddr) {
        self.blocked
            .get_or_create(&BlockLabel {
                list: list.into(),
                action: action.into(),
            })
            .inc();
        let mut d = self.daily.lock().unwrap_or_else(|e| e.into_inner());
        self.roll(&mut d);
        let h = d.keys.hash_one(client);
        d.seen.insert(h);
        self.protected_today.set(d.seen.len() as i64);
    }

    fn roll(&self, d: &mut Daily) {
        let today = utc_day();
        if d.day != today {
            let n = if today == d.day + 1 { d.seen.len() } else { 0 };
            self.protected_yesterday.set(n as i64);
            d.day = today;
            d.keys = RandomState::new();
            d.seen = HashSet::new();
            self.protected_today.set(0);
        }
    }

    /// Forgets yesterday's hashes when the day changed (called by a timer,
    /// so that nothing is kept through a quiet night).
    pub fn roll_day(&self) {
        let mut d = self.daily.lock().unwrap_or_else(|e| e.into_inner());
        self.roll(&mut d);
    }

    /// Renders the registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        admin::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_subscribers_are_counted_once() {
        let m = Metrics::default();
        for _ in 0..3 {
            m.blocked("feed", "redirect", "10.0.0.1".parse().unwrap());
        }
        m.blocked("feed", "nxdomain", "10.0.0.2".parse().unwrap());
        assert_eq!(m.protected_today.get(), 2);
        let text = m.render();
        assert!(
            text.contains("tandem_shield_protected_subscribers_today 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "tandem_shield_blocked_queries_total{list=\"feed\",action=\"redirect\"} 3"
            ),
            "{text}"
        );
    }
}
