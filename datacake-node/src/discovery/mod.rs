//! Discovery: where a node finds the peers it first gossips with, polled at start and then
//! periodically, so nodes that start in any order, or move to new addresses, find each other.
//!
//! A [`Discovery`] source returns socket addresses of (some) cluster nodes. The node polls
//! every source it was given ([`DatacakeNodeBuilder::with_discovery`]) once in
//! [`connect`](crate::DatacakeNodeBuilder::connect) and then every discovery interval
//! ([`DatacakeNodeBuilder::with_discovery_interval`], default
//! [`DEFAULT_DISCOVERY_INTERVAL`]). Built-in sources: [`StaticDiscovery`] (a fixed list),
//! [`DnsDiscovery`] (the A/AAAA records of a name, re-resolved at every poll) and
//! [`FileDiscovery`] (a file of `host:port` lines, re-read when it changes).
//!
//! # How discovered addresses reach chitchat
//!
//! chitchat 0.13 takes its seeds once, in `spawn_chitchat(config, ..)`: the IP-literal seeds of
//! `ChitchatConfig::seed_nodes` are fixed, and the host-name seeds are re-resolved by chitchat
//! itself every 60 seconds (a constant). The seed set lives in a watch channel that
//! `spawn_chitchat` creates internally; `Chitchat::with_chitchat_id_and_seeds` would accept one
//! of ours, but the gossip loop that runs a `Chitchat` is private to `spawn_chitchat`. So the
//! seed list cannot change after start without forking chitchat, and restarting chitchat would
//! start a new generation of the node.
//!
//! Instead each poll hands discovered addresses to chitchat's public
//! `ChitchatHandle::gossip(addr)`, which sends one gossip SYN to that address. A node that
//! answers replies with its state and receives ours (SYN, SYN-ACK, ACK), so the two become
//! members of each other's view, and from then on chitchat gossips with it like with any
//! other member, spreading the rest of the cluster. At every poll, up to
//! [`MAX_CONTACTS_PER_POLL`] discovered addresses that are not the address of a live member
//! get a SYN, taken in turn (a rotating window over the set), so an address that did not
//! answer is retried at later polls and two halves of a cluster that lost each other meet
//! again. [`ConnectionConfig::seeds`](crate::ConnectionConfig::seeds) are still passed to
//! chitchat as seeds, exactly as without discovery.
//!
//! # Limits
//! - A poll of one source may take at most the discovery timeout
//!   ([`DatacakeNodeBuilder::with_discovery_timeout`], default [`DEFAULT_DISCOVERY_TIMEOUT`]);
//!   sources are polled concurrently.
//! - At most [`MAX_DISCOVERED_ADDRS`] addresses are taken from one poll of a source, and at
//!   most that many in all; the rest are dropped (with a warning).
//! - A source that fails or times out is logged (with its [`name`](Discovery::name)) and its
//!   last good set stays in use; an error never stops the node. The same error repeated at
//!   consecutive polls is logged at warn level once, then at debug level.
//! - The node's own public address, addresses with an unspecified IP (`0.0.0.0`, `::`) and
//!   port 0 are dropped from what a source returns.

mod dns;
mod file;
mod poller;

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::NodeError;
#[cfg(doc)]
use crate::DatacakeNodeBuilder;

pub use dns::{DnsDiscovery, DnsResolver, SystemResolver};
pub use file::FileDiscovery;
pub(crate) use poller::{DiscoveryTarget, Poller};

/// The most addresses taken from one poll of one source, and from one poll of all sources
/// together: 1,024.
pub const MAX_DISCOVERED_ADDRS: usize = 1024;
/// The most discovered addresses (not yet live members) contacted at one poll: 32.
pub const MAX_CONTACTS_PER_POLL: usize = 32;
/// How often sources are polled unless
/// [`DatacakeNodeBuilder::with_discovery_interval`] says otherwise: 10 s.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);
/// How long one poll of one source may take unless
/// [`DatacakeNodeBuilder::with_discovery_timeout`] says otherwise: 5 s.
pub const DEFAULT_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest discovery interval accepted: 10 ms.
pub(crate) const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_millis(10);
/// The longest discovery interval and timeout accepted: one day.
pub(crate) const MAX_DISCOVERY_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// A source of seed addresses: where the cluster's nodes can be reached right now.
///
/// The node calls [`discover`](Self::discover) at start and then every discovery interval,
/// each call bounded by the discovery timeout. Returning an error (or timing out) keeps the
/// addresses of the last successful call in use.
///
/// ```
/// use std::net::SocketAddr;
/// use datacake_node::{Discovery, DiscoveryError};
///
/// /// Peers listed in an environment variable, e.g. `PEERS=10.0.0.5:7000,10.0.0.6:7000`.
/// #[derive(Debug)]
/// struct EnvDiscovery;
///
/// #[async_trait::async_trait]
/// impl Discovery for EnvDiscovery {
///     fn name(&self) -> &str {
///         "env PEERS"
///     }
///
///     async fn discover(&self) -> Result<Vec<SocketAddr>, DiscoveryError> {
///         let peers = std::env::var("PEERS").unwrap_or_default();
///         peers
///             .split(',')
///             .filter(|p| !p.is_empty())
///             .map(|p| p.parse().map_err(|e| DiscoveryError::Other(Box::new(e))))
///             .collect()
///     }
/// }
/// ```
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// A short name for logs, e.g. `"dns db.prod.svc.cluster.local:7000"`.
    fn name(&self) -> &str;

    /// The addresses of (some of) the cluster's nodes. Order does not matter; duplicates,
    /// the node's own address and unreachable ones (`0.0.0.0`, port 0) are dropped; at most
    /// [`MAX_DISCOVERED_ADDRS`] are taken.
    async fn discover(&self) -> Result<Vec<SocketAddr>, DiscoveryError>;
}

