//! Suite `ec`: the eventually consistent store on in-process clusters (loopback RPC,
//! `MemStore`). For each cluster size and consistency level: N documents put serially through
//! one node's handle, then each concurrency level's tasks each putting the same N ids; then the
//! same for deletes. Also: memory per key held in a keyspace's state, and the time and repair
//! bytes for a late node to catch up on a keyspace.
//!
//! Sizes per profile (`--smoke` / default quick / `--full`), each overridable with `--nodes`,
//! `--consistency`, `--concurrency` and `--docs`:
//!
//! | | smoke | quick | full |
//! |---|---|---|---|
//! | cluster sizes | 3 | 3 | 1, 3, 5 |
//! | levels | all | none, all | none, one, quorum, all |
//! | tasks | 10 | 10, 125, 512, 2,048 | 10, 125, 512, 2,048 |
//! | documents | 50 | 1,000 | 1,000 |
//! | memory keys / catch-up keys | 10,000 / 1,000 | 1,000,000 / 100,000 | same as quick |

use std::time::{Duration, Instant};

use bytes::Bytes;
use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{
    Consistency, EventuallyConsistentStore, EventuallyConsistentStoreExtension, KeyspaceState,
    ReplicatedStoreHandle,
};
use datacake_node::{ConnectionConfig, DatacakeNode, DatacakeNodeBuilder};

use crate::alloc::allocated_bytes;
use crate::config::{ConsistencyLevel, RunConfig};
use crate::report::{Latency, Measurement, SuiteReport};

/// Give up waiting for convergence after this long.
const GIVE_UP: Duration = Duration::from_secs(120);
const KEYSPACE: &str = "bench";

/// One node of a benchmark cluster.
struct BenchNode {
    node: DatacakeNode,
    store: EventuallyConsistentStore<MemStore>,
    storage: MemStore,
}

async fn start_node(id: u32, seeds: Vec<String>) -> anyhow::Result<BenchNode> {
    let local = "127.0.0.1:0".parse()?;
    let node = DatacakeNodeBuilder::new(id, ConnectionConfig::new(local, local, seeds))
        .with_gossip_interval(Duration::from_millis(100))
        .connect()
        .await?;
    let storage = MemStore::new();
    let store = node
        .add_extension(
            EventuallyConsistentStoreExtension::new(storage.clone())
                .with_repair_interval(Duration::from_millis(100)),
        )
        .await?;
    Ok(BenchNode {
        node,
        store,
        storage,
    })
}

async fn start_cluster(n: u32) -> anyhow::Result<Vec<BenchNode>> {
    let first = start_node(1, Vec::new()).await?;
    let seed = first.node.me().public_addr.to_string();
    let mut nodes = vec![first];
    for id in 2..=n {
        nodes.push(start_node(id, vec![seed.clone()]).await?);
    }
    for node in &nodes {
        node.node.wait_for_nodes(1..=n, GIVE_UP).await?;
    }
    Ok(nodes)
}

async fn shutdown(nodes: Vec<BenchNode>) {
    for n in nodes {
        drop(n.store);
        n.node.shutdown().await;
    }
}

/// Puts or deletes.
#[derive(Debug, Clone, Copy)]
enum Op {
    Put,
    Del,
}

async fn one(
    handle: &ReplicatedStoreHandle<MemStore>,
    op: Op,
    id: u64,
    level: Consistency,
    data: &Bytes,
) -> anyhow::Result<()> {
    match op {
        Op::Put => handle.put(KEYSPACE, id, data.clone(), level).await?,
        Op::Del => handle.del(KEYSPACE, id, level).await?,
    }
    Ok(())
}

/// `tasks` tasks each doing `op` on ids `0..docs` (`tasks == 0`: serially on this task).
async fn cell(
    handle: &ReplicatedStoreHandle<MemStore>,
    op: Op,
    level: Consistency,
    tasks: usize,
    docs: u64,
) -> anyhow::Result<(f64, Option<Latency>)> {
    let data = Bytes::from_static(b"a 32 byte document for the bench");
    let start = Instant::now();
    let mut samples = Vec::new();
    if tasks == 0 {
        for id in 0..docs {
            let t = Instant::now();
            one(handle, op, id, level, &data).await?;
            samples.push(t.elapsed());
        }
    } else {
        let mut joins = Vec::with_capacity(tasks);
        for _ in 0..tasks {
            let handle = handle.clone();
            let data = data.clone();
            joins.push(tokio::spawn(async move {
                let mut samples = Vec::with_capacity(docs as usize);
                for id in 0..docs {
                    let t = Instant::now();
                    one(&handle, op, id, level, &data).await?;
                    samples.push(t.elapsed());
                }
                anyhow::Ok(samples)
            }));
        }
        for join in joins {
            samples.extend(join.await??);
        }
    }
    let ops = samples.len() as f64 / start.elapsed().as_secs_f64();
    Ok((ops, Latency::from_samples(&mut samples)))
}

fn target(nodes: u32, level: Consistency, tasks: usize, op: Op) -> Option<&'static str> {
    match (nodes, level, tasks, op) {
        (3, Consistency::All, 0, Op::Put) => Some(">= 8,000 puts/s"),
        (3, Consistency::All, 512, Op::Put) => Some(">= 100,000 puts/s"),
        (3, Consistency::None, 512, Op::Put) => Some(">= 300,000 puts/s"),
        (_, _, 2_048, _) => Some(">= 90% of 512 tasks"),
        _ => None,
    }
}

