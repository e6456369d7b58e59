//! The ops benchmark on the real lab: a street of six homes on two
//! cabinets and two cells, real CPEs reporting real measurements to a real
//! ops, and a seeded campaign of faults injected with `lab fault inject`
//! (which changes the modems' readings and the data path alike).
//!
//! The campaign runs in rounds. Each round first waits until every home is
//! healthy, then injects faults on scopes that do not overlap (a cabinet's
//! fault with one in a home of the other cabinet; a cell's with one in a
//! home of the other cell; a core fault alone; two home faults on
//! different cabinets; the line cards last), polls ops' API every second, and
//! at the ticket time (`ticket_s` after onset, as a customer calling)
//! takes ops' answer for each fault's first affected home: Tandem's
//! diagnosis, and the rule baseline's verdict on the same history (both
//! from `GET /api/v1/homes/{subscriber}`). It records when Tandem was first
//! right (location and whom to send), when a cabinet fault's homes were in
//! one incident, and every unaffected home that was not healthy meanwhile
//! (a false alarm). Then it clears the faults and resolves their incidents
//! with the true place as the finding, as the technician (or the NOC)
//! would: ops judges a repaired line from its repair on, so one round's
//! errors are not the next round's evidence.
//!
//! Kinds whose real-time course takes minutes (water ingress over 20 to 80
//! minutes, a reboot loop's first restart after 2 to 5) are in the campaign
//! only with `slow`: their tickets are then taken later (10 minutes after
//! onset) and the run is much longer.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hybrid::{Dispatch, Location};
use serde::Serialize;
use street::FaultKind;

use crate::opscampaign::{matrix, pct, percentile, Confusion};

/// The campaign's street: six homes, two cabinets, two cells.
pub const STREET: lab::street::Street = lab::street::Street {
    homes: 6,
    cabinets: 2,
    cells: 2,
};

/// What to run.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// The lab's name.
    pub name: String,
    /// The `tandem` executable the lab runs.
    pub exe: PathBuf,
    /// The campaign's seed (which homes, which severities, in what order).
    pub seed: u64,
    /// Faults of each fast kind (12 kinds).
    pub per_kind: u32,
    /// Seconds from onset to the ticket.
    pub ticket_s: f64,
    /// Also water ingress and reboot loops (tickets after 10 minutes).
    pub slow: bool,
}

/// One fault's result.
#[derive(Clone, Debug, Serialize)]
pub struct LabTicket {
    /// Round number.
    pub round: u32,
    /// The fault.
    pub fault: String,
    /// Where it was injected.
    pub target: String,
    /// Its severity.
    pub severity: f64,
    /// The home whose ticket is judged.
    pub home: String,
    /// The truth.
    pub truth: Location,
    /// Tandem's answer at the ticket.
    pub tandem: Location,
    /// Whom Tandem sends.
    pub tandem_dispatch: Dispatch,
    /// Tandem's fault name and rule.
    pub tandem_fault: String,
    /// The baseline's answer at the ticket.
    pub baseline: Location,
    /// Seconds from onset to Tandem's first right answer (location and
    /// dispatch), if it came before the ticket.
    pub first_right_s: Option<f64>,
    /// Cabinet faults: seconds until one incident listed all its homes.
    pub grouped_s: Option<f64>,
}

/// The campaign's results.
#[derive(Clone, Debug, Serialize)]
pub struct LabEvaluation {
    /// Seed.
    pub seed: u64,
    /// Rounds run.
    pub rounds: u32,
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// Ticket time, seconds after onset.
    pub ticket_s: f64,
    /// Tandem's confusion matrix.
    pub tandem: Confusion,
    /// The baseline's.
    pub baseline: Confusion,
    /// Wrong-technician rates.
    pub tandem_wrong_tech: f64,
    /// The baseline's.
    pub baseline_wrong_tech: f64,
    /// Unaffected homes seen not healthy while a round ran (home-polls).
    pub false_alarms: u32,
    /// Rounds that started with a home still not healthy after the wait.
    pub unclean_starts: u32,
    /// Every ticket.
    pub tickets: Vec<LabTicket>,
}

