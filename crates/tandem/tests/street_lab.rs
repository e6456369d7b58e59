//! The street in the lab: five homes, their lines through two cabinets and
//! their mobile links through two cells, real CPEs reporting to ops. A
//! fault of each class is injected with `tandem lab fault inject`, which
//! changes both what the modems report and the real data path; ops' API
//! must give the class and whom to send, and a cabinet outage must be one
//! incident listing its three homes. The core's two faults (the HAG
//! unreachable, its upstream failing) are told apart with the HAG's own
//! reports to ops.
//!
//! Layout (`lab status`): cab1 = homes 1, 3, 5; cab2 = homes 2, 4 (loops of
//! 0.6 and 1.4 km); cell 1
//! (0A1B2C01) = homes 1, 2, 3; cell 2 = homes 4, 5. Faults on scopes that
//! do not overlap run at the same time to keep the run short.

mod common;

use std::time::{Duration, Instant};

use common::Lab;
use serde_json::Value;

const HOMES: u32 = 5;

fn home(lab: &Lab, i: u32) -> Value {
    lab.ops_api(&format!("/api/v1/homes/home-{i}"))
}

/// What each home is diagnosed with: (location, fault, dispatch).
fn diagnoses(lab: &Lab) -> Vec<(String, String, String)> {
    (1..=HOMES)
        .map(|i| {
            let d = &home(lab, i)["diagnosis"];
            let s = |k: &str| d[k].as_str().unwrap_or("?").to_owned();
            (s("location"), s("fault"), s("dispatch"))
        })
        .collect()
}

