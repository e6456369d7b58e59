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
//! The path manager ([`paths`]) probes both links, fails over (and back)
//! by managing the kernel's MPTCP endpoints, steers the mobile link
//! (`priority`, `aggregate`, `active-standby`) with the kernel's backup
//! priority, and keeps the monthly mobile budget ([`budget`]).
//!
//! The LAN's other traffic (UDP, bypass classes) is forwarded and NATed
//! over the active link, and moved when it fails ([`wan`]).
//!
//! What it does not do: bond UDP (it leaves over one link at a time).
//!
//! [`Server::bind`] opens the listeners and installs the interception,
//! [`Server::serve`] runs until shutdown; [`run`] is both. [`Options`] turns
//! off what needs a real CPE (TPROXY, nftables, MPTCP, the WAN addresses)
//! so that the per-connection logic runs in-process on loopback in tests.
//!
//! Modules: [`config`], [`divert`] (nftables + policy route), [`metrics`],
//! [`health`] (link health and steering rules, sans-IO), [`paths`] (the
//! path manager: prober, WAN counters, budget sampler, endpoint applier),
//! [`budget`] (the mobile data budget), [`report`] (the reports to ops),
//! `conn` (one intercepted connection's life: admission, relay).
#![forbid(unsafe_code)]

pub mod budget;
pub mod config;
mod conn;
pub mod divert;
pub mod health;
pub mod metrics;
pub mod paths;
pub mod report;
pub mod wan;

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
    /// The forwarding of the LAN's other traffic could not be set up.
    #[error("setting up forwarding (UDP, bypass): {0}")]
    Wan(#[from] wan::WanError),
    /// MPTCP endpoints could not be configured.
    #[error("configuring MPTCP endpoints over netlink: {0}")]
    PathManager(#[from] mptcp_sock::pm::PmError),
    /// Other I/O at start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What [`Server::bind`] sets up. The defaults are production's; a test
/// turns off what needs root or a real CPE's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Where the interception listener binds; `None`: every address, on
    /// `intercept_port`.
    pub listen: Option<std::net::SocketAddr>,
    /// `IP_TRANSPARENT` on the listener, so TPROXY can divert to it
    /// (needs `CAP_NET_ADMIN`).
    pub transparent: bool,
    /// Install the nftables interception and its policy route
    /// ([`divert`], needs root).
    pub intercept: bool,
    /// Multipath TCP to the HAG (off: plain TCP).
    pub mptcp: bool,
    /// Bind each connection's first subflow to the active WAN link's
    /// address (off: the kernel picks the source address).
    pub bind_wan: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: None,
            transparent: true,
            intercept: true,
            mptcp: true,
            bind_wan: true,
        }
    }
}

