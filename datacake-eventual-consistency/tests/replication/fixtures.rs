//! Shared fixtures: in-process clusters of nodes running the store over `MemStore` (or any
//! cloneable storage, e.g. a `FaultyStorage`).

use std::collections::BTreeMap;
use std::time::Duration;

use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{
    EventuallyConsistentStore, EventuallyConsistentStoreExtension, Metadata, ReplicatedStoreHandle,
    Storage,
};
use datacake_node::{DatacakeNode, DatacakeNodeBuilder};

/// How long tests wait for convergence.
pub(crate) const CONVERGE: Duration = Duration::from_secs(20);

/// One node of a test cluster.
pub(crate) struct TestNode<S: Storage = MemStore> {
    pub(crate) node: DatacakeNode,
    pub(crate) store: EventuallyConsistentStore<S>,
    pub(crate) storage: S,
}

impl<S: Storage> TestNode<S> {
    pub(crate) fn handle(&self) -> ReplicatedStoreHandle<S> {
        self.store.handle()
    }

    pub(crate) fn addr(&self) -> String {
        self.node.me().public_addr.to_string()
    }

    /// Stops the node abruptly, as a crash would (no leave announced); returns its storage
    /// for a restart.
    pub(crate) fn crash(self) -> S {
        drop(self.store);
        drop(self.node);
        self.storage
    }

    /// The node's metadata of `keyspace`, sorted.
    pub(crate) fn metadata(&self, keyspace: &str) -> Vec<Metadata> {
        let mut m = self.handle().iter_metadata(keyspace);
        m.sort_unstable_by_key(|(k, _, _)| *k);
        m
    }
}

/// A node `id`, joining `seeds`, that runs `service` where the store's would be (a peer that
/// refuses, fails or never answers; see [`stub_store_service`]).
pub(crate) async fn start_stand_in(
    id: u32,
    seeds: Vec<String>,
    service: impl datacake_rpc::RpcService,
) -> DatacakeNode {
    let node = test_helper::node::builder(id, seeds)
        .connect()
        .await
        .expect("node connects");
    node.add_rpc_service(service);
    node
}

/// Starts a node with `id` over `storage`, joining `seeds`.
pub(crate) async fn start_node(id: u32, seeds: Vec<String>, storage: MemStore) -> TestNode {
    start_node_with(id, seeds, storage, |ext| ext).await
}

/// The store extension as a test configures it.
pub(crate) type Extension<S = MemStore> = EventuallyConsistentStoreExtension<S>;

/// Like [`start_node`], with the extension adjusted by `configure`.
pub(crate) async fn start_node_with(
    id: u32,
    seeds: Vec<String>,
    storage: MemStore,
    configure: impl FnOnce(Extension) -> Extension,
) -> TestNode {
    start_node_full(id, seeds, storage, |b| b, configure).await
}

/// Like [`start_node`], with the node builder adjusted by `node` and the extension by
/// `configure`.
pub(crate) async fn start_node_full<S: Storage + Clone>(
    id: u32,
    seeds: Vec<String>,
    storage: S,
    node: impl FnOnce(DatacakeNodeBuilder) -> DatacakeNodeBuilder,
    configure: impl FnOnce(Extension<S>) -> Extension<S>,
) -> TestNode<S> {
    let node = node(test_helper::node::builder(id, seeds))
        .connect()
        .await
        .expect("node connects");
    add_store(node, storage, configure).await
}

/// Adds the store over `storage` to a connected `node`, the extension as the tests configure
/// it, adjusted by `configure`.
pub(crate) async fn add_store<S: Storage + Clone>(
    node: DatacakeNode,
    storage: S,
    configure: impl FnOnce(Extension<S>) -> Extension<S>,
) -> TestNode<S> {
    let extension = EventuallyConsistentStoreExtension::new(storage.clone())
        .with_repair_interval(Duration::from_millis(200))
        .with_write_timeout(Duration::from_secs(2));
    let store = node
        .add_extension(configure(extension))
        .await
        .expect("store starts");
    TestNode {
        node,
        store,
        storage,
    }
}

