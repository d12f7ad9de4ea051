//! End-to-end tests of the `raft-kv` binary: real processes, sockets and disks.

mod api;
mod config;
mod fault;
mod fixtures;
mod lifecycle;
mod limits;
