//! Faults in the lab's street (`tandem lab fault inject|clear|list`) and
//! the street emulator (`tandem lab street`) that makes them real.
//!
//! A fault is a line in `faults.toml` in the lab's state directory: its kind
//! ([`street::FaultKind`]), what it hits (a home, a cabinet or one of its
//! line cards, a cell, or the core), a severity, when it began and, with
//! `--for`, when it ends. The emulator reads the faults and the lab's state
//! every second and, for every home, runs the fault's [`street::effect`]
//! through the home's [`street::modem::Modem`] (the line model), then:
//! - writes what the modems report (`ubus call dsl metrics` and `mmcli`
//!   formats, read by the CPE's drivers);
//! - shapes the line at the modem's trained rate, takes it down while the
//!   modem has no sync, and gives the line's delay queues the loss its
//!   errors cause (and a failing line card's);
//! - takes the mobile link down for a cell outage, adds delay and loss for
//!   a congested cell;
//! - takes the CPE's LAN port down (cable unplugged); stops the CPE
//!   (`SIGPWR`, so it sends its dying gasp, then `SIGKILL` 1.5 s later) on
//!   power loss, kills it and starts it again in a reboot loop, and starts
//!   it again when power comes back;
//! - in the core, drops everything sent to the HAG's service address (HAG
//!   unreachable) or resets a share of the HAG's connections to the
//!   internet (upstream loss), with iptables in the HAG's node.
//!
//! So the CPE's own measurements (probes, link state, LAN carrier) agree
//! with what its modems say. It also runs each home's LAN client: a small
//! download from the origin every two seconds from the home's namespace,
//! the traffic whose connections the HAG makes upstream.
//!
//! Modems train in [`TRAIN_S`] in the lab (real VDSL2 training takes 30 to
//! 60 s; the lab's is shorter to keep runs short). A line that `lab link`
//! cuts or restores by hand is left to it: the modem only follows (no
//! signal while cut, back in sync at once on restore).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hybrid::Link;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use street::modem::{Line, Modem};
use street::{Effect, FaultKind};

use crate::emu::{self, Impairment};
use crate::net::{self, Step};
use crate::street::{self as st, Scope, Street};
use crate::topology::{self, addr, State};
use crate::LabError;

/// Seconds a lab modem takes to train.
pub const TRAIN_S: f64 = 15.0;

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Its number in this lab.
    pub id: u32,
    /// The kind.
    pub kind: FaultKind,
    /// The home it hits (home faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<u32>,
    /// The cabinet it hits (cabinet faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cabinet: Option<u32>,
    /// The line card of the cabinet (a failing card; every card if none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<u32>,
    /// The cell it hits (mobile faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<u32>,
    /// 0 to 1.
    pub severity: f64,
    /// Onset, Unix milliseconds.
    pub since_ms: u64,
    /// End, Unix milliseconds (`--for`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// Fixes the fault's own schedule (when a phone rings).
    pub seed: u64,
}

impl Fault {
    /// Whether it is in force at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        now_ms >= self.since_ms && self.until_ms.is_none_or(|u| now_ms < u)
    }

    /// Whether it hits home `i` of `street`.
    pub fn hits(&self, street: &Street, i: u32) -> bool {
        match self.kind.scope() {
            street::Scope::Home => self.home == Some(i),
            street::Scope::Cabinet => {
                self.cabinet == Some(street.access_of(Link::Dsl, i))
                    && self.card.is_none_or(|c| c == street.card(i))
            }
            street::Scope::Cell => self.cell == Some(street.access_of(Link::Lte, i)),
            street::Scope::Core => false,
        }
    }

    /// What it does at `now_ms`.
    pub fn effect(&self, now_ms: u64) -> Effect {
        let elapsed = now_ms.saturating_sub(self.since_ms) as f64 / 1000.0;
        street::effect(self.kind, self.severity, elapsed, self.seed)
    }

    /// The fault in words: `3 broken-pair on home-2, severity 0.5`.
    pub fn describe(&self) -> String {
        let on = match self.kind.scope() {
            street::Scope::Home => st::subscriber(self.home.unwrap_or(0)),
            street::Scope::Cabinet => match self.card {
                Some(c) => format!("{} card {c}", st::cabinet_name(self.cabinet.unwrap_or(0))),
                None => st::cabinet_name(self.cabinet.unwrap_or(0)),
            },
            street::Scope::Cell => format!("cell{}", self.cell.unwrap_or(0)),
            street::Scope::Core => "the core".into(),
        };
        let until = match self.until_ms {
            Some(u) => format!(", for {} s", u.saturating_sub(self.since_ms) / 1000),
            None => String::new(),
        };
        format!(
            "{} {} on {on}, severity {}{until}",
            self.id, self.kind, self.severity
        )
    }
}

