//! The HAG's reports to ops (`[telemetry]`): every period, the share of its
//! connections to the internet that failed, and its view of each
//! subscriber it serves (connections open, MPTCP subflows per access link,
//! retransmissions, when it last heard from it). With it ops tells a home
//! that is silent everywhere (off) from one whose reports alone do not
//! arrive (the HAG still carries its traffic), and the HAG's upstream from
//! the access network.
//!
//! [`View`] is filled by the connections (opened, sampled every second by
//! the relay's subflow sampler, closed); [`run`] takes it every period and
//! posts it, signed with the HAG's token, split in reports of at most
//! [`telemetry::hag::MAX_SUBSCRIBERS`]. Each report's `sent_at_ms` is
//! strictly later than the one before, which is what lets ops refuse a
//! replayed one. A report that could not be delivered is counted and not
//! kept: the next one says how things are now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use telemetry::hag::{HagReport, SubscriberView, MAX_SUBSCRIBERS};
use tracing::{debug, warn};

use crate::config::Config;
use crate::server::State;

/// A subscriber the HAG has not heard from for this long, with nothing
/// open, is no longer listed.
const FORGET_AFTER_MS: u64 = 30 * 60_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One open connection's last sample.
#[derive(Clone, Copy, Debug, Default)]
struct Live {
    dsl: u32,
    lte: u32,
    retrans: u64,
}

#[derive(Debug, Default)]
struct Sub {
    open: u32,
    live: HashMap<u64, Live>,
    /// Retransmissions not reported yet.
    retrans: u64,
    last_seen_ms: u64,
}

/// Every subscriber's connections as the HAG sees them now.
#[derive(Debug, Default)]
pub(crate) struct View {
    subs: Mutex<HashMap<String, Sub>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl View {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Sub>) -> R) -> R {
        f(&mut self.subs.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// `subscriber` was heard from (a connection it proved was its own,
    /// whatever became of it).
    pub(crate) fn touch(&self, subscriber: &str) {
        let now = now_ms();
        self.with(|m| {
            let s = m.entry(subscriber.to_owned()).or_default();
            s.last_seen_ms = s.last_seen_ms.max(now);
        });
    }

    /// A connection of `subscriber` was admitted; returns its id.
    pub(crate) fn open(&self, subscriber: &str) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = now_ms();
        self.with(|m| {
            let s = m.entry(subscriber.to_owned()).or_default();
            s.open += 1;
            s.last_seen_ms = s.last_seen_ms.max(now);
        });
        id
    }

    /// One sample of connection `id`'s live subflows; `link_of` maps a
    /// subflow's remote (the CPE's) address to its access link.
    pub(crate) fn sample(
        &self,
        subscriber: &str,
        id: u64,
        subflows: &[mptcp_sock::info::SubflowInfo],
        config: &Config,
    ) {
        let now = now_ms();
        let mut live = Live::default();
        let mut heard: Option<u64> = None;
        for f in subflows {
            match config.link_of(f.remote.ip().to_canonical()) {
                Some(hybrid::Link::Dsl) => live.dsl += 1,
                Some(hybrid::Link::Lte) => live.lte += 1,
                None => {}
            }
            live.retrans += u64::from(f.total_retrans);
            let at = now.saturating_sub(u64::from(f.last_recv_ms));
            heard = Some(heard.map_or(at, |h| h.max(at)));
        }
        self.with(|m| {
            let Some(s) = m.get_mut(subscriber) else {
                return;
            };
            let before = s.live.insert(id, live).unwrap_or_default();
            s.retrans += live.retrans.saturating_sub(before.retrans);
            if let Some(h) = heard {
                s.last_seen_ms = s.last_seen_ms.max(h);
            }
        });
    }

    /// Connection `id` of `subscriber` ended.
    pub(crate) fn close(&self, subscriber: &str, id: u64) {
        let now = now_ms();
        self.with(|m| {
            if let Some(s) = m.get_mut(subscriber) {
                s.open = s.open.saturating_sub(1);
                s.live.remove(&id);
                s.last_seen_ms = s.last_seen_ms.max(now);
            }
        });
    }

    /// Every subscriber's view now (retransmissions since the last take),
    /// forgetting those long idle.
    pub(crate) fn take(&self, now_ms: u64) -> Vec<SubscriberView> {
        self.with(|m| {
            m.retain(|_, s| s.open > 0 || now_ms.saturating_sub(s.last_seen_ms) < FORGET_AFTER_MS);
            let mut out: Vec<SubscriberView> = m
                .iter_mut()
                .map(|(name, s)| {
                    let (dsl, lte) = s
                        .live
                        .values()
                        .fold((0, 0), |a, l| (a.0 + l.dsl, a.1 + l.lte));
                    SubscriberView {
                        subscriber: name.clone(),
                        subflows_dsl: dsl,
                        subflows_lte: lte,
                        connections: s.open,
                        retransmits: std::mem::take(&mut s.retrans),
                        last_seen_ms: s.last_seen_ms,
                    }
                })
                .collect();
            out.sort_by(|a, b| a.subscriber.cmp(&b.subscriber));
            out
        })
    }
}

