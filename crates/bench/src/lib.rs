//! `tandem bench`: Tandem against what a home would otherwise run, side by
//! side, in the same run, on the same emulated links.
//!
//! It builds the lab with a profile, starts what the contenders need (a
//! second origin under `mptcpize`, shadowsocks-libev over MPTCP), and
//! measures each contender with real clients (`curl`): bulk goodput one and
//! eight flows each way, time to first byte and to fetch a small object, a
//! web-like page of 50 objects, latency under load, and the stall when the
//! fixed line is cut. Then, without the lab, the HAG's own cost on loopback
//! against HAProxy (throughput per core of CPU, memory per idle
//! connection). It writes `<date>-<profile>.json`, a Markdown report and
//! SVG charts, and rewrites the README's benchmark section from the latest
//! full results.
//!
//! What it does not do: judge. Targets are reported as met or missed; a
//! timing never fails a run (a contender that cannot run at all does).
//!
//! Modules: [`contender`] (who, and how each is run), `servers` (what they
//! need in the lab), `measure` (the lab scenarios), `relaycost` (HAG vs
//! HAProxy), [`report`] (JSON, Markdown, README), `svg` (charts),
//! [`stats`] (medians, percentiles), [`meter`] (link counters, progress).
#![forbid(unsafe_code)]

pub mod contender;
mod exec;
mod measure;
pub mod meter;
pub mod opscampaign;
pub mod opsingest;
pub mod opslab;
mod relaycost;
pub mod report;
mod servers;
pub mod stats;
mod svg;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use contender::Contender;
use hybrid::Direction;
use measure::Ctx;
use meter::Progress;
pub use relaycost::{RelayCost, RelayFigures};
use report::{
    BulkRow, ContenderInfo, FailoverRow, LatencyRow, Machine, Results, Series, TtfbRow, WebRow,
};
use stats::Summary;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The lab could not be built or changed.
    #[error("lab: {0}")]
    Lab(#[from] lab::LabError),
    /// A file or process could not be handled.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A contender or a relay could not be started.
    #[error("setting up: {0}")]
    Setup(String),
    /// A measurement could not be taken.
    #[error("measuring: {0}")]
    Measure(String),
    /// A bad option.
    #[error("{0}")]
    Invalid(String),
}

impl BenchError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Options of a run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Link profile (`rural`, `suburban`, `fast`).
    pub profile: String,
    /// The 2-minute subset (one run, short transfers, one flow).
    pub quick: bool,
    /// Runs per figure (default 3; 1 with `quick`).
    pub runs: Option<usize>,
    /// Contender ids to run (empty: all).
    pub contenders: Vec<String>,
    /// Lab name (namespace prefix, at most 8 characters).
    pub lab_name: String,
    /// The `tandem` executable (the lab runs its emulators, origin, HAG
    /// and CPE from it).
    pub exe: PathBuf,
    /// Where the JSON, Markdown and SVG files go.
    pub out_dir: PathBuf,
    /// The README whose benchmark section is rewritten (None: left alone).
    pub readme: Option<PathBuf>,
    /// Skip the HAG-vs-HAProxy loopback scenario.
    pub skip_relay: bool,
    /// Idle connections for the memory figure (default 10,000; 1,000 with
    /// `quick`).
    pub idle_connections: Option<usize>,
    /// The command line, recorded in the results.
    pub command: String,
}

/// How much of each scenario a run measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Runs per figure.
    pub runs: usize,
    /// Seconds of nominal capacity per bulk transfer.
    pub bulk_secs: f64,
    /// Flow counts of the bulk matrix.
    pub flows: Vec<usize>,
    /// New-connection samples per run for TTFB and the small object.
    pub ttfb_samples: usize,
    /// Probes per second (latency under load).
    pub probe_rate: u32,
    /// Idle probes per run.
    pub probe_idle: usize,
    /// Probes under load per run.
    pub probe_load: usize,
    /// Seconds the load runs before probing.
    pub load_fill_secs: f64,
    /// Failover: seconds before the cut, of the cut, after the restore.
    pub failover_secs: (f64, f64, f64),
    /// Relay cost: parallel connections.
    pub relay_flows: usize,
    /// Relay cost: seconds per direction.
    pub relay_secs: f64,
    /// Relay cost: idle connections for the memory figure.
    pub idle_connections: usize,
}

