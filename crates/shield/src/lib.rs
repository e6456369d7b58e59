//! `tandem shield`: the anti-phishing protective DNS resolver.
//!
//! It answers the subscribers' DNS over UDP and TCP (and nobody else's:
//! REFUSED), forwards what it does not know to upstream resolvers through a
//! TTL-respecting cache with negative caching (RFC 2308), and blocks the
//! names on its lists: an A/AAAA pointing to the warning page, NXDOMAIN,
//! NODATA or no answer, with an Extended DNS Error (RFC 8914) naming the
//! list. Lists are domain files, hosts files and RPZ zones (file, or AXFR
//! then IXFR from a primary on NOTIFY), plus the domains analysts confirm
//! from citizen reports. The warning page (plain HTTP, four languages) and
//! the reports API run on the warning address; `/metrics`, `/live`,
//! `/ready` and `/status` on the admin address (the `admin` crate). Flood resistance: per-client query
//! limit, response-rate limiting per prefix with slip, ANY refused,
//! bounded TCP connections with idle timeouts.
//!
//! What it does not do: recursion from the root (it forwards), DNSSEC
//! validation (it passes DO/CD and the signatures through), DNS over TLS or
//! HTTPS, RPZ triggers other than QNAME.
//!
//! Modules: [`config`] (TOML → validated config), [`names`] (the compact
//! name set), [`policy`] (lists in force and the decision), [`feeds`]
//! (list formats), [`xfr`] (AXFR/IXFR), [`reports`] (SQLite store),
//! [`metrics`]; internal: `resolver` (one query to one answer), `cache`,
//! `upstream`, `ratelimit`, `server` (sockets), `loader` (refresh tasks),
//! `web` (warning page, API, admin).
#![forbid(unsafe_code)]

mod cache;
pub mod config;
pub mod feeds;
mod loader;
pub mod metrics;
pub mod names;
pub mod policy;
mod ratelimit;
pub mod reports;
mod resolver;
mod server;
mod upstream;
mod web;
pub mod xfr;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{watch, Notify};
use tracing::info;

pub use config::{Config, ConfigError, ListKind, ListSource};
pub use loader::{REPORTS_ALLOW_LIST, REPORTS_BLOCK_LIST};
pub use metrics::Metrics;
pub use policy::{Action, Policy};

