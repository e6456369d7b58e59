//! `tandem ops run`: the service. CPEs and HAGs post signed reports; the
//! engine diagnoses; incidents are kept in the database; operators (and the
//! console) read and change them through the versioned JSON API.
//!
//! | method, path | who | what |
//! |---|---|---|
//! | `POST /api/v1/reports` | a CPE (`X-Tandem-Signature`) | one telemetry report; `204`, or `400` malformed, dated ahead of ops' clock or older than the history, `401` unknown or bad signature, `409` replayed, `422` not in the inventory |
//! | `POST /api/v1/hag-reports` | a HAG (`X-Tandem-Signature`) | one HAG report |
//! | `GET /api/v1/homes/{subscriber}` | operator (`Authorization: Bearer`) | the home: its place in the inventory, its last report in brief (when, over which link) and its diagnosis |
//! | `GET /api/v1/homes/{subscriber}/diagnosis` | operator | the home's diagnosis now |
//! | `POST /api/v1/tickets` `{"subscriber"}` | operator | a customer called: the diagnosis and the incident it belongs to |
//! | `GET /api/v1/incidents[?state=&limit=]` | operator | incidents, newest first |
//! | `GET /api/v1/incidents/{id}` | operator | one incident with its homes |
//! | `POST /api/v1/incidents/{id}/dispatch` `{"note"}` | operator | someone is on the way |
//! | `POST /api/v1/incidents/{id}/resolve` `{"finding", "note"}` | operator | repaired; `finding` is where the fault really was |
//! | `GET /api/v1/stats` | operator | incidents per state, first-time fix |
//! | `POST /api/v1/grants` `{"cabinet"\|"cell"\|"homes", "extra_bytes", "hours", "note"}` | operator | extra mobile budget for a set of homes; `201`, `400` malformed, `422` not in the inventory |
//! | `GET /api/v1/grants[?holding=true]` | operator | the grants, newest first |
//! | `POST /api/v1/grants/{id}/revoke` | operator | the grant stops holding now |
//!
//! An accepted report is answered `200` with the sender's policy
//! ([`telemetry::Policy`] for a CPE, [`telemetry::HagPolicy`] for a HAG:
//! the budget waived while a line or cabinet incident on the home is
//! active, the extra budget granted), signed with the sender's key in
//! `X-Tandem-Signature` ([`crate::policy`]).
//!
//! Every `scan_interval` every home is diagnosed; a home, cabinet, line
//! card, cell or core diagnosis opens an incident for its group or adds the
//! home to the one open (a home's own incident is merged into its cabinet's,
//! cell's or the core's); an open incident nobody has diagnosed for
//! [`CLEAR_AFTER`] is cleared.
//!
//! Accepted reports are kept (batched on a writer thread; past the queue
//! they are counted and dropped, never blocking ingest) for the retention,
//! and a restart gives the engine back the last 90 minutes and the replay
//! check the last boots' sequence numbers.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hybrid::Location;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use telemetry::{HagReport, Key, Report};

use crate::config::Config;
use crate::engine::Engine;
use crate::history::HISTORY_MINUTES;
use crate::inventory::Inventory;
use crate::policy::{GrantError, GrantRequest, Policies};
use crate::store::{group_key, Incident, State as IState, Store, StoredReport, TokenKind};
use crate::Diagnosis;

/// An open incident nobody has diagnosed for this long is cleared.
pub const CLEAR_AFTER: Duration = Duration::from_secs(600);

/// Reports waiting for the writer at most.
const WRITE_QUEUE: usize = 100_000;

/// Homes diagnosed per hold of the engine's lock during a scan.
const SCAN_SLICE: usize = 1_000;

/// Boots remembered per CPE for the replay check.
const BOOTS_KEPT: usize = 8;

/// Why the service cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The inventory file.
    #[error("inventory {}: {msg}", path.display())]
    Inventory {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread could not start.
    #[error("starting the report writer: {0}")]
    Thread(std::io::Error),
    /// The API's TLS certificate or key.
    #[error("api TLS: {0}")]
    Tls(String),
}

/// Wall clock, Unix ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

