//! A seeded fault campaign over a fleet: which faults strike whom and when,
//! when a customer calls about each (the ticket ops must answer), and the
//! ground truth to judge the answer by.
//!
//! Every kind of [`FaultKind`] gets the same number of cases. A home is in
//! at most one case at a time, except the homes given a second, chronic
//! fault on purpose (a mild in-home or crosstalk problem that was there
//! hours before the new one). Cell and core faults overlap the others the
//! way they do in a real network; their tickets come from homes with no
//! other fault.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::fault::{effect, Effect, FaultKind, Scope};
use crate::fleet::{Fleet, FleetSpec};
use crate::rng::{chance, uniform};

/// How a campaign is drawn.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CampaignSpec {
    /// A name for reports ("development", "held-out").
    pub name: String,
    /// The fleet.
    pub fleet: FleetSpec,
    /// Seed of the faults (separate from the fleet's).
    pub seed: u64,
    /// Number of cases (each with a ticket).
    pub faults: u32,
    /// Healthy time before the first fault, seconds.
    pub warmup_s: f64,
    /// Mean time between fault onsets, seconds.
    pub gap_s: f64,
    /// Severity: `lo + (hi - lo) · u^skew` for uniform u.
    pub severity: (f64, f64, f64),
    /// When the customer calls, seconds after onset (uniform range).
    pub ticket_delay_s: (f64, f64),
    /// Share of home cases whose home also has a second, chronic fault.
    pub second_fault_share: f64,
}

impl CampaignSpec {
    /// The campaign used while developing the diagnosis.
    pub fn development() -> Self {
        Self {
            name: "development".into(),
            fleet: FleetSpec {
                seed: 11,
                ..FleetSpec::default()
            },
            seed: 101,
            faults: 1050,
            warmup_s: 3.0 * 3600.0,
            gap_s: 150.0,
            severity: (0.5, 1.0, 1.0),
            ticket_delay_s: (180.0, 1200.0),
            second_fault_share: 0.1,
        }
    }

    /// The held-out campaign: another fleet, other faults, milder ones more
    /// often and tickets both sooner and later; never used while
    /// developing.
    pub fn held_out() -> Self {
        Self {
            name: "held-out".into(),
            fleet: FleetSpec {
                seed: 9_001,
                lost_reports: 0.03,
                error_bursts_per_day: 4.0,
                lte_flaps_per_day: 3.0,
                ..FleetSpec::default()
            },
            seed: 424_242,
            faults: 1050,
            warmup_s: 3.0 * 3600.0,
            gap_s: 150.0,
            severity: (0.3, 1.0, 1.6),
            ticket_delay_s: (120.0, 2400.0),
            second_fault_share: 0.15,
        }
    }
}

/// One fault and its ticket.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Case {
    /// Case number.
    pub id: u32,
    /// What it is.
    pub kind: FaultKind,
    /// How bad, 0..=1.
    pub severity: f64,
    /// Onset, seconds since the start.
    pub onset_s: f64,
    /// When it is repaired.
    pub clear_s: f64,
    /// The target's name (a home, a cabinet, a cell, `core`).
    pub target: String,
    /// Indices of the homes it affects.
    pub homes: Vec<u32>,
    /// The ticket: which home calls, and when (none for a chronic second fault).
    pub ticket: Option<(u32, f64)>,
    /// The fault's own schedule seed.
    pub seed: u64,
}

/// A planned campaign.
#[derive(Clone, Debug)]
pub struct Campaign {
    /// How it was drawn.
    pub spec: CampaignSpec,
    /// Cases by onset.
    pub cases: Vec<Case>,
    /// When it ends, seconds.
    pub end_s: f64,
}

fn busy(intervals: &[(f64, f64)], a: f64, b: f64) -> bool {
    intervals.iter().any(|&(s, e)| s < b && a < e)
}

