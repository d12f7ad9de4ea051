//! Nodes for tests: on loopback with an OS-chosen port, gossiping every
//! [`GOSSIP_INTERVAL`] so membership settles in tens of milliseconds.

use std::time::Duration;

use datacake_node::{ConnectionConfig, DatacakeNode, DatacakeNodeBuilder, NodeId};

/// How often test nodes gossip.
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(50);

/// The builder of a test node `id` joining `seeds` (`host:port` of running nodes), for
/// tests that set more options before connecting.
pub fn builder(id: NodeId, seeds: impl IntoIterator<Item = String>) -> DatacakeNodeBuilder {
    let local = "127.0.0.1:0".parse().expect("a socket address");
    DatacakeNodeBuilder::new(
        id,
        ConnectionConfig::new(local, local, seeds.into_iter().collect::<Vec<_>>()),
    )
    .with_gossip_interval(GOSSIP_INTERVAL)
}

/// A running test node `id` joining `seeds` (panics if it cannot start).
pub async fn start(id: NodeId, seeds: impl IntoIterator<Item = String>) -> DatacakeNode {
    builder(id, seeds)
        .connect()
        .await
        .expect("test node connects")
}
