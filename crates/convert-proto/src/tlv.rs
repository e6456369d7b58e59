//! The Convert TLVs: [`Tlv`], [`Connect`], [`ErrorTlv`] and their wire forms.
//!
//! Generic TLV layout (all lengths in 32-bit words, covering Type and Length):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Length    |             Value ...         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

use bytes::BufMut;

use crate::error::{DecodeError, MalformedKind};
use crate::types::{ErrorCode, TlvType};
use crate::{HEADER_LEN, MAX_MESSAGE_LEN};

/// Largest Value field an Error TLV can carry in a message holding only
/// that TLV: 1020 (max message) - 4 (header) - 3 (Type, Length, Error Code).
pub const MAX_ERROR_VALUE_LEN: usize = MAX_MESSAGE_LEN - HEADER_LEN - 3;

/// Bytes in a Connect TLV before its TCP Options: Type, Length, Remote Peer
/// Port (16 bits), Remote Peer IP Address (128 bits).
pub const CONNECT_BASE_LEN: usize = 20;

/// Round `n` up to a multiple of 4.
pub(crate) fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Connect TLV (type 10): ask the converter to connect to `remote`.
///
/// ```text
/// +---------------+---------------+-------------------------------+
/// |   Type=10     |    Length     |        Remote Peer Port       |
/// +---------------+---------------+-------------------------------+
/// |                Remote Peer IP Address (128 bits)              |
/// |                              ...                              |
/// +---------------------------------------------------------------+
/// |             TCP Options (variable, zero padded)               |
/// +---------------------------------------------------------------+
/// ```
///
/// Length is 5 words without options. IPv4 peers are carried as
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) and decoded back to
/// [`SocketAddr::V4`]. IPv6 flow info and scope id are not carried (decode
/// yields 0 for both).
///
/// `tcp_options` holds the raw TCP option list the client asks the converter
/// to use towards the server, without trailing padding. On the wire it is
/// padded with zero bytes (End-of-Option-List) to a 32-bit boundary; the
/// decoder walks the option list and stops at the first End-of-Option-List,
/// requiring everything after it to be zero. So encode → decode round-trips
/// any well-formed option list that does not itself contain kind 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// The remote peer (final destination).
    pub remote: SocketAddr,
    /// Raw TCP options (extended form), without padding; empty for the
    /// basic 5-word form.
    pub tcp_options: Vec<u8>,
}

impl Connect {
    /// A basic Connect TLV (no TCP options) towards `remote`.
    pub fn new(remote: SocketAddr) -> Self {
        Self {
            remote,
            tcp_options: Vec::new(),
        }
    }

    /// A Connect TLV carrying `tcp_options` (the extended form).
    pub fn with_tcp_options(remote: SocketAddr, tcp_options: Vec<u8>) -> Self {
        Self {
            remote,
            tcp_options,
        }
    }

    fn wire_ip(&self) -> Ipv6Addr {
        match self.remote.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        }
    }
}

/// Error TLV (type 30).
///
/// ```text
/// +---------------+---------------+---------------+---------------+
/// |   Type=30     |    Length     |  Error Code   |  Value ...    |
/// +---------------+---------------+---------------+---------------+
/// ```
///
/// `value` holds every byte after the Error Code, *including* any padding:
/// on the wire the TLV is zero-padded to a 32-bit boundary and the decoder
/// cannot tell padding from value, so a decoded `value` always has
/// `len() % 4 == 1`. The constructors below produce values of that shape,
/// so they round-trip exactly. Use the accessors (`backoff_secs`,
/// `supported_versions`, …) to interpret the value per code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorTlv {
    /// The error code.
    pub code: ErrorCode,
    /// The code-specific Value field (see the constructors).
    pub value: Vec<u8>,
}

/// Build a value of the shape `bytes`, zero padded so that
/// `3 + len` is a multiple of 4.
fn padded_value(bytes: &[u8]) -> Vec<u8> {
    let n = bytes.len().min(MAX_ERROR_VALUE_LEN);
    let mut v = Vec::with_capacity(pad4(3 + n) - 3);
    v.extend_from_slice(&bytes[..n]);
    v.resize(pad4(3 + n) - 3, 0);
    v
}

/// Bytes of a zero-padded list: everything up to the first zero.
fn strip_zero_list(v: &[u8]) -> &[u8] {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    &v[..end]
}

