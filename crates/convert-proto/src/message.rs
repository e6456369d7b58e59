//! The Convert message: fixed header + TLVs. Incremental, strict decoding.
//!
//! Fixed header:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Version    |  Total Length |          Magic Number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Total Length counts 32-bit words, including the header itself.

use bytes::BufMut;

use crate::error::{DecodeError, EncodeError, MalformedKind};
use crate::tlv::{Connect, ErrorTlv, Tlv};
use crate::types::TlvType;
use crate::{HEADER_LEN, MAGIC, MAX_MESSAGE_LEN, VERSION};

/// Peek at a fixed header: validate Magic Number and Version and return the
/// message's total length in bytes (`Total Length * 4`).
///
/// Returns [`DecodeError::Incomplete`] with `needed: 4` if fewer than 4
/// bytes are available. The magic number is checked before the version: a
/// stream that is not Convert at all is reported as malformed (bad magic)
/// rather than as an unsupported version. A Total Length of 0 is malformed.
pub fn peek_total_len(buf: &[u8]) -> Result<usize, DecodeError> {
    let Some(hdr) = buf.get(..HEADER_LEN) else {
        return Err(DecodeError::Incomplete { needed: HEADER_LEN });
    };
    let magic = u16::from_be_bytes([hdr[2], hdr[3]]);
    if magic != MAGIC {
        return Err(DecodeError::malformed(MalformedKind::BadMagic(magic), 2));
    }
    if hdr[0] != VERSION {
        return Err(DecodeError::UnsupportedVersion(hdr[0]));
    }
    if hdr[1] == 0 {
        return Err(DecodeError::malformed(
            MalformedKind::TotalLengthTooShort,
            1,
        ));
    }
    Ok(usize::from(hdr[1]) * 4)
}

/// A Convert message: the fixed header (implicit) and its TLVs, in order.
///
/// A message with no TLVs (header only, Total Length 1) is valid.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Message {
    /// The TLVs, in wire order. A decoded message never holds two TLVs of
    /// the same type.
    pub tlvs: Vec<Tlv>,
}

impl From<Vec<Tlv>> for Message {
    fn from(tlvs: Vec<Tlv>) -> Self {
        Self { tlvs }
    }
}

impl Message {
    /// A message with the given TLVs.
    pub fn new(tlvs: Vec<Tlv>) -> Self {
        Self { tlvs }
    }

    /// An empty message (fixed header only).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Append a TLV (builder style).
    #[must_use]
    pub fn with(mut self, tlv: Tlv) -> Self {
        self.tlvs.push(tlv);
        self
    }

