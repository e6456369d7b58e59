//! The ops benchmark on a simulated fleet: a seeded fault campaign
//! ([`street::Campaign`]) runs on a fleet of homes that report exactly as
//! CPEs do; ops' engine and the DLM-style rule baseline both get every
//! report, and both answer every ticket. The results: the confusion matrix,
//! per-class precision and recall, macro-F1 and the wrong-technician rate of
//! each, side by side, plus how fast Tandem first reached the right answer
//! and how cabinet faults were grouped.
//!
//! Nothing in ops sees the model: it gets `telemetry::Report`s and the
//! inventory, as in production.

use std::fmt::Write as _;
use std::time::Instant;

use hybrid::Location;
use ops::engine::Group;
use ops::inventory::{Inventory, Row};
use ops::{baseline, Engine, Settings};
use serde::Serialize;
use street::{Campaign, CampaignSpec, Fleet, Scope};

/// 2025-12-01T00:00:00Z: the simulated clock's start.
const START_MS: u64 = 1_764_547_200_000;

/// One judged ticket.
#[derive(Clone, Debug, Serialize)]
pub struct Ticket {
    /// Case number.
    pub case: u32,
    /// The fault.
    pub fault: String,
    /// The truth.
    pub truth: Location,
    /// Tandem's answer.
    pub tandem: Location,
    /// Tandem's rule.
    pub tandem_rule: &'static str,
    /// The baseline's answer.
    pub baseline: Location,
    /// Seconds from onset to the ticket.
    pub after_s: f64,
    /// When Tandem was wrong: the figures it read and its evidence (kept
    /// out of the JSON, which stays small; for a debugger or a test).
    #[serde(skip)]
    pub figures: Option<String>,
}

/// A confusion matrix over [`Location::ALL`] (rows: truth, columns: answer).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Confusion {
    /// Counts.
    pub m: [[u32; 7]; 7],
}

fn ix(l: Location) -> usize {
    Location::ALL.iter().position(|&x| x == l).unwrap_or(6)
}

/// Per-class figures.
#[derive(Clone, Debug, Serialize)]
pub struct ClassScore {
    /// The class.
    pub class: Location,
    /// Tickets of it.
    pub support: u32,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
}

impl Confusion {
    /// Counts one answer.
    pub fn add(&mut self, truth: Location, got: Location) {
        self.m[ix(truth)][ix(got)] += 1;
    }

    /// Scores of every class that occurs in the truth.
    pub fn scores(&self) -> Vec<ClassScore> {
        Location::ALL
            .iter()
            .enumerate()
            .filter_map(|(i, &class)| {
                let support: u32 = self.m[i].iter().sum();
                if support == 0 {
                    return None;
                }
                let tp = f64::from(self.m[i][i]);
                let predicted: u32 = (0..7).map(|r| self.m[r][i]).sum();
                let precision = if predicted == 0 {
                    0.0
                } else {
                    tp / f64::from(predicted)
                };
                let recall = tp / f64::from(support);
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                Some(ClassScore {
                    class,
                    support,
                    precision,
                    recall,
                    f1,
                })
            })
            .collect()
    }

    /// Mean F1 over the classes in the truth.
    pub fn macro_f1(&self) -> f64 {
        let s = self.scores();
        if s.is_empty() {
            return 0.0;
        }
        s.iter().map(|c| c.f1).sum::<f64>() / s.len() as f64
    }
}

/// How a cabinet-scope case was grouped.
#[derive(Clone, Debug, Serialize)]
pub struct Grouping {
    /// Case number.
    pub case: u32,
    /// The fault.
    pub fault: String,
    /// Homes affected.
    pub homes: usize,
    /// Seconds from onset until 80 % of them were in one cabinet incident.
    pub grouped_after_s: Option<f64>,
    /// Distinct incidents their diagnoses fell in at that moment (or at the end).
    pub incidents: usize,
}

/// A campaign's results.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// The campaign.
    pub campaign: String,
    /// Homes, cabinets, cells.
    pub fleet: (u32, u32, u32),
    /// Cases with a ticket.
    pub tickets: usize,
    /// Reports ops ingested.
    pub reports: u64,
    /// Simulated hours.
    pub hours: f64,
    /// Wall-clock seconds of the run.
    pub wall_s: f64,
    /// Tandem's confusion matrix.
    pub tandem: Confusion,
    /// The baseline's.
    pub baseline: Confusion,
    /// Tandem's wrong-technician rate.
    pub tandem_wrong_tech: f64,
    /// The baseline's.
    pub baseline_wrong_tech: f64,
    /// Seconds from onset to Tandem's first right answer (per case reached).
    pub time_to_diagnosis_s: Vec<f64>,
    /// Cases never answered right while active.
    pub never_right: usize,
    /// Cabinet cases' grouping.
    pub grouping: Vec<Grouping>,
    /// Every ticket (in the Markdown's per-fault table; kept out of the
    /// JSON, which stays small).
    #[serde(skip)]
    pub detail: Vec<Ticket>,
}