/// The subscribers whose mobile bytes are waived (recorded apart, not
/// billed), as ops last answered; nobody once the answer's validity ran out
/// without a new one.
#[derive(Debug, Default)]
pub(crate) struct Waivers {
    inner: std::sync::RwLock<(
        std::collections::HashSet<String>,
        Option<std::time::Instant>,
    )>,
}

impl Waivers {
    /// Whether `subscriber`'s budget is waived now.
    pub(crate) fn is_waived(&self, subscriber: &str) -> bool {
        let g = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        g.1.is_some_and(|until| std::time::Instant::now() < until) && g.0.contains(subscriber)
    }

    /// Takes ops' answer.
    pub(crate) fn set(&self, p: telemetry::HagPolicy) {
        let until = std::time::Instant::now() + Duration::from_secs(u64::from(p.valid_s));
        let mut g = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let names: std::collections::HashSet<String> = p.waived.into_iter().collect();
        if names != g.0 {
            tracing::info!(
                waived = names.len(),
                "ops: subscribers whose mobile bytes are waived"
            );
        }
        *g = (names, Some(until));
    }
}

/// The reports for one period: the upstream counts in the first, the
/// subscribers split in parts of at most [`MAX_SUBSCRIBERS`] (one report
/// when there are none). `last_ms` is the previous report's date: each
/// report is dated strictly after it.
pub(crate) fn build(
    name: &str,
    connects: u64,
    errors: u64,
    subs: &[SubscriberView],
    now_ms: u64,
    last_ms: &mut u64,
) -> Vec<HagReport> {
    let mut parts: Vec<&[SubscriberView]> = subs.chunks(MAX_SUBSCRIBERS).collect();
    if parts.is_empty() {
        parts.push(&[]);
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(n, chunk)| {
            let at = now_ms.max(*last_ms + 1);
            *last_ms = at;
            HagReport {
                schema: telemetry::SCHEMA,
                hag: name.to_owned(),
                sent_at_ms: at,
                upstream_connects: if n == 0 { connects } else { 0 },
                upstream_errors: if n == 0 { errors.min(connects) } else { 0 },
                subscribers: chunk.to_vec(),
            }
        })
        .collect()
}

/// Posts one report; the result's label, and ops' policy if it answered
/// with one signed with the HAG's key.
async fn deliver(
    t: &crate::config::Telemetry,
    key: &telemetry::Key,
    body: Bytes,
) -> (&'static str, Option<telemetry::HagPolicy>) {
    let stream = match tokio::time::timeout(t.timeout, tokio::net::TcpStream::connect(t.ops)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(ops = %t.ops, "connecting to ops: {e}");
            return ("failed", None);
        }
        Err(_) => {
            debug!(ops = %t.ops, "connecting to ops: no answer within {:?}", t.timeout);
            return ("failed", None);
        }
    };
    match ops_client::post_report(
        stream,
        t.tls.as_ref(),
        &t.host,
        "/api/v1/hag-reports",
        key,
        body,
        t.timeout,
    )
    .await
    {
        Ok(a) if a.status.is_success() => {
            if a.body.is_empty() {
                return ("delivered", None);
            }
            if !a.signed_by(key) {
                warn!("ops' answer to the HAG's report is not signed with its key: ignored");
                return ("delivered", None);
            }
            match telemetry::HagPolicy::parse(&a.body) {
                Ok(p) if p.hag == t.name => ("delivered", Some(p)),
                Ok(p) => {
                    warn!(hag = %p.hag, "ops' policy names another HAG: ignored");
                    ("delivered", None)
                }
                Err(e) => {
                    warn!("ops' policy: {e}: ignored");
                    ("delivered", None)
                }
            }
        }
        Ok(a) => {
            warn!(status = %a.status, "ops refused the HAG's report: {}", a.text());
            ("refused", None)
        }
        // A certificate that is not trusted or not for the name is a
        // configuration to mend: said at every try, not only in debug.
        Err(e @ ops_client::Error::Tls(_)) => {
            warn!("posting to ops: {e}; check [telemetry] tls, ca and host");
            ("failed", None)
        }
        Err(e) => {
            debug!("posting to ops: {e}");
            ("failed", None)
        }
    }
}

