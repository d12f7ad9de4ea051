//! In-process benchmark clusters: their storage ([`Backend`]), starting and stopping them,
//! and waiting until they are quiet ([`settle`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{
    EventuallyConsistentStore, EventuallyConsistentStoreExtension, Storage,
};
use datacake_node::{ConnectionConfig, DatacakeNode, DatacakeNodeBuilder};
use datacake_sqlite::SqliteStorage;

use super::{GIVE_UP, KEYSPACE};

/// Where benchmark nodes keep their documents (`--storage`).
pub(super) trait Backend {
    /// The storage type.
    type S: Storage;
    /// Opens a fresh, empty storage for node `id` of cluster number `cluster`.
    async fn open(&self, cluster: u32, id: u32) -> anyhow::Result<Self::S>;
}

/// `MemStore`.
pub(super) struct Memory;

impl Backend for Memory {
    type S = MemStore;

    async fn open(&self, _cluster: u32, _id: u32) -> anyhow::Result<MemStore> {
        Ok(MemStore::new())
    }
}

/// `SqliteStorage`, one database file per node under a directory removed afterwards.
pub(super) struct Sqlite {
    pub(super) dir: PathBuf,
}

impl Backend for Sqlite {
    type S = SqliteStorage;

    async fn open(&self, cluster: u32, id: u32) -> anyhow::Result<SqliteStorage> {
        let path = self.dir.join(format!("cluster-{cluster}-node-{id}.db"));
        Ok(SqliteStorage::open(path).await?)
    }
}

/// One node of a benchmark cluster.
pub(super) struct BenchNode<S: Storage> {
    pub(super) node: DatacakeNode,
    pub(super) store: EventuallyConsistentStore<S>,
}

pub(super) async fn start_node<B: Backend>(
    backend: &B,
    cluster: u32,
    id: u32,
    seeds: Vec<String>,
) -> anyhow::Result<BenchNode<B::S>> {
    let local = "127.0.0.1:0".parse()?;
    let node = DatacakeNodeBuilder::new(id, ConnectionConfig::new(local, local, seeds))
        .with_gossip_interval(Duration::from_millis(100))
        .connect()
        .await?;
    let storage = backend.open(cluster, id).await?;
    let store = node
        .add_extension(
            EventuallyConsistentStoreExtension::new(storage)
                .with_repair_interval(Duration::from_millis(100)),
        )
        .await?;
    Ok(BenchNode { node, store })
}

/// Starts an `n`-node cluster; `cluster` numbers clusters apart (their storages differ).
pub(super) async fn start_cluster<B: Backend>(
    backend: &B,
    cluster: u32,
    n: u32,
) -> anyhow::Result<Vec<BenchNode<B::S>>> {
    let first = start_node(backend, cluster, 1, Vec::new()).await?;
    let seed = first.node.me().public_addr.to_string();
    let mut nodes = vec![first];
    for id in 2..=n {
        nodes.push(start_node(backend, cluster, id, vec![seed.clone()]).await?);
    }
    for node in &nodes {
        node.node.wait_for_nodes(1..=n, GIVE_UP).await?;
    }
    Ok(nodes)
}

pub(super) async fn shutdown<S: Storage>(nodes: Vec<BenchNode<S>>) {
    for n in nodes {
        drop(n.store);
        n.node.shutdown().await;
    }
}

/// Waits until the cluster is quiet: no node has mutations queued for a peer, and every
/// node holds the same metadata for the keyspace as the first. Returns how long that took.
///
/// Polls every millisecond on the cheap signals (each node's backlog gauge and metadata
/// digest), then confirms with the full metadata.
pub(super) async fn settle<S: Storage>(nodes: &[BenchNode<S>]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let sorted = |node: &BenchNode<S>| {
        let mut m = node.store.handle().iter_metadata(KEYSPACE);
        m.sort_unstable_by_key(|(k, _, _)| *k);
        m
    };
    loop {
        let quiet = nodes
            .iter()
            .all(|n| n.store.statistics().replication_backlog == 0);
        let digest = nodes[0].store.handle().metadata_digest(KEYSPACE);
        let same = nodes[1..]
            .iter()
            .all(|n| n.store.handle().metadata_digest(KEYSPACE) == digest);
        if quiet && same {
            let first = sorted(&nodes[0]);
            if nodes[1..].iter().all(|n| sorted(n) == first) {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > GIVE_UP {
            anyhow::bail!("cluster did not converge within {GIVE_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
