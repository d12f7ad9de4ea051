//! A leaderless, eventually consistent, replicated document store over any [`Storage`].
//!
//! Attach an [`EventuallyConsistentStoreExtension`] to a running
//! [`DatacakeNode`](datacake_node::DatacakeNode) and get an [`EventuallyConsistentStore`]:
//! documents (`u64` id, bytes) in named keyspaces, replicated to every live node, with a
//! [`Consistency`] level per write.
//!
//! # Concepts
//! - A [`Storage`] holds the documents and tombstones of a node; implement it for your database
//!   or use a ready one. Run the conformance suite (`test_suite::run_test_suite`, feature
//!   `test-suite`) against your implementation; `test_utils::MemStore` (feature `test-utils`)
//!   is an in-memory one.
//! - **Last writer wins.** Every write is stamped by the node's hybrid logical clock. In memory
//!   the store keeps only `(id, timestamp)` metadata per keyspace (`KeyspaceState` in `keyspace.rs`), in an
//!   [`OrSWotSet`](datacake_crdt::OrSWotSet) that decides every write: the newest timestamp
//!   wins, a delete is a write (and wins a tie). Documents stay in the storage. A local write
//!   is never lost to a stale clock: it is stamped after whatever the keyspace holds for its
//!   id, also after a restart whose wall clock is behind the previous run's.
//! - **Members and replicas.** Every member the cluster knows of holds every key: live
//!   members and down ones (crashed, or shut down for a deploy) until they are removed with
//!   [`EventuallyConsistentStore::remove_member`]. The store records them, persisted in the
//!   reserved keyspace [`MEMBERS_KEYSPACE`], so the record survives restarts.
//! - **Consistency levels are k of n.** A write applies locally, then goes to every live
//!   peer through one outbound queue per peer, drained in batches (cut by count and by
//!   bytes) by one sender task per peer. It returns once *any* k of its replicas
//!   acknowledged, k counted over the known members by the rule of
//!   [`Requirement`](datacake_node::Requirement) (`Quorum`: a majority of the known members
//!   with this node; `All`: every one): a crashed peer the failure detector has not noticed
//!   yet does not fail a `Quorum` write another peer acknowledged. Too few live replicas fail
//!   the write before anything is written ([`ConsistencyError::NotEnoughNodes`]: on the last
//!   live node of three, `Quorum` and `All` are refused, not met alone), and so does a node
//!   that was given seeds but has seen no member yet ([`ConsistencyError::NotJoined`]: it
//!   knows no replica to count; see
//!   [`DatacakeHandle::expects_peers`](datacake_node::DatacakeHandle::expects_peers));
//!   replicas that refuse so that the level can no longer be met fail it at once
//!   ([`StoreError::ReplicaFailed`], naming the peer and its error); otherwise it fails at its deadline
//!   ([`ConsistencyError::ConsistencyFailure`]). In both failure cases after the write
//!   started, the local write is kept and replication and repair continue. A queued write no
//!   caller waits for is replaced by a newer such write of the same key before it is sent.
//! - **Reads at a level** ([`ReplicatedStoreHandle::get`]) ask the replicas the same way and
//!   return the newest version once k answered; stale replicas that answered are repaired.
//!   With `Quorum` writes and `Quorum` reads a reader sees the latest acknowledged write.
//! - **Write order.** Writes of one key reach the storage one at a time, in the order the
//!   CRDT decided them; writes of different keys go to the storage concurrently (there is no
//!   keyspace-wide write lock). A write that started reaching the storage completes even if
//!   its caller goes away, so the storage and the in-memory state never disagree.
//! - **Anti-entropy repair** runs per peer every repair interval and compares compact
//!   per-keyspace digests (`digest.rs`): buckets by key hash, each an order-independent sum of
//!   `hash(key, timestamp)` of its entries, as many buckets as the keyspace's size calls for
//!   (an empty keyspace has none). Peers exchange one total per keyspace, then bucket digests
//!   of the keyspaces that differ, then `(key, timestamp)` lists only for the buckets that
//!   differ, then fetch only the documents they lack (`plan_repair` in `repair.rs`). Every
//!   reply is cut by bytes under the RPC body limit and continued, so any number of
//!   keyspaces and documents of any accepted size catch up; fetched documents are written
//!   reply by reply, so a keyspace under repair holds at most one message of them, and at
//!   most 16 keyspaces are repaired at once. A node that joins late or was down catches up
//!   this way. Rounds with different peers run side by side (a slow peer delays only its
//!   own), and each is bounded by
//!   [`with_repair_round_timeout`](EventuallyConsistentStoreExtension::with_repair_round_timeout):
//!   one cut off keeps what it took and confirms nothing. A peer reads the requested
//!   buckets straight from its CRDT, which keeps ids in the order of the bucketing hash,
//!   taking the keyspace's lock for steps of at most 4,096 entries: writes never wait for a
//!   scan of the whole keyspace.
//! - **Tombstones** are purged once every known member, live or down, has *confirmed* them.
//!   A node learns that a peer holds its deletes from its own repair pull from the peer,
//!   never from the peer's word, and a pull confirms only what the node held when it began:
//!   a delete stamped earlier but taken from another peer afterwards waits for the next. A
//!   down member holds purges back until it is removed or has been down for longer than the
//!   tombstone grace (default 24 hours), counted on both the wall clock and this process's
//!   monotonic clock, so a wall-clock step cannot shorten it (a restart starts the monotonic
//!   count again: purges only wait longer). The CRDT's purge
//!   watermark keeps refusing older writes of purged ids; it is persisted through the
//!   [`Storage`] itself, in the reserved keyspace [`PURGE_WATERMARK_KEYSPACE`], and reloaded
//!   on start. **A node that returns after the cluster purged past what it saw** finds, while
//!   pulling from a peer, its copies the peer lacks at or below the peer's watermark: it
//!   forgets them rather than serving or pushing them, so a deleted document never comes
//!   back, on it or on a node that copies from it. Until that pull succeeds, its own reads
//!   may still see them; a reader elsewhere drops from peers' answers the versions of ids it
//!   holds nothing for at or below its own purge watermark, so a read at a level on a node
//!   that purged never serves them. Keyspace names starting with
//!   [`RESERVED_KEYSPACE_PREFIX`] are refused ([`StoreError::ReservedKeyspace`]) and never
//!   listed.
//! - **Clock skew.** The store assumes the nodes' wall clocks stay within the maximum drift
//!   of one another (default 5 s, [`Clock::max_drift`](datacake_node::Clock::max_drift)).
//!   Every remote timestamp (replicated writes, repaired entries, read replies, peers'
//!   clocks) is checked against the local clock's drift bound: a call whose clock is too far
//!   ahead is refused, and a stamp too far ahead inside a message is skipped; both are
//!   counted ([`StoreStatistics::clock_skew_rejected`]). So no stamp near the clock's maximum
//!   can make a key immutable, and a node whose clock runs fast cannot push its writes onto
//!   its peers while it does. Skipped is not forgotten: the entry stays on the node that
//!   wrote it, repair offers it again, and a peer takes it once the peer's own clock is within
//!   the drift of the stamp. Writes a node stamps while its clock runs `X` ahead (beyond the
//!   drift) would thus reach the others about `X` minus the drift later and then win, as
//!   last-writer-wins orders them, over what was written elsewhere in between, acknowledged
//!   deletes included. So a node **fences itself**: at the start of each repair round it
//!   asks the peer for its clock (a probe no peer refuses for skew), and while more than
//!   half of its live peers' clocks (each bounded above by the reading, the probe's round
//!   trip and the time since) lie more than the drift bound behind its wall clock, so that
//!   they would refuse its stamps, it refuses every write before storing anything
//!   ([`StoreError::ClockAhead`]). Readings age on the monotonic clock, so a wall clock
//!   that jumps ahead after a reading is fenced from its next write on. What a node stamps
//!   while it holds no fresh reading of most of its live peers still wins later: the
//!   first repair interval after it starts, or while its rounds with them run longer than
//!   the 30 s a reading counts for. Within the drift bound, a clock running ahead wins by
//!   up to the bound, as last-writer-wins does. One peer whose clock runs slow fences nobody: it is behind for
//!   each of the others, but not most of their peers (in a cluster of two, a peer's slow
//!   clock fences the other node: safe, but it stops writes). Keep clocks synchronised
//!   (NTP); peers' `clock_skew_rejected` rising is the sign of a skewed clock.
//! - **Limits.** Documents larger than fit in one message are refused at `put`
//!   ([`StoreError::DocumentTooLarge`]); keyspaces are limited in number and name length.
//! - **Metrics.** Besides [`StoreStatistics`], the store records through the
//!   [`metrics`](https://docs.rs/metrics) facade (the application picks the exporter): read
//!   and write latency by consistency `level` (`datacake_store_read_duration_seconds`,
//!   `datacake_store_write_duration_seconds`), the replication backlog gauge, and a
//!   `datacake_store_..._total` counter per statistic, bumped by the same helper. The
//!   README's "Metrics" lists them.
//!
//! # Example
//! ```
//! use datacake_eventual_consistency::test_utils::MemStore;
//! use datacake_eventual_consistency::{Consistency, EventuallyConsistentStoreExtension};
//! use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let local = "127.0.0.1:0".parse()?;
//! let node = DatacakeNodeBuilder::new(1, ConnectionConfig::new(local, local, Vec::<String>::new()))
//!     .connect()
//!     .await?;
//! let store = node
//!     .add_extension(EventuallyConsistentStoreExtension::new(MemStore::default()))
//!     .await?;
//!
//! let users = store.handle_with_keyspace("users");
//! users.put(1, "alice", Consistency::All).await?;
//! assert_eq!(&users.get(1, Consistency::All).await?.expect("written").data[..], b"alice");
//! users.del(1, Consistency::All).await?;
//! assert_eq!(users.get_local(1).await?, None);
//!
//! // The store stays up while the node leaves: its peers pull what it alone holds.
//! node.shutdown().await;
//! drop(store);
//! # Ok(())
//! # }
//! ```
//!
//! # Limitations
//! - One store per node (the RPC service has a fixed name).
//! - A purge watermark refuses, below it, writes of every id the keyspace does not hold, not
//!   only of the purged ones. A node raises it only after pulling from every member past it,
//!   so this refuses only writes no member held then: stale ones, those of a member that
//!   was down past the grace (which it then forgets, as above), and new writes of a node
//!   whose clock lags the cluster's purges (one that joined with a slow clock). A peer that
//!   refuses a put so says so in its reply, and the write does not count it for its level.
//! - A graceful leave ([`DatacakeNode::shutdown`](datacake_node::DatacakeNode::shutdown)
//!   with the store still up) first has every live peer pull from the leaving node once,
//!   within the node's leave timeout. A member down past the grace, removed, or cut off from
//!   every peer as it leaves, loses the writes it acknowledged alone (at `None`) and never
//!   replicated: the cluster stopped waiting for it, and a failed replication batch is not
//!   retried. So does a leave whose hand-off ran out of time, for what it did not reach.
//!   Write at `One` or above what must outlive its node.
//! - A read asks as many replicas as its level needs first, and the others the level counts
//!   after 20 ms or at a failure; answers that come after the level was met feed read repair
//!   only. Each answer carries whole documents (no digest reads).
#![forbid(unsafe_code)]

