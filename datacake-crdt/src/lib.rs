//! Conflict-free building blocks for Datacake's replication: hybrid logical clock timestamps
//! and an observed-remove set of keys that does not leak tombstones.
//!
//! Pure data structures: no async runtime, no I/O.
//!
//! # Concepts
//!
//! * [`HLCTimestamp`] — `(millis, counter, node)`: milliseconds since the UNIX epoch, a
//!   16-bit logical counter and the issuing node's `u32` id, ordered in that order. It is also
//!   the clock: [`send`](HLCTimestamp::send) issues a timestamp strictly greater than the last,
//!   whatever the wall clock does; [`recv`](HLCTimestamp::recv) folds in a remote timestamp so
//!   that later local ones order after it, refusing one too far ahead
//!   ([`TimestampError::ClockDrift`]) or one claiming our own node id
//!   ([`TimestampError::DuplicateNode`]). The clock never waits and the counter never wraps:
//!   when the 65,536 counter values of a millisecond are used up, the next stamp takes the
//!   next millisecond with counter 0, ahead of the wall clock if need be (a *logical*
//!   millisecond), until the wall clock catches up. The clock logic also exists as pure
//!   functions on a packed `u64` ([`next_send`], [`next_recv`]) for a lock-free clock in an
//!   `AtomicU64`.
//! * [`OrSWotSet`] — a set of `u64` keys, each with the timestamp of its last write, where the
//!   latest insert or delete wins and replicas merge in any order to the same state. Deletes
//!   leave tombstones that [`purge_old_deletes`](OrSWotSet::purge_old_deletes) drops once
//!   every active source has moved past them, without letting a late, older write bring the
//!   key back. Unlike the original datacake set, a source that was never written to does not
//!   keep tombstones alive forever.
//!
//! # Example
//!
//! Two nodes exchange timestamps, write to their own replica, and merge:
//!
//! ```
//! use datacake_crdt::{HLCTimestamp, OrSWotSet};
//!
//! let mut clock_a = HLCTimestamp::now(1);
//! let mut clock_b = HLCTimestamp::now(2);
//!
//! // Node a writes key 1; its stamp travels to node b with the write.
//! let put = clock_a.send()?;
//! let mut replica_a = OrSWotSet::<1>::new();
//! replica_a.insert(1, put);
//!
//! // Node b folds the stamp into its clock, so what it does next orders after it.
//! clock_b.recv(&put)?;
//! let del = clock_b.send()?;
//! assert!(del > put);
//! let mut replica_b = OrSWotSet::<1>::new();
//! replica_b.insert(1, put);
//! replica_b.delete(1, del);
//! replica_b.insert(2, clock_b.send()?);
//!
//! // Merging in either direction gives the same set: key 1 deleted, key 2 present.
//! let mut merged_a = replica_a.clone();
//! merged_a.merge(replica_b.clone());
//! replica_b.merge(replica_a);
//! assert_eq!(merged_a, replica_b);
//! assert_eq!(merged_a.get(&1), None);
//! assert!(merged_a.get(&2).is_some());
//! # Ok::<(), datacake_crdt::TimestampError>(())
//! ```
//!
//! # Performance
//!
//! Figures with their command and machine are in the crate's `README.md` (not here, where
//! they would go stale unnoticed). In short: stamping does not read the system clock on
//! every call (the wall clock is re-read at most every 20,000 CPU cycles per thread, see
//! [`wall_clock_millis`]); a burst beyond the 16-bit counter's 65,536 stamps per
//! millisecond borrows the next logical milliseconds rather than waiting; live keys and
//! tombstones sit in parallel arrays sorted by [`key_hash`], with a small delta of recent
//! inserts in hash maps sharded by the same hash, so that
//! [`OrSWotSet::visit_hash_ranges`] reads a range of hashes without scanning the set.
//!
//! # Features
//!
//! * `rkyv` — [`HLCTimestamp`] derives rkyv 0.8 `Archive`/`Serialize`/`Deserialize`; its
//!   archived form is validated by bytecheck (including the 48-bit millis range) and compares
//!   directly with native timestamps. [`OrSWotSet`] gains `to_bytes` / `from_bytes`, which
//!   validate the bytes before building a set.

mod delta;
mod error;
mod key_hash;
mod key_map;
mod orswot;
mod timestamp;
mod version;
mod wall_clock;

pub use error::{SetError, TimestampError};
pub use key_hash::{hash_prefix, hash_prefix_range, key_hash};
pub use orswot::{Key, OrSWotSet, StateChanges};
#[cfg(feature = "rkyv")]
pub use timestamp::ArchivedHLCTimestamp;
pub use timestamp::{
    next_recv, next_recv_now, next_send, next_send_now, HLCTimestamp, DEFAULT_MAX_DRIFT, MAX_MILLIS,
};
pub use version::Version;
pub use wall_clock::wall_clock_millis;
