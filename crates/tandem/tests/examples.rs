//! Every example configuration parses; a broken one is refused with its line.

use std::process::Command;

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

fn check(part: &str, file: &str) -> (bool, String) {
    let out = Command::new(TANDEM)
        .args([part, "check-config", file])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn examples_are_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    for (part, file) in [("hag", "hag.toml"), ("cpe", "cpe.toml")] {
        let (ok, out) = check(part, &format!("{root}/{file}"));
        assert!(ok, "{file}: {out}");
        assert!(out.contains("OK"), "{out}");
    }
}

#[test]
fn broken_config_names_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let f = dir.join("hag.toml");
    std::fs::write(
        &f,
        "listen = \"10.66.0.1:5124\"\nsubscriber_prefixes = [\"10.64.0.0/16\"]\n[timeouts]\nheader_ms = \"soon\"\n",
    )
    .unwrap();
    let (ok, out) = check("hag", f.to_str().unwrap());
    assert!(!ok);
    assert!(out.contains("line 4"), "{out}");
    let f = dir.join("cpe.toml");
    std::fs::write(&f, "lan_interface = \"lan0\"\n").unwrap();
    let (ok, out) = check("cpe", f.to_str().unwrap());
    assert!(!ok);
    assert!(out.contains("missing field"), "{out}");
}
