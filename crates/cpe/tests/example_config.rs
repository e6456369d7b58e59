//! The example configuration in `examples/` is valid.

use std::path::Path;

#[test]
fn example_cpe_toml_parses() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cpe.toml");
    let c = cpe::Config::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_ne!(c.dsl.address, c.lte.address);
    assert_eq!(c.link_of(c.lte.address), Some(hybrid::Link::Lte));
    assert_eq!(c.wan(hybrid::Link::Dsl), &c.dsl);
}
