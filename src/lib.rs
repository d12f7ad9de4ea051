//! # Datacake
//!
//! A toolkit for building distributed data systems in Rust. This umbrella crate has no code
//! of its own: it re-exports the member crates as modules, each behind a feature of the same
//! name.
//!
//! | module | crate | what it gives |
//! |---|---|---|
//! | [`crdt`] | `datacake-crdt` | hybrid logical clock timestamps and an OR-set CRDT |
//! | [`rpc`] | `datacake-rpc` | zero-copy, validated rkyv RPC over HTTP/2 |
//! | [`node`] | `datacake-node` | gossip membership, cluster clock, node selection, extensions |
//! | [`eventual_consistency`] | `datacake-eventual-consistency` | a leaderless replicated document store over any `Storage` |
//! | [`sqlite`] | `datacake-sqlite` | `SqliteStorage`, the durable default `Storage` |
//! | [`raft`] | `datacake-raft` | a strongly consistent replicated state machine on openraft (commands are rkyv archives: `datacake::raft::rkyv`) |

#[cfg(feature = "crdt")]
#[doc(inline)]
pub use datacake_crdt as crdt;
#[cfg(feature = "eventual-consistency")]
#[doc(inline)]
pub use datacake_eventual_consistency as eventual_consistency;
#[cfg(feature = "node")]
#[doc(inline)]
pub use datacake_node as node;
#[cfg(feature = "raft")]
#[doc(inline)]
pub use datacake_raft as raft;
#[cfg(feature = "rpc")]
#[doc(inline)]
pub use datacake_rpc as rpc;
#[cfg(feature = "sqlite")]
#[doc(inline)]
pub use datacake_sqlite as sqlite;

/// Porting from datacake 0.8: every API change, why it was made, and the code before and
/// after (its examples are compiled and run as doctests).
#[doc = include_str!("../docs/porting-from-0.8.md")]
pub mod porting_from_0_8 {}

// Compiles and runs the README's examples as doctests, so the quick-start cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
