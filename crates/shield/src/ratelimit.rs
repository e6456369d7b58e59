//! Token buckets keyed by client address or client prefix, in bounded
//! sharded tables: the per-client query limit and response-rate limiting
//! (RRL) with slip.
//!
//! RRL here keys on the client prefix only (/24, /56 by default), not on
//! the answer as BIND does: a spoofed flood aimed at one victim network is
//! answered at most `rate` times a second, and every `slip`-th limited
//! query gets a truncated answer (no larger than the query), so that a real
//! client in that prefix retries over TCP, where the source is proven.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 16;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    limited: u32,
}

/// What to do with one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the rate.
    Pass,
    /// Over the rate: answer truncated (RRL slip).
    Slip,
    /// Over the rate: no answer.
    Drop,
}

/// Token buckets per key.
#[derive(Debug)]
pub(crate) struct Limiter {
    rate: f64,
    burst: f64,
    slip: u32,
    v4_bits: u8,
    v6_bits: u8,
    per_shard: usize,
    shards: Vec<Mutex<HashMap<u128, Bucket>>>,
}

fn key(ip: IpAddr, v4_bits: u8, v6_bits: u8) -> u128 {
    match crate::config::canonical_ip(ip) {
        IpAddr::V4(a) => {
            let m = if v4_bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(v4_bits))
            };
            // As an IPv4-mapped IPv6 address: no clash with real IPv6 keys.
            u128::from(u32::from(a) & m) | (0xffffu128 << 32)
        }
        IpAddr::V6(a) => {
            let m = if v6_bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(v6_bits))
            };
            u128::from(a) & m
        }
    }
}

impl Limiter {
    /// `rate` per second with `burst`; `rate == 0` disables it.
    pub(crate) fn new(
        rate: u32,
        burst: u32,
        slip: u32,
        v4_bits: u8,
        v6_bits: u8,
        max_entries: usize,
    ) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            slip,
            v4_bits,
            v6_bits,
            per_shard: (max_entries / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Takes a token for `ip`.
    pub(crate) fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        if self.rate <= 0.0 {
            return Verdict::Pass;
        }
        let k = key(ip, self.v4_bits, self.v6_bits);
        let shard = (k ^ (k >> 64)) as usize % SHARDS;
        let mut t = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        if t.len() >= self.per_shard && !t.contains_key(&k) {
            let full_after = self.burst / self.rate;
            t.retain(|_, b| now.saturating_duration_since(b.last).as_secs_f64() < full_after);
            if t.len() >= self.per_shard {
                // Under a flood from more sources than the table holds,
                // new sources start with an empty bucket rather than full.
                t.clear();
            }
        }
        let b = t.entry(k).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            limited: 0,
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + dt * self.rate).min(self.burst);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Pass;
        }
        b.limited = b.limited.wrapping_add(1);
        if self.slip > 0 && b.limited % self.slip == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_and_slips() {
        let l = Limiter::new(10, 10, 2, 24, 56, 1000);
        let t0 = Instant::now();
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        let b: IpAddr = "10.1.2.200".parse().unwrap();
        let mut pass = 0;
        let mut slip = 0;
        for i in 0..30 {
            match l.check(if i % 2 == 0 { a } else { b }, t0) {
                Verdict::Pass => pass += 1,
                Verdict::Slip => slip += 1,
                Verdict::Drop => {}
            }
        }
        assert_eq!(pass, 10, "one bucket for the /24");
        assert_eq!(slip, 10, "every second limited answer slips");
        assert_eq!(
            l.check("10.1.3.1".parse().unwrap(), t0),
            Verdict::Pass,
            "another /24"
        );
        assert_eq!(l.check(a, t0 + Duration::from_millis(200)), Verdict::Pass);
    }

    #[test]
    fn ipv6_prefix_and_disabled() {
        let l = Limiter::new(1, 1, 0, 24, 56, 1000);
        let t0 = Instant::now();
        assert_eq!(
            l.check("2001:db8:0:1::1".parse().unwrap(), t0),
            Verdict::Pass
        );
        assert_eq!(
            l.check("2001:db8:0:1::2".parse().unwrap(), t0),
            Verdict::Drop
        );
        assert_eq!(
            l.check("2001:db8:0:100::2".parse().unwrap(), t0),
            Verdict::Pass
        );
        let off = Limiter::new(0, 1, 0, 24, 56, 1000);
        for _ in 0..100 {
            assert_eq!(off.check("10.0.0.1".parse().unwrap(), t0), Verdict::Pass);
        }
    }

    #[test]
    fn table_stays_bounded() {
        let l = Limiter::new(1, 1, 0, 32, 128, 64);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            l.check(IpAddr::V4(i.into()), t0);
        }
        let n: usize = l.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(n <= 64, "{n}");
    }
}