struct Metrics {
    registry: Registry,
    reports: Family<ResultLabel, Counter>,
    hag_reports: Family<ResultLabel, Counter>,
    stored: Counter,
    storage_dropped: Counter,
    incidents_opened: Counter,
    incidents_active: Gauge,
    scan_ms: Gauge,
    waived: Gauge,
    granted: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("tandem_ops");
        let m = Self {
            reports: Family::default(),
            hag_reports: Family::default(),
            stored: Counter::default(),
            storage_dropped: Counter::default(),
            incidents_opened: Counter::default(),
            incidents_active: Gauge::default(),
            scan_ms: Gauge::default(),
            waived: Gauge::default(),
            granted: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("reports", "CPE reports by result", m.reports.clone());
        registry.register(
            "hag_reports",
            "HAG reports by result",
            m.hag_reports.clone(),
        );
        registry.register(
            "stored_reports",
            "Reports written to the database",
            m.stored.clone(),
        );
        registry.register(
            "storage_dropped_reports",
            "Reports not kept because the writer's queue was full",
            m.storage_dropped.clone(),
        );
        registry.register(
            "incidents_opened",
            "Incidents opened",
            m.incidents_opened.clone(),
        );
        registry.register(
            "incidents_active",
            "Incidents open or dispatched",
            m.incidents_active.clone(),
        );
        registry.register(
            "waived_homes",
            "Homes whose mobile budget is waived (an active line or cabinet incident)",
            m.waived.clone(),
        );
        registry.register(
            "granted_homes",
            "Homes with extra mobile budget granted now",
            m.granted.clone(),
        );
        registry.register(
            "scan_milliseconds",
            "Duration of the last scan of every home",
            m.scan_ms.clone(),
        );
        Self { registry, ..m }
    }

    fn report(&self, result: &'static str) {
        self.reports.get_or_create(&ResultLabel { result }).inc();
    }

    fn hag(&self, result: &'static str) {
        self.hag_reports
            .get_or_create(&ResultLabel { result })
            .inc();
    }
}

#[derive(Default)]
struct Keys {
    cpe: HashMap<String, Key>,
    hag: HashMap<String, Key>,
    operator: Vec<Key>,
    version: (i64, i64),
}

/// The last boots of each CPE, and below which date an unknown boot is an
/// old one forgotten (a replay), not a new one.
#[derive(Default)]
struct ReplayGuard {
    cpes: HashMap<String, Boots>,
    /// Each HAG's latest report date (a HAG dates each report strictly
    /// after the one before).
    hags: HashMap<String, u64>,
}

#[derive(Default)]
struct Boots {
    /// `(boot_id, highest seq, its sent_at_ms)`.
    kept: Vec<(String, u64, u64)>,
    /// The latest report date of a boot no longer kept.
    floor_ms: u64,
}

impl ReplayGuard {
    /// Whether `(boot, seq)` is new for `sub`; records it if so.
    fn admit(&mut self, sub: &str, boot: &str, seq: u64, sent_at_ms: u64) -> bool {
        let b = self.cpes.entry(sub.to_string()).or_default();
        if let Some(k) = b.kept.iter_mut().find(|k| k.0 == boot) {
            if seq <= k.1 {
                return false;
            }
            k.1 = seq;
            k.2 = k.2.max(sent_at_ms);
            return true;
        }
        if sent_at_ms <= b.floor_ms {
            return false;
        }
        if b.kept.len() >= BOOTS_KEPT {
            // Forget the boot whose last report is the oldest.
            if let Some(i) = (0..b.kept.len()).min_by_key(|&i| b.kept[i].2) {
                let old = b.kept.swap_remove(i);
                b.floor_ms = b.floor_ms.max(old.2);
            }
        }
        b.kept.push((boot.to_string(), seq, sent_at_ms));
        true
    }
}

struct Shared {
    config: Config,
    engine: Mutex<Engine>,
    store: Mutex<Store>,
    keys: RwLock<Keys>,
    replay: Mutex<ReplayGuard>,
    writer: Mutex<Option<mpsc::SyncSender<StoredReport>>>,
    last_seen: Mutex<HashMap<i64, u64>>,
    /// What holds now (waivers, grants), recomputed after each scan.
    policies: RwLock<Policies>,
    metrics: Metrics,
}

