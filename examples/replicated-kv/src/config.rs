//! The command line and the settings: the defaults, an optional TOML file (`--config FILE`),
//! `DATACAKE_*` environment variables, flags, each over the one before (the scheme of
//! `server_common::config`). Unknown keys and bad values are errors naming the key (exit
//! status 2).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use datacake_node::{DEFAULT_CLUSTER_ID, DEFAULT_DATA_CENTER};
use datacake_sqlite::Synchronous;
use serde::{Deserialize, Serialize};
use server_common::config::{ConfigArgs, ConfigError, Settings};
use server_common::node_settings::{self as node, NodeArgs};

use crate::certs::CertsCommand;

/// An HTTP key-value server replicated across a Datacake cluster.
///
/// `GET|PUT|DELETE /:keyspace/:key?consistency=LEVEL`, `GET /cluster`, `GET /health`,
/// `GET /metrics`. Each setting comes from its flag, else its `DATACAKE_*` environment
/// variable (shown below), else `--config FILE` (TOML), else its default. Logs go to stderr,
/// filtered by `RUST_LOG` (default `info`).
///
/// Without a subcommand it runs the server (`replicated-kv --node-id 1 ...` is
/// `replicated-kv serve --node-id 1 ...`).
#[derive(Debug, Parser)]
#[command(
    name = "replicated-kv",
    version,
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the server (the default without a subcommand).
    Serve(Box<ServeArgs>),
    /// Make a cluster CA and node certificates (PEM files).
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// The server's flags: each overrides the setting of the same name.
#[derive(Debug, Default, Args, Serialize)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    #[serde(skip)]
    pub(crate) config: ConfigArgs,
    #[command(flatten)]
    #[serde(flatten)]
    node: NodeArgs,
    /// This node's data centre [default: default].
    #[arg(long)]
    data_center: Option<String>,
    /// Largest accepted request body, in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// How often anti-entropy repair runs with each peer, in milliseconds [default: 1000].
    #[arg(long, value_name = "MS")]
    repair_interval_ms: Option<u64>,
    /// SQLite's `synchronous` setting for `kv.db` (WAL mode) [default: normal]. Either way a
    /// process crash or SIGKILL loses no acknowledged write.
    #[arg(long, value_enum)]
    sqlite_synchronous: Option<SqliteSynchronous>,
    /// Serve the HTTP API over HTTPS with this certificate chain (PEM, leaf first); needs
    /// --http-tls-key.
    #[arg(long, value_name = "FILE")]
    http_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --http-tls-cert.
    #[arg(long, value_name = "FILE")]
    http_tls_key: Option<PathBuf>,
    /// Require `Authorization: Bearer <token>` on every request; the token is this file's
    /// contents, trimmed (an empty file is an error).
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
    /// With --auth-token-file: let GET /health and /metrics in without the token (for load
    /// balancers and scrapers) [default: false].
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    open_health: Option<bool>,
    /// Speak mutual TLS with the other nodes (gossip and replication), trusting this cluster
    /// CA certificate (PEM); needs --tls-cert and --tls-key. Without it the cluster port is
    /// plaintext: keep it on a private network.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM, from `replicated-kv certs node`), naming
    /// datacake://<cluster>/<node-id>; needs --tls-ca.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert; needs --tls-ca.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
}

/// The values of `sqlite_synchronous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SqliteSynchronous {
    /// No fsync per commit: an OS crash or power loss may lose the last acknowledged writes
    /// (the database stays consistent).
    Normal,
    /// An fsync per commit: acknowledged writes survive an OS crash or power loss; slower
    /// writes.
    Full,
}

impl From<SqliteSynchronous> for Synchronous {
    fn from(value: SqliteSynchronous) -> Self {
        match value {
            SqliteSynchronous::Normal => Synchronous::Normal,
            SqliteSynchronous::Full => Synchronous::Full,
        }
    }
}

/// The settings in force: after loading, `node_id` and `public_addr` are set and every value
/// is checked (files named are read when the server starts).
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
    pub(crate) data_center: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) cluster_id: String,
    pub(crate) shutdown_timeout_ms: u64,
    pub(crate) max_body_bytes: usize,
    pub(crate) header_read_timeout_ms: u64,
    pub(crate) stall_timeout_ms: u64,
    pub(crate) max_connections: usize,
    pub(crate) repair_interval_ms: u64,
    pub(crate) sqlite_synchronous: SqliteSynchronous,
    pub(crate) http_tls_cert: Option<PathBuf>,
    pub(crate) http_tls_key: Option<PathBuf>,
    pub(crate) auth_token_file: Option<PathBuf>,
    pub(crate) open_health: bool,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
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
            data_center: DEFAULT_DATA_CENTER.to_owned(),
            data_dir: PathBuf::from(node::DEFAULT_DATA_DIR),
            cluster_id: DEFAULT_CLUSTER_ID.to_owned(),
            shutdown_timeout_ms: node::DEFAULT_SHUTDOWN_TIMEOUT_MS,
            max_body_bytes: 1 << 20,
            header_read_timeout_ms: node::DEFAULT_HEADER_READ_TIMEOUT_MS,
            stall_timeout_ms: node::DEFAULT_STALL_TIMEOUT_MS,
            max_connections: node::DEFAULT_MAX_CONNECTIONS,
            repair_interval_ms: 1_000,
            sqlite_synchronous: SqliteSynchronous::Normal,
            http_tls_cert: None,
            http_tls_key: None,
            auth_token_file: None,
            open_health: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
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
}