mod ack;
mod anti_entropy;
mod clock_fence;
mod config;
mod digest;
mod error;
mod handle;
mod handoff;
mod keyspace;
mod members;
mod messages;
mod metrics;
mod read;
mod repair;
mod replica;
mod replication;
mod service;
mod slot;
mod storage;
mod store;
#[cfg(test)]
mod testing;
mod watermark;
mod write;

#[cfg(feature = "test-suite")]
pub mod test_suite;
#[cfg(feature = "test-utils")]
pub mod test_utils;

pub use config::{
    DEFAULT_MAX_BATCH, DEFAULT_MAX_KEYSPACES, DEFAULT_MAX_KEYSPACE_NAME_LEN,
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_READ_TIMEOUT, DEFAULT_REPAIR_INTERVAL,
    DEFAULT_REPAIR_ROUND_TIMEOUT, DEFAULT_RPC_TIMEOUT, DEFAULT_TOMBSTONE_GRACE,
    DEFAULT_WRITE_TIMEOUT,
};
pub use datacake_node::{Consistency, ConsistencyError};
pub use error::{ConfigError, StoreError};
pub use handle::{ReplicatedKeyspaceHandle, ReplicatedStoreHandle, ReplicatorKeyspaceHandle};
pub use members::MEMBERS_KEYSPACE;