impl ErrorTlv {
    /// An error whose Value field is a single zero byte (as the RFC requires
    /// for Not Authorized, Connection Reset, …).
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            value: vec![0],
        }
    }

    /// Unsupported Version (0): Value is the version the sender supports.
    pub fn unsupported_version(supported: u8) -> Self {
        Self::unsupported_versions(&[supported])
    }

    /// Unsupported Version (0) listing several supported versions, one byte
    /// each, zero padded to a 32-bit boundary.
    pub fn unsupported_versions(supported: &[u8]) -> Self {
        Self {
            code: ErrorCode::UNSUPPORTED_VERSION,
            value: padded_value(supported),
        }
    }

    /// Malformed Message (1): the Value field echoes the received message
    /// "shifted by one byte" — one zero byte, then the message, so that the
    /// echoed message keeps its original 32-bit alignment within the TLV.
    /// The echo is truncated so the TLV fits in a single Convert message.
    pub fn malformed(received: &[u8]) -> Self {
        let n = received.len().min(MAX_ERROR_VALUE_LEN - 1);
        let mut v = Vec::with_capacity(1 + n);
        v.push(0);
        v.extend_from_slice(&received[..n]);
        Self {
            code: ErrorCode::MALFORMED_MESSAGE,
            value: padded_value(&v),
        }
    }

    /// Unsupported Message (2): Value is the unsupported TLV type.
    pub fn unsupported_message(tlv: TlvType) -> Self {
        Self {
            code: ErrorCode::UNSUPPORTED_MESSAGE,
            value: vec![tlv.0],
        }
    }

    /// Missing Cookie (3): Value zero. The converter is expected to send
    /// the cookie to use in a separate [`Tlv::Cookie`] in the same message.
    pub fn missing_cookie() -> Self {
        Self::new(ErrorCode::MISSING_COOKIE)
    }

    /// Not Authorized (32): Value zero.
    pub fn not_authorized() -> Self {
        Self::new(ErrorCode::NOT_AUTHORIZED)
    }

    /// Unsupported TCP Option (33): Value lists the unsupported TCP option
    /// kinds, one byte each, zero padded to a 32-bit boundary.
    pub fn unsupported_tcp_options(kinds: &[u8]) -> Self {
        Self {
            code: ErrorCode::UNSUPPORTED_TCP_OPTION,
            value: padded_value(kinds),
        }
    }

    /// Resource Exceeded (64): Value is the suggested delay in seconds
    /// before the client retries; 0 means the default (at least 30 s).
    pub fn resource_exceeded(backoff_secs: u8) -> Self {
        Self {
            code: ErrorCode::RESOURCE_EXCEEDED,
            value: vec![backoff_secs],
        }
    }

    /// Network Failure (65): Value is the suggested delay in seconds, as
    /// for Resource Exceeded (0 = default).
    pub fn network_failure(backoff_secs: u8) -> Self {
        Self {
            code: ErrorCode::NETWORK_FAILURE,
            value: vec![backoff_secs],
        }
    }

    /// Connection Reset (96): Value zero.
    pub fn connection_reset() -> Self {
        Self::new(ErrorCode::CONNECTION_RESET)
    }

    /// Destination Unreachable (97): Value echoes the Code field of the
    /// ICMP destination unreachable message received.
    pub fn destination_unreachable(icmp_code: u8) -> Self {
        Self {
            code: ErrorCode::DESTINATION_UNREACHABLE,
            value: vec![icmp_code],
        }
    }

    /// First byte of the Value field (0 if empty).
    pub fn first_value_byte(&self) -> u8 {
        self.value.first().copied().unwrap_or(0)
    }

    /// For Resource Exceeded / Network Failure: the suggested back-off in
    /// seconds (0 = default, at least 30 s). `None` for other codes.
    pub fn backoff_secs(&self) -> Option<u8> {
        matches!(
            self.code,
            ErrorCode::RESOURCE_EXCEEDED | ErrorCode::NETWORK_FAILURE
        )
        .then(|| self.first_value_byte())
    }

    /// For Unsupported Version: the versions the peer supports (padding
    /// stripped). `None` for other codes.
    pub fn supported_versions(&self) -> Option<&[u8]> {
        (self.code == ErrorCode::UNSUPPORTED_VERSION).then(|| strip_zero_list(&self.value))
    }

    /// For Unsupported Message: the TLV type the peer did not support.
    pub fn unsupported_tlv(&self) -> Option<TlvType> {
        (self.code == ErrorCode::UNSUPPORTED_MESSAGE).then(|| TlvType(self.first_value_byte()))
    }

    /// For Unsupported TCP Option: the option kinds (padding stripped).
    pub fn unsupported_tcp_option_kinds(&self) -> Option<&[u8]> {
        (self.code == ErrorCode::UNSUPPORTED_TCP_OPTION).then(|| strip_zero_list(&self.value))
    }

    /// For Destination Unreachable: the ICMP Code field echoed.
    pub fn icmp_code(&self) -> Option<u8> {
        (self.code == ErrorCode::DESTINATION_UNREACHABLE).then(|| self.first_value_byte())
    }

    /// For Malformed Message: the echoed message (after the alignment byte;
    /// may include trailing padding zeros).
    pub fn echoed_message(&self) -> Option<&[u8]> {
        (self.code == ErrorCode::MALFORMED_MESSAGE).then(|| self.value.get(1..).unwrap_or(&[]))
    }
}

