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
    /// The outcome of a run of `workload` that panicked with `message`.
    pub fn panicked(workload: &'static str, seed: u64, message: &str) -> Self {
        Self {
            workload,
            seed,
            nodes: 0,
            faults: 0,
            operations: 0,
            violations: vec![format!("panicked: {message}")],
        }
    }

    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that runs this seed again.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p datacake-sim -- --workload {} --seed {}",
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

/// Runs `run` (the workload called `workload_name`) for every seed of `seeds` on `threads` threads (each seed is its own
/// single-threaded simulation), calling `done` as each finishes; returns every outcome in
/// seed order.
pub fn run_seeds(
    workload_name: &'static str,
    run: crate::Workload,
    seeds: std::ops::Range<u64>,
    threads: usize,
    done: impl Fn(&Outcome) + Sync,
) -> Vec<Outcome> {
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let outcomes = parking_lot::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if seed >= seeds.end {
                    break;
                }
                // A panic (in the harness or in a node's code on the simulation thread) is
                // a failed seed like any other, reported with its replay command.
                let outcome = std::panic::catch_unwind(|| run(seed)).unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    Outcome::panicked(workload_name, seed, &message)
                });
                done(&outcome);
                outcomes.lock().push(outcome);
            });
        }
    });
    let mut outcomes = outcomes.into_inner();
    outcomes.sort_by_key(|o| o.seed);
    outcomes
}