    /// Decode one message from the start of `buf`.
    ///
    /// On success returns the message and the number of bytes it occupied
    /// (the header's Total Length in bytes); bytes after that (application
    /// data) are not consumed. The decoder waits for the whole message
    /// ([`DecodeError::Incomplete`]) before validating TLVs, so feeding a
    /// growing prefix gives `Incomplete` until the message is complete and
    /// then exactly the result of decoding it all at once. Header errors
    /// (magic, version, zero length) are reported as soon as 4 bytes are
    /// available. Never reads more than [`MAX_MESSAGE_LEN`] bytes and never
    /// panics.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        let total = peek_total_len(buf)?;
        let Some(msg) = buf.get(..total) else {
            return Err(DecodeError::Incomplete { needed: total });
        };
        let mut tlvs = Vec::new();
        let mut seen = [false; 256];
        let mut off = HEADER_LEN;
        // `total` and `off` are multiples of 4, so a TLV's Type and Length
        // bytes are always in bounds when `off < total`.
        while off < total {
            let ty = TlvType(msg[off]);
            let len = usize::from(msg[off + 1]) * 4;
            if len == 0 {
                return Err(DecodeError::malformed(
                    MalformedKind::TlvLengthZero(ty),
                    off,
                ));
            }
            if len > total - off {
                return Err(DecodeError::malformed(MalformedKind::TlvOverrun(ty), off));
            }
            let tlv = Tlv::decode_body(ty, &msg[off + 2..off + len], off)?;
            let slot = &mut seen[usize::from(ty.0)];
            if *slot {
                return Err(DecodeError::malformed(MalformedKind::DuplicateTlv(ty), off));
            }
            *slot = true;
            tlvs.push(tlv);
            off += len;
        }
        Ok((Self { tlvs }, total))
    }

    /// Encoded length in bytes (header included; a multiple of 4).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.tlvs.iter().map(Tlv::encoded_len).sum::<usize>()
    }

    /// Check that the message fits the 8-bit Total Length field.
    pub fn check(&self) -> Result<(), EncodeError> {
        let len = self.encoded_len();
        if len > MAX_MESSAGE_LEN {
            return Err(EncodeError::TooLong {
                len,
                max: MAX_MESSAGE_LEN,
            });
        }
        Ok(())
    }

    /// Encode into `out`, or fail without writing anything if the message
    /// is longer than [`MAX_MESSAGE_LEN`].
    pub fn try_encode(&self, out: &mut impl BufMut) -> Result<(), EncodeError> {
        self.check()?;
        let total = self.encoded_len();
        out.put_u8(VERSION);
        out.put_u8(u8::try_from(total / 4).unwrap_or(u8::MAX));
        out.put_u16(MAGIC);
        for tlv in &self.tlvs {
            tlv.encode(out);
        }
        Ok(())
    }

    /// Encode into `out`, padding every TLV to a 32-bit boundary.
    ///
    /// # Panics
    ///
    /// If the message is longer than [`MAX_MESSAGE_LEN`] bytes (see
    /// [`Message::check`] / [`Message::try_encode`]). Messages built from the
    /// [`ErrorTlv`] constructors and basic Connect/Info TLVs always fit.
    pub fn encode(&self, out: &mut impl BufMut) {
        if let Err(e) = self.try_encode(out) {
            panic!("{e}");
        }
    }

    /// Encode to a fresh `Vec`.
    ///
    /// # Panics
    ///
    /// As [`Message::encode`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode(&mut v);
        v
    }

    /// Encode to a fresh `Vec`, or fail if the message is too long.
    pub fn try_to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        self.check()?;
        Ok(self.to_bytes())
    }

    /// The first TLV of type `ty`, if any.
    pub fn get(&self, ty: TlvType) -> Option<&Tlv> {
        self.tlvs.iter().find(|t| t.tlv_type() == ty)
    }

    /// `true` if the message holds an Info TLV.
    pub fn has_info(&self) -> bool {
        self.tlvs.iter().any(|t| matches!(t, Tlv::Info))
    }

    /// The Connect TLV, if any.
    pub fn connect(&self) -> Option<&Connect> {
        self.tlvs.iter().find_map(|t| match t {
            Tlv::Connect(c) => Some(c),
            _ => None,
        })
    }

    /// The Cookie TLV's opaque value (as on the wire, padding included).
    pub fn cookie(&self) -> Option<&[u8]> {
        self.tlvs.iter().find_map(|t| match t {
            Tlv::Cookie(c) => Some(c.as_slice()),
            _ => None,
        })
    }

    /// The Error TLV, if any.
    pub fn error(&self) -> Option<&ErrorTlv> {
        self.tlvs.iter().find_map(|t| match t {
            Tlv::Error(e) => Some(e),
            _ => None,
        })
    }

    /// The Extended TCP Header TLV's bytes (the server's SYN+ACK TCP header).
    pub fn extended_tcp_header(&self) -> Option<&[u8]> {
        self.tlvs.iter().find_map(|t| match t {
            Tlv::ExtendedTcpHeader(h) => Some(h.as_slice()),
            _ => None,
        })
    }

    /// The Supported TCP Extensions TLV's option kinds.
    pub fn supported_tcp_extensions(&self) -> Option<&[u8]> {
        self.tlvs.iter().find_map(|t| match t {
            Tlv::SupportedTcpExtensions(k) => Some(k.as_slice()),
            _ => None,
        })
    }
}
