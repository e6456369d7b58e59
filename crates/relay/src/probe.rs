//! The path probe both ends share. The CPE sends one per access link every
//! few hundred milliseconds from that link's address; the HAG echoes it back
//! unchanged (same bytes, so an echo never amplifies). 16 bytes: the magic
//! `TDMP`, a nonce chosen per CPE run (a reply with another nonce is not
//! ours), the link number and a sequence number, all big-endian.
//!
//! Sans-IO: encoding and decoding only.

/// Length of a probe on the wire.
pub const LEN: usize = 16;
/// First four bytes of every probe.
pub const MAGIC: [u8; 4] = *b"TDMP";

/// One probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Chosen per run by the sender.
    pub nonce: u32,
    /// The link it was sent on (the sender's numbering).
    pub link: u8,
    /// Sequence number per link.
    pub seq: u32,
}

impl Probe {
    /// The wire bytes.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.nonce.to_be_bytes());
        b[8] = self.link;
        b[12..16].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    /// Decodes a probe; `None` for anything else (wrong length, magic or
    /// non-zero reserved bytes).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if !looks_like_probe(b) || b[9..12] != [0, 0, 0] {
            return None;
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Self {
            nonce: word(4),
            link: b[8],
            seq: word(12),
        })
    }
}

/// Whether `b` has a probe's length and magic (what the echo checks).
pub fn looks_like_probe(b: &[u8]) -> bool {
    b.len() == LEN && b[..4] == MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let p = Probe {
            nonce: 0xdead_beef,
            link: 2,
            seq: 77,
        };
        let b = p.encode();
        assert_eq!(&b[..4], b"TDMP");
        assert_eq!(Probe::decode(&b), Some(p));
        assert_eq!(Probe::decode(&b[..15]), None);
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(Probe::decode(&long), None);
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(Probe::decode(&bad), None);
        let mut reserved = b;
        reserved[10] = 1;
        assert_eq!(Probe::decode(&reserved), None);
        assert!(looks_like_probe(&b));
    }
}
