//! The membership workload over many seeds.

use datacake_sim::membership;

mod common;

#[test]
fn membership_invariants_hold_over_the_seeds() {
    common::run_seeds("membership", membership::run);
}
