//! The example configuration in `examples/` is valid.

use std::path::Path;

#[test]
fn example_ops_toml_parses() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ops.toml");
    let c = ops::config::Config::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_ne!(c.api_listen, c.admin_listen);
    assert_eq!(c.db, Path::new("/var/lib/tandem/ops.db"));
    assert_eq!(c.scan_interval.as_secs(), 10);
}
