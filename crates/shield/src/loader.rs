//! Background tasks that keep the lists fresh: file lists re-read when they
//! change, RPZ zones transferred on NOTIFY or at the refresh interval,
//! confirmed citizen reports re-read from the database. Each builds the
//! new set off the query path (a blocking thread) and swaps it in whole.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Notify};

use crate::config::ListConfig;
use crate::feeds::{load_file, FeedError, LoadStats};
use crate::metrics::{ListLabel, Metrics};
use crate::names::{Builder, Meta, NameSet};
use crate::policy::{Action, Policy};
use crate::reports::{Kind, Store};

/// Name of the list built from confirmed phishing reports.
pub const REPORTS_BLOCK_LIST: &str = "citizen-reports";
/// Name of the allowlist built from confirmed false-positive reports.
pub const REPORTS_ALLOW_LIST: &str = "false-positives";

/// How long a zone transfer may take.
const XFR_TIMEOUT: Duration = Duration::from_secs(120);

/// Swaps `set` in as list `name`; `started` is when its transfer or read
/// began.
fn record(
    metrics: &Metrics,
    policy: &Policy,
    name: &str,
    set: NameSet,
    stats: LoadStats,
    started: Instant,
) {
    let label = ListLabel { list: name.into() };
    let names = set.len();
    policy.replace(name, Arc::new(set));
    let took = started.elapsed();
    metrics.list_entries.get_or_create(&label).set(names as i64);
    metrics
        .list_update_seconds
        .get_or_create(&label)
        .set(took.as_secs_f64());
    metrics.list_updates.get_or_create(&label).inc();
    tracing::info!(
        list = name,
        names,
        accepted = stats.entries,
        skipped = stats.skipped,
        took_ms = took.as_millis() as u64,
        "list updated"
    );
}

fn failed(metrics: &Metrics, name: &str, e: &dyn std::fmt::Display) {
    metrics
        .list_update_failures
        .get_or_create(&ListLabel { list: name.into() })
        .inc();
    tracing::warn!(list = name, "list update failed: {e}");
}

fn mtime(p: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Loads a file list now (at start: a missing or broken file is an error).
pub(crate) fn load_file_now(
    cfg: &ListConfig,
    path: &std::path::Path,
    policy: &Policy,
    metrics: &Metrics,
) -> Result<(), FeedError> {
    let started = Instant::now();
    let (set, stats) = load_file(cfg, path)?;
    record(metrics, policy, &cfg.name, set, stats, started);
    Ok(())
}

/// Re-reads a file list when its modification time or size has changed and
/// then stayed the same for one more interval: a file still being written
/// (not replaced by a rename) is not loaded half-way. A file that changed
/// while it was read is read again at the next interval.
pub(crate) async fn watch_file(
    cfg: ListConfig,
    path: PathBuf,
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut loaded = mtime(&path);
    let mut last = loaded;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(cfg.refresh) => {}
        }
        let now = mtime(&path);
        let settled = now == last;
        last = now;
        if now.is_none() || now == loaded || !settled {
            continue;
        }
        let started = Instant::now();
        let (c, p) = (cfg.clone(), path.clone());
        let read = tokio::task::spawn_blocking(move || load_file(&c, &p)).await;
        let after = mtime(&path);
        if after != now {
            last = after;
            continue;
        }
        loaded = now;
        match read {
            Ok(Ok((set, stats))) => record(&metrics, &policy, &cfg.name, set, stats, started),
            Ok(Err(e)) => failed(&metrics, &cfg.name, &e),
            Err(e) => failed(&metrics, &cfg.name, &e),
        }
    }
}

