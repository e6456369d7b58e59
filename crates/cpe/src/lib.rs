//! `tandem cpe`: the home-gateway agent.
//!
//! It diverts every TCP connection from the LAN with TPROXY (its own
//! nftables table, removed at exit), learns the original destination from
//! the accepted socket's local address, and carries the connection to the HAG
//! as one Multipath TCP connection: TCP Fast Open puts the RFC 8803 Convert
//! message (a Connect TLV naming the destination) and the device's first bytes
//! in the SYN, so no round trip is added. The initial subflow leaves on the
//! fixed line; the kernel's path manager adds the mobile one from the
//! `subflow` endpoint this agent installs over netlink. An Error TLV from the
//! HAG resets the LAN connection, so the device sees the failure.
//!
//! What it does not do (yet): steering policy, failover management, data
//! budget (the steering issue).
//!
//! Modules: [`config`], [`divert`] (nftables + policy route), [`metrics`],
//! `conn` (one intercepted connection's life).
#![forbid(unsafe_code)]

pub mod config;
mod conn;
pub mod divert;
pub mod metrics;

use std::future::Future;
use std::sync::Arc;

use tracing::{info, warn, Instrument};

pub use config::{Config, ConfigError};
pub use metrics::Metrics;

/// Why the CPE could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interception listener could not be opened.
    #[error("opening the interception listener: {0}")]
    Listen(#[from] mptcp_sock::SockError),
    /// The nftables table or routes could not be installed.
    #[error("installing the interception: {0}")]
    Divert(#[from] divert::DivertError),
    /// MPTCP endpoints could not be configured.
    #[error("configuring MPTCP endpoints over netlink: {0}")]
    PathManager(#[from] mptcp_sock::pm::PmError),
    /// Other I/O at start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Sets the MPTCP limits and the mobile link's `subflow` endpoint.
async fn configure_mptcp(c: &Config) -> Result<(), mptcp_sock::pm::PmError> {
    use mptcp_sock::pm::{Endpoint, EndpointFlags, Limits, PathManager};
    let mut pm = PathManager::connect().await?;
    pm.set_limits(Limits {
        subflows: 2,
        add_addr_accepted: 2,
    })
    .await?;
    let id = pm
        .ensure_endpoint(&Endpoint {
            id: 0,
            addr: c.lte.address,
            port: None,
            ifindex: None,
            flags: EndpointFlags {
                subflow: true,
                ..EndpointFlags::default()
            },
        })
        .await?;
    info!(endpoint = id, lte = %c.lte.address, "MPTCP subflow endpoint on the mobile link");
    Ok(())
}

/// Runs the CPE until `shutdown` resolves; removes the interception on the
/// way out (also when start-up fails half-way).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    if config.manage_mptcp_endpoints {
        configure_mptcp(&config).await?;
    }
    let listen_addr = std::net::SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], config.intercept_port));
    let opts = mptcp_sock::ListenOptions {
        mptcp: false,
        transparent: true,
        backlog: 1024,
        ..Default::default()
    };
    let (std_listener, _) = mptcp_sock::listen(listen_addr, &opts)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen).await?;
    let divert = divert::Divert::install(&config).await?;
    info!(
        lan = %config.lan_interface,
        hag = %config.hag,
        dsl = %config.dsl.address,
        lte = %config.lte.address,
        "CPE ready: diverting LAN TCP"
    );
    let metrics = Arc::new(Metrics::default());
    let m = metrics.clone();
    let admin_task = tokio::spawn(relay::admin::serve(admin, Arc::new(move || m.render())));
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    loop {
        let (lan, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let c = config.clone();
        let m = metrics.clone();
        let span = tracing::info_span!("conn", %peer);
        tokio::spawn(async move { conn::serve(c, m, lan).await }.instrument(span));
    }
    info!("stopping: removing the interception");
    divert.remove().await;
    admin_task.abort();
    Ok(())
}
