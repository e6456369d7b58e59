//! The shield as the home's resolver in the lab: a real authority (NSD)
//! upstream, dig and curl in the home, the analysts' CLI. Needs root.

mod common;

use std::time::Duration;

use common::Lab;

fn dig(lab: &Lab, name: &str) -> String {
    lab.ok("home", &["dig", "+tries=1", "+time=3", name])
}

fn dig_short(lab: &Lab, name: &str) -> String {
    lab.ok("home", &["dig", "+short", "+tries=1", "+time=3", name])
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn home_is_protected_and_reports_go_through_the_cli() {
    lab::require_root();
    let lab = Lab::up("sh", "fast");
    // A legitimate name resolves through the shield to the authority's answer.
    assert_eq!(dig_short(&lab, "www.example.test"), "203.0.113.10");
    // A listed name (and its subtree, and a CNAME chain into it) goes to the
    // warning address, with the Extended DNS Error naming the list.
    let out = dig(&lab, "evil.example.test");
    assert!(
        out.contains("EDE: 15 (Blocked)") && out.contains("lab-phishing"),
        "{out}"
    );
    assert!(out.contains("10.67.0.80"), "{out}");
    assert_eq!(dig_short(&lab, "login.evil.example.test"), "10.67.0.80");
    assert!(dig_short(&lab, "innocent-looking.example.test").ends_with("10.67.0.80"));
    // curl of that name shows the warning page (through Tandem), in the
    // browser's language, naming the domain.
    // (The page is served with 403: the site is blocked.)
    let page = lab.ok(
        "home",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-H",
            "Accept-Language: nl-BE,nl;q=0.9",
            "http://login.evil.example.test/",
        ],
    );
    assert!(page.contains("login.evil.example.test"), "{page}");
    assert!(page.contains("lang=\"nl\""), "page not in Dutch: {page}");
    // The legitimate site is untouched.
    lab.ok(
        "home",
        &[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "http://www.example.test/",
        ],
    );

    // A citizen reports a new phishing name; an analyst confirms it with the
    // CLI; the shield blocks it within its apply interval.
    assert_eq!(
        dig_short(&lab, "phish2.example.test"),
        "",
        "NXDOMAIN at the authority"
    );
    let posted = lab.ok(
        "home",
        &[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"url":"http://www.example.test/login","comment":"fake bank page"}"#,
            "http://10.67.0.80/api/reports",
        ],
    );
    assert!(posted.contains("\"id\""), "{posted}");
    let cfg = lab.file("shield.toml");
    let (ok, list) = lab.tandem(&["shield", "reports", "list", "--config", &cfg]);
    assert!(
        ok && list.contains("www.example.test") && list.contains("pending"),
        "{list}"
    );
    let id = list.split_whitespace().next().unwrap().to_string();
    let (ok, out) = lab.tandem(&["shield", "reports", "confirm", &id, "--config", &cfg]);
    assert!(ok, "{out}");
    assert!(
        lab::wait::until(Duration::from_secs(30), || dig_short(
            &lab,
            "www.example.test"
        ) == "10.67.0.80"),
        "a confirmed report was not applied"
    );
    let (_, list) = lab.tandem(&["shield", "reports", "list", "--config", &cfg]);
    assert!(list.contains("confirmed"), "{list}");
    // A bogus id is a clear error, not a crash.
    let (ok, out) = lab.tandem(&["shield", "reports", "reject", "999999", "--config", &cfg]);
    assert!(!ok && !out.contains("panicked"), "{out}");
    // check-config names the line of an error.
    let bad = lab.file("shield-bad.toml");
    std::fs::write(
        &bad,
        "listen = [\"10.67.0.53:53\"]\nsubscriber_prefixes = 7\n",
    )
    .unwrap();
    let (ok, out) = lab.tandem(&["shield", "check-config", &bad]);
    assert!(!ok && out.contains("line 2"), "{out}");
    let (ok, out) = lab.tandem(&["shield", "check-config", &cfg]);
    assert!(ok, "{out}");
    // Counters for the operator.
    let m = lab.ok("dns", &["curl", "-sS", "http://127.0.0.1:9153/metrics"]);
    assert!(m.contains("lab-phishing"), "{m}");
}
