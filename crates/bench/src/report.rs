//! The results of one `tandem bench` run (JSON), their Markdown report,
//! the charts, and the summary section of the repository's README.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hybrid::Direction;
use lab::profile::Profile;
use serde::{Deserialize, Serialize};

use crate::meter::Sample;
use crate::relaycost::{RelayCost, RelayFigures};
use crate::stats::Summary;
use crate::svg::{self, Group, Line, Panel, PALETTE};
use crate::{BenchError, Plan};

/// Version of the JSON layout.
pub const SCHEMA: u32 = 1;

/// README markers between which `tandem bench` writes its summary.
pub const README_BEGIN: &str = "<!-- bench:begin -->";
/// See [`README_BEGIN`].
pub const README_END: &str = "<!-- bench:end -->";

/// Where the figures were measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// CPU model.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Distribution.
    pub os: String,
    /// Git commit of the tree measured (`+dirty` with local changes).
    pub commit: String,
}

impl Machine {
    /// "Debian 12.11, Linux 6.18, 2 × Intel Xeon …, 24 GiB (host)".
    pub fn describe(&self) -> String {
        format!(
            "{}, Linux {}, {} × {}, {:.0} GiB RAM (host {})",
            self.os, self.kernel, self.cores, self.cpu, self.memory_gib, self.hostname
        )
    }
}

/// A contender as recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContenderInfo {
    /// Id (`dsl`, `lte`, `mptcp`, `shadowsocks`, `tandem`…).
    pub id: String,
    /// Label.
    pub label: String,
    /// How it was run.
    pub how: String,
}

/// Bulk goodput of one contender in one direction and flow count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BulkRow {
    /// Direction, recorded as `download` or `upload`.
    #[serde(with = "transfer_word")]
    pub direction: Direction,
    /// Parallel flows.
    pub flows: usize,
    /// Contender id.
    pub contender: String,
    /// Goodput, Mbit/s.
    pub mbit: Option<Summary>,
    /// Goodput / (DSL + LTE nominal rate) per run.
    pub of_capacity: Option<Summary>,
    /// Goodput / (contender 1 + contender 2 of the same run) per run.
    pub of_singles: Option<Summary>,
    /// Share of the bytes that crossed the fixed line.
    pub dsl_share: Option<Summary>,
}

/// A transfer's direction in the results as `download` or `upload`
/// ([`Direction::transfer_name`]), the words the recorded results use.
mod transfer_word {
    use hybrid::Direction;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Direction, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.transfer_name())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Direction, D::Error> {
        let s = String::deserialize(d)?;
        Direction::from_transfer_name(&s).map_err(serde::de::Error::custom)
    }
}

/// Time to first byte and to fetch the small object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TtfbRow {
    /// Contender id.
    pub contender: String,
    /// Time to first byte of `GET /` on a new connection, ms.
    pub ttfb_ms: Option<Summary>,
    /// Time to fetch 10 kB on a new connection, ms.
    pub small_ms: Option<Summary>,
    /// TTFB minus contender 1's in the same run, ms.
    pub ttfb_vs_dsl_ms: Option<Summary>,
    /// Small-object time minus contender 1's in the same run, ms.
    pub small_vs_dsl_ms: Option<Summary>,
}

/// The web-like page load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebRow {
    /// Contender id.
    pub contender: String,
    /// Completion time, s.
    pub secs: Option<Summary>,
    /// Completion time / contender 1's in the same run.
    pub vs_dsl: Option<Summary>,
}

/// Latency under load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyRow {
    /// Contender id.
    pub contender: String,
    /// Median request→response time on an idle path, ms.
    pub idle_ms: Option<Summary>,
    /// Median while a bulk download runs, ms.
    pub loaded_median_ms: Option<Summary>,
    /// 99th percentile while a bulk download runs, ms.
    pub loaded_p99_ms: Option<Summary>,
    /// Loaded p99 minus the fixed line's idle median in the same run, ms.
    pub p99_above_dsl_idle_ms: Option<Summary>,
}