/// `node` (node `id`) in the cluster `secure` over mutual TLS, with a certificate from `ca`.
pub(crate) fn secured(
    ca: &datacake_node::certs::ClusterCa,
    id: u32,
    node: DatacakeNodeBuilder,
) -> DatacakeNodeBuilder {
    let cert = ca.issue_node(id, &[]).unwrap();
    let tls = datacake_rpc::TlsConfig::mutual_from_pem(
        ca.cert_pem().as_bytes(),
        cert.cert_pem().as_bytes(),
        cert.key_pem().as_bytes(),
    )
    .unwrap();
    node.with_cluster_id("secure").with_tls(tls)
}

/// Starts `n` nodes (ids 1..=n) that all see each other.
pub(crate) async fn cluster(n: u32) -> Vec<TestNode> {
    let first = start_node(1, Vec::new(), MemStore::new()).await;
    let seed = first.addr();
    let mut nodes = vec![first];
    for id in 2..=n {
        nodes.push(start_node(id, vec![seed.clone()], MemStore::new()).await);
    }
    wait_for_membership(&nodes, 1..=n).await;
    nodes
}

/// Waits until every node of `nodes` sees every id of `ids` live.
pub(crate) async fn wait_for_membership<S: Storage>(
    nodes: &[TestNode<S>],
    ids: impl IntoIterator<Item = u32> + Clone,
) {
    wait_for_views(nodes.iter().map(|n| &n.node), ids).await;
}

/// Waits until each of `nodes` (with or without a store) lists every node of `ids` as live.
pub(crate) async fn wait_for_views<'a>(
    nodes: impl IntoIterator<Item = &'a DatacakeNode>,
    ids: impl IntoIterator<Item = u32> + Clone,
) {
    for node in nodes {
        node.wait_for_nodes(ids.clone(), CONVERGE)
            .await
            .expect("membership converges");
    }
}

/// Waits until no node of `nodes` lists node `id` as live (it crashed or left).
pub(crate) async fn wait_until_gone<S: Storage>(nodes: &[TestNode<S>], id: u32) {
    let what = format!("every node sees node {id} gone");
    test_helper::wait_for(&what, CONVERGE, || async {
        nodes
            .iter()
            .all(|n| n.node.live_members().iter().all(|m| m.node_id != id))
    })
    .await;
}

/// Waits until every node holds the same metadata and documents for `keyspace`.
pub(crate) async fn wait_converged<S: Storage>(what: &str, nodes: &[TestNode<S>], keyspace: &str) {
    test_helper::wait_for(what, CONVERGE, || async {
        let first = nodes[0].metadata(keyspace);
        if !nodes.iter().all(|n| n.metadata(keyspace) == first) {
            return false;
        }
        let mut contents = Vec::new();
        for node in nodes {
            let docs: BTreeMap<u64, _> = node
                .handle()
                .get_many_local(keyspace, first.iter().map(|(k, _, _)| *k))
                .await
                .unwrap()
                .into_iter()
                .map(|d| (d.id, d))
                .collect();
            contents.push(docs);
        }
        contents.windows(2).all(|w| w[0] == w[1])
    })
    .await;
}

/// Shuts every node down.
pub(crate) async fn shutdown<S: Storage>(nodes: Vec<TestNode<S>>) {
    for n in nodes {
        drop(n.store);
        n.node.shutdown().await;
    }
}

/// Declares a service that stands in for the store's on a node, with one handler, of raw
/// bodies, at `$path` (`"replicate"`, `"read"`, ...), whose answer is `$answer`: for
/// peers that refuse, fail or never answer.
macro_rules! stub_store_service {
    ($(#[$doc:meta])* $name:ident, $path:literal, $answer:expr) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl datacake_rpc::RpcService for $name {
            fn service_name() -> &'static str {
                "datacake-eventual-consistency"
            }

            fn register_handlers(registry: &mut datacake_rpc::ServiceRegistry<Self>) {
                registry.add_handler::<datacake_rpc::Body>();
            }
        }

        #[async_trait::async_trait]
        impl datacake_rpc::Handler<datacake_rpc::Body> for $name {
            type Reply = datacake_rpc::Body;

            fn path() -> &'static str {
                $path
            }

            async fn on_message(
                &self,
                _request: datacake_rpc::Request<datacake_rpc::Body>,
            ) -> Result<datacake_rpc::Body, datacake_rpc::Status> {
                $answer
            }
        }
    };
}
pub(crate) use stub_store_service;