/// The lab's faults file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Faults {
    /// The next fault's number.
    #[serde(default)]
    pub next_id: u32,
    /// The faults, injected and not cleared (expired ones included).
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
}

impl Faults {
    /// Home `i`'s effect at `now_ms`: every active fault that hits it, and
    /// the core's.
    pub fn effect_on(&self, street: &Street, i: u32, now_ms: u64) -> Effect {
        self.faults
            .iter()
            .filter(|f| {
                f.active(now_ms) && (f.hits(street, i) || f.kind.scope() == street::Scope::Core)
            })
            .fold(Effect::default(), |e, f| e.and(f.effect(now_ms)))
    }

    /// The core's effect at `now_ms`.
    pub fn core(&self, now_ms: u64) -> Effect {
        self.faults
            .iter()
            .filter(|f| f.active(now_ms) && f.kind.scope() == street::Scope::Core)
            .fold(Effect::default(), |e, f| e.and(f.effect(now_ms)))
    }
}

fn faults_path(name: &str) -> PathBuf {
    topology::state_dir(name).join("faults.toml")
}

/// Reads a lab's faults (none if the file is not there).
pub fn load(name: &str) -> Result<Faults, LabError> {
    match std::fs::read_to_string(faults_path(name)) {
        Ok(t) => toml::from_str(&t).map_err(|e| LabError::State(format!("faults.toml: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Faults::default()),
        Err(e) => Err(LabError::Io(e)),
    }
}

fn save(name: &str, f: &Faults) -> Result<(), LabError> {
    let text = toml::to_string(f).map_err(|e| LabError::State(e.to_string()))?;
    topology::write_atomic(&faults_path(name), &text)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What `lab fault inject` was asked.
#[derive(Clone, Debug, Default)]
pub struct Inject {
    /// `--home`.
    pub home: Option<String>,
    /// `--cabinet`.
    pub cabinet: Option<String>,
    /// `--card` (with `--cabinet`).
    pub card: Option<u32>,
    /// `--cell`.
    pub cell: Option<String>,
    /// `--severity`, 0 to 1 (default 0.5).
    pub severity: Option<f64>,
    /// `--for`, seconds.
    pub for_s: Option<f64>,
}

/// Injects a fault into a running lab; the emulator makes it real within a
/// second.
pub fn inject(name: &str, kind: FaultKind, o: &Inject) -> Result<Fault, LabError> {
    let _lock = topology::lock(name)?;
    let state = topology::load_state(name)?;
    let street = state.street;
    let severity = o.severity.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&severity) {
        return Err(LabError::Invalid(format!(
            "severity {severity}: expected 0 to 1"
        )));
    }
    if let Some(d) = o.for_s {
        if !(d > 0.0 && d <= 7.0 * 86_400.0) {
            return Err(LabError::Invalid(format!(
                "--for {d} s: expected more than 0 and at most 7 days"
            )));
        }
    }
    let want = |what: &str| {
        LabError::Invalid(format!(
            "{kind} hits {what}: give {}",
            match kind.scope() {
                street::Scope::Home => "--home H",
                street::Scope::Cabinet => "--cabinet C [--card N]",
                street::Scope::Cell => "--cell X",
                street::Scope::Core => "no target",
            }
        ))
    };
    let targets = [&o.home, &o.cabinet, &o.cell]
        .iter()
        .filter(|t| t.is_some())
        .count();
    let mut f = Fault {
        id: 0,
        kind,
        home: None,
        cabinet: None,
        card: None,
        cell: None,
        severity,
        since_ms: now_ms(),
        until_ms: None,
        seed: 0,
    };
    let one = targets == 1;
    match kind.scope() {
        street::Scope::Home => match (&o.home, one) {
            (Some(h), true) => f.home = Some(street.parse_target(Scope::Home, h)?),
            _ => return Err(want("one home")),
        },
        street::Scope::Cabinet => match (&o.cabinet, one) {
            (Some(c), true) => {
                let j = street.parse_target(Scope::Cabinet, c)?;
                if let Some(card) = o.card {
                    let cards = street
                        .homes_on(Link::Dsl, j)
                        .iter()
                        .map(|&i| street.card(i))
                        .max()
                        .unwrap_or(0);
                    if card > cards {
                        return Err(LabError::Invalid(format!(
                            "card {card}: {} has cards 0 to {cards}",
                            st::cabinet_name(j)
                        )));
                    }
                }
                f.cabinet = Some(j);
                f.card = o.card;
            }
            _ => return Err(want("one cabinet")),
        },
        street::Scope::Cell => match (&o.cell, one) {
            (Some(c), true) => f.cell = Some(street.parse_target(Scope::Cell, c)?),
            _ => return Err(want("one cell")),
        },
        street::Scope::Core => {
            if targets > 0 {
                return Err(want("the core"));
            }
        }
    }
    if o.card.is_some() && f.cabinet.is_none() {
        return Err(LabError::Invalid("--card goes with --cabinet".into()));
    }
    let mut all = load(name)?;
    all.next_id = all.next_id.max(1);
    f.id = all.next_id;
    all.next_id += 1;
    f.seed = f.since_ms ^ u64::from(f.id).wrapping_mul(0x9E37_79B9);
    f.until_ms = o.for_s.map(|d| f.since_ms + (d * 1000.0) as u64);
    all.faults.push(f.clone());
    save(name, &all)?;
    Ok(f)
}

/// Clears fault `id`, or every fault; returns those cleared.
pub fn clear(name: &str, id: Option<u32>) -> Result<Vec<Fault>, LabError> {
    let _lock = topology::lock(name)?;
    topology::load_state(name)?;
    let mut all = load(name)?;
    let (gone, kept): (Vec<Fault>, Vec<Fault>) = all
        .faults
        .into_iter()
        .partition(|f| id.is_none_or(|id| f.id == id));
    if let (Some(id), true) = (id, gone.is_empty()) {
        return Err(LabError::Invalid(format!("no fault {id} in this lab")));
    }
    all.faults = kept;
    save(name, &all)?;
    Ok(gone)
}

/// The faults in words, active and ended.
pub fn list(name: &str) -> Result<String, LabError> {
    topology::load_state(name)?;
    let all = load(name)?;
    let now = now_ms();
    let mut out = String::new();
    for f in &all.faults {
        let state = if f.active(now) { "active" } else { "ended" };
        out += &format!("{} ({state})\n", f.describe());
    }
    if out.is_empty() {
        out = "no faults\n".into();
    }
    Ok(out)
}

/// What the emulator last made real for one home.
#[derive(Debug)]
struct HomeSim {
    modem: Modem,
    cap: (u64, u64),
    rate: (f64, f64),
    dsl_up: bool,
    lte_up: bool,
    lan_up: bool,
    /// The CPE is stopped (power loss, a restart): since when, and whether
    /// it is still to be killed after its dying gasp.
    cpe_off: bool,
    kill_at: Option<Instant>,
    manual_cut: bool,
}

/// Rules in the HAG's node the core's faults set.
#[derive(Debug, Default)]
struct Core {
    hag_dropped: bool,
    upstream_reset: Option<u32>,
}

fn line(i: u32, cap: (u64, u64)) -> Line {
    Line {
        pair: st::pair(i),
        cap_kbps: (cap.0 as f64, cap.1 as f64),
        train_s: TRAIN_S,
    }
}

/// The street emulator (`tandem lab street`): every second, until the
/// lab's state is gone (`lab down`) or SIGTERM.
pub fn run(name: &str) -> Result<(), LabError> {
    let dir = topology::state_dir(name);
    let exe = std::env::current_exe().map_err(LabError::Io)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(now_ms());
    let start = Instant::now();
    let mut sims: BTreeMap<u32, HomeSim> = BTreeMap::new();
    let mut core = Core::default();
    let mut controls: BTreeMap<String, String> = BTreeMap::new();
    let mut clients: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let mut tick: u64 = 0;
    loop {
        let state = match topology::load_state(name) {
            Ok(s) => s,
            Err(_) if !dir.exists() => return Ok(()),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let faults = load(name).unwrap_or_else(|e| {
            tracing::warn!("{e}");
            Faults::default()
        });
        let now = now_ms();
        let t = start.elapsed().as_secs_f64();
        let street = state.street;
        let mut impairments: BTreeMap<(Link, u32), Vec<(u16, Impairment)>> = BTreeMap::new();
        for i in street.homes() {
            let mut e = faults.effect_on(&street, i, now);
            let manual = i == 1 && state.dsl_cut;
            e.line.cut |= manual;
            let base = state.line_shape(Link::Dsl, i);
            let cap = (base.down_kbit, base.up_kbit);
            let sim = sims.entry(i).or_insert_with(|| {
                let mut m = Modem::default();
                m.resync(&line(i, cap), &e.line, t);
                HomeSim {
                    modem: m,
                    cap,
                    rate: (cap.0 as f64, cap.1 as f64),
                    dsl_up: true,
                    lte_up: true,
                    lan_up: true,
                    cpe_off: false,
                    kill_at: None,
                    manual_cut: false,
                }
            });
            if let Err(err) = step_home(name, &exe, &state, i, sim, &e, manual, cap, t, &mut rng) {
                tracing::warn!(home = i, "{err}");
            }
            // The line's and the mobile link's queues: base shape and the
            // fault's loss and delay.
            let lte = state.line_shape(Link::Lte, i);
            let dsl_loss = (base.loss_pct + e.dsl_loss_pct + sim.modem.crc_loss_pct()).min(100.0);
            let lte_loss = (lte.loss_pct + e.lte_loss_pct).min(100.0);
            for (l, shape, extra_ms, loss) in [
                (Link::Dsl, base, 0.0, dsl_loss),
                (Link::Lte, lte, e.lte_extra_rtt_ms, lte_loss),
            ] {
                let imp = Impairment {
                    delay_ms: (shape.rtt_ms + extra_ms) / 2.0,
                    jitter_ms: shape.jitter_ms,
                    // To a thousandth of a percent: the emulator's resolution.
                    loss_pct: (loss * 1000.0).round() / 1000.0,
                };
                let p = street.port(l, i);
                let q = u16::try_from(2 * p + 1).unwrap_or(u16::MAX);
                impairments
                    .entry((l, street.access_of(l, i)))
                    .or_default()
                    .extend([(q, imp), (q + 1, imp)]);
            }
        }
        for ((l, j), entries) in impairments {
            let node = st::access_node(l, j);
            let text = format!("{entries:?}");
            if controls.get(&node) != Some(&text) {
                match emu::write_control(&topology::control_path(name, &node), &entries) {
                    Ok(()) => {
                        controls.insert(node, text);
                    }
                    Err(e) => tracing::warn!("{node}: {e}"),
                }
            }
        }
        if let Err(e) = step_core(name, &mut core, &faults.core(now)) {
            tracing::warn!("core: {e}");
        }
        // The LAN clients, every two seconds, one request per home at a time.
        if street.is_street() && tick % 2 == 0 {
            clients.retain(|h| !h.is_finished());
            if clients.is_empty() {
                for i in street.homes() {
                    let home = topology::ns(name, &st::home_node(i));
                    clients.push(std::thread::spawn(move || {
                        let origin = SocketAddr::from((addr::ORIGIN, topology::ORIGIN_PORT));
                        let _ = crate::netns::http_request(
                            &home,
                            origin,
                            "GET",
                            "/bytes/16384",
                            None,
                            None,
                            Duration::from_secs(3),
                        );
                    }));
                }
            }
        }
        tick += 1;
        std::thread::sleep(Duration::from_secs(1).saturating_sub(Duration::from_millis(
            (now_ms().saturating_sub(now)).min(1000),
        )));
    }
}

/// One home's second: its CPE's power, its modem, its links and LAN port,
/// its modems' files.
#[allow(clippy::too_many_arguments)]
fn step_home(
    name: &str,
    exe: &Path,
    state: &State,
    i: u32,
    sim: &mut HomeSim,
    e: &Effect,
    manual: bool,
    cap: (u64, u64),
    t: f64,
    rng: &mut rand::rngs::StdRng,
) -> Result<(), LabError> {
    let street = state.street;
    let n = |node: &str| topology::ns(name, node);
    let role = st::cpe_node(i);
    // Power and restarts: the CPE (and its modems) stop, and start again.
    let off = e.unpowered || e.rebooting;
    if off && !sim.cpe_off {
        sim.cpe_off = true;
        let sig = if e.unpowered {
            nix::sys::signal::Signal::SIGPWR
        } else {
            nix::sys::signal::Signal::SIGKILL
        };
        topology::signal_role(state, &role, sig);
        sim.kill_at = e
            .unpowered
            .then(|| Instant::now() + Duration::from_millis(1500));
    }
    if let Some(at) = sim.kill_at {
        if Instant::now() >= at {
            let st = topology::load_state(name)?;
            topology::signal_role(&st, &role, nix::sys::signal::Signal::SIGKILL);
            sim.kill_at = None;
        }
    }
    if !off && sim.cpe_off && sim.kill_at.is_none() {
        topology::restart_cpe(name, exe, i)?;
        sim.cpe_off = false;
        sim.modem.restart(t, TRAIN_S);
    }
    let l = line(i, cap);
    if cap != sim.cap {
        // `lab link set`: the line trains at its new tier at once.
        sim.cap = cap;
        sim.modem.resync(&l, &e.line, t);
    }
    if sim.manual_cut && !manual {
        // `lab link restore`: back in sync at once.
        sim.modem.resync(&l, &e.line, t);
    }
    sim.manual_cut = manual;
    if !off {
        sim.modem.step(&l, t, 1.0, e, false, rng);
    }
    let (cab, cell) = (
        st::access_node(Link::Dsl, street.access_of(Link::Dsl, i)),
        st::access_node(Link::Lte, street.access_of(Link::Lte, i)),
    );
    let (dsl_port, lte_port) = (
        st::port_dev(street.port(Link::Dsl, i)),
        st::port_dev(street.port(Link::Lte, i)),
    );
    // Powered: on, or still sending its dying gasp.
    let powered = !off || sim.kill_at.is_some();
    // The fixed line: in sync or not, at the trained rate.
    let dsl_up = powered && (off || sim.modem.in_showtime());
    if !manual && dsl_up != sim.dsl_up {
        set_dev(&n(&cab), &dsl_port, dsl_up)?;
        if dsl_up {
            topology::restore_cpe_routes(name, &street, i, Link::Dsl);
        }
        sim.dsl_up = dsl_up;
    }
    let rate = sim.modem.trained();
    if dsl_up && rate != sim.rate {
        net::apply(&n(&cab), vec![topology::shape(&dsl_port, rate.0 as u64)])?;
        let (node, dev) = topology::upload_shaper(&street, Link::Dsl, i);
        net::apply(&n(&node), vec![topology::shape(&dev, rate.1 as u64)])?;
        sim.rate = rate;
    }
    // The mobile link.
    let lte_manual = i == 1 && state.lte_cut;
    let lte_up = powered && !e.lte_down;
    if !lte_manual && lte_up != sim.lte_up {
        set_dev(&n(&cell), &lte_port, lte_up)?;
        if lte_up {
            topology::restore_cpe_routes(name, &street, i, Link::Lte);
        }
        sim.lte_up = lte_up;
    }
    // The LAN cable: unplugged at the home's device, so the CPE's port
    // loses its carrier (and stays up, as a real port does).
    let lan_up = !e.lan_down;
    if lan_up != sim.lan_up {
        set_dev(&n(&st::home_node(i)), "eth0", lan_up)?;
        if lan_up {
            topology::restore_home_routes(name, i);
        }
        sim.lan_up = lan_up;
    }
    // What the modems say (nothing while the CPE is off: no one reads).
    if !off {
        let dir = topology::state_dir(name);
        if let Some(r) = sim.modem.reading(t, 0.0) {
            topology::write_atomic(&crate::modem::dsl_path(&dir, i), &modem::ubus::render(&r))?;
        }
        let k = street.access_of(Link::Lte, i);
        let radio = crate::modem::radio(!lte_up || lte_manual, &st::cell_id(k), e.sinr_drop_db);
        topology::write_atomic(
            &crate::modem::lte_path(&dir, i),
            &modem::mmcli::render(&radio),
        )?;
    }
    Ok(())
}

fn set_dev(ns: &str, dev: &str, up: bool) -> Result<(), LabError> {
    net::apply(
        ns,
        vec![if up {
            Step::up(dev)
        } else {
            Step::Down(dev.to_owned())
        }],
    )
}

/// The HAG's rules for the core's faults (iptables in its node, as for the
/// delay queues: no typed crate).
fn step_core(name: &str, core: &mut Core, e: &Effect) -> Result<(), LabError> {
    let hag = topology::ns(name, "hag");
    let service = addr::HAG_SERVICE.to_string();
    let drop_rule = |op: &str| -> Vec<String> {
        [op, "INPUT", "-d", &service, "-j", "DROP"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    };
    if e.hag_down != core.hag_dropped {
        let args = drop_rule(if e.hag_down { "-I" } else { "-D" });
        iptables(&hag, &args)?;
        core.hag_dropped = e.hag_down;
    }
    // Per mille, so a change of severity is a change of rule.
    let want =
        (e.upstream_error_ratio > 0.0).then(|| (e.upstream_error_ratio * 1000.0).round() as u32);
    if want != core.upstream_reset {
        if let Some(old) = core.upstream_reset {
            iptables(&hag, &upstream_rule("-D", old))?;
        }
        if let Some(new) = want {
            iptables(&hag, &upstream_rule("-I", new))?;
        }
        core.upstream_reset = want;
    }
    Ok(())
}

/// Resets `per_mille` of the HAG's new connections to the origin.
fn upstream_rule(op: &str, per_mille: u32) -> Vec<String> {
    let p = format!("{:.3}", f64::from(per_mille) / 1000.0);
    let origin: Ipv4Addr = addr::ORIGIN;
    [
        op,
        "OUTPUT",
        "-o",
        "net0",
        "-d",
        &origin.to_string(),
        "-p",
        "tcp",
        "--syn",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        &p,
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn iptables(ns: &str, args: &[String]) -> Result<(), LabError> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::cmd::run_in(ns, "iptables", &a).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: FaultKind) -> Fault {
        Fault {
            id: 1,
            kind,
            home: None,
            cabinet: None,
            card: None,
            cell: None,
            severity: 0.5,
            since_ms: 1_000,
            until_ms: Some(61_000),
            seed: 1,
        }
    }

    #[test]
    fn a_fault_hits_what_it_names_for_as_long_as_it_lasts() {
        let street = Street {
            homes: 6,
            cabinets: 2,
            cells: 2,
        };
        let mut cab = fault(FaultKind::CabinetPower);
        cab.cabinet = Some(1);
        let mut cell = fault(FaultKind::CellOutage);
        cell.cell = Some(2);
        let mut home = fault(FaultKind::BrokenPair);
        home.home = Some(2);
        let core = fault(FaultKind::HagUnreachable);
        let all = Faults {
            next_id: 5,
            faults: vec![cab, cell, home, core],
        };
        let hit = |i: u32, at: u64| all.effect_on(&street, i, at);
        assert!(hit(1, 2_000).line.cut && hit(5, 2_000).line.cut);
        assert!(hit(2, 2_000).line.cut, "its own broken pair");
        assert!(!hit(4, 2_000).line.cut && hit(4, 2_000).lte_down);
        assert!(hit(6, 2_000).hag_down && all.core(2_000).hag_down);
        // Before and after.
        assert_eq!(hit(1, 500), Effect::default());
        assert_eq!(hit(1, 61_000), Effect::default());
        // A card of a cabinet: only its lines.
        let mut card = fault(FaultKind::LineCard);
        card.cabinet = Some(2);
        card.card = Some(1);
        assert!(!card.hits(&street, 2), "card 0");
        card.card = Some(0);
        assert!(card.hits(&street, 2) && !card.hits(&street, 1));
        let text = toml::to_string(&all).unwrap();
        let back: Faults = toml::from_str(&text).unwrap();
        assert_eq!(back.faults, all.faults);
        assert!(all.faults[0].describe().contains("cabinet-power on cab1"));
    }

    #[test]
    fn the_upstream_rule_is_removed_as_it_was_added() {
        let add = upstream_rule("-I", 300);
        let del = upstream_rule("-D", 300);
        assert_eq!(add[1..], del[1..]);
        assert!(add.contains(&"0.300".to_owned()));
    }
}
