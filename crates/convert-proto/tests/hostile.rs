//! Hostile and malformed inputs.

mod common;

use common::{addr, hex};
use convert_proto::{
    Connect, DecodeError, ErrorCode, ErrorTlv, Malformed, MalformedKind, Message, Tlv, TlvType,
    MAX_MESSAGE_LEN,
};

fn malformed(kind: MalformedKind, offset: usize) -> DecodeError {
    DecodeError::Malformed(Malformed { kind, offset })
}

#[test]
fn wrong_version() {
    for v in [0u8, 2, 0x16, 0xff] {
        let wire = [v, 1, 0x22, 0x63];
        let e = Message::decode(&wire).unwrap_err();
        assert_eq!(e, DecodeError::UnsupportedVersion(v));
        assert_eq!(e.error_tlv(), Some(ErrorTlv::unsupported_version(1)));
        assert_eq!(
            e.error_tlv().unwrap().supported_versions(),
            Some(&[1u8][..])
        );
    }
}

#[test]
fn wrong_magic() {
    let wire = hex("01 01 2264");
    let e = Message::decode(&wire).unwrap_err();
    assert_eq!(e, malformed(MalformedKind::BadMagic(0x2264), 2));
    assert_eq!(e.error_tlv().unwrap().code, ErrorCode::MALFORMED_MESSAGE);
    let echo = e.error_tlv_echoing(&wire).unwrap();
    assert_eq!(echo, ErrorTlv::malformed(&wire));
    // Something that is not Convert at all (a TLS ClientHello).
    let tls = hex("16 03 01 00 c8 01 00 00 c4");
    assert!(matches!(
        Message::decode(&tls),
        Err(DecodeError::Malformed(Malformed {
            kind: MalformedKind::BadMagic(0x0100),
            ..
        }))
    ));
}

#[test]
fn zero_total_length() {
    assert_eq!(
        Message::decode(&hex("01 00 2263")),
        Err(malformed(MalformedKind::TotalLengthTooShort, 1))
    );
}

#[test]
fn zero_length_tlv() {
    for t in [1u8, 10, 20, 21, 22, 30, 42] {
        let wire = [1, 2, 0x22, 0x63, t, 0, 0, 0];
        assert_eq!(
            Message::decode(&wire),
            Err(malformed(MalformedKind::TlvLengthZero(TlvType(t)), 4)),
            "type {t}"
        );
    }
}

#[test]
fn tlv_overruns_message() {
    // Total Length says 2 words but the Connect TLV claims 5.
    let mut wire = hex("01 02 2263 | 0a 05 01bb");
    wire.extend_from_slice(&[0; 40]); // bytes exist in the buffer, but past Total Length
    assert_eq!(
        Message::decode(&wire),
        Err(malformed(MalformedKind::TlvOverrun(TlvType::CONNECT), 4))
    );
    // Second TLV overruns.
    let wire = hex("01 03 2263 | 01 01 0000 | 16 02 0000");
    assert_eq!(
        Message::decode(&wire),
        Err(malformed(MalformedKind::TlvOverrun(TlvType::COOKIE), 8))
    );
    // Maximal lengths everywhere.
    let mut wire = vec![1, 0xff, 0x22, 0x63, 22, 0xff];
    wire.resize(MAX_MESSAGE_LEN, 0);
    assert_eq!(
        Message::decode(&wire),
        Err(malformed(MalformedKind::TlvOverrun(TlvType::COOKIE), 4))
    );
}

#[test]
fn lengths_past_the_buffer_are_incomplete_not_errors() {
    let wire = hex("01 ff 2263 | 0a 05 01bb");
    assert_eq!(
        Message::decode(&wire),
        Err(DecodeError::Incomplete {
            needed: MAX_MESSAGE_LEN
        })
    );
}

#[test]
fn largest_message_decodes() {
    // A single Cookie TLV filling the whole 255-word message.
    let cookie = vec![0xab; MAX_MESSAGE_LEN - 8];
    let msg = Message::new(vec![Tlv::Cookie(cookie)]);
    let wire = msg.to_bytes();
    assert_eq!(wire.len(), MAX_MESSAGE_LEN);
    assert_eq!(wire[1], 0xff);
    assert_eq!(wire[5], 0xfe);
    assert_eq!(Message::decode(&wire), Ok((msg, MAX_MESSAGE_LEN)));
}

#[test]
fn too_long_to_encode() {
    let msg = Message::new(vec![Tlv::Cookie(vec![0; MAX_MESSAGE_LEN - 7])]);
    assert!(msg.check().is_err());
    assert!(msg.try_to_bytes().is_err());
    let mut out = Vec::new();
    assert!(msg.try_encode(&mut out).is_err());
    assert!(out.is_empty());
    assert!(std::panic::catch_unwind(|| msg.to_bytes()).is_err());
}

fn one_of_each() -> Vec<Tlv> {
    vec![
        Tlv::Info,
        Tlv::Connect(Connect::new(addr("192.0.2.1:443"))),
        Tlv::ExtendedTcpHeader(hex(common::SYNACK_HDR)),
        Tlv::SupportedTcpExtensions(vec![30]),
        Tlv::Cookie(vec![1, 2, 3, 4]),
        Tlv::Error(ErrorTlv::not_authorized()),
    ]
}

