//! Runs the simulation's workloads over many seeds: a progress bar per workload, then a table
//! of seeds run, faults injected and violations found, and every failing seed with its replay
//! command. Exits with 1 if any seed failed.
//!
//! `cargo run --release -p datacake-sim -- --seeds 1000` (every workload), or
//! `-- --workload ec --seed 17` to replay one seed and print its schedule.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use datacake_sim::{run_seeds, workload, Outcome, WORKLOADS};
use indicatif::{ProgressBar, ProgressStyle};

/// Deterministic whole-cluster simulation of Datacake: seeded fault schedules, workloads and
/// invariant checkers.
#[derive(Debug, Parser)]
#[command(name = "datacake-sim", version, about)]
struct Cli {
    /// Workload to run; repeat for several (default: every workload).
    #[arg(long = "workload", value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(WORKLOADS.iter().map(|(name, _)| *name)))]
    workloads: Vec<String>,

    /// How many seeds to run per workload, from --first-seed on.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,

    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,

    /// Run only this seed and print its fault schedule (a replay).
    #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
    seed: Option<u64>,

    /// Worker threads, each running one seed at a time (default: the machine's cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    threads: Option<u64>,
}

/// What one workload's seeds found.
struct Summary {
    name: &'static str,
    seeds: u64,
    faults: usize,
    operations: usize,
    failed: Vec<Outcome>,
    took: Duration,
}

fn run_workload(name: &'static str, seeds: std::ops::Range<u64>, threads: usize) -> Summary {
    let run = workload(name).expect("a known workload");
    let bar = ProgressBar::new(seeds.end - seeds.start);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} seeds {msg} ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(name);
    let start = Instant::now();
    let failed_so_far = AtomicU64::new(0);
    let results = run_seeds(name, run, seeds.clone(), threads, |outcome| {
        if !outcome.passed() {
            bar.println(outcome.to_string());
            failed_so_far.fetch_add(1, Ordering::SeqCst);
        }
        bar.set_message(format!("{} failed", failed_so_far.load(Ordering::SeqCst)));
        bar.inc(1);
    });
    bar.finish();
    let failed: Vec<Outcome> = results.iter().filter(|o| !o.passed()).cloned().collect();
    Summary {
        name,
        seeds: seeds.end - seeds.start,
        faults: results.iter().map(|o| o.faults).sum(),
        operations: results.iter().map(|o| o.operations).sum(),
        failed,
        took: start.elapsed(),
    }
}

fn main() -> ExitCode {
    // Quiet by default: a replay with `RUST_LOG=datacake_node=debug` (say) shows the nodes'
    // logs.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let names: Vec<&'static str> = WORKLOADS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| cli.workloads.is_empty() || cli.workloads.iter().any(|w| w == name))
        .collect();
    if let Some(seed) = cli.seed {
        let mut ok = true;
        for name in names {
            let schedule = datacake_sim::schedule_of(name, seed);
            println!(
                "{name} seed {seed}: nodes {:?}, initial {:?}, clock offsets (ms) {:?}",
                schedule.nodes, schedule.initial, schedule.clock_offsets
            );
            for event in &schedule.events {
                println!("  {:>8.3} s  {}", event.at.as_secs_f64(), event.fault);
            }
            let outcome = workload(name).expect("a known workload")(seed);
            println!("{outcome}");
            ok &= outcome.passed();
        }
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let threads = cli.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |t| t as usize,
    );
    let seeds = cli.first_seed..cli.first_seed.saturating_add(cli.seeds);
    let summaries: Vec<Summary> = names
        .iter()
        .map(|name| run_workload(name, seeds.clone(), threads))
        .collect();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "workload",
        "seeds",
        "faults injected",
        "operations",
        "seeds failed",
        "violations",
        "time",
    ]);
    for s in &summaries {
        let violations: usize = s.failed.iter().map(|o| o.violations.len()).sum();
        table.add_row(vec![
            s.name.to_string(),
            s.seeds.to_string(),
            s.faults.to_string(),
            s.operations.to_string(),
            s.failed.len().to_string(),
            violations.to_string(),
            format!("{:.1} s", s.took.as_secs_f64()),
        ]);
    }
    for column in table.column_iter_mut().skip(1) {
        column.set_cell_alignment(CellAlignment::Right);
    }
    println!("{table}");
    let failed: Vec<&Outcome> = summaries.iter().flat_map(|s| &s.failed).collect();
    if failed.is_empty() {
        println!(
            "every seed passed ({threads} threads, seeds {}..{})",
            seeds.start, seeds.end
        );
        return ExitCode::SUCCESS;
    }
    // The progress bar printed each failure as it happened, but only on a terminal: the
    // list repeats each with its violations and replay command.
    println!("failing seeds:");
    for outcome in failed {
        println!("{outcome}");
    }
    ExitCode::FAILURE
}
