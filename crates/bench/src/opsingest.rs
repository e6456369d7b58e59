//! `tandem ops bench-ingest`: how many CPE reports per second ops takes on
//! this machine, against the HTTP ceiling measured side by side.
//!
//! A fleet of `homes` CPEs (each with its own token, in an inventory of
//! that size) is played by `workers` client tasks in the same process:
//! each report is built, signed and posted on a new connection, as a CPE
//! does every period. Two servers take the same load one after the other:
//! - `discard`: the same bounded HTTP listener with a handler that reads
//!   the body and answers `204` (the ceiling of HTTP on this machine with
//!   this client);
//! - `ops`: the real service (parse, verify, replay check, the engine,
//!   the database writer, the scan every `scan_interval_s`);
//! - `ops-tls`: the same with TLS on the API (a certificate from
//!   `tandem ops tls-init`); each client task keeps its TLS sessions, as a
//!   CPE does, so after its first handshake it resumes them.
//!
//! The figure that matters is the ops rate and its ratio to the ceiling;
//! memory is reported as the process's resident size before and after,
//! with the engine's bound computed from its sizes. Both run on the same
//! two cores as the clients, so the absolute rates are lower bounds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hybrid::Link;
use ops_client::StatusCode;
use serde::Serialize;
use telemetry::{
    Channel, ChannelStats, ChannelStatsTotal, DslLine, Lan, LineStats, LineStatsTotal, LineStatus,
    LinkReport, LinkStatus, Radio, Report, SCHEMA,
};

use crate::stats::percentile;

/// What to measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IngestSpec {
    /// CPEs in the fleet (each has a token and an inventory row).
    pub homes: u32,
    /// Seconds of load per server.
    pub seconds: f64,
    /// Concurrent client tasks.
    pub workers: usize,
}

/// One server's figures.
#[derive(Debug, Clone, Serialize)]
pub struct IngestRun {
    /// `discard`, `ops` or `ops-tls`.
    pub server: &'static str,
    /// Reports accepted (answered `2xx`: ops answers `200` with the signed policy, the discarding server `204`).
    pub accepted: u64,
    /// Reports answered otherwise, or not answered.
    pub failed: u64,
    /// The first failure's words, if any.
    pub first_failure: Option<String>,
    /// Seconds of load.
    pub seconds: f64,
    /// Accepted reports per second.
    pub per_second: f64,
    /// Latency of a report (connect to answer), median and 99th percentile, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Resident size of the process before and after the load, KiB.
    pub rss_before_kib: u64,
    /// After.
    pub rss_after_kib: u64,
    /// (ops) reports written to the database.
    pub stored: u64,
    /// (ops) reports not kept because the writer's queue was full.
    pub storage_dropped: u64,
    /// (ops) the last scan of every home, ms.
    pub scan_ms: u64,
    /// (ops) the database's size after the load, bytes.
    pub db_bytes: u64,
}

/// The measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Ingest {
    /// What was measured.
    pub spec: IngestSpec,
    /// The mean size of a report's body, bytes.
    pub report_bytes: f64,
    /// The HTTP ceiling, then ops.
    pub runs: Vec<IngestRun>,
    /// ops' rate over the ceiling's.
    pub ratio: f64,
    /// ops' rate with TLS over its rate without.
    pub tls_ratio: f64,
    /// The engine's history per home at most (its minute buckets), bytes.
    pub history_bytes_per_home: u64,
}

/// Why the measurement could not run.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Setting up (files, the database, the runtime).
    #[error("{what}: {msg}")]
    Setup {
        /// What was being done.
        what: &'static str,
        /// What failed.
        msg: String,
    },
}

