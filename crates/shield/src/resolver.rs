//! One query in, at most one answer out: access control, the blocking
//! policy, the cache, forwarding, CNAME-chain checks, EDNS and EDE,
//! truncation. No sockets here besides the upstream forwarder's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::sync::Notify;

use crate::cache::{Cache, Key, TtlPolicy};
use crate::config::Config;
use crate::metrics::{Metrics, UpstreamLabel};
use crate::policy::{Action, Decision, Policy, Snapshot};
use crate::upstream::{Upstreams, EDNS_PAYLOAD};

/// RFC 8914 INFO-CODEs used here besides the lists' own.
const EDE_NOT_SUPPORTED: u16 = 21;
const EDE_NO_REACHABLE_AUTHORITY: u16 = 22;
const EDE_NOT_AUTHORITATIVE: u16 = 20;

/// Where a query came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// A zone whose primary may NOTIFY us.
#[derive(Debug)]
pub(crate) struct NotifyTarget {
    pub(crate) primary: IpAddr,
    pub(crate) zone: String,
    pub(crate) wake: Arc<Notify>,
}

/// Everything a query needs.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) policy: Arc<Policy>,
    pub(crate) cache: Cache,
    pub(crate) upstreams: Upstreams,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ttl: TtlPolicy,
    pub(crate) notify: Vec<NotifyTarget>,
}

/// The parts of the query the answer copies.
struct Ctx {
    id: u16,
    rd: bool,
    cd: bool,
    query: Query,
    /// Client's EDNS: (UDP payload size, DO bit).
    edns: Option<(u16, bool)>,
    max_len: usize,
}

impl Ctx {
    fn from_query(m: &Message, transport: Transport) -> Option<Self> {
        let query = m.queries.first()?.clone();
        let edns = m
            .edns
            .as_ref()
            .map(|e| (e.max_payload(), e.flags().dnssec_ok));
        let max_len = match (transport, edns) {
            (Transport::Tcp, _) => 65_535,
            (Transport::Udp, None) => 512,
            (Transport::Udp, Some((p, _))) => usize::from(p.clamp(512, EDNS_PAYLOAD)),
        };
        Some(Self {
            id: m.metadata.id,
            rd: m.metadata.recursion_desired,
            cd: m.metadata.checking_disabled,
            query,
            edns,
            max_len,
        })
    }

    fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.1)
    }

    /// Encodes an answer; truncated (TC, question only) if too long.
    fn answer(
        &self,
        rcode: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
        ede: Option<(u16, &str)>,
    ) -> Option<Vec<u8>> {
        let mut m = Message::response(self.id, OpCode::Query);
        m.metadata.recursion_desired = self.rd;
        m.metadata.recursion_available = true;
        m.metadata.checking_disabled = self.cd;
        m.metadata.response_code = rcode;
        m.add_query(self.query.clone());
        m.answers = answers;
        m.authorities = authorities;
        if let Some((_, dnssec_ok)) = self.edns {
            let mut e = Edns::new();
            e.set_max_payload(EDNS_PAYLOAD);
            e.set_dnssec_ok(dnssec_ok);
            if let Some((code, text)) = ede {
                let mut data = code.to_be_bytes().to_vec();
                data.extend_from_slice(text.as_bytes());
                e.options_mut().insert(EdnsOption::Unknown(15, data));
            }
            m.set_edns(e);
        }
        let bytes = m.to_vec().ok()?;
        if bytes.len() <= self.max_len {
            return Some(bytes);
        }
        let mut t = m.truncate();
        t.metadata.truncation = true;
        t.to_vec().ok()
    }
}

/// A minimal answer from the header and question only: used for RRL slip
/// (TC set, no OPT, never larger than the query) and errors.
pub(crate) fn short_answer(query: &[u8], rcode: ResponseCode, tc: bool) -> Option<Vec<u8>> {
    let m = Message::from_vec(query).ok()?;
    if m.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut r = Message::response(m.metadata.id, m.metadata.op_code);
    r.metadata.recursion_desired = m.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.response_code = rcode;
    r.metadata.truncation = tc;
    r.queries = m.queries;
    r.to_vec().ok()
}

/// Lowercase, no final dot: how the lists store names.
pub(crate) fn list_name(q: &hickory_proto::rr::Name) -> String {
    let mut s = q.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// The first CNAME target in `answers` that the policy blocks.
fn cname_block(snap: &Snapshot, answers: &[Record]) -> Option<(Action, usize)> {
    answers.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => match snap.decide(&list_name(&c.0)) {
            Decision::Block { action, list } => Some((action, list)),
            Decision::Pass => None,
        },
        _ => None,
    })
}

