//! A durable [`Storage`](datacake_eventual_consistency::Storage) for the eventually consistent
//! store, on SQLite (bundled: no system library needed).
//!
//! [`SqliteStorage::open`] opens (or creates) a database file; give it to an
//! [`EventuallyConsistentStoreExtension`](datacake_eventual_consistency::EventuallyConsistentStoreExtension)
//! and a node's documents survive restarts.
//!
//! # Guarantees
//! - **Durability.** The database runs in WAL mode. A write whose call returned `Ok` survives
//!   the process being killed right after (tested with `SIGKILL`), and a crash or power loss
//!   does not corrupt the database (given a drive that honours `fsync`). What a power loss or
//!   OS crash may take depends on [`Synchronous`], chosen with [`SqliteStorage::open_with`]:
//!   - [`Synchronous::Normal`] (the default, and what [`SqliteStorage::open`] uses): a commit
//!     is not fsynced, so the most recent acknowledged writes may be lost (rolled back).
//!   - [`Synchronous::Full`]: the WAL is fsynced at every commit, so an acknowledged write
//!     survives a power loss, at the cost of one fsync per commit (shared by the writes that
//!     group commit puts in one transaction).
//! - **One storage per database.** An open locks `<database>-lock` until the storage's last
//!   clone is dropped and its last write committed; another storage on the same file (a
//!   second process, or a reopen while the previous storage still commits) waits up to
//!   [`SqliteStorageOptions::with_lock_wait`] and then fails with
//!   [`SqliteStorageError::InUse`]. Two stores sharing rows could overwrite each other's
//!   tombstones with documents they never saw deleted.
//! - **Atomic bulk writes.** `multi_put`, `mark_many_as_tombstone` and `remove_tombstones` are
//!   all or nothing: on error nothing was applied.
//! - **No blocking on the runtime.** Dedicated threads own the connections (on disk one that
//!   writes and one that reads, so reads proceed while a write commits); the async methods
//!   hand them work over a channel.
//! - **Group commit.** Writes queued at the same time share one transaction, each in its own
//!   savepoint (a failing write is rolled back alone), and are acknowledged once it commits:
//!   concurrent callers share commits instead of paying one each.
//! - **Lossless timestamps.** A document's [`HLCTimestamp`](datacake_crdt::HLCTimestamp) is
//!   stored as its three fields (millis, counter, node).
//! - **Versioned schema.** A `datacake_schema` table holds one row with the schema version
//!   ([`SCHEMA_VERSION`]); a database from a newer version is refused, not modified.
//! - **Clear errors.** A file that is not a SQLite database (or is damaged) fails `open` with
//!   [`SqliteStorageError::NotADatabase`].
//!
//! # Example
//! ```
//! use datacake_eventual_consistency::{Consistency, EventuallyConsistentStoreExtension};
//! use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
//! use datacake_sqlite::SqliteStorage;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let storage = SqliteStorage::open_in_memory().await?; // or SqliteStorage::open(path)
//! let local = "127.0.0.1:0".parse()?;
//! let node = DatacakeNodeBuilder::new(1, ConnectionConfig::new(local, local, Vec::<String>::new()))
//!     .connect()
//!     .await?;
//! let store = node
//!     .add_extension(EventuallyConsistentStoreExtension::new(storage))
//!     .await?;
//!
//! let users = store.handle_with_keyspace("users");
//! users.put(1, "alice", Consistency::All).await?;
//! assert_eq!(&users.get(1, Consistency::All).await?.expect("written").data[..], b"alice");
//!
//! drop(store);
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod error;
mod lock;
mod options;
mod schema;
mod storage;
mod worker;

pub use error::SqliteStorageError;
pub use options::{SqliteStorageOptions, Synchronous, DEFAULT_LOCK_WAIT};
pub use schema::SCHEMA_VERSION;
pub use storage::SqliteStorage;