fn setup(what: &'static str) -> impl FnOnce(String) -> IngestError {
    move |msg| IngestError::Setup { what, msg }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A healthy home's report (its figures vary a little by home).
fn report(i: u32, seq: u64, now: u64) -> Report {
    let link = |link, rtt| LinkReport {
        link,
        up: true,
        rtt_ms: Some(rtt),
        jitter_ms: Some(1.5),
        loss_pct: 0.0,
        tx_bytes: seq * 91_000,
        rx_bytes: seq * 1_200_000,
    };
    Report {
        schema: SCHEMA,
        subscriber: format!("home{i:05}"),
        boot_id: format!("{:016x}", u64::from(i) * 0x9e37_79b9),
        seq,
        sent_at_ms: now,
        uptime_s: 86_400 + seq * 10,
        via: Link::Dsl,
        events: vec![],
        links: vec![link(Link::Dsl, 14.0), link(Link::Lte, 42.0)],
        lan: Lan {
            carrier: true,
            devices: 4,
            flows: 12,
        },
        dsl: Some(DslLine {
            status: LineStatus::Up,
            link_status: LinkStatus::Up,
            upstream_max_bit_rate: 1_100,
            downstream_max_bit_rate: 14_000 + i % 1000,
            upstream_noise_margin: 70,
            downstream_noise_margin: 62,
            upstream_attenuation: 180,
            downstream_attenuation: 300 + (i % 200) as i32,
            upstream_power: 120,
            downstream_power: 190,
            stats: LineStats {
                last_showtime_start: 86_000,
                total: LineStatsTotal {
                    errored_secs: 3,
                    severely_errored_secs: 0,
                },
            },
            channel: Channel {
                upstream_curr_rate: 1_000,
                downstream_curr_rate: 12_000,
                stats: ChannelStats {
                    total: ChannelStatsTotal {
                        xtur_crc_errors: 12,
                        xtuc_crc_errors: 3,
                        xtur_fec_errors: 1_000,
                        xtuc_fec_errors: 200,
                    },
                },
            },
        }),
        mobile: Some(Radio {
            registered: true,
            rsrp_dbm: Some(-97.0),
            rsrq_db: Some(-11.0),
            sinr_db: Some(9.5),
            cell_id: Some(format!("cell{:03}", i % 500)),
        }),
    }
}

struct Load {
    accepted: AtomicU64,
    failed: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
    stop: AtomicBool,
}

/// `workers` tasks post reports of `homes` (keys given) to `addr` for
/// `seconds`; returns the figures and the latencies.
async fn drive(
    addr: std::net::SocketAddr,
    keys: Arc<Vec<telemetry::Key>>,
    spec: IngestSpec,
    seq_base: u64,
    tls: Option<&ops_client::Tls>,
) -> (Arc<Load>, Vec<f64>, f64) {
    let load = Arc::new(Load {
        accepted: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_failure: std::sync::Mutex::new(None),
        stop: AtomicBool::new(false),
    });
    let host = addr.to_string();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..spec.workers {
        let (load, keys, host) = (load.clone(), keys.clone(), host.clone());
        let workers = spec.workers;
        let tls = tls.cloned();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut seq = seq_base;
            let mut home = w;
            while !load.stop.load(Ordering::Relaxed) {
                if home >= keys.len() {
                    home = w;
                    seq += 1;
                }
                let i = u32::try_from(home).unwrap_or(0);
                let body = Bytes::from(report(i, seq, ops::service::now_ms()).to_json());
                let t = Instant::now();
                let r = match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => ops_client::post_report(
                        s,
                        tls.as_ref(),
                        &host,
                        "/api/v1/reports",
                        &keys[home],
                        body,
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match r {
                    Ok(a) if a.status.is_success() => {
                        load.accepted.fetch_add(1, Ordering::Relaxed);
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    other => {
                        load.failed.fetch_add(1, Ordering::Relaxed);
                        let why = match other {
                            Ok(a) => format!("{} {}", a.status, a.text()),
                            Err(e) => e,
                        };
                        load.first_failure
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get_or_insert(why);
                    }
                }
                home += workers;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(spec.seconds)).await;
    load.stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for t in tasks {
        if let Ok(v) = t.await {
            lat.extend(v);
        }
    }
    (load, lat, elapsed)
}

fn figures(
    server: &'static str,
    load: &Load,
    mut lat: Vec<f64>,
    seconds: f64,
    rss_before_kib: u64,
) -> IngestRun {
    lat.sort_by(f64::total_cmp);
    let accepted = load.accepted.load(Ordering::Relaxed);
    IngestRun {
        server,
        accepted,
        failed: load.failed.load(Ordering::Relaxed),
        first_failure: load
            .first_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
        seconds,
        per_second: accepted as f64 / seconds,
        p50_ms: percentile(&lat, 50.0),
        p99_ms: percentile(&lat, 99.0),
        rss_before_kib,
        rss_after_kib: rss_kib(),
        stored: 0,
        storage_dropped: 0,
        scan_ms: 0,
        db_bytes: 0,
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn discard_run(
    spec: IngestSpec,
    keys: Arc<Vec<telemetry::Key>>,
) -> Result<IngestRun, IngestError> {
    use axum::routing::post;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| setup("binding the discard server")(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| setup("the discard server's address")(e.to_string()))?;
    let router = axum::Router::new().route(
        "/api/v1/reports",
        post(|_body: Bytes| async { StatusCode::NO_CONTENT }),
    );
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let limits = admin::Limits {
        header_timeout: Duration::from_secs(5),
        connection_lifetime: Duration::from_secs(60),
        max_connections: 4096,
    };
    let server = tokio::spawn(admin::serve_bounded(router, listener, limits, async move {
        let _ = rx.await;
    }));
    let rss = rss_kib();
    let (load, lat, secs) = drive(addr, keys, spec, 1, None).await;
    let _ = tx.send(());
    let _ = server.await;
    Ok(figures("discard", &load, lat, secs, rss))
}

/// Ops in `dir` (its database and inventory there), with TLS when `tls`
/// is given (the CA and ops' certificate of `tandem ops tls-init`).
async fn ops_run(
    spec: IngestSpec,
    keys: Arc<Vec<telemetry::Key>>,
    dir: &std::path::Path,
    tls: Option<&ops::tls::Files>,
) -> Result<IngestRun, IngestError> {
    let tls_lines = tls.map_or_else(String::new, |f| {
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            f.cert.display(),
            f.key.display()
        )
    });
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\nmax_connections = 4096\n{tls_lines}[admin]\nlisten = \"127.0.0.2:0\"\n\
         [data]\ndb = \"ops.db\"\ninventory = \"homes.csv\"\n"
    );
    let client = match tls {
        Some(f) => Some(
            ops_client::Tls::load(&f.ca_cert, "127.0.0.1")
                .map_err(|e| setup("the client's TLS")(e))?,
        ),
        None => None,
    };
    let path = dir.join("ops.toml");
    std::fs::write(&path, text).map_err(|e| setup("writing ops.toml")(e.to_string()))?;
    let config = ops::config::Config::load(&path).map_err(|e| setup("ops.toml")(e.to_string()))?;
    let server = ops::service::Server::bind(config)
        .await
        .map_err(|e| setup("starting ops")(e.to_string()))?;
    let addr = server
        .api_addr()
        .map_err(|e| setup("ops' address")(e.to_string()))?;
    let admin = server
        .admin_addr()
        .map_err(|e| setup("ops' admin address")(e.to_string()))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let rss = rss_kib();
    let (load, lat, secs) = drive(addr, keys, spec, 1, client.as_ref()).await;
    let name = if tls.is_some() { "ops-tls" } else { "ops" };
    let mut run = figures(name, &load, lat, secs, rss);
    if let Ok(s) = tokio::net::TcpStream::connect(admin).await {
        if let Ok(a) = ops_client::request(
            s,
            &admin.to_string(),
            ops_client::Method::GET,
            "/metrics",
            ops_client::Auth::None,
            None,
            Duration::from_secs(10),
        )
        .await
        {
            let m = a.text();
            run.storage_dropped = metric(&m, "tandem_ops_storage_dropped_reports_total");
            run.scan_ms = metric(&m, "tandem_ops_scan_milliseconds");
        }
    }
    let _ = tx.send(());
    let _ = task.await;
    let db = dir.join("ops.db");
    if let Ok(store) = ops::store::Store::open(&db) {
        run.stored = store.report_count().unwrap_or(0);
    }
    run.db_bytes = ["ops.db", "ops.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    Ok(run)
}

/// Runs the ceiling and ops with the same load.
pub fn run(spec: IngestSpec, progress: &mut dyn FnMut(&str)) -> Result<Ingest, IngestError> {
    let dir = tempfile::tempdir().map_err(|e| setup("a temporary directory")(e.to_string()))?;
    let names: Vec<String> = (0..spec.homes).map(|i| format!("home{i:05}")).collect();
    let mut inv = String::from("subscriber,cabinet,card,cell\n");
    for (i, n) in names.iter().enumerate() {
        inv.push_str(&format!(
            "{n},cab{:04},{},cell{:03}\n",
            i / 48,
            i % 48 / 24,
            i % 500
        ));
    }
    std::fs::write(dir.path().join("homes.csv"), inv)
        .map_err(|e| setup("writing the inventory")(e.to_string()))?;
    progress(&format!("issuing {} tokens", names.len()));
    let mut store = ops::store::Store::open(&dir.path().join("ops.db"))
        .map_err(|e| setup("the database")(e.to_string()))?;
    let tokens = store
        .issue_tokens(ops::store::TokenKind::Cpe, &names, ops::service::now_ms())
        .map_err(|e| setup("issuing tokens")(e.to_string()))?;
    drop(store);
    // The TLS run gets its own copy of the fresh database (the tokens).
    let tls_dir = dir.path().join("tls-run");
    std::fs::create_dir_all(&tls_dir)
        .and_then(|()| std::fs::copy(dir.path().join("ops.db"), tls_dir.join("ops.db")))
        .and_then(|_| std::fs::copy(dir.path().join("homes.csv"), tls_dir.join("homes.csv")))
        .map_err(|e| setup("the TLS run's files")(e.to_string()))?;
    let pki = ops::tls::init(&dir.path().join("pki"), &["127.0.0.1".into()], 2)
        .map_err(|e| setup("ops' certificate")(e))?;
    let keys = Arc::new(
        tokens
            .iter()
            .map(|t| telemetry::key(t.as_bytes()))
            .collect::<Vec<_>>(),
    );
    let report_bytes = (0..100)
        .map(|i| report(i, 1000, ops::service::now_ms()).to_json().len() as f64)
        .sum::<f64>()
        / 100.0;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| setup("the runtime")(e.to_string()))?;
    progress(&format!(
        "discard server: {} workers for {} s",
        spec.workers, spec.seconds
    ));
    let discard = rt.block_on(discard_run(spec, keys.clone()))?;
    progress(&format!("  {:.0} reports/s", discard.per_second));
    progress(&format!(
        "ops: {} workers for {} s",
        spec.workers, spec.seconds
    ));
    let ops = rt.block_on(ops_run(spec, keys.clone(), dir.path(), None))?;
    progress(&format!("  {:.0} reports/s", ops.per_second));
    progress(&format!(
        "ops with TLS: {} workers for {} s",
        spec.workers, spec.seconds
    ));
    let tls = rt.block_on(ops_run(spec, keys, &tls_dir, Some(&pki)))?;
    progress(&format!("  {:.0} reports/s", tls.per_second));
    let over = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let ratio = over(ops.per_second, discard.per_second);
    let tls_ratio = over(tls.per_second, ops.per_second);
    Ok(Ingest {
        spec,
        report_bytes,
        ratio,
        tls_ratio,
        history_bytes_per_home: ops::history::Home::max_bytes() as u64,
        runs: vec![discard, ops, tls],
    })
}

/// The Markdown table.
pub fn markdown(r: &Ingest, command: &str) -> String {
    let mut s = String::from("# ops: telemetry ingest\n\n");
    s.push_str(&format!("Reproduce: `{command}`\n\n"));
    s.push_str(&format!(
        "{} CPEs (each with its own token), {} client tasks posting one signed report per connection, {:.0} bytes a report, {} s per server; clients and servers share this machine's {} cores.\n\n",
        r.spec.homes,
        r.spec.workers,
        r.report_bytes,
        r.spec.seconds,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    ));
    s.push_str("| server | reports/s | accepted | failed | latency p50 / p99 | RSS before → after | stored | dropped by the writer | last scan of every home | database |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for x in &r.runs {
        let ops = x.server.starts_with("ops");
        s.push_str(&format!(
            "| {} | {:.0} | {} | {} | {:.1} / {:.1} ms | {} → {} MiB | {} | {} | {} | {} |\n",
            x.server,
            x.per_second,
            x.accepted,
            x.failed,
            x.p50_ms,
            x.p99_ms,
            x.rss_before_kib / 1024,
            x.rss_after_kib / 1024,
            if ops {
                x.stored.to_string()
            } else {
                "–".into()
            },
            if ops {
                x.storage_dropped.to_string()
            } else {
                "–".into()
            },
            if ops {
                format!("{} ms", x.scan_ms)
            } else {
                "–".into()
            },
            if ops {
                format!("{:.1} MB", x.db_bytes as f64 / 1e6)
            } else {
                "–".into()
            },
        ));
    }
    s.push_str(&format!(
        "\nops takes **{:.2}×** the rate of a server that discards the reports (target: 5,000 reports/s, a fleet of 50,000 homes at one report per 10 s).\n\n",
        r.ratio
    ));
    s.push_str(&format!(
        "With TLS on the API (each client resuming its session after the first handshake, as a CPE does), ops takes **{:.2}×** its rate without.\n\n",
        r.tls_ratio
    ));
    s.push_str(&format!(
        "Memory is bounded by design: the engine keeps at most {} bytes of history per home ({:.0} MB for 50,000 homes), the replay check 8 boots per CPE, the writer's queue 100,000 reports (past it reports are counted and not stored, never refused); the database holds the raw reports for `retention_hours`.\n",
        r.history_bytes_per_home,
        r.history_bytes_per_home as f64 * 50_000.0 / 1e6
    ));
    for x in &r.runs {
        if let Some(f) = &x.first_failure {
            s.push_str(&format!(
                "\n{}: first failure: `{}`\n",
                x.server,
                f.replace('`', "'")
            ));
        }
    }
    s
}