/// Keeps an RPZ zone in step with its primary: AXFR, then IXFR when
/// NOTIFY arrives or the refresh interval passes.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn transfer_loop(
    cfg: ListConfig,
    primary: std::net::SocketAddr,
    zone: String,
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut serial: Option<u32> = None;
    loop {
        let mut wait = cfg.refresh;
        let started = Instant::now();
        match crate::xfr::transfer(primary, &zone, serial, XFR_TIMEOUT).await {
            Ok(t) => {
                let (soa_serial, soa_refresh) = match &t {
                    crate::xfr::Transfer::Full { soa, .. }
                    | crate::xfr::Transfer::Incremental { soa, .. } => {
                        (Some(soa.serial), Some(soa.refresh))
                    }
                    crate::xfr::Transfer::UpToDate => (serial, None),
                };
                if let Some(r) = soa_refresh.filter(|r| *r > 0) {
                    wait = wait.min(Duration::from_secs(r as u64));
                }
                let current = policy.set_of(&cfg.name).unwrap_or_default();
                let z = zone.clone();
                let built =
                    tokio::task::spawn_blocking(move || crate::xfr::apply(&current, &t, &z)).await;
                match built {
                    Ok(Some((set, stats))) => {
                        record(&metrics, &policy, &cfg.name, set, stats, started);
                        if serial != soa_serial {
                            tracing::info!(list = %cfg.name, zone, serial = soa_serial, "zone transferred");
                        }
                    }
                    Ok(None) => {
                        // Up to date: a first load is complete too.
                        if let Some(s) = policy.set_of(&cfg.name) {
                            policy.replace(&cfg.name, s);
                        }
                    }
                    Err(e) => failed(&metrics, &cfg.name, &e),
                }
                serial = soa_serial;
            }
            Err(e) => {
                failed(&metrics, &cfg.name, &e);
                wait = wait.min(Duration::from_secs(10));
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn set_from(domains: &[String], action: Action) -> NameSet {
    let mut b = Builder::default();
    for d in domains {
        b.push(
            d.as_bytes(),
            Meta {
                exact: Some(action),
                subtree: Some(action),
            },
        );
    }
    b.finish()
}

/// Reads the confirmed reports into the two local lists; returns them.
pub(crate) fn load_reports(
    store: &Mutex<Store>,
    action: Action,
    policy: &Policy,
    metrics: &Metrics,
    previous: Option<&(Vec<String>, Vec<String>)>,
) -> Result<(Vec<String>, Vec<String>), crate::reports::ReportError> {
    let (block, allow) = {
        let s = store.lock().unwrap_or_else(|e| e.into_inner());
        (
            s.confirmed(Kind::Phishing)?,
            s.confirmed(Kind::FalsePositive)?,
        )
    };
    let started = Instant::now();
    let stats = |v: &Vec<String>| LoadStats {
        entries: v.len(),
        skipped: 0,
    };
    if previous.map(|p| &p.0) != Some(&block) {
        record(
            metrics,
            policy,
            REPORTS_BLOCK_LIST,
            set_from(&block, action),
            stats(&block),
            started,
        );
    }
    if previous.map(|p| &p.1) != Some(&allow) {
        record(
            metrics,
            policy,
            REPORTS_ALLOW_LIST,
            set_from(&allow, Action::Passthru),
            stats(&allow),
            started,
        );
    }
    Ok((block, allow))
}

/// Applies newly confirmed reports every `interval`.
pub(crate) async fn reports_loop(
    store: Arc<Mutex<Store>>,
    action: Action,
    interval: Duration,
    policy: Arc<Policy>,
    metrics: Arc<Metrics>,
    mut previous: (Vec<String>, Vec<String>),
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let (s, p, m, prev) = (
            store.clone(),
            policy.clone(),
            metrics.clone(),
            previous.clone(),
        );
        match tokio::task::spawn_blocking(move || load_reports(&s, action, &p, &m, Some(&prev)))
            .await
        {
            Ok(Ok(now)) => previous = now,
            Ok(Err(e)) => failed(&metrics, REPORTS_BLOCK_LIST, &e),
            Err(e) => failed(&metrics, REPORTS_BLOCK_LIST, &e),
        }
    }
}
