//! The settings every server has (node identity, addresses, the HTTP server's limits, the
//! shutdown timeout): their flags, written once, and their checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::config::ConfigError;

/// The default `cluster_addr`.
pub const DEFAULT_CLUSTER_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7001);
/// The default `http_addr`.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8001);
/// The default `data_dir`.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// The default `shutdown_timeout_ms`: 10 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// The default `header_read_timeout_ms`: 10 s.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// The default `stall_timeout_ms`: 10 s.
pub const DEFAULT_STALL_TIMEOUT_MS: u64 = 10_000;
/// The default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The largest `max_connections` accepted: far above any open-file limit, so it never limits
/// a real server, while a typo such as `u64::MAX` is refused at start.
pub const MAX_CONNECTIONS_CEILING: usize = 1_000_000;

/// The flags of the settings every server has, for its parser to flatten in. Every one is
/// optional (a missing flag leaves the file's value or the default); `--print-config` shows
/// the defaults.
#[derive(Debug, Default, Args, Serialize)]
pub struct NodeArgs {
    /// This node's id, unique among the live members of the cluster (required).
    #[arg(long)]
    pub node_id: Option<u32>,
    /// Address the cluster server (gossip and RPC) listens on [default: 127.0.0.1:7001].
    #[arg(long, value_name = "ADDR")]
    pub cluster_addr: Option<SocketAddr>,
    /// Cluster address peers dial [default: the cluster address; set it when that is a
    /// wildcard address such as 0.0.0.0].
    #[arg(long, value_name = "ADDR")]
    pub public_addr: Option<SocketAddr>,
    /// Address the HTTP API listens on [default: 127.0.0.1:8001].
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Cluster address (`host:port`) of a node to join through; repeat for several, or
    /// separate them with commas (replaces the file's `seeds`).
    #[arg(long = "seed", value_name = "HOST:PORT", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// A DNS name (`host:port`) whose A/AAAA records are peers' cluster addresses, resolved
    /// again every 10 s (e.g. a Kubernetes headless Service); repeat for several.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    pub discover_dns: Vec<String>,
    /// A file of peers' cluster addresses (`host:port` lines, `#` comments), read again when
    /// it changes.
    #[arg(long, value_name = "FILE")]
    pub discover_file: Option<PathBuf>,
    /// Directory of the node's data; created if missing [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cluster id: nodes with another id never become members [default: datacake].
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Longest a graceful shutdown (finishing requests, leaving the cluster) may take before
    /// the process exits with status 1, in milliseconds [default: 10000].
    #[arg(long, value_name = "MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Close a connection that has not sent a request's headers within this time (also an
    /// idle keep-alive connection, and a TLS handshake), in milliseconds [default: 10000].
    #[arg(long, value_name = "MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Close a connection whose request body or response stops moving (no byte read or
    /// written) for this long, in milliseconds [default: 10000].
    #[arg(long, value_name = "MS")]
    pub stall_timeout_ms: Option<u64>,
    /// Most HTTP connections served at once, 1 to 1000000; at the limit a new one closes the
    /// connection idle longest, or is closed at once if all are busy [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
}

/// `node_id`, which has no default.
pub fn require_node_id(node_id: Option<u32>) -> Result<u32, ConfigError> {
    node_id.ok_or(ConfigError::Missing { key: "node_id" })
}

/// The address peers dial: `public_addr`, or `cluster_addr` if that is not a wildcard.
pub fn public_addr(
    cluster_addr: SocketAddr,
    public_addr: Option<SocketAddr>,
) -> Result<SocketAddr, ConfigError> {
    let public = public_addr.unwrap_or(cluster_addr);
    if public.ip().is_unspecified() {
        return Err(ConfigError::invalid(
            "public_addr",
            format!(
                "peers cannot dial {public}: set public_addr to an address they can reach \
                 (cluster_addr is {cluster_addr})"
            ),
        ));
    }
    Ok(public)
}

/// Checks that every seed is `host:port` and the cluster id is not empty.
pub fn check_cluster(seeds: &[String], cluster_id: &str) -> Result<(), ConfigError> {
    if let Some(seed) = seeds.iter().find(|seed| !is_host_port(seed)) {
        return Err(ConfigError::invalid(
            "seeds",
            format!("{seed:?} is not host:port (e.g. 10.0.0.2:7001 or kv-2.internal:7001)"),
        ));
    }
    if cluster_id.is_empty() {
        return Err(ConfigError::invalid("cluster_id", "must not be empty"));
    }
    Ok(())
}

/// Checks that every `discover_dns` entry is `host:port`.
pub fn check_discovery(discover_dns: &[String]) -> Result<(), ConfigError> {
    match discover_dns
        .iter()
        .find(|name| split_host_port(name).is_none())
    {
        Some(name) => Err(ConfigError::invalid(
            "discover_dns",
            format!("{name:?} is not host:port (e.g. kv.default.svc.cluster.local:7001)"),
        )),
        None => Ok(()),
    }
}

/// `builder` with a discovery source for each `discover_dns` name and for `discover_file`
/// (entries checked by [`check_discovery`]).
pub fn with_discovery<S: datacake_node::NodeSelector>(
    mut builder: datacake_node::DatacakeNodeBuilder<S>,
    discover_dns: &[String],
    discover_file: Option<&std::path::Path>,
) -> datacake_node::DatacakeNodeBuilder<S> {
    for (host, port) in discover_dns.iter().filter_map(|name| split_host_port(name)) {
        builder = builder.with_discovery(datacake_node::DnsDiscovery::new(host, port));
    }
    if let Some(path) = discover_file {
        builder = builder.with_discovery(datacake_node::FileDiscovery::new(path));
    }
    builder
}

/// `name` as a host name and a port, if it is `host:port`.
fn split_host_port(name: &str) -> Option<(&str, u16)> {
    let (host, port) = name.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty() && !host.contains(':')).then_some((host, port))
}

/// Checks that `value` of `key` is at least 1.
pub fn at_least_one(key: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be at least 1"));
    }
    Ok(())
}

/// `max_connections` (under the setting name `key`) between 1 and
/// [`MAX_CONNECTIONS_CEILING`].
pub fn check_max_connections(key: &'static str, value: usize) -> Result<(), ConfigError> {
    if !(1..=MAX_CONNECTIONS_CEILING).contains(&value) {
        return Err(ConfigError::invalid(
            key,
            format!("must be between 1 and {MAX_CONNECTIONS_CEILING}"),
        ));
    }
    Ok(())
}

/// A duration in milliseconds.
pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Whether `seed` is `host:port` (a host name or IP address, and a port).
fn is_host_port(seed: &str) -> bool {
    seed.parse::<SocketAddr>().is_ok() || split_host_port(seed).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_names_are_host_and_port() {
        assert!(check_discovery(&["kv.default.svc.cluster.local:7001".into()]).is_ok());
        for name in ["kv.default.svc", "kv:http", ":7001", "kv:70000"] {
            assert!(check_discovery(&[name.into()]).is_err(), "{name}");
        }
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
    fn a_wildcard_cluster_address_needs_a_public_one() {
        let any: SocketAddr = "0.0.0.0:7001".parse().unwrap();
        let own: SocketAddr = "10.0.0.1:7001".parse().unwrap();
        assert_eq!(public_addr(own, None).unwrap(), own);
        assert_eq!(public_addr(any, Some(own)).unwrap(), own);
        assert!(matches!(
            public_addr(any, None),
            Err(ConfigError::Invalid {
                key: "public_addr",
                ..
            })
        ));
    }
}
