//! The command line, and its translation into a [`RunConfig`].

use std::path::PathBuf;

use clap::{ArgGroup, Parser};

use crate::config::{
    ConsistencyLevel, Profile, Progress, RunConfig, Storage, SuiteName, DEFAULT_SEED,
};

/// The Datacake benchmark harness: spins up in-process clusters on loopback, runs the
/// benchmark suites, prints a table per suite and writes a JSON results file and an SVG chart
/// per suite.
///
/// With no arguments it runs a quick pass of every suite (about two minutes on two cores).
#[derive(Debug, Parser)]
#[command(name = "benchmarks", version, about, long_about)]
#[command(group(ArgGroup::new("size").args(["smoke", "quick", "full"])))]
pub(crate) struct Cli {
    /// Suite to run; repeat the flag for several (default: every suite but kv, which needs
    /// the replicated-kv binary).
    #[arg(long = "suite", value_enum, value_name = "SUITE")]
    pub(crate) suites: Vec<SuiteName>,

    /// Cluster sizes, comma-separated (ec, kv: cluster sizes; gossip: sizes for the
    /// full-membership scenario). Default: each suite's own for the chosen size.
    #[arg(long, value_delimiter = ',', value_name = "N,..", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) nodes: Option<Vec<u32>>,

    /// Consistency levels, comma-separated (ec, kv).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LEVEL,..")]
    pub(crate) consistency: Option<Vec<ConsistencyLevel>>,

    /// Concurrency levels, comma-separated (ec: concurrent tasks per cell; rpc: calls in
    /// flight; kv: HTTP connections), e.g. 10,125,512,2048.
    #[arg(long, value_delimiter = ',', value_name = "N,..", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) concurrency: Option<Vec<u64>>,

    /// Documents each task writes per cell (ec only).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) docs: Option<u64>,

    /// Storage backend of suites that store documents. A suite that cannot use the chosen
    /// backend stops the run with an error rather than falling back.
    #[arg(long, value_enum, default_value = "memory")]
    pub(crate) storage: Storage,

    /// Seed of every random choice (keys, timestamps), so a run can be replayed.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub(crate) seed: u64,

    /// The replicated-kv binary the kv suite starts (default: the one next to this harness,
    /// built by `cargo build --release -p replicated-kv`).
    #[arg(long, value_name = "PATH")]
    pub(crate) kv_bin: Option<PathBuf>,

    /// The smallest configuration that still exercises every code path (seconds; for CI).
    #[arg(long)]
    pub(crate) smoke: bool,

    /// Quick sizes: every suite in about two minutes on two cores (the default).
    #[arg(long)]
    pub(crate) quick: bool,

    /// The complete matrix (takes much longer).
    #[arg(long)]
    pub(crate) full: bool,

    /// Directory for the JSON results file and the SVG charts.
    #[arg(long, value_name = "DIR", default_value = "target/bench-results")]
    pub(crate) out: PathBuf,

    /// An earlier run's JSON results file: print each figure's change against it.
    #[arg(long, value_name = "OLD.json")]
    pub(crate) compare: Option<PathBuf>,

    /// With --compare: mark a figure as a regression when it got worse by more than this many
    /// percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    pub(crate) regression_threshold: f64,
}

