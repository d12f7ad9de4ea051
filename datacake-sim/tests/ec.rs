//! The eventual-consistency workload over many seeds.

mod common;

#[test]
fn ec_invariants_hold_over_the_seeds() {
    common::run_seeds("ec");
}