/// Where a fault goes.
#[derive(Clone, Debug)]
enum Target {
    Home(u32),
    Cabinet(u32),
    Cell(u32),
    Core,
}

#[derive(Clone, Debug)]
struct Planned {
    kind: FaultKind,
    target: Target,
    severity: f64,
}

/// A seeded stream of numbers in `[0, 1)` (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.next() * n as f64) as usize).min(n.saturating_sub(1))
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

const HOME_KINDS: [FaultKind; 6] = [
    FaultKind::InHomeWiring,
    FaultKind::MissingMicrofilter,
    FaultKind::BrokenPair,
    FaultKind::Crosstalk,
    FaultKind::PowerLoss,
    FaultKind::LanUnplugged,
];

/// The homes a target covers.
fn homes_of(t: &Target) -> Vec<u32> {
    STREET
        .homes()
        .filter(|&i| match t {
            Target::Home(h) => *h == i,
            Target::Cabinet(c) => STREET.access_of(hybrid::Link::Dsl, i) == *c,
            Target::Cell(c) => STREET.access_of(hybrid::Link::Lte, i) == *c,
            Target::Core => true,
        })
        .collect()
}

/// The rounds: per repetition, a round for each cabinet, cell and core kind
/// (the cabinet and cell ones with home faults on the other side), every
/// home kind placed once; slow kinds (with `slow`) each in a round of their
/// own at the end.
/// A fault's severity: uniform 0.3 to 0.9.
fn sev(rng: &mut Rng) -> f64 {
    0.3 + 0.6 * rng.next()
}

fn plan(spec: &LabSpec) -> Vec<Vec<Planned>> {
    let mut rng = Rng(spec.seed);
    let mut rounds = Vec::new();
    let mut line_cards = Vec::new();
    for _ in 0..spec.per_kind {
        let mut home_kinds = HOME_KINDS.to_vec();
        rng.shuffle(&mut home_kinds);
        // (kind, target, home faults with it). One home fault at most
        // beside a cabinet's or a cell's: two faulty lines of the three on
        // one card would rightly look like the card.
        let mut big: Vec<(FaultKind, Target, usize)> = vec![
            (
                FaultKind::CabinetPower,
                Target::Cabinet(1 + rng.below(2) as u32),
                1,
            ),
            (
                FaultKind::CellOutage,
                Target::Cell(1 + rng.below(2) as u32),
                1,
            ),
            (
                FaultKind::CellCongestion,
                Target::Cell(1 + rng.below(2) as u32),
                1,
            ),
            (FaultKind::HagUnreachable, Target::Core, 0),
            (FaultKind::UpstreamLoss, Target::Core, 0),
        ];
        rng.shuffle(&mut big);
        let push = |kind,
                    target: Target,
                    n_home: usize,
                    home_kinds: &mut Vec<FaultKind>,
                    rng: &mut Rng,
                    out: &mut Vec<Vec<Planned>>| {
            let covered = homes_of(&target);
            let mut free: Vec<u32> = STREET.homes().filter(|i| !covered.contains(i)).collect();
            rng.shuffle(&mut free);
            let mut round = vec![Planned {
                kind,
                target,
                severity: sev(rng),
            }];
            for &h in free.iter().take(n_home) {
                let Some(k) = home_kinds.pop() else { break };
                round.push(Planned {
                    kind: k,
                    target: Target::Home(h),
                    severity: sev(rng),
                });
            }
            out.push(round);
        };
        for (kind, target, n_home) in big {
            push(kind, target, n_home, &mut home_kinds, &mut rng, &mut rounds);
        }
        // A failing line card's errors stay in its lines' history for
        // 30 minutes: those rounds go last.
        let card = Target::Cabinet(1 + rng.below(2) as u32);
        push(
            FaultKind::LineCard,
            card,
            1,
            &mut home_kinds,
            &mut rng,
            &mut line_cards,
        );
        // The home faults left: one home on each cabinet.
        let mut round = Vec::new();
        for c in 1..=STREET.cabinets {
            let Some(k) = home_kinds.pop() else { break };
            let homes = homes_of(&Target::Cabinet(c));
            round.push(Planned {
                kind: k,
                target: Target::Home(homes[rng.below(homes.len())]),
                severity: sev(&mut rng),
            });
        }
        rounds.push(round);
    }
    rounds.extend(line_cards);
    if spec.slow {
        for kind in [FaultKind::WaterIngress, FaultKind::RebootLoop] {
            for _ in 0..spec.per_kind {
                rounds.push(vec![Planned {
                    kind,
                    target: Target::Home(1 + rng.below(STREET.homes as usize) as u32),
                    severity: sev(&mut rng),
                }]);
            }
        }
    }
    rounds
}