impl Plan {
    /// The full plan, or the `--quick` subset.
    pub fn new(quick: bool, runs: Option<usize>) -> Self {
        if quick {
            Self {
                runs: runs.unwrap_or(1),
                bulk_secs: 2.0,
                flows: vec![1],
                ttfb_samples: 2,
                probe_rate: 25,
                probe_idle: 5,
                probe_load: 25,
                load_fill_secs: 1.0,
                failover_secs: (1.5, 2.0, 2.0),
                relay_flows: 2,
                relay_secs: 1.0,
                idle_connections: 1_000,
            }
        } else {
            Self {
                runs: runs.unwrap_or(3),
                bulk_secs: 6.0,
                flows: vec![1, 8],
                ttfb_samples: 5,
                probe_rate: 25,
                probe_idle: 20,
                probe_load: 100,
                load_fill_secs: 1.5,
                failover_secs: (2.0, 3.0, 4.0),
                relay_flows: 4,
                relay_secs: 4.0,
                idle_connections: 10_000,
            }
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The figures.
    pub results: Results,
    /// Files written.
    pub files: Vec<PathBuf>,
}

/// Tears the lab down when dropped (also on error or panic).
struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.0) {
            eprintln!("tearing the lab down: {e}");
        }
    }
}

/// Per-run raw figures, keyed by contender id.
type PerRun = HashMap<String, Vec<Option<f64>>>;

fn record(map: &mut PerRun, id: &str, runs: usize, run: usize, v: Option<f64>) {
    let e = map
        .entry(id.to_string())
        .or_insert_with(|| vec![None; runs]);
    e[run] = v;
}

fn summary(v: Option<&Vec<Option<f64>>>) -> Option<Summary> {
    Summary::of(&v?.iter().map(|x| x.unwrap_or(f64::NAN)).collect::<Vec<_>>())
}

/// Run-by-run `f(a, b)` where both exist.
fn paired(
    a: Option<&Vec<Option<f64>>>,
    b: Option<&Vec<Option<f64>>>,
    f: impl Fn(f64, f64) -> f64,
) -> Option<Summary> {
    let (a, b) = (a?, b?);
    Summary::of(
        &a.iter()
            .zip(b)
            .map(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => f(*x, *y),
                _ => f64::NAN,
            })
            .collect::<Vec<_>>(),
    )
}

/// Removes everything a benchmark run builds: the lab `lab_name` (its
/// namespaces and processes) and the relay-cost namespaces. For a run that
/// is interrupted (SIGINT/SIGTERM) before its own guards can run.
pub fn clean_up(lab_name: &str) {
    if let Err(e) = lab::down(lab_name) {
        eprintln!("tearing the lab down: {e}");
    }
    relaycost::remove_namespaces();
}

