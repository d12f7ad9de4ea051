//! The JSON results file: the machine, the commit, the parameters and every figure of a run,
//! in a shape a later run can read back for `--compare`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::report::{Measurement, SuiteReport};

/// Version of the file layout; bump it when a field changes meaning.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// One run of the harness, as written to disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    /// Layout version, [`SCHEMA_VERSION`] when written by this build.
    pub(crate) schema_version: u32,
    /// Start of the run, seconds since the Unix epoch.
    pub(crate) started_unix_secs: u64,
    /// Where it ran.
    pub(crate) machine: Machine,
    /// `git rev-parse HEAD` of the working tree, or `"unknown"`.
    pub(crate) git_commit: String,
    /// Whether the working tree had uncommitted changes (`None` if git was unavailable).
    pub(crate) git_dirty: Option<bool>,
    /// The run's parameters, as given or defaulted.
    pub(crate) parameters: serde_json::Value,
    /// Every suite that ran.
    pub(crate) suites: Vec<SuiteRecord>,
    /// Suites that were selected but did not run, with the reason.
    #[serde(default)]
    pub(crate) skipped: Vec<Skipped>,
}

/// A suite that did not run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Skipped {
    /// Suite name.
    pub(crate) suite: String,
    /// Why.
    pub(crate) reason: String,
}

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Machine {
    /// CPU model from `/proc/cpuinfo`, or `"unknown"`.
    pub(crate) cpu: String,
    /// Cores available to the process.
    pub(crate) cores: usize,
    /// Operating system (and distribution/kernel where known).
    pub(crate) os: String,
    /// CPU architecture.
    pub(crate) arch: String,
}

/// The figures of one suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SuiteRecord {
    /// Suite name.
    pub(crate) suite: String,
    /// Wall-clock seconds the suite took.
    pub(crate) seconds: f64,
    /// Every figure, in the order measured.
    pub(crate) figures: Vec<Figure>,
}

/// One figure; durations are in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Figure {
    /// What was measured.
    pub(crate) scenario: String,
    /// Which implementation produced it.
    pub(crate) system: String,
    /// Operations per second.
    pub(crate) ops_per_sec: Option<f64>,
    /// Median latency, µs.
    pub(crate) p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    pub(crate) p99_us: Option<f64>,
    /// 99.9th percentile latency, µs.
    pub(crate) p999_us: Option<f64>,
    /// Largest latency sample, µs.
    pub(crate) max_us: Option<f64>,
    /// Any other scalar figure.
    pub(crate) value: Option<f64>,
    /// The unit of `value`.
    pub(crate) unit: Option<String>,
    /// Ratio to the suite's baseline in the same run.
    pub(crate) ratio: Option<f64>,
    /// The goal, in words.
    pub(crate) target: Option<String>,
    /// Chart line this figure belongs to.
    pub(crate) line: Option<String>,
    /// What the chart's x axis counts.
    pub(crate) x_label: Option<String>,
    /// The figure's x value on the chart.
    pub(crate) x: Option<f64>,
}

impl From<&Measurement> for Figure {
    fn from(m: &Measurement) -> Self {
        let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        Self {
            scenario: m.scenario.clone(),
            system: m.system.clone(),
            ops_per_sec: m.ops_per_sec,
            p50_us: m.latency.map(|l| us(l.p50)),
            p99_us: m.latency.map(|l| us(l.p99)),
            p999_us: m.latency.map(|l| us(l.p999)),
            max_us: m.latency.map(|l| us(l.max)),
            value: m.value.map(|(v, _)| v),
            unit: m.value.map(|(_, u)| u.to_string()),
            ratio: m.ratio,
            target: m.target.clone(),
            line: m.point.as_ref().map(|p| p.line.clone()),
            x_label: m.point.as_ref().map(|p| p.x_label.to_string()),
            x: m.point.as_ref().map(|p| p.x),
        }
    }
}

impl SuiteRecord {
    /// The record of `report`, which took `seconds`.
    pub(crate) fn new(report: &SuiteReport, seconds: f64) -> Self {
        Self {
            suite: report.suite.to_string(),
            seconds,
            figures: report.measurements.iter().map(Figure::from).collect(),
        }
    }
}

impl RunRecord {
    /// A record of a run starting now, with no suites yet.
    pub(crate) fn start(cfg: &RunConfig) -> anyhow::Result<Self> {
        let started_unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let (git_commit, git_dirty) = git_state();
        Ok(Self {
            schema_version: SCHEMA_VERSION,
            started_unix_secs,
            machine: Machine::detect(),
            git_commit,
            git_dirty,
            parameters: serde_json::to_value(cfg)?,
            suites: Vec::new(),
            skipped: Vec::new(),
        })
    }

    /// Reads a results file written by [`RunRecord::write`].
    pub(crate) fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let record: Self = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{} is not a benchmark results file: {e}", path.display())
        })?;
        anyhow::ensure!(
            record.schema_version == SCHEMA_VERSION,
            "{} has results layout version {}, this harness reads version {SCHEMA_VERSION}",
            path.display(),
            record.schema_version
        );
        Ok(record)
    }

    /// Writes `results-<start time>.json` into `dir` and copies it to `latest.json`; returns
    /// the path of the former.
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let text = serde_json::to_string_pretty(self)?;
        let path = dir.join(format!("results-{}.json", self.started_unix_secs));
        std::fs::write(&path, &text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        std::fs::write(dir.join("latest.json"), &text)?;
        Ok(path)
    }
}

impl Machine {
    /// Describes the machine this process runs on.
    pub(crate) fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let distro = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|release| {
                release
                    .lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|name| name.trim_matches('"').to_string())
            });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|k| k.trim().to_string());
        let mut os = std::env::consts::OS.to_string();
        if let Some(distro) = distro {
            os = format!("{os} ({distro})");
        }
        if let Some(kernel) = kernel {
            os = format!("{os}, kernel {kernel}");
        }
        Self {
            cpu,
            cores,
            os,
            arch: std::env::consts::ARCH.to_string(),
        }
    }
}

/// The commit checked out and whether the tree is dirty, from git where available.
fn git_state() -> (String, Option<bool>) {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            let dirty =
                run(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
            (commit, dirty)
        }
        _ => ("unknown".to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Profile, RunConfig};
    use crate::report::Latency;

    #[test]
    fn a_record_round_trips_through_json() {
        let cfg = RunConfig::for_profile(Profile::Smoke);
        let mut record = RunRecord::start(&cfg).unwrap();
        let mut samples = vec![Duration::from_micros(10), Duration::from_micros(30)];
        let report = SuiteReport {
            suite: "rpc",
            measurements: vec![Measurement::new("echo", "datacake-rpc")
                .with_ops_per_sec(1e5)
                .with_latency(Latency::from_samples(&mut samples))
                .with_value(3.0, "ms")
                .with_point("datacake-rpc", "calls in flight", 64.0)],
        };
        record.suites.push(SuiteRecord::new(&report, 1.5));
        let text = serde_json::to_string(&record).unwrap();
        let back: RunRecord = serde_json::from_str(&text).unwrap();
        let figure = &back.suites[0].figures[0];
        assert_eq!(figure, &record.suites[0].figures[0]);
        assert_eq!(figure.p50_us, Some(10.0));
        assert_eq!(figure.unit.as_deref(), Some("ms"));
        assert_eq!(figure.x, Some(64.0));
        assert_eq!(back.parameters["profile"], "smoke");
        assert!(back.machine.cores >= 1);
    }
}