impl Campaign {
    /// Plans the campaign on `fleet`.
    pub fn plan(spec: CampaignSpec, fleet: &Fleet) -> Self {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let homes: Vec<_> = fleet.homes().cloned().collect();
        let n = homes.len() as u32;
        let mut busy_home: Vec<Vec<(f64, f64)>> = vec![Vec::new(); homes.len()];
        let mut core_busy: Vec<(f64, f64)> = Vec::new();
        // An equal number of each kind, in a shuffled order.
        let mut order: Vec<FaultKind> = (0..spec.faults)
            .map(|i| FaultKind::ALL[i as usize % FaultKind::ALL.len()])
            .collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        // A kind that cannot be placed now (no free target) is tried again
        // at a later onset.
        let mut kinds: std::collections::VecDeque<FaultKind> = order.into();
        let mut attempts = 0u32;
        let mut cases = Vec::new();
        let mut t = spec.warmup_s;
        let mut id = 0;
        let sev = |r: &mut StdRng| {
            let (lo, hi, skew) = spec.severity;
            lo + (hi - lo) * r.random::<f64>().powf(skew)
        };
        // Core faults first: spread over the campaign, each in a window no
        // other ticket falls in (a ticket during a core outage is about the
        // outage).
        let n_core = kinds.iter().filter(|k| k.scope() == Scope::Core).count();
        let span = f64::from(spec.faults) * spec.gap_s;
        let mut core_plan: std::collections::VecDeque<(f64, f64, f64)> = (0..n_core)
            .map(|j| {
                let onset = spec.warmup_s
                    + (j as f64 + uniform(&mut rng, 0.3, 0.7)) * span / n_core.max(1) as f64;
                let delay = 0.25 * uniform(&mut rng, spec.ticket_delay_s.0, spec.ticket_delay_s.1);
                let clear = onset + delay + uniform(&mut rng, 120.0, 400.0);
                core_busy.push((onset, clear));
                (onset, onset + delay, clear)
            })
            .collect();
        while let Some(kind) = kinds.pop_front() {
            attempts += 1;
            if attempts > spec.faults.saturating_mul(20) {
                break;
            }
            let severity = sev(&mut rng);
            let (onset, ticket_at, clear) = if kind.scope() == Scope::Core {
                let Some(w) = core_plan.pop_front() else {
                    continue;
                };
                w
            } else {
                t += uniform(&mut rng, 0.5, 1.5) * spec.gap_s;
                let delay = uniform(&mut rng, spec.ticket_delay_s.0, spec.ticket_delay_s.1);
                let clear = t + delay + uniform(&mut rng, 300.0, 1200.0);
                (t, t + delay, clear)
            };
            macro_rules! retry {
                () => {{
                    kinds.push_back(kind);
                    continue;
                }};
            }
            let free = |h: u32, busy_home: &Vec<Vec<(f64, f64)>>, core: &Vec<(f64, f64)>| {
                !busy(&busy_home[h as usize], onset - 600.0, clear + 600.0)
                    && !busy(core, ticket_at - 300.0, ticket_at + 300.0)
            };
            let (target, affected): (String, Vec<u32>) = match kind.scope() {
                Scope::Home => {
                    let Some(h) = (0..200)
                        .map(|_| rng.random_range(0..n))
                        .find(|&h| free(h, &busy_home, &core_busy))
                    else {
                        retry!();
                    };
                    (homes[h as usize].name.clone(), vec![h])
                }
                Scope::Cabinet => {
                    let mut pick = None;
                    for _ in 0..200 {
                        let c = rng.random_range(0..fleet.spec().cabinets.max(1));
                        let on_cab: Vec<u32> =
                            (0..n).filter(|&h| homes[h as usize].cabinet == c).collect();
                        let group: Vec<u32> = if kind == FaultKind::LineCard {
                            let cards: Vec<u32> = {
                                let mut v: Vec<u32> =
                                    on_cab.iter().map(|&h| homes[h as usize].card).collect();
                                v.sort_unstable();
                                v.dedup();
                                v
                            };
                            let card = cards[rng.random_range(0..cards.len())];
                            on_cab
                                .iter()
                                .copied()
                                .filter(|&h| homes[h as usize].card == card)
                                .collect()
                        } else {
                            on_cab
                        };
                        if group.len() >= 3
                            && group.iter().all(|&h| free(h, &busy_home, &core_busy))
                        {
                            pick = Some((c, group));
                            break;
                        }
                    }
                    let Some((c, group)) = pick else { retry!() };
                    (Fleet::cabinet_name(c), group)
                }
                Scope::Cell => {
                    let c = rng.random_range(0..fleet.spec().cells.max(1));
                    let group: Vec<u32> = (0..n).filter(|&h| homes[h as usize].cell == c).collect();
                    if group.is_empty() {
                        retry!();
                    }
                    (Fleet::cell_name(c), group)
                }
                Scope::Core => ("core".to_string(), (0..n).collect()),
            };
            // Who calls: an affected home with no other fault.
            let caller = match kind.scope() {
                Scope::Home | Scope::Cabinet => affected[rng.random_range(0..affected.len())],
                Scope::Cell | Scope::Core => {
                    let own = (kind.scope() == Scope::Core).then_some((onset, clear));
                    let others: Vec<(f64, f64)> = core_busy
                        .iter()
                        .copied()
                        .filter(|w| Some(*w) != own)
                        .collect();
                    let Some(h) = (0..200)
                        .map(|_| affected[rng.random_range(0..affected.len())])
                        .find(|&h| free(h, &busy_home, &others))
                    else {
                        retry!();
                    };
                    h
                }
            };
            match kind.scope() {
                Scope::Home | Scope::Cabinet => {
                    for &h in &affected {
                        busy_home[h as usize].push((onset, clear));
                    }
                }
                Scope::Cell => busy_home[caller as usize].push((onset, clear)),
                Scope::Core => busy_home[caller as usize].push((onset, clear)),
            }
            id += 1;
            let seed = rng.random();
            // A chronic second fault, there long before this one.
            if kind.scope() == Scope::Home && chance(&mut rng, spec.second_fault_share) {
                let second = [
                    FaultKind::InHomeWiring,
                    FaultKind::Crosstalk,
                    FaultKind::MissingMicrofilter,
                ][rng.random_range(0..3)];
                if second != kind {
                    let start = (onset - uniform(&mut rng, 3600.0, 3.0 * 3600.0)).max(0.0);
                    cases.push(Case {
                        id: 100_000 + id,
                        kind: second,
                        severity: uniform(&mut rng, 0.05, 0.25),
                        onset_s: start,
                        clear_s: clear,
                        target: target.clone(),
                        homes: affected.clone(),
                        ticket: None,
                        seed: rng.random(),
                    });
                }
            }
            cases.push(Case {
                id,
                kind,
                severity,
                onset_s: onset,
                clear_s: clear,
                target,
                homes: affected,
                ticket: Some((caller, ticket_at)),
                seed,
            });
        }
        cases.sort_by(|a, b| a.onset_s.total_cmp(&b.onset_s));
        let end_s = cases
            .iter()
            .map(|c| c.clear_s)
            .fold(spec.warmup_s, f64::max)
            + 600.0;
        Self { spec, cases, end_s }
    }