/// A bound, ready service.
pub struct Server {
    api: tokio::net::TcpListener,
    /// TLS on the API, when configured.
    tls: Option<tokio_rustls::TlsAcceptor>,
    admin: tokio::net::TcpListener,
    shared: Arc<Shared>,
    writer: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("api", &self.api.local_addr().ok())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not take the service down with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn load_keys(store: &Store) -> Result<Keys, crate::store::Error> {
    Ok(Keys {
        cpe: store.keys(TokenKind::Cpe)?,
        hag: store.keys(TokenKind::Hag)?,
        operator: store.keys(TokenKind::Operator)?.into_values().collect(),
        version: store.tokens_version()?,
    })
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

impl Server {
    /// Opens the database and the inventory, gives the engine its recent
    /// history back, and binds the API and admin listeners.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let store = Store::open(&config.db)?;
        let text = std::fs::read_to_string(&config.inventory).map_err(|e| Error::Inventory {
            path: config.inventory.clone(),
            msg: e.to_string(),
        })?;
        let inventory = Inventory::from_csv(&text).map_err(|e| Error::Inventory {
            path: config.inventory.clone(),
            msg: e.to_string(),
        })?;
        let mut engine = Engine::new(inventory, config.settings());
        let now = now_ms();
        let mut restored = 0u64;
        store.reports_since(
            now.saturating_sub(HISTORY_MINUTES as u64 * 60_000),
            |body| {
                if let Ok(r) = Report::parse(body.as_bytes()) {
                    if engine.ingest(&r, r.sent_at_ms).is_ok() {
                        restored += 1;
                    }
                }
            },
        )?;
        // Repairs within the history: what came before them stays past.
        for i in store.resolved_since(now.saturating_sub(HISTORY_MINUTES as u64 * 60_000))? {
            let at = i
                .resolved_ms
                .and_then(|t| u64::try_from(t).ok())
                .unwrap_or(now);
            for h in &i.homes {
                engine.repaired(h, at);
            }
        }
        let mut replay = ReplayGuard::default();
        // Every report young enough to be accepted again has its boot's
        // highest sequence number restored.
        let window = MAX_REPORT_AGE_MS + config.max_clock_skew.as_millis() as u64;
        for s in store.last_seqs(now.saturating_sub(window))? {
            replay.admit(&s.subscriber, &s.boot_id, s.seq, s.sent_at_ms);
        }
        let keys = load_keys(&store)?;
        tracing::info!(
            "ops: {} homes in the inventory, {} reports of history restored, {} CPE tokens",
            engine.inventory().len(),
            restored,
            keys.cpe.len()
        );
        let (tx, rx) = mpsc::sync_channel(WRITE_QUEUE);
        let writer_store = Store::open(&config.db)?;
        let metrics = Metrics::new();
        let stored = metrics.stored.clone();
        let retention = config.retention;
        let writer = std::thread::Builder::new()
            .name("ops-writer".into())
            .spawn(move || write_reports(writer_store, &rx, &stored, retention))
            .map_err(Error::Thread)?;
        let tls = config
            .tls
            .as_ref()
            .map(crate::config::ApiTls::acceptor)
            .transpose()
            .map_err(Error::Tls)?;
        let api = bind(config.api_listen).await?;
        let admin = bind(config.admin_listen).await?;
        Ok(Self {
            api,
            tls,
            admin,
            writer,
            shared: Arc::new(Shared {
                config,
                engine: Mutex::new(engine),
                store: Mutex::new(store),
                keys: RwLock::new(keys),
                replay: Mutex::new(replay),
                writer: Mutex::new(Some(tx)),
                last_seen: Mutex::new(HashMap::new()),
                policies: RwLock::new(Policies::default()),
                metrics,
            }),
        })
    }

    /// The API's address.
    pub fn api_addr(&self) -> std::io::Result<SocketAddr> {
        self.api.local_addr()
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` resolves, then flushes the report writer.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let shared = self.shared;
        let health = admin::Health::new(true);
        let render_shared = shared.clone();
        let adm = admin::Admin::new(
            Arc::new(move || admin::render(&render_shared.metrics.registry)),
            health,
        )
        .spawn(self.admin);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let scanner = tokio::spawn(scan_loop(shared.clone(), stop_rx.clone()));
        let keys = tokio::spawn(key_loop(shared.clone(), stop_rx));
        let limits = admin::Limits {
            header_timeout: shared.config.header_timeout,
            connection_lifetime: Duration::from_secs(60),
            max_connections: shared.config.max_connections,
        };
        match self.tls {
            Some(acceptor) => {
                admin::serve_bounded_tls(
                    router(shared.clone()),
                    self.api,
                    acceptor,
                    limits,
                    shutdown,
                )
                .await;
            }
            None => admin::serve_bounded(router(shared.clone()), self.api, limits, shutdown).await,
        }
        let _ = stop_tx.send(true);
        let _ = scanner.await;
        let _ = keys.await;
        adm.stop().await;
        // Dropping the last sender lets the writer flush and end.
        lock(&shared.writer).take();
        let _ = tokio::task::spawn_blocking(move || self.writer.join()).await;
    }
}

/// Runs the service from a configuration until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let s = Server::bind(config).await?;
    tracing::info!(
        "ops: API on {}, admin on {}",
        s.api_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string()),
        s.admin_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    );
    s.serve(shutdown).await;
    Ok(())
}

fn write_reports(
    mut store: Store,
    rx: &mpsc::Receiver<StoredReport>,
    stored: &Counter,
    retention: Duration,
) {
    let mut batch = Vec::new();
    let mut last_prune = 0u64;
    loop {
        let first = rx.recv_timeout(Duration::from_millis(500));
        let done = matches!(first, Err(mpsc::RecvTimeoutError::Disconnected));
        if let Ok(r) = first {
            batch.push(r);
            while batch.len() < 2_000 {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        }
        if !batch.is_empty() {
            match store.insert_reports(&batch) {
                Ok(()) => {
                    stored.inc_by(batch.len() as u64);
                }
                Err(e) => tracing::warn!("ops: keeping {} reports failed: {e}", batch.len()),
            }
            batch.clear();
        }
        let now = now_ms();
        if now.saturating_sub(last_prune) >= 60_000 {
            last_prune = now;
            let before = now.saturating_sub(retention.as_millis() as u64);
            if let Err(e) = store.prune(before) {
                tracing::warn!("ops: pruning old reports failed: {e}");
            }
        }
        if done {
            return;
        }
    }
}

async fn key_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let store = lock(&s.store);
            let Ok(v) = store.tokens_version() else {
                return;
            };
            if v == s.keys.read().map_or(v, |k| k.version) {
                return;
            }
            match load_keys(&store) {
                Ok(k) => {
                    if let Ok(mut w) = s.keys.write() {
                        *w = k;
                    }
                }
                Err(e) => tracing::warn!("ops: reloading tokens failed: {e}"),
            }
        })
        .await;
    }
}

async fn scan_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.config.scan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let s = shared.clone();
        let r = tokio::task::spawn_blocking(move || scan(&s, now_ms())).await;
        if let Ok(Err(e)) = r {
            tracing::warn!("ops: scan failed: {e}");
        }
    }
}

/// The incident a diagnosis belongs to: the group's active one (the home
/// added), or a new one. A home's own incident is merged into a larger one.
fn file(
    shared: &Shared,
    store: &Store,
    d: &Diagnosis,
    homes: &[String],
    now: u64,
) -> Result<i64, crate::store::Error> {
    let key = group_key(&d.group);
    let id = match store.active_incident(&key)? {
        Some(id) => {
            store.update_incident(id, d, homes, now)?;
            id
        }
        None => {
            shared.metrics.incidents_opened.inc();
            store.open_incident(d, homes, now)?
        }
    };
    lock(&shared.last_seen).insert(id, now);
    if !matches!(d.group, crate::Group::Home(_)) {
        for h in homes {
            if let Some(own) = store.active_incident(&format!("home:{h}"))? {
                if let Ok(i) = store.transition(
                    own,
                    IState::Merged,
                    None,
                    Some(&format!("merged into incident {id}")),
                    now,
                ) {
                    tracing::info!("ops: incident {} merged into {id}", i.id);
                }
            }
        }
    }
    Ok(id)
}

/// Diagnoses every home that has reported and files the incidents.
fn scan(shared: &Shared, now: u64) -> Result<(), crate::store::Error> {
    let started = std::time::Instant::now();
    let mut groups: BTreeMap<String, (Diagnosis, Vec<String>)> = BTreeMap::new();
    // In slices, so that ingest waits for one slice at most, not the fleet.
    let homes = lock(&shared.engine).inventory().len();
    for start in (0..homes).step_by(SCAN_SLICE) {
        let engine = lock(&shared.engine);
        for i in start..(start + SCAN_SLICE).min(homes) {
            if engine.home(i).last.is_none() {
                continue;
            }
            let d = engine.diagnose(i, now);
            if d.location == Location::None {
                continue;
            }
            let sub = d.subscriber.clone();
            groups
                .entry(group_key(&d.group))
                .or_insert_with(|| (d, Vec::new()))
                .1
                .push(sub);
        }
    }
    let store = lock(&shared.store);
    for (d, homes) in groups.values() {
        file(shared, &store, d, homes, now)?;
    }
    // Open incidents nobody diagnoses any more are cleared.
    for inc in store.incidents(Some(IState::Open), 10_000)? {
        let seen = *lock(&shared.last_seen).entry(inc.id).or_insert(now);
        if now.saturating_sub(seen) >= CLEAR_AFTER.as_millis() as u64 {
            store.transition(
                inc.id,
                IState::Cleared,
                None,
                Some("no longer diagnosed"),
                now,
            )?;
            lock(&shared.last_seen).remove(&inc.id);
        }
    }
    let mut active = store.incidents(Some(IState::Open), 10_000)?;
    active.extend(store.incidents(Some(IState::Dispatched), 10_000)?);
    shared.metrics.incidents_active.set(active.len() as i64);
    set_policies(shared, Policies::compute(&active, &store, now)?);
    shared
        .metrics
        .scan_ms
        .set(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
    Ok(())
}

fn set_policies(shared: &Shared, p: Policies) {
    let mut cur = shared
        .policies
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *cur != p {
        tracing::info!(
            waived = p.waived.len(),
            granted = p.extra.len(),
            "ops: policy changed"
        );
        shared.metrics.waived.set(p.waived.len() as i64);
        shared.metrics.granted.set(p.extra.len() as i64);
        *cur = p;
    }
}

/// Recomputes the policy now (after a grant changed).
fn refresh_policies(shared: &Shared, store: &Store) -> Result<(), crate::store::Error> {
    let mut active = store.incidents(Some(IState::Open), 10_000)?;
    active.extend(store.incidents(Some(IState::Dispatched), 10_000)?);
    set_policies(shared, Policies::compute(&active, store, now_ms())?);
    Ok(())
}

/// A `200` with `body` as JSON, signed with `key` (a policy for the sender
/// of a report).
fn signed_json(key: Option<&Key>, body: &impl Serialize) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut r = (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.clone(),
    )
        .into_response();
    if let Some(k) = key {
        if let Ok(v) = axum::http::HeaderValue::from_str(&telemetry::sign(k, &body)) {
            r.headers_mut().insert("x-tandem-signature", v);
        }
    }
    r
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/api/v1/reports",
            post(post_report).layer(DefaultBodyLimit::max(telemetry::MAX_REPORT_BYTES)),
        )
        .route(
            "/api/v1/hag-reports",
            post(post_hag_report)
                .layer(DefaultBodyLimit::max(telemetry::hag::MAX_HAG_REPORT_BYTES)),
        )
        .route("/api/v1/homes/{subscriber}", get(get_home))
        .route("/api/v1/homes/{subscriber}/diagnosis", get(get_diagnosis))
        .route("/api/v1/tickets", post(post_ticket))
        .route("/api/v1/incidents", get(get_incidents))
        .route("/api/v1/incidents/{id}", get(get_incident))
        .route("/api/v1/incidents/{id}/dispatch", post(post_dispatch))
        .route("/api/v1/incidents/{id}/resolve", post(post_resolve))
        .route("/api/v1/stats", get(get_stats))
        .route("/api/v1/grants", post(post_grant).get(get_grants))
        .route("/api/v1/grants/{id}/revoke", post(post_revoke_grant))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(shared)
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn fail(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: msg.into() })).into_response()
}

fn signature(h: &HeaderMap) -> Option<&str> {
    h.get("x-tandem-signature").and_then(|v| v.to_str().ok())
}

/// The oldest report accepted: older than the engine's history it could
/// not change a diagnosis (a CPE's queue can hold reports that long).
const MAX_REPORT_AGE_MS: u64 = HISTORY_MINUTES as u64 * 60_000;

/// Why a report's date is refused, if it is: made further ahead of ops'
/// clock than the allowed skew, or older than the engine's history.
fn stale(shared: &Shared, sent_at_ms: u64, now: u64) -> Option<String> {
    let skew = shared.config.max_clock_skew.as_millis() as u64;
    if sent_at_ms > now.saturating_add(skew) {
        return Some(format!(
            "report dated {} s ahead of ops' clock (at most {} s allowed): check the CPE's clock",
            (sent_at_ms - now) / 1000,
            skew / 1000
        ));
    }
    if sent_at_ms.saturating_add(MAX_REPORT_AGE_MS) < now {
        return Some(format!(
            "report made {} s ago, older than the {} min of history kept for diagnosis",
            (now - sent_at_ms) / 1000,
            HISTORY_MINUTES
        ));
    }
    None
}

/// Whether `body` carries the signature of `name`'s key among `keys`.
fn signed_by(
    s: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    keys: impl Fn(&Keys) -> &HashMap<String, Key>,
    name: &str,
) -> bool {
    signature(headers).is_some_and(|sig| {
        s.keys.read().is_ok_and(|k| {
            keys(&k)
                .get(name)
                .is_some_and(|key| telemetry::verify(key, body, sig).is_ok())
        })
    })
}

async fn post_report(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let m = &s.metrics;
    let r = match Report::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            m.report("malformed");
            return fail(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    if !signed_by(&s, &headers, &body, |k| &k.cpe, &r.subscriber) {
        m.report("unauthenticated");
        return fail(
            StatusCode::UNAUTHORIZED,
            "no token for this subscriber, or the signature does not match",
        );
    }
    let now = now_ms();
    if let Some(why) = stale(&s, r.sent_at_ms, now) {
        m.report("stale");
        return fail(StatusCode::BAD_REQUEST, why);
    }
    if !lock(&s.replay).admit(&r.subscriber, &r.boot_id, r.seq, r.sent_at_ms) {
        m.report("replayed");
        return fail(
            StatusCode::CONFLICT,
            "report already received (boot_id, seq), or from a boot older than the last ones",
        );
    }
    if lock(&s.engine).ingest(&r, now).is_err() {
        m.report("not_in_inventory");
        return fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("subscriber {:?} is not in the inventory", r.subscriber),
        );
    }
    m.report("accepted");
    let sub = r.subscriber.clone();
    let stored = StoredReport {
        subscriber: r.subscriber,
        boot_id: r.boot_id,
        seq: r.seq,
        sent_at_ms: r.sent_at_ms,
        received_ms: now,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let sent = lock(&s.writer)
        .as_ref()
        .is_some_and(|w| w.try_send(stored).is_ok());
    if !sent {
        m.storage_dropped.inc();
    }
    let policy = s
        .policies
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .for_cpe(&sub, now);
    let key = s.keys.read().ok().and_then(|k| k.cpe.get(&sub).cloned());
    signed_json(key.as_ref(), &policy)
}

async fn post_hag_report(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let m = &s.metrics;
    let r = match HagReport::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            m.hag("malformed");
            return fail(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    if !signed_by(&s, &headers, &body, |k| &k.hag, &r.hag) {
        m.hag("unauthenticated");
        return fail(
            StatusCode::UNAUTHORIZED,
            "no token for this HAG, or the signature does not match",
        );
    }
    if let Some(why) = stale(&s, r.sent_at_ms, now_ms()) {
        m.hag("stale");
        return fail(StatusCode::BAD_REQUEST, why);
    }
    {
        let mut g = lock(&s.replay);
        let last = g.hags.entry(r.hag.clone()).or_default();
        if r.sent_at_ms <= *last {
            m.hag("replayed");
            return fail(
                StatusCode::CONFLICT,
                "HAG report not later than the last one received from this HAG",
            );
        }
        *last = r.sent_at_ms;
    }
    lock(&s.engine).ingest_hag(&r);
    m.hag("accepted");
    let policy = s
        .policies
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .for_hag(&r.hag, now_ms());
    let key = s.keys.read().ok().and_then(|k| k.hag.get(&r.hag).cloned());
    signed_json(key.as_ref(), &policy)
}

/// Whether the request carries an operator's token.
fn operator(s: &Shared, h: &HeaderMap) -> bool {
    let Some(token) = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let key = telemetry::key(token.trim().as_bytes());
    s.keys
        .read()
        .is_ok_and(|k| k.operator.iter().any(|o| o.same(&key)))
}

macro_rules! require_operator {
    ($s:expr, $h:expr) => {
        if !operator(&$s, &$h) {
            return fail(
                StatusCode::UNAUTHORIZED,
                "an operator token is needed (Authorization: Bearer TOKEN)",
            );
        }
    };
}

fn store_error(e: crate::store::Error) -> Response {
    match e {
        crate::store::Error::NoIncident(id) => {
            fail(StatusCode::NOT_FOUND, format!("no incident {id}"))
        }
        crate::store::Error::NoGrant(id) => fail(StatusCode::NOT_FOUND, format!("no grant {id}")),
        e @ crate::store::Error::State { .. } => fail(StatusCode::CONFLICT, e.to_string()),
        e => {
            tracing::warn!("ops: {e}");
            fail(StatusCode::INTERNAL_SERVER_ERROR, "database error")
        }
    }
}

async fn get_diagnosis(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(subscriber): Path<String>,
) -> Response {
    require_operator!(s, headers);
    let engine = lock(&s.engine);
    match engine.inventory().index(&subscriber) {
        Some(i) => Json(engine.diagnose(i, now_ms())).into_response(),
        None => fail(
            StatusCode::NOT_FOUND,
            format!("subscriber {subscriber:?} is not in the inventory"),
        ),
    }
}

/// A home's view: where it is, what it last said, and its diagnosis.
#[derive(Serialize)]
struct HomeView<'a> {
    subscriber: &'a str,
    cabinet: &'a str,
    card: u32,
    cell: &'a str,
    /// The last report's own date (the CPE's clock), Unix ms; 0: none yet.
    last_report_ms: u64,
    /// When it arrived (ops' clock), Unix ms.
    last_arrival_ms: u64,
    /// The link that carried it: `dsl` or `lte`.
    via: Option<&'static str>,
    last: Option<crate::history::Last>,
    diagnosis: Diagnosis,
    /// What its CPE is told: the budget waiver and the extra budget.
    policy: telemetry::Policy,
    /// What the DLM-style rule baseline says of the same history (for
    /// comparison: Tandem acts on `diagnosis`).
    baseline: BaselineView,
}

#[derive(Serialize)]
struct BaselineView {
    location: Location,
    dispatch: hybrid::Dispatch,
    rule: &'static str,
}

async fn get_home(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(subscriber): Path<String>,
) -> Response {
    require_operator!(s, headers);
    let engine = lock(&s.engine);
    let Some(i) = engine.inventory().index(&subscriber) else {
        return fail(
            StatusCode::NOT_FOUND,
            format!("subscriber {subscriber:?} is not in the inventory"),
        );
    };
    let row = engine.inventory().row(i);
    let home = engine.home(i);
    Json(HomeView {
        subscriber: &row.subscriber,
        cabinet: &row.cabinet,
        card: row.card,
        cell: &row.cell,
        last_report_ms: home.last_ms,
        last_arrival_ms: home.last_arrival_ms,
        via: home.last.map(|l| if l.via_lte { "lte" } else { "dsl" }),
        last: home.last,
        diagnosis: engine.diagnose(i, now_ms()),
        baseline: {
            let b = crate::baseline::diagnose(home, now_ms(), s.config.report_period.as_secs_f64());
            BaselineView {
                location: b.location,
                dispatch: b.dispatch,
                rule: b.rule,
            }
        },
        policy: s
            .policies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .for_cpe(&subscriber, now_ms()),
    })
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketBody {
    subscriber: String,
}

#[derive(Serialize)]
struct TicketAnswer {
    diagnosis: Diagnosis,
    incident: Option<Incident>,
}

async fn post_ticket(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<TicketBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    require_operator!(s, headers);
    let Ok(Json(t)) = body else {
        return fail(StatusCode::BAD_REQUEST, "expected {\"subscriber\": NAME}");
    };
    let now = now_ms();
    let d = {
        let engine = lock(&s.engine);
        match engine.inventory().index(&t.subscriber) {
            Some(i) => engine.diagnose(i, now),
            None => {
                return fail(
                    StatusCode::NOT_FOUND,
                    format!("subscriber {:?} is not in the inventory", t.subscriber),
                )
            }
        }
    };
    if d.location == Location::None {
        return Json(TicketAnswer {
            diagnosis: d,
            incident: None,
        })
        .into_response();
    }
    let s2 = s.clone();
    let r = tokio::task::spawn_blocking(move || {
        let store = lock(&s2.store);
        let id = file(&s2, &store, &d, std::slice::from_ref(&d.subscriber), now)?;
        Ok::<_, crate::store::Error>(TicketAnswer {
            incident: store.incident(id)?,
            diagnosis: d,
        })
    })
    .await;
    match r {
        Ok(Ok(a)) => Json(a).into_response(),
        Ok(Err(e)) => store_error(e),
        Err(_) => fail(StatusCode::INTERNAL_SERVER_ERROR, "ticket failed"),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn get_incidents(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    require_operator!(s, headers);
    let Ok(Query(q)) = q else {
        return fail(StatusCode::BAD_REQUEST, "query: state=STATE&limit=N");
    };
    let state = match q.state.as_deref() {
        None | Some("all") => None,
        Some(name) => match IState::parse(name) {
            Some(st) => Some(st),
            None => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!(
                    "unknown state {name:?} (open, dispatched, resolved, cleared, merged or all)"
                ),
                )
            }
        },
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match lock(&s.store).incidents(state, limit) {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

async fn get_incident(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    require_operator!(s, headers);
    match lock(&s.store).incident(id) {
        Ok(Some(i)) => Json(i).into_response(),
        Ok(None) => fail(StatusCode::NOT_FOUND, format!("no incident {id}")),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DispatchBody {
    #[serde(default)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    finding: Location,
    #[serde(default)]
    note: Option<String>,
}

/// Notes are bounded.
const MAX_NOTE: usize = 2_000;

async fn post_dispatch(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Option<Json<DispatchBody>>,
) -> Response {
    require_operator!(s, headers);
    let note = body.and_then(|Json(b)| b.note);
    if note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("note longer than {MAX_NOTE} bytes"),
        );
    }
    match lock(&s.store).transition(id, IState::Dispatched, None, note.as_deref(), now_ms()) {
        Ok(i) => Json(i).into_response(),
        Err(e) => store_error(e),
    }
}

async fn post_resolve(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Result<Json<ResolveBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    require_operator!(s, headers);
    let Ok(Json(b)) = body else {
        return fail(
            StatusCode::BAD_REQUEST,
            "expected {\"finding\": home|line|cabinet|mobile|core|customer|none, \"note\": ...}",
        );
    };
    if b.note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("note longer than {MAX_NOTE} bytes"),
        );
    }
    let now = now_ms();
    match lock(&s.store).transition(
        id,
        IState::Resolved,
        Some(b.finding),
        b.note.as_deref(),
        now,
    ) {
        Ok(i) => {
            // The technician mended it: the homes are judged from now on.
            let mut engine = lock(&s.engine);
            for h in &i.homes {
                engine.repaired(h, now);
            }
            Json(i).into_response()
        }
        Err(e) => store_error(e),
    }
}

#[derive(Serialize)]
struct Stats {
    incidents: HashMap<&'static str, u64>,
    resolved_with_finding: u64,
    first_time_fix: Option<f64>,
}

async fn get_stats(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    require_operator!(s, headers);
    match lock(&s.store).stats() {
        Ok((incidents, resolved, right)) => Json(Stats {
            incidents,
            resolved_with_finding: resolved,
            first_time_fix: (resolved > 0).then(|| right as f64 / resolved as f64),
        })
        .into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct GrantsQuery {
    #[serde(default)]
    holding: bool,
}

async fn post_grant(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    require_operator!(s, headers);
    let req: GrantRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("grant: {e}")),
    };
    let resolved = req.resolve(lock(&s.engine).inventory());
    let (scope, homes) = match resolved {
        Ok(x) => x,
        Err(GrantError::Bad(e)) => return fail(StatusCode::BAD_REQUEST, e),
        Err(GrantError::Unknown(e)) => return fail(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    let now = now_ms();
    let until = now.saturating_add(u64::from(req.hours) * 3_600_000);
    let store = lock(&s.store);
    let made = store
        .create_grant(
            &scope,
            &homes,
            req.extra_bytes,
            now,
            until,
            req.note.as_deref(),
        )
        .and_then(|g| refresh_policies(&s, &store).map(|()| g));
    match made {
        Ok(g) => {
            tracing::info!(id = g.id, scope = %g.scope, homes = g.homes.len(), extra_bytes = g.extra_bytes, "ops: grant made");
            (StatusCode::CREATED, Json(g)).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn get_grants(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<GrantsQuery>,
) -> Response {
    require_operator!(s, headers);
    let at = q.holding.then(now_ms);
    match lock(&s.store).grants(at, 1_000) {
        Ok(g) => Json(g).into_response(),
        Err(e) => store_error(e),
    }
}

async fn post_revoke_grant(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    require_operator!(s, headers);
    let store = lock(&s.store);
    match store
        .revoke_grant(id, now_ms())
        .and_then(|g| refresh_policies(&s, &store).map(|()| g))
    {
        Ok(g) => Json(g).into_response(),
        Err(e) => store_error(e),
    }
}
