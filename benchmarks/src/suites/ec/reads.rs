//! The read rows: `get` per consistency level, serially and from many tasks, over ids every
//! replica holds; and, beside the 3-node `Quorum` serial cell, the raw RPC round trip it is
//! held to.

use std::time::{Duration, Instant};

use bytes::Bytes;
use datacake_eventual_consistency::{Consistency, Storage};

use super::cell::{cell, round_ids, who, Op, DOC};
use super::cluster::{settle, BenchNode};
use super::rpc_echo::{RpcEcho, ECHO_BYTES};
use super::KEYSPACE;
use crate::config::RunConfig;
use crate::report::{median, paired_ratio, Latency, Measurement};

/// The first id of the documents the read rows read (the write matrix uses ids from 0).
const FIRST_ID: u64 = 1 << 32;

/// Echoes before the baseline's first round: the service is registered and reached once.
const ECHO_WARM_UP: usize = 50;

/// The read rows' sizes.
#[derive(Debug, Clone)]
pub(super) struct Sizes {
    /// Consistency levels (those a cluster cannot meet are skipped).
    pub(super) levels: Vec<Consistency>,
    /// Concurrent tasks of the cells after the serial one.
    pub(super) tasks: Vec<usize>,
    /// Ids the serial cell reads.
    pub(super) serial_docs: u64,
    /// Ids each task of the other cells reads (fewer: a read at a level other than `None`
    /// costs a round trip to the peers, and 512 tasks each reading 1,000 ids would keep the
    /// quick profile busy for seconds per cell).
    pub(super) task_docs: u64,
    /// Interleaved rounds per row.
    pub(super) rounds: u64,
}

impl Sizes {
    /// Ids each task of a cell of `tasks` tasks (0: the serial cell) reads.
    fn docs(&self, tasks: usize) -> u64 {
        match tasks {
            0 => self.serial_docs,
            _ => self.task_docs,
        }
    }
}

/// Per cell of a row: latency samples, per-round call rates and per-round p50s (seconds).
#[derive(Debug, Clone, Default)]
struct Tally {
    samples: Vec<Duration>,
    rates: Vec<f64>,
    p50s: Vec<f64>,
}

impl Tally {
    /// Adds a round's cell: its calls' latencies, and how long it took in all.
    fn add(&mut self, mut samples: Vec<Duration>, took: Duration) {
        self.p50s
            .push(median(samples.iter().map(Duration::as_secs_f64).collect()));
        self.rates
            .push(samples.len() as f64 / took.as_secs_f64().max(1e-9));
        self.samples.append(&mut samples);
    }
}

/// The raw RPC round trip measured beside a read cell.
struct Baseline {
    echo: RpcEcho,
    tally: Tally,
}

impl Baseline {
    /// Registers the echo service on `server`, reaches it from `client`, and warms it up.
    async fn start<S: Storage>(
        client: &BenchNode<S>,
        server: &BenchNode<S>,
    ) -> anyhow::Result<Self> {
        let echo = RpcEcho::start(client, server);
        echo.serial(ECHO_WARM_UP).await?;
        Ok(Self {
            echo,
            tally: Tally::default(),
        })
    }

    /// Measures one round of `calls` serial echoes.
    async fn measure(&mut self, calls: usize) -> anyhow::Result<()> {
        let start = Instant::now();
        let samples = self.echo.serial(calls).await?;
        self.tally.add(samples, start.elapsed());
        Ok(())
    }
}

