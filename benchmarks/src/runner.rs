//! Runs the selected suites one after another and writes what they measured.

use std::time::Instant;

use crate::cli::Cli;
use crate::config::{Profile, Progress, RunConfig, SuiteName};
use crate::output::chart::write_chart;
use crate::output::compare::Comparison;
use crate::output::json::{RunRecord, Skipped, SuiteRecord};
use crate::output::table::suite_table;
use crate::report::SuiteReport;
use crate::suites;

/// Runs one suite.
async fn run_suite(suite: SuiteName, cfg: &RunConfig) -> anyhow::Result<SuiteReport> {
    match suite {
        SuiteName::Crdt => suites::crdt::run(cfg),
        SuiteName::Rpc => suites::rpc::run(cfg).await,
        SuiteName::Gossip => suites::gossip::run(cfg).await,
        SuiteName::Ec => suites::ec::run(cfg).await,
        SuiteName::Sqlite => suites::sqlite::run(cfg).await,
        SuiteName::Raft => suites::raft::run(cfg).await,
        SuiteName::Kv => suites::kv::run(cfg).await,
    }
}

/// Runs the harness as `cli` asks.
pub(crate) async fn run(cli: &Cli) -> anyhow::Result<()> {
    let cfg = cli.to_config()?;
    // Read the earlier run first, so a bad path fails before minutes of benchmarking.
    let earlier = cli.compare.as_deref().map(RunRecord::read).transpose()?;
    std::fs::create_dir_all(&cli.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", cli.out.display()))?;

    let mut record = RunRecord::start(&cfg)?;
    let profile = match cfg.profile {
        Profile::Smoke => "smoke",
        Profile::Quick => "quick",
        Profile::Full => "full",
    };
    println!(
        "datacake benchmarks: {profile} run of {} on {} ({} cores), commit {}",
        cfg.suites
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        record.machine.cpu,
        record.machine.cores,
        record.git_commit,
    );

    let mut failed = Vec::new();
    for &suite in &cfg.suites {
        println!("\n== suite {suite}");
        for line in wrap(suite.explanation(), 96) {
            println!("   {line}");
        }
        let progress = Progress::spinner(suite);
        let start = Instant::now();
        let result = run_suite(suite, &cfg.with_progress(progress.clone())).await;
        progress.finish();
        let seconds = start.elapsed().as_secs_f64();
        match result {
            Ok(report) => {
                println!("{}", suite_table(&report));
                println!("   ({suite} took {seconds:.1} s)");
                record.suites.push(SuiteRecord::new(&report, seconds));
            }
            Err(e) => {
                eprintln!("suite {suite} failed after {seconds:.1} s: {e:#}");
                record.skipped.push(Skipped {
                    suite: suite.to_string(),
                    reason: format!("failed: {e:#}"),
                });
                failed.push(suite);
            }
        }
    }

    println!();
    let json = record.write(&cli.out)?;
    println!("results: {}", json.display());
    println!("         {}", cli.out.join("latest.json").display());
    for suite in &record.suites {
        let path = cli.out.join(format!("{}.svg", suite.suite));
        write_chart(suite, &path)
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))?;
        println!("chart:   {}", path.display());
    }

    if let Some(earlier) = earlier {
        let comparison = Comparison::new(&earlier, &record, cli.regression_threshold);
        println!(
            "\nchange against {} (commit {}, {}):",
            cli.compare
                .as_deref()
                .unwrap_or_else(|| "".as_ref())
                .display(),
            earlier.git_commit,
            earlier.machine.cpu,
        );
        println!("{}", comparison.table());
        for figure in &comparison.only_new {
            println!("   new figure, nothing to compare with: {figure}");
        }
        for figure in &comparison.only_old {
            println!("   figure missing from this run: {figure}");
        }
        println!(
            "{} metrics compared, {} regressions beyond {}%",
            comparison.changes.len(),
            comparison.regressions(),
            cli.regression_threshold
        );
    }

    anyhow::ensure!(
        failed.is_empty(),
        "suite(s) failed: {}",
        failed
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Splits `text` into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_every_word_within_the_width() {
        let lines = wrap("one two three four five six", 9);
        assert_eq!(lines, vec!["one two", "three", "four five", "six"]);
    }
}