/// Waits until `ok` holds for every home's diagnosis (index 0 = home 1);
/// returns how long it took.
fn until(
    lab: &Lab,
    what: &str,
    timeout: Duration,
    ok: impl Fn(u32, &(String, String, String)) -> bool,
) -> Duration {
    let t = Instant::now();
    loop {
        let d = diagnoses(lab);
        if d.iter().zip(1..).all(|(d, i)| ok(i, d)) {
            return t.elapsed();
        }
        if t.elapsed() > timeout {
            let views: Vec<Value> = (1..=HOMES)
                .map(|i| home(lab, i)["diagnosis"].clone())
                .collect();
            panic!("{what}: not within {timeout:?}; diagnoses {d:?}\n{views:#?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn is(d: &(String, String, String), location: &str, dispatch: &str) -> bool {
    d.0 == location && d.2 == dispatch
}

fn healthy(_: u32, d: &(String, String, String)) -> bool {
    d.0 == "none"
}

fn fault(lab: &Lab, args: &[&str]) {
    let mut a = vec!["lab", "fault"];
    a.extend(args);
    a.extend(["--name", &lab.name]);
    let (ok, out) = lab.tandem(&a);
    assert!(ok, "lab fault {args:?}: {out}");
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn a_fault_of_every_class_is_located_and_dispatched_and_a_cabinet_is_one_incident() {
    lab::require_root();
    let lab = Lab::up_with(
        "str",
        "rural",
        &[
            "--homes",
            "5",
            "--cabinets",
            "2",
            "--cells",
            "2",
            "--mobile-budget",
            "10000000000",
        ],
    );
    until(&lab, "five healthy homes", Duration::from_secs(40), healthy);
    // Ops learns each line's normal from its first ten quiet reports (20 s
    // at the lab's period): a fault before that would become the normal.
    std::thread::sleep(Duration::from_secs(25));

    // Bad input: a clear error, nothing injected.
    for (bad, says) in [
        (&["inject", "flood", "--home", "1"][..], "unknown fault"),
        (&["inject", "broken-pair", "--home", "9"], "no such home"),
        (&["inject", "broken-pair", "--cabinet", "1"], "give --home"),
        (
            &[
                "inject",
                "cabinet-power",
                "--cabinet",
                "cab1",
                "--severity",
                "2",
            ],
            "expected 0 to 1",
        ),
        (&["inject", "hag-unreachable", "--home", "1"], "no target"),
        (
            &["inject", "crosstalk", "--home", "1", "--for", "soon"],
            "--for",
        ),
        (&["clear", "42"], "no fault 42"),
    ] {
        let mut a = vec!["lab", "fault"];
        a.extend(bad);
        a.extend(["--name", &lab.name]);
        let (ok, out) = lab.tandem(&a);
        assert!(!ok && out.contains(says), "{bad:?}: {out}");
    }
    let (_, list) = lab.tandem(&["lab", "fault", "list", "--name", &lab.name]);
    assert!(list.contains("no faults"), "{list}");

    // Round 1: the cabinet (homes 1, 3, 5 lose sync), a line (home 4's
    // pair breaks), the home (home 2's wiring, on its 0.6 km loop).
    fault(&lab, &["inject", "cabinet-power", "--cabinet", "cab1"]);
    fault(&lab, &["inject", "broken-pair", "--home", "home-4"]);
    fault(
        &lab,
        &[
            "inject",
            "in-home-wiring",
            "--home",
            "2",
            "--severity",
            "0.8",
        ],
    );
    let took = until(
        &lab,
        "cabinet, line and home",
        Duration::from_secs(60),
        |i, d| match i {
            1 | 3 | 5 => is(d, "cabinet", "outside-plant"),
            4 => is(d, "line", "outside-plant"),
            _ => is(d, "home", "home-technician"),
        },
    );
    eprintln!("cabinet, line and home diagnosed in {took:?}");
    // With its line broken, home 4 reports over the mobile link.
    assert_eq!(home(&lab, 4)["via"], "lte");
    waived_while_the_line_is_down(&lab);
    let open = lab.ops_api("/api/v1/incidents?state=open");
    let cabinet: Vec<&Value> = open
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["location"] == "cabinet")
        .collect();
    assert_eq!(cabinet.len(), 1, "one cabinet incident: {open:#}");
    let mut homes: Vec<&str> = cabinet[0]["homes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    homes.sort_unstable();
    assert_eq!(homes, ["home-1", "home-3", "home-5"], "{open:#}");
    assert_eq!(cabinet[0]["group"], "cabinet:cab1");
    fault(&lab, &["clear"]);
    // The lines train again (15 s in the lab) and the homes are healthy.
    until(
        &lab,
        "healthy after round 1",
        Duration::from_secs(90),
        healthy,
    );

    grant_reaches_the_cpes(&lab);

    // Round 2: a cell (homes 4, 5 lose the mobile link), two customers
    // (home 1's LAN cable out, home 2's power off: a dying gasp).
    fault(&lab, &["inject", "cell-outage", "--cell", "2"]);
    fault(&lab, &["inject", "lan-unplugged", "--home", "1"]);
    fault(&lab, &["inject", "power-loss", "--home", "2"]);
    let took = until(
        &lab,
        "mobile and customer",
        Duration::from_secs(60),
        |i, d| match i {
            4 | 5 => is(d, "mobile", "nobody"),
            1 => d.1 == "lan-unplugged" && is(d, "customer", "nobody"),
            2 => d.1 == "power-loss" && is(d, "customer", "nobody"),
            _ => healthy(i, d),
        },
    );
    eprintln!("mobile and customer diagnosed in {took:?}");
    fault(&lab, &["clear"]);
    // Home 2's CPE starts again and its line trains.
    until(
        &lab,
        "healthy after round 2",
        Duration::from_secs(90),
        healthy,
    );

    // Round 3: the core (the HAG's service address drops everything).
    fault(&lab, &["inject", "hag-unreachable"]);
    let took = until(&lab, "core", Duration::from_secs(60), |_, d| {
        is(d, "core", "nobody")
    });
    eprintln!("core diagnosed in {took:?}");
    fault(&lab, &["clear"]);
    until(
        &lab,
        "healthy after round 3",
        Duration::from_secs(60),
        healthy,
    );

    // Round 4: the HAG's upstream resets a share of its connections. Every
    // access link is fine (the CPEs' probes pass); only the HAG's own
    // reports can say it.
    fault(&lab, &["inject", "upstream-loss", "--severity", "0.6"]);
    let took = until(&lab, "upstream", Duration::from_secs(60), |_, d| {
        d.1 == "upstream-loss" && is(d, "core", "nobody")
    });
    eprintln!("upstream loss diagnosed in {took:?}");
    fault(&lab, &["clear"]);
    // Judged on the last minute of connections.
    until(&lab, "healthy at the end", Duration::from_secs(90), healthy);
    // The HAG's reports were delivered and taken, none refused.
    let hag = lab.metrics("hag");
    assert!(
        common::metric(&hag, "tandem_hag_ops_reports_total{reason=\"delivered\"}") > 10.0,
        "{hag}"
    );
    assert_eq!(
        lab.metric_sum("hag", "tandem_hag_ops_reports_total{reason=\"refused\""),
        0.0
    );
    let ops = lab.metrics("net");
    assert!(
        common::metric(&ops, "tandem_ops_hag_reports_total{result=\"accepted\"}") > 10.0,
        "{ops}"
    );
    for bad in ["unauthenticated", "replayed", "malformed", "stale"] {
        assert_eq!(
            common::metric(
                &ops,
                &format!("tandem_ops_hag_reports_total{{result=\"{bad}\"}}")
            ),
            0.0,
            "{bad}: {ops}"
        );
    }
}

fn cpe_metric(lab: &Lab, i: u32, name: &str) -> f64 {
    common::metric(&lab.metrics(&lab::street::cpe_node(i)), name)
}

/// Incidents change policy: home 4 (line) and home 3 (cabinet) run on the
/// mobile link through no fault of their own; their CPEs are told, count
/// those bytes apart from the budget, and the HAG records them as waived.
/// Home 2's fault is in the home: not waived.
fn waived_while_the_line_is_down(lab: &Lab) {
    let t = Instant::now();
    while cpe_metric(lab, 4, "tandem_cpe_budget_waiver") != 1.0
        || cpe_metric(lab, 3, "tandem_cpe_budget_waiver") != 1.0
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "homes 3 and 4 waived"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("budget waived {:?} after the diagnosis", t.elapsed());
    assert_eq!(home(lab, 4)["policy"]["waiver"]["location"], "line");
    assert_eq!(home(lab, 3)["policy"]["waiver"]["location"], "cabinet");
    assert!(home(lab, 2)["policy"]["waiver"].is_null());
    assert_eq!(cpe_metric(lab, 2, "tandem_cpe_budget_waiver"), 0.0);
    // Home 4's LAN client keeps fetching over the mobile link: the bytes go
    // to the waived count, the budget's count does not move.
    let used = cpe_metric(lab, 4, "tandem_cpe_budget_used_bytes");
    let waived = cpe_metric(lab, 4, "tandem_cpe_budget_waived_bytes");
    std::thread::sleep(Duration::from_secs(6));
    let used2 = cpe_metric(lab, 4, "tandem_cpe_budget_used_bytes");
    let waived2 = cpe_metric(lab, 4, "tandem_cpe_budget_waived_bytes");
    assert_eq!(used2, used, "no budget charged while waived");
    assert!(waived2 > waived + 20_000.0, "waived {waived} -> {waived2}");
    // The HAG has recorded home 4's mobile bytes as waived, not billed.
    let t = Instant::now();
    while common::metric(&lab.metrics("hag"), "tandem_hag_waived_bytes_total") < 20_000.0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the HAG records waived bytes"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let cfg = lab::topology::state_dir(&lab.name).join("hag.toml");
    let (ok, usage) = lab.tandem(&[
        "hag",
        "subscriber",
        "usage",
        "home-4",
        "--config",
        &cfg.display().to_string(),
    ]);
    assert!(ok, "{usage}");
    let lte = usage
        .lines()
        .find(|l| l.starts_with("home-4") && l.contains(" lte "))
        .unwrap_or_else(|| panic!("home-4's lte usage: {usage}"));
    let cols: Vec<u64> = lte
        .split_whitespace()
        .skip(3)
        .map(|c| c.parse().unwrap())
        .collect();
    assert!(cols[2] + cols[3] > 20_000, "waived bytes recorded: {usage}");
}

/// The operator grants cabinet cab2's homes (2 and 4) extra mobile budget;
/// their CPEs raise their limit, the others do not.
fn grant_reaches_the_cpes(lab: &Lab) {
    let (code, body) = lab.ops_call(
        "POST",
        "/api/v1/grants",
        Some(r#"{"cabinet":"cab2","extra_bytes":50000000000,"hours":24,"note":"lab"}"#),
    );
    assert_eq!(code, 201, "{body}");
    let t = Instant::now();
    while cpe_metric(lab, 2, "tandem_cpe_budget_limit_bytes") != 60_000_000_000.0
        || cpe_metric(lab, 4, "tandem_cpe_budget_limit_bytes") != 60_000_000_000.0
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the grant reaches homes 2 and 4"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        cpe_metric(lab, 1, "tandem_cpe_budget_limit_bytes"),
        10_000_000_000.0
    );
    let (code, body) = lab.ops_call(
        "POST",
        "/api/v1/grants",
        Some(r#"{"cabinet":"cab7","extra_bytes":1,"hours":1}"#),
    );
    assert_eq!(code, 422, "{body}");
}