/// Failover.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailoverRow {
    /// Contender id.
    pub contender: String,
    /// Longest time without a byte after the cut, ms.
    pub stall_ms: Option<Summary>,
    /// Goodput before the cut, Mbit/s.
    pub before_mbit: Option<Summary>,
    /// Goodput while the line was cut, Mbit/s.
    pub during_mbit: Option<Summary>,
    /// Runs in which bytes were flowing again at the end.
    pub recovered_runs: usize,
    /// Runs measured.
    pub runs: usize,
}

/// A target of the issue and where we stand.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    /// The target in words.
    pub target: String,
    /// Contender it applies to.
    pub contender: String,
    /// The measured figure (median), in words.
    pub measured: String,
    /// Met, missed, or unknown (not measured).
    pub met: Option<bool>,
}

/// A time series kept for the charts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Series {
    /// "download" (1 flow, first run) or "failover" (first run).
    pub scenario: String,
    /// Contender id.
    pub contender: String,
    /// When the fixed line was cut / restored (failover only), s.
    pub cut_at: Option<f64>,
    /// See `cut_at`.
    pub restored_at: Option<f64>,
    /// Link counters every 100 ms.
    pub samples: Vec<Sample>,
}

/// Everything one run of `tandem bench` measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Day of the run (UTC), `YYYY-MM-DD`.
    pub date: String,
    /// Start of the run, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started_utc: String,
    /// Wall time of the whole run, s.
    pub duration_secs: f64,
    /// Profile name.
    pub profile: String,
    /// The links of the profile.
    pub links: Profile,
    /// `--quick` subset.
    pub quick: bool,
    /// The command that reproduces it.
    pub command: String,
    /// Where.
    pub machine: Machine,
    /// How much of each was measured.
    pub plan: Plan,
    /// Who.
    pub contenders: Vec<ContenderInfo>,
    /// Bulk goodput.
    pub bulk: Vec<BulkRow>,
    /// Time to first byte and small object.
    pub ttfb: Vec<TtfbRow>,
    /// Web-like page.
    pub web: Vec<WebRow>,
    /// Latency under load.
    pub latency: Vec<LatencyRow>,
    /// Failover.
    pub failover: Vec<FailoverRow>,
    /// The HAG against HAProxy on loopback.
    pub relay_cost: Option<RelayCost>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Time series behind the charts.
    pub series: Vec<Series>,
    /// What failed (left out of the figures).
    pub errors: Vec<String>,
}

fn opt(s: &Option<Summary>, digits: usize) -> String {
    s.as_ref()
        .map_or_else(|| "–".to_string(), |s| s.show(digits))
}