/// A CPE whose listeners are open and whose interception is installed:
/// [`Server::serve`] runs it.
pub struct Server {
    config: Config,
    options: Options,
    listener: tokio::net::TcpListener,
    admin: tokio::net::TcpListener,
    divert: Option<divert::Divert>,
    forwarding: Option<wan::Forwarding>,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Opens the interception and admin listeners and installs the
    /// interception and the forwarding, as in production.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        Self::bind_with(config, Options::default()).await
    }

    /// [`Server::bind`] with `options`. On failure, what was installed is
    /// removed.
    pub async fn bind_with(config: Config, options: Options) -> Result<Self, Error> {
        let listen_addr = options.listen.unwrap_or_else(|| {
            std::net::SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], config.intercept_port))
        });
        let opts = mptcp_sock::ListenOptions {
            mptcp: false,
            transparent: options.transparent,
            backlog: 1024,
            ..Default::default()
        };
        let (std_listener, _) = mptcp_sock::listen(listen_addr, &opts)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let admin = tokio::net::TcpListener::bind(config.admin_listen).await?;
        let divert = if options.intercept {
            Some(divert::Divert::install(&config).await?)
        } else {
            None
        };
        let forwarding = if config.nat {
            if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .is_ok_and(|v| v.trim() == "0")
            {
                warn!("net.ipv4.ip_forward is 0: the LAN's UDP and bypassed traffic will not be forwarded");
            }
            match wan::Forwarding::install(&config).await {
                Ok(f) => Some(f),
                Err(e) => {
                    if let Some(d) = divert {
                        d.remove().await;
                    }
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        Ok(Self {
            config,
            options,
            listener,
            admin,
            divert,
            forwarding,
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The interception listener's address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin listener's address (`/metrics`, `/live`, `/ready`,
    /// `/status`).
    pub fn admin_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.admin.local_addr()
    }

    /// The metrics the admin listener renders.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs the CPE until `shutdown` resolves; removes the interception on
    /// the way out. Each configuration received on `reload` (SIGHUP) applies
    /// to new connections and to the path manager (steering, budget) at
    /// once (`apply_reload`); running connections are untouched. Changes
    /// to the interception itself (interfaces, ports, marks) need a restart.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
        mut reload: tokio::sync::mpsc::Receiver<Config>,
    ) -> Result<(), Error> {
        let Self {
            config,
            options,
            listener,
            admin,
            divert,
            forwarding,
            metrics,
        } = self;
        let dial = conn::Dial {
            mptcp: options.mptcp,
            bind_wan: options.bind_wan,
        };
        info!(
            lan = %config.lan_interface,
            hag = %config.hag,
            dsl = %config.dsl.address,
            lte = %config.lte.address,
            mode = config.steering.mode.name(),
            "CPE ready: diverting LAN TCP"
        );
        let m = metrics.clone();
        // Ready once the path manager runs (links probed, budget loaded:
        // `paths::run`), not ready again while stopping.
        let health = admin::Health::new(false);
        let admin_task =
            admin::Admin::new(Arc::new(move || m.render()), health.clone()).spawn(admin);
        let config = Arc::new(config);
        let (config_tx, config_rx) = tokio::sync::watch::channel(config.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let paths_state = Arc::new(paths::PathState::default());
        let paths_task = tokio::spawn(paths::run(
            config.clone(),
            config_rx.clone(),
            paths_state.clone(),
            metrics.clone(),
            forwarding,
            health.clone(),
            stop_rx.clone(),
        ));
        let report_task = config.telemetry.clone().map(|t| {
            tokio::spawn(report::run(
                config.clone(),
                t,
                options.bind_wan,
                paths_state.clone(),
                metrics.clone(),
                stop_rx.clone(),
            ))
        });
        tokio::pin!(shutdown);
        loop {
            let (lan, peer) = tokio::select! {
                _ = &mut shutdown => break,
                Some(new) = reload.recv() => {
                    apply_reload(divert.as_ref(), &config_tx, new);
                    continue;
                }
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        warn!("accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let c = config_rx.borrow().clone();
            let m = metrics.clone();
            let p = paths_state.clone();
            let span = tracing::info_span!("conn", %peer);
            tokio::spawn(async move { conn::serve(c, m, p, dial, lan).await }.instrument(span));
        }
        info!("stopping: removing the interception");
        health.set_ready(false);
        let _ = stop_tx.send(true);
        if let Some(t) = report_task {
            // A delivery in flight is bounded by its timeout.
            let _ = t.await;
        }
        if let Ok(Some(f)) = paths_task.await {
            f.remove().await;
        }
        if let Some(d) = divert {
            d.remove().await;
        }
        admin_task.stop().await;
        Ok(())
    }
}

/// Applies a reloaded configuration: the interception rules (bypass
/// classes) when they changed, then hands it to new connections and to the
/// path manager (which applies steering and budget in
/// `paths::Paths::apply_config`). Changes that need a restart are logged
/// and the rest is applied.
fn apply_reload(
    divert: Option<&divert::Divert>,
    config_tx: &tokio::sync::watch::Sender<Arc<Config>>,
    new: Config,
) {
    let old = config_tx.borrow().clone();
    if new.lan_interface != old.lan_interface
        || new.intercept_port != old.intercept_port
        || new.fwmark != old.fwmark
        || new.route_table != old.route_table
        || new.nat != old.nat
        || new.dsl.interface != old.dsl.interface
        || new.lte.interface != old.lte.interface
        || new.admin_listen != old.admin_listen
    {
        warn!("interface, port, mark, table, nat and admin changes need a restart; the rest is applied");
    } else if divert::ruleset(&new) != divert::ruleset(&old) {
        if let Some(divert) = divert {
            match divert.update(&new) {
                Ok(()) => info!(bypass = new.bypass.len(), "interception rules updated"),
                Err(e) => warn!("updating the interception rules: {e}; keeping the old ones"),
            }
        }
    }
    let _ = config_tx.send(Arc::new(new));
    info!("configuration reloaded");
}

/// Runs the CPE until `shutdown` resolves ([`Server::bind`], then
/// [`Server::serve`]); removes the interception on the way out (also when
/// start-up fails half-way). Each configuration received on `reload`
/// (SIGHUP) applies to new connections and to the path manager (steering,
/// budget) at once; running connections are untouched. Changes to the
/// interception itself (interfaces, ports, marks) need a restart.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reload: tokio::sync::mpsc::Receiver<Config>,
) -> Result<(), Error> {
    Server::bind(config).await?.serve(shutdown, reload).await
}