/// One Convert TLV.
///
/// Values that carry a variable-length byte string are stored as on the
/// wire (see each variant for how padding is handled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tlv {
    /// Info TLV (type 1, length 1 word, 16 bits unassigned/zero): a client
    /// asks the converter which TCP extensions it supports.
    Info,
    /// Connect TLV (type 10).
    Connect(Connect),
    /// Extended TCP Header TLV (type 20): 16 unassigned bits, then the TCP
    /// header (with options) the converter received in the server's SYN+ACK.
    /// The bytes are stored as on the wire after the unassigned field; a
    /// TCP header is always a multiple of 4 bytes, so no padding is needed.
    /// (Non-multiple-of-4 input is zero padded on encode and comes back
    /// padded.)
    ExtendedTcpHeader(Vec<u8>),
    /// Supported TCP Extensions TLV (type 21): 16 unassigned bits, then the
    /// list of supported TCP option kinds, one byte each, zero padded.
    /// Decoding strips the padding (kind 0 is never a list entry).
    SupportedTcpExtensions(Vec<u8>),
    /// Cookie TLV (type 22): 16 zero bits, then the opaque cookie. Stored as
    /// on the wire (including padding); use cookies whose length is a
    /// multiple of 4 to round-trip exactly.
    Cookie(Vec<u8>),
    /// Error TLV (type 30).
    Error(ErrorTlv),
}

impl Tlv {
    /// The Type field of this TLV.
    pub fn tlv_type(&self) -> TlvType {
        match self {
            Self::Info => TlvType::INFO,
            Self::Connect(_) => TlvType::CONNECT,
            Self::ExtendedTcpHeader(_) => TlvType::EXTENDED_TCP_HEADER,
            Self::SupportedTcpExtensions(_) => TlvType::SUPPORTED_TCP_EXTENSIONS,
            Self::Cookie(_) => TlvType::COOKIE,
            Self::Error(_) => TlvType::ERROR,
        }
    }

    /// Encoded length of this TLV in bytes (a multiple of 4).
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Info => 4,
            Self::Connect(c) => CONNECT_BASE_LEN + pad4(c.tcp_options.len()),
            Self::ExtendedTcpHeader(b) | Self::SupportedTcpExtensions(b) | Self::Cookie(b) => {
                4 + pad4(b.len())
            }
            Self::Error(e) => pad4(3 + e.value.len()),
        }
    }

    /// Write this TLV. The caller guarantees `encoded_len() <= 1020`.
    pub(crate) fn encode(&self, out: &mut impl BufMut) {
        let len = self.encoded_len();
        debug_assert!(len <= MAX_MESSAGE_LEN && len % 4 == 0);
        out.put_u8(self.tlv_type().0);
        out.put_u8(u8::try_from(len / 4).unwrap_or(u8::MAX));
        let body_len = match self {
            Self::Info => {
                out.put_u16(0);
                2
            }
            Self::Connect(c) => {
                out.put_u16(c.remote.port());
                out.put_slice(&c.wire_ip().octets());
                out.put_slice(&c.tcp_options);
                18 + c.tcp_options.len()
            }
            Self::ExtendedTcpHeader(b) | Self::SupportedTcpExtensions(b) | Self::Cookie(b) => {
                out.put_u16(0);
                out.put_slice(b);
                2 + b.len()
            }
            Self::Error(e) => {
                out.put_u8(e.code.0);
                out.put_slice(&e.value);
                1 + e.value.len()
            }
        };
        out.put_bytes(0, len - 2 - body_len);
    }

    /// Decode the TLV whose Type is `ty` and whose bytes after Type and
    /// Length are `body` (already bounds-checked; `body.len() + 2` is a
    /// non-zero multiple of 4). `off` is the TLV's offset in the message.
    pub(crate) fn decode_body(ty: TlvType, body: &[u8], off: usize) -> Result<Self, DecodeError> {
        let bad = |kind| DecodeError::malformed(kind, off);
        Ok(match ty {
            TlvType::INFO => {
                if body.len() != 2 {
                    return Err(bad(MalformedKind::BadTlvLength(ty)));
                }
                Self::Info
            }
            TlvType::CONNECT => Self::Connect(decode_connect(body, off)?),
            TlvType::EXTENDED_TCP_HEADER => Self::ExtendedTcpHeader(body[2..].to_vec()),
            TlvType::SUPPORTED_TCP_EXTENSIONS => {
                let list = &body[2..];
                let kinds = strip_zero_list(list);
                if list[kinds.len()..].iter().any(|&b| b != 0) {
                    return Err(bad(MalformedKind::BadPadding(ty)));
                }
                Self::SupportedTcpExtensions(kinds.to_vec())
            }
            TlvType::COOKIE => Self::Cookie(body[2..].to_vec()),
            TlvType::ERROR => Self::Error(ErrorTlv {
                code: ErrorCode(body[0]),
                value: body[1..].to_vec(),
            }),
            other => return Err(DecodeError::UnsupportedMessage(other)),
        })
    }
}