fn pct(s: &Option<Summary>) -> String {
    s.as_ref().map_or_else(
        || "–".to_string(),
        |s| {
            if s.runs.len() == 1 {
                format!("{:.0} %", s.median * 100.0)
            } else {
                format!(
                    "{:.0} % ({:.0}–{:.0})",
                    s.median * 100.0,
                    s.min * 100.0,
                    s.max * 100.0
                )
            }
        },
    )
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

impl Results {
    /// The label of a contender id.
    pub fn label(&self, id: &str) -> String {
        self.contenders
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| id.to_string(), |c| c.label.clone())
    }

    /// The bulk row of a contender.
    pub fn bulk_row(&self, dir: Direction, flows: usize, id: &str) -> Option<&BulkRow> {
        self.bulk
            .iter()
            .find(|r| r.direction == dir && r.flows == flows && r.contender == id)
    }

    /// Computes the targets from the figures.
    pub fn compute_targets(&mut self) {
        let mut t = Vec::new();
        let tandems: Vec<String> = self
            .contenders
            .iter()
            .filter(|c| c.id.starts_with("tandem"))
            .map(|c| c.id.clone())
            .collect();
        let med = |s: &Option<Summary>| s.as_ref().map(|s| s.median);
        for id in &tandems {
            for dir in [Direction::Downstream, Direction::Upstream] {
                let v = self.bulk_row(dir, 1, id).and_then(|r| med(&r.of_singles));
                t.push(Target {
                    target: format!(
                        "one flow ≥ 95 % of contenders 1 + 2 ({})",
                        dir.transfer_name()
                    ),
                    contender: id.clone(),
                    measured: v.map_or("–".into(), |v| format!("{:.1} %", v * 100.0)),
                    met: v.map(|v| v >= 0.95),
                });
            }
            let v = self
                .ttfb
                .iter()
                .find(|r| &r.contender == id)
                .and_then(|r| med(&r.ttfb_vs_dsl_ms));
            t.push(Target {
                target: "time to first byte within 1 ms of contender 1".into(),
                contender: id.clone(),
                measured: v.map_or("–".into(), |v| format!("{v:+.1} ms")),
                met: v.map(|v| v <= 1.0),
            });
            let v = self
                .latency
                .iter()
                .find(|r| &r.contender == id)
                .and_then(|r| med(&r.p99_above_dsl_idle_ms));
            t.push(Target {
                target: "p99 latency under load ≤ 30 ms above the fixed line's idle RTT".into(),
                contender: id.clone(),
                measured: v.map_or("–".into(), |v| format!("{v:+.1} ms")),
                met: v.map(|v| v <= 30.0),
            });
        }
        if let Some(rc) = &self.relay_cost {
            for (name, h, p) in [
                (
                    "download",
                    &rc.hag.download_gbit_per_core,
                    &rc.haproxy.download_gbit_per_core,
                ),
                (
                    "upload",
                    &rc.hag.upload_gbit_per_core,
                    &rc.haproxy.upload_gbit_per_core,
                ),
            ] {
                let (h, p) = (med(h), med(p));
                t.push(Target {
                    target: format!("relay throughput per core ≥ HAProxy's ({name})"),
                    contender: "tandem hag".into(),
                    measured: match (h, p) {
                        (Some(h), Some(p)) => {
                            format!("{h:.2} vs {p:.2} Gbit/s per core ({:.0} %)", h / p * 100.0)
                        }
                        _ => "–".into(),
                    },
                    met: h.zip(p).map(|(h, p)| h >= p),
                });
            }
            let v = med(&rc.hag.kib_per_idle_connection);
            t.push(Target {
                target: "≤ 16 KiB memory per idle connection".into(),
                contender: "tandem hag".into(),
                measured: v.map_or("–".into(), |v| format!("{v:.1} KiB")),
                met: v.map(|v| v <= 16.0),
            });
        }
        self.targets = t;
    }

    fn head(&self) -> String {
        let l = &self.links;
        format!(
            "fixed line (DSL) {}/{} Mbit/s, {} ms RTT; mobile (LTE) {}/{} Mbit/s, {} ms RTT; physical limit {} Mbit/s down, {} Mbit/s up",
            l.dsl.down_kbit as f64 / 1000.0,
            l.dsl.up_kbit as f64 / 1000.0,
            l.dsl.rtt_ms,
            l.lte.down_kbit as f64 / 1000.0,
            l.lte.up_kbit as f64 / 1000.0,
            l.lte.rtt_ms,
            (l.dsl.down_kbit + l.lte.down_kbit) as f64 / 1000.0,
            (l.dsl.up_kbit + l.lte.up_kbit) as f64 / 1000.0
        )
    }

    /// The full Markdown report.
    pub fn markdown(&self, charts: &[PathBuf]) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# Tandem benchmark: profile `{}`, {}\n",
            self.profile, self.date
        );
        let _ = writeln!(
            o,
            "Measured {} (took {:.0} s) on {}; commit `{}`; `{}`.{}\n",
            self.started_utc,
            self.duration_secs,
            self.machine.describe(),
            self.machine.commit,
            self.command,
            if self.quick {
                " **Quick subset: one run, short transfers; not for comparison.**"
            } else {
                ""
            }
        );
        let _ = writeln!(o, "Links: {}.\n", self.head());
        let _ = writeln!(
            o,
            "Every figure is the median of {} run(s) with (min–max); ratios are to the contenders measured in the same run. Method: [bench/README.md](../README.md).\n",
            self.plan.runs
        );
        o.push_str("## Contenders\n\n| id | contender | how it was run |\n|---|---|---|\n");
        for c in &self.contenders {
            let _ = writeln!(o, "| `{}` | {} | {} |", c.id, c.label, c.how);
        }
        o.push_str(
            "\n## Targets (where we stand)\n\n| target | for | measured | |\n|---|---|---|---|\n",
        );
        for t in &self.targets {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                t.target,
                t.contender,
                t.measured,
                met(t.met)
            );
        }
        for dir in [Direction::Downstream, Direction::Upstream] {
            let _ = writeln!(
                o,
                "\n## Bulk {} goodput\n\n{} s worth of each contender's nominal capacity per transfer; \"of 1+2\" divides by contender 1 + contender 2 of the same run; \"DSL share\" is the fraction of the bytes that crossed the fixed line.\n",
                dir.transfer_name(),
                self.plan.bulk_secs
            );
            o.push_str("| contender | flows | Mbit/s | of physical limit | of 1+2 | DSL share |\n|---|---|---|---|---|---|\n");
            for flows in &self.plan.flows {
                for c in &self.contenders {
                    if let Some(r) = self.bulk_row(dir, *flows, &c.id) {
                        let _ = writeln!(
                            o,
                            "| {} | {flows} | {} | {} | {} | {} |",
                            c.label,
                            opt(&r.mbit, 1),
                            pct(&r.of_capacity),
                            pct(&r.of_singles),
                            pct(&r.dsl_share)
                        );
                    }
                }
            }
        }
        o.push_str("\n## Time to first byte and small object\n\nEach sample on a new connection (a new curl); `GET /` for the first byte, a 10 kB object for the fetch; Δ is to contender 1 in the same run.\n\n| contender | TTFB ms | Δ TTFB ms | 10 kB fetch ms | Δ fetch ms |\n|---|---|---|---|---|\n");
        for r in &self.ttfb {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                self.label(&r.contender),
                opt(&r.ttfb_ms, 1),
                opt(&r.ttfb_vs_dsl_ms, 1),
                opt(&r.small_ms, 1),
                opt(&r.small_vs_dsl_ms, 1)
            );
        }
        o.push_str("\n## Web-like page\n\n50 objects (1 × 600 kB, 4 × 200 kB, 10 × 50 kB, 15 × 15 kB, 20 × 3 kB; 2.19 MB) over at most 6 parallel connections (`curl --parallel --parallel-max 6`), wall time of the whole load.\n\n| contender | completion s | vs contender 1 |\n|---|---|---|\n");
        for r in &self.web {
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                self.label(&r.contender),
                opt(&r.secs, 2),
                opt(&r.vs_dsl, 2)
            );
        }
        let _ = writeln!(
            o,
            "\n## Latency under load\n\nRequest→response time of small requests on one kept-alive connection over the contender's own path ({} per second), idle and while one bulk download of the same contender runs; the last column subtracts the fixed line's idle median.\n\n| contender | idle ms | loaded median ms | loaded p99 ms | p99 − fixed-line idle ms |\n|---|---|---|---|---|",
            self.plan.probe_rate
        );
        for r in &self.latency {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                self.label(&r.contender),
                opt(&r.idle_ms, 1),
                opt(&r.loaded_median_ms, 1),
                opt(&r.loaded_p99_ms, 1),
                opt(&r.p99_above_dsl_idle_ms, 1)
            );
        }
        let (pre, cut, post) = self.plan.failover_secs;
        let _ = writeln!(
            o,
            "\n## Failover\n\nA download runs; after {pre} s the fixed line is cut (`lab::link(dsl, Cut)`: interface down) for {cut} s, then restored; watched for {post} s more. Stall: the longest time without a byte reaching curl from the cut on.\n\n| contender | stall ms | before Mbit/s | during the cut Mbit/s | flowing at the end |\n|---|---|---|---|---|"
        );
        for r in &self.failover {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {}/{} |",
                self.label(&r.contender),
                opt(&r.stall_ms, 0),
                opt(&r.before_mbit, 1),
                opt(&r.during_mbit, 1),
                r.recovered_runs,
                r.runs
            );
        }
        if let Some(rc) = &self.relay_cost {
            let _ = writeln!(
                o,
                "\n## The HAG's own cost against HAProxy\n\n{}. {} connection(s), {} s per direction; {} idle connections for memory.\n\n| relay | download Gbit/s | CPU cores | Gbit/s per core | upload Gbit/s | CPU cores | Gbit/s per core | RSS idle MiB | KiB per idle connection |\n|---|---|---|---|---|---|---|---|---|",
                rc.setup, rc.flows, rc.seconds, rc.idle_connections
            );
            for f in [&rc.hag, &rc.haproxy] {
                let _ = writeln!(o, "{}", relay_row(f));
            }
        }
        if !charts.is_empty() {
            o.push_str("\n## Charts\n\n");
            for c in charts {
                if let Some(name) = c.file_name() {
                    let name = name.to_string_lossy();
                    let _ = writeln!(o, "![{name}]({name})\n");
                }
            }
        }
        if !self.errors.is_empty() {
            o.push_str("\n## What failed\n\n");
            for e in &self.errors {
                let _ = writeln!(o, "- {e}");
            }
        }
        o
    }

    /// The summary written into the repository README.
    pub fn readme_summary(&self, md_name: &str) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "#### `{}` profile, measured {} on {}\n\n{}. Commit `{}`; full report [{md_name}](bench/results/{md_name}).\n",
            self.profile,
            self.date,
            self.machine.describe(),
            self.head(),
            self.machine.commit
        );
        o.push_str("| contender | download 1 flow Mbit/s (of 1+2) | download 8 flows | upload 1 flow | TTFB ms | web page s | p99 under load ms | failover stall ms |\n|---|---|---|---|---|---|---|---|\n");
        for c in &self.contenders {
            let b = |d, f| {
                self.bulk_row(d, f, &c.id).map_or("–".to_string(), |r| {
                    let m = r
                        .mbit
                        .as_ref()
                        .map_or("–".into(), |s| format!("{:.1}", s.median));
                    match &r.of_singles {
                        Some(s) => format!("{m} ({:.0} %)", s.median * 100.0),
                        None => m,
                    }
                })
            };
            let med = |s: Option<&Option<Summary>>, d: usize| {
                s.and_then(|s| s.as_ref())
                    .map_or("–".to_string(), |s| format!("{:.*}", d, s.median))
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                c.label,
                b(Direction::Downstream, 1),
                b(Direction::Downstream, 8),
                b(Direction::Upstream, 1),
                med(
                    self.ttfb
                        .iter()
                        .find(|r| r.contender == c.id)
                        .map(|r| &r.ttfb_ms),
                    1
                ),
                med(
                    self.web
                        .iter()
                        .find(|r| r.contender == c.id)
                        .map(|r| &r.secs),
                    2
                ),
                med(
                    self.latency
                        .iter()
                        .find(|r| r.contender == c.id)
                        .map(|r| &r.loaded_p99_ms),
                    0
                ),
                med(
                    self.failover
                        .iter()
                        .find(|r| r.contender == c.id)
                        .map(|r| &r.stall_ms),
                    0
                ),
            );
        }
        o.push('\n');
        if let Some(rc) = &self.relay_cost {
            let g = |s: &Option<Summary>, d: usize| {
                s.as_ref()
                    .map_or("–".to_string(), |s| format!("{:.*}", d, s.median))
            };
            let _ = writeln!(
                o,
                "HAG relay on loopback: {} Gbit/s per core of CPU down, {} up (HAProxy {} and {}); {} KiB per idle connection (HAProxy {}).\n",
                g(&rc.hag.download_gbit_per_core, 2),
                g(&rc.hag.upload_gbit_per_core, 2),
                g(&rc.haproxy.download_gbit_per_core, 2),
                g(&rc.haproxy.upload_gbit_per_core, 2),
                g(&rc.hag.kib_per_idle_connection, 1),
                g(&rc.haproxy.kib_per_idle_connection, 1)
            );
        }
        let missed: Vec<String> = self
            .targets
            .iter()
            .map(|t| {
                format!(
                    "{} ({}): {} — {}",
                    t.target,
                    t.contender,
                    t.measured,
                    met(t.met)
                )
            })
            .collect();
        if !missed.is_empty() {
            o.push_str("Targets:\n");
            for m in missed {
                let _ = writeln!(o, "- {m}");
            }
            o.push('\n');
        }
        o
    }
}

