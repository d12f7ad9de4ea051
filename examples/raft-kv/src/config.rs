//! The settings: the defaults, an optional TOML file (`--config FILE`), `DATACAKE_*`
//! environment variables, flags, each over the one before (the scheme of
//! `server_common::config`).
//!
//! The file refuses keys it does not know; every value is checked before anything starts,
//! and a bad one is an error naming the key (the process exits with status 2, like a bad
//! flag).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use datacake_node::DEFAULT_CLUSTER_ID;
use serde::{Deserialize, Serialize};
use server_common::config::{ConfigArgs, ConfigError, Settings};
use server_common::node_settings::{self as node, NodeArgs};

/// The longest key or counter name accepted at most, whatever `max_key_bytes` says.
pub(crate) const KEY_BYTES_CEILING: usize = 4096;

/// The largest `max_body_bytes` accepted: 1016 KiB. datacake-raft refuses a command over
/// 1 MiB archived (so that the log entries it sends a lagging follower in one message stay
/// under the RPC body limit); a value this size, with a key of up to 4 KiB and the command
/// around them, stays below that.
pub(crate) const BODY_BYTES_CEILING: usize = 1016 << 10;

/// The default `max_body_bytes`: 64 KiB.
const DEFAULT_MAX_BODY_BYTES: usize = 64 << 10;

/// A Raft-replicated HTTP key-value server (one Datacake node with datacake-raft).
///
/// `GET|PUT|DELETE /:key`, `POST /counter/:name/incr`, `GET /counter/:name`, `GET /cluster`,
/// `GET /health`, `GET /metrics`. Each setting comes from its flag, else its `DATACAKE_*`
/// environment variable (shown below), else `--config FILE` (TOML), else its default. Logs go
/// to stderr, filtered by `RUST_LOG` (default `info`).
#[derive(Debug, Default, Parser, Serialize)]
#[command(name = "raft-kv", version)]
pub(crate) struct Cli {
    #[command(flatten)]
    #[serde(skip)]
    pub(crate) config: ConfigArgs,
    #[command(flatten)]
    #[serde(flatten)]
    node: NodeArgs,
    /// How many voters form the cluster: once that many nodes see each other, the lowest id
    /// among them starts it (required, at least 1; the same on every node).
    #[arg(long, value_name = "N")]
    bootstrap_expect: Option<usize>,
    /// Shortest election timeout, in milliseconds [default: 1500].
    #[arg(long, value_name = "MS")]
    election_timeout_min_ms: Option<u64>,
    /// Longest election timeout (exclusive), in milliseconds [default: 3000].
    #[arg(long, value_name = "MS")]
    election_timeout_max_ms: Option<u64>,
    /// Leader heartbeat interval, below the shortest election timeout, in milliseconds
    /// [default: 500].
    #[arg(long, value_name = "MS")]
    heartbeat_interval_ms: Option<u64>,
    /// Longest a write or linearizable read waits (forwarding included) before 503/504, in
    /// milliseconds [default: 10000].
    #[arg(long, value_name = "MS")]
    request_timeout_ms: Option<u64>,
    /// Largest accepted request body (a value), in bytes [default: 65536, at most 1040384].
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// Longest key or counter name, in bytes after percent-decoding [default: 256, at most
    /// 4096].
    #[arg(long, value_name = "BYTES")]
    max_key_bytes: Option<usize>,
}

/// The settings in force: after loading, `node_id`, `public_addr` and `bootstrap_expect` are
/// set and every value is checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    node_id: Option<u32>,
    pub(crate) cluster_addr: SocketAddr,
    public_addr: Option<SocketAddr>,
    pub(crate) http_addr: SocketAddr,
    pub(crate) seeds: Vec<String>,
    pub(crate) discover_dns: Vec<String>,
    pub(crate) discover_file: Option<PathBuf>,
    pub(crate) data_dir: PathBuf,
    bootstrap_expect: Option<usize>,
    pub(crate) cluster_id: String,
    pub(crate) shutdown_timeout_ms: u64,
    pub(crate) timings: Timings,
    pub(crate) limits: Limits,
}

/// Raft timings, in milliseconds (`[timings]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Timings {
    pub(crate) election_timeout_min_ms: u64,
    pub(crate) election_timeout_max_ms: u64,
    pub(crate) heartbeat_interval_ms: u64,
    pub(crate) request_timeout_ms: u64,
}