/// Not public API (hidden, no semver promise): what the `benchmarks` crate measures inside
/// the store.
#[doc(hidden)]
pub mod bench_support {
    use crate::config::{StoreConfig, ENTRY_OVERHEAD};
    use crate::keyspace::{KeyspaceState, SCAN_STEP_ENTRIES};
    use crate::Metadata;

    /// A keyspace's in-memory state (ids, timestamps, digest), for its memory per key.
    #[derive(Debug)]
    pub struct KeyspaceMemory(KeyspaceState);

    impl KeyspaceMemory {
        /// The state a keyspace whose storage lists `metadata` holds after start-up.
        pub fn from_metadata(metadata: impl IntoIterator<Item = Metadata>) -> Self {
            Self(KeyspaceState::from_metadata(metadata))
        }

        /// Ids held (documents and tombstones).
        pub fn len(&self) -> usize {
            self.0.len()
        }

        /// Whether no id is held.
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }

        /// What one bucket request holds the keyspace's lock for at most once: one step of
        /// the scan of `buckets` (ascending) at resolution `bits`, as a store with the
        /// default message size runs it. Returns how many entries the step collected.
        pub fn scan_buckets(&self, bits: u8, buckets: &[u32]) -> usize {
            let max_entries = StoreConfig::default().message_budget() / ENTRY_OVERHEAD;
            let step = SCAN_STEP_ENTRIES.min(max_entries);
            let (entries, _) = self.0.bucket_entries_unsorted(bits, buckets, step);
            entries.len()
        }

        /// The baseline for [`scan_buckets`](Self::scan_buckets): every entry of the
        /// keyspace visited and those of `buckets` kept, as bucket requests were answered
        /// before the set kept its ids in bucket order. Returns how many entries were kept.
        pub fn scan_everything(&self, bits: u8, buckets: &[u32]) -> usize {
            let mut wanted = vec![false; 1 << bits];
            for b in buckets {
                wanted[*b as usize] = true;
            }
            self.0
                .entries()
                .filter(|e| wanted[e.bucket_at(bits) as usize])
                .count()
        }
    }
}
pub use storage::{BulkMutationError, Document, Key, Metadata, Storage};
pub use store::{EventuallyConsistentStore, EventuallyConsistentStoreExtension, StoreStatistics};
pub use watermark::{PURGE_WATERMARK_KEYSPACE, RESERVED_KEYSPACE_PREFIX};
