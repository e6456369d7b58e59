//! RFC 8803 (0-RTT TCP Convert Protocol) wire format, sans-IO.
//!
//! # What it does
//!
//! Encodes and decodes Convert messages: the 32-bit fixed header
//! (Version, Total Length in 32-bit words, Magic Number `0x2263`) followed by
//! TLVs — Info (1), Connect (10, basic and extended-with-TCP-options form),
//! Extended TCP Header (20), Supported TCP Extensions (21), Cookie (22) and
//! Error (30, with every RFC error code and a constructor per code whose
//! Value field the RFC defines).
//!
//! * Decoding is incremental: [`Message::decode`] returns
//!   [`DecodeError::Incomplete`] with the total number of bytes needed until
//!   the whole message (its Total Length) is buffered, and reports how many
//!   bytes it consumed so the caller can hand the rest (application data)
//!   on. [`peek_total_len`] reads just the 4-byte header.
//! * Decoding is strict: every length is checked; overruns, zero-length
//!   TLVs, duplicate TLVs, short Connect TLVs and malformed TCP option
//!   lists are [`DecodeError::Malformed`]; unknown TLV types are
//!   [`DecodeError::UnsupportedMessage`]; a wrong version is
//!   [`DecodeError::UnsupportedVersion`]. [`DecodeError::error_tlv`] gives
//!   the Error TLV a converter should answer with.
//! * Decoding never panics and never reads or allocates more than
//!   [`MAX_MESSAGE_LEN`] (1020) bytes, the most an 8-bit word count allows.
//! * Encoding zero-pads every TLV to a 32-bit boundary.
//!
//! # What it doesn't do
//!
//! No I/O, sockets, TCP Fast Open or timers; no converter or client state
//! machine (which TLVs to send when, cookie validation, back-off policy);
//! no interpretation of the TCP header carried in an Extended TCP Header
//! TLV. IPv6 flow info / scope id are not carried by the protocol.
//!
//! # Module map
//!
//! * `types` — [`TlvType`] and [`ErrorCode`], open `u8` newtypes.
//! * `tlv` — [`Tlv`], [`Connect`], [`ErrorTlv`] and per-TLV encode/decode.
//! * `message` — [`Message`] (header + TLVs) and [`peek_total_len`].
//! * `error` — [`DecodeError`], [`Malformed`], [`MalformedKind`],
//!   [`EncodeError`].
//!
//! # Example
//!
//! ```
//! use convert_proto::{Connect, Message, Tlv};
//!
//! let req = Message::new(vec![Tlv::Connect(Connect::new("192.0.2.1:443".parse().unwrap()))]);
//! let mut wire = req.to_bytes();
//! wire.extend_from_slice(b"GET / HTTP/1.1\r\n"); // 0-RTT data follows
//! let (msg, used) = Message::decode(&wire).unwrap();
//! assert_eq!(msg, req);
//! assert_eq!(&wire[used..], b"GET / HTTP/1.1\r\n");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod message;
mod tlv;
mod types;

pub use error::{DecodeError, EncodeError, Malformed, MalformedKind};
pub use message::{peek_total_len, Message};
pub use tlv::{Connect, ErrorTlv, Tlv, CONNECT_BASE_LEN, MAX_ERROR_VALUE_LEN};
pub use types::{ErrorCode, TlvType};

/// The Convert protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// The Magic Number of the fixed header (`0x2263`, i.e. decimal 8803).
pub const MAGIC: u16 = 0x2263;

/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 4;

/// Largest possible message in bytes: Total Length is an 8-bit count of
/// 32-bit words, header included (255 * 4).
pub const MAX_MESSAGE_LEN: usize = 255 * 4;