/// A truck of the wrong type, a truck where none was needed, or none where
/// one was.
fn wrong_tech(a: Location, truth: Location) -> bool {
    a.dispatch() != truth.dispatch()
}

/// Runs one campaign.
pub fn run(spec: CampaignSpec, progress: &mut dyn FnMut(&str)) -> Evaluation {
    let wall = Instant::now();
    let fleet_spec = spec.fleet.clone();
    let mut fleet = Fleet::new(fleet_spec.clone());
    let campaign = Campaign::plan(spec, &fleet);
    let rows = fleet
        .inventory()
        .into_iter()
        .map(|r| Row {
            subscriber: r.subscriber,
            cabinet: r.cabinet,
            card: r.card,
            cell: r.cell,
        })
        .collect();
    let inventory = Inventory::from_rows(rows).unwrap_or_default();
    let mut engine = Engine::new(
        inventory,
        Settings {
            report_period_s: fleet_spec.period_s,
            hag_period_s: fleet_spec.period_s,
        },
    );
    let n = fleet.homes().len();
    let mut tickets: Vec<(f64, usize)> = campaign
        .cases
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.ticket.map(|(_, at)| (at, i)))
        .collect();
    tickets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut next_ticket = 0;
    let mut tandem = Confusion::default();
    let mut base = Confusion::default();
    let (mut wt_t, mut wt_b) = (0u32, 0u32);
    let mut detail = Vec::new();
    let mut first_right: Vec<Option<f64>> = vec![None; campaign.cases.len()];
    let mut grouping: Vec<Option<Grouping>> = vec![None; campaign.cases.len()];
    let mut effects = Vec::new();
    let mut reports = 0u64;
    let dt = fleet_spec.period_s;
    let mut t = 0.0;
    let mut last_progress = Instant::now();
    while t <= campaign.end_s {
        let core = campaign.effects_at(t, &mut effects, n);
        let now_ms = START_MS + (t * 1000.0) as u64;
        let (rs, hags) = fleet.step(t, &effects, &core, START_MS);
        for r in &rs {
            let _ = engine.ingest(r, now_ms);
        }
        reports += rs.len() as u64;
        for h in &hags {
            engine.ingest_hag(h);
        }
        // The active cases: first right answer, cabinet grouping.
        for (ci, c) in campaign.cases.iter().enumerate() {
            if c.onset_s > t {
                break;
            }
            if t >= c.clear_s {
                continue;
            }
            let Some((caller, _)) = c.ticket else {
                continue;
            };
            if first_right[ci].is_none()
                && engine.diagnose(caller as usize, now_ms).location == c.kind.location()
            {
                first_right[ci] = Some(t - c.onset_s);
            }
            if c.kind.scope() == Scope::Cabinet
                && t - c.onset_s <= 900.0
                && grouping[ci]
                    .as_ref()
                    .is_none_or(|g| g.grouped_after_s.is_none())
            {
                let mut groups: Vec<Group> = c
                    .homes
                    .iter()
                    .map(|&h| engine.diagnose(h as usize, now_ms).group)
                    .collect();
                groups.sort();
                let mut best = 0;
                let mut run = 0;
                for k in 0..groups.len() {
                    run = if k > 0 && groups[k] == groups[k - 1] {
                        run + 1
                    } else {
                        1
                    };
                    if matches!(groups[k], Group::Cabinet(_) | Group::Card(..)) {
                        best = best.max(run);
                    }
                }
                groups.dedup();
                let done = best * 5 >= c.homes.len() * 4;
                grouping[ci] = Some(Grouping {
                    case: c.id,
                    fault: c.kind.name().into(),
                    homes: c.homes.len(),
                    grouped_after_s: done.then_some(t - c.onset_s),
                    incidents: groups.len(),
                });
            }
        }
        while next_ticket < tickets.len() && tickets[next_ticket].0 <= t {
            let c = &campaign.cases[tickets[next_ticket].1];
            next_ticket += 1;
            let Some((caller, at)) = c.ticket else {
                continue;
            };
            let truth = c.kind.location();
            let d = engine.diagnose(caller as usize, now_ms);
            let b = baseline::diagnose(engine.home(caller as usize), now_ms, dt);
            tandem.add(truth, d.location);
            base.add(truth, b.location);
            wt_t += u32::from(wrong_tech(d.location, truth));
            wt_b += u32::from(wrong_tech(b.location, truth));
            detail.push(Ticket {
                case: c.id,
                fault: c.kind.name().into(),
                truth,
                tandem: d.location,
                tandem_rule: d.rule,
                baseline: b.location,
                after_s: at - c.onset_s,
                figures: (d.location != truth).then(|| {
                    format!(
                        "{:?} | {} | effect {:?}",
                        ops::features::Features::of(engine.home(caller as usize), now_ms),
                        d.evidence.join(" / "),
                        effects.get(caller as usize)
                    )
                }),
            });
        }
        if last_progress.elapsed().as_secs() >= 10 {
            last_progress = Instant::now();
            progress(&format!(
                "{}: {:.0} of {:.0} simulated hours, {} tickets judged",
                campaign.spec.name,
                t / 3600.0,
                campaign.end_s / 3600.0,
                detail.len()
            ));
        }
        t += dt;
    }
    let judged = detail.len().max(1) as f64;
    let mut ttd: Vec<f64> = first_right.iter().flatten().copied().collect();
    ttd.sort_by(f64::total_cmp);
    let never_right = campaign
        .cases
        .iter()
        .zip(&first_right)
        .filter(|(c, r)| c.ticket.is_some() && r.is_none())
        .count();
    Evaluation {
        campaign: campaign.spec.name.clone(),
        fleet: (fleet_spec.homes, fleet_spec.cabinets, fleet_spec.cells),
        tickets: detail.len(),
        reports,
        hours: campaign.end_s / 3600.0,
        wall_s: wall.elapsed().as_secs_f64(),
        tandem,
        baseline: base,
        tandem_wrong_tech: f64::from(wt_t) / judged,
        baseline_wrong_tech: f64::from(wt_b) / judged,
        time_to_diagnosis_s: ttd,
        never_right,
        grouping: grouping.into_iter().flatten().collect(),
        detail,
    }
}

