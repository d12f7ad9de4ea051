//! The large-document rows: puts of 1 MiB documents at `None` and at `All`.

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use datacake_eventual_consistency::{Consistency, ReplicatedStoreHandle, Storage};

use super::cell::round_ids;
use super::cluster::{settle, BenchNode};
use super::KEYSPACE;
use crate::config::RunConfig;
use crate::report::{median, Latency, Measurement};

/// The first id of the large documents (the write matrix uses ids from 0, the read rows from
/// 2^32).
const FIRST_ID: u64 = 2 << 32;

/// Bytes per document.
const MIB: usize = 1 << 20;

/// The large-document rows' sizes.
#[derive(Debug, Clone)]
pub(super) struct Sizes {
    /// Documents per cell, over all its rounds.
    pub(super) docs: u64,
    /// Concurrent tasks, which share the cell's documents.
    pub(super) tasks: usize,
    /// Interleaved rounds per row.
    pub(super) rounds: u64,
}

/// Runs the large-document rows on one cluster, writing through the first node's handle.
///
/// In each of `rounds` rounds, the `None` cell and then the `All` cell each put that round's
/// slice of `docs` ids, shared among `tasks` tasks; both cells write the same ids, so the
/// cluster holds at most `docs` MiB per node. After each cell the run waits until the
/// cluster is quiet again ([`settle`]): the replication a `None` put did not wait for is
/// over before the next cell starts. ops/s is the median of the rounds' call rates (for
/// `None` that is the local write alone), latencies pool every round, and MiB/s is the
/// median of the rounds' rates until every replica held the documents.
pub(super) async fn rows<S: Storage>(
    cfg: &RunConfig,
    nodes: &[BenchNode<S>],
    sizes: &Sizes,
) -> anyhow::Result<Vec<Measurement>> {
    let (docs, tasks, n) = (sizes.docs, sizes.tasks.max(1), nodes.len() as u32);
    let rounds = sizes.rounds.clamp(1, docs.max(1));
    let handle = nodes[0].store.handle();
    let data = Bytes::from(vec![0x5a; MIB]);
    let levels = [Consistency::None, Consistency::All];
    // Per level: latency samples, per-round call rates and per-round rates until quiet.
    let mut cells = vec![(Vec::new(), Vec::new(), Vec::new()); levels.len()];
    for round in 0..rounds {
        for (&level, (samples, calls, replicated)) in levels.iter().zip(&mut cells) {
            cfg.progress.scenario(format!(
                "{n} nodes, {level}, Put 1 MiB, {tasks} tasks, round {} of {rounds}",
                round + 1
            ));
            let ids = round_ids(docs, rounds, round);
            let ids = FIRST_ID + ids.start..FIRST_ID + ids.end;
            let (mut s, took) = put_shared(&handle, level, tasks, ids, &data).await?;
            let drained = settle(nodes).await?;
            let ops = s.len() as f64;
            calls.push(ops / took.as_secs_f64().max(1e-9));
            replicated.push(ops / (took + drained).as_secs_f64().max(1e-9));
            samples.append(&mut s);
        }
    }
    Ok(levels
        .iter()
        .zip(cells)
        .map(|(level, (mut samples, calls, replicated))| {
            // Each document is 1 MiB, so documents per second are MiB per second.
            Measurement::new(
                format!("{n} nodes, {level}, Put 1 MiB x{docs}, {tasks} tasks"),
                "datacake-ec",
            )
            .with_ops_per_sec(median(calls))
            .with_latency(Latency::from_samples(&mut samples))
            .with_value(median(replicated), "MiB/s replicated")
        })
        .collect())
}

/// `tasks` tasks putting `data` under the ids `ids` between them (task `t` takes every
/// `tasks`-th id from the `t`-th); returns every put's latency and the time the whole took.
async fn put_shared<S: Storage>(
    handle: &ReplicatedStoreHandle<S>,
    level: Consistency,
    tasks: usize,
    ids: Range<u64>,
    data: &Bytes,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let start = Instant::now();
    let mut joins = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let (handle, data) = (handle.clone(), data.clone());
        let ids = ids.clone().skip(task).step_by(tasks);
        joins.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for id in ids {
                let t = Instant::now();
                handle.put(KEYSPACE, id, data.clone(), level).await?;
                samples.push(t.elapsed());
            }
            anyhow::Ok(samples)
        }));
    }
    let mut per_task = Vec::with_capacity(tasks);
    for join in joins {
        per_task.push(join.await??);
    }
    let took = start.elapsed();
    Ok((per_task.concat(), took))
}
