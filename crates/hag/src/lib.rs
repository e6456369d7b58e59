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
//! operator ranges are refused (no SSRF); subscribers prove who they are with
//! a Cookie TLV ([`cookie`]) checked against the registry ([`registry`]);
//! [`limits`] bound each subscriber and each source; deadlines bound every
//! phase; error replies are rate-limited.
//!
//! Modules: [`config`] (TOML → validated config), [`cookie`], [`registry`],
//! [`limits`], [`metrics`] (Prometheus registry), `server` (the accept loop and one connection's life); the admin
//! listener (`/metrics`, `/live`, `/ready`) is `relay::admin`.
#![forbid(unsafe_code)]

pub mod config;
pub mod cookie;
pub mod limits;
pub mod metrics;
mod probe;
pub mod registry;
mod server;
pub mod usage;

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
    /// The path-probe echo port could not be opened.
    #[error("opening the path-probe echo on udp {addr}: {source}")]
    Probe {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The usage database could not be opened.
    #[error(transparent)]
    Usage(#[from] usage::UsageError),
    /// The subscriber registry could not be opened.
    #[error("{0}")]
    Registry(#[from] registry::RegistryError),
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

/// Keeps the in-memory subscriber snapshot in step with the registry file:
/// re-reads it when another process commits (polled every second) and when
/// poked (SIGHUP); a poke is answered once the snapshot it asked for is in
/// place, so "configuration reloaded" means the registry was re-read too.
/// Runs on its own thread (SQLite is blocking).
fn watch_registry(
    path: std::path::PathBuf,
    target: Arc<std::sync::RwLock<Arc<registry::Snapshot>>>,
    poke: std::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
) -> Result<std::thread::JoinHandle<()>, registry::RegistryError> {
    let reg = registry::Registry::open(&path)?;
    // The version is read before the snapshot: a commit landing between the
    // two is then seen as a change on the first poll, not missed.
    let mut seen = reg.data_version().unwrap_or(-1);
    let first = reg.snapshot()?;
    info!(subscribers = first.by_id.len(), registry = %path.display(), "subscriber registry loaded");
    *target
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(first);
    Ok(std::thread::spawn(move || loop {
        let ack = match poke.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(ack) => Some(ack),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let now = reg.data_version().unwrap_or(seen);
        if now == seen && ack.is_none() {
            continue;
        }
        seen = now;
        match reg.snapshot() {
            Ok(s) => {
                info!(subscribers = s.by_id.len(), "subscriber registry reloaded");
                *target
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(s);
            }
            Err(e) => warn!("reloading the subscriber registry: {e}; keeping the previous one"),
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }))
}

/// Runs the HAG until `shutdown` resolves, then stops accepting, lets running
/// connections finish for up to the drain timeout, and resets those still
/// open. Each configuration received on `reload` (SIGHUP) replaces the
/// running one for new connections; running connections are untouched.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    mut reload: tokio::sync::mpsc::Receiver<Config>,
) -> Result<(), Error> {
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
        rcvbuf: (config.mptcp_rcvbuf_bytes > 0).then_some(config.mptcp_rcvbuf_bytes),
    };
    let (std_listener, is_mptcp) = mptcp_sock::listen(config.listen, &opts)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| Error::Admin {
            addr: config.admin_listen,
            source,
        })?;
    let probe_sock = match config.probe_listen {
        Some(addr) => Some(
            tokio::net::UdpSocket::bind(addr)
                .await
                .map_err(|source| Error::Probe { addr, source })?,
        ),
        None => None,
    };
    let subscribers = Arc::new(std::sync::RwLock::new(Arc::new(
        registry::Snapshot::default(),
    )));
    let (poke_tx, poke_rx) = std::sync::mpsc::channel();
    let watcher = match &config.registry {
        Some(path) => Some(watch_registry(path.clone(), subscribers.clone(), poke_rx)?),
        None => None,
    };
    let mut local = interface_addresses();
    local.extend(config.local_addresses.iter().copied());
    local.insert(config.listen.ip());
    info!(
        listen = %config.listen,
        mptcp = is_mptcp,
        admin = %config.admin_listen,
        cookies = config.require_cookie,
        "HAG ready"
    );
    let metrics = Arc::new(Metrics::default());
    let (usage, usage_thread) = match &config.usage_db {
        Some(p) => {
            let (w, t) = usage::Writer::start(p)?;
            info!(usage = %p.display(), "per-subscriber usage kept");
            (Some(w), Some(t))
        }
        None => (None, None),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let max = config.max_connections;
    let drain = config.drain_timeout;
    let state = Arc::new(server::State {
        slots: Arc::new(Semaphore::new(max)),
        limits: limits::Limits::new(config.limits),
        config: std::sync::RwLock::new(Arc::new(config)),
        subscribers,
        metrics: metrics.clone(),
        local,
        stop: stop_rx,
        usage,
    });
    let m = metrics.clone();
    // Not ready once it stops accepting (draining).
    let accepting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let acc = accepting.clone();
    let admin_task = tokio::spawn(relay::admin::serve(
        admin,
        Arc::new(move || m.render()),
        Arc::new(move || acc.load(std::sync::atomic::Ordering::Relaxed)),
    ));
    let probe_task = probe_sock.map(|sock| tokio::spawn(probe::serve(sock, state.clone())));
    let st = state.clone();
    let has_registry = watcher.is_some();
    let reload_task = tokio::spawn(async move {
        while let Some(new) = reload.recv().await {
            let old = st.config();
            if new.listen != old.listen
                || new.admin_listen != old.admin_listen
                || new.registry != old.registry
            {
                warn!(
                    "listen, admin_listen and registry changes need a restart; the rest is applied"
                );
            }
            st.limits.reconfigure(new.limits);
            *st.config
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(new);
            if has_registry {
                let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
                if poke_tx.send(ack_tx).is_ok() {
                    // Bounded: a registry stuck on a lock must not hold up
                    // the configuration, which is already applied.
                    if tokio::time::timeout(std::time::Duration::from_secs(5), ack_rx)
                        .await
                        .is_err()
                    {
                        warn!("the subscriber registry did not reload within 5 s");
                    }
                }
            }
            info!("configuration reloaded");
        }
    });
    server::accept_loop(state.clone(), listener, shutdown).await;
    accepting.store(false, std::sync::atomic::Ordering::Relaxed);
    info!(active = metrics.active.get(), "stopped accepting; draining");
    let drained = tokio::time::timeout(drain, state.slots.acquire_many(max as u32)).await;
    if drained.is_err() {
        warn!(
            left = metrics.active.get(),
            "drain timeout passed; resetting the remaining connections"
        );
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            state.slots.acquire_many(max as u32),
        )
        .await;
    }
    reload_task.abort();
    admin_task.abort();
    if let Some(t) = probe_task {
        t.abort();
    }
    drop(watcher); // the thread ends when its channel closes
                   // The finished connections' usage is committed before the HAG exits.
    if let Some(u) = state.usage.clone() {
        let _ = tokio::task::spawn_blocking(move || u.flush()).await;
    }
    drop(usage_thread);
    Ok(())
}