fn decode_connect(body: &[u8], off: usize) -> Result<Connect, DecodeError> {
    if body.len() + 2 < CONNECT_BASE_LEN {
        return Err(DecodeError::malformed(MalformedKind::BadConnectLength, off));
    }
    let port = u16::from_be_bytes([body[0], body[1]]);
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&body[2..18]);
    let ip6 = Ipv6Addr::from(octets);
    let remote = match ip6.to_ipv4_mapped() {
        Some(v4) => SocketAddr::new(IpAddr::V4(v4), port),
        None => SocketAddr::V6(SocketAddrV6::new(ip6, port, 0, 0)),
    };
    let opts = &body[18..];
    let used = tcp_options_len(opts)
        .ok_or_else(|| DecodeError::malformed(MalformedKind::BadTcpOptions, off))?;
    Ok(Connect {
        remote,
        tcp_options: opts[..used].to_vec(),
    })
}

/// Walk a TCP option list (RFC 9293 §3.1). Returns the length of the option
/// list proper: up to (excluding) the first End-of-Option-List, after which
/// every byte must be zero. `None` if an option overruns, has a length
/// below 2, or non-zero bytes follow End-of-Option-List.
fn tcp_options_len(opts: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => {
                return opts[i..].iter().all(|&b| b == 0).then_some(i);
            }
            1 => i += 1,
            _ => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                i += len;
            }
        }
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_option_walk() {
        assert_eq!(tcp_options_len(&[]), Some(0));
        assert_eq!(tcp_options_len(&[1, 1, 1, 1]), Some(4));
        assert_eq!(tcp_options_len(&[2, 4, 5, 0xb4]), Some(4));
        assert_eq!(tcp_options_len(&[3, 3, 7, 0]), Some(3));
        assert_eq!(tcp_options_len(&[0, 0, 0, 0]), Some(0));
        assert_eq!(tcp_options_len(&[0, 1, 0, 0]), None);
        assert_eq!(tcp_options_len(&[2, 5, 0, 0]), None);
        assert_eq!(tcp_options_len(&[2, 1, 0, 0]), None);
        assert_eq!(tcp_options_len(&[1, 1, 1, 2]), None);
    }

    #[test]
    fn error_value_shapes() {
        for e in [
            ErrorTlv::new(ErrorCode(200)),
            ErrorTlv::unsupported_versions(&[1, 2, 3]),
            ErrorTlv::unsupported_versions(&[1, 2, 3, 4, 5]),
            ErrorTlv::malformed(&[]),
            ErrorTlv::malformed(&[1; 2000]),
            ErrorTlv::unsupported_tcp_options(&[30, 34]),
        ] {
            assert_eq!(e.value.len() % 4, 1, "{e:?}");
            assert!(e.value.len() <= MAX_ERROR_VALUE_LEN);
        }
        assert_eq!(
            ErrorTlv::malformed(&[1; 2000]).value.len(),
            MAX_ERROR_VALUE_LEN
        );
        assert_eq!(
            ErrorTlv::unsupported_versions(&[1, 2, 3]).supported_versions(),
            Some(&[1u8, 2, 3][..])
        );
        assert_eq!(ErrorTlv::resource_exceeded(9).backoff_secs(), Some(9));
        assert_eq!(ErrorTlv::not_authorized().backoff_secs(), None);
        assert_eq!(ErrorTlv::destination_unreachable(3).icmp_code(), Some(3));
        assert_eq!(
            ErrorTlv::unsupported_message(TlvType(99)).unsupported_tlv(),
            Some(TlvType(99))
        );
        assert_eq!(
            ErrorTlv::malformed(&[7, 8]).echoed_message(),
            Some(&[7u8, 8, 0, 0][..])
        );
    }
}
