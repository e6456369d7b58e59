//! Open code-point newtypes: [`TlvType`] and [`ErrorCode`].
//!
//! Both are plain `u8` wrappers so that values this crate does not know
//! survive decoding unchanged. Known values have associated constants and a
//! readable `Debug`; unknown values print as hex.

use std::fmt;

/// The Type field of a Convert TLV (IANA "Convert TLVs" registry).
///
/// Open newtype: unknown values survive and `Debug`-print as hex
/// (`TlvType(0x2a)`); known values print as their name (`Connect`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TlvType(pub u8);

impl TlvType {
    /// Info TLV (1): client asks which TCP extensions the converter supports.
    pub const INFO: Self = Self(1);
    /// Connect TLV (10): client asks the converter to connect to a remote peer.
    pub const CONNECT: Self = Self(10);
    /// Extended TCP Header TLV (20): converter returns the server's SYN+ACK header.
    pub const EXTENDED_TCP_HEADER: Self = Self(20);
    /// Supported TCP Extensions TLV (21): converter lists supported TCP option kinds.
    pub const SUPPORTED_TCP_EXTENSIONS: Self = Self(21);
    /// Cookie TLV (22): opaque converter cookie.
    pub const COOKIE: Self = Self(22);
    /// Error TLV (30).
    pub const ERROR: Self = Self(30);

    /// Every TLV type defined by RFC 8803.
    pub const ALL: [Self; 6] = [
        Self::INFO,
        Self::CONNECT,
        Self::EXTENDED_TCP_HEADER,
        Self::SUPPORTED_TCP_EXTENSIONS,
        Self::COOKIE,
        Self::ERROR,
    ];

    /// Human-readable name, or `None` for types RFC 8803 does not define.
    pub fn known_name(&self) -> Option<&'static str> {
        Some(match *self {
            Self::INFO => "Info",
            Self::CONNECT => "Connect",
            Self::EXTENDED_TCP_HEADER => "Extended TCP Header",
            Self::SUPPORTED_TCP_EXTENSIONS => "Supported TCP Extensions",
            Self::COOKIE => "Cookie",
            Self::ERROR => "Error",
            _ => return None,
        })
    }

    /// `true` if RFC 8803 defines this type.
    pub fn is_known(&self) -> bool {
        self.known_name().is_some()
    }
}

impl fmt::Debug for TlvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known_name() {
            Some(n) => f.write_str(&n.replace(' ', "")),
            None => write!(f, "TlvType({:#04x})", self.0),
        }
    }
}

impl fmt::Display for TlvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.known_name() {
            Some(n) => write!(f, "{n} TLV ({})", self.0),
            None => write!(f, "unknown TLV ({})", self.0),
        }
    }
}

/// The Error Code field of an Error TLV (IANA "Convert Errors" registry).
///
/// Ranges: 0-31 message validation and processing errors, 32-63 client-side
/// errors, 64-95 Transport Converter-side errors, 96-127 errors caused by the
/// destination server, 192-255 private use.
///
/// Open newtype: unknown values survive and `Debug`-print as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u8);

impl ErrorCode {
    /// 0: the version in the fixed header is not supported.
    /// Value: the version(s) the sender supports.
    pub const UNSUPPORTED_VERSION: Self = Self(0);
    /// 1: the message could not be parsed and validated.
    pub const MALFORMED_MESSAGE: Self = Self(1);
    /// 2: a TLV type is not supported. Value: the unsupported type.
    pub const UNSUPPORTED_MESSAGE: Self = Self(2);
    /// 3: the converter requires a Cookie TLV and none was present.
    pub const MISSING_COOKIE: Self = Self(3);
    /// 32: the converter refused the request (authorization failure).
    pub const NOT_AUTHORIZED: Self = Self(32);
    /// 33: a TCP option requested in the Connect TLV cannot be used.
    /// Value: the unsupported option kinds.
    pub const UNSUPPORTED_TCP_OPTION: Self = Self(33);
    /// 64: the converter lacks resources. Value: suggested back-off in seconds.
    pub const RESOURCE_EXCEEDED: Self = Self(64);
    /// 65: the converter has a network failure relaying the request.
    pub const NETWORK_FAILURE: Self = Self(65);
    /// 96: the destination answered with RST.
    pub const CONNECTION_RESET: Self = Self(96);
    /// 97: an ICMP destination unreachable was received.
    /// Value: the ICMP Code field.
    pub const DESTINATION_UNREACHABLE: Self = Self(97);

    /// Every error code defined by RFC 8803.
    pub const ALL: [Self; 10] = [
        Self::UNSUPPORTED_VERSION,
        Self::MALFORMED_MESSAGE,
        Self::UNSUPPORTED_MESSAGE,
        Self::MISSING_COOKIE,
        Self::NOT_AUTHORIZED,
        Self::UNSUPPORTED_TCP_OPTION,
        Self::RESOURCE_EXCEEDED,
        Self::NETWORK_FAILURE,
        Self::CONNECTION_RESET,
        Self::DESTINATION_UNREACHABLE,
    ];

    /// The RFC's name for this code (`"Destination Unreachable"`), or
    /// `"unknown"` for codes RFC 8803 does not define.
    pub fn name(&self) -> &'static str {
        match *self {
            Self::UNSUPPORTED_VERSION => "Unsupported Version",
            Self::MALFORMED_MESSAGE => "Malformed Message",
            Self::UNSUPPORTED_MESSAGE => "Unsupported Message",
            Self::MISSING_COOKIE => "Missing Cookie",
            Self::NOT_AUTHORIZED => "Not Authorized",
            Self::UNSUPPORTED_TCP_OPTION => "Unsupported TCP Option",
            Self::RESOURCE_EXCEEDED => "Resource Exceeded",
            Self::NETWORK_FAILURE => "Network Failure",
            Self::CONNECTION_RESET => "Connection Reset",
            Self::DESTINATION_UNREACHABLE => "Destination Unreachable",
            _ => "unknown",
        }
    }

    /// `true` if RFC 8803 defines this code.
    pub fn is_known(&self) -> bool {
        Self::ALL.contains(self)
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_known() {
            f.write_str(&self.name().replace(' ', ""))
        } else {
            write!(f, "ErrorCode({:#04x})", self.0)
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display() {
        assert_eq!(format!("{:?}", TlvType::CONNECT), "Connect");
        assert_eq!(format!("{:?}", TlvType(0x2a)), "TlvType(0x2a)");
        assert_eq!(format!("{}", TlvType::COOKIE), "Cookie TLV (22)");
        assert_eq!(format!("{:?}", ErrorCode::NOT_AUTHORIZED), "NotAuthorized");
        assert_eq!(format!("{:?}", ErrorCode(200)), "ErrorCode(0xc8)");
        assert_eq!(
            ErrorCode::DESTINATION_UNREACHABLE.to_string(),
            "Destination Unreachable (97)"
        );
        assert_eq!(ErrorCode(5).name(), "unknown");
        assert_eq!(ErrorCode(5).to_string(), "unknown (5)");
    }
}
