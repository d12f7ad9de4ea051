//! The configuration: command-line flags, an optional TOML file (`--config FILE`), defaults.
//!
//! A flag overrides the file's key, which overrides the default. The file refuses keys it
//! does not know; every value is checked before anything starts, and a bad one is an error
//! naming the key (the process exits with status 2, like a bad flag).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use datacake_node::DEFAULT_CLUSTER_ID;
use serde::{Deserialize, Serialize};

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
/// `GET /health`, `GET /metrics`. Settings come from the flags, then `--config FILE` (TOML),
/// then the defaults. Logs go to stderr, filtered by `RUST_LOG` (default `info`).
#[derive(Debug, Default, Parser)]
#[command(name = "raft-kv", version)]
pub(crate) struct Cli {
    /// A TOML file with the settings below (snake_case keys, e.g. `node_id`; timings under
    /// `[timings]`, HTTP limits under `[limits]`); flags override it.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Check the settings, print them as JSON and exit (0 if valid, 2 if not).
    #[arg(long)]
    pub(crate) check_config: bool,
    /// This node's id, unique in the cluster (required).
    #[arg(long)]
    node_id: Option<u32>,
    /// Address the cluster server (gossip and Raft RPC) listens on [default: 127.0.0.1:7001].
    #[arg(long, value_name = "ADDR")]
    cluster_addr: Option<SocketAddr>,
    /// Cluster address peers dial [default: the cluster address].
    #[arg(long, value_name = "ADDR")]
    public_addr: Option<SocketAddr>,
    /// Address the HTTP API listens on [default: 127.0.0.1:8001].
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<SocketAddr>,
    /// Cluster address (`host:port`) of another node to join through; repeat for several
    /// (replaces the file's `seeds`).
    #[arg(long = "seed", value_name = "HOST:PORT")]
    seeds: Vec<String>,
    /// Directory of the Raft log, vote and snapshot; created if missing [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How many voters form the cluster: once that many nodes see each other, the lowest id
    /// among them starts it (required, at least 1; the same on every node).
    #[arg(long, value_name = "N")]
    bootstrap_expect: Option<usize>,
    /// Cluster id: nodes with another id never become members [default: datacake].
    #[arg(long)]
    cluster_id: Option<String>,
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
    /// Close a connection that has not sent a request's headers within this time (also an
    /// idle keep-alive connection), in milliseconds [default: 10000].
    #[arg(long, value_name = "MS")]
    header_read_timeout_ms: Option<u64>,
    /// Most HTTP connections served at once; one over the limit is closed at once [default:
    /// 1024].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
}

/// The TOML file. Every key is optional here; required ones are checked after merging.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u32>,
    cluster_addr: Option<SocketAddr>,
    public_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    seeds: Option<Vec<String>>,
    data_dir: Option<PathBuf>,
    bootstrap_expect: Option<usize>,
    cluster_id: Option<String>,
    #[serde(default)]
    timings: FileTimings,
    #[serde(default)]
    limits: FileLimits,
}

/// `[timings]` of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTimings {
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
}

/// `[limits]` of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_body_bytes: Option<usize>,
    max_key_bytes: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
}

/// The settings in force, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Config {
    pub(crate) node_id: u32,
    pub(crate) cluster_addr: SocketAddr,
    pub(crate) public_addr: SocketAddr,
    pub(crate) http_addr: SocketAddr,
    pub(crate) seeds: Vec<String>,
    pub(crate) data_dir: PathBuf,
    pub(crate) bootstrap_expect: usize,
    pub(crate) cluster_id: String,
    pub(crate) timings: Timings,
    pub(crate) limits: Limits,
}

/// Raft timings, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Timings {
    pub(crate) election_timeout_min_ms: u64,
    pub(crate) election_timeout_max_ms: u64,
    pub(crate) heartbeat_interval_ms: u64,
    pub(crate) request_timeout_ms: u64,
}

/// Bounds on what clients send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Limits {
    pub(crate) max_body_bytes: usize,
    pub(crate) max_key_bytes: usize,
    pub(crate) header_read_timeout_ms: u64,
    pub(crate) max_connections: usize,
}

impl Timings {
    pub(crate) fn election_timeout(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.election_timeout_min_ms),
            Duration::from_millis(self.election_timeout_max_ms),
        )
    }

    pub(crate) fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A required setting is set neither by flag nor in the file.
    #[error("{key} is required: set --{flag} or `{key}` in the config file")]
    Missing {
        key: &'static str,
        flag: &'static str,
    },
    /// A setting has a value that cannot work.
    #[error("invalid {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Reads the TOML file at `path`.
fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
}

impl Config {
    /// The settings from `cli` and the file it names, checked.
    pub(crate) fn load(cli: Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(cli, file)
    }

    /// Flags over the file over the defaults, checked.
    fn merge(cli: Cli, file: FileConfig) -> Result<Self, ConfigError> {
        let node_id = cli.node_id.or(file.node_id).ok_or(ConfigError::Missing {
            key: "node_id",
            flag: "node-id",
        })?;
        let cluster_addr = cli
            .cluster_addr
            .or(file.cluster_addr)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7001)));
        let public_addr = cli.public_addr.or(file.public_addr).unwrap_or(cluster_addr);
        let seeds = if cli.seeds.is_empty() {
            file.seeds.unwrap_or_default()
        } else {
            cli.seeds
        };
        let bootstrap_expect =
            cli.bootstrap_expect
                .or(file.bootstrap_expect)
                .ok_or(ConfigError::Missing {
                    key: "bootstrap_expect",
                    flag: "bootstrap-expect",
                })?;
        let t = file.timings;
        let l = file.limits;
        let config = Self {
            node_id,
            cluster_addr,
            public_addr,
            http_addr: cli
                .http_addr
                .or(file.http_addr)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8001))),
            seeds,
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            bootstrap_expect,
            cluster_id: cli
                .cluster_id
                .or(file.cluster_id)
                .unwrap_or_else(|| DEFAULT_CLUSTER_ID.to_owned()),
            timings: Timings {
                election_timeout_min_ms: cli
                    .election_timeout_min_ms
                    .or(t.election_timeout_min_ms)
                    .unwrap_or(1500),
                election_timeout_max_ms: cli
                    .election_timeout_max_ms
                    .or(t.election_timeout_max_ms)
                    .unwrap_or(3000),
                heartbeat_interval_ms: cli
                    .heartbeat_interval_ms
                    .or(t.heartbeat_interval_ms)
                    .unwrap_or(500),
                request_timeout_ms: cli
                    .request_timeout_ms
                    .or(t.request_timeout_ms)
                    .unwrap_or(10_000),
            },
            limits: Limits {
                max_body_bytes: cli
                    .max_body_bytes
                    .or(l.max_body_bytes)
                    .unwrap_or(DEFAULT_MAX_BODY_BYTES),
                max_key_bytes: cli.max_key_bytes.or(l.max_key_bytes).unwrap_or(256),
                header_read_timeout_ms: cli
                    .header_read_timeout_ms
                    .or(l.header_read_timeout_ms)
                    .unwrap_or(10_000),
                max_connections: cli.max_connections.or(l.max_connections).unwrap_or(1024),
            },
        };
        config.check()?;
        Ok(config)
    }

    /// Refuses values that cannot work.
    fn check(&self) -> Result<(), ConfigError> {
        if self.bootstrap_expect == 0 {
            return Err(invalid("bootstrap_expect", "must be at least 1"));
        }
        if self.public_addr.ip().is_unspecified() {
            return Err(invalid(
                "public_addr",
                format!(
                    "{} is not an address peers can dial; set public_addr when cluster_addr \
                     binds every interface",
                    self.public_addr
                ),
            ));
        }
        if let Some(seed) = self.seeds.iter().find(|seed| !is_host_port(seed)) {
            return Err(invalid(
                "seeds",
                format!("{seed:?} is not host:port (e.g. 10.0.0.2:7001 or kv-2.internal:7001)"),
            ));
        }
        if self.cluster_id.is_empty() {
            return Err(invalid("cluster_id", "must not be empty"));
        }
        let t = &self.timings;
        if t.election_timeout_min_ms == 0 {
            return Err(invalid("election_timeout_min_ms", "must be at least 1"));
        }
        if t.election_timeout_min_ms >= t.election_timeout_max_ms {
            return Err(invalid(
                "election_timeout_max_ms",
                format!(
                    "must be above election_timeout_min_ms ({} >= {})",
                    t.election_timeout_min_ms, t.election_timeout_max_ms
                ),
            ));
        }
        if t.heartbeat_interval_ms == 0 || t.heartbeat_interval_ms >= t.election_timeout_min_ms {
            return Err(invalid(
                "heartbeat_interval_ms",
                format!(
                    "must be at least 1 and below election_timeout_min_ms ({}), got {}",
                    t.election_timeout_min_ms, t.heartbeat_interval_ms
                ),
            ));
        }
        if t.request_timeout_ms == 0 {
            return Err(invalid("request_timeout_ms", "must be at least 1"));
        }
        let l = &self.limits;
        if !(1..=BODY_BYTES_CEILING).contains(&l.max_body_bytes) {
            return Err(invalid(
                "max_body_bytes",
                format!(
                    "must be between 1 and {BODY_BYTES_CEILING}: a lagging follower is sent up \
                     to 300 log entries in one message, which must stay under the 64 MiB RPC \
                     body limit"
                ),
            ));
        }
        if !(1..=KEY_BYTES_CEILING).contains(&l.max_key_bytes) {
            return Err(invalid(
                "max_key_bytes",
                format!("must be between 1 and {KEY_BYTES_CEILING}"),
            ));
        }
        if l.header_read_timeout_ms == 0 {
            return Err(invalid("header_read_timeout_ms", "must be at least 1"));
        }
        if l.max_connections == 0 {
            return Err(invalid("max_connections", "must be at least 1"));
        }
        Ok(())
    }
}

