//! End-to-end tests of the `replicated-kv` binary: real processes, real sockets, real disks.

mod api;
mod cluster;
mod config;
mod deploy;
mod fixtures;
mod lifecycle;
mod limits;
mod security;