    /// The cases with a ticket.
    pub fn tickets(&self) -> impl Iterator<Item = &Case> {
        self.cases.iter().filter(|c| c.ticket.is_some())
    }

    /// Each home's fault effect at `t` (into `homes`, one per home) and the
    /// core's.
    pub fn effects_at(&self, t: f64, homes: &mut Vec<Effect>, n: usize) -> Effect {
        homes.clear();
        homes.resize(n, Effect::default());
        let mut core = Effect::default();
        for c in &self.cases {
            if c.onset_s > t {
                break;
            }
            if t >= c.clear_s {
                continue;
            }
            let e = effect(c.kind, c.severity, t - c.onset_s, c.seed);
            if c.kind.scope() == Scope::Core {
                core = core.and(e);
                continue;
            }
            for &h in &c.homes {
                if let Some(slot) = homes.get_mut(h as usize) {
                    *slot = slot.and(e);
                }
            }
        }
        core
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_campaign_has_every_kind_and_tickets_on_affected_homes() {
        let mut spec = CampaignSpec::development();
        spec.fleet.homes = 400;
        spec.fleet.cabinets = 20;
        spec.fleet.cells = 4;
        spec.faults = 140;
        let fleet = Fleet::new(spec.fleet.clone());
        let c = Campaign::plan(spec, &fleet);
        for &k in FaultKind::ALL {
            let n = c.tickets().filter(|x| x.kind == k).count();
            assert!(n >= 5, "{k}: {n}");
        }
        for case in c.tickets() {
            let (h, at) = case.ticket.unwrap();
            assert!(case.homes.contains(&h));
            assert!(at > case.onset_s && at < case.clear_s);
        }
        // Deterministic.
        let again = Campaign::plan(c.spec.clone(), &fleet);
        assert_eq!(again.cases.len(), c.cases.len());
        assert_eq!(again.cases[7].target, c.cases[7].target);
    }
}