#[async_trait]
impl<D: Discovery + ?Sized> Discovery for Arc<D> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn discover(&self) -> Result<Vec<SocketAddr>, DiscoveryError> {
        (**self).discover().await
    }
}

/// Why a discovery source could not produce addresses. Logged by the node, never fatal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// A seed file could not be read.
    #[error("cannot read seed file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// A seed file is larger than [`FileDiscovery::MAX_FILE_BYTES`].
    #[error("seed file {path} is larger than {limit} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// A line of a seed file is not `host:port` (nor blank, nor a `#` comment).
    #[error("line {line}: {reason}: {content:?}")]
    InvalidLine {
        /// The line number, from 1.
        line: usize,
        /// The line as read (without its comment; cut after 200 characters).
        content: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host name could not be resolved.
    #[error("cannot resolve {host}:{port}")]
    Resolve {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
        /// The resolver's reason.
        #[source]
        source: io::Error,
    },
    /// A poll took longer than the discovery timeout (raised by the node, not by sources).
    #[error("no answer within {timeout:?}")]
    Timeout {
        /// The discovery timeout.
        timeout: Duration,
    },
    /// Any other failure, from a source outside this crate.
    #[error(transparent)]
    Other(Box<dyn StdError + Send + Sync>),
}

/// A fixed list of addresses: the same every poll.
///
/// [`ConnectionConfig::seeds`](crate::ConnectionConfig::seeds) already covers a fixed list
/// (and resolves host names); this source is for combining a fixed list with other sources,
/// or for tests.
///
/// ```
/// use datacake_node::{ConnectionConfig, DatacakeNodeBuilder, StaticDiscovery};
///
/// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
/// let seeds = StaticDiscovery::new(["10.0.0.5:7000".parse().unwrap()]);
/// let builder = DatacakeNodeBuilder::new(1, config).with_discovery(seeds);
/// ```
#[derive(Debug, Clone)]
pub struct StaticDiscovery {
    addrs: Vec<SocketAddr>,
}

impl StaticDiscovery {
    /// A source that always returns `addrs`.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            addrs: addrs.into_iter().collect(),
        }
    }
}

#[async_trait]
impl Discovery for StaticDiscovery {
    fn name(&self) -> &str {
        "static"
    }

    async fn discover(&self) -> Result<Vec<SocketAddr>, DiscoveryError> {
        Ok(self.addrs.clone())
    }
}

/// What the builder holds: the sources and their timings.
#[derive(Clone)]
pub(crate) struct DiscoveryConfig {
    pub(crate) sources: Vec<Arc<dyn Discovery>>,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            interval: DEFAULT_DISCOVERY_INTERVAL,
            timeout: DEFAULT_DISCOVERY_TIMEOUT,
        }
    }
}

impl fmt::Debug for DiscoveryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
        f.debug_struct("DiscoveryConfig")
            .field("sources", &names)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl DiscoveryConfig {
    /// Checks the interval (10 ms to a day) and the timeout (above zero, at most a day).
    pub(crate) fn validate(&self) -> Result<(), NodeError> {
        let invalid = |setting, reason| Err(NodeError::InvalidConfig { setting, reason });
        if self.interval < MIN_DISCOVERY_INTERVAL || self.interval > MAX_DISCOVERY_PERIOD {
            return invalid(
                "discovery_interval",
                format!(
                    "{:?} is not between {MIN_DISCOVERY_INTERVAL:?} and {MAX_DISCOVERY_PERIOD:?}",
                    self.interval
                ),
            );
        }
        if self.timeout.is_zero() || self.timeout > MAX_DISCOVERY_PERIOD {
            return invalid(
                "discovery_timeout",
                format!(
                    "{:?} is not above zero and at most {MAX_DISCOVERY_PERIOD:?}",
                    self.timeout
                ),
            );
        }
        Ok(())
    }
}

pub(crate) use datacake_rpc::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    fn setting_of(config: &DiscoveryConfig) -> Option<&'static str> {
        match config.validate() {
            Ok(()) => None,
            Err(NodeError::InvalidConfig { setting, .. }) => Some(setting),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn timings_are_checked() {
        let ok = DiscoveryConfig::default();
        assert_eq!(setting_of(&ok), None);
        let bounds = DiscoveryConfig {
            interval: MIN_DISCOVERY_INTERVAL,
            timeout: MAX_DISCOVERY_PERIOD,
            ..DiscoveryConfig::default()
        };
        assert_eq!(setting_of(&bounds), None);
        for interval in [Duration::ZERO, Duration::from_millis(9), Duration::MAX] {
            let config = DiscoveryConfig {
                interval,
                ..DiscoveryConfig::default()
            };
            assert_eq!(setting_of(&config), Some("discovery_interval"));
        }
        for timeout in [Duration::ZERO, Duration::MAX] {
            let config = DiscoveryConfig {
                timeout,
                ..DiscoveryConfig::default()
            };
            assert_eq!(setting_of(&config), Some("discovery_timeout"));
        }
    }

    #[test]
    fn error_chains_name_the_cause() {
        let error = DiscoveryError::Resolve {
            host: "db".into(),
            port: 7000,
            source: io::Error::new(io::ErrorKind::NotFound, "no such host"),
        };
        assert_eq!(error_chain(&error), "cannot resolve db:7000: no such host");
    }
}
