//! The lab's "internet" server: a real HTTP/1.1 server (hyper via axum).
//!
//! - `GET /bytes/N` streams N bytes of a deterministic pattern (so a client
//!   can check what it got with [`expected_sha256`] without a copy);
//!   `?rate=B` paces them at B bytes per second (a steady stream, like
//!   video, rather than a bulk transfer);
//! - `POST /upload` (or `PUT`) reads the body and answers
//!   `<sha256 hex> <length>`;
//! - `GET /` answers a short text (time-to-first-byte probes).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// Largest object served.
pub const MAX_OBJECT: u64 = 16 << 30;
const CHUNK: usize = 64 * 1024;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `out` with the pattern bytes starting at byte `offset` (a multiple
/// of 8).
pub fn fill(offset: u64, out: &mut [u8]) {
    debug_assert_eq!(offset % 8, 0);
    for (w, chunk) in (offset / 8..).zip(out.chunks_mut(8)) {
        let v = splitmix(w).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// SHA-256 (hex) of the first `len` pattern bytes: what `GET /bytes/len`
/// must deliver.
pub fn expected_sha256(len: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(CHUNK);
        fill(off, &mut buf[..n]);
        h.update(&buf[..n]);
        off += n as u64;
    }
    hex::encode(h.finalize())
}

/// Query of `GET /bytes/N`.
#[derive(Debug, serde::Deserialize)]
struct Pace {
    /// Bytes per second; none: as fast as the network takes them.
    rate: Option<u64>,
}

async fn bytes(
    Path(len): Path<u64>,
    Query(pace): Query<Pace>,
) -> Result<Body, (StatusCode, String)> {
    if len > MAX_OBJECT {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_OBJECT} bytes\n"),
        ));
    }
    if pace.rate == Some(0) {
        return Err((StatusCode::BAD_REQUEST, "rate must be > 0\n".into()));
    }
    // Paced: chunks of about 20 ms, each sent when the schedule says (a
    // multiple of 8 bytes, as `fill` wants).
    let chunk = pace
        .rate
        .map_or(CHUNK, |r| ((r / 50) as usize).clamp(8, CHUNK) / 8 * 8);
    let start = tokio::time::Instant::now();
    let stream = futures::stream::unfold(0u64, move |off| async move {
        if off >= len {
            return None;
        }
        if let Some(r) = pace.rate {
            let due = start + std::time::Duration::from_secs_f64(off as f64 / r as f64);
            tokio::time::sleep_until(due).await;
        }
        let n = ((len - off) as usize).min(chunk);
        let mut buf = vec![0u8; n];
        fill(off, &mut buf);
        Some((Ok::<_, std::io::Error>(buf), off + n as u64))
    });
    Ok(Body::from_stream(stream))
}

async fn upload(body: Body) -> Result<String, (StatusCode, String)> {
    let mut h = Sha256::new();
    let mut len = 0u64;
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| (StatusCode::BAD_REQUEST, format!("{e}\n")))?;
        len += chunk.len() as u64;
        h.update(&chunk);
    }
    Ok(format!("{} {len}\n", hex::encode(h.finalize())))
}

/// Serves until the process ends.
pub async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(|| async { "tandem lab origin\n" }))
        .route("/bytes/{len}", get(bytes))
        .route("/upload", post(upload).put(upload));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "origin serving");
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_position_determined() {
        let mut a = vec![0u8; 100];
        fill(0, &mut a);
        let mut b = vec![0u8; 52];
        fill(48, &mut b);
        assert_eq!(&a[48..], &b[..]);
        assert_ne!(a[..8], a[8..16]);
    }

    #[test]
    fn expected_hash_matches_a_direct_hash() {
        let mut all = vec![0u8; 200_003];
        fill(0, &mut all);
        assert_eq!(expected_sha256(200_003), hex::encode(Sha256::digest(&all)));
    }
}
