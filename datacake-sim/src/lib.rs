//! Deterministic whole-cluster simulation: N real Datacake nodes in one turmoil world, a fault
//! schedule drawn from a seed, a workload per extension, and checkers that judge the recorded
//! history. See the crate README for the faults, the checkers and what is (and is not)
//! deterministic.
#![forbid(unsafe_code)]

pub mod ec;
pub mod membership;
pub mod raft;
pub mod report;
pub mod schedule;
pub mod storage;
pub mod world;

pub use report::{run_seeds, Outcome};

/// A workload: runs one seed.
pub type Workload = fn(u64) -> Outcome;

/// Every workload, by name.
pub const WORKLOADS: &[(&str, Workload)] = &[
    ("ec", ec::run),
    ("raft", raft::run),
    ("membership", membership::run),
];

/// The workload called `name`.
pub fn workload(name: &str) -> Option<Workload> {
    WORKLOADS.iter().find(|(n, _)| *n == name).map(|(_, w)| *w)
}

/// The fault schedule workload `name` draws for `seed`.
pub fn schedule_of(name: &str, seed: u64) -> schedule::Schedule {
    let config = match name {
        "raft" => return raft::schedule(seed),
        "ec" => ec::EcConfig::default().schedule,
        "membership" => membership::schedule_config(),
        _ => schedule::ScheduleConfig::default(),
    };
    schedule::Schedule::draw(seed, &config)
}