/// Runs the benchmark.
pub fn run(opts: BenchOptions) -> Result<Outcome, BenchError> {
    let profile = lab::profile::by_name(&opts.profile).ok_or_else(|| {
        BenchError::Invalid(format!(
            "unknown profile {:?}; known: {}",
            opts.profile,
            lab::profile::NAMES.join(", ")
        ))
    })?;
    let mut contenders = contender::select(&opts.contenders).map_err(BenchError::Invalid)?;
    if opts.quick && opts.contenders.is_empty() {
        // The smoke run measures Tandem in its default mode only; the
        // others are exercised by the steering tests and the full run.
        contenders.retain(|c| !c.id.starts_with("tandem-"));
    }
    let mut plan = Plan::new(opts.quick, opts.runs);
    if let Some(n) = opts.idle_connections {
        plan.idle_connections = n;
    }
    if plan.runs == 0 || plan.runs > 20 {
        return Err(BenchError::Invalid("runs: 1 to 20".into()));
    }
    let started = SystemTime::now();
    let t0 = Instant::now();
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| BenchError::io(format!("creating {}", opts.out_dir.display()), e))?;
    // Scratch files (upload bodies, the servers' configurations), removed
    // at the end whatever happens.
    let tmp = tempfile::Builder::new()
        .prefix("tandem-bench-")
        .tempdir()
        .map_err(|e| BenchError::io("creating a temporary directory", e))?;
    let scratch = tmp.path().to_path_buf();

    let c = contenders.len();
    let dsl_users = contenders.iter().filter(|x| x.uses_dsl()).count();
    let steps = 1
        + plan.runs * (c * (2 + 2 * plan.flows.len()) + c + dsl_users)
        + if opts.skip_relay { 0 } else { plan.runs * 2 };
    let mut progress = Progress::new(steps);
    progress.note(&format!(
        "tandem bench: profile {}{}, {} contender(s), {} run(s) each; lab {:?}",
        opts.profile,
        if opts.quick { " (quick subset)" } else { "" },
        c,
        plan.runs,
        opts.lab_name
    ));

    let _ = lab::down(&opts.lab_name);
    lab::up(&lab::UpOptions {
        name: opts.lab_name.clone(),
        profile_name: opts.profile.clone(),
        profile,
        tandem: true,
        shield: false,
        exe: opts.exe.clone(),
        street: lab::street::Street::default(),
        mobile_budget: None,
    })?;
    let lab_guard = LabGuard(opts.lab_name.clone());
    let servers = servers::Servers::start(&opts.lab_name, &contenders, &scratch, &opts.exe)?;
    let mut ctx = Ctx::new(&opts.lab_name, profile, &plan, progress, scratch.clone());
    let mut r = Results::new(&opts, profile, &plan, &contenders);

    let live = warm_up(&mut ctx, &contenders);
    scenario_ttfb(&mut ctx, &live, &mut r);
    scenario_bulk(&mut ctx, &live, &mut r);
    scenario_web(&mut ctx, &live, &mut r);
    scenario_latency(&mut ctx, &live, &mut r);
    scenario_failover(&mut ctx, &live, &mut r);
    drop(servers);
    drop(lab_guard);
    let Ctx {
        mut progress,
        mut errors,
        ..
    } = ctx;
    if !opts.skip_relay {
        match relay_cost(&opts, &plan, &scratch, &mut progress, &mut errors) {
            Ok(rc) => r.relay_cost = Some(rc),
            Err(e) => errors.push(format!("relay cost: {e}")),
        }
    }
    r.errors = errors;
    let secs = started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    r.date = utc_date(secs);
    r.started_utc = utc_timestamp(secs);
    r.duration_secs = t0.elapsed().as_secs_f64();
    r.compute_targets();

    let files = write_reports(&r, &opts)?;
    Ok(Outcome { results: r, files })
}

