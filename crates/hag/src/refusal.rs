//! Why a connection was refused or abandoned before relaying, the metric
//! label each reason is counted under (`tandem_hag_refused{reason=..}`:
//! public, so the strings never change) and the RFC 8803 Error TLV it is
//! answered with.

use std::io;

use convert_proto::ErrorTlv;

use crate::cookie::CookieError;
use crate::destination::{Denied, UpstreamError};
use crate::limits::Exceeded;

/// Why a connection was not relayed.
#[derive(Debug)]
pub enum Refusal {
    /// Arrived on a local address that is not an access-facing service
    /// address (no open proxy).
    NotServiceAddress,
    /// The source is outside the access networks.
    OutsideAccessNetworks,
    /// Over the global connection limit.
    GlobalLimit,
    /// Over a per-subscriber or per-source limit.
    Limit(Exceeded),
    /// The Convert message does not decode; the reply echoes it when the RFC
    /// asks (`None`: closed without reply).
    InvalidMessage(Option<ErrorTlv>),
    /// No whole Convert message before the header deadline.
    HeaderTimeout,
    /// The client closed before a whole Convert message.
    ClosedBeforeHeader,
    /// Reading the Convert message failed.
    ReadError(io::Error),
    /// A Convert message without Connect (nor Info).
    NoConnect,
    /// Cookies are required and there is none.
    MissingCookie,
    /// The cookie does not verify.
    InvalidCookie(CookieError),
    /// The cookie names no registered subscriber.
    UnknownSubscriber,
    /// The subscriber is revoked.
    Revoked,
    /// The subscriber's source ACL does not hold the source.
    SourceNotAllowed,
    /// The destination is refused before any attempt.
    DestinationDenied(Denied),
    /// Connecting to the destination, or handing it the first bytes, failed.
    DestinationFailed(UpstreamError),
    /// The client went away before the Convert reply.
    ClientGone(io::Error),
    /// Counted in addition to another reason: its Error TLV was not sent
    /// because error replies are over their rate.
    ErrorReplyRate,
}

impl Refusal {
    /// The metric label (`reason`), as it has always been.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotServiceAddress => "not_service_address",
            Self::OutsideAccessNetworks => "outside_access_networks",
            Self::GlobalLimit => "limit_global",
            Self::Limit(e) => e.reason(),
            Self::InvalidMessage(_) => "invalid_message",
            Self::HeaderTimeout => "header_timeout",
            Self::ClosedBeforeHeader => "closed_before_header",
            Self::ReadError(_) => "read_error",
            Self::NoConnect => "no_connect",
            Self::MissingCookie => "missing_cookie",
            Self::InvalidCookie(_) => "invalid_cookie",
            Self::UnknownSubscriber => "unknown_subscriber",
            Self::Revoked => "revoked",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::DestinationDenied(_) => "destination_denied",
            Self::DestinationFailed(_) => "destination_failed",
            Self::ClientGone(_) => "client_gone",
            Self::ErrorReplyRate => "error_reply_rate",
        }
    }

    /// The Error TLV answered (`None`: the connection is closed without
    /// one: the client is gone or silent). `backoff_secs` goes with
    /// Resource Exceeded.
    pub fn error_tlv(&self, backoff_secs: u8) -> Option<ErrorTlv> {
        Some(match self {
            Self::NotServiceAddress
            | Self::OutsideAccessNetworks
            | Self::InvalidCookie(_)
            | Self::UnknownSubscriber
            | Self::Revoked
            | Self::SourceNotAllowed
            | Self::DestinationDenied(_) => ErrorTlv::not_authorized(),
            Self::GlobalLimit | Self::Limit(_) => ErrorTlv::resource_exceeded(backoff_secs),
            Self::InvalidMessage(tlv) => return tlv.clone(),
            Self::NoConnect => ErrorTlv::malformed(&[]),
            Self::MissingCookie => ErrorTlv::missing_cookie(),
            Self::DestinationFailed(e) => e.error_tlv(),
            Self::HeaderTimeout
            | Self::ClosedBeforeHeader
            | Self::ReadError(_)
            | Self::ClientGone(_)
            | Self::ErrorReplyRate => return None,
        })
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidCookie(e) => write!(f, "invalid_cookie ({e})"),
            Self::DestinationDenied(d) => write!(f, "destination_denied ({d})"),
            Self::DestinationFailed(e) => write!(f, "destination_failed ({e})"),
            Self::ReadError(e) => write!(f, "read_error ({e})"),
            Self::ClientGone(e) => write!(f, "client_gone ({e})"),
            other => f.write_str(other.label()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convert_proto::ErrorCode;

    #[test]
    fn labels_and_codes_are_the_published_ones() {
        let io = || io::Error::from(io::ErrorKind::ConnectionReset);
        let cases: Vec<(Refusal, &str, Option<ErrorCode>)> = vec![
            (
                Refusal::NotServiceAddress,
                "not_service_address",
                Some(ErrorCode::NOT_AUTHORIZED),
            ),
            (
                Refusal::OutsideAccessNetworks,
                "outside_access_networks",
                Some(ErrorCode::NOT_AUTHORIZED),
            ),
            (
                Refusal::GlobalLimit,
                "limit_global",
                Some(ErrorCode::RESOURCE_EXCEEDED),
            ),
            (
                Refusal::Limit(Exceeded::Pending),
                "limit_pending",
                Some(ErrorCode::RESOURCE_EXCEEDED),
            ),
            (
                Refusal::Limit(Exceeded::Connections),
                "limit_connections",
                Some(ErrorCode::RESOURCE_EXCEEDED),
            ),
            (
                Refusal::Limit(Exceeded::Rate),
                "limit_rate",
                Some(ErrorCode::RESOURCE_EXCEEDED),
            ),
            (Refusal::InvalidMessage(None), "invalid_message", None),
            (Refusal::HeaderTimeout, "header_timeout", None),
            (Refusal::ClosedBeforeHeader, "closed_before_header", None),
            (Refusal::ReadError(io()), "read_error", None),
            (
                Refusal::NoConnect,
                "no_connect",
                Some(ErrorCode::MALFORMED_MESSAGE),
            ),
            (
                Refusal::MissingCookie,
                "missing_cookie",
                Some(ErrorCode::MISSING_COOKIE),
            ),
            (
                Refusal::InvalidCookie(CookieError::BadMac),
                "invalid_cookie",
                Some(ErrorCode::NOT_AUTHORIZED),
            ),
            (
                Refusal::UnknownSubscriber,
                "unknown_subscriber",
                Some(ErrorCode::NOT_AUTHORIZED),
            ),
            (Refusal::Revoked, "revoked", Some(ErrorCode::NOT_AUTHORIZED)),
            (
                Refusal::SourceNotAllowed,
                "source_not_allowed",
                Some(ErrorCode::NOT_AUTHORIZED),
            ),
            (
                Refusal::DestinationDenied(Denied::Port0),
                "destination_denied",
                Some(ErrorCode::NOT_AUTHORIZED),
            ),
            (Refusal::ClientGone(io()), "client_gone", None),
            (Refusal::ErrorReplyRate, "error_reply_rate", None),
        ];
        for (r, label, code) in cases {
            assert_eq!(r.label(), label);
            assert_eq!(r.error_tlv(5).map(|t| t.code), code, "{label}");
        }
    }
}
