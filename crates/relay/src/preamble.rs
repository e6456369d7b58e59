//! Reading a Convert message from the front of a stream.

use std::time::Duration;

use convert_proto::{DecodeError, Message};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why no Convert message could be read.
#[derive(Debug, thiserror::Error)]
pub enum PreambleError {
    /// The bytes are not a valid Convert message; the error says what the RFC
    /// wants answered, the bytes are what was received (for the Malformed
    /// Message echo).
    #[error("invalid Convert message: {0}")]
    Decode(DecodeError, Vec<u8>),
    /// The peer closed before a whole message arrived.
    #[error("peer closed after {received} bytes, before a whole Convert message")]
    Closed {
        /// Bytes received before the close.
        received: usize,
    },
    /// The deadline passed first (a slow or silent peer).
    #[error("no complete Convert message within {0:?}")]
    Timeout(Duration),
    /// Reading failed (reset, ...).
    #[error("reading the Convert message: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one Convert message within `deadline`. Returns the message and the
/// bytes that followed it in the same reads (application data that must be
/// forwarded first). Never reads past what it is sent; never buffers more than
/// one maximal Convert message plus one read.
pub async fn read_message<R: AsyncRead + Unpin>(
    stream: &mut R,
    deadline: Duration,
) -> Result<(Message, Vec<u8>), PreambleError> {
    let fut = async {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            match Message::decode(&buf) {
                Ok((msg, used)) => return Ok((msg, buf.split_off(used))),
                Err(DecodeError::Incomplete { needed }) => {
                    let want = needed.saturating_sub(buf.len()).max(1);
                    let start = buf.len();
                    // Read at least what the decoder needs; more is welcome
                    // (first application bytes) but bounded.
                    // A SYN's payload fits in 1,536 bytes; an idle client
                    // costs no more than that.
                    buf.resize(start + want.max(1536), 0);
                    let n = stream.read(&mut buf[start..]).await?;
                    buf.truncate(start + n);
                    if n == 0 {
                        return Err(PreambleError::Closed { received: start });
                    }
                }
                Err(e) => return Err(PreambleError::Decode(e, buf)),
            }
        }
    };
    match tokio::time::timeout(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(PreambleError::Timeout(deadline)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convert_proto::{Connect, Tlv};
    use tokio::io::AsyncWriteExt;

    fn connect_msg() -> Message {
        Message {
            tlvs: vec![Tlv::Connect(Connect {
                remote: "192.0.2.7:443".parse().unwrap(),
                tcp_options: vec![],
            })],
        }
    }

    #[tokio::test]
    async fn reads_message_and_keeps_following_bytes_across_trickled_writes() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut wire = connect_msg().to_bytes();
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let writer = tokio::spawn(async move {
            for byte in wire {
                a.write_all(&[byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            a
        });
        let (msg, rest) = read_message(&mut b, Duration::from_secs(5)).await.unwrap();
        assert_eq!(msg, connect_msg());
        let _a = writer.await.unwrap();
        // What came in the same reads is kept; the rest is still in the stream.
        let mut tail = rest;
        let mut more = vec![0u8; 64];
        while tail.len() < 16 {
            let n = b.read(&mut more).await.unwrap();
            tail.extend_from_slice(&more[..n]);
        }
        assert_eq!(tail, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let (_a, mut b) = tokio::io::duplex(64);
        let err = read_message(&mut b, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, PreambleError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn truncated_then_closed_is_reported() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let wire = connect_msg().to_bytes();
        a.write_all(&wire[..wire.len() - 1]).await.unwrap();
        drop(a);
        let err = read_message(&mut b, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, PreambleError::Closed { received } if received == wire.len() - 1),
            "{err}"
        );
    }

    #[tokio::test]
    async fn garbage_is_a_decode_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0x07, 0x02, 0x00, 0x00, 0, 0, 0, 0])
            .await
            .unwrap();
        let err = read_message(&mut b, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, PreambleError::Decode(..)), "{err}");
    }
}
