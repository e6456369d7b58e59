//! Golden byte vectors for every RFC 8803 layout: encode and decode.

mod common;

use common::{golden, hex};
use convert_proto::{ErrorCode, Message, Tlv, TlvType, HEADER_LEN, MAGIC, VERSION};

#[test]
fn constants() {
    assert_eq!(VERSION, 1);
    assert_eq!(MAGIC, 0x2263);
    assert_eq!(MAGIC, 8803);
    assert_eq!(HEADER_LEN, 4);
    assert_eq!(TlvType::INFO.0, 1);
    assert_eq!(TlvType::CONNECT.0, 10);
    assert_eq!(TlvType::EXTENDED_TCP_HEADER.0, 20);
    assert_eq!(TlvType::SUPPORTED_TCP_EXTENSIONS.0, 21);
    assert_eq!(TlvType::COOKIE.0, 22);
    assert_eq!(TlvType::ERROR.0, 30);
    let codes: Vec<u8> = ErrorCode::ALL.iter().map(|c| c.0).collect();
    assert_eq!(codes, [0, 1, 2, 3, 32, 33, 64, 65, 96, 97]);
    assert_eq!(
        ErrorCode::DESTINATION_UNREACHABLE.name(),
        "Destination Unreachable"
    );
}

#[test]
fn golden_encode() {
    for (name, msg, wire) in golden() {
        assert_eq!(msg.to_bytes(), wire, "{name}");
        assert_eq!(msg.encoded_len(), wire.len(), "{name}");
        assert_eq!(wire[1] as usize * 4, wire.len(), "{name}: total length");
        let mut buf = bytes::BytesMut::new();
        msg.encode(&mut buf);
        assert_eq!(&buf[..], &wire[..], "{name}: BufMut");
    }
}

#[test]
fn golden_decode() {
    for (name, msg, wire) in golden() {
        assert_eq!(
            Message::decode(&wire),
            Ok((msg.clone(), wire.len())),
            "{name}"
        );
        // Application data after the message is not consumed.
        let mut more = wire.clone();
        more.extend_from_slice(b"\x16\x03\x01 application data");
        assert_eq!(
            Message::decode(&more),
            Ok((msg, wire.len())),
            "{name} + data"
        );
    }
}

#[test]
fn accessors() {
    let map: std::collections::HashMap<_, _> =
        golden().into_iter().map(|(n, m, _)| (n, m)).collect();
    let c = map["connect-v4"].connect().unwrap();
    assert!(c.remote.is_ipv4());
    assert_eq!(c.remote.port(), 443);
    assert!(map["connect-v6"].connect().unwrap().remote.is_ipv6());
    assert_eq!(map["cookie"].cookie(), Some(&hex("deadbeef01020304")[..]));
    assert_eq!(
        map["error-destination-unreachable"]
            .error()
            .unwrap()
            .icmp_code(),
        Some(3)
    );
    assert_eq!(
        map["error-resource-exceeded"]
            .error()
            .unwrap()
            .backoff_secs(),
        Some(30)
    );
    assert_eq!(
        map["error-unsupported-tcp-option"]
            .error()
            .unwrap()
            .unsupported_tcp_option_kinds(),
        Some(&[30u8, 34][..])
    );
    assert_eq!(
        map["error-malformed-echo"]
            .error()
            .unwrap()
            .echoed_message(),
        Some(&hex("01012264")[..])
    );
    let resp = &map["response-missing-cookie"];
    assert_eq!(resp.error().unwrap().code, ErrorCode::MISSING_COOKIE);
    assert!(resp.cookie().is_some());
    assert!(resp.connect().is_none());
    assert!(map["info"].has_info());
    assert_eq!(
        map["extended-tcp-header"]
            .extended_tcp_header()
            .map(<[u8]>::len),
        Some(24)
    );
    assert_eq!(
        map["supported-tcp-extensions"].supported_tcp_extensions(),
        Some(&[2u8, 3, 4, 30][..])
    );
    assert!(matches!(map["info"].get(TlvType::INFO), Some(Tlv::Info)));
}

#[test]
fn ipv4_mapped_on_the_wire_decodes_to_v4() {
    let wire = hex("01 06 2263 | 0a 05 0050 00000000 00000000 0000ffff 0a000001");
    let (m, _) = Message::decode(&wire).unwrap();
    assert_eq!(m.connect().unwrap().remote, common::addr("10.0.0.1:80"));
}

#[test]
fn nop_padded_options_are_kept() {
    // Options padded with NOPs rather than zeros: NOPs are options, kept.
    let wire = hex("01 07 2263 | 0a 06 0050 00000000 00000000 0000ffff 0a000001 030307 01");
    let (m, _) = Message::decode(&wire).unwrap();
    assert_eq!(m.connect().unwrap().tcp_options, hex("03030701"));
    assert_eq!(m.to_bytes(), wire);
}

/// The fuzzer's seed corpus: every golden vector, one file each, in
/// `fuzz/seeds/decode/` (so that fuzzing starts from valid messages of
/// every layout, past the magic number and the length checks).
fn seeds_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/decode")
}

/// Writes the seed corpus: `cargo test -p convert-proto --test golden --
/// --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes fuzz/seeds/decode; run by hand when the vectors change"]
fn write_fuzz_seeds() {
    let dir = seeds_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, _, wire) in golden() {
        std::fs::write(dir.join(name), wire).unwrap();
    }
}

#[test]
fn fuzz_seeds_are_the_golden_vectors() {
    let mut seen = 0;
    for (name, msg, wire) in golden() {
        let seed = std::fs::read(seeds_dir().join(name))
            .unwrap_or_else(|e| panic!("seed {name} ({e}): run write_fuzz_seeds"));
        assert_eq!(seed, wire, "seed {name} is stale: run write_fuzz_seeds");
        assert_eq!(Message::decode(&seed).unwrap().0, msg);
        seen += 1;
    }
    assert!(seen > 10);
}