/// Why the shield could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be opened.
    #[error("opening the {what} listener on {addr}: {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A list could not be loaded at start.
    #[error("loading list {list:?}: {source}")]
    List {
        /// The list.
        list: String,
        /// Why.
        #[source]
        source: feeds::FeedError,
    },
    /// The report database could not be opened.
    #[error("{0}")]
    Reports(#[from] reports::ReportError),
    /// A list takes a name the reports use.
    #[error("invalid configuration: list name {0:?} is reserved for the reports")]
    ReservedListName(&'static str),
    /// Loading a list at start stopped before it finished (the loader
    /// thread panicked or was cancelled).
    #[error("loading list {list}: {source}")]
    Loader {
        /// The list.
        list: String,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// A shield with its sockets bound and its file lists loaded, not yet
/// serving. Tests bind port 0 and read the addresses back.
#[derive(Debug)]
pub struct Server {
    shared: Arc<resolver::Shared>,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    http: Vec<TcpListener>,
    admin: TcpListener,
    store: Option<Arc<Mutex<reports::Store>>>,
    reports_seen: (Vec<String>, Vec<String>),
    wakes: Vec<(usize, Arc<Notify>)>,
}

impl Server {
    /// Binds every listener and loads the file lists and the confirmed
    /// reports.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let mut names: Vec<(Arc<str>, bool, config::EdeKind)> = config
            .lists
            .iter()
            .map(|l| (Arc::from(l.name.as_str()), l.allow, l.ede))
            .collect();
        if config.reports.is_some() {
            if let Some((_, reserved)) = config::reserved_list(&config.lists) {
                return Err(Error::ReservedListName(reserved));
            }
            names.push((REPORTS_BLOCK_LIST.into(), false, config::EdeKind::Blocked));
            names.push((REPORTS_ALLOW_LIST.into(), true, config::EdeKind::Blocked));
        }
        let policy = Arc::new(Policy::new(names));
        let metrics = Arc::new(Metrics::default());

        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in &config.listen {
            let socks =
                server::bind_udp(addr, config.udp_workers).map_err(|source| Error::Listen {
                    what: "DNS UDP",
                    addr,
                    source,
                })?;
            let bound = socks[0].local_addr().map_err(|source| Error::Listen {
                what: "DNS UDP",
                addr,
                source,
            })?;
            let l = server::bind_tcp(bound).map_err(|source| Error::Listen {
                what: "DNS TCP",
                addr: bound,
                source,
            })?;
            udp.extend(socks);
            tcp.push(l);
        }
        let mut http = Vec::new();
        for &addr in &config.warning_http_listen {
            http.push(server::bind_tcp(addr).map_err(|source| Error::Listen {
                what: "warning page",
                addr,
                source,
            })?);
        }
        let admin = server::bind_tcp(config.admin_listen).map_err(|source| Error::Listen {
            what: "admin",
            addr: config.admin_listen,
            source,
        })?;

        for l in &config.lists {
            if let ListSource::File(p) = &l.source {
                let (c, p2, pol, m) = (l.clone(), p.clone(), policy.clone(), metrics.clone());
                tokio::task::spawn_blocking(move || loader::load_file_now(&c, &p2, &pol, &m))
                    .await
                    .map_err(|source| Error::Loader {
                        list: l.name.clone(),
                        source,
                    })?
                    .map_err(|source| Error::List {
                        list: l.name.clone(),
                        source,
                    })?;
            }
        }
        let (store, reports_seen) = match &config.reports {
            None => (None, Default::default()),
            Some(r) => {
                let store = Arc::new(Mutex::new(reports::Store::open(&r.database)?));
                let seen = loader::load_reports(&store, r.action, &policy, &metrics, None)?;
                (Some(store), seen)
            }
        };
        let mut notify = Vec::new();
        let mut wakes = Vec::new();
        for (i, l) in config.lists.iter().enumerate() {
            if let ListSource::Transfer { primary, zone } = &l.source {
                let wake = Arc::new(Notify::new());
                notify.push(resolver::NotifyTarget {
                    primary: config::canonical_ip(primary.ip()),
                    zone: zone.clone(),
                    wake: wake.clone(),
                });
                wakes.push((i, wake));
            }
        }
        let shared = Arc::new(resolver::Shared {
            cache: cache::Cache::new(config.cache_max_entries),
            upstreams: upstream::Upstreams::new(
                config.upstreams.clone(),
                config.upstream_timeout,
                config.upstream_max_in_flight,
                |server| {
                    metrics
                        .upstream_failures
                        .get_or_create(&metrics::UpstreamLabel {
                            upstream: server.to_string(),
                        })
                        .clone()
                },
            ),
            ttl: cache::TtlPolicy {
                min_secs: config.cache_min_ttl_secs,
                max_secs: config.cache_max_ttl_secs,
                negative_max_secs: config.negative_ttl_max_secs,
                servfail_secs: config.servfail_ttl_secs,
            },
            config,
            policy,
            metrics,
            notify,
        });
        Ok(Self {
            shared,
            udp,
            tcp,
            http,
            admin,
            store,
            reports_seen,
            wakes,
        })
    }

    /// The DNS addresses (UDP and TCP) actually bound.
    pub fn dns_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The warning page addresses actually bound.
    pub fn warning_addrs(&self) -> Vec<SocketAddr> {
        self.http
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The admin address actually bound.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    /// The metrics (for in-process tests).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The lists in force (for in-process tests).
    pub fn policy(&self) -> Arc<Policy> {
        self.shared.policy.clone()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let (stop_tx, stop) = watch::channel(false);
        let sh = self.shared;
        let cfg = &sh.config;
        let limits = Arc::new(server::Limits::new(&cfg.limits));
        let mut tasks = tokio::task::JoinSet::new();
        for s in self.udp {
            tasks.spawn(server::udp_worker(
                sh.clone(),
                limits.clone(),
                Arc::new(s),
                stop.clone(),
            ));
        }
        for l in self.tcp {
            tasks.spawn(server::tcp_accept(
                sh.clone(),
                limits.clone(),
                l,
                stop.clone(),
            ));
        }
        let web_state = web::WebState {
            metrics: sh.metrics.clone(),
            store: self.store.clone(),
            operator: Arc::from(cfg.operator_name.as_str()),
        };
        for l in self.http {
            let app = web::warning_router(web_state.clone());
            let mut st = stop.clone();
            tasks.spawn(async move {
                let _ = axum::serve(l, app)
                    .with_graceful_shutdown(async move {
                        let _ = st.changed().await;
                    })
                    .await;
            });
        }
        {
            // Ready once every list has loaded.
            let (m, p) = (sh.metrics.clone(), sh.policy.clone());
            let health = admin::Health::with_check(move || p.all_loaded());
            let admin = admin::Admin::new(Arc::new(move || m.render()), health);
            let mut st = stop.clone();
            tasks.spawn(admin.serve(self.admin, async move {
                let _ = st.changed().await;
            }));
        }
        for l in &cfg.lists {
            if let ListSource::File(p) = &l.source {
                tasks.spawn(loader::watch_file(
                    l.clone(),
                    p.clone(),
                    sh.policy.clone(),
                    sh.metrics.clone(),
                    stop.clone(),
                ));
            }
        }
        for (i, wake) in self.wakes {
            let l = cfg.lists[i].clone();
            if let ListSource::Transfer { primary, zone } = l.source.clone() {
                tasks.spawn(loader::transfer_loop(
                    l,
                    primary,
                    zone,
                    sh.policy.clone(),
                    sh.metrics.clone(),
                    wake,
                    stop.clone(),
                ));
            }
        }
        if let (Some(store), Some(r)) = (self.store, &cfg.reports) {
            tasks.spawn(loader::reports_loop(
                store,
                r.action,
                r.apply_interval,
                sh.policy.clone(),
                sh.metrics.clone(),
                self.reports_seen,
                stop.clone(),
            ));
        }
        {
            let (m, shc) = (sh.metrics.clone(), sh.clone());
            let mut st = stop.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = st.changed() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    }
                    m.roll_day();
                    m.cache_entries.set(shc.cache.len() as i64);
                }
            });
        }
        info!(
            dns = ?cfg.listen,
            warning = ?cfg.warning_http_listen,
            admin = %cfg.admin_listen,
            lists = cfg.lists.len(),
            "shield ready"
        );
        shutdown.await;
        info!("shield stopping");
        let _ = stop_tx.send(true);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(std::time::Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!("tasks still running after 5 s; stopping them");
        }
        Ok(())
    }
}

/// Runs the shield until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    Server::bind(config).await?.serve(shutdown).await
}
