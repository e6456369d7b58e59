//! The lab's own commands: link changes take effect, status reports, and a
//! HAG that is gone is reported by the CPE. Needs root.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{metric, Lab, TANDEM};

/// Seconds curl needs to connect from the CPE over one link.
fn connect_secs(lab: &Lab, source: &str) -> Option<f64> {
    let out = lab.exec(
        "cpe",
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "3",
            "--interface",
            source,
            "-w",
            "%{time_connect}",
            "http://203.0.113.10:80/",
        ],
    );
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn tandem(args: &[&str]) -> std::process::Output {
    Command::new(TANDEM).args(args).output().unwrap()
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn link_set_cut_restore_and_status() {
    lab::require_root();
    let lab = Lab::up("lk", "rural");
    let dsl = "10.64.1.2";
    // Profile rural: the DSL round trip is 15 ms (connect = one round trip).
    let base = connect_secs(&lab, dsl).expect("DSL works");
    assert!((0.013..0.040).contains(&base), "DSL connect {base}");
    let out = tandem(&[
        "lab",
        "link",
        "dsl",
        "set",
        "delay=120ms",
        "--name",
        &lab.name,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lab::wait::until(Duration::from_secs(3), || connect_secs(&lab, dsl)
            .is_some_and(|s| (0.115..0.200).contains(&s))),
        "delay change not applied"
    );
    // Rate: a 1 MB download over a 2 Mbit/s line takes ≥ 3.5 s.
    let out = tandem(&[
        "lab",
        "link",
        "dsl",
        "set",
        "rate=2mbit",
        "delay=15ms",
        "--name",
        &lab.name,
    ]);
    assert!(out.status.success());
    let t = lab.ok(
        "cpe",
        &[
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "--interface",
            dsl,
            "-w",
            "%{time_total}",
            "http://203.0.113.10:80/bytes/1000000",
        ],
    );
    let secs: f64 = t.trim().parse().unwrap();
    assert!((3.5..8.0).contains(&secs), "1 MB at 2 Mbit/s took {secs} s");
    // Cut: nothing passes; restore: it works again.
    assert!(tandem(&["lab", "link", "dsl", "cut", "--name", &lab.name])
        .status
        .success());
    assert_eq!(connect_secs(&lab, dsl), None, "traffic passed a cut link");
    let status = String::from_utf8_lossy(&tandem(&["lab", "status", "--name", &lab.name]).stdout)
        .into_owned();
    assert!(status.contains("CUT"), "{status}");
    assert!(
        connect_secs(&lab, "10.64.2.2").is_some(),
        "LTE must be unaffected"
    );
    assert!(
        tandem(&["lab", "link", "dsl", "restore", "--name", &lab.name])
            .status
            .success()
    );
    assert!(lab::wait::until(Duration::from_secs(5), || connect_secs(
        &lab, dsl
    )
    .is_some()));
    // Bad input is refused with a message, not a crash.
    let out = tandem(&[
        "lab",
        "link",
        "dsl",
        "set",
        "delay=soon",
        "--name",
        &lab.name,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad value"));
    let out = tandem(&["lab", "link", "wifi", "cut", "--name", &lab.name]);
    assert!(!out.status.success());
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn cpe_reports_an_unreachable_hag() {
    lab::require_root();
    let lab = Lab::up("un", "fast");
    let pid = nix::unistd::Pid::from_raw(lab.pid("hag") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(lab::wait::until(Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }));
    let out = lab.exec(
        "home",
        &["curl", "-sS", "--max-time", "20", "http://203.0.113.10:80/"],
    );
    assert!(!out.status.success(), "a request succeeded without a HAG");
    let cpe = lab.metrics("cpe");
    let unreachable: f64 = cpe
        .lines()
        .filter(|l| l.starts_with("tandem_cpe_hag_unreachable_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(unreachable >= 1.0, "{cpe}");
    assert_eq!(metric(&cpe, "tandem_cpe_hag_reachable"), 0.0, "{cpe}");
    assert!(lab.log("cpe.log").contains("HAG unreachable"));
}
