//! The harness can fail: a replica that acknowledges deletes without storing them is caught
//! within a few seeds.

use datacake_sim::ec::{self, EcConfig};

#[test]
fn a_replica_that_skips_deletes_is_caught_within_a_few_seeds() {
    let config = EcConfig {
        broken_node: Some(2),
        ..EcConfig::default()
    };
    let caught = (0..5)
        .map(|seed| ec::run_with(seed, &config))
        .find(|o| !o.passed());
    let outcome = caught.expect("five seeds with a broken replica all passed");
    eprintln!("{outcome}");
    assert!(
        outcome
            .violations
            .iter()
            .any(|v| v.contains("node 2") || v.contains("undone")),
        "{outcome}"
    );
}