impl Cli {
    /// The run configuration, or a message explaining why the arguments cannot be honoured.
    pub(crate) fn to_config(&self) -> anyhow::Result<RunConfig> {
        let profile = if self.smoke {
            Profile::Smoke
        } else if self.full {
            Profile::Full
        } else {
            Profile::Quick
        };
        let suites_explicit = !self.suites.is_empty();
        let mut suites = if suites_explicit {
            self.suites.clone()
        } else {
            SuiteName::DEFAULT.to_vec()
        };
        let mut seen = Vec::new();
        suites.retain(|s| {
            let first = !seen.contains(s);
            seen.push(*s);
            first
        });

        if !suites_explicit {
            // A run of "everything" on another storage runs what can use that storage.
            suites.retain(|s| s.supports_storage(self.storage));
        }
        let unable: Vec<&str> = suites
            .iter()
            .filter(|s| !s.supports_storage(self.storage))
            .map(|s| s.as_str())
            .collect();
        anyhow::ensure!(
            unable.is_empty(),
            "--storage {} cannot be honoured: {} store nothing; rerun with --storage memory",
            self.storage,
            unable.join(", ")
        );
        anyhow::ensure!(
            self.regression_threshold.is_finite() && self.regression_threshold >= 0.0,
            "--regression-threshold must be a non-negative number of percent"
        );

        Ok(RunConfig {
            suites,
            suites_explicit,
            profile,
            nodes: self.nodes.clone(),
            consistency: self.consistency.clone(),
            concurrency: self
                .concurrency
                .as_ref()
                .map(|c| c.iter().map(|&n| n as usize).collect()),
            docs: self.docs,
            storage: self.storage,
            seed: self.seed,
            kv_bin: self.kv_bin.clone(),
            progress: Progress::hidden(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("benchmarks").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_is_a_quick_run_of_every_suite() {
        let cfg = parse(&[]).unwrap().to_config().unwrap();
        assert_eq!(cfg.profile, Profile::Quick);
        assert_eq!(cfg.suites, SuiteName::DEFAULT.to_vec());
        assert!(!cfg.suites_explicit);
        assert_eq!(cfg.seed, DEFAULT_SEED);
    }

    #[test]
    fn lists_are_comma_separated_and_suites_repeatable() {
        let cli = parse(&[
            "--suite",
            "rpc",
            "--suite",
            "crdt",
            "--suite",
            "rpc",
            "--nodes",
            "1,3,5",
            "--consistency",
            "all,quorum,local-quorum",
            "--concurrency",
            "10,125",
            "--full",
        ])
        .unwrap();
        let cfg = cli.to_config().unwrap();
        assert_eq!(cfg.suites, vec![SuiteName::Rpc, SuiteName::Crdt]);
        assert_eq!(cfg.nodes, Some(vec![1, 3, 5]));
        assert_eq!(
            cfg.consistency,
            Some(vec![
                ConsistencyLevel::All,
                ConsistencyLevel::Quorum,
                ConsistencyLevel::LocalQuorum
            ])
        );
        assert_eq!(cfg.concurrency, Some(vec![10, 125]));
        assert_eq!(cfg.profile, Profile::Full);
    }

    #[test]
    fn kv_runs_only_when_asked_for_and_takes_its_binary() {
        let cfg = parse(&[]).unwrap().to_config().unwrap();
        assert!(!cfg.suites.contains(&SuiteName::Kv));
        assert_eq!(cfg.kv_bin, None);
        let cfg = parse(&["--suite", "kv", "--kv-bin", "/opt/replicated-kv"])
            .unwrap()
            .to_config()
            .unwrap();
        assert_eq!(cfg.suites, [SuiteName::Kv]);
        assert_eq!(cfg.kv_bin, Some(PathBuf::from("/opt/replicated-kv")));
    }

    #[test]
    fn bad_arguments_are_rejected() {
        let err = parse(&["--suite", "bogus"]).unwrap_err().to_string();
        assert!(err.contains("crdt") && err.contains("gossip"), "{err}");
        assert!(parse(&["--nodes", "0"]).is_err());
        assert!(parse(&["--concurrency", "10,x"]).is_err());
        assert!(parse(&["--smoke", "--full"]).is_err());
        assert!(parse(&["--consistency", "most"]).is_err());
    }

    #[test]
    fn sqlite_is_refused_by_suites_that_cannot_use_it() {
        let err = parse(&["--storage", "sqlite", "--suite", "crdt"])
            .unwrap()
            .to_config()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("crdt") && err.contains("--storage memory"),
            "{err}"
        );
        // Without --suite, the suites that can use SQLite run.
        let cfg = parse(&["--storage", "sqlite"])
            .unwrap()
            .to_config()
            .unwrap();
        assert_eq!(
            cfg.suites,
            [SuiteName::Ec, SuiteName::Sqlite, SuiteName::Raft]
        );
    }
}
