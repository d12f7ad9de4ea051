//! Suite `gossip`: how fast in-process `datacake-node` clusters (gossip over datacake-rpc on
//! loopback, 100 ms gossip interval, default failure detector) reach full membership and
//! notice departures (each the median of several runs: one under `--smoke`, three by default,
//! five under `--full`), and how many timestamps a node's clock issues per second.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datacake_crdt::HLCTimestamp;
use datacake_node::{ConnectionConfig, DatacakeNode, DatacakeNodeBuilder, NodeId};

use crate::config::RunConfig;
use crate::report::{ops_per_sec, Measurement, SuiteReport};

/// The gossip interval every target is stated for.
const GOSSIP_INTERVAL: Duration = Duration::from_millis(100);
/// Give up on a scenario after this long (the figure is then reported as a failure).
const GIVE_UP: Duration = Duration::from_secs(30);
/// How often the harness looks at the nodes' views.
const POLL: Duration = Duration::from_millis(1);

/// Runs the suite.
pub(crate) async fn run(cfg: &RunConfig) -> anyhow::Result<SuiteReport> {
    // Each cluster scenario runs this many times; the median is reported.
    let runs: usize = cfg.pick(1, 3, 5);
    // Stamps per clock throughput run.
    let stamps: u64 = cfg.pick(100_000, 10_000_000, 10_000_000);
    // Cluster size of the departure scenarios.
    let departure_size: u32 = cfg.pick(3, 20, 20);
    let sizes = cfg.nodes_or(&cfg.pick(vec![3], vec![5, 20], vec![5, 20, 50]));

    let mut measurements = Vec::new();
    for n in sizes {
        let target = (n == 50).then_some("<= 600 ms");
        let mut samples = Vec::new();
        for run in 0..runs {
            cfg.progress.scenario(format!(
                "full membership, {n} nodes (run {} of {runs})",
                run + 1
            ));
            let (cluster, took) = full_membership(n).await?;
            samples.push(took);
            shutdown_all(cluster).await;
        }
        let mut m = Measurement::new(format!("full membership, {n} nodes"), "datacake-node")
            .with_value(median_ms(samples), "ms");
        if let Some(t) = target {
            m = m.with_target(t);
        }
        measurements.push(m);
    }

    let others = departure_size - 1;
    for (how, what, target) in [
        (Departure::Graceful, "graceful leave", "<= 300 ms"),
        (Departure::Crash, "crash", "<= 2000 ms"),
    ] {
        let label = format!("{what} seen by the other {others} of {departure_size}");
        let mut samples = Vec::new();
        for run in 0..runs {
            cfg.progress
                .scenario(format!("{label} (run {} of {runs})", run + 1));
            let (cluster, _) = full_membership(departure_size).await?;
            samples.push(departure(cluster, &how).await?);
        }
        measurements.push(
            Measurement::new(label, "datacake-node")
                .with_value(median_ms(samples), "ms")
                .with_target(target),
        );
    }

    cfg.progress.scenario("clock stamps per second");
    measurements.extend(clock_throughput(stamps)?);
    Ok(SuiteReport {
        suite: "gossip",
        measurements,
    })
}

fn builder(id: NodeId, seeds: Vec<String>) -> DatacakeNodeBuilder {
    let local = "127.0.0.1:0".parse().expect("valid address");
    DatacakeNodeBuilder::new(id, ConnectionConfig::new(local, local, seeds))
        .with_gossip_interval(GOSSIP_INTERVAL)
}

fn ids(node: &DatacakeNode) -> Vec<NodeId> {
    node.live_members().iter().map(|m| m.node_id).collect()
}

