//! The admin listener every Tandem daemon runs (the HAG, the CPE, the
//! shield, and the services to come), so that they all answer the same way:
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | OpenMetrics text from the daemon's renderer ([`Render`], usually [`render`] of its registry) |
//! | `/live` | `200 live`: the process answers |
//! | `/ready` | `200 ready` while the daemon takes new work, `503 not ready` otherwise (a HAG draining, a shield whose lists are not loaded yet), so that a load balancer stops sending it new work |
//! | `/status` | JSON `{"ready": bool, "config_generation": n, "uptime_seconds": s}`: `config_generation` is 1 for the configuration the daemon started with and goes up by one each time a reloaded configuration is in force, so a tool that sent SIGHUP knows when the new one applies without reading logs |
//!
//! The listener is bounded ([`Limits`]): a connection must send its request
//! headers within a timeout, lives at most a fixed time, and past a number
//! of open connections new ones are closed at once; none of it can hold up
//! the daemon's own work. It is meant for loopback or a management network.
//!
//! Map: [`Health`] (readiness and configuration generation, shared with the
//! daemon), [`Admin`] (the routes), [`Admin::serve`] (on the bounded
//! accept loop, [`serve_bounded`], which other HTTP endpoints use too) and
//! [`Admin::spawn`] (the same on a task, stopped with [`Running::stop`]).
//! [`tls`] loads a certificate and key for [`serve_bounded_tls`], the same
//! loop with TLS first (the handshake within the header timeout too).
#![forbid(unsafe_code)]

pub mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

/// Renders the metrics text on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The OpenMetrics text of a registry (what every daemon's `/metrics`
/// serves).
pub fn render(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; a metric that fails to encode
    // leaves the text it wrote so far.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// What `/ready` and `/status` report, shared between the daemon (which
/// changes it) and its admin listener (which reads it).
pub struct Health {
    ready: AtomicBool,
    generation: AtomicU64,
    check: Option<Box<dyn Fn() -> bool + Send + Sync>>,
    started: Instant,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.is_ready())
            .field("config_generation", &self.generation())
            .finish()
    }
}

impl Health {
    /// Readiness set by the daemon ([`Health::set_ready`]), starting at
    /// `ready`; configuration generation 1.
    pub fn new(ready: bool) -> Arc<Self> {
        Arc::new(Self::with(ready, None))
    }

    /// Ready while the flag is set and `check` holds (asked on each
    /// request: e.g. "every list loaded").
    pub fn with_check(check: impl Fn() -> bool + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self::with(true, Some(Box::new(check))))
    }

    fn with(ready: bool, check: Option<Box<dyn Fn() -> bool + Send + Sync>>) -> Self {
        Self {
            ready: AtomicBool::new(ready),
            generation: AtomicU64::new(1),
            check,
            started: Instant::now(),
        }
    }

    /// Sets whether the daemon takes new work.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the daemon takes new work.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.check.as_ref().is_none_or(|c| c())
    }

    /// Records that a reloaded configuration is now in force; returns the
    /// new generation.
    pub fn config_applied(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The configuration generation in force (1 at start).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The listener's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request's headers must arrive within this time.
    pub header_timeout: Duration,
    /// A connection is closed after this time, whatever it does.
    pub connection_lifetime: Duration,
    /// Connections open at once; further ones are closed on accept.
    pub max_connections: usize,
}

impl Default for Limits {
    /// 5 s for headers, 30 s per connection, 32 connections: a scraper or
    /// a probe needs one connection and a few milliseconds.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(30),
            max_connections: 32,
        }
    }
}

/// One daemon's admin endpoints.
#[derive(Clone)]
pub struct Admin {
    render: Render,
    health: Arc<Health>,
    limits: Limits,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("health", &self.health)
            .field("limits", &self.limits)
            .finish()
    }
}

