//! Subscriber credentials carried in the RFC 8803 Cookie TLV.
//!
//! A cookie is 32 bytes the HAG issues at `tandem hag subscriber add` and the
//! CPE sends verbatim in every Convert message:
//!
//! ```text
//!  0      1      2          6          10         14                     32
//!  +------+------+----------+----------+----------+----------------------+
//!  | fmt  | key  | sub. id  | issued   | expires  | MAC (18 bytes)        |
//!  +------+------+----------+----------+----------+----------------------+
//! ```
//!
//! `fmt` is 1; `key` names the HAG key that made the MAC; the subscriber id
//! and the times (Unix seconds) are big-endian u32; the MAC is keyed BLAKE3
//! over bytes 0..14, truncated to 144 bits.
//!
//! Key rotation without cutting anyone off: the HAG holds a key ring; one key
//! is `current` (it signs new cookies), older ones stay `accepted` (they still
//! verify) until every CPE got a cookie from the current key
//! (`tandem hag subscriber reissue`), then they are removed.
//!
//! What a cookie does not do: it is a bearer credential. It proves the
//! subscriber, not the line it comes from; the optional per-subscriber source
//! prefixes bind it to the subscriber's access lines, and revocation in the
//! registry refuses it on the next connection.

use std::collections::HashMap;
use std::fmt;

/// Length of a cookie on the wire.
pub const COOKIE_LEN: usize = 32;
const SIGNED_LEN: usize = 14;
const FORMAT: u8 = 1;

/// A 256-bit HAG key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut k = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut k).ok()?;
        Some(Self(k))
    }

    /// A new random key from the kernel's generator.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k)?;
        Ok(Self(k))
    }

    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The HAG's keys: one signs, all verify.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    /// The key id that signs new cookies.
    pub current: u8,
    /// Every key that verifies, by id.
    pub keys: HashMap<u8, Key>,
}

/// The content of a valid cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Which key signed it.
    pub key_id: u8,
    /// Registry id of the subscriber.
    pub subscriber: u32,
    /// When it was issued (Unix seconds).
    pub issued: u32,
    /// Until when it is valid (Unix seconds).
    pub expires: u32,
}

/// Why a cookie is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Not 32 bytes (padding allowed) or unknown format.
    #[error("malformed cookie")]
    Malformed,
    /// Signed with a key this HAG does not hold (retired, or forged).
    #[error("cookie signed with unknown key {0}")]
    UnknownKey(u8),
    /// The MAC does not match.
    #[error("cookie MAC does not verify")]
    BadMac,
    /// Past its expiry.
    #[error("cookie expired")]
    Expired,
}

fn mac(key: &Key, signed: &[u8]) -> [u8; COOKIE_LEN - SIGNED_LEN] {
    let h = blake3::keyed_hash(&key.0, signed);
    let mut out = [0u8; COOKIE_LEN - SIGNED_LEN];
    out.copy_from_slice(&h.as_bytes()[..COOKIE_LEN - SIGNED_LEN]);
    out
}

/// Constant-time comparison.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl KeyRing {
    /// Issues a cookie with the current key. `None` if the current key is
    /// missing from the ring.
    pub fn issue(&self, subscriber: u32, issued: u32, expires: u32) -> Option<[u8; COOKIE_LEN]> {
        let key = self.keys.get(&self.current)?;
        let mut c = [0u8; COOKIE_LEN];
        c[0] = FORMAT;
        c[1] = self.current;
        c[2..6].copy_from_slice(&subscriber.to_be_bytes());
        c[6..10].copy_from_slice(&issued.to_be_bytes());
        c[10..14].copy_from_slice(&expires.to_be_bytes());
        let m = mac(key, &c[..SIGNED_LEN]);
        c[SIGNED_LEN..].copy_from_slice(&m);
        Some(c)
    }

    /// Verifies a cookie (trailing zero padding from the TLV is ignored) at
    /// time `now` (Unix seconds).
    pub fn verify(&self, cookie: &[u8], now: u32) -> Result<Claims, CookieError> {
        if cookie.len() < COOKIE_LEN || cookie[COOKIE_LEN..].iter().any(|&b| b != 0) {
            return Err(CookieError::Malformed);
        }
        let c = &cookie[..COOKIE_LEN];
        if c[0] != FORMAT {
            return Err(CookieError::Malformed);
        }
        let key = self.keys.get(&c[1]).ok_or(CookieError::UnknownKey(c[1]))?;
        if !ct_eq(&mac(key, &c[..SIGNED_LEN]), &c[SIGNED_LEN..]) {
            return Err(CookieError::BadMac);
        }
        let u32_at = |o: usize| u32::from_be_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
        let claims = Claims {
            key_id: c[1],
            subscriber: u32_at(2),
            issued: u32_at(6),
            expires: u32_at(10),
        };
        if now > claims.expires {
            return Err(CookieError::Expired);
        }
        Ok(claims)
    }
}

/// Cookie bytes as hex (for the CPE's configuration).
pub fn to_hex(c: &[u8]) -> String {
    hex::encode(c)
}

/// The wall clock in Unix seconds as a cookie carries it (u32, saturating).
pub fn now_unix() -> u32 {
    u32::try_from(registry::now_unix().max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        let mut keys = HashMap::new();
        keys.insert(1, Key([1; 32]));
        keys.insert(2, Key([2; 32]));
        KeyRing { current: 2, keys }
    }

    #[test]
    fn issued_cookie_verifies_and_carries_claims() {
        let r = ring();
        let c = r.issue(42, 1000, 2000).unwrap();
        let claims = r.verify(&c, 1500).unwrap();
        assert_eq!(
            (claims.subscriber, claims.key_id, claims.expires),
            (42, 2, 2000)
        );
        // TLV padding is fine.
        let mut padded = c.to_vec();
        padded.extend_from_slice(&[0, 0, 0, 0]);
        assert!(r.verify(&padded, 1500).is_ok());
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let r = ring();
        let c = r.issue(42, 1000, 2000).unwrap();
        for i in 0..COOKIE_LEN {
            let mut t = c;
            t[i] ^= 0x40;
            assert!(r.verify(&t, 1500).is_err(), "byte {i}");
        }
    }

    #[test]
    fn rotation_keeps_old_cookies_until_their_key_is_removed() {
        let mut r = ring();
        r.current = 1;
        let old = r.issue(7, 1000, 9000).unwrap();
        r.current = 2; // rotate: key 1 still accepted
        assert!(r.verify(&old, 1500).is_ok());
        r.keys.remove(&1); // retired
        assert_eq!(r.verify(&old, 1500), Err(CookieError::UnknownKey(1)));
    }

    #[test]
    fn expiry_short_and_garbage() {
        let r = ring();
        let c = r.issue(1, 1000, 2000).unwrap();
        assert_eq!(r.verify(&c, 2001), Err(CookieError::Expired));
        assert_eq!(r.verify(&c[..31], 1500), Err(CookieError::Malformed));
        assert_eq!(r.verify(&[], 1500), Err(CookieError::Malformed));
        assert!(r.verify(&[0xff; 32], 1500).is_err());
        assert_eq!(
            Key::from_hex(&Key([0xab; 32]).to_hex()),
            Some(Key([0xab; 32]))
        );
        assert_eq!(Key::from_hex("zz"), None);
    }
}