/// Bounds on what clients send (`[limits]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Limits {
    pub(crate) max_body_bytes: usize,
    pub(crate) max_key_bytes: usize,
    pub(crate) header_read_timeout_ms: u64,
    pub(crate) stall_timeout_ms: u64,
    pub(crate) max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: None,
            cluster_addr: node::DEFAULT_CLUSTER_ADDR,
            public_addr: None,
            http_addr: node::DEFAULT_HTTP_ADDR,
            seeds: Vec::new(),
            discover_dns: Vec::new(),
            discover_file: None,
            data_dir: PathBuf::from(node::DEFAULT_DATA_DIR),
            bootstrap_expect: None,
            cluster_id: DEFAULT_CLUSTER_ID.to_owned(),
            shutdown_timeout_ms: node::DEFAULT_SHUTDOWN_TIMEOUT_MS,
            timings: Timings::default(),
            limits: Limits::default(),
        }
    }
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            election_timeout_min_ms: 1500,
            election_timeout_max_ms: 3000,
            heartbeat_interval_ms: 500,
            request_timeout_ms: 10_000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_key_bytes: 256,
            header_read_timeout_ms: node::DEFAULT_HEADER_READ_TIMEOUT_MS,
            stall_timeout_ms: node::DEFAULT_STALL_TIMEOUT_MS,
            max_connections: node::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl Timings {
    pub(crate) fn election_timeout(&self) -> (Duration, Duration) {
        (
            node::millis(self.election_timeout_min_ms),
            node::millis(self.election_timeout_max_ms),
        )
    }

    pub(crate) fn heartbeat_interval(&self) -> Duration {
        node::millis(self.heartbeat_interval_ms)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        node::millis(self.request_timeout_ms)
    }
}

impl Limits {
    /// The longest a request body may stop coming.
    pub(crate) fn stall_timeout(&self) -> Duration {
        node::millis(self.stall_timeout_ms)
    }
}

impl Config {
    /// This node's id (set once loaded).
    pub(crate) fn node_id(&self) -> u32 {
        self.node_id.expect("checked when loaded")
    }

    /// The cluster address peers dial (set once loaded).
    pub(crate) fn public_addr(&self) -> SocketAddr {
        self.public_addr.expect("set when loaded")
    }

    /// The number of voters that start the cluster (set once loaded).
    pub(crate) fn bootstrap_expect(&self) -> usize {
        self.bootstrap_expect.expect("checked when loaded")
    }
}

