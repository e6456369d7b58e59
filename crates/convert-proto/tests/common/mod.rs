//! Golden vectors shared by the integration tests: hand-computed from the
//! RFC 8803 figures (fixed header, generic TLV, each TLV layout).
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use convert_proto::{Connect, ErrorCode, ErrorTlv, Message, Tlv, TlvType};

/// Parse a hex string, ignoring whitespace and `|` separators.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| b.is_ascii_hexdigit())
        .map(|b| (b as char).to_digit(16).unwrap() as u8)
        .collect();
    assert!(digits.len() % 2 == 0, "odd hex: {s}");
    digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The SYN+ACK TCP header used in the Extended TCP Header vector:
/// sport 443, dport 50000, seq 0x01020304, ack 0x0a0b0c0d, data offset 6,
/// flags SYN|ACK, window 0xffff, checksum 0, urgent 0, MSS 1460.
pub const SYNACK_HDR: &str = "01bb c350 01020304 0a0b0c0d 60 12 ffff 0000 0000 020405b4";

/// (name, message, hand-computed wire bytes)
pub fn golden() -> Vec<(&'static str, Message, Vec<u8>)> {
    let one = |t: Tlv| Message::new(vec![t]);
    let err = |e: ErrorTlv| one(Tlv::Error(e));
    vec![
        // Fixed header only: Version 1, Total Length 1 word, Magic 0x2263.
        ("empty", Message::empty(), hex("01 01 2263")),
        // Info TLV: Type 1, Length 1, 16 unassigned bits.
        ("info", one(Tlv::Info), hex("01 02 2263 | 01 01 0000")),
        // Connect TLV, IPv4 as IPv4-mapped IPv6: Type 10, Length 5,
        // port 443, ::ffff:192.0.2.1.
        (
            "connect-v4",
            one(Tlv::Connect(Connect::new(addr("192.0.2.1:443")))),
            hex("01 06 2263 | 0a 05 01bb 00000000 00000000 0000ffff c0000201"),
        ),
        // Connect TLV, IPv6: [2001:db8::1]:8080.
        (
            "connect-v6",
            one(Tlv::Connect(Connect::new(addr("[2001:db8::1]:8080")))),
            hex("01 06 2263 | 0a 05 1f90 20010db8 00000000 00000000 00000001"),
        ),
        // Extended Connect TLV: MSS 1460, SACK-permitted, WS 7 (9 bytes)
        // zero padded to 12: Length (20 + 12) / 4 = 8 words.
        (
            "connect-options",
            one(Tlv::Connect(Connect::with_tcp_options(
                addr("198.51.100.7:80"),
                hex("020405b4 0402 030307"),
            ))),
            hex(
                "01 09 2263 | 0a 08 0050 00000000 00000000 0000ffff c6336407 \
                 020405b4 04020303 07000000",
            ),
        ),
        // Extended TCP Header TLV: Type 20, Length 7, unassigned, 24-byte
        // TCP header.
        (
            "extended-tcp-header",
            one(Tlv::ExtendedTcpHeader(hex(SYNACK_HDR))),
            hex(&format!("01 08 2263 | 14 07 0000 {SYNACK_HDR}")),
        ),
        // Supported TCP Extensions TLV: Type 21, unassigned, kinds
        // MSS(2) WS(3) SACK-permitted(4) MPTCP(30).
        (
            "supported-tcp-extensions",
            one(Tlv::SupportedTcpExtensions(vec![2, 3, 4, 30])),
            hex("01 03 2263 | 15 02 0000 0203041e"),
        ),
        // Same with one kind: zero padded to the word boundary.
        (
            "supported-tcp-extensions-padded",
            one(Tlv::SupportedTcpExtensions(vec![30])),
            hex("01 03 2263 | 15 02 0000 1e000000"),
        ),
        // Cookie TLV: Type 22, Length 3, zero, 8-byte opaque value.
        (
            "cookie",
            one(Tlv::Cookie(hex("deadbeef01020304"))),
            hex("01 04 2263 | 16 03 0000 deadbeef 01020304"),
        ),
        // Error TLVs: Type 30, Length, Error Code, Value.
        (
            "error-unsupported-version",
            err(ErrorTlv::unsupported_version(1)),
            hex("01 02 2263 | 1e 01 00 01"),
        ),
        (
            "error-unsupported-versions-list",
            err(ErrorTlv::unsupported_versions(&[1, 2])),
            hex("01 03 2263 | 1e 02 00 01 02000000"),
        ),
        // Malformed Message echoes the received message shifted by one byte.
        (
            "error-malformed-echo",
            err(ErrorTlv::malformed(&hex("01012264"))),
            hex("01 03 2263 | 1e 02 01 00 01012264"),
        ),
        (
            "error-unsupported-message",
            err(ErrorTlv::unsupported_message(TlvType(42))),
            hex("01 02 2263 | 1e 01 02 2a"),
        ),
        (
            "error-missing-cookie",
            err(ErrorTlv::missing_cookie()),
            hex("01 02 2263 | 1e 01 03 00"),
        ),
        (
            "error-not-authorized",
            err(ErrorTlv::not_authorized()),
            hex("01 02 2263 | 1e 01 20 00"),
        ),
        (
            "error-unsupported-tcp-option",
            err(ErrorTlv::unsupported_tcp_options(&[30, 34])),
            hex("01 03 2263 | 1e 02 21 1e 22000000"),
        ),
        (
            "error-resource-exceeded",
            err(ErrorTlv::resource_exceeded(30)),
            hex("01 02 2263 | 1e 01 40 1e"),
        ),
        (
            "error-network-failure",
            err(ErrorTlv::network_failure(0)),
            hex("01 02 2263 | 1e 01 41 00"),
        ),
        (
            "error-connection-reset",
            err(ErrorTlv::connection_reset()),
            hex("01 02 2263 | 1e 01 60 00"),
        ),
        (
            "error-destination-unreachable",
            err(ErrorTlv::destination_unreachable(3)),
            hex("01 02 2263 | 1e 01 61 03"),
        ),
        (
            "error-private-code",
            err(ErrorTlv::new(ErrorCode(200))),
            hex("01 02 2263 | 1e 01 c8 00"),
        ),
        // Client request: Connect + Cookie.
        (
            "request-connect-cookie",
            Message::new(vec![
                Tlv::Connect(Connect::new(addr("192.0.2.1:443"))),
                Tlv::Cookie(hex("cafef00d")),
            ]),
            hex(
                "01 08 2263 | 0a 05 01bb 00000000 00000000 0000ffff c0000201 \
                 | 16 02 0000 cafef00d",
            ),
        ),
        // Converter answer to a cookie-less request: Missing Cookie + Cookie.
        (
            "response-missing-cookie",
            Message::new(vec![
                Tlv::Error(ErrorTlv::missing_cookie()),
                Tlv::Cookie(hex("cafef00d")),
            ]),
            hex("01 04 2263 | 1e 01 03 00 | 16 02 0000 cafef00d"),
        ),
        // Converter answer to Info: Supported TCP Extensions.
        (
            "response-info",
            Message::new(vec![Tlv::SupportedTcpExtensions(vec![30])]),
            hex("01 03 2263 | 15 02 0000 1e000000"),
        ),
    ]
}
