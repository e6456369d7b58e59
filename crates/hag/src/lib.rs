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
//! Protections: only the access-facing service addresses and the access
//! networks are served (no open proxy); destinations in private, special and
//! operator ranges are refused (no SSRF, [`destination`]); subscribers prove
//! who they are with a Cookie TLV ([`cookie`]) checked against the
//! subscriber registry (the `registry` crate); [`limits`] bound each
//! subscriber and each source; deadlines bound every phase; error replies
//! are rate-limited. Every refusal is a [`Refusal`] with its metric label
//! and its Error TLV.
//!
//! [`Server::bind`] opens every socket, [`Server::serve`] runs until
//! shutdown, so tests run a HAG in-process on loopback (port 0, `mptcp =
//! false`); [`run`] is both.
//!
//! Modules: [`config`] (TOML → validated config), [`cookie`],
//! [`destination`] (refused destinations, connecting, error mapping),
//! [`limits`], [`metrics`] (Prometheus registry), [`refusal`], `server` (the
//! accept loop and one connection's life, step by step), [`usage`] (the
//! billing writer thread), `watch` (follows the registry file), `probe`
//! (the path-probe echo), `report` (the reports to ops, `[telemetry]`);
//! the admin listener (`/metrics`, `/live`,
//! `/ready`, `/status`) is the shared `admin` crate's.
#![forbid(unsafe_code)]

pub mod config;
pub mod cookie;
pub mod destination;
pub mod limits;
pub mod metrics;
mod probe;
pub mod refusal;
mod report;
mod server;
pub mod usage;
mod watch;

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use convert_proto::Tlv;
use tokio::sync::{mpsc, watch as tokio_watch, Semaphore};
use tracing::{info, warn};

pub use config::{Config, ConfigError};
pub use metrics::Metrics;
pub use refusal::Refusal;

/// Why the HAG could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Convert listener could not be opened.
    #[error("opening the Convert listener: {0}")]
    Listen(#[from] mptcp_sock::SockError),
    /// The Convert listener could not be handed to the runtime.
    #[error("registering the Convert listener on {addr}: {source}")]
    Register {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The admin listener could not be opened.
    #[error("opening the admin listener on {addr}: {source}")]
    Admin {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path-probe echo port could not be opened.
    #[error("opening the path-probe echo on udp {addr}: {source}")]
    Probe {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The subscriber registry or the usage database could not be opened.
    #[error(transparent)]
    Registry(#[from] registry::Error),
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

/// The registry watcher's thread and the sender that pokes it.
type Watcher = (
    std::thread::JoinHandle<()>,
    std::sync::mpsc::Sender<watch::Poke>,
);

/// A bound HAG: every socket is open, the registry loaded, the usage writer
/// running; [`Self::serve`] runs it.
pub struct Server {
    state: Arc<server::State>,
    listener: tokio::net::TcpListener,
    is_mptcp: bool,
    admin: tokio::net::TcpListener,
    probe: Option<tokio::net::UdpSocket>,
    watcher: Option<Watcher>,
    usage_thread: Option<std::thread::JoinHandle<()>>,
    stop_tx: tokio_watch::Sender<bool>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.local_addr())
            .field("admin", &self.admin_addr())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the Convert listener, the admin listener and the probe echo,
    /// loads the subscriber registry (and starts following it) and starts
    /// the usage writer. Port 0 in the configuration picks a free port (see
    /// [`Self::local_addr`]).
    pub async fn bind(config: Config) -> Result<Self, Error> {
        if config.enable_fastopen_sysctl {
            if let Err(e) = enable_fastopen_sysctl() {
                warn!("could not enable server-side TCP Fast Open: {e}; first bytes will wait one round trip");
            }
        }
        let (listener, is_mptcp) = listen(&config)?;
        let admin = tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| Error::Admin {
                addr: config.admin_listen,
                source,
            })?;
        let probe = match config.probe_listen {
            Some(addr) => Some(
                tokio::net::UdpSocket::bind(addr)
                    .await
                    .map_err(|source| Error::Probe { addr, source })?,
            ),
            None => None,
        };
        let subscribers = Arc::new(RwLock::new(Arc::new(registry::Snapshot::default())));
        let watcher = match &config.registry {
            Some(path) => {
                let (poke_tx, poke_rx) = std::sync::mpsc::channel();
                let thread = watch::watch_registry(path.clone(), subscribers.clone(), poke_rx)?;
                Some((thread, poke_tx))
            }
            None => None,
        };
        let (usage, usage_thread) = match &config.usage_db {
            Some(p) => {
                let (w, t) = usage::Writer::start(p)?;
                info!(usage = %p.display(), "per-subscriber usage kept");
                (Some(w), Some(t))
            }
            None => (None, None),
        };
        let mut local = interface_addresses();
        local.extend(config.local_addresses.iter().copied());
        local.insert(config.listen.ip());
        let (stop_tx, stop_rx) = tokio_watch::channel(false);
        let state = Arc::new(server::State {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            slots_total: u32::try_from(config.max_connections).unwrap_or(u32::MAX),
            limits: limits::Limits::new(config.limits),
            config: RwLock::new(Arc::new(config)),
            subscribers,
            metrics: Arc::new(Metrics::default()),
            local,
            stop: stop_rx,
            usage,
            view: report::View::default(),
            waivers: report::Waivers::default(),
        });
        Ok(Self {
            state,
            listener,
            is_mptcp,
            admin,
            probe,
            watcher,
            usage_thread,
            stop_tx,
        })
    }

    /// The Convert listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.config().listen)
    }

    /// The admin listener's address (`/metrics`, `/live`, `/ready`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or_else(|_| self.state.config().admin_listen)
    }

    /// The path-probe echo's address, if it runs.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The metrics (what `/metrics` renders).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets running
    /// connections finish for up to the drain timeout, and resets those
    /// still open. Each configuration received on `reload` (SIGHUP)
    /// replaces the running one for new connections (and re-reads the
    /// registry); running connections are untouched.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
        reload: mpsc::Receiver<Config>,
    ) -> Result<(), Error> {
        let Self {
            state,
            listener,
            is_mptcp,
            admin,
            probe,
            watcher,
            usage_thread,
            stop_tx,
        } = self;
        let metrics = state.metrics.clone();
        {
            let c = state.config();
            info!(
                listen = %c.listen,
                mptcp = is_mptcp,
                admin = %c.admin_listen,
                cookies = c.require_cookie,
                "HAG ready"
            );
        }
        let m = metrics.clone();
        let limits = state.limits.clone();
        // Not ready once it stops accepting (draining).
        let health = admin::Health::new(true);
        let render = move || {
            m.pending
                .set(i64::try_from(limits.pending_handshakes()).unwrap_or(i64::MAX));
            m.render()
        };
        let admin_task = admin::Admin::new(Arc::new(render), health.clone()).spawn(admin);
        let probe_task = probe.map(|sock| tokio::spawn(probe::serve(sock, state.clone())));
        let (watcher_thread, poke) = watcher.unzip();
        let reload_task = tokio::spawn(apply_reloads(state.clone(), reload, poke, health.clone()));
        let report_task = tokio::spawn(report::run(state.clone()));
        server::accept_loop(state.clone(), listener, shutdown).await;
        health.set_ready(false);
        drain(&state, &stop_tx).await;
        reload_task.abort();
        report_task.abort();
        admin_task.stop().await;
        if let Some(t) = probe_task {
            t.abort();
        }
        // The watcher thread ends when its channel closes (the reload task
        // held the sender).
        drop(watcher_thread);
        // The finished connections' usage is committed before the HAG exits.
        if let Some(u) = state.usage.clone() {
            let _ = tokio::task::spawn_blocking(move || u.flush()).await;
        }
        drop(usage_thread);
        Ok(())
    }
}

