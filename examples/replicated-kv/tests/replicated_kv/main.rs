//! End-to-end tests of the `replicated-kv` binary: real processes, real sockets, real disks.

mod api;
mod cluster;
mod fixtures;
mod limits;
mod security;