pub(crate) fn pct(v: f64) -> String {
    format!("{:.1} %", v * 100.0)
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let k = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(k).copied()
}

pub(crate) fn matrix(out: &mut String, name: &str, c: &Confusion) {
    let _ = writeln!(out, "\n{name} (rows: truth, columns: answer)\n");
    let _ = write!(out, "| truth \\ answer |");
    for l in Location::ALL {
        let _ = write!(out, " {l} |");
    }
    let _ = write!(out, "\n|---|");
    for _ in Location::ALL {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for (i, l) in Location::ALL.iter().enumerate() {
        if c.m[i].iter().sum::<u32>() == 0 {
            continue;
        }
        let _ = write!(out, "| **{l}** |");
        for v in c.m[i] {
            let _ = write!(out, " {v} |");
        }
        out.push('\n');
    }
}

/// The Markdown report of evaluations.
pub fn markdown(evals: &[Evaluation], command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# ops: diagnosis on simulated fault campaigns\n\nReproduce: `{command}`\n"
    );
    let _ = writeln!(
        out,
        "| campaign | fleet (homes / cabinets / cells) | tickets | reports | macro-F1 Tandem | macro-F1 baseline | wrong technician Tandem | wrong technician baseline | first right answer p50 / p95 | never right while active | cabinet faults grouped into one incident |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for e in evals {
        let grouped = e
            .grouping
            .iter()
            .filter(|g| g.grouped_after_s.is_some())
            .count();
        let _ = writeln!(
            out,
            "| {} | {} / {} / {} | {} | {} | {:.3} | {:.3} | {} | {} | {} / {} s | {} | {} of {} |",
            e.campaign,
            e.fleet.0,
            e.fleet.1,
            e.fleet.2,
            e.tickets,
            e.reports,
            e.tandem.macro_f1(),
            e.baseline.macro_f1(),
            pct(e.tandem_wrong_tech),
            pct(e.baseline_wrong_tech),
            percentile(&e.time_to_diagnosis_s, 0.5).map_or("-".into(), |v| format!("{v:.0}")),
            percentile(&e.time_to_diagnosis_s, 0.95).map_or("-".into(), |v| format!("{v:.0}")),
            e.never_right,
            grouped,
            e.grouping.len()
        );
    }
    for e in evals {
        let _ = writeln!(out, "\n## {}\n", e.campaign);
        let _ = writeln!(
            out,
            "{:.1} simulated hours, {} reports, {:.0} s of wall clock.\n",
            e.hours, e.reports, e.wall_s
        );
        let _ = writeln!(out, "| class | tickets | Tandem precision | Tandem recall | Tandem F1 | baseline precision | baseline recall | baseline F1 |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let bs = e.baseline.scores();
        for s in e.tandem.scores() {
            let b = bs.iter().find(|b| b.class == s.class);
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                s.class,
                s.support,
                s.precision,
                s.recall,
                s.f1,
                b.map_or(0.0, |b| b.precision),
                b.map_or(0.0, |b| b.recall),
                b.map_or(0.0, |b| b.f1)
            );
        }
        matrix(&mut out, "Tandem", &e.tandem);
        matrix(&mut out, "Baseline (DLM rules)", &e.baseline);
        // Per fault kind.
        let _ = writeln!(out, "\nPer fault: tickets, Tandem right, baseline right\n");
        let _ = writeln!(out, "| fault | tickets | Tandem | baseline |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        let mut kinds: Vec<&str> = e.detail.iter().map(|t| t.fault.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for k in kinds {
            let of: Vec<&Ticket> = e.detail.iter().filter(|t| t.fault == k).collect();
            let _ = writeln!(
                out,
                "| {k} | {} | {} | {} |",
                of.len(),
                of.iter().filter(|t| t.tandem == t.truth).count(),
                of.iter().filter(|t| t.baseline == t.truth).count()
            );
        }
    }
    out
}