impl Settings for Config {
    fn finish(&mut self) -> Result<(), ConfigError> {
        node::require_node_id(self.node_id)?;
        let bootstrap_expect = self.bootstrap_expect.ok_or(ConfigError::Missing {
            key: "bootstrap_expect",
        })?;
        if bootstrap_expect == 0 {
            return Err(ConfigError::invalid(
                "bootstrap_expect",
                "must be at least 1",
            ));
        }
        self.public_addr = Some(node::public_addr(self.cluster_addr, self.public_addr)?);
        node::check_cluster(&self.seeds, &self.cluster_id)?;
        node::check_discovery(&self.discover_dns)?;
        node::at_least_one("shutdown_timeout_ms", self.shutdown_timeout_ms)?;
        let t = &self.timings;
        node::at_least_one("timings.election_timeout_min_ms", t.election_timeout_min_ms)?;
        if t.election_timeout_min_ms >= t.election_timeout_max_ms {
            return Err(ConfigError::invalid(
                "timings.election_timeout_max_ms",
                format!(
                    "must be above election_timeout_min_ms ({} >= {})",
                    t.election_timeout_min_ms, t.election_timeout_max_ms
                ),
            ));
        }
        if t.heartbeat_interval_ms == 0 || t.heartbeat_interval_ms >= t.election_timeout_min_ms {
            return Err(ConfigError::invalid(
                "timings.heartbeat_interval_ms",
                format!(
                    "must be at least 1 and below election_timeout_min_ms ({}), got {}",
                    t.election_timeout_min_ms, t.heartbeat_interval_ms
                ),
            ));
        }
        node::at_least_one("timings.request_timeout_ms", t.request_timeout_ms)?;
        let l = &self.limits;
        if !(1..=BODY_BYTES_CEILING).contains(&l.max_body_bytes) {
            return Err(ConfigError::invalid(
                "limits.max_body_bytes",
                format!(
                    "must be between 1 and {BODY_BYTES_CEILING}: a value, its key and the \
                     command around them must stay under datacake-raft's 1 MiB command limit"
                ),
            ));
        }
        if !(1..=KEY_BYTES_CEILING).contains(&l.max_key_bytes) {
            return Err(ConfigError::invalid(
                "limits.max_key_bytes",
                format!("must be between 1 and {KEY_BYTES_CEILING}"),
            ));
        }
        node::at_least_one("limits.header_read_timeout_ms", l.header_read_timeout_ms)?;
        node::at_least_one("limits.stall_timeout_ms", l.stall_timeout_ms)?;
        node::check_max_connections("limits.max_connections", l.max_connections)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};
    use server_common::config::{parse_toml, unmatched, with_env};

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut matches = with_env::<Config>(Cli::command())
            .try_get_matches_from(std::iter::once("raft-kv").chain(args.iter().copied()))
            .expect("valid flags");
        Cli::from_arg_matches_mut(&mut matches).unwrap()
    }

    fn merge(args: &[&str], file: &str) -> Result<Config, ConfigError> {
        server_common::config::merge(parse_toml(file).expect("valid toml"), &cli(args))
    }

    #[test]
    fn every_setting_has_a_flag_and_an_environment_variable_by_the_rule() {
        assert_eq!(unmatched::<Cli, Config>(), Vec::<String>::new());
        let command = with_env::<Config>(Cli::command());
        let env = |id: &str| {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_env().unwrap().to_string_lossy().into_owned()
        };
        assert_eq!(env("node_id"), "DATACAKE_NODE_ID");
        assert_eq!(
            env("election_timeout_min_ms"),
            "DATACAKE_TIMINGS_ELECTION_TIMEOUT_MIN_MS"
        );
        assert_eq!(env("max_body_bytes"), "DATACAKE_LIMITS_MAX_BODY_BYTES");
        assert_eq!(env("shutdown_timeout_ms"), "DATACAKE_SHUTDOWN_TIMEOUT_MS");
    }

    #[test]
    fn the_example_file_parses_and_checks() {
        let mut config: Config =
            parse_toml(include_str!("../raft-kv.toml")).expect("the example parses");
        config.finish().expect("the example is valid");
        assert_eq!(config.node_id(), 1);
        assert_eq!(config.bootstrap_expect(), 3);
        assert_eq!(config.seeds.len(), 3);
        assert_eq!(config.shutdown_timeout_ms, 10_000);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let error = parse_toml::<Config>("node_id = 1\nbootstrap_expct = 3\n").unwrap_err();
        assert!(error.contains("bootstrap_expct"), "{error}");
        let error = parse_toml::<Config>("[timings]\nelection_ms = 3\n").unwrap_err();
        assert!(error.contains("election_ms"), "{error}");
    }

    #[test]
    fn flags_override_the_file() {
        let config = merge(
            &[
                "--node-id",
                "7",
                "--seed",
                "b:2",
                "--heartbeat-interval-ms",
                "50",
            ],
            "node_id = 1\nbootstrap_expect = 3\nseeds = [\"a:1\"]\n[timings]\nheartbeat_interval_ms = 100\n",
        )
        .unwrap();
        assert_eq!(config.node_id(), 7);
        assert_eq!(config.bootstrap_expect(), 3);
        assert_eq!(config.seeds, ["b:2"]);
        assert_eq!(config.timings.heartbeat_interval_ms, 50);
        assert_eq!(config.timings.election_timeout_min_ms, 1500);
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        let base = ["--node-id", "1", "--bootstrap-expect", "1"];
        for (extra, key) in [
            (
                &[
                    "--election-timeout-min-ms",
                    "500",
                    "--election-timeout-max-ms",
                    "500",
                ][..],
                "timings.election_timeout_max_ms",
            ),
            (
                &["--election-timeout-min-ms", "0"][..],
                "timings.election_timeout_min_ms",
            ),
            (
                &["--heartbeat-interval-ms", "1500"][..],
                "timings.heartbeat_interval_ms",
            ),
            (
                &["--request-timeout-ms", "0"][..],
                "timings.request_timeout_ms",
            ),
            (&["--max-key-bytes", "0"][..], "limits.max_key_bytes"),
            (&["--max-key-bytes", "5000"][..], "limits.max_key_bytes"),
            (&["--max-body-bytes", "0"][..], "limits.max_body_bytes"),
            (
                &["--max-body-bytes", "1040385"][..],
                "limits.max_body_bytes",
            ),
            (&["--max-connections", "0"][..], "limits.max_connections"),
            (
                &["--max-connections", "1000001"][..],
                "limits.max_connections",
            ),
            (&["--shutdown-timeout-ms", "0"][..], "shutdown_timeout_ms"),
            (&["--stall-timeout-ms", "0"][..], "limits.stall_timeout_ms"),
            (&["--cluster-addr", "0.0.0.0:7001"][..], "public_addr"),
            (&["--seed", "10.0.0.2"][..], "seeds"),
            (&["--seed", "host:port"][..], "seeds"),
        ] {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            match merge(&args, "") {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key, "{extra:?}"),
                other => panic!("{extra:?}: {other:?}"),
            }
        }
        assert!(matches!(
            merge(&["--node-id", "1", "--bootstrap-expect", "0"], ""),
            Err(ConfigError::Invalid {
                key: "bootstrap_expect",
                ..
            })
        ));
        assert!(matches!(
            merge(&["--bootstrap-expect", "1"], ""),
            Err(ConfigError::Missing { key: "node_id" })
        ));
    }
}
