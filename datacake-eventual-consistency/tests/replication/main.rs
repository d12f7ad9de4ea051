//! Integration tests of the replicated store: single node, clusters, catch-up.

mod catch_up;
mod cluster;
mod fixtures;
mod single_node;
mod tombstones;