/// Posts the HAG's report every period while `[telemetry]` is configured
/// (a reload that adds, changes or removes it applies at the next period).
pub(crate) async fn run(st: Arc<State>) {
    let m = st.metrics.clone();
    let (mut connects, mut errors) = (m.upstream_connects.get(), m.upstream_errors.get());
    let mut last_ms = 0u64;
    let mut key: Option<(String, telemetry::Key)> = None;
    loop {
        let c = st.config();
        let Some(t) = c.telemetry.clone() else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        tokio::time::sleep(t.period).await;
        if key.as_ref().is_none_or(|(tok, _)| *tok != t.token) {
            key = Some((t.token.clone(), telemetry::key(t.token.as_bytes())));
        }
        let Some((_, k)) = &key else { continue };
        let (now_c, now_e) = (m.upstream_connects.get(), m.upstream_errors.get());
        let (dc, de) = (now_c - connects, now_e - errors);
        (connects, errors) = (now_c, now_e);
        let now = now_ms();
        let subs = st.view.take(now);
        for r in build(&t.name, dc, de, &subs, now, &mut last_ms) {
            let body = match serde_json::to_vec(&r) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    warn!("encoding the HAG's report: {e}");
                    continue;
                }
            };
            let (result, policy) = deliver(&t, k, body).await;
            m.ops_report(result);
            if let Some(p) = policy {
                st.waivers.set(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            "listen = \"10.66.0.1:5124\"\nsubscriber_prefixes = [\"10.64.0.0/16\"]\n\
             [links]\ndsl = [\"10.64.1.0/24\"]\nlte = [\"10.64.2.0/24\"]\n",
        )
        .unwrap()
    }

    fn subflow(remote: &str, retrans: u32, last_recv_ms: u32) -> mptcp_sock::info::SubflowInfo {
        mptcp_sock::info::SubflowInfo {
            local: "10.66.0.1:5124".parse().unwrap(),
            remote: remote.parse().unwrap(),
            bytes_acked: 0,
            bytes_received: 0,
            rtt_us: 1_000,
            total_retrans: retrans,
            last_recv_ms,
            syn_data: false,
        }
    }

    #[test]
    fn the_view_counts_subflows_per_link_and_retransmissions_once() {
        let c = config();
        assert_eq!(
            c.link_of("10.64.2.7".parse().unwrap()),
            Some(hybrid::Link::Lte)
        );
        let v = View::default();
        let a = v.open("home-1");
        let b = v.open("home-1");
        v.sample(
            "home-1",
            a,
            &[
                subflow("10.64.1.2:40000", 3, 10),
                subflow("10.64.2.2:40001", 1, 10),
            ],
            &c,
        );
        v.sample("home-1", b, &[subflow("10.64.2.2:40002", 0, 10)], &c);
        let now = now_ms();
        let t = v.take(now);
        assert_eq!(t.len(), 1);
        let s = &t[0];
        assert_eq!((s.subflows_dsl, s.subflows_lte, s.connections), (1, 2, 2));
        assert_eq!(s.retransmits, 4);
        assert!(now - s.last_seen_ms < 1_000);
        // A later sample adds only what is new; a closed one leaves.
        v.sample(
            "home-1",
            a,
            &[
                subflow("10.64.1.2:40000", 5, 10),
                subflow("10.64.2.2:40001", 1, 10),
            ],
            &c,
        );
        v.close("home-1", b);
        let s = &v.take(now_ms())[0];
        assert_eq!((s.subflows_dsl, s.subflows_lte, s.connections), (1, 1, 1));
        assert_eq!(s.retransmits, 2);
        assert_eq!(v.take(now_ms())[0].retransmits, 0);
        // Nothing open and not heard from for long: forgotten.
        v.close("home-1", a);
        assert_eq!(v.take(now_ms()).len(), 1);
        assert!(v.take(now_ms() + FORGET_AFTER_MS + 1_000).is_empty());
        // A sample of an unknown subscriber changes nothing.
        v.sample("home-9", 99, &[subflow("10.64.1.9:1", 1, 0)], &c);
        assert!(v.take(now_ms()).is_empty());
    }

    #[test]
    fn reports_are_split_dated_strictly_later_and_carry_the_upstream_once() {
        let subs: Vec<SubscriberView> = (0..MAX_SUBSCRIBERS + 3)
            .map(|i| SubscriberView {
                subscriber: format!("home-{i}"),
                subflows_dsl: 1,
                subflows_lte: 0,
                connections: 1,
                retransmits: 0,
                last_seen_ms: 1,
            })
            .collect();
        let mut last = 5_000;
        let r = build("hag-1", 100, 7, &subs, 4_000, &mut last);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].subscribers.len(), MAX_SUBSCRIBERS);
        assert_eq!(r[1].subscribers.len(), 3);
        assert_eq!((r[0].upstream_connects, r[0].upstream_errors), (100, 7));
        assert_eq!((r[1].upstream_connects, r[1].upstream_errors), (0, 0));
        assert_eq!((r[0].sent_at_ms, r[1].sent_at_ms), (5_001, 5_002));
        assert_eq!(last, 5_002);
        for x in &r {
            let body = serde_json::to_vec(x).unwrap();
            assert_eq!(&HagReport::parse(&body).unwrap(), x);
        }
        let empty = build("hag-1", 0, 0, &[], 9_000, &mut last);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].sent_at_ms, 9_000);
    }
}