/// Waits until every node holds the same metadata for the keyspace as the first.
async fn settle(nodes: &[BenchNode]) -> anyhow::Result<()> {
    let start = Instant::now();
    let sorted = |node: &BenchNode| {
        let mut m = node.store.handle().iter_metadata(KEYSPACE);
        m.sort_unstable_by_key(|(k, _, _)| *k);
        m
    };
    loop {
        let first = sorted(&nodes[0]);
        if nodes[1..].iter().all(|n| sorted(n) == first) {
            return Ok(());
        }
        if start.elapsed() > GIVE_UP {
            anyhow::bail!("cluster did not converge within {GIVE_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the throughput matrix for the given cluster sizes, levels and concurrencies.
async fn throughput(
    cfg: &RunConfig,
    clusters: &[u32],
    levels: &[Consistency],
    concurrency: &[usize],
    docs: u64,
) -> anyhow::Result<Vec<Measurement>> {
    let mut measurements = Vec::new();
    for &n in clusters {
        let nodes = start_cluster(n).await?;
        let handle = nodes[0].store.handle();
        for &level in levels {
            if nodes[0].node.select_nodes(level).await.is_err() {
                continue; // the level cannot be met on this cluster size
            }
            for op in [Op::Put, Op::Del] {
                let mut at_512 = None;
                for &tasks in std::iter::once(&0).chain(concurrency) {
                    let who = if tasks == 0 {
                        "serial".to_string()
                    } else {
                        format!("{tasks} tasks")
                    };
                    let scenario = format!("{n} nodes, {level}, {op:?} x{docs}, {who}");
                    cfg.progress.scenario(scenario.clone());
                    let (ops, latency) = cell(&handle, op, level, tasks, docs).await?;
                    let mut m = Measurement::new(scenario, "datacake-ec")
                        .with_ops_per_sec(ops)
                        .with_latency(latency);
                    if tasks == 512 {
                        at_512 = Some(ops);
                    }
                    if let (2_048, Some(base)) = (tasks, at_512) {
                        m = m.with_ratio(ops / base);
                    }
                    if let Some(t) = target(n, level, tasks, op) {
                        m = m.with_target(t);
                    }
                    measurements.push(m);
                    // Let background replication finish, so it does not slow the next cell.
                    settle(&nodes).await?;
                }
            }
        }
        shutdown(nodes).await;
    }
    Ok(measurements)
}

/// Bytes of heap per key held by a keyspace's in-memory state.
fn memory_per_key(keys: u64) -> Measurement {
    let metadata: Vec<_> = (0..keys)
        .map(|k| (k, HLCTimestamp::new(1_700_000_000_000 + k, 0, 1), false))
        .collect();
    let before = allocated_bytes();
    let state = KeyspaceState::from_metadata(metadata.iter().copied());
    let after = allocated_bytes();
    drop(metadata);
    let per_key = after.saturating_sub(before) as f64 / keys as f64;
    assert_eq!(state.len() as u64, keys);
    Measurement::new(
        format!("memory per key, {keys} keys in memory"),
        "datacake-ec",
    )
    .with_value(per_key, "bytes/key")
}

/// Time and repair bytes for a node joining late to catch up on `keys` keys.
async fn catch_up(keys: u64) -> anyhow::Result<Vec<Measurement>> {
    let mut nodes = start_cluster(2).await?;
    let handle = nodes[0].store.handle();
    let data = Bytes::from_static(b"a 32 byte document for the bench");
    for chunk in (0..keys).collect::<Vec<_>>().chunks(1_000) {
        handle
            .put_many(
                KEYSPACE,
                chunk.iter().map(|id| (*id, data.clone())),
                Consistency::All,
            )
            .await?;
    }
    let start = Instant::now();
    let seed = nodes[0].node.me().public_addr.to_string();
    let late = start_node(3, vec![seed]).await?;
    while late.storage.len(KEYSPACE) as u64 != keys {
        if start.elapsed() > GIVE_UP {
            anyhow::bail!("late node did not catch up within {GIVE_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    let bytes = late.store.statistics().repair_bytes_received;
    nodes.push(late);
    shutdown(nodes).await;
    Ok(vec![
        Measurement::new(
            format!("late node catches up on {keys} keys (incl. join)"),
            "datacake-ec",
        )
        .with_value(took.as_secs_f64() * 1_000.0, "ms"),
        Measurement::new("late node catch-up, repair bytes received", "datacake-ec")
            .with_value(bytes as f64, "bytes"),
    ])
}

/// Runs the suite.
pub(crate) async fn run(cfg: &RunConfig) -> anyhow::Result<SuiteReport> {
    use ConsistencyLevel as L;
    let clusters = cfg.nodes_or(&cfg.pick(vec![3], vec![3], vec![1, 3, 5]));
    let levels = cfg.consistency_or(&cfg.pick(
        vec![L::All],
        vec![L::None, L::All],
        vec![L::None, L::One, L::Quorum, L::All],
    ));
    let concurrency = cfg.concurrency_or(&cfg.pick(
        vec![10],
        vec![10, 125, 512, 2_048],
        vec![10, 125, 512, 2_048],
    ));
    let docs = cfg.docs_or(cfg.pick(50, 1_000, 1_000));
    let mut measurements = throughput(cfg, &clusters, &levels, &concurrency, docs).await?;
    cfg.progress.scenario("memory per key");
    measurements.push(memory_per_key(cfg.pick(10_000, 1_000_000, 1_000_000)));
    cfg.progress.scenario("late node catch-up");
    measurements.extend(catch_up(cfg.pick(1_000, 100_000, 100_000)).await?);
    Ok(SuiteReport {
        suite: "ec",
        measurements,
    })
}
