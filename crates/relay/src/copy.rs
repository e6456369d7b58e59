//! Relaying two TCP streams both ways.
//!
//! Each direction copies through its own bounded buffer. When one side sends
//! FIN, the other side's write half is shut down (FIN is mirrored) and the
//! opposite direction keeps flowing until it too ends. When one side resets,
//! or a write to it fails, the other side is reset (`SO_LINGER` 0 then close),
//! so that neither end mistakes a failure for a clean end of data.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Knobs of one relay.
#[derive(Clone, Copy, Debug)]
pub struct RelayOptions {
    /// Close both sides when no byte moved either way for this long.
    pub idle_timeout: Duration,
    /// Bytes buffered per direction.
    pub buffer_size: usize,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(7440),
            buffer_size: 16 * 1024,
        }
    }
}

/// One of the two relayed streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Side A, the one that initiated: the client (the home device on the
    /// CPE, the CPE on the HAG).
    Downstream,
    /// Side B, the one connected to on the client's behalf: the HAG on the
    /// CPE, the destination on the HAG.
    Upstream,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Self {
        match self {
            Self::Downstream => Self::Upstream,
            Self::Upstream => Self::Downstream,
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Downstream => "downstream",
            Self::Upstream => "upstream",
        })
    }
}

/// What the relay was doing on the failed side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Reading from it (it reset, or its read failed).
    Read,
    /// Writing to it, or forwarding the other side's FIN (it is gone).
    Write,
}

/// One side failed: which, doing what, and the error's kind (the error
/// itself is logged where it happens; its kind is what callers branch on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The side that failed; the other one was reset.
    pub side: Side,
    /// Reading from it or writing to it.
    pub phase: Phase,
    /// The I/O error's kind (`ConnectionReset` for an RST).
    pub kind: io::ErrorKind,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.phase {
            Phase::Read => "reading from",
            Phase::Write => "writing to",
        };
        write!(f, "{what} the {} side: {}", self.side, self.kind)
    }
}

/// How the relay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides sent FIN: a clean end.
    Closed,
    /// One side reset or failed; the other was reset.
    Failed(Failure),
    /// Nothing moved for the idle timeout; both were reset.
    IdleTimeout,
    /// The caller stopped it (e.g. the drain timeout of a shutdown passed);
    /// both were reset.
    Stopped,
}

/// Bytes moved and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayOutcome {
    /// Bytes copied from A to B.
    pub a_to_b: u64,
    /// Bytes copied from B to A.
    pub b_to_a: u64,
    /// How it ended.
    pub end: RelayEnd,
}

enum Pump {
    /// Source sent FIN, forwarded.
    Fin(u64),
    /// Reading the source failed (reset by the source).
    ReadFailed(u64, io::Error),
    /// Writing the destination failed (the destination is gone).
    WriteFailed(u64, io::Error),
}

