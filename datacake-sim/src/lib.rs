//! Deterministic whole-cluster simulation: N real Datacake nodes in one turmoil world, a fault
//! schedule drawn from a seed, a workload per extension, and checkers that judge the recorded
//! history.
#![allow(missing_docs)]

pub mod raft;
pub mod report;
pub mod schedule;
pub mod world;

pub use report::Outcome;