/// Runs the read rows on one cluster, reading through the first node's handle.
///
/// First writes the documents at `All` (so every replica holds every one, and a read at any
/// level finds the replicas equal). Then, per level, a row of a serial cell reading
/// `serial_docs` ids and one cell per number of tasks, each task reading the first
/// `task_docs` ids, measured in interleaved rounds like the write matrix's (round `r` reads
/// the `r`-th slice of each cell's ids; ops/s is the median of the rounds' rates, latencies
/// pool every round). Reads change nothing, so no cell waits for the cluster to settle; but
/// a read at a level repairs replicas that answered with an older version, which must never
/// happen here: after each row the run fails if any node counted a read repair.
///
/// On 3 nodes, the `Quorum` serial cell shares its rounds with as many serial echoes over
/// the node pool's RPC channel from node 1 to node 2 ([`RpcEcho`]), the two taking turns to
/// go first; the read row's ratio is the median of the rounds' p50 ratios ([`paired_ratio`]),
/// so a slow phase of the machine falls on both sides of a pair.
pub(super) async fn rows<S: Storage>(
    cfg: &RunConfig,
    nodes: &[BenchNode<S>],
    sizes: &Sizes,
) -> anyhow::Result<Vec<Measurement>> {
    let n = nodes.len() as u32;
    let docs = sizes.serial_docs.max(sizes.task_docs);
    let fewest = sizes.serial_docs.min(sizes.task_docs);
    let rounds = sizes.rounds.clamp(1, fewest.max(1));
    let handle = nodes[0].store.handle();
    cfg.progress
        .scenario(format!("{n} nodes, writing {docs} documents to read"));
    let ids: Vec<u64> = (FIRST_ID..FIRST_ID + docs).collect();
    for chunk in ids.chunks(1_000) {
        let doc = Bytes::from_static(DOC);
        let batch = chunk.iter().map(|&id| (id, doc.clone()));
        handle.put_many(KEYSPACE, batch, Consistency::All).await?;
    }
    settle(nodes).await?;
    ensure_no_read_repairs(nodes, "before the read rows")?;

    let row: Vec<usize> = std::iter::once(0)
        .chain(sizes.tasks.iter().copied())
        .collect();
    let mut measurements = Vec::new();
    for &level in &sizes.levels {
        if nodes[0].node.select_nodes(level).await.is_err() {
            continue; // the level cannot be met on this cluster size
        }
        let mut baseline = match (n, level) {
            (3, Consistency::Quorum) => Some(Baseline::start(&nodes[0], &nodes[1]).await?),
            _ => None,
        };
        let mut cells = vec![Tally::default(); row.len()];
        for round in 0..rounds {
            for (&tasks, tally) in row.iter().zip(&mut cells) {
                cfg.progress.scenario(format!(
                    "{n} nodes, {level}, Get, {}, round {} of {rounds}",
                    who(tasks),
                    round + 1
                ));
                let ids = round_ids(sizes.docs(tasks), rounds, round);
                let ids = FIRST_ID + ids.start..FIRST_ID + ids.end;
                let calls = (ids.end - ids.start) as usize;
                // The baseline shares the serial cell's rounds, going first in every other.
                let echo = baseline.as_mut().filter(|_| tasks == 0);
                let (before, after) = match round % 2 {
                    1 => (echo, None),
                    _ => (None, echo),
                };
                if let Some(b) = before {
                    b.measure(calls).await?;
                }
                let (samples, took) = cell(&handle, Op::Get, level, tasks, ids).await?;
                tally.add(samples, took);
                if let Some(b) = after {
                    b.measure(calls).await?;
                }
            }
        }
        let scenario = |tasks: usize| {
            let docs = sizes.docs(tasks);
            format!("{n} nodes, {level}, Get x{docs}, {}", who(tasks))
        };
        let baseline_p50s = match baseline {
            Some(Baseline { mut tally, .. }) => {
                measurements.push(
                    Measurement::new(
                        format!(
                            "{n} nodes, rpc echo {ECHO_BYTES} B x{}, serial",
                            sizes.serial_docs
                        ),
                        "datacake-rpc",
                    )
                    .with_ops_per_sec(median(tally.rates))
                    .with_latency(Latency::from_samples(&mut tally.samples)),
                );
                Some(tally.p50s)
            }
            None => None,
        };
        for (&tasks, mut tally) in row.iter().zip(cells) {
            let mut m = Measurement::new(scenario(tasks), "datacake-ec")
                .with_ops_per_sec(median(tally.rates))
                .with_latency(Latency::from_samples(&mut tally.samples));
            if let (0, Some(base)) = (tasks, &baseline_p50s) {
                m = m
                    .with_ratio(paired_ratio(&tally.p50s, base))
                    .with_target("p50 <= 1.3x rpc round trip");
            }
            measurements.push(m);
        }
        ensure_no_read_repairs(nodes, &format!("the {n}-node {level} read row"))?;
    }
    Ok(measurements)
}

/// Fails when any node has repaired a replica after a read: the replicas the read rows read
/// from were meant to be equal.
fn ensure_no_read_repairs<S: Storage>(nodes: &[BenchNode<S>], after: &str) -> anyhow::Result<()> {
    let repairs: u64 = nodes
        .iter()
        .map(|n| n.store.statistics().read_repairs)
        .sum();
    anyhow::ensure!(
        repairs == 0,
        "{repairs} read repairs by {after}: the replicas diverged"
    );
    Ok(())
}
