//! The example configuration in `examples/` is valid.

use std::path::Path;

#[test]
fn example_shield_toml_parses() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shield.toml");
    let c = shield::Config::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.lists.len(), 4);
    assert!(c.lists[0].allow);
    assert!(matches!(
        c.lists[1].source,
        shield::ListSource::Transfer { ref zone, .. } if zone == "phishing.rpz.example"
    ));
    assert!(c.reports.is_some());
    assert!(c.is_subscriber("10.64.1.2".parse().unwrap()));
    assert!(!c.is_subscriber("192.0.2.99".parse().unwrap()));
}
