//! Fixtures of the crate's own unit tests.

use std::time::Duration;

use datacake_node::{ConnectionConfig, DatacakeNode, DatacakeNodeBuilder};

/// How long unit tests wait on observable state.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A node with id `id` on loopback joining `seeds`, gossiping every 50 ms.
pub(crate) async fn node(id: u32, seeds: Vec<String>) -> DatacakeNode {
    let local = "127.0.0.1:0".parse().unwrap();
    DatacakeNodeBuilder::new(id, ConnectionConfig::new(local, local, seeds))
        .with_gossip_interval(Duration::from_millis(50))
        .connect()
        .await
        .expect("node connects")
}