fn relay_row(f: &RelayFigures) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        f.relay,
        opt(&f.download_gbit, 2),
        opt(&f.download_cpu_cores, 2),
        opt(&f.download_gbit_per_core, 2),
        opt(&f.upload_gbit, 2),
        opt(&f.upload_cpu_cores, 2),
        opt(&f.upload_gbit_per_core, 2),
        f.rss_idle_kib
            .as_ref()
            .map_or("–".into(), |s| format!("{:.1}", s.median / 1024.0)),
        opt(&f.kib_per_idle_connection, 1)
    )
}

/// Writes the charts of a run next to its JSON; returns their paths.
pub fn write_charts(r: &Results, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, BenchError> {
    let mut files = Vec::new();
    let labels: Vec<String> = r.contenders.iter().map(|c| c.label.clone()).collect();
    let ids: Vec<&str> = r.contenders.iter().map(|c| c.id.as_str()).collect();
    let mut write = |name: &str, text: String| -> Result<(), BenchError> {
        let p = dir.join(format!("{stem}-{name}.svg"));
        std::fs::write(&p, text)
            .map_err(|e| BenchError::io(format!("writing {}", p.display()), e))?;
        files.push(p);
        Ok(())
    };
    let mut groups = Vec::new();
    for dir in [Direction::Downstream, Direction::Upstream] {
        for flows in &r.plan.flows {
            groups.push(Group {
                label: format!(
                    "{}, {flows} flow{}",
                    dir.transfer_name(),
                    if *flows == 1 { "" } else { "s" }
                ),
                bars: ids
                    .iter()
                    .map(|id| r.bulk_row(dir, *flows, id).and_then(|b| b.mbit.clone()))
                    .collect(),
            });
        }
    }
    write(
        "bulk",
        svg::bar_chart(
            &format!("Bulk goodput, profile {} ({})", r.profile, r.date),
            "Mbit/s",
            &labels,
            &groups,
        ),
    )?;
    let pick = |f: &dyn Fn(&str) -> Option<Summary>| ids.iter().map(|id| f(id)).collect::<Vec<_>>();
    let ttfb = |id: &str| r.ttfb.iter().find(|x| x.contender == id);
    let lat = |id: &str| r.latency.iter().find(|x| x.contender == id);
    write(
        "latency",
        svg::bar_chart(
            &format!("Latency, profile {} ({})", r.profile, r.date),
            "ms",
            &labels,
            &[
                Group {
                    label: "time to first byte".into(),
                    bars: pick(&|id| ttfb(id).and_then(|x| x.ttfb_ms.clone())),
                },
                Group {
                    label: "10 kB fetch".into(),
                    bars: pick(&|id| ttfb(id).and_then(|x| x.small_ms.clone())),
                },
                Group {
                    label: "RTT idle".into(),
                    bars: pick(&|id| lat(id).and_then(|x| x.idle_ms.clone())),
                },
                Group {
                    label: "RTT under load, p99".into(),
                    bars: pick(&|id| lat(id).and_then(|x| x.loaded_p99_ms.clone())),
                },
            ],
        ),
    )?;
    write(
        "web-failover",
        svg::bar_chart(
            &format!("Web page and failover, profile {} ({})", r.profile, r.date),
            "seconds",
            &labels,
            &[
                Group {
                    label: "web page (50 objects)".into(),
                    bars: pick(&|id| {
                        r.web
                            .iter()
                            .find(|x| x.contender == id)
                            .and_then(|x| x.secs.clone())
                    }),
                },
                Group {
                    label: "failover stall".into(),
                    bars: pick(&|id| {
                        r.failover
                            .iter()
                            .find(|x| x.contender == id)
                            .and_then(|x| x.stall_ms.as_ref())
                            .and_then(|s| {
                                Summary::of(&s.runs.iter().map(|v| v / 1000.0).collect::<Vec<_>>())
                            })
                    }),
                },
            ],
        ),
    )?;
    if let Some(rc) = &r.relay_cost {
        let names = vec!["tandem hag".to_string(), "haproxy".to_string()];
        let g = |label: &str, f: &dyn Fn(&RelayFigures) -> Option<Summary>| Group {
            label: label.into(),
            bars: vec![f(&rc.hag), f(&rc.haproxy)],
        };
        write(
            "relay",
            svg::bar_chart(
                &format!(
                    "Relay on loopback: Gbit/s per core of relay CPU ({})",
                    r.date
                ),
                "Gbit/s per core",
                &names,
                &[
                    g("download", &|f| f.download_gbit_per_core.clone()),
                    g("upload", &|f| f.upload_gbit_per_core.clone()),
                ],
            ),
        )?;
    }
    for scenario in ["download", "failover"] {
        let panels: Vec<Panel> = r
            .series
            .iter()
            .filter(|s| s.scenario == scenario)
            .map(|s| series_panel(r, s))
            .collect();
        if !panels.is_empty() {
            write(
                &format!("{scenario}-timeline"),
                svg::line_panels(
                    &format!(
                        "{} per link over time, profile {} ({})",
                        if scenario == "download" {
                            "Download (1 flow, first run)"
                        } else {
                            "Failover (first run)"
                        },
                        r.profile,
                        r.date
                    ),
                    "Mbit/s per 100 ms sample",
                    &panels,
                ),
            )?;
        }
    }
    Ok(files)
}

fn series_panel(r: &Results, s: &Series) -> Panel {
    let mut dsl = Vec::new();
    let mut lte = Vec::new();
    for w in s.samples.windows(2) {
        let dt = (w[1].t - w[0].t).max(1e-3);
        let d = w[1].c.since(&w[0].c);
        dsl.push((w[1].t, d.dsl_down as f64 * 8.0 / dt / 1e6));
        lte.push((w[1].t, d.lte_down as f64 * 8.0 / dt / 1e6));
    }
    let mut markers = Vec::new();
    if let Some(t) = s.cut_at {
        markers.push((t, "DSL cut".to_string()));
    }
    if let Some(t) = s.restored_at {
        markers.push((t, "restored".to_string()));
    }
    Panel {
        title: r.label(&s.contender),
        lines: vec![
            Line {
                name: "DSL down".into(),
                color: PALETTE[0],
                points: dsl,
            },
            Line {
                name: "LTE down".into(),
                color: PALETTE[1],
                points: lte,
            },
        ],
        markers,
    }
}

/// Reads every full (not `--quick`) result in `dir`; the latest per
/// profile, in profile order (rural, suburban, then others).
pub fn latest_results(dir: &Path) -> Vec<(Results, String)> {
    let mut all: Vec<(Results, String)> = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return all;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let Ok(r) = serde_json::from_str::<Results>(&text) else {
            continue;
        };
        if r.quick || r.schema != SCHEMA {
            continue;
        }
        let md = p.with_extension("md");
        let md = md
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match all.iter_mut().find(|(x, _)| x.profile == r.profile) {
            Some(slot) if slot.0.started_utc < r.started_utc => *slot = (r, md),
            Some(_) => {}
            None => all.push((r, md)),
        }
    }
    let rank = |p: &str| {
        lab::profile::NAMES
            .iter()
            .position(|n| *n == p)
            .unwrap_or(99)
    };
    all.sort_by(|a, b| {
        rank(&a.0.profile)
            .cmp(&rank(&b.0.profile))
            .then(a.0.profile.cmp(&b.0.profile))
    });
    all
}

