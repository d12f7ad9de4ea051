//! Integration tests of the replicated store: single node, clusters, catch-up, faults.

mod catch_up;
mod clocks;
mod cluster;
mod fixtures;
mod handoff;
mod levels;
mod limits;
mod members;
mod reads;
mod single_node;
mod tombstones;
