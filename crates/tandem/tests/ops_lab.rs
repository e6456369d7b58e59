//! Ops in the lab: the CPE's reports reach ops over the fixed line; with
//! the line cut they keep arriving over the mobile link and say so, and
//! ops diagnoses the line (outside plant); with the line back, the reports
//! come over it again. The modems are files in the real tools' formats,
//! rewritten by the lab as the links change.

mod common;

use std::time::{Duration, Instant};

use common::Lab;
use serde_json::Value;

/// Waits until the home's view satisfies `f`; returns it.
fn home_until(lab: &Lab, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/v1/homes/{}", lab::topology::HOME_SUBSCRIBER);
    let t = Instant::now();
    loop {
        let v = lab.ops_api(&path);
        if f(&v) {
            return v;
        }
        assert!(
            t.elapsed() < timeout,
            "{what}: not within {timeout:?}; last view {v:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn link_cmd(lab: &Lab, link: &str, action: &str) {
    let (ok, out) = lab.tandem(&["lab", "link", link, action, "--name", &lab.name]);
    assert!(ok, "lab link {link} {action}: {out}");
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn reports_reach_ops_and_go_over_mobile_when_the_line_is_cut() {
    lab::require_root();
    let lab = Lab::up("ops", "rural");
    let v = home_until(
        &lab,
        "a report over the fixed line",
        Duration::from_secs(20),
        |v| v["via"] == "dsl" && v["last"]["showtime"] == true,
    );
    assert_eq!(v["cell"], lab::modem::CELL_ID, "{v:#}");
    assert_eq!(v["diagnosis"]["location"], "none", "a healthy home: {v:#}");
    // The line model's margin at the profile's rate, as the modem says it.
    let margin = v["last"]["ds_margin"].as_f64().unwrap();
    assert!((3.0..=40.0).contains(&margin), "{v:#}");

    let cut = Instant::now();
    link_cmd(&lab, "dsl", "cut");
    home_until(&lab, "a report over mobile", Duration::from_secs(20), |v| {
        v["via"] == "lte" && v["last"]["no_signal"] == true
    });
    let over_mobile = cut.elapsed();
    let v = home_until(&lab, "the line diagnosed", Duration::from_secs(20), |v| {
        v["diagnosis"]["location"] == "line"
    });
    let diagnosed = cut.elapsed();
    assert_eq!(v["diagnosis"]["dispatch"], "outside-plant", "{v:#}");
    let evidence = v["diagnosis"]["evidence"].to_string();
    assert!(!evidence.is_empty(), "{v:#}");
    eprintln!(
        "line cut: first report over mobile after {over_mobile:?}, diagnosed as line after {diagnosed:?}; evidence {evidence}"
    );

    link_cmd(&lab, "dsl", "restore");
    home_until(
        &lab,
        "reports over the line again",
        Duration::from_secs(30),
        |v| v["via"] == "dsl" && v["last"]["showtime"] == true,
    );
    // None was refused or dropped, and the CPE counted at least the three
    // ops was seen to take (over the line, over mobile, over the line
    // again; how many more depends on the pace of the run).
    let m = lab.metrics("cpe");
    for result in ["refused", "dropped"] {
        let series = format!("tandem_cpe_reports_total{{result=\"{result}\"}}");
        assert_eq!(common::metric(&m, &series), 0.0, "{series}: {m}");
    }
    let delivered = common::metric(&m, "tandem_cpe_reports_total{result=\"delivered\"}");
    assert!(delivered >= 3.0, "{delivered} delivered: {m}");
}
