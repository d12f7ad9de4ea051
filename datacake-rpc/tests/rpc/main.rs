//! Integration tests of datacake-rpc on the real network (loopback).

mod bad_input;
mod calls;
#[path = "../support/certs.rs"]
mod certs;
mod connection;
mod fixtures;
mod limits;
mod metrics;
mod routing;
mod streams;
mod tls;