#[derive(serde::Serialize)]
struct Status {
    ready: bool,
    config_generation: u64,
    uptime_seconds: u64,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Admin {
    /// The endpoints of a daemon that renders its metrics with `render` and
    /// reports `health`, with the default [`Limits`].
    pub fn new(render: Render, health: Arc<Health>) -> Self {
        Self {
            render,
            health,
            limits: Limits::default(),
        }
    }

    /// Other bounds.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/live", get(|| async { "live\n" }))
            .route("/ready", get(ready))
            .route("/status", get(status))
            .with_state(self.clone())
    }

    /// Serves the endpoints on `listener` on a task of their own until
    /// [`Running::stop`].
    pub fn spawn(self, listener: tokio::net::TcpListener) -> Running {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(listener, async {
            let _ = stopped.await;
        }));
        Running { stop, task }
    }

    /// Serves the endpoints on `listener` until `shutdown` resolves; the
    /// connections still open then are closed.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) {
        let limits = self.limits;
        serve_bounded(self.router(), listener, limits, shutdown).await;
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves
/// (then the connections still open are closed): the bounded accept loop of
/// the admin listener, for any daemon's HTTP endpoints (the ops API uses it
/// with limits of its own).
pub async fn serve_bounded(
    router: Router,
    listener: tokio::net::TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(router, listener, None, limits, shutdown).await;
}

/// As [`serve_bounded`], with TLS first on every connection: a client
/// must finish its handshake within the header timeout, then send its
/// request headers within it, so a slow handshake holds a connection slot
/// no longer than a slow request would.
pub async fn serve_bounded_tls(
    router: Router,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(router, listener, Some(acceptor), limits, shutdown).await;
}

async fn accept_loop(
    router: Router,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors, typically: wait instead of spinning.
                    tracing::warn!("http listener: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!("http listener: connection limit reached; closing one");
            drop(stream);
            continue;
        };
        let svc = TowerToHyperService::new(router.clone());
        let tls = tls.clone();
        conns.spawn(async move {
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout);
                b
            };
            // Errors here are the client's (reset, malformed request or
            // handshake, timeout); the connection is simply gone.
            match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    let _ = tokio::time::timeout(limits.connection_lifetime, conn).await;
                }
                Some(acceptor) => {
                    let started = Instant::now();
                    let Ok(Ok(s)) =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    else {
                        drop(permit);
                        return;
                    };
                    let lifetime = limits.connection_lifetime.saturating_sub(started.elapsed());
                    let conn = builder.serve_connection(TokioIo::new(s), svc);
                    let _ = tokio::time::timeout(lifetime, conn).await;
                }
            }
            drop(permit);
        });
    }
}

/// An admin listener running on its own task ([`Admin::spawn`]).
#[derive(Debug)]
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the listener and waits until it has closed its connections.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    ([(CONTENT_TYPE, OPENMETRICS)], (a.render)()).into_response()
}

async fn ready(State(a): State<Admin>) -> Response {
    if a.health.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn status(State(a): State<Admin>) -> Response {
    let s = Status {
        ready: a.health.is_ready(),
        config_generation: a.health.generation(),
        uptime_seconds: a.health.started.elapsed().as_secs(),
    };
    axum::Json(s).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_counts_applied_configurations() {
        let h = Health::new(true);
        assert_eq!(h.generation(), 1);
        assert_eq!(h.config_applied(), 2);
        assert_eq!(h.config_applied(), 3);
        assert_eq!(h.generation(), 3);
    }

    #[test]
    fn ready_needs_the_flag_and_the_check() {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let h = Health::with_check(move || f.load(Ordering::Relaxed));
        assert!(!h.is_ready());
        flag.store(true, Ordering::Relaxed);
        assert!(h.is_ready());
        h.set_ready(false);
        assert!(!h.is_ready());
    }

    #[test]
    fn renders_a_registry() {
        let mut r = prometheus_client::registry::Registry::default();
        let c = prometheus_client::metrics::counter::Counter::<u64>::default();
        r.register("things", "Things seen", c.clone());
        c.inc();
        let text = render(&r);
        assert!(text.contains("things_total 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
