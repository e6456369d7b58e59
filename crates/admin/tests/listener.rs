//! The admin listener on loopback: every endpoint's answer, readiness and
//! generation changes seen by a client, and the bounds (header timeout,
//! connection limit, lifetime) holding against clients that misbehave.

use std::sync::Arc;
use std::time::{Duration, Instant};

use admin::{Admin, Health, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Running {
    addr: std::net::SocketAddr,
    health: Arc<Health>,
    listener: admin::Running,
}

impl Running {
    async fn start(limits: Limits) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Health::new(true);
        let listener = Admin::new(Arc::new(|| "# EOF\n".to_owned()), health.clone())
            .with_limits(limits)
            .spawn(listener);
        Self {
            addr,
            health,
            listener,
        }
    }

    /// One request; the status code and the body.
    async fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .await
            .unwrap_or_else(|out| panic!("no answer to {path}: {out:?}"))
    }

    /// One request; the status code and the body, or what came instead of
    /// an answer within 5 s.
    async fn try_get(&self, path: &str) -> Result<(u16, String), String> {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        match tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("{e} after {out:?}")),
            Err(_) => return Err(format!("no end within 5 s after {out:?}")),
        }
        let Some(code) = out.split(' ').nth(1).and_then(|c| c.parse().ok()) else {
            return Err(out);
        };
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((code, body))
    }

    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(5), self.listener.stop())
            .await
            .expect("listener stops on shutdown");
    }
}

/// Reads until the peer closes; how long that took.
async fn time_to_close(mut s: TcpStream, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return t0.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn endpoints_answer() {
    let r = Running::start(Limits::default()).await;
    assert_eq!(r.get("/live").await, (200, "live\n".into()));
    assert_eq!(r.get("/ready").await, (200, "ready\n".into()));
    let (code, body) = r.get("/metrics").await;
    assert_eq!((code, body.as_str()), (200, "# EOF\n"));
    let (code, body) = r.get("/status").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["config_generation"], 1);
    assert_eq!(r.get("/nothing").await.0, 404);
    r.stop().await;
}

#[tokio::test]
async fn readiness_and_generation_follow_the_daemon() {
    let r = Running::start(Limits::default()).await;
    r.health.set_ready(false);
    assert_eq!(r.get("/ready").await, (503, "not ready\n".into()));
    r.health.config_applied();
    let (_, body) = r.get("/status").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["config_generation"], 2);
    r.stop().await;
}

#[tokio::test]
async fn silent_client_is_closed_after_the_header_timeout() {
    let limits = Limits {
        header_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let r = Running::start(limits).await;
    // Nothing sent at all.
    let s = TcpStream::connect(r.addr).await.unwrap();
    let t = time_to_close(s, Duration::from_secs(5)).await;
    assert!(t < Duration::from_secs(3), "closed after {t:?}");
    // Headers trickling in, never finished.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = time_to_close(s, Duration::from_secs(5)).await;
    assert!(t < Duration::from_secs(3), "closed after {t:?}");
    // The listener still answers.
    assert_eq!(r.get("/live").await.0, 200);
    r.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_the_limit_frees_up() {
    let limits = Limits {
        header_timeout: Duration::from_secs(30),
        connection_lifetime: Duration::from_secs(30),
        max_connections: 3,
    };
    let r = Running::start(limits).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(r.addr).await.unwrap());
    }
    // Give the listener time to accept the three.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let extra = TcpStream::connect(r.addr).await.unwrap();
    let t = time_to_close(extra, Duration::from_secs(5)).await;
    assert!(t < Duration::from_secs(2), "closed after {t:?}");
    drop(held);
    // Slots are given back as the held connections end.
    let t0 = Instant::now();
    loop {
        if r.try_get("/live").await.is_ok_and(|(code, _)| code == 200) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.stop().await;
}

#[tokio::test]
async fn keep_alive_connection_ends_at_its_lifetime() {
    let limits = Limits {
        header_timeout: Duration::from_secs(30),
        connection_lifetime: Duration::from_millis(400),
        max_connections: 4,
    };
    let r = Running::start(limits).await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let t = time_to_close(s, Duration::from_secs(5)).await;
    assert!(t < Duration::from_secs(3), "closed after {t:?}");
    r.stop().await;
}
