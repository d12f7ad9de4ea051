//! The Datacake benchmark harness: spins up in-process clusters on loopback, runs the
//! benchmark suites, prints a table per suite and writes a JSON results file and SVG charts.
//! Run `cargo run --release -p benchmarks -- --help` for the options.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

mod alloc;
mod cli;
mod config;
mod echo;
mod echo_grpc;
mod output;
mod report;
mod runner;
mod suites;

#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

#[tokio::main]
async fn main() -> ExitCode {
    // openraft logs routine election traffic at warn (vote replies that arrive after the
    // candidate has already won are "ignored because vote changed"), which would interleave
    // with the tables; RUST_LOG overrides this default.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error"));
    // Beside the log output, a layer that counts the durable Raft log's group commits (suite
    // `raft` reports entries per fsync).
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter),
        )
        .with(suites::raft::commit_counter())
        .init();

    let cli = cli::Cli::parse();
    match runner::run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
