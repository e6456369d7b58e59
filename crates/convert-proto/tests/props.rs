//! Property tests: round trips, prefix behaviour, and no panics on junk.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use convert_proto::{
    peek_total_len, Connect, DecodeError, ErrorCode, ErrorTlv, Message, Tlv, MAGIC,
    MAX_MESSAGE_LEN, VERSION,
};
use proptest::prelude::*;
use proptest::sample::subsequence;

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), p))),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_filter("not IPv4-mapped", |(ip, _)| {
                Ipv6Addr::from(*ip).to_ipv4_mapped().is_none()
            })
            .prop_map(|(ip, p)| SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), p, 0, 0))),
    ]
}

/// One TCP option (never End-of-Option-List).
fn arb_tcp_option() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![1u8]),
        any::<u16>().prop_map(|m| vec![2, 4, (m >> 8) as u8, m as u8]),
        (0u8..15).prop_map(|s| vec![3, 3, s]),
        Just(vec![4u8, 2]),
        (2u8..=255, proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(k, data)| {
            let mut v = vec![k, data.len() as u8 + 2];
            v.extend(data);
            v
        }),
    ]
}

fn arb_tcp_options() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(arb_tcp_option(), 0..6).prop_map(|opts| {
        let mut out = Vec::new();
        for o in opts {
            if out.len() + o.len() <= 40 {
                out.extend(o);
            }
        }
        out
    })
}

fn words(max_words: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..=max_words).prop_flat_map(|w| proptest::collection::vec(any::<u8>(), w * 4))
}

fn arb_error() -> impl Strategy<Value = ErrorTlv> {
    prop_oneof![
        (any::<u8>(), 0usize..25).prop_flat_map(|(code, w)| {
            proptest::collection::vec(any::<u8>(), w * 4 + 1).prop_map(move |value| ErrorTlv {
                code: ErrorCode(code),
                value,
            })
        }),
        any::<u8>().prop_map(ErrorTlv::resource_exceeded),
        any::<u8>().prop_map(ErrorTlv::destination_unreachable),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|m| ErrorTlv::malformed(&m)),
        proptest::collection::vec(1u8.., 0..10).prop_map(|k| ErrorTlv::unsupported_tcp_options(&k)),
    ]
}

fn arb_tlv_of(kind: u8) -> BoxedStrategy<Tlv> {
    match kind {
        0 => Just(Tlv::Info).boxed(),
        1 => (arb_addr(), arb_tcp_options())
            .prop_map(|(a, o)| Tlv::Connect(Connect::with_tcp_options(a, o)))
            .boxed(),
        2 => words(15).prop_map(Tlv::ExtendedTcpHeader).boxed(),
        3 => proptest::collection::vec(1u8.., 0..40)
            .prop_map(Tlv::SupportedTcpExtensions)
            .boxed(),
        4 => words(16).prop_map(Tlv::Cookie).boxed(),
        _ => arb_error().prop_map(Tlv::Error).boxed(),
    }
}

/// Messages with no duplicate TLV types, in arbitrary order.
fn arb_message() -> impl Strategy<Value = Message> {
    subsequence((0u8..6).collect::<Vec<_>>(), 0..=6)
        .prop_shuffle()
        .prop_flat_map(|kinds| kinds.into_iter().map(arb_tlv_of).collect::<Vec<_>>())
        .prop_map(Message::new)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(msg in arb_message(), trailer in proptest::collection::vec(any::<u8>(), 0..16)) {
        let wire = msg.to_bytes();
        prop_assert!(wire.len() <= MAX_MESSAGE_LEN);
        prop_assert_eq!(wire.len(), msg.encoded_len());
        prop_assert_eq!(wire.len() % 4, 0);
        prop_assert_eq!(peek_total_len(&wire), Ok(wire.len()));
        prop_assert_eq!(Message::decode(&wire), Ok((msg.clone(), wire.len())));
        let mut more = wire.clone();
        more.extend_from_slice(&trailer);
        prop_assert_eq!(Message::decode(&more), Ok((msg, wire.len())));
    }

    #[test]
    fn strict_prefixes_are_incomplete(msg in arb_message()) {
        let wire = msg.to_bytes();
        for k in 0..wire.len() {
            match Message::decode(&wire[..k]) {
                Err(DecodeError::Incomplete { needed }) => prop_assert!(needed > k && needed <= wire.len()),
                other => prop_assert!(false, "prefix {} gave {:?}", k, other),
            }
        }
    }

    #[test]
    fn junk_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1100)) {
        check_junk(&data)?;
    }

    /// Junk behind a valid header reaches the TLV parser.
    #[test]
    fn junk_tlvs_never_panic(words in 1u8..=255, body in proptest::collection::vec(any::<u8>(), 0..1020)) {
        let mut data = vec![VERSION, words];
        data.extend_from_slice(&MAGIC.to_be_bytes());
        data.extend(body);
        check_junk(&data)?;
    }

    /// Small TLV soup: valid-looking type/length pairs, so decoding often
    /// succeeds and the re-encode path is exercised.
    #[test]
    fn tlv_soup(tlvs in proptest::collection::vec(
        (prop_oneof![Just(1u8), Just(10), Just(20), Just(21), Just(22), Just(30), any::<u8>()],
         1u8..8, any::<[u8; 30]>()), 0..4)) {
        let mut data = vec![VERSION, 0, 0x22, 0x63];
        for (t, l, fill) in tlvs {
            data.push(t);
            data.push(l);
            let body = usize::from(l) * 4 - 2;
            data.extend(fill.iter().cycle().take(body));
        }
        data[1] = (data.len() / 4) as u8;
        check_junk(&data)?;
    }
}

fn check_junk(data: &[u8]) -> Result<(), TestCaseError> {
    let peek = peek_total_len(data);
    match Message::decode(data) {
        Ok((msg, used)) => {
            prop_assert!(used <= data.len() && used <= MAX_MESSAGE_LEN);
            prop_assert_eq!(peek, Ok(used));
            let wire = msg.to_bytes();
            // Re-encoding is canonical (zero padding, zeroed unassigned
            // fields), so it is never longer than what was decoded.
            prop_assert!(wire.len() <= used);
            prop_assert_eq!(Message::decode(&wire), Ok((msg, wire.len())));
        }
        Err(DecodeError::Incomplete { needed }) => {
            prop_assert!(needed > data.len() && needed <= MAX_MESSAGE_LEN);
        }
        Err(e) => {
            prop_assert!(e.error_tlv().is_some());
        }
    }
    Ok(())
}