/// Opens the Convert listener (MPTCP unless `mptcp = false`, server-side
/// Fast Open without cookie).
fn listen(config: &Config) -> Result<(tokio::net::TcpListener, bool), Error> {
    let opts = mptcp_sock::ListenOptions {
        mptcp: config.mptcp,
        fastopen_queue: config.fastopen_queue,
        fastopen_no_cookie: true,
        transparent: false,
        backlog: config.backlog,
        congestion: Some(config.congestion_control.clone()),
        rcvbuf: (config.mptcp_rcvbuf_bytes > 0).then_some(config.mptcp_rcvbuf_bytes),
    };
    let (std_listener, is_mptcp) = mptcp_sock::listen(config.listen, &opts)?;
    let listener =
        tokio::net::TcpListener::from_std(std_listener).map_err(|source| Error::Register {
            addr: config.listen,
            source,
        })?;
    Ok((listener, is_mptcp))
}

/// Applies each configuration received (SIGHUP) and re-reads the registry;
/// once both are in place the admin `/status` shows the next configuration
/// generation and "configuration reloaded" is logged.
async fn apply_reloads(
    st: Arc<server::State>,
    mut reload: mpsc::Receiver<Config>,
    poke: Option<std::sync::mpsc::Sender<watch::Poke>>,
    health: Arc<admin::Health>,
) {
    while let Some(new) = reload.recv().await {
        let old = st.config();
        if new.listen != old.listen
            || new.admin_listen != old.admin_listen
            || new.registry != old.registry
        {
            warn!("listen, admin_listen and registry changes need a restart; the rest is applied");
        }
        st.limits.reconfigure(new.limits);
        *st.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        if let Some(poke) = &poke {
            let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
            if poke.send(ack_tx).is_ok() {
                // Bounded: a registry stuck on a lock must not hold up
                // the configuration, which is already applied.
                if tokio::time::timeout(Duration::from_secs(5), ack_rx)
                    .await
                    .is_err()
                {
                    warn!("the subscriber registry did not reload within 5 s");
                }
            }
        }
        let generation = health.config_applied();
        info!(generation, "configuration reloaded");
    }
}

/// Waits for running connections up to the drain timeout, then resets
/// those left (and gives them 2 s to go).
async fn drain(state: &server::State, stop_tx: &tokio_watch::Sender<bool>) {
    let c = state.config();
    let max = state.slots_total;
    let metrics = &state.metrics;
    info!(active = metrics.active.get(), "stopped accepting; draining");
    let drained = tokio::time::timeout(c.drain_timeout, state.slots.acquire_many(max)).await;
    if drained.is_err() {
        warn!(
            left = metrics.active.get(),
            "drain timeout passed; resetting the remaining connections"
        );
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), state.slots.acquire_many(max)).await;
    }
}

/// Runs the HAG until `shutdown` resolves ([`Server::bind`] then
/// [`Server::serve`]).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reload: mpsc::Receiver<Config>,
) -> Result<(), Error> {
    Server::bind(config).await?.serve(shutdown, reload).await
}
