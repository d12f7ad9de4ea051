//! A strongly consistent extension for Datacake nodes: a linearizable replicated state
//! machine, built on [openraft](https://docs.rs/openraft) and sharing the node's gossip
//! membership and RPC server.
//!
//! # Concepts
//! - You write a deterministic [`StateMachine`]: `apply` commands, answer `read` queries,
//!   `snapshot` and `restore` the whole state.
//! - [`RaftExtension::new`] attaches it to a [`DatacakeNode`](datacake_node::DatacakeNode)
//!   and yields a [`RaftHandle`]: [`write`](RaftHandle::write) a command (on a follower it is
//!   forwarded to the leader, or fails with [`RaftError::NotLeader`]),
//!   [`read`](RaftHandle::read) with [`ReadConsistency::Linearizable`] or
//!   [`ReadConsistency::Local`], watch [`Role`]s and [`RaftEvents`], change membership.
//! - **Bootstrap rule**: every node starts with the same `bootstrap_expect = n`
//!   ([`RaftConfig::new`]); once `n` members are live in gossip, the lowest node id among the
//!   `n` lowest initialises the cluster with exactly those `n`, once all of them confirm they
//!   are in no cluster and see the same `n` lowest ids. Everyone else waits to be added: by
//!   hand ([`RaftHandle::add_learner`], then [`RaftHandle::promote`]) or by the automatic
//!   policy ([`RaftConfig::with_auto_membership`]), which adds gossip members as learners,
//!   promotes them once caught up and removes members gone longer than a grace period.
//! - Raft RPCs (append, vote, snapshot) and forwarded calls travel over `datacake-rpc` as one
//!   service on the node. It refuses, before openraft sees them, snapshot chunks out of place
//!   or beyond [`RaftConfig::with_max_snapshot_size`] and messages with implausible terms (a
//!   term near `u64::MAX` would otherwise stop Raft at the next election). Anyone who reaches
//!   the port can still force elections: keep it on a trusted network.
//! - A leader cut off from its quorum keeps reporting [`Role::Leader`] (openraft 0.9 has no
//!   step-down); [`RaftHandle::has_quorum`] turns `false` a lease after the last quorum
//!   acknowledgement, and a [`ReadConsistency::Linearizable`] read confirms leadership.
//! - Every write and read ends by its deadline ([`RaftConfig::with_request_timeout`],
//!   [`RaftHandle::write_within`]) with [`RaftError::QuorumUnavailable`] or
//!   [`RaftError::Timeout`] if it cannot finish.
//! - A process whose node id the cluster lists as started again elsewhere
//!   ([`DatacakeHandle::superseded_by`](datacake_node::DatacakeHandle::superseded_by): it
//!   stalled until held dead) stops Raft, and its handle fails every call with
//!   [`RaftError::Superseded`]: two processes under one id could vote twice in a term. Its
//!   peers refuse its Raft messages as soon as they list the restart (each message carries
//!   the sender's incarnation, [`DatacakeHandle::generation`](datacake_node::DatacakeHandle::generation)).
//! - Writes that arrive while a log entry is being replicated share the next entry (one
//!   fsync and one replication round for all of them); each is still applied on its own, in
//!   order, with its own response. A command over 1 MiB archived is refused with
//!   [`RaftError::CommandTooLarge`].
//! - Commands, responses, queries and answers are rkyv archives: the [`StateMachine`]'s types
//!   derive `rkyv::Archive`, `rkyv::Serialize` and `rkyv::Deserialize` (rkyv is re-exported
//!   as [`rkyv`]). A command is archived once by the writer and checked (bytecheck) where it
//!   is applied. openraft's own messages and log entries are encoded with postcard.
//! - [`LogStorage::InMemory`] for tests; [`LogStorage::Durable`] keeps the log and vote in SQLite,
//!   fsynced before Raft is told they are saved, and the latest snapshot in a file. A
//!   leader with a durable log also sends its entries to the voters ahead of its own fsync,
//!   so theirs overlap it (a commit then waits for about one fsync instead of two in a row;
//!   the README's "Durability" explains the rule). Both
//!   files carry a storage format version; a file of another version (such as the JSON of
//!   earlier releases) is refused at start with [`RaftError::IncompatibleFormat`].
//! - **Metrics** go through the [`metrics`](https://docs.rs/metrics) facade (the
//!   application picks the exporter): client write latency
//!   (`datacake_raft_write_duration_seconds{outcome}`), leader changes
//!   (`datacake_raft_leader_changes_total`, from the same derivation as
//!   [`RaftEvent::LeaderChanged`]), and the gauges `datacake_raft_term` and
//!   `datacake_raft_applied_index`. The README's "Metrics" lists them.
//!
//! openraft's types never appear in this crate's API.
//!
//! # Example
//! A one-node cluster (`bootstrap_expect = 1`) replicating a counter:
//! ```
//! use std::time::Duration;
//! use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
//! use datacake_raft::{RaftConfig, RaftExtension, ReadConsistency, StateMachine};
//!
//! #[derive(Default)]
//! struct Counter(i64);
//!
//! impl StateMachine for Counter {
//!     type Command = i64;
//!     type Response = i64;
//!     type Query = ();
//!     type Answer = i64;
//!
//!     fn apply(&mut self, delta: i64) -> i64 {
//!         self.0 += delta;
//!         self.0
//!     }
//!     fn read(&self, _query: ()) -> i64 {
//!         self.0
//!     }
//!     fn snapshot(&self) -> Vec<u8> {
//!         self.0.to_le_bytes().to_vec()
//!     }
//!     fn restore(&mut self, snapshot: &[u8]) {
//!         self.0 = i64::from_le_bytes(snapshot.try_into().unwrap_or_default());
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let local = "127.0.0.1:0".parse()?;
//! let node = DatacakeNodeBuilder::new(1, ConnectionConfig::new(local, local, Vec::<String>::new()))
//!     .connect()
//!     .await?;
//! let config = RaftConfig::new(1)
//!     .with_election_timeout(Duration::from_millis(150), Duration::from_millis(300))
//!     .with_heartbeat_interval(Duration::from_millis(50));
//! let raft = node.add_extension(RaftExtension::new(Counter::default(), config)).await?;
//!
//! let mut events = raft.events();
//! while !raft.is_leader() {
//!     events.next().await; // role and leader changes
//! }
//! assert_eq!(raft.write(5).await?, 5);
//! assert_eq!(raft.write(-2).await?, 3);
//! assert_eq!(raft.read((), ReadConsistency::Linearizable).await?, 3);
//!
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod bootstrap;
mod campaign;
mod codec;
mod committed;
mod config;
#[cfg(test)]
mod conformance;
mod dir_lock;
mod early;
mod error;
mod events;
mod extension;
mod format;
mod guard;
mod handle;
mod log_store;
mod log_writer;
mod machine;
mod machine_store;
mod metrics;
mod network;
mod policy;
mod proposer;
mod replica;
mod sqlite_log;
#[cfg(test)]
mod sqlite_log_tests;
mod types;

pub use config::{LogStorage, RaftConfig, DEFAULT_MAX_SNAPSHOT_SIZE, DEFAULT_REQUEST_TIMEOUT};
pub use error::RaftError;
pub use events::{RaftEvent, RaftEvents, RaftStatus, Role};
pub use extension::RaftExtension;
pub use handle::{RaftHandle, ReadConsistency};
pub use machine::StateMachine;
/// rkyv 0.8, which the [`StateMachine`]'s types derive `Archive`, `Serialize` and
/// `Deserialize` from (with `#[rkyv(crate = datacake_raft::rkyv)]` when rkyv is not a direct
/// dependency).
pub use rkyv;