impl Shared {
    /// Answers one query. `None`: send nothing.
    pub(crate) async fn handle(
        &self,
        bytes: &[u8],
        client: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let Ok(m) = Message::from_vec(bytes) else {
            // Never answer what is not a query; FORMERR otherwise, if the
            // header is readable.
            if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
                return None;
            }
            self.metrics.answer("formerr");
            let id = u16::from_be_bytes([bytes[0], bytes[1]]);
            let mut r = Message::response(id, OpCode::Query);
            r.metadata.response_code = ResponseCode::FormErr;
            return r.to_vec().ok();
        };
        if m.metadata.message_type != MessageType::Query {
            return None;
        }
        if m.metadata.op_code == OpCode::Notify {
            return self.on_notify(&m, client.ip());
        }
        let Some(ctx) = Ctx::from_query(&m, transport) else {
            self.metrics.answer("formerr");
            return short_answer(bytes, ResponseCode::FormErr, false);
        };
        if m.metadata.op_code != OpCode::Query {
            self.metrics.answer("notimp");
            return ctx.answer(ResponseCode::NotImp, vec![], vec![], None);
        }
        if m.queries.len() != 1 {
            self.metrics.answer("formerr");
            return ctx.answer(ResponseCode::FormErr, vec![], vec![], None);
        }
        if !self.config.is_subscriber(client.ip()) {
            self.metrics.answer("refused");
            return ctx.answer(ResponseCode::Refused, vec![], vec![], None);
        }
        let qtype = ctx.query.query_type();
        match qtype {
            RecordType::ANY if self.config.limits.refuse_any => {
                self.metrics.answer("any_refused");
                return ctx.answer(
                    ResponseCode::Refused,
                    vec![],
                    vec![],
                    Some((EDE_NOT_SUPPORTED, "ANY is not answered (RFC 8482)")),
                );
            }
            RecordType::AXFR | RecordType::IXFR => {
                self.metrics.answer("refused");
                return ctx.answer(
                    ResponseCode::Refused,
                    vec![],
                    vec![],
                    Some((EDE_NOT_AUTHORITATIVE, "zone transfers are not offered")),
                );
            }
            _ => {}
        }
        let name = list_name(ctx.query.name());
        let snap = self.policy.snapshot();
        if let Decision::Block { action, list } = snap.decide(&name) {
            return self.blocked(&ctx, &snap, action, list, client.ip());
        }
        let now = Instant::now();
        let key = Key {
            name: name.into_boxed_str(),
            qtype: u16::from(qtype),
            qclass: u16::from(ctx.query.query_class()),
            flags: u8::from(ctx.cd) | (u8::from(ctx.dnssec_ok()) << 1),
        };
        if let Some(e) = self.cache.get(&key, now) {
            if let Some((action, list)) = cname_block(&snap, &e.answers) {
                return self.blocked(&ctx, &snap, action, list, client.ip());
            }
            self.metrics.answer("cache");
            return ctx.answer(
                e.rcode,
                e.aged(now, &e.answers),
                e.aged(now, &e.authorities),
                None,
            );
        }
        let started = Instant::now();
        match self
            .upstreams
            .resolve(&ctx.query, ctx.dnssec_ok(), ctx.cd)
            .await
        {
            Ok((resp, _)) => {
                self.metrics
                    .upstream_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.cache.insert(key, &resp, &self.ttl, Instant::now());
                // The lists may have changed while we waited.
                let snap = self.policy.snapshot();
                if let Some((action, list)) = cname_block(&snap, &resp.answers) {
                    return self.blocked(&ctx, &snap, action, list, client.ip());
                }
                self.metrics.answer("upstream");
                let rcode = resp.metadata.response_code;
                ctx.answer(rcode, resp.answers, resp.authorities, None)
            }
            Err(e) => {
                self.metrics
                    .upstream_failures
                    .get_or_create(&UpstreamLabel {
                        upstream: "all".into(),
                    })
                    .inc();
                tracing::debug!("upstream: {e}");
                self.metrics.answer("servfail");
                ctx.answer(
                    ResponseCode::ServFail,
                    vec![],
                    vec![],
                    Some((EDE_NO_REACHABLE_AUTHORITY, "no upstream answered")),
                )
            }
        }
    }

    fn blocked(
        &self,
        ctx: &Ctx,
        snap: &Snapshot,
        action: Action,
        list: usize,
        client: IpAddr,
    ) -> Option<Vec<u8>> {
        let l = &snap.lists[list];
        self.metrics.blocked(&l.name, action.as_str(), client);
        self.metrics.answer("blocked");
        let ede = Some((l.ede.code(), &*l.name));
        let ttl = self.config.block_ttl_secs;
        let owner = ctx.query.name().clone();
        let class_in = ctx.query.query_class() == DNSClass::IN;
        match action {
            Action::Drop => {
                self.metrics.drop_reason("action_drop");
                None
            }
            Action::Passthru => None,
            Action::Nxdomain => ctx.answer(ResponseCode::NXDomain, vec![], vec![], ede),
            Action::Nodata => ctx.answer(ResponseCode::NoError, vec![], vec![], ede),
            Action::Redirect => {
                let rdata = match ctx.query.query_type() {
                    RecordType::A if class_in => Some(RData::A(A(self.config.warning_ipv4))),
                    RecordType::AAAA if class_in => {
                        self.config.warning_ipv6.map(|a| RData::AAAA(AAAA(a)))
                    }
                    _ => None,
                };
                let answers = rdata
                    .map(|d| vec![Record::from_rdata(owner, ttl, d)])
                    .unwrap_or_default();
                ctx.answer(ResponseCode::NoError, answers, vec![], ede)
            }
        }
    }

    fn on_notify(&self, m: &Message, from: IpAddr) -> Option<Vec<u8>> {
        let q = m.queries.first()?;
        let zone = list_name(q.name());
        let mut r = Message::response(m.metadata.id, OpCode::Notify);
        r.add_query(q.clone());
        let from = crate::config::canonical_ip(from);
        match self
            .notify
            .iter()
            .find(|t| t.zone == zone && t.primary == from)
        {
            Some(t) => {
                r.metadata.authoritative = true;
                t.wake.notify_one();
                tracing::info!(zone, %from, "NOTIFY: refreshing the zone");
            }
            None => r.metadata.response_code = ResponseCode::Refused,
        }
        r.to_vec().ok()
    }
}
