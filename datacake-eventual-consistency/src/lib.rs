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
//!   the store keeps only `(id, timestamp)` metadata per keyspace ([`KeyspaceState`]), in an
//!   [`OrSWotSet`](datacake_crdt::OrSWotSet) that decides every write: the newest timestamp
//!   wins, a delete is a write (and wins a tie). Documents stay in the storage.
//! - **Writes** ([`ReplicatedStoreHandle::put`] and friends) apply locally, then go to every
//!   live peer through one outbound queue per peer, drained in batches by one sender task per
//!   peer. A queued write that no caller waits for is replaced by a newer such write of the
//!   same key before it is sent (the peer would keep only the newest), so overwriting a hot
//!   key faster than the fan-out sends costs one queued mutation, not one per write. A write
//!   returns once the peers its consistency level selected have acknowledged it,
//!   or fails with [`ConsistencyError::ConsistencyFailure`] at its deadline (the local write is
//!   kept; replication continues). [`ConsistencyError::NotEnoughNodes`] is returned before
//!   writing when the level cannot be met.
//! - **Write order.** Writes of one key reach the storage one at a time, in the order the
//!   CRDT decided them; writes of different keys go to the storage concurrently (there is no
//!   keyspace-wide write lock). A write waits only for a write of the same key still under
//!   way, and tombstone purge briefly holds off the keyspace's writes.
//! - **Anti-entropy repair** runs per peer every repair interval and compares compact
//!   per-keyspace [`KeyspaceDigest`]s: fixed buckets by key hash, each an order-independent sum
//!   of `hash(key, timestamp)` of its entries. Peers exchange one total per keyspace, then
//!   bucket digests of the keyspaces that differ, then `(key, timestamp)` lists only for the
//!   buckets that differ, then fetch only the documents they lack ([`plan_repair`]). A node
//!   that joins late or was down catches up this way.
//! - **Tombstones** are purged (every tenth repair round) once every live member has pulled
//!   from this node (through repair) past them, plus a grace period; the CRDT's purge
//!   watermark keeps refusing older writes of purged ids, so a purged delete never resurrects
//!   the document on this node. The watermark is persisted through the [`Storage`] itself, in
//!   the reserved keyspace [`PURGE_WATERMARK_KEYSPACE`] (one document per keyspace, written
//!   before the tombstones are removed), and reloaded on start, so this holds across
//!   restarts. Keyspace names starting with [`RESERVED_KEYSPACE_PREFIX`] are refused
//!   ([`StoreError::ReservedKeyspace`]) and never listed.
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
//! assert_eq!(&users.get(1).await?.expect("written").data[..], b"alice");
//! users.del(1, Consistency::All).await?;
//! assert_eq!(users.get(1).await?, None);
//!
//! drop(store);
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Limitations
//! - One store per node (the RPC service has a fixed name).
//! - A purge watermark refuses, below it, writes of every id the keyspace does not hold, not
//!   only of the purged ones (the grace period keeps such writes rare).

mod anti_entropy;
mod digest;
mod error;
mod handle;
mod keyspace;
mod messages;
mod repair;
mod replica;
mod replication;
mod service;
mod slot;
mod storage;
mod store;
mod watermark;

#[cfg(feature = "test-suite")]
pub mod test_suite;
#[cfg(feature = "test-utils")]
pub mod test_utils;

pub use datacake_node::{Consistency, ConsistencyError};
pub use digest::{bucket_of, entry_hash, BucketEntry, KeyspaceDigest, DIGEST_BUCKETS};
pub use error::StoreError;
pub use handle::{ReplicatedKeyspaceHandle, ReplicatedStoreHandle};
pub use keyspace::{KeyspaceState, Mutation, Outcome};
pub use repair::{plan_repair, RepairPlan};
pub use storage::{BulkMutationError, Document, Key, Metadata, Storage};
pub use store::{
    EventuallyConsistentStore, EventuallyConsistentStoreExtension, StoreStatistics,
    DEFAULT_MAX_BATCH, DEFAULT_REPAIR_INTERVAL, DEFAULT_RPC_TIMEOUT, DEFAULT_TOMBSTONE_GRACE,
    DEFAULT_WRITE_TIMEOUT,
};
pub use watermark::{PURGE_WATERMARK_KEYSPACE, RESERVED_KEYSPACE_PREFIX};