/// Moves a round's faults onto homes that are healthy now where it can (a
/// fault's aftermath in ops' history, an intermittent fault's ten minutes
/// of errors, must not be scored as the next fault): the cabinet or cell
/// fault to the other cabinet or cell if only that one is healthy, the
/// home faults onto healthy homes outside it, in the planned order.
fn retarget(round: &mut [Planned], healthy: &dyn Fn(u32) -> bool) {
    let ok = |t: &Target| homes_of(t).iter().all(|&h| healthy(h));
    let mut covered: Vec<u32> = Vec::new();
    let mut start = 0;
    if let Some(first) = round.first_mut() {
        let other = match first.target {
            Target::Cabinet(c) => Some(Target::Cabinet(3 - c)),
            Target::Cell(c) => Some(Target::Cell(3 - c)),
            _ => None,
        };
        if let Some(o) = other {
            if !ok(&first.target) && ok(&o) {
                first.target = o;
            }
        }
        if !matches!(first.target, Target::Home(_)) {
            covered = homes_of(&first.target);
            start = 1;
        }
    }
    let planned: Vec<u32> = round[start..]
        .iter()
        .filter_map(|p| match p.target {
            Target::Home(h) => Some(h),
            _ => None,
        })
        .collect();
    let mut candidates: Vec<u32> = planned
        .iter()
        .copied()
        .chain(STREET.homes().filter(|h| !planned.contains(h)))
        .filter(|h| !covered.contains(h))
        .collect();
    // Healthy first, the planned order kept otherwise, and each on a
    // cabinet of its own where it can be.
    candidates.sort_by_key(|&h| !healthy(h));
    let mut used: Vec<u32> = Vec::new();
    for p in &mut round[start..] {
        let cab = |h: u32| STREET.access_of(hybrid::Link::Dsl, h);
        let pick = candidates
            .iter()
            .position(|&h| !used.iter().any(|&u| cab(u) == cab(h)))
            .or((!candidates.is_empty()).then_some(0));
        if let Some(k) = pick {
            let h = candidates.remove(k);
            used.push(h);
            p.target = Target::Home(h);
        }
    }
}

/// Ops' view of one home: Tandem's location, dispatch and fault, the
/// baseline's location.
#[derive(Clone, Debug)]
struct Seen {
    location: Location,
    dispatch: Dispatch,
    fault: String,
    baseline: Location,
}

struct Api {
    name: String,
}

impl Api {
    fn call(&self, method: &str, path: &str, json: Option<&str>) -> Result<String, String> {
        let (code, body) = lab::topology::ops_call(&self.name, method, path, json)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if code != 200 {
            return Err(format!("{method} {path}: {code} {body}"));
        }
        Ok(body)
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let body = self.call("GET", path, None)?;
        serde_json::from_str(&body).map_err(|e| format!("{path}: {e}"))
    }

