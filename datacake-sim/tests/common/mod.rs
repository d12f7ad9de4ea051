//! Runs a workload over the seeds of `DATACAKE_SIM_SEEDS` (a count from 0, default 100, or
//! `a..b`), on two threads, and fails listing every failing seed with its replay command.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use datacake_sim::Outcome;

fn seeds() -> std::ops::Range<u64> {
    let spec = std::env::var("DATACAKE_SIM_SEEDS").unwrap_or_else(|_| "100".into());
    match spec.split_once("..") {
        Some((a, b)) => a.parse().expect("a seed")..b.parse().expect("a seed"),
        None => 0..spec.parse().expect("a seed count"),
    }
}

pub(crate) fn run_seeds(workload: &str, run: fn(u64) -> Outcome) {
    let seeds = seeds();
    let next = AtomicU64::new(seeds.start);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= seeds.end {
                    break;
                }
                let outcome = run(seed);
                if std::env::var_os("DATACAKE_SIM_VERBOSE").is_some() {
                    eprintln!("{outcome}");
                }
                if !outcome.passed() {
                    failed.lock().unwrap().push(outcome);
                }
            });
        }
    });
    let mut failed = failed.into_inner().unwrap();
    failed.sort_by_key(|o| o.seed);
    let report: Vec<String> = failed.iter().map(|o| o.to_string()).collect();
    assert!(
        failed.is_empty(),
        "{workload}: {} of {} seeds failed:\n{}",
        failed.len(),
        seeds.end - seeds.start,
        report.join("\n")
    );
}
