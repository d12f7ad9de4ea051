//! The membership workload over many seeds.

mod common;

#[test]
fn membership_invariants_hold_over_the_seeds() {
    common::run_seeds("membership");
}
