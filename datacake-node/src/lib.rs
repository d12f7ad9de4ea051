//! A Datacake cluster node: live gossip membership, a hybrid logical clock, node selection by
//! consistency level, and one RPC server that extensions attach their services to.
//!
//! # Concepts
//! - [`DatacakeNodeBuilder`] configures a node ([`ConnectionConfig`]: listen address, public
//!   address, seeds; cluster id, data centre, tags, timings) and
//!   [`connect`](DatacakeNodeBuilder::connect)s it to the cluster.
//! - A [`DatacakeNode`] gossips with its peers through [chitchat](https://docs.rs/chitchat)
//!   (scuttlebutt anti-entropy plus a phi-accrual failure detector). Gossip travels over the
//!   node's own `datacake-rpc` server, so a node has exactly one address. Each node gossips
//!   its id, public address, data centre and tags; [`DatacakeHandle::live_members`],
//!   [`DatacakeHandle::membership_changes`] and [`DatacakeHandle::statistics`] expose the view.
//!   Through the [`metrics`](https://docs.rs/metrics) facade the node also records the
//!   gauges `datacake_node_live_members` and `datacake_node_dead_members` and the counter
//!   `datacake_node_membership_changes_total{change}` (the README's "Metrics" lists them).
//! - Departures: [`DatacakeNode::shutdown`] announces the leave, so peers drop the node within
//!   a gossip round or two; a crashed node is held dead by the failure detector (about one to
//!   two seconds with the default 100 ms gossip interval).
//! - A node id is unique among live members: a second node claiming a live id is refused at
//!   [`connect`](DatacakeNodeBuilder::connect) with [`NodeError::DuplicateNodeId`]. Should two
//!   joined nodes claim one id anyway (a stalled or cut-off node coming back after its id was
//!   started again elsewhere), every view keeps the newest start, and the other one logs that
//!   it was replaced. A node with another cluster id never becomes a member.
//! - [`Clock`] is the node's hybrid logical clock (lock-free); fold remote stamps in with
//!   [`Clock::register_ts`].
//! - [`DatacakeHandle::select_nodes`] asks the [`NodeSelector`] (default [`DCAwareSelector`])
//!   which peers an operation must reach for a [`Consistency`] level.
//! - [`ClusterExtension`]s attach to a running node with [`DatacakeNode::add_extension`]; they
//!   add RPC services, use the [`RpcNetwork`] channel pool and stop with the node.
//!
//! # Discovery
//! Seeds in [`ConnectionConfig::seeds`] are fixed at start (chitchat re-resolves host-name
//! seeds every 60 s). For nodes that start in any order or change addresses, give the builder
//! one or more [`Discovery`] sources with [`DatacakeNodeBuilder::with_discovery`]: they are
//! polled in [`connect`](DatacakeNodeBuilder::connect) and then every discovery interval
//! ([`DatacakeNodeBuilder::with_discovery_interval`], default 10 s), and the node sends a gossip
//! round (a chitchat SYN) to discovered addresses that are not live members yet, at most
//! [`MAX_CONTACTS_PER_POLL`] per poll, in turn. chitchat's seed list cannot change after it
//! starts, so this is how new addresses reach it without a fork; once a node answers, the two
//! gossip as members.
//! - [`StaticDiscovery`]: a fixed list of addresses.
//! - [`DnsDiscovery`]: the A/AAAA records of a name with a port, resolved again at every poll
//!   (resolver injectable through [`DnsResolver`]; the default [`SystemResolver`] uses
//!   `tokio::net::lookup_host`).
//! - [`FileDiscovery`]: a file of `host:port` lines (`#` comments and blank lines allowed,
//!   IPv6 as `[::1]:7000`), re-read when it changes; a bad line is logged with its number and
//!   skipped.
//!
//! A source that fails, or takes longer than the discovery timeout
//! ([`DatacakeNodeBuilder::with_discovery_timeout`], default 5 s), is logged with its name and
//! its last good addresses stay in use; it never stops the node. At most
//! [`MAX_DISCOVERED_ADDRS`] addresses are taken per poll; the node's own public address is
//! ignored. [`DatacakeHandle::discovered_addrs`] shows what discovery found.
//!
//! **Kubernetes.** Put the pods behind a headless Service (`clusterIP: None`) and use
//! `DnsDiscovery::new("<service>.<namespace>.svc.cluster.local", <port>)`: the name resolves to
//! the IPs of the Service's ready pods, or of all its pods with
//! `publishNotReadyAddresses: true` (so that pods can find each other before they report
//! ready). Each pod advertises its own IP as its public address (e.g. from the downward API's
//! `status.podIP`).
//!
//! ```no_run
//! use std::time::Duration;
//! use datacake_node::{ConnectionConfig, DatacakeNodeBuilder, DnsDiscovery};
//!
//! # async fn run(pod_ip: std::net::IpAddr) -> Result<(), datacake_node::NodeError> {
//! let config = ConnectionConfig::new(
//!     "0.0.0.0:7000".parse().unwrap(),
//!     (pod_ip, 7000).into(),
//!     Vec::<String>::new(),
//! );
//! let node = DatacakeNodeBuilder::new(1, config)
//!     .with_discovery(DnsDiscovery::new("datacake.prod.svc.cluster.local", 7000))
//!     .with_discovery_interval(Duration::from_secs(5))
//!     .connect()
//!     .await?;
//! # node.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//! - `certs`: the `certs` module makes a cluster CA and node certificates naming each node's
//!   [`NodeIdentity`] (rcgen, no OpenSSL), for tools and tests.
//! - `simulation`: `DatacakeNodeBuilder::with_simulated_network` runs the node on turmoil's
//!   simulated network.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use datacake_node::{Consistency, ConnectionConfig, DatacakeNodeBuilder};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let local = "127.0.0.1:0".parse()?;
//! let first = DatacakeNodeBuilder::new(1, ConnectionConfig::new(local, local, Vec::<String>::new()))
//!     .with_gossip_interval(Duration::from_millis(50))
//!     .connect()
//!     .await?;
//! let seed = first.me().public_addr.to_string();
//! let second = DatacakeNodeBuilder::new(2, ConnectionConfig::new(local, local, [seed]))
//!     .with_gossip_interval(Duration::from_millis(50))
//!     .connect()
//!     .await?;
//!
//! first.wait_for_nodes([1, 2], Duration::from_secs(10)).await?;
//! let peers = first.select_nodes(Consistency::One).await?;
//! assert_eq!(peers[0].node_id, 2);
//! let stamp = first.clock().get_time();
//! assert!(second.clock().register_ts(stamp)? > stamp);
//!
//! second.shutdown().await;
//! first.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod auth;
mod builder;
#[cfg(feature = "certs")]
pub mod certs;
mod clock;
mod config;
mod consistency;
mod discovery;
mod error;
mod extension;
mod gossip_check;
mod handle;
mod identity;
mod join;
mod membership;
mod metrics;
mod network;
mod node;
mod selector;
mod statistics;
mod transport;
mod view;

