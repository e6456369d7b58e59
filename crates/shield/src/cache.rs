//! The answer cache: upstream answers kept for their TTL, negative answers
//! (NXDOMAIN, NODATA) for the SOA's negative TTL (RFC 2308 §5), upstream
//! SERVFAIL briefly (RFC 2308 §7.1). Sharded mutexes, bounded entries.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};

const SHARDS: usize = 32;

/// What identifies a cached answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// Query name, lowercase.
    pub(crate) name: Box<str>,
    /// Query type.
    pub(crate) qtype: u16,
    /// Query class.
    pub(crate) qclass: u16,
    /// Checking disabled / DNSSEC OK (answers differ).
    pub(crate) flags: u8,
}

/// A cached answer.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) rcode: ResponseCode,
    pub(crate) answers: Vec<Record>,
    pub(crate) authorities: Vec<Record>,
    pub(crate) stored: Instant,
    pub(crate) expires: Instant,
}

impl Entry {
    /// Records with their TTL decreased by the time spent in the cache.
    pub(crate) fn aged(&self, now: Instant, records: &[Record]) -> Vec<Record> {
        let spent = now.saturating_duration_since(self.stored).as_secs() as u32;
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.ttl = r.ttl.saturating_sub(spent);
                r
            })
            .collect()
    }
}

/// TTL rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TtlPolicy {
    pub(crate) min_secs: u32,
    pub(crate) max_secs: u32,
    pub(crate) negative_max_secs: u32,
    pub(crate) servfail_secs: u32,
}

/// How long an upstream answer may be cached, or `None`.
pub(crate) fn cache_ttl(m: &Message, p: &TtlPolicy) -> Option<u32> {
    if m.metadata.truncation {
        return None;
    }
    let soa_neg = || {
        m.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
    };
    match m.metadata.response_code {
        ResponseCode::NoError if !m.answers.is_empty() => {
            let t = m.answers.iter().map(|r| r.ttl).min().unwrap_or(0);
            Some(t.clamp(p.min_secs, p.max_secs))
        }
        ResponseCode::NoError | ResponseCode::NXDomain => {
            // RFC 2308 §5: without an SOA, negative answers are not cached.
            soa_neg().map(|t| t.min(p.negative_max_secs))
        }
        ResponseCode::ServFail if p.servfail_secs > 0 => Some(p.servfail_secs),
        _ => None,
    }
}

/// The cache.
#[derive(Debug)]
pub(crate) struct Cache {
    shards: Vec<Mutex<HashMap<Key, Arc<Entry>>>>,
    per_shard: usize,
}

impl Cache {
    pub(crate) fn new(max_entries: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (max_entries / SHARDS).max(1),
        }
    }

    fn shard(&self, k: &Key) -> &Mutex<HashMap<Key, Arc<Entry>>> {
        let mut h = DefaultHasher::new();
        k.hash(&mut h);
        &self.shards[h.finish() as usize % SHARDS]
    }

    /// A live entry.
    pub(crate) fn get(&self, k: &Key, now: Instant) -> Option<Arc<Entry>> {
        let mut s = self.shard(k).lock().unwrap_or_else(|e| e.into_inner());
        let e = s.get(k)?;
        if e.expires > now {
            return Some(e.clone());
        }
        s.remove(k);
        None
    }

    /// Stores an upstream answer if its TTL allows.
    pub(crate) fn insert(&self, k: Key, m: &Message, p: &TtlPolicy, now: Instant) {
        let Some(ttl) = cache_ttl(m, p) else { return };
        if ttl == 0 {
            return;
        }
        let strip = |rs: &[Record]| -> Vec<Record> {
            rs.iter()
                .filter(|r| r.record_type() != RecordType::OPT)
                .cloned()
                .map(|mut r| {
                    r.ttl = r.ttl.min(p.max_secs);
                    r
                })
                .collect()
        };
        let e = Arc::new(Entry {
            rcode: m.metadata.response_code,
            answers: strip(&m.answers),
            authorities: strip(&m.authorities),
            stored: now,
            expires: now + Duration::from_secs(u64::from(ttl)),
        });
        let mut s = self.shard(&k).lock().unwrap_or_else(|e| e.into_inner());
        if s.len() >= self.per_shard && !s.contains_key(&k) {
            s.retain(|_, e| e.expires > now);
            if s.len() >= self.per_shard {
                let victims: Vec<Key> = s
                    .keys()
                    .take((self.per_shard / 8).max(1))
                    .cloned()
                    .collect();
                for v in victims {
                    s.remove(&v);
                }
            }
        }
        s.insert(k, e);
    }

    /// Entries now (live or not yet evicted).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::Name;

    const P: TtlPolicy = TtlPolicy {
        min_secs: 0,
        max_secs: 3600,
        negative_max_secs: 300,
        servfail_secs: 5,
    };

    fn msg(rcode: ResponseCode) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        m
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii("test.").unwrap(),
            ttl,
            RData::SOA(SOA::new(Name::root(), Name::root(), 1, 1, 1, 1, minimum)),
        )
    }

    #[test]
    fn ttl_rules_follow_rfc2308() {
        let mut m = msg(ResponseCode::NoError);
        m.answers.push(Record::from_rdata(
            Name::from_ascii("a.test.").unwrap(),
            7200,
            RData::A(A::new(1, 2, 3, 4)),
        ));
        assert_eq!(cache_ttl(&m, &P), Some(3600));
        let mut nx = msg(ResponseCode::NXDomain);
        assert_eq!(cache_ttl(&nx, &P), None, "no SOA: not cached");
        nx.authorities.push(soa(900, 120));
        assert_eq!(cache_ttl(&nx, &P), Some(120), "min(SOA TTL, MINIMUM)");
        let mut nodata = msg(ResponseCode::NoError);
        nodata.authorities.push(soa(900, 1000));
        assert_eq!(cache_ttl(&nodata, &P), Some(300), "capped");
        assert_eq!(cache_ttl(&msg(ResponseCode::ServFail), &P), Some(5));
        assert_eq!(cache_ttl(&msg(ResponseCode::Refused), &P), None);
    }

    #[test]
    fn entries_expire_and_are_bounded() {
        let c = Cache::new(64);
        let now = Instant::now();
        let mut m = msg(ResponseCode::NXDomain);
        m.authorities.push(soa(10, 10));
        for i in 0..500 {
            let k = Key {
                name: format!("n{i}.test").into(),
                qtype: 1,
                qclass: 1,
                flags: 0,
            };
            c.insert(k, &m, &P, now);
        }
        assert!(c.len() <= 64, "{}", c.len());
        let k = Key {
            name: "n499.test".into(),
            qtype: 1,
            qclass: 1,
            flags: 0,
        };
        assert!(c.get(&k, now).is_some());
        assert!(c.get(&k, now + Duration::from_secs(11)).is_none());
    }
}
