//! The path-probe echo service. Each CPE measures its access links
//! (liveness, round-trip time, jitter, loss) with small UDP probes sent to
//! this port from each link's address ([`relay::probe`]). The echo answers
//! only the access networks (`subscriber_prefixes`), only datagrams that
//! look like Tandem probes, with exactly the bytes received (no
//! amplification), under a global rate limit; it keeps no per-client state.

use std::sync::Arc;

use tracing::debug;

use crate::limits::Bucket;
use crate::server::State;

/// Probes answered per second, all clients together (a CPE sends about ten).
const RATE: f64 = 50_000.0;

/// Serves until the task is aborted.
pub(crate) async fn serve(sock: tokio::net::UdpSocket, state: Arc<State>) {
    let mut bucket = Bucket::new(RATE);
    let mut buf = [0u8; 512];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors of earlier replies surface here; keep serving.
                debug!("probe socket: {e}");
                continue;
            }
        };
        let outcome = if !relay::probe::looks_like_probe(&buf[..n]) {
            "malformed"
        } else if !state
            .config()
            .subscriber_prefixes
            .iter()
            .any(|p| p.contains(&peer.ip().to_canonical()))
        {
            "outside_access_networks"
        } else if !bucket.take(RATE, RATE) {
            "rate_limited"
        } else {
            match sock.send_to(&buf[..n], peer).await {
                Ok(_) => "answered",
                Err(e) => {
                    debug!(%peer, "probe reply: {e}");
                    "send_failed"
                }
            }
        };
        state.metrics.count_probe(outcome);
    }
}