fn millis_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Copies `from` to `to` until FIN or failure.
///
/// The buffer is taken only while bytes are moving: it is allocated when the
/// source becomes readable and given back once the source is drained, so an
/// idle connection holds none (measured on the HAG: 19.6 KiB of resident
/// memory per idle relayed connection with two buffers always held).
async fn pump(
    from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    size: usize,
    start: Instant,
    last: &AtomicU64,
) -> Pump {
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0u64;
    loop {
        if buf.capacity() == 0 {
            if let Err(e) = from.readable().await {
                return Pump::ReadFailed(total, e);
            }
            buf = Vec::with_capacity(size);
        }
        buf.clear();
        let n = match from.try_read_buf(&mut buf) {
            Ok(0) => {
                return match to.shutdown().await {
                    Ok(()) => Pump::Fin(total),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Pump::Fin(total),
                    Err(e) => Pump::WriteFailed(total, e),
                }
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf = Vec::new();
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Pump::ReadFailed(total, e),
        };
        last.store(millis_since(start), Ordering::Relaxed);
        if let Err(e) = to.write_all(&buf[..n]).await {
            return Pump::WriteFailed(total, e);
        }
        total += n as u64;
    }
}

fn failed(side: Side, phase: Phase, e: &io::Error) -> RelayEnd {
    tracing::debug!("relay: {phase:?} on the {side} side failed: {e}");
    RelayEnd::Failed(Failure {
        side,
        phase,
        kind: e.kind(),
    })
}

fn reset(stream: &TcpStream) {
    // Linger 0 makes the close that follows send RST.
    mptcp_sock::set_reset_on_close(&stream);
}

/// Relays `a` ⇄ `b` until both directions are finished, one side fails or
/// the idle timeout passes. On failure the surviving side is reset. Both
/// streams are closed when this returns.
pub async fn relay(a: TcpStream, b: TcpStream, opts: RelayOptions) -> RelayOutcome {
    relay_until(a, b, opts, std::future::pending()).await
}

/// Like [`relay`], but also ends, resetting both sides, when `stop`
/// resolves.
pub async fn relay_until(
    mut a: TcpStream,
    mut b: TcpStream,
    opts: RelayOptions,
    stop: impl std::future::Future<Output = ()>,
) -> RelayOutcome {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (mut a_to_b, mut b_to_a) = (0u64, 0u64);
    let end = {
        let (ar, aw) = a.split();
        let (br, bw) = b.split();
        let ab = pump(ar, bw, opts.buffer_size, start, &last);
        let ba = pump(br, aw, opts.buffer_size, start, &last);
        tokio::pin!(ab, ba, stop);
        let (mut ab_done, mut ba_done) = (false, false);
        let tick = (opts.idle_timeout / 4).max(Duration::from_millis(10));
        // Not `interval`, whose first tick is awaited "at once": tokio fires
        // it on the next 1 ms timer tick, which delayed the first bytes of
        // every relayed connection by ~1.2 ms (measured in the lab).
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        loop {
            if ab_done && ba_done {
                break RelayEnd::Closed;
            }
            tokio::select! {
                r = &mut ab, if !ab_done => match r {
                    Pump::Fin(n) => { a_to_b = n; ab_done = true; }
                    Pump::ReadFailed(n, e) => { a_to_b = n; break failed(Side::Downstream, Phase::Read, &e); }
                    Pump::WriteFailed(n, e) => { a_to_b = n; break failed(Side::Upstream, Phase::Write, &e); }
                },
                r = &mut ba, if !ba_done => match r {
                    Pump::Fin(n) => { b_to_a = n; ba_done = true; }
                    Pump::ReadFailed(n, e) => { b_to_a = n; break failed(Side::Upstream, Phase::Read, &e); }
                    Pump::WriteFailed(n, e) => { b_to_a = n; break failed(Side::Downstream, Phase::Write, &e); }
                },
                () = &mut stop => break RelayEnd::Stopped,
                _ = ticker.tick() => {
                    let idle = millis_since(start).saturating_sub(last.load(Ordering::Relaxed));
                    if idle >= opts.idle_timeout.as_millis() as u64 {
                        break RelayEnd::IdleTimeout;
                    }
                }
            }
        }
    };
    match &end {
        RelayEnd::Closed => {}
        RelayEnd::Failed(f) => match f.side {
            Side::Downstream => reset(&b),
            Side::Upstream => reset(&a),
        },
        RelayEnd::IdleTimeout | RelayEnd::Stopped => {
            reset(&a);
            reset(&b);
        }
    }
    RelayOutcome {
        a_to_b,
        b_to_a,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Returns (client side seen by the test, server side handed to relay).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    #[tokio::test]
    async fn bytes_identical_both_ways_and_half_close_mirrored() {
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let r = tokio::spawn(relay(a, b, RelayOptions::default()));
        let up: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let down: Vec<u8> = (0..500_000u32).map(|i| (i * 13) as u8).collect();
        let up2 = up.clone();
        let c = tokio::spawn(async move {
            client.write_all(&up2).await.unwrap();
            client.shutdown().await.unwrap(); // FIN from the client only
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut got_up = Vec::new();
        server.read_to_end(&mut got_up).await.unwrap(); // sees the mirrored FIN
        assert_eq!(got_up, up);
        // The other direction still works after the half-close.
        server.write_all(&down).await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(c.await.unwrap(), down);
        let out = r.await.unwrap();
        assert_eq!(out.end, RelayEnd::Closed);
        assert_eq!(
            (out.a_to_b, out.b_to_a),
            (up.len() as u64, down.len() as u64)
        );
    }

    #[tokio::test]
    async fn reset_is_mirrored() {
        let (client, a) = pair().await;
        let (b, mut server) = pair().await;
        let r = tokio::spawn(relay(a, b, RelayOptions::default()));
        mptcp_sock::set_reset_on_close(&client);
        drop(client); // RST
        let mut buf = [0u8; 16];
        let res = server.read(&mut buf).await;
        assert_eq!(
            res.map_err(|e| e.kind()).unwrap_err(),
            io::ErrorKind::ConnectionReset
        );
        assert_eq!(
            r.await.unwrap().end,
            RelayEnd::Failed(Failure {
                side: Side::Downstream,
                phase: Phase::Read,
                kind: io::ErrorKind::ConnectionReset
            })
        );
    }

    #[tokio::test]
    async fn idle_timeout_closes_both() {
        let (_client, a) = pair().await;
        let (b, mut server) = pair().await;
        let opts = RelayOptions {
            idle_timeout: Duration::from_millis(200),
            ..RelayOptions::default()
        };
        let out = relay(a, b, opts).await;
        assert_eq!(out.end, RelayEnd::IdleTimeout);
        let mut buf = [0u8; 16];
        assert!(server.read(&mut buf).await.is_err());
    }
}