#[test]
fn duplicate_tlv_of_every_type() {
    for tlv in one_of_each() {
        let first_len = tlv.encoded_len();
        let wire = Message::new(vec![tlv.clone(), tlv.clone()]).to_bytes();
        assert_eq!(
            Message::decode(&wire),
            Err(malformed(
                MalformedKind::DuplicateTlv(tlv.tlv_type()),
                4 + first_len
            )),
            "{tlv:?}"
        );
        // Also when separated by another TLV.
        let other = if matches!(tlv, Tlv::Info) {
            Tlv::Cookie(vec![9; 4])
        } else {
            Tlv::Info
        };
        let wire = Message::new(vec![tlv.clone(), other, tlv.clone()]).to_bytes();
        assert!(
            matches!(
                Message::decode(&wire),
                Err(DecodeError::Malformed(Malformed { kind: MalformedKind::DuplicateTlv(t), .. }))
                    if t == tlv.tlv_type()
            ),
            "{tlv:?}"
        );
    }
    // All six distinct types together are fine.
    let msg = Message::new(one_of_each());
    assert_eq!(
        Message::decode(&msg.to_bytes()),
        Ok((msg.clone(), msg.encoded_len()))
    );
}

#[test]
fn truncated_connect() {
    // Connect TLV with Length 4 (16 bytes): too short for port + address.
    let wire = hex("01 05 2263 | 0a 04 01bb 00000000 00000000 0000ffff");
    assert_eq!(
        Message::decode(&wire),
        Err(malformed(MalformedKind::BadConnectLength, 4))
    );
    // Length 1.
    assert_eq!(
        Message::decode(&hex("01 02 2263 | 0a 01 01bb")),
        Err(malformed(MalformedKind::BadConnectLength, 4))
    );
    // Buffer cut in the middle of a correct Connect: just incomplete.
    let full = hex("01 06 2263 | 0a 05 01bb 00000000 00000000 0000ffff c0000201");
    assert_eq!(
        Message::decode(&full[..13]),
        Err(DecodeError::Incomplete { needed: 24 })
    );
}

#[test]
fn bad_tcp_options() {
    let base = "01 07 2263 | 0a 06 0050 00000000 00000000 0000ffff 0a000001";
    for opts in [
        "02 08 0000",  // MSS length overruns
        "02 01 0000",  // option length < 2
        "02 00 0000",  // option length 0
        "00 01 0000",  // non-zero after EOL
        "01 01 01 05", // kind 5 without a length byte
    ] {
        assert_eq!(
            Message::decode(&hex(&format!("{base} {opts}"))),
            Err(malformed(MalformedKind::BadTcpOptions, 4)),
            "{opts}"
        );
    }
}

#[test]
fn bad_info_length() {
    assert_eq!(
        Message::decode(&hex("01 03 2263 | 01 02 0000 00000000")),
        Err(malformed(MalformedKind::BadTlvLength(TlvType::INFO), 4))
    );
}

#[test]
fn nonzero_padding_in_supported_extensions() {
    assert_eq!(
        Message::decode(&hex("01 03 2263 | 15 02 0000 1e00001e")),
        Err(malformed(
            MalformedKind::BadPadding(TlvType::SUPPORTED_TCP_EXTENSIONS),
            4
        ))
    );
}

#[test]
fn unknown_tlv_type() {
    for t in [0u8, 2, 9, 11, 23, 31, 192, 255] {
        let wire = [1, 2, 0x22, 0x63, t, 1, 0, 0];
        let e = Message::decode(&wire).unwrap_err();
        assert_eq!(e, DecodeError::UnsupportedMessage(TlvType(t)));
        assert_eq!(
            e.error_tlv(),
            Some(ErrorTlv::unsupported_message(TlvType(t)))
        );
    }
    // Unknown after a valid TLV.
    let wire = hex("01 03 2263 | 01 01 0000 | 2a 01 0000");
    assert_eq!(
        Message::decode(&wire),
        Err(DecodeError::UnsupportedMessage(TlvType(42)))
    );
    // An overrunning unknown TLV is malformed first.
    let wire = hex("01 02 2263 | 2a 02 0000");
    assert_eq!(
        Message::decode(&wire),
        Err(malformed(MalformedKind::TlvOverrun(TlvType(42)), 4))
    );
}

#[test]
fn incomplete_has_no_error_tlv() {
    assert_eq!(DecodeError::Incomplete { needed: 4 }.error_tlv(), None);
}

#[test]
fn error_display() {
    let e = malformed(MalformedKind::DuplicateTlv(TlvType::CONNECT), 24);
    assert_eq!(
        e.to_string(),
        "malformed Convert message: duplicate Connect TLV (10) at offset 24"
    );
    assert_eq!(
        DecodeError::UnsupportedMessage(TlvType(42)).to_string(),
        "unsupported Convert message: unknown TLV (42)"
    );
}
