//! The write matrix: puts and deletes per consistency level and number of tasks.

use datacake_eventual_consistency::{Consistency, Storage};

use super::cell::{cell, round_ids, who, Op};
use super::cluster::{settle, BenchNode};
use crate::config::RunConfig;
use crate::report::{median, paired_ratio, Latency, Measurement};

/// The write matrix's sizes.
#[derive(Debug, Clone)]
pub(super) struct Sizes {
    /// Consistency levels (those a cluster cannot meet are skipped).
    pub(super) levels: Vec<Consistency>,
    /// Concurrent tasks of the cells after the serial one.
    pub(super) tasks: Vec<usize>,
    /// Ids each task writes.
    pub(super) docs: u64,
    /// Interleaved rounds per row.
    pub(super) rounds: u64,
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

/// Runs the write matrix on one cluster: for each level and operation, a row of a serial
/// cell and one cell per number of tasks, all writing through the first node's handle.
///
/// The cells of one row (one cluster size, level and operation) are measured in `rounds`
/// interleaved rounds: round `r` runs every concurrency level in turn, each task on the
/// `r`-th slice of the ids, so over the rounds every task does the whole of `0..docs`. A
/// cell's throughput is the median of its rounds' (a round a hiccup of the machine slowed
/// counts as one outlier, not as a share of the total); its latencies pool the operations of
/// every round.
///
/// The 2,048-against-512 ratio is the median of the per-round ratios ([`paired_ratio`]) of
/// *quiet* rates: operations over the time until the cluster was quiet again (every queued
/// mutation sent, every node holding the same metadata; see [`settle`]). For `All` that is
/// when the last call returned; for weaker levels it includes the replication the calls did
/// not wait for. Counting it matters for the comparison: a short burst leaves a larger share
/// of its replication to run after its last call (measured: a 512-task `None` round of ~55
/// ms on 3 nodes left 18-35 ms of it), so call rates alone flatter the smaller cell. On the shared
/// 2-core VM the machine also switches between phases about 2x apart in speed, for seconds
/// at a time; interleaving and pairing make such a phase fall on both cells of a pair
/// instead of on whichever cell happened to run during it.
pub(super) async fn matrix<S: Storage>(
    cfg: &RunConfig,
    nodes: &[BenchNode<S>],
    sizes: &Sizes,
) -> anyhow::Result<Vec<Measurement>> {
    let (docs, n) = (sizes.docs, nodes.len() as u32);
    let rounds = sizes.rounds.clamp(1, docs.max(1));
    let handle = nodes[0].store.handle();
    let mut measurements = Vec::new();
    for &level in &sizes.levels {
        if nodes[0].node.select_nodes(level).await.is_err() {
            continue; // the level cannot be met on this cluster size
        }
        for op in [Op::Put, Op::Del] {
            let row: Vec<usize> = std::iter::once(0)
                .chain(sizes.tasks.iter().copied())
                .collect();
            // Per cell: latency samples, per-round call rates, and per-round rates until
            // the cluster was quiet again.
            let mut cells = vec![(Vec::new(), Vec::new(), Vec::new()); row.len()];
            for round in 0..rounds {
                for (&tasks, (samples, calls, quiet)) in row.iter().zip(&mut cells) {
                    cfg.progress.scenario(format!(
                        "{n} nodes, {level}, {op:?}, {}, round {} of {rounds}",
                        who(tasks),
                        round + 1
                    ));
                    let ids = round_ids(docs, rounds, round);
                    let (mut s, took) = cell(&handle, op, level, tasks, ids).await?;
                    // Background replication finishes before the next cell starts; the
                    // time it takes counts against this cell in the quiet rate.
                    let drained = settle(nodes).await?;
                    let ops = s.len() as f64;
                    calls.push(ops / took.as_secs_f64().max(1e-9));
                    quiet.push(ops / (took + drained).as_secs_f64().max(1e-9));
                    samples.append(&mut s);
                }
            }
            // Rounds of the 512-task cell, to pair with those of the 2,048-task cell.
            let at_512 = row
                .iter()
                .position(|&t| t == 512)
                .map(|i| cells[i].2.clone());
            for (&tasks, (mut samples, calls, quiet)) in row.iter().zip(cells) {
                let mut m = Measurement::new(
                    format!("{n} nodes, {level}, {op:?} x{docs}, {}", who(tasks)),
                    "datacake-ec",
                )
                .with_ops_per_sec(median(calls))
                .with_latency(Latency::from_samples(&mut samples));
                if let (2_048, Some(base)) = (tasks, &at_512) {
                    m = m.with_ratio(paired_ratio(&quiet, base));
                }
                if let Some(t) = target(n, level, tasks, op) {
                    m = m.with_target(t);
                }
                measurements.push(m);
            }
        }
    }
    Ok(measurements)
}
