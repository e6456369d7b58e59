//! Admission limits: per subscriber (concurrent connections, new connections
//! per second, pending handshakes), per source address before a subscriber
//! is known (pending handshakes), and a rate limit on error replies.
//!
//! Every admitted unit is a guard that gives its slot back when dropped, so
//! no path can leak a slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(burst: f64) -> Self {
        Self {
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The configured limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LimitConfig {
    /// Connections open at once per subscriber.
    pub per_subscriber_connections: u32,
    /// New connections per second per subscriber (burst = 2 s worth).
    pub per_subscriber_rate: f64,
    /// Handshakes not yet answered per subscriber.
    pub per_subscriber_pending: u32,
    /// Connections not yet identified (no Convert message yet) per source
    /// address.
    pub per_source_pending: u32,
    /// Error replies per second, all clients together (burst = 1 s worth).
    pub error_replies_per_sec: f64,
}

/// Whom a limit applies to: a registered subscriber, or (without cookies)
/// a source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubKey {
    /// Registry id.
    Id(u32),
    /// Source address.
    Addr(IpAddr),
}

#[derive(Debug)]
struct Sub {
    active: u32,
    pending: u32,
    bucket: Bucket,
}

#[derive(Debug, Default)]
struct Inner {
    subs: HashMap<SubKey, Sub>,
    sources: HashMap<IpAddr, u32>,
    /// Pending slots held now, over all subscribers.
    pending: u64,
}

/// Which limit refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// Too many connections open.
    Connections,
    /// Too many new connections per second.
    Rate,
    /// Too many handshakes pending.
    Pending,
}

impl Exceeded {
    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Connections => "limit_connections",
            Self::Rate => "limit_rate",
            Self::Pending => "limit_pending",
        }
    }
}

/// Shared admission state.
#[derive(Debug)]
pub struct Limits {
    cfg: Mutex<LimitConfig>,
    inner: Mutex<Inner>,
    errors: Mutex<Bucket>,
}

/// A slot: released on drop.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<Limits>,
    kind: SlotKind,
}

#[derive(Debug)]
enum SlotKind {
    Source(IpAddr),
    Pending(SubKey),
    Active(SubKey),
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self
            .limits
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match self.kind {
            SlotKind::Source(ip) => {
                if let Some(n) = g.sources.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        g.sources.remove(&ip);
                    }
                }
            }
            SlotKind::Pending(id) => {
                if let Some(s) = g.subs.get_mut(&id) {
                    s.pending = s.pending.saturating_sub(1);
                }
                g.pending = g.pending.saturating_sub(1);
            }
            SlotKind::Active(id) => {
                if let Some(s) = g.subs.get_mut(&id) {
                    s.active = s.active.saturating_sub(1);
                }
            }
        }
        // Forget idle subscribers whose bucket is full again (bounded map).
        if let SlotKind::Active(id) | SlotKind::Pending(id) = self.kind {
            if g.subs
                .get(&id)
                .is_some_and(|s| s.active == 0 && s.pending == 0)
                && g.subs.len() > 100_000
            {
                g.subs.remove(&id);
            }
        }
    }
}

impl Limits {
    /// New state with these limits.
    pub fn new(cfg: LimitConfig) -> Arc<Self> {
        Arc::new(Self {
            errors: Mutex::new(Bucket::new(cfg.error_replies_per_sec)),
            cfg: Mutex::new(cfg),
            inner: Mutex::default(),
        })
    }

    /// Applies new limits (SIGHUP); running connections keep their slots.
    pub fn reconfigure(&self, cfg: LimitConfig) {
        *self.cfg.lock().unwrap_or_else(PoisonError::into_inner) = cfg;
    }

    fn cfg(&self) -> LimitConfig {
        *self.cfg.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection from `ip` that has not sent its Convert message yet.
    pub fn source(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Exceeded> {
        let max = self.cfg().per_source_pending;
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let n = g.sources.entry(ip).or_insert(0);
        if *n >= max {
            return Err(Exceeded::Pending);
        }
        *n += 1;
        Ok(Slot {
            limits: self.clone(),
            kind: SlotKind::Source(ip),
        })
    }

    /// An identified subscriber's new connection: returns its active slot and
    /// its pending slot (drop the latter once the reply is sent).
    pub fn admit(self: &Arc<Self>, id: SubKey) -> Result<(Slot, Slot), Exceeded> {
        let cfg = self.cfg();
        let burst = (cfg.per_subscriber_rate * 2.0).max(1.0);
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let s = g.subs.entry(id).or_insert_with(|| Sub {
            active: 0,
            pending: 0,
            bucket: Bucket::new(burst),
        });
        if s.active >= cfg.per_subscriber_connections {
            return Err(Exceeded::Connections);
        }
        if s.pending >= cfg.per_subscriber_pending {
            return Err(Exceeded::Pending);
        }
        if !s.bucket.take(cfg.per_subscriber_rate, burst) {
            return Err(Exceeded::Rate);
        }
        s.active += 1;
        s.pending += 1;
        g.pending += 1;
        Ok((
            Slot {
                limits: self.clone(),
                kind: SlotKind::Active(id),
            },
            Slot {
                limits: self.clone(),
                kind: SlotKind::Pending(id),
            },
        ))
    }

    /// Subscribers' handshakes waiting for their upstream connect, now.
    pub fn pending_handshakes(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pending
    }

    /// Whether an error reply may be sent now (else: close without reply).
    pub fn may_reply_error(&self) -> bool {
        let rate = self.cfg().error_replies_per_sec;
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(rate, rate.max(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LimitConfig {
        LimitConfig {
            per_subscriber_connections: 2,
            per_subscriber_rate: 1000.0,
            per_subscriber_pending: 1,
            per_source_pending: 2,
            error_replies_per_sec: 3.0,
        }
    }

    #[test]
    fn slots_come_back_when_dropped() {
        let l = Limits::new(cfg());
        let (a1, p1) = l.admit(SubKey::Id(7)).unwrap();
        assert_eq!(l.admit(SubKey::Id(7)).unwrap_err(), Exceeded::Pending);
        drop(p1);
        let (a2, p2) = l.admit(SubKey::Id(7)).unwrap();
        assert_eq!(l.admit(SubKey::Id(7)).unwrap_err(), Exceeded::Connections);
        drop(p2);
        assert_eq!(l.admit(SubKey::Id(7)).unwrap_err(), Exceeded::Connections);
        drop((a1, a2));
        assert!(l.admit(SubKey::Id(7)).is_ok());
        assert!(
            l.admit(SubKey::Id(8)).is_ok(),
            "subscribers are independent"
        );
    }

    #[test]
    fn rate_and_sources_and_error_replies() {
        let l = Limits::new(LimitConfig {
            per_subscriber_rate: 1.0,
            per_subscriber_connections: 100,
            per_subscriber_pending: 100,
            ..cfg()
        });
        let mut ok = 0;
        for _ in 0..10 {
            if let Ok(s) = l.admit(SubKey::Id(1)) {
                ok += 1;
                drop(s);
            }
        }
        assert_eq!(ok, 2, "burst of 2 s at 1/s");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let s1 = l.source(ip).unwrap();
        let _s2 = l.source(ip).unwrap();
        assert!(l.source(ip).is_err());
        drop(s1);
        assert!(l.source(ip).is_ok());
        let replies = (0..10).filter(|_| l.may_reply_error()).count();
        assert_eq!(replies, 3);
    }
}