/// Whether `seed` is `host:port` (a host name or IP address, and a port).
fn is_host_port(seed: &str) -> bool {
    seed.parse::<SocketAddr>().is_ok()
        || seed.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("raft-kv").chain(args.iter().copied()))
            .expect("valid flags")
    }

    #[test]
    fn the_example_file_parses_and_checks() {
        let file = parse_file(include_str!("../raft-kv.toml")).expect("the example parses");
        let config = Config::merge(Cli::default(), file).expect("the example is valid");
        assert_eq!(config.node_id, 1);
        assert_eq!(config.bootstrap_expect, 3);
        assert_eq!(config.seeds.len(), 3);
    }

    #[test]
    fn seeds_are_host_and_port() {
        for seed in ["10.0.0.2:7001", "[::1]:7001", "kv-2.internal:7001"] {
            assert!(is_host_port(seed), "{seed}");
        }
        for seed in ["10.0.0.2", ":7001", "kv:70000", "::1:7001", ""] {
            assert!(!is_host_port(seed), "{seed}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let error = parse_file("node_id = 1\nbootstrap_expct = 3\n").unwrap_err();
        assert!(error.contains("bootstrap_expct"), "{error}");
        let error = parse_file("[timings]\nelection_ms = 3\n").unwrap_err();
        assert!(error.contains("election_ms"), "{error}");
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse_file(
            "node_id = 1\nbootstrap_expect = 3\nseeds = [\"a:1\"]\n[timings]\nheartbeat_interval_ms = 100\n",
        )
        .unwrap();
        let config = Config::merge(
            cli(&[
                "--node-id",
                "7",
                "--seed",
                "b:2",
                "--heartbeat-interval-ms",
                "50",
            ]),
            file,
        )
        .unwrap();
        assert_eq!(config.node_id, 7);
        assert_eq!(config.bootstrap_expect, 3);
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
                "election_timeout_max_ms",
            ),
            (
                &["--election-timeout-min-ms", "0"][..],
                "election_timeout_min_ms",
            ),
            (
                &["--heartbeat-interval-ms", "1500"][..],
                "heartbeat_interval_ms",
            ),
            (&["--request-timeout-ms", "0"][..], "request_timeout_ms"),
            (&["--max-key-bytes", "0"][..], "max_key_bytes"),
            (&["--max-key-bytes", "5000"][..], "max_key_bytes"),
            (&["--max-body-bytes", "0"][..], "max_body_bytes"),
            (&["--max-body-bytes", "1040385"][..], "max_body_bytes"),
            (&["--max-connections", "0"][..], "max_connections"),
            (&["--cluster-addr", "0.0.0.0:7001"][..], "public_addr"),
            (&["--seed", "10.0.0.2"][..], "seeds"),
            (&["--seed", "host:port"][..], "seeds"),
        ] {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            match Config::merge(cli(&args), FileConfig::default()) {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key, "{extra:?}"),
                other => panic!("{extra:?}: {other:?}"),
            }
        }
        assert!(matches!(
            Config::merge(
                cli(&["--node-id", "1", "--bootstrap-expect", "0"]),
                FileConfig::default()
            ),
            Err(ConfigError::Invalid {
                key: "bootstrap_expect",
                ..
            })
        ));
        assert!(matches!(
            Config::merge(cli(&["--bootstrap-expect", "1"]), FileConfig::default()),
            Err(ConfigError::Missing { key: "node_id", .. })
        ));
    }
}
