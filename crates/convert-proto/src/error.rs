//! Decode and encode errors, and the Error TLV a converter answers with.

use std::fmt;

use crate::tlv::ErrorTlv;
use crate::types::TlvType;
use crate::VERSION;

/// Why a message was rejected as malformed, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    /// What is wrong.
    pub kind: MalformedKind,
    /// Byte offset from the start of the message (the fixed header) of the
    /// field or TLV at fault.
    pub offset: usize,
}

/// The kinds of malformation the decoder detects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedKind {
    /// The Magic Number field is not [`MAGIC`](crate::MAGIC).
    BadMagic(u16),
    /// Total Length is 0 words: smaller than the fixed header itself.
    TotalLengthTooShort,
    /// A TLV has Length 0 (it must at least cover its Type and Length).
    TlvLengthZero(TlvType),
    /// A TLV's Length runs past the end of the message (Total Length).
    TlvOverrun(TlvType),
    /// A second TLV of a type that already appeared in the message.
    DuplicateTlv(TlvType),
    /// A TLV whose Length is wrong for its type (e.g. Info TLV not 1 word).
    BadTlvLength(TlvType),
    /// A Connect TLV shorter than 5 words (port + 128-bit address).
    BadConnectLength,
    /// The TCP Options of a Connect TLV are not a well-formed option list,
    /// or the padding after End-of-Option-List is not zero.
    BadTcpOptions,
    /// Non-zero bytes in the zero padding of a Supported TCP Extensions TLV.
    BadPadding(TlvType),
}

impl fmt::Display for MalformedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "bad magic number {m:#06x}"),
            Self::TotalLengthTooShort => f.write_str("total length smaller than the header"),
            Self::TlvLengthZero(t) => write!(f, "{t} has length zero"),
            Self::TlvOverrun(t) => write!(f, "{t} runs past the end of the message"),
            Self::DuplicateTlv(t) => write!(f, "duplicate {t}"),
            Self::BadTlvLength(t) => write!(f, "{t} has an invalid length"),
            Self::BadConnectLength => f.write_str("Connect TLV shorter than 5 words"),
            Self::BadTcpOptions => f.write_str("malformed TCP options in Connect TLV"),
            Self::BadPadding(t) => write!(f, "non-zero padding in {t}"),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.kind, self.offset)
    }
}

/// Why [`Message::decode`](crate::Message::decode) could not return a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// More bytes are needed. `needed` is the total number of bytes the
    /// buffer must hold before decoding can progress (always
    /// `> buf.len()`): 4 while the header is incomplete, then the header's
    /// Total Length in bytes.
    #[error("incomplete Convert message: need {needed} bytes")]
    Incomplete {
        /// Total bytes the buffer must hold.
        needed: usize,
    },
    /// The Version field is not [`VERSION`].
    #[error("unsupported Convert version {0}")]
    UnsupportedVersion(u8),
    /// The message is not well formed.
    #[error("malformed Convert message: {0}")]
    Malformed(Malformed),
    /// A TLV type this implementation does not know.
    #[error("unsupported Convert message: {0}")]
    UnsupportedMessage(TlvType),
}

impl DecodeError {
    pub(crate) fn malformed(kind: MalformedKind, offset: usize) -> Self {
        Self::Malformed(Malformed { kind, offset })
    }

    /// The Error TLV a Transport Converter answers this error with, or
    /// `None` for [`DecodeError::Incomplete`].
    ///
    /// * `UnsupportedVersion` → Unsupported Version carrying [`VERSION`].
    /// * `Malformed` → Malformed Message with an empty echo (just the
    ///   alignment byte); use [`DecodeError::error_tlv_echoing`] to echo the
    ///   received message as the RFC asks.
    /// * `UnsupportedMessage(t)` → Unsupported Message carrying `t`.
    pub fn error_tlv(&self) -> Option<ErrorTlv> {
        self.error_tlv_echoing(&[])
    }

    /// Like [`DecodeError::error_tlv`], but a Malformed Message error echoes
    /// `received` (truncated to fit one message) in its Value field.
    pub fn error_tlv_echoing(&self, received: &[u8]) -> Option<ErrorTlv> {
        match self {
            Self::Incomplete { .. } => None,
            Self::UnsupportedVersion(_) => Some(ErrorTlv::unsupported_version(VERSION)),
            Self::Malformed(_) => Some(ErrorTlv::malformed(received)),
            Self::UnsupportedMessage(t) => Some(ErrorTlv::unsupported_message(*t)),
        }
    }
}

/// Why a [`Message`](crate::Message) cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message would exceed [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN)
    /// bytes (the 8-bit Total Length field counts 32-bit words).
    #[error("Convert message too long: {len} bytes (max {max})")]
    TooLong {
        /// Encoded length in bytes.
        len: usize,
        /// The maximum, [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN).
        max: usize,
    },
}
