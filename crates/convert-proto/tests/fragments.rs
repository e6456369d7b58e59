//! Every golden message decoded from every prefix split.

mod common;

use common::golden;
use convert_proto::{peek_total_len, DecodeError, Message, HEADER_LEN};

#[test]
fn every_strict_prefix_is_incomplete() {
    for (name, msg, wire) in golden() {
        for k in 0..wire.len() {
            let want = if k < HEADER_LEN {
                HEADER_LEN
            } else {
                wire.len()
            };
            assert_eq!(
                Message::decode(&wire[..k]),
                Err(DecodeError::Incomplete { needed: want }),
                "{name} prefix {k}"
            );
            if k < HEADER_LEN {
                assert_eq!(
                    peek_total_len(&wire[..k]),
                    Err(DecodeError::Incomplete { needed: HEADER_LEN })
                );
            } else {
                assert_eq!(peek_total_len(&wire[..k]), Ok(wire.len()));
            }
        }
        assert_eq!(Message::decode(&wire), Ok((msg, wire.len())), "{name}");
    }
}

/// Simulate a reader that appends one byte at a time and retries only once
/// it has `needed` bytes.
#[test]
fn byte_at_a_time_reader() {
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for (_, msg, wire) in golden() {
        stream.extend_from_slice(&wire);
        expected.push(msg);
    }
    let mut decoded = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut want = 1;
    for &b in &stream {
        buf.push(b);
        if buf.len() < want {
            continue;
        }
        match Message::decode(&buf) {
            Ok((m, used)) => {
                decoded.push(m);
                buf.drain(..used);
                want = 1;
            }
            Err(DecodeError::Incomplete { needed }) => {
                assert!(needed > buf.len());
                want = needed;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(buf.is_empty());
    assert_eq!(decoded, expected);
}

/// Errors detected in the header surface as soon as the header is complete
/// and equal the all-at-once result; body errors only once complete.
#[test]
fn errors_are_prefix_stable() {
    let bad = [
        common::hex("02 03 2263 | 01 01 0000 | 01 01 0000"), // version
        common::hex("01 03 2264 | 01 01 0000 | 01 01 0000"), // magic
        common::hex("01 03 2263 | 01 01 0000 | 01 01 0000"), // duplicate
        common::hex("01 03 2263 | 2a 02 0000 00000000"),     // unknown type
    ];
    for wire in bad {
        let full = Message::decode(&wire).unwrap_err();
        let header_err = !matches!(full, DecodeError::Malformed(m) if m.offset >= HEADER_LEN)
            && !matches!(full, DecodeError::UnsupportedMessage(_));
        for k in 0..wire.len() {
            let r = Message::decode(&wire[..k]);
            if k < HEADER_LEN || !header_err {
                assert!(
                    matches!(r, Err(DecodeError::Incomplete { .. })),
                    "{k}: {r:?}"
                );
            } else {
                assert_eq!(r, Err(full.clone()), "{k}");
            }
        }
    }
}
