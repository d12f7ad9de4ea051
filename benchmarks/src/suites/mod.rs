//! The benchmark suites. Each is one file with a `run` entry point returning a
//! [`SuiteReport`](crate::report::SuiteReport).

pub(crate) mod crdt;
pub(crate) mod ec;
pub(crate) mod gossip;
pub(crate) mod kv;
pub(crate) mod raft;
pub(crate) mod rpc;
pub(crate) mod sqlite;