/// The README section between the markers, from the latest results.
pub fn readme_section(latest: &[(Results, String)]) -> String {
    let mut o = String::from(
        "Written by `tandem bench` from the latest results in [`bench/results/`](bench/results/); \
         reproduce with `make bench` (method, contenders and their configuration: [`bench/README.md`](bench/README.md)). \
         Figures are medians of the runs; \"of 1+2\" is the ratio to the fixed line alone plus the mobile link alone measured in the same run.\n\n",
    );
    if latest.is_empty() {
        o.push_str("No results yet: run `make bench`.\n");
    }
    for (r, md) in latest {
        o.push_str(&r.readme_summary(md));
    }
    o
}

/// Replaces the text between the markers of `readme` (adds a
/// `## Benchmarks` section with them at the end if they are missing).
pub fn splice_readme(readme: &str, section: &str) -> String {
    let block = format!("{README_BEGIN}\n{}{README_END}", section);
    match (readme.find(README_BEGIN), readme.find(README_END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &readme[..b], &readme[e + README_END.len()..])
        }
        _ => {
            let sep = if readme.ends_with('\n') { "" } else { "\n" };
            format!("{readme}{sep}\n## Benchmarks\n\n{block}\n")
        }
    }
}

/// Rewrites the README's benchmark section from the results in `dir`.
pub fn update_readme(readme: &Path, dir: &Path) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(readme)
        .map_err(|e| BenchError::io(format!("reading {}", readme.display()), e))?;
    let new = splice_readme(&text, &readme_section(&latest_results(dir)));
    if new != text {
        std::fs::write(readme, new)
            .map_err(|e| BenchError::io(format!("writing {}", readme.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splicing_replaces_only_between_markers() {
        let r = "# T\n\nintro\n\n## Benchmarks\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n\n## After\n";
        let n = splice_readme(r, "new\n");
        assert_eq!(
            n,
            "# T\n\nintro\n\n## Benchmarks\n\n<!-- bench:begin -->\nnew\n<!-- bench:end -->\n\n## After\n"
        );
        assert_eq!(splice_readme(&n, "new\n"), n);
        let added = splice_readme("# T\n", "x\n");
        assert!(added.ends_with("## Benchmarks\n\n<!-- bench:begin -->\nx\n<!-- bench:end -->\n"));
    }

    #[test]
    fn recorded_results_read_back_and_write_the_same_words() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/results");
        let mut files = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            let r: Results =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(r.bulk.iter().any(|b| b.direction == Direction::Downstream));
            assert!(r.bulk.iter().any(|b| b.direction == Direction::Upstream));
            let again = serde_json::to_value(&r).unwrap();
            let recorded: serde_json::Value = serde_json::from_str(&text).unwrap();
            // (Older files lack fields added since, so only the row keys
            // are compared.)
            let keys = |v: &serde_json::Value| -> Vec<String> {
                v["bulk"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| format!("{} {} {}", b["direction"], b["flows"], b["contender"]))
                    .collect()
            };
            assert_eq!(keys(&again), keys(&recorded), "{}", path.display());
            assert!(keys(&again)[0].starts_with("\"download\" 1 "));
        }
        assert!(files > 0, "no results in {}", dir.display());
    }
}