    /// Resolves every active incident on one of `homes`, as the technician
    /// (or the NOC) would once it is mended, with the fault's true place as
    /// the finding: ops then judges those lines from the repair on.
    fn resolve(&self, homes: &[u32], finding: &dyn Fn(u32) -> Location) -> Result<(), String> {
        for state in ["open", "dispatched"] {
            let v = self.get(&format!("/api/v1/incidents?state={state}&limit=200"))?;
            for inc in v.as_array().into_iter().flatten() {
                let on: Vec<u32> = inc["homes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| h.as_str())
                    .filter_map(|h| {
                        homes
                            .iter()
                            .copied()
                            .find(|&i| lab::street::subscriber(i) == h)
                    })
                    .collect();
                let (Some(&first), Some(id)) = (on.first(), inc["id"].as_i64()) else {
                    continue;
                };
                let body = serde_json::json!({
                    "finding": finding(first).name(),
                    "note": "bench-lab: fault cleared",
                });
                self.call(
                    "POST",
                    &format!("/api/v1/incidents/{id}/resolve"),
                    Some(&body.to_string()),
                )?;
            }
        }
        Ok(())
    }

    fn home(&self, i: u32) -> Result<Seen, String> {
        let v = self.get(&format!("/api/v1/homes/{}", lab::street::subscriber(i)))?;
        let loc = |x: &serde_json::Value| -> Location {
            x.as_str()
                .and_then(|s| Location::ALL.into_iter().find(|l| l.name() == s))
                .unwrap_or(Location::None)
        };
        let d = &v["diagnosis"];
        Ok(Seen {
            location: loc(&d["location"]),
            dispatch: loc(&d["location"]).dispatch(),
            fault: format!(
                "{} ({})",
                d["fault"].as_str().unwrap_or("?"),
                d["rule"].as_str().unwrap_or("?")
            ),
            baseline: loc(&v["baseline"]["location"]),
        })
    }

    /// Whether one active incident of cabinet `c` lists every home of it.
    fn grouped(&self, c: u32) -> bool {
        let want: Vec<String> = homes_of(&Target::Cabinet(c))
            .into_iter()
            .map(lab::street::subscriber)
            .collect();
        let group = format!("cabinet:{}", lab::street::cabinet_name(c));
        let Ok(v) = self.get("/api/v1/incidents?limit=50") else {
            return false;
        };
        v.as_array().is_some_and(|list| {
            list.iter().any(|inc| {
                let active = matches!(inc["state"].as_str(), Some("open" | "dispatched"));
                let homes: Vec<&str> = inc["homes"]
                    .as_array()
                    .map(|h| h.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                active
                    && inc["group"].as_str() == Some(group.as_str())
                    && want.iter().all(|w| homes.contains(&w.as_str()))
            })
        })
    }
}

fn inject(name: &str, p: &Planned) -> Result<(), String> {
    let mut o = lab::fault::Inject {
        severity: Some((p.severity * 100.0).round() / 100.0),
        ..Default::default()
    };
    match p.target {
        Target::Home(i) => o.home = Some(i.to_string()),
        Target::Cabinet(c) => o.cabinet = Some(lab::street::cabinet_name(c)),
        Target::Cell(c) => o.cell = Some(c.to_string()),
        Target::Core => {}
    }
    lab::fault::inject(name, p.kind, &o)
        .map(drop)
        .map_err(|e| format!("inject {}: {e}", p.kind))
}

fn target_name(t: &Target) -> String {
    match t {
        Target::Home(i) => lab::street::subscriber(*i),
        Target::Cabinet(c) => lab::street::cabinet_name(*c),
        Target::Cell(c) => lab::street::cell_id(*c),
        Target::Core => "core".into(),
    }
}

/// Builds the street, runs the campaign, tears the street down.
pub fn run(spec: &LabSpec, progress: &mut dyn FnMut(&str)) -> Result<LabEvaluation, String> {
    let wall = Instant::now();
    let _ = lab::down(&spec.name);
    let p = lab::profile::by_name("rural").ok_or("no rural profile")?;
    lab::up(&lab::UpOptions {
        name: spec.name.clone(),
        profile_name: "rural".into(),
        profile: p,
        tandem: true,
        shield: false,
        exe: spec.exe.clone(),
        street: STREET,
        mobile_budget: None,
    })
    .map_err(|e| format!("lab up: {e}"))?;
    let result = campaign(spec, wall, progress);
    let _ = lab::fault::clear(&spec.name, None);
    let _ = lab::down(&spec.name);
    result
}

fn campaign(
    spec: &LabSpec,
    wall: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<LabEvaluation, String> {
    let api = Api {
        name: spec.name.clone(),
    };
    let healthy = |api: &Api| -> bool {
        (1..=STREET.homes).all(|i| api.home(i).is_ok_and(|s| s.location == Location::None))
    };
    let wait = |api: &Api, limit: Duration| -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if healthy(api) {
                return true;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        false
    };
    progress("waiting for six healthy homes and 25 s of reference");
    if !wait(&api, Duration::from_secs(60)) {
        return Err("the street's homes are not healthy 60 s after it came up".into());
    }
    // Ops learns each line's normal from its first quiet reports.
    std::thread::sleep(Duration::from_secs(25));
    let mut ev = LabEvaluation {
        seed: spec.seed,
        rounds: 0,
        wall_s: 0.0,
        ticket_s: spec.ticket_s,
        tandem: Confusion::default(),
        baseline: Confusion::default(),
        tandem_wrong_tech: 0.0,
        baseline_wrong_tech: 0.0,
        false_alarms: 0,
        unclean_starts: 0,
        tickets: Vec::new(),
    };
    let rounds = plan(spec);
    let total = rounds.len();
    for (r, round) in rounds.into_iter().enumerate() {
        if !wait(&api, Duration::from_secs(120)) {
            ev.unclean_starts += 1;
            progress(&format!(
                "round {}: a home is still not healthy after 120 s",
                r + 1
            ));
        }
        let mut round = round;
        let health: Vec<bool> = STREET
            .homes()
            .map(|i| api.home(i).is_ok_and(|s| s.location == Location::None))
            .collect();
        retarget(&mut round, &|h| health[(h - 1) as usize]);
        let slow = round
            .iter()
            .any(|p| matches!(p.kind, FaultKind::WaterIngress | FaultKind::RebootLoop));
        let ticket_s = if slow { 600.0 } else { spec.ticket_s };
        let t0 = Instant::now();
        for p in &round {
            inject(&spec.name, p)?;
        }
        let affected: Vec<u32> = round.iter().flat_map(|p| homes_of(&p.target)).collect();
        let mut first_right: Vec<Option<f64>> = vec![None; round.len()];
        let mut grouped: Vec<Option<f64>> = vec![None; round.len()];
        loop {
            let at = t0.elapsed().as_secs_f64();
            for (k, p) in round.iter().enumerate() {
                let home = homes_of(&p.target)[0];
                let truth = p.kind.location();
                if first_right[k].is_none() {
                    if let Ok(s) = api.home(home) {
                        if s.location == truth && s.dispatch == truth.dispatch() {
                            first_right[k] = Some(at);
                        }
                    }
                }
                if let (Target::Cabinet(c), None) = (&p.target, grouped[k]) {
                    if api.grouped(*c) {
                        grouped[k] = Some(at);
                    }
                }
            }
            for i in (1..=STREET.homes).filter(|i| !affected.contains(i)) {
                if api.home(i).is_ok_and(|s| s.location != Location::None) {
                    ev.false_alarms += 1;
                }
            }
            if at >= ticket_s {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        for (k, p) in round.iter().enumerate() {
            let home = homes_of(&p.target)[0];
            let s = api.home(home)?;
            let truth = p.kind.location();
            ev.tandem.add(truth, s.location);
            ev.baseline.add(truth, s.baseline);
            let t = LabTicket {
                round: r as u32 + 1,
                fault: p.kind.name().into(),
                target: target_name(&p.target),
                severity: (p.severity * 100.0).round() / 100.0,
                home: lab::street::subscriber(home),
                truth,
                tandem: s.location,
                tandem_dispatch: s.dispatch,
                tandem_fault: s.fault,
                baseline: s.baseline,
                first_right_s: first_right[k],
                grouped_s: grouped[k],
            };
            progress(&format!(
                "round {}/{total}: {} on {} (severity {:.2}) → {} [{}], baseline {}, first right {}",
                r + 1,
                t.fault,
                t.target,
                t.severity,
                t.tandem,
                t.tandem_fault,
                t.baseline,
                t.first_right_s
                    .map_or("never".into(), |x| format!("{x:.1} s"))
            ));
            ev.tickets.push(t);
        }
        lab::fault::clear(&spec.name, None).map_err(|e| format!("clear: {e}"))?;
        let truth = |h: u32| {
            round
                .iter()
                .find(|p| homes_of(&p.target).contains(&h))
                .map_or(Location::None, |p| p.kind.location())
        };
        api.resolve(&affected, &truth)?;
        ev.rounds += 1;
    }
    let n = ev.tickets.len().max(1) as f64;
    let wrong = |f: &dyn Fn(&LabTicket) -> Location| {
        ev.tickets
            .iter()
            .filter(|t| f(t).dispatch() != t.truth.dispatch())
            .count() as f64
            / n
    };
    ev.tandem_wrong_tech = wrong(&|t| t.tandem);
    ev.baseline_wrong_tech = wrong(&|t| t.baseline);
    ev.wall_s = wall.elapsed().as_secs_f64();
    Ok(ev)
}

/// The Markdown report.
pub fn markdown(ev: &LabEvaluation, command: &str) -> String {
    let mut out = String::new();
    let mut times: Vec<f64> = ev.tickets.iter().filter_map(|t| t.first_right_s).collect();
    times.sort_by(f64::total_cmp);
    let p = |q: f64| percentile(&times, q).map_or("–".into(), |x| format!("{x:.1}"));
    let _ = writeln!(out, "# ops: diagnosis on the real lab\n");
    let _ = writeln!(out, "Reproduce (as root): `{command}`\n");
    let _ = writeln!(
        out,
        "A street of {} homes on {} cabinets and {} cells in the lab: real CPEs reporting their \
         real measurements every 2 s to a real ops; {} faults in {} rounds injected with \
         `tandem lab fault inject`, seed {}; each fault's ticket is ops' answer for its first \
         affected home {:.0} s after onset (`GET /api/v1/homes/…`: Tandem's diagnosis and the \
         rule baseline's verdict on the same history). {:.0} s of wall clock.\n",
        STREET.homes,
        STREET.cabinets,
        STREET.cells,
        ev.tickets.len(),
        ev.rounds,
        ev.seed,
        ev.ticket_s,
        ev.wall_s
    );
    let grouped: Vec<&LabTicket> = ev
        .tickets
        .iter()
        .filter(|t| t.truth == Location::Cabinet)
        .collect();
    let within = grouped
        .iter()
        .filter(|t| t.grouped_s.is_some_and(|g| g <= 60.0))
        .count();
    let _ = writeln!(
        out,
        "| faults | macro-F1 Tandem | macro-F1 baseline | wrong technician Tandem | wrong technician baseline | onset → right diagnosis p50 / p95 / max (s) | never right by the ticket | cabinet faults in one incident within 60 s | false alarms on unaffected homes (home-seconds) | rounds started unclean |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {} | {:.3} | {:.3} | {} | {} | {} / {} / {} | {} | {} of {} | {} | {} |",
        ev.tickets.len(),
        ev.tandem.macro_f1(),
        ev.baseline.macro_f1(),
        pct(ev.tandem_wrong_tech),
        pct(ev.baseline_wrong_tech),
        p(0.5),
        p(0.95),
        p(1.0),
        ev.tickets
            .iter()
            .filter(|t| t.first_right_s.is_none())
            .count(),
        within,
        grouped.len(),
        ev.false_alarms,
        ev.unclean_starts
    );
    let _ = writeln!(
        out,
        "\n| class | tickets | Tandem precision | Tandem recall | Tandem F1 | baseline F1 |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let base: Vec<_> = ev.baseline.scores();
    for c in ev.tandem.scores() {
        let b = base
            .iter()
            .find(|b| b.class == c.class)
            .map_or(0.0, |b| b.f1);
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            c.class, c.support, c.precision, c.recall, c.f1, b
        );
    }
    matrix(&mut out, "Tandem", &ev.tandem);
    matrix(&mut out, "Baseline (DLM rules)", &ev.baseline);
    let _ = writeln!(out, "\nEvery ticket\n");
    let _ = writeln!(
        out,
        "| round | fault | on | severity | home | Tandem | Tandem's fault (rule) | baseline | first right (s) | grouped (s) |"
    );
    let _ = writeln!(out, "|---:|---|---|---:|---|---|---|---|---:|---:|");
    for t in &ev.tickets {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} |",
            t.round,
            t.fault,
            t.target,
            t.severity,
            t.home,
            t.tandem,
            t.tandem_fault,
            t.baseline,
            t.first_right_s.map_or("–".into(), |x| format!("{x:.1}")),
            t.grouped_s.map_or("–".into(), |x| format!("{x:.1}"))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use street::Scope;

    #[test]
    fn the_plan_covers_every_fast_kind_on_scopes_that_do_not_overlap() {
        let spec = LabSpec {
            name: "x".into(),
            exe: PathBuf::new(),
            seed: 7,
            per_kind: 3,
            ticket_s: 45.0,
            slow: false,
        };
        let rounds = plan(&spec);
        let faults: Vec<&Planned> = rounds.iter().flatten().collect();
        assert_eq!(faults.len(), 36);
        for k in FaultKind::ALL
            .iter()
            .filter(|k| !matches!(k, FaultKind::WaterIngress | FaultKind::RebootLoop))
        {
            assert_eq!(faults.iter().filter(|p| p.kind == *k).count(), 3, "{k}");
        }
        for round in &rounds {
            let mut seen = Vec::new();
            for p in round {
                for h in homes_of(&p.target) {
                    assert!(!seen.contains(&h), "home {h} twice in {round:?}");
                    seen.push(h);
                }
                assert!(
                    matches!(p.kind.scope(), Scope::Home) == matches!(p.target, Target::Home(_))
                );
            }
        }
        for round in rounds
            .iter()
            .filter(|r| r.len() == 2 && matches!(r[0].target, Target::Home(_)))
        {
            let cabs: Vec<u32> = round
                .iter()
                .map(|p| STREET.access_of(hybrid::Link::Dsl, homes_of(&p.target)[0]))
                .collect();
            assert_ne!(cabs[0], cabs[1], "{round:?}");
        }
        assert!(rounds
            .iter()
            .rev()
            .take(3)
            .all(|r| r[0].kind == FaultKind::LineCard));
        // The same seed, the same campaign.
        assert_eq!(format!("{:?}", plan(&spec)), format!("{rounds:?}"));
        // Home 1 and 3 still unhealthy: a cabinet-1 fault moves to cabinet
        // 2, and its home faults to healthy homes outside it.
        let mut r = vec![
            Planned {
                kind: FaultKind::CabinetPower,
                target: Target::Cabinet(1),
                severity: 0.5,
            },
            Planned {
                kind: FaultKind::BrokenPair,
                target: Target::Home(2),
                severity: 0.5,
            },
            Planned {
                kind: FaultKind::Crosstalk,
                target: Target::Home(4),
                severity: 0.5,
            },
        ];
        retarget(&mut r, &|h| h != 1 && h != 3);
        assert!(matches!(r[0].target, Target::Cabinet(2)));
        assert!(matches!(r[1].target, Target::Home(5)), "{r:?}");
        assert!(
            matches!(r[2].target, Target::Home(1) | Target::Home(3)),
            "{r:?}"
        );
        assert_eq!(homes_of(&Target::Cabinet(1)), [1, 3, 5]);
        assert_eq!(homes_of(&Target::Cell(2)), [4, 5, 6]);
    }
}
