//! Runs a workload over the seeds of `DATACAKE_SIM_SEEDS` (a count from 0, default 100, or
//! `a..b`) on two threads, and fails listing every failing seed with its replay command.
//! `DATACAKE_SIM_VERBOSE=1` prints every seed's outcome.

fn seeds() -> std::ops::Range<u64> {
    let spec = std::env::var("DATACAKE_SIM_SEEDS").unwrap_or_else(|_| "100".into());
    match spec.split_once("..") {
        Some((a, b)) => a.parse().expect("a seed")..b.parse().expect("a seed"),
        None => 0..spec.parse().expect("a seed count"),
    }
}

pub(crate) fn run_seeds(name: &'static str) {
    let workload = datacake_sim::workload(name).expect("a known workload");
    let verbose = std::env::var_os("DATACAKE_SIM_VERBOSE").is_some();
    let seeds = seeds();
    let outcomes = datacake_sim::run_seeds(name, workload, seeds.clone(), 2, |outcome| {
        if verbose {
            eprintln!("{outcome}");
        }
    });
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{name}: {} of {} seeds failed:\n{}",
        failed.len(),
        seeds.end - seeds.start,
        failed.join("\n")
    );
}