/// Starts node 1, then nodes 2..=n at once seeded from node 1, and returns the cluster with
/// the time from starting nodes 2..=n until every node sees all n members. The time includes
/// `connect()` (which watches a few gossip rounds for a duplicate id); views are polled as
/// soon as each node is up.
async fn full_membership(n: u32) -> anyhow::Result<(Vec<DatacakeNode>, Duration)> {
    let first = builder(1, Vec::new()).connect().await?;
    let seed = first.me().public_addr.to_string();
    let expected: Vec<NodeId> = (1..=n).collect();
    let start = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for id in 2..=n {
        let tx = tx.clone();
        let b = builder(id, vec![seed.clone()]);
        tokio::spawn(async move {
            let _ = tx.send(b.connect().await);
        });
    }
    drop(tx);
    let mut nodes = vec![first];
    loop {
        while let Ok(node) = rx.try_recv() {
            nodes.push(node?);
        }
        if nodes.len() == n as usize && nodes.iter().all(|node| ids(node) == expected) {
            return Ok((nodes, start.elapsed()));
        }
        if start.elapsed() > GIVE_UP {
            anyhow::bail!("{n} nodes did not reach full membership within {GIVE_UP:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The median of `samples`, in milliseconds.
fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

enum Departure {
    Graceful,
    Crash,
}

/// Removes the last node of `cluster` and returns the time until every other node's view
/// no longer lists it.
async fn departure(mut cluster: Vec<DatacakeNode>, how: &Departure) -> anyhow::Result<Duration> {
    let leaving = cluster.pop().expect("a non-empty cluster");
    let gone = leaving.me().node_id;
    let start = Instant::now();
    let shutdown = match how {
        Departure::Graceful => Some(tokio::spawn(leaving.shutdown())),
        Departure::Crash => {
            drop(leaving);
            None
        }
    };
    let took = loop {
        if cluster.iter().all(|node| !ids(node).contains(&gone)) {
            break start.elapsed();
        }
        if start.elapsed() > GIVE_UP {
            anyhow::bail!("the departure of node {gone} was not seen within {GIVE_UP:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    if let Some(shutdown) = shutdown {
        shutdown.await?;
    }
    shutdown_all(cluster).await;
    Ok(took)
}

async fn shutdown_all(cluster: Vec<DatacakeNode>) {
    let mut set = tokio::task::JoinSet::new();
    for node in cluster {
        set.spawn(node.shutdown());
    }
    while set.join_next().await.is_some() {}
}

/// The node clock (shared, compare-and-swap) against crdt's `HLCTimestamp::send` on one
/// `&mut` and a bare `AtomicU64::fetch_add`, one thread each; then the node clock shared by
/// two threads.
fn clock_throughput(stamps: u64) -> anyhow::Result<Vec<Measurement>> {
    let scenario = "clock stamps, one thread";
    let clock = datacake_node::Clock::new(1);
    let ours = ops_per_sec(stamps, || {
        black_box(clock.get_time());
    });
    let mut plain = HLCTimestamp::now(1);
    let mut failed = None;
    let baseline = ops_per_sec(stamps, || {
        if let Err(e) = plain.send() {
            failed = Some(e);
        }
        black_box(&plain);
    });
    if let Some(e) = failed {
        anyhow::bail!("HLCTimestamp::send failed during the benchmark: {e}");
    }
    let counter = AtomicU64::new(0);
    let atomic = ops_per_sec(stamps, || {
        black_box(counter.fetch_add(1, Ordering::Relaxed));
    });

    let shared = std::sync::Arc::new(datacake_node::Clock::new(2));
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let clock = shared.clone();
            std::thread::spawn(move || {
                for _ in 0..stamps / 2 {
                    black_box(clock.get_time());
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("clock thread panicked"))?;
    }
    let contended = stamps as f64 / start.elapsed().as_secs_f64();

    Ok(vec![
        Measurement::new(scenario, "crdt-send").with_ops_per_sec(baseline),
        Measurement::new(scenario, "atomic-add").with_ops_per_sec(atomic),
        Measurement::new(scenario, "datacake-node")
            .with_ops_per_sec(ours)
            .with_ratio(ours / baseline)
            .with_target("millions/s"),
        Measurement::new(
            "clock stamps, two threads sharing one clock",
            "datacake-node",
        )
        .with_ops_per_sec(contended)
        .with_ratio(contended / baseline),
    ])
}
