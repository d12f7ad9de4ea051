//! Integration tests of datacake-rpc on the real network (loopback).

mod bad_input;
mod calls;
mod connection;
mod fixtures;
mod limits;
mod routing;
