//! Every example configuration parses; a broken one is refused with its line.

use std::process::Command;

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

/// Runs `tandem ARGS`: whether it succeeded, and stdout + stderr.
fn tandem(args: &[&str]) -> (bool, String) {
    let out = Command::new(TANDEM).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn check(part: &str, file: &str) -> (bool, String) {
    tandem(&[part, "check-config", file])
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

#[test]
fn ops_tls_init_makes_files_check_config_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tls = dir.join("tls");
    let tls_s = tls.to_str().unwrap();
    let (ok, out) = tandem(&[
        "ops",
        "tls-init",
        "--dir",
        tls_s,
        "--name",
        "ops.example.net",
        "--name",
        "192.0.2.80",
    ]);
    assert!(ok && out.contains("new CA"), "{out}");
    let (ok, out) = tandem(&[
        "ops",
        "tls-init",
        "--dir",
        tls_s,
        "--name",
        "ops.example.net",
    ]);
    assert!(ok && out.contains("CA kept"), "{out}");
    let (ok, out) = tandem(&["ops", "tls-init", "--dir", tls_s, "--name", "not a name"]);
    assert!(!ok && out.contains("not a DNS name"), "{out}");
    std::fs::write(
        dir.join("homes.csv"),
        "subscriber,cabinet,card,cell\nh0,cab0,0,c1\n",
    )
    .unwrap();
    let conf = |key: &str| {
        format!(
            "[api]\nlisten = \"127.0.0.1:8470\"\ntls_cert = \"tls/ops.pem\"\ntls_key = \"{key}\"\n\
             [data]\ndb = \"ops.db\"\ninventory = \"homes.csv\"\n"
        )
    };
    let f = dir.join("ops.toml");
    std::fs::write(&f, conf("tls/ops.key")).unwrap();
    let (ok, out) = check("ops", f.to_str().unwrap());
    assert!(ok && out.contains("TLS"), "{out}");
    // The CA's key is not the certificate's: named, refused.
    std::fs::write(&f, conf("tls/ca.key")).unwrap();
    let (ok, out) = check("ops", f.to_str().unwrap());
    assert!(!ok && out.contains("does not fit"), "{out}");
}
