//! `tandem hag`: the Hybrid Access Gateway, an RFC 8803 Transport Converter.
//!
//! It terminates the Multipath TCP connections of the homes (plain TCP
//! clients are accepted too), takes the Convert message that rides in the SYN
//! (server-side TCP Fast Open without cookie, which RFC 8803 allows on a
//! managed network), checks that the client is a subscriber and that the
//! destination is allowed, connects to the destination, answers with the
//! Convert reply — or with the RFC's Error TLV in the byte stream, never a
//! silent reset — and relays both ways, mirroring FIN and RST.
//!
//! What it does not do (yet): cookie authentication, per-subscriber limits
//! and accounting (the hardening issue).
//!
//! Modules: [`config`] (TOML → validated config), [`metrics`] (Prometheus
//! registry), `server` (the accept loop and one connection's life); the admin
//! listener (`/metrics`, `/live`, `/ready`) is `relay::admin`.
#![forbid(unsafe_code)]

pub mod config;
pub mod metrics;
mod server;

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use convert_proto::Tlv;
use tokio::sync::Semaphore;
use tracing::{info, warn};

pub use config::{Config, ConfigError};
pub use metrics::Metrics;

/// Why the HAG could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Convert listener could not be opened.
    #[error("opening the Convert listener: {0}")]
    Listen(#[from] mptcp_sock::SockError),
    /// The admin listener could not be opened.
    #[error("opening the admin listener on {addr}: {source}")]
    Admin {
        /// Its address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O failure at start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The TCP extensions this converter offers (RFC 8803 Supported TCP
/// Extensions TLV): Multipath TCP (TCP option kind 30).
pub(crate) fn supported_extensions() -> Tlv {
    Tlv::SupportedTcpExtensions(vec![30])
}

/// The addresses of this host's interfaces, refused as destinations.
fn interface_addresses() -> HashSet<IpAddr> {
    let mut set = HashSet::new();
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => {
            for a in addrs {
                let Some(sa) = a.address else { continue };
                if let Some(v4) = sa.as_sockaddr_in() {
                    set.insert(IpAddr::V4(v4.ip()));
                } else if let Some(v6) = sa.as_sockaddr_in6() {
                    set.insert(IpAddr::V6(v6.ip()));
                }
            }
        }
        Err(e) => warn!("listing interface addresses: {e}"),
    }
    set
}

/// Turns on server-side TCP Fast Open (bit 0x2) in this network namespace.
fn enable_fastopen_sysctl() -> std::io::Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/tcp_fastopen";
    let cur: u32 = std::fs::read_to_string(PATH)?.trim().parse().unwrap_or(1);
    if cur & 0x2 == 0 {
        std::fs::write(PATH, format!("{}", cur | 0x2))?;
        info!("net.ipv4.tcp_fastopen {cur:#x} → {:#x}", cur | 0x2);
    }
    Ok(())
}

/// Runs the HAG until `shutdown` resolves, then stops accepting and lets
/// running connections finish for up to the drain timeout.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    if config.enable_fastopen_sysctl {
        if let Err(e) = enable_fastopen_sysctl() {
            warn!("could not enable server-side TCP Fast Open: {e}; first bytes will wait one round trip");
        }
    }
    let opts = mptcp_sock::ListenOptions {
        mptcp: config.mptcp,
        fastopen_queue: config.fastopen_queue,
        fastopen_no_cookie: true,
        transparent: false,
        backlog: config.backlog,
        congestion: Some(config.congestion_control.clone()),
    };
    let (std_listener, is_mptcp) = mptcp_sock::listen(config.listen, &opts)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| Error::Admin {
            addr: config.admin_listen,
            source,
        })?;
    let mut local = interface_addresses();
    local.extend(config.local_addresses.iter().copied());
    local.insert(config.listen.ip());
    info!(
        listen = %config.listen,
        mptcp = is_mptcp,
        admin = %config.admin_listen,
        "HAG ready"
    );
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(server::State {
        slots: Arc::new(Semaphore::new(config.max_connections)),
        config,
        metrics: metrics.clone(),
        local,
    });
    let m = metrics.clone();
    let admin_task = tokio::spawn(relay::admin::serve(admin, Arc::new(move || m.render())));
    server::accept_loop(state.clone(), listener, shutdown).await;
    let active = metrics.active.get();
    info!(active, "stopped accepting; draining");
    let all = state.config.max_connections as u32;
    let drained =
        tokio::time::timeout(state.config.drain_timeout, state.slots.acquire_many(all)).await;
    if drained.is_err() {
        warn!(
            left = metrics.active.get(),
            "drain timeout passed; closing the remaining connections"
        );
    }
    admin_task.abort();
    Ok(())
}