/// Refuses `a` without `b` and `b` without `a`.
fn together(a: (&'static str, bool), b: (&'static str, bool)) -> Result<(), ConfigError> {
    match (a.1, b.1) {
        (true, false) => Err(ConfigError::RequiredBy { key: b.0, by: a.0 }),
        (false, true) => Err(ConfigError::RequiredBy { key: a.0, by: b.0 }),
        _ => Ok(()),
    }
}

impl Settings for Config {
    fn finish(&mut self) -> Result<(), ConfigError> {
        node::require_node_id(self.node_id)?;
        self.public_addr = Some(node::public_addr(self.cluster_addr, self.public_addr)?);
        node::check_cluster(&self.seeds, &self.cluster_id)?;
        node::check_discovery(&self.discover_dns)?;
        if self.data_center.is_empty() {
            return Err(ConfigError::invalid("data_center", "must not be empty"));
        }
        for (key, value) in [
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("stall_timeout_ms", self.stall_timeout_ms),
            ("repair_interval_ms", self.repair_interval_ms),
        ] {
            node::at_least_one(key, value)?;
        }
        node::check_max_connections("max_connections", self.max_connections)?;
        together(
            ("http_tls_cert", self.http_tls_cert.is_some()),
            ("http_tls_key", self.http_tls_key.is_some()),
        )?;
        let tls_ca = ("tls_ca", self.tls_ca.is_some());
        together(tls_ca, ("tls_cert", self.tls_cert.is_some()))?;
        together(tls_ca, ("tls_key", self.tls_key.is_some()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};
    use server_common::config::{merge, parse_toml, unmatched, with_env};

    use super::*;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let mut matches = with_env::<Config>(Cli::command())
            .try_get_matches_from(std::iter::once("replicated-kv").chain(args.iter().copied()))
            .expect("valid flags");
        Cli::from_arg_matches_mut(&mut matches).unwrap().serve
    }

    fn load(args: &[&str], file: &str) -> Result<Config, ConfigError> {
        merge(parse_toml(file).expect("valid toml"), &serve_args(args))
    }

    #[test]
    fn every_setting_has_a_flag_and_an_environment_variable_by_the_rule() {
        assert_eq!(unmatched::<Cli, Config>(), Vec::<String>::new());
        let command = with_env::<Config>(Cli::command());
        for command in [&command, command.find_subcommand("serve").unwrap()] {
            let env = |id: &str| {
                let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
                arg.get_env().unwrap().to_string_lossy().into_owned()
            };
            assert_eq!(env("node_id"), "DATACAKE_NODE_ID");
            assert_eq!(env("seeds"), "DATACAKE_SEEDS");
            assert_eq!(env("open_health"), "DATACAKE_OPEN_HEALTH");
            assert_eq!(env("sqlite_synchronous"), "DATACAKE_SQLITE_SYNCHRONOUS");
        }
    }

    #[test]
    fn the_example_file_parses_and_checks() {
        let mut config: Config =
            parse_toml(include_str!("../replicated-kv.toml")).expect("the example parses");
        config.finish().expect("the example is valid");
        assert_eq!(config.node_id(), 1);
        assert_eq!(config.seeds.len(), 3);
        assert_eq!(config.sqlite_synchronous, SqliteSynchronous::Normal);
        assert_eq!(config.shutdown_timeout_ms, 10_000);
        assert_eq!(config.public_addr(), config.cluster_addr);
    }

    #[test]
    fn flags_override_the_file_and_the_file_the_defaults() {
        let config = load(
            &[
                "--node-id",
                "7",
                "--open-health",
                "--sqlite-synchronous",
                "full",
            ],
            "node_id = 1\ndata_center = \"eu\"\nopen_health = false\nseeds = [\"a:1\"]\n",
        )
        .unwrap();
        assert_eq!(config.node_id(), 7);
        assert_eq!(config.data_center, "eu");
        assert!(config.open_health);
        assert_eq!(config.sqlite_synchronous, SqliteSynchronous::Full);
        assert_eq!(config.seeds, ["a:1"]);
        assert_eq!(config.max_body_bytes, 1 << 20);
        let config = load(
            &["--open-health=false"],
            "node_id = 1\nopen_health = true\n",
        )
        .unwrap();
        assert!(!config.open_health);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let error = parse_toml::<Config>("node_id = 1\nrepair_interval = 3\n").unwrap_err();
        assert!(error.contains("repair_interval"), "{error}");
        let error = parse_toml::<Config>("sqlite_synchronous = \"sometimes\"\n").unwrap_err();
        assert!(error.contains("sqlite_synchronous"), "{error}");
        for (args, key) in [
            (&["--repair-interval-ms", "0"][..], "repair_interval_ms"),
            (&["--max-connections", "0"][..], "max_connections"),
            (
                &["--max-connections", "18446744073709551615"][..],
                "max_connections",
            ),
            (&["--max-body-bytes", "0"][..], "max_body_bytes"),
            (&["--shutdown-timeout-ms", "0"][..], "shutdown_timeout_ms"),
            (&["--stall-timeout-ms", "0"][..], "stall_timeout_ms"),
            (&["--cluster-addr", "0.0.0.0:7001"][..], "public_addr"),
            (&["--seed", "nowhere"][..], "seeds"),
        ] {
            match load(args, "node_id = 1\n") {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key, "{args:?}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        let error = load(
            &["--tls-ca", "ca.pem", "--tls-cert", "c.pem"],
            "node_id = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("tls_key is required with tls_ca"),
            "{error}"
        );
        assert!(matches!(
            load(&[], ""),
            Err(ConfigError::Missing { key: "node_id" })
        ));
    }
}
