//! Shared fixtures: nodes on 127.0.0.1 port 0 running the counter, and a rogue client.

use std::net::SocketAddr;
use std::time::Duration;

use counter_extension::{CounterExtension, CounterHandle, CounterService};
use datacake_node::DatacakeNode;
use datacake_rpc::{Channel, RpcClient, RpcService};

/// How long a test waits for something that should happen promptly.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// One node of a test cluster with its counter.
pub(crate) struct TestNode {
    pub(crate) node: DatacakeNode,
    pub(crate) counter: CounterHandle,
}

impl TestNode {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.node.me().public_addr
    }
}

/// A node `id` on loopback joining `seeds`.
pub(crate) use test_helper::node::start as start_plain_node;

/// A node `id` joining `seeds` that runs `service` where the counter's would be.
pub(crate) async fn start_stand_in(
    id: u32,
    seeds: Vec<String>,
    service: impl RpcService,
) -> DatacakeNode {
    let node = start_plain_node(id, seeds).await;
    node.add_rpc_service(service);
    node
}

/// A node `id` joining `seeds` running `extension`.
pub(crate) async fn start_with(
    id: u32,
    seeds: Vec<String>,
    extension: CounterExtension,
) -> TestNode {
    let node = start_plain_node(id, seeds).await;
    let counter = node.add_extension(extension).await.expect("counter starts");
    TestNode { node, counter }
}

/// A node `id` joining `seeds` running the counter with a 2 s peer deadline.
pub(crate) async fn start(id: u32, seeds: Vec<String>) -> TestNode {
    start_with(id, seeds, CounterExtension::new()).await
}

/// Nodes 1..=n, each seeing all the others live.
pub(crate) async fn cluster(n: u32) -> Vec<TestNode> {
    let first = start(1, Vec::new()).await;
    let seed = first.addr().to_string();
    let mut nodes = vec![first];
    for id in 2..=n {
        nodes.push(start(id, vec![seed.clone()]).await);
    }
    for node in &nodes {
        node.node
            .wait_for_nodes(1..=n, DEADLINE)
            .await
            .expect("cluster forms");
    }
    nodes
}

/// A client of the counter service at `addr` that is no node at all: it sends whatever a
/// test wants.
pub(crate) fn rogue_client(addr: SocketAddr) -> RpcClient<CounterService> {
    let mut client = RpcClient::new(Channel::connect(addr));
    client.set_timeout(DEADLINE);
    client
}
