//! What a run found.

use std::fmt;

/// The result of one seed of one workload.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The workload's name (`ec`, `raft`, `membership`).
    pub workload: &'static str,
    /// The seed.
    pub seed: u64,
    /// Nodes in the run.
    pub nodes: usize,
    /// Faults injected.
    pub faults: usize,
    /// Operations the workload completed (acknowledged or failed).
    pub operations: usize,
    /// What the checkers found wrong, one line each; empty if the run passed.
    pub violations: Vec<String>,
}

impl Outcome {
    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that runs this seed again.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p benchmarks -- --suite sim --workload {} --seed {}",
            self.workload, self.seed
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seed {}: {} nodes, {} faults, {} operations",
            self.workload, self.seed, self.nodes, self.faults, self.operations
        )?;
        if self.passed() {
            return write!(f, ", passed");
        }
        write!(f, ", {} violations:", self.violations.len())?;
        for violation in &self.violations {
            write!(f, "\n  - {violation}")?;
        }
        write!(f, "\n  replay: {}", self.replay_command())
    }
}
