//! Suite `raft`: the strongly consistent `datacake-raft` extension on an in-process
//! three-node cluster (Raft over the real datacake-rpc on loopback). Committed writes per
//! second and their p50/p99 latency with 1, 64 and 256 concurrent clients writing through the
//! leader, with the in-memory store and with the durable SQLite store (fsync per append).

use std::sync::Arc;
use std::time::{Duration, Instant};

use datacake_node::{ConnectionConfig, DatacakeNode, DatacakeNodeBuilder};
use datacake_raft::{RaftConfig, RaftExtension, RaftHandle, Role, StateMachine, Storage};

use crate::config::RunConfig;
use crate::report::{Latency, Measurement, SuiteReport};

/// Give up waiting for a leader after this long.
const GIVE_UP: Duration = Duration::from_secs(60);

/// Counts applied commands (the command is `(client, sequence)`).
#[derive(Debug, Default)]
struct Sink {
    applied: u64,
}

impl StateMachine for Sink {
    type Command = (u64, u64);
    type Response = u64;
    type Query = ();
    type Answer = u64;

    fn apply(&mut self, _command: (u64, u64)) -> u64 {
        self.applied += 1;
        self.applied
    }
    fn read(&self, _query: ()) -> u64 {
        self.applied
    }
    fn snapshot(&self) -> Vec<u8> {
        self.applied.to_le_bytes().to_vec()
    }
    fn restore(&mut self, snapshot: &[u8]) {
        self.applied = snapshot
            .try_into()
            .map(u64::from_le_bytes)
            .unwrap_or_default();
    }
}

/// Which log store a cluster runs on.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Sqlite,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Cluster {
    nodes: Vec<DatacakeNode>,
    handles: Vec<RaftHandle<Sink>>,
    _dirs: Vec<TempDir>,
}

async fn start_cluster(backend: Backend, seed: u64) -> anyhow::Result<Cluster> {
    let mut nodes: Vec<DatacakeNode> = Vec::new();
    let mut handles = Vec::new();
    let mut dirs = Vec::new();
    for id in 1..=3u32 {
        let local = "127.0.0.1:0".parse()?;
        let seeds: Vec<String> = nodes
            .first()
            .map(|n| n.me().public_addr.to_string())
            .into_iter()
            .collect();
        let node = DatacakeNodeBuilder::new(id, ConnectionConfig::new(local, local, seeds))
            .with_gossip_interval(Duration::from_millis(100))
            .connect()
            .await?;
        let storage = match backend {
            Backend::Memory => Storage::InMemory,
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!(
                    "datacake-bench-raft-{}-{seed}-{id}",
                    std::process::id()
                ));
                let _ = std::fs::remove_dir_all(&dir);
                dirs.push(TempDir(dir.clone()));
                Storage::Durable(dir)
            }
        };
        let config = RaftConfig::new(3)
            .with_election_timeout(Duration::from_millis(1000), Duration::from_millis(2000))
            .with_heartbeat_interval(Duration::from_millis(200))
            .with_storage(storage);
        handles.push(
            node.add_extension(RaftExtension::new(Sink::default(), config))
                .await?,
        );
        nodes.push(node);
    }
    Ok(Cluster {
        nodes,
        handles,
        _dirs: dirs,
    })
}

/// Waits until one handle is the leader and every node agrees; returns the leader's handle.
async fn leader(cluster: &Cluster) -> anyhow::Result<RaftHandle<Sink>> {
    let start = Instant::now();
    loop {
        let leaders: Vec<_> = cluster
            .handles
            .iter()
            .filter(|h| h.role() == Role::Leader)
            .collect();
        if let [leader] = leaders.as_slice() {
            let id = leader.node_id();
            if cluster.handles.iter().all(|h| h.leader() == Some(id)) {
                return Ok((*leader).clone());
            }
        }
        if start.elapsed() > GIVE_UP {
            anyhow::bail!("no raft leader within {GIVE_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `writes` committed writes through `leader` by `clients` concurrent tasks: throughput and
/// per-write latency.
async fn measure(
    leader: &RaftHandle<Sink>,
    clients: usize,
    writes: u64,
) -> anyhow::Result<(f64, Option<Latency>)> {
    let per_client = (writes / clients as u64).max(1);
    let leader = Arc::new(leader.clone());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients as u64 {
        let leader = leader.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_client as usize);
            for seq in 0..per_client {
                let began = Instant::now();
                leader.write((client, seq)).await?;
                samples.push(began.elapsed());
            }
            Ok::<_, datacake_raft::RaftError>(samples)
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok((
        samples.len() as f64 / elapsed,
        Latency::from_samples(&mut samples),
    ))
}

/// Runs the suite.
pub(crate) async fn run(cfg: &RunConfig) -> anyhow::Result<SuiteReport> {
    let writes: u64 = cfg.pick(256, 5_000, 20_000);
    let concurrency = cfg.concurrency_or(&[1, 64, 256]);
    let mut measurements = Vec::new();
    for backend in [Backend::Memory, Backend::Sqlite] {
        cfg.progress.scenario(format!(
            "starting a 3-node raft cluster ({})",
            backend.name()
        ));
        let cluster = start_cluster(backend, cfg.seed).await?;
        let leader = leader(&cluster).await?;
        // Warm up the connections and the log.
        measure(&leader, 1, 20).await?;
        for &clients in &concurrency {
            let who = if clients == 1 {
                "1 client".to_string()
            } else {
                format!("{clients} clients")
            };
            cfg.progress
                .scenario(format!("{writes} writes, {who} ({})", backend.name()));
            let (ops, latency) = measure(&leader, clients, writes).await?;
            measurements.push(
                Measurement::new(
                    format!("3 nodes, {who}, write"),
                    format!("raft-{}", backend.name()),
                )
                .with_ops_per_sec(ops)
                .with_latency(latency)
                .with_point(backend.name(), "concurrent clients", clients as f64),
            );
        }
        drop(leader);
        drop(cluster.handles);
        for node in cluster.nodes {
            node.shutdown().await;
        }
    }
    Ok(SuiteReport {
        suite: "raft",
        measurements,
    })
}
