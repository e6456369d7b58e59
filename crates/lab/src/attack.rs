//! A bounded attacker for the lab: opens connections to a target at a given
//! rate and holds them idle, trickles bytes (slowloris) or sends garbage.
//! It stops by itself after its duration or its connection count, whichever
//! comes first, and only targets the address it is given (inside the lab).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What each connection does once open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Sends nothing; holds the connection until the end.
    Idle,
    /// Sends one byte per second (slowloris).
    Slow,
    /// Sends 64 random bytes, reads the answer, closes.
    Garbage,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "idle" => Ok(Self::Idle),
            "slow" => Ok(Self::Slow),
            "garbage" => Ok(Self::Garbage),
            _ => Err(format!("{s:?}: expected idle, slow or garbage")),
        }
    }
}

/// The attack's parameters.
#[derive(Clone, Copy, Debug)]
pub struct Attack {
    /// Target.
    pub target: SocketAddr,
    /// Connections to open at most.
    pub connections: u64,
    /// New connections per second.
    pub rate: f64,
    /// Total duration; everything is closed after it.
    pub duration: Duration,
    /// Behaviour of each connection.
    pub mode: Mode,
}

/// What happened.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Report {
    /// Connection attempts.
    pub attempted: u64,
    /// Connections established.
    pub connected: u64,
    /// Attempts refused or failed at connect.
    pub connect_failed: u64,
    /// Connections the target answered (bytes received) before closing.
    pub answered: u64,
    /// Connections the target closed or reset.
    pub closed_by_target: u64,
    /// Bytes the attacker sent.
    pub bytes_sent: u64,
    /// Bytes the target sent back.
    pub bytes_received: u64,
}

#[derive(Default)]
struct Counters {
    attempted: AtomicU64,
    connected: AtomicU64,
    connect_failed: AtomicU64,
    answered: AtomicU64,
    closed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

async fn one(a: Attack, end: Instant, seed: u64, c: Arc<Counters>) {
    let deadline = tokio::time::Instant::from_std(end);
    let Ok(Ok(mut s)) =
        tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(a.target)).await
    else {
        c.connect_failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    c.connected.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 2048];
    let mut got = 0u64;
    let mut x = seed | 1;
    let work = async {
        match a.mode {
            Mode::Idle => {
                if let Ok(n) = s.read(&mut buf).await {
                    got += n as u64;
                }
            }
            Mode::Slow => loop {
                if s.write_all(b"x").await.is_err() {
                    break;
                }
                c.sent.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    r = s.read(&mut buf) => {
                        if let Ok(n) = r { got += n as u64; }
                        break;
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            },
            Mode::Garbage => {
                let mut junk = [0u8; 64];
                for b in junk.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                if s.write_all(&junk).await.is_ok() {
                    c.sent.fetch_add(64, Ordering::Relaxed);
                    let _ = s.shutdown().await;
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        got += n as u64;
                    }
                }
            }
        }
        true
    };
    // Ends with the attack at the latest.
    let closed = tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or(false);
    if closed {
        c.closed.fetch_add(1, Ordering::Relaxed);
    }
    if got > 0 {
        c.answered.fetch_add(1, Ordering::Relaxed);
        c.received.fetch_add(got, Ordering::Relaxed);
    }
}

/// Runs the attack to its end.
pub async fn run(a: Attack) -> Report {
    let c = Arc::new(Counters::default());
    let start = Instant::now();
    let end = start + a.duration;
    let gap = Duration::from_secs_f64(1.0 / a.rate.max(0.001));
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = tokio::time::Instant::now();
    for i in 0..a.connections {
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep_until(next).await;
        next += gap;
        c.attempted.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(one(
            a,
            end,
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            c.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
    Report {
        attempted: c.attempted.load(Ordering::Relaxed),
        connected: c.connected.load(Ordering::Relaxed),
        connect_failed: c.connect_failed.load(Ordering::Relaxed),
        answered: c.answered.load(Ordering::Relaxed),
        closed_by_target: c.closed.load(Ordering::Relaxed),
        bytes_sent: c.sent.load(Ordering::Relaxed),
        bytes_received: c.received.load(Ordering::Relaxed),
    }
}