pub use builder::{DatacakeNodeBuilder, DEFAULT_CLUSTER_ID, DEFAULT_DATA_CENTER};
pub use clock::Clock;
pub use config::ConnectionConfig;
pub use consistency::{
    AckProgress, AckTally, Consistency, ConsistencyError, ParseConsistencyError, Requirement,
};
pub use datacake_crdt::{HLCTimestamp, TimestampError};
pub use discovery::{
    Discovery, DiscoveryError, DnsDiscovery, DnsResolver, FileDiscovery, StaticDiscovery,
    SystemResolver, DEFAULT_DISCOVERY_INTERVAL, DEFAULT_DISCOVERY_TIMEOUT, MAX_CONTACTS_PER_POLL,
    MAX_DISCOVERED_ADDRS,
};
pub use error::NodeError;
pub use extension::{ClusterExtension, ExtensionGuard, ExtensionTasks};
pub use handle::{DatacakeHandle, ShutdownSignal};
pub use identity::{
    check_cluster_id, IdentityError, NodeIdentity, IDENTITY_SCHEME, MAX_CLUSTER_ID_LEN,
};
pub use membership::{ClusterMember, MembershipChange, MembershipChanges, NodeId};
pub use network::{RpcNetwork, MAX_CHANNELS};
pub use node::DatacakeNode;
pub use selector::{DCAwareSelector, NodeSelector};
pub use statistics::ClusterStatistics;
