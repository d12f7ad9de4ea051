//! Integration tests of `datacake-raft`: whole nodes in one process, Raft over the nodes'
//! RPC servers on loopback.

mod batching;
mod cluster;
mod durability;
mod fixtures;
mod linearizability;
mod membership;
mod metrics;