impl Results {
    /// The results of a run about to start: what runs, where, how; the
    /// figures come as the scenarios end.
    fn new(
        opts: &BenchOptions,
        profile: lab::profile::Profile,
        plan: &Plan,
        contenders: &[Contender],
    ) -> Self {
        Self {
            schema: report::SCHEMA,
            date: String::new(),
            started_utc: String::new(),
            duration_secs: 0.0,
            profile: opts.profile.clone(),
            links: profile,
            quick: opts.quick,
            command: opts.command.clone(),
            machine: machine(&opts.out_dir),
            plan: plan.clone(),
            contenders: contenders
                .iter()
                .map(|c| ContenderInfo {
                    id: c.id.clone(),
                    label: c.label.clone(),
                    how: c.description(),
                })
                .collect(),
            bulk: Vec::new(),
            ttfb: Vec::new(),
            web: Vec::new(),
            latency: Vec::new(),
            failover: Vec::new(),
            relay_cost: None,
            targets: Vec::new(),
            series: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// Warm-up: every contender answers once (ARP, TFO cookies, the proxies'
/// first connection), so a dead one is known before the figures; returns
/// those that answered.
fn warm_up(ctx: &mut Ctx<'_>, contenders: &[Contender]) -> Vec<Contender> {
    ctx.progress.step("warm-up: one request per contender");
    let mut dead = Vec::new();
    for c in contenders {
        if let Err(e) = measure::warmup(ctx, c) {
            dead.push(c.id.clone());
            ctx.errors.push(format!("{} does not work: {e}", c.id));
        }
    }
    ctx.progress.finish(
        if dead.is_empty() {
            "all answered".into()
        } else {
            format!("NOT WORKING: {}", dead.join(", "))
        }
        .as_str(),
    );
    contenders
        .iter()
        .filter(|c| !dead.contains(&c.id))
        .cloned()
        .collect()
}

/// The relays' cost on loopback (no emulated link): throughput and CPU of
/// the HAG and haproxy.
fn relay_cost(
    opts: &BenchOptions,
    plan: &Plan,
    scratch: &Path,
    progress: &mut Progress,
    errors: &mut Vec<String>,
) -> Result<RelayCost, BenchError> {
    let rp = relaycost::RelayPlan {
        runs: plan.runs,
        flows: plan.relay_flows,
        seconds: plan.relay_secs,
        idle_connections: plan.idle_connections,
    };
    relaycost::run(&opts.exe, scratch, &rp, progress, errors)
}

/// Writes the JSON, the markdown report and the charts (and the README's
/// table after a full run); returns the files written.
fn write_reports(r: &Results, opts: &BenchOptions) -> Result<Vec<PathBuf>, BenchError> {
    let stem = format!("{}-{}", r.date, r.profile);
    let mut files = Vec::new();
    let charts = report::write_charts(r, &opts.out_dir, &stem)?;
    let json = opts.out_dir.join(format!("{stem}.json"));
    let text = serde_json::to_string_pretty(r)
        .map_err(|e| BenchError::Invalid(format!("serialising the results: {e}")))?;
    std::fs::write(&json, text + "\n")
        .map_err(|e| BenchError::io(format!("writing {}", json.display()), e))?;
    files.push(json);
    let md = opts.out_dir.join(format!("{stem}.md"));
    std::fs::write(&md, r.markdown(&charts))
        .map_err(|e| BenchError::io(format!("writing {}", md.display()), e))?;
    files.push(md);
    files.extend(charts);
    if let Some(readme) = &opts.readme {
        if !opts.quick {
            report::update_readme(readme, &opts.out_dir)?;
            files.push(readme.clone());
        }
    }
    Ok(files)
}

fn scenario_ttfb(ctx: &mut Ctx<'_>, cs: &[Contender], r: &mut Results) {
    let runs = ctx.plan.runs;
    let (mut first, mut small) = (PerRun::new(), PerRun::new());
    for run in 0..runs {
        for c in cs {
            ctx.progress
                .step(format!("first byte · run {}/{runs} · {}", run + 1, c.label));
            match measure::ttfb(ctx, c) {
                Ok((f, s)) => {
                    ctx.progress
                        .finish(&format!("TTFB {f:.1} ms, 10 kB in {s:.1} ms"));
                    record(&mut first, &c.id, runs, run, Some(f));
                    record(&mut small, &c.id, runs, run, Some(s));
                }
                Err(e) => ctx.fail(e),
            }
        }
    }
    let d = |m: &PerRun, id: &str| paired(m.get(id), m.get("dsl"), |a, b| a - b);
    r.ttfb = cs
        .iter()
        .map(|c| TtfbRow {
            contender: c.id.clone(),
            ttfb_ms: summary(first.get(&c.id)),
            small_ms: summary(small.get(&c.id)),
            ttfb_vs_dsl_ms: d(&first, &c.id),
            small_vs_dsl_ms: d(&small, &c.id),
        })
        .collect();
}

fn scenario_bulk(ctx: &mut Ctx<'_>, cs: &[Contender], r: &mut Results) {
    let runs = ctx.plan.runs;
    let profile = ctx.profile;
    for dir in [Direction::Downstream, Direction::Upstream] {
        for &flows in &ctx.plan.flows.clone() {
            let (mut mbit, mut share) = (PerRun::new(), PerRun::new());
            for run in 0..runs {
                for c in cs {
                    ctx.progress.step(format!(
                        "{} {flows} flow{} · run {}/{runs} · {}",
                        dir.transfer_name(),
                        if flows == 1 { "" } else { "s" },
                        run + 1,
                        c.label
                    ));
                    let keep = run == 0 && flows == 1 && dir == Direction::Downstream;
                    match measure::transfer(ctx, c, dir, flows, ctx.plan.bulk_secs, keep) {
                        Ok(t) => {
                            let (d, l) = t.link.dir(dir);
                            let s = d as f64 / (d + l).max(1) as f64;
                            ctx.progress.finish(&format!(
                                "{:.1} Mbit/s, {:.0} % on the fixed line",
                                t.mbit,
                                s * 100.0
                            ));
                            record(&mut mbit, &c.id, runs, run, Some(t.mbit));
                            record(&mut share, &c.id, runs, run, Some(s));
                            if keep {
                                r.series.push(Series {
                                    scenario: "download".into(),
                                    contender: c.id.clone(),
                                    cut_at: None,
                                    restored_at: None,
                                    samples: t.series,
                                });
                            }
                        }
                        Err(e) => ctx.fail(e),
                    }
                }
            }
            let capacity = match dir {
                Direction::Downstream => profile.dsl.down_kbit + profile.lte.down_kbit,
                Direction::Upstream => profile.dsl.up_kbit + profile.lte.up_kbit,
            } as f64
                / 1000.0;
            // Contenders 1 + 2 of the same run.
            let singles: Option<Vec<Option<f64>>> = match (mbit.get("dsl"), mbit.get("lte")) {
                (Some(a), Some(b)) => {
                    Some(a.iter().zip(b).map(|(x, y)| Some((*x)? + (*y)?)).collect())
                }
                _ => None,
            };
            for c in cs {
                let m = mbit.get(&c.id);
                r.bulk.push(BulkRow {
                    direction: dir,
                    flows,
                    contender: c.id.clone(),
                    mbit: summary(m),
                    of_capacity: m.and_then(|v| {
                        Summary::of(
                            &v.iter()
                                .map(|x| x.map_or(f64::NAN, |x| x / capacity))
                                .collect::<Vec<_>>(),
                        )
                    }),
                    of_singles: paired(m, singles.as_ref(), |a, b| a / b),
                    dsl_share: summary(share.get(&c.id)),
                });
            }
        }
    }
}

fn scenario_web(ctx: &mut Ctx<'_>, cs: &[Contender], r: &mut Results) {
    let runs = ctx.plan.runs;
    let mut secs = PerRun::new();
    for run in 0..runs {
        for c in cs {
            ctx.progress
                .step(format!("web page · run {}/{runs} · {}", run + 1, c.label));
            match measure::web(ctx, c) {
                Ok(s) => {
                    ctx.progress.finish(&format!("50 objects in {s:.2} s"));
                    record(&mut secs, &c.id, runs, run, Some(s));
                }
                Err(e) => ctx.fail(e),
            }
        }
    }
    r.web = cs
        .iter()
        .map(|c| WebRow {
            contender: c.id.clone(),
            secs: summary(secs.get(&c.id)),
            vs_dsl: paired(secs.get(&c.id), secs.get("dsl"), |a, b| a / b),
        })
        .collect();
}

fn scenario_latency(ctx: &mut Ctx<'_>, cs: &[Contender], r: &mut Results) {
    let runs = ctx.plan.runs;
    let (mut idle, mut med, mut p99) = (PerRun::new(), PerRun::new(), PerRun::new());
    for run in 0..runs {
        for c in cs {
            ctx.progress.step(format!(
                "latency under load · run {}/{runs} · {}",
                run + 1,
                c.label
            ));
            match measure::loaded_latency(ctx, c) {
                Ok(l) => {
                    ctx.progress.finish(&format!(
                        "idle {:.1} ms, loaded median {:.1} ms, p99 {:.1} ms",
                        l.idle_median_ms, l.loaded_median_ms, l.loaded_p99_ms
                    ));
                    record(&mut idle, &c.id, runs, run, Some(l.idle_median_ms));
                    record(&mut med, &c.id, runs, run, Some(l.loaded_median_ms));
                    record(&mut p99, &c.id, runs, run, Some(l.loaded_p99_ms));
                }
                Err(e) => ctx.fail(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    r.latency = cs
        .iter()
        .map(|c| LatencyRow {
            contender: c.id.clone(),
            idle_ms: summary(idle.get(&c.id)),
            loaded_median_ms: summary(med.get(&c.id)),
            loaded_p99_ms: summary(p99.get(&c.id)),
            p99_above_dsl_idle_ms: paired(p99.get(&c.id), idle.get("dsl"), |a, b| a - b),
        })
        .collect();
}

fn scenario_failover(ctx: &mut Ctx<'_>, cs: &[Contender], r: &mut Results) {
    let runs = ctx.plan.runs;
    let (mut stall, mut before, mut during) = (PerRun::new(), PerRun::new(), PerRun::new());
    let mut recovered: HashMap<String, usize> = HashMap::new();
    let users: Vec<&Contender> = cs.iter().filter(|c| c.uses_dsl()).collect();
    for run in 0..runs {
        for c in &users {
            ctx.progress.step(format!(
                "failover (fixed line cut) · run {}/{runs} · {}",
                run + 1,
                c.label
            ));
            match measure::failover(ctx, c) {
                Ok(f) => {
                    ctx.progress.finish(&format!(
                        "stall {:.0} ms, {:.1} Mbit/s during the cut{}",
                        f.stall_ms,
                        f.during_mbit,
                        if f.recovered {
                            ""
                        } else {
                            ", NOT flowing at the end"
                        }
                    ));
                    record(&mut stall, &c.id, runs, run, Some(f.stall_ms));
                    record(&mut before, &c.id, runs, run, Some(f.before_mbit));
                    record(&mut during, &c.id, runs, run, Some(f.during_mbit));
                    *recovered.entry(c.id.clone()).or_default() += usize::from(f.recovered);
                    if run == 0 {
                        r.series.push(Series {
                            scenario: "failover".into(),
                            contender: c.id.clone(),
                            cut_at: Some(f.cut_at),
                            restored_at: Some(f.restored_at),
                            samples: f.series,
                        });
                    }
                }
                Err(e) => ctx.fail(e),
            }
            // Let the restored line's routes and the subflows settle.
            std::thread::sleep(std::time::Duration::from_millis(1500));
        }
    }
    r.failover = users
        .iter()
        .map(|c| FailoverRow {
            contender: c.id.clone(),
            stall_ms: summary(stall.get(&c.id)),
            before_mbit: summary(before.get(&c.id)),
            during_mbit: summary(during.get(&c.id)),
            recovered_runs: recovered.get(&c.id).copied().unwrap_or(0),
            runs: stall
                .get(&c.id)
                .map_or(0, |v| v.iter().filter(|x| x.is_some()).count()),
        })
        .collect();
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Describes this machine and the tree being measured.
fn machine(dir: &Path) -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown CPU".to_string(), |(_, v)| v.trim().to_string());
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or_else(|| "Linux".to_string(), |v| v.trim_matches('"').to_string());
    let git = |args: &[&str]| {
        lab::cmd::output(
            std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args),
        )
        .ok()
        .map(|o| o.trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).map_or_else(
        || "unknown".to_string(),
        |c| {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}+dirty")
            } else {
                c
            }
        },
    );
    Machine {
        hostname: read("/proc/sys/kernel/hostname"),
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: mem_kib / 1024.0 / 1024.0,
        kernel: read("/proc/sys/kernel/osrelease"),
        os,
        commit,
    }
}

/// The UTC time of a Unix second (the epoch for one out of range, which a
/// clock cannot give).
fn utc(secs: u64) -> jiff::Timestamp {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn utc_date(secs: u64) -> String {
    utc(secs).strftime("%Y-%m-%d").to_string()
}

fn utc_timestamp(secs: u64) -> String {
    utc(secs).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_timestamp(951_782_400 + 3_723), "2000-02-29T01:02:03Z");
        assert_eq!(utc_date(1_795_478_399), "2026-11-23");
    }

    #[test]
    fn the_quick_plan_is_a_subset() {
        let q = Plan::new(true, None);
        let f = Plan::new(false, None);
        assert!(q.runs < f.runs && q.bulk_secs < f.bulk_secs && q.flows.len() < f.flows.len());
        assert!(f.runs >= 3, "the issue asks for at least 3 runs");
        assert!(f.flows.contains(&1) && f.flows.contains(&8));
    }

    #[test]
    fn ratios_pair_runs() {
        let a = vec![Some(30.0), None, Some(34.0)];
        let b = vec![Some(40.0), Some(40.0), Some(40.0)];
        let s = paired(Some(&a), Some(&b), |x, y| x / y).unwrap();
        assert_eq!(s.runs, vec![0.75, 0.85]);
    }
}
