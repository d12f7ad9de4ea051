//! Suite `ec`: the eventually consistent store on in-process clusters (loopback RPC,
//! `MemStore`, or `SqliteStorage` with `--storage sqlite`). On each cluster, through the
//! first node's handle:
//!
//! - the write matrix ([`writes`]): for each consistency level, N documents put serially,
//!   then each concurrency level's tasks each putting the same N ids; then the same for
//!   deletes;
//! - the read rows ([`reads`]): documents written at `All`, then `get` at each level, N
//!   serially and from many tasks each reading the same (in quick, fewer) ids; on 3 nodes
//!   the `Quorum` serial cell is paired with a raw datacake-rpc echo of a read reply's size
//!   from node 1 to node 2 over the same channel ([`rpc_echo`]), its p50 held to 1.3x the
//!   echo's; the run fails if any read repairs a replica;
//! - on 3 nodes, puts of 1 MiB documents at `None` and `All` ([`large`]).
//!
//! Also: memory per key held in a keyspace's state, the time a bucket request holds that
//! keyspace's lock (one bucket, and every bucket up to one reply's budget) against a scan of
//! the whole keyspace, and the time and repair bytes for a late node to catch up on a
//! keyspace ([`catch_up`](mod@catch_up)).
//!
//! The cells of a row are measured in interleaved rounds (see [`writes::matrix`]), and every
//! caller is a task on the harness's runtime (see [`cell::cell`]).
//!
//! Sizes per profile (`--smoke` / default quick / `--full`). `--nodes` sets the cluster
//! sizes; `--consistency`, `--concurrency` and `--docs` set the levels, tasks and documents
//! of both the write matrix and the read rows:
//!
//! | | smoke | quick | full |
//! |---|---|---|---|
//! | cluster sizes | 3 | 3 | 1, 3, 5 |
//! | write levels | all | none, all | none, one, quorum, all |
//! | write tasks (after a serial cell) | 10 | 10, 125, 512, 2,048 | 10, 125, 512, 2,048 |
//! | write documents | 50 | 1,000 | 1,000 |
//! | read levels | none, one, quorum, all | none, one, quorum, all | none, one, quorum, all |
//! | read tasks (after a serial cell) | 10 | 512 | 512 |
//! | read documents: serial / per task | 20 / 20 | 1,000 / 100 | 1,000 / 1,000 |
//! | rpc echo (3 nodes, beside quorum serial reads) | 20 calls | 1,000 calls | 1,000 calls |
//! | interleaved rounds per write or read row | 1 | 8 | 8 |
//! | 1 MiB puts (3 nodes): docs per level / tasks / rounds | 4 / 2 / 1 | 64 / 8 / 4 | same as quick |
//! | memory keys / catch-up keys | 10,000 / 1,000 | 1,000,000 / 100,000 | same as quick |
//!
//! Levels a cluster cannot meet are skipped; a `--nodes` list without 3 has no rpc echo and
//! no 1 MiB rows, nor does a `--consistency` list without `quorum` have the echo.

use std::time::Duration;

use crate::config::{ConsistencyLevel, RunConfig, Storage as StorageChoice};
use crate::report::{Measurement, SuiteReport};

use catch_up::{catch_up, keyspace_state};
use cluster::{shutdown, start_cluster, Backend, Memory, Sqlite};

mod catch_up;
mod cell;
mod cluster;
mod large;
mod reads;
mod rpc_echo;
mod writes;

/// Give up waiting for convergence after this long.
const GIVE_UP: Duration = Duration::from_secs(120);
const KEYSPACE: &str = "bench";

/// Runs the suite.
pub(crate) async fn run(cfg: &RunConfig) -> anyhow::Result<SuiteReport> {
    use ConsistencyLevel as L;
    let every_level = vec![L::None, L::One, L::Quorum, L::All];
    let docs = cfg.docs_or(cfg.pick(50, 1_000, 1_000));
    let sizes = Sizes {
        clusters: cfg.nodes_or(&cfg.pick(vec![3], vec![3], vec![1, 3, 5])),
        writes: writes::Sizes {
            levels: cfg.consistency_or(&cfg.pick(
                vec![L::All],
                vec![L::None, L::All],
                every_level.clone(),
            )),
            tasks: cfg.concurrency_or(&cfg.pick(
                vec![10],
                vec![10, 125, 512, 2_048],
                vec![10, 125, 512, 2_048],
            )),
            docs,
            rounds: cfg.pick(1, 8, 8),
        },
        reads: reads::Sizes {
            levels: cfg.consistency_or(&every_level),
            tasks: cfg.concurrency_or(&cfg.pick(vec![10], vec![512], vec![512])),
            serial_docs: cfg.docs_or(cfg.pick(20, 1_000, 1_000)),
            task_docs: cfg.docs_or(cfg.pick(20, 100, 1_000)),
            rounds: cfg.pick(1, 8, 8),
        },
        large: large::Sizes {
            docs: cfg.pick(4, 64, 64),
            tasks: cfg.pick(2, 8, 8),
            rounds: cfg.pick(1, 4, 4),
        },
    };
    let catch_up_keys = cfg.pick(1_000, 100_000, 100_000);
    let mut measurements = match cfg.storage {
        StorageChoice::Memory => {
            let mut m = clusters(&Memory, cfg, &sizes).await?;
            cfg.progress.scenario("late node catch-up");
            m.extend(catch_up(&Memory, catch_up_keys).await?);
            m
        }
        StorageChoice::Sqlite => {
            let dir =
                std::env::temp_dir().join(format!("datacake-bench-ec-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let sqlite = Sqlite { dir: dir.clone() };
            let result = async {
                let mut m = clusters(&sqlite, cfg, &sizes).await?;
                cfg.progress.scenario("late node catch-up");
                m.extend(catch_up(&sqlite, catch_up_keys).await?);
                anyhow::Ok(m)
            }
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            result?
        }
    };
    cfg.progress
        .scenario("keyspace state: memory per key, bucket requests");
    measurements.extend(keyspace_state(cfg.pick(10_000, 1_000_000, 1_000_000)));
    Ok(SuiteReport {
        suite: "ec",
        measurements,
    })
}

/// The sizes of the rows run on each cluster.
#[derive(Debug, Clone)]
struct Sizes {
    /// Cluster sizes, one cluster each.
    clusters: Vec<u32>,
    writes: writes::Sizes,
    reads: reads::Sizes,
    /// Run on the 3-node cluster only.
    large: large::Sizes,
}

/// Starts each cluster in turn and runs its rows: the write matrix, the read rows, and on
/// 3 nodes the large-document rows.
async fn clusters<B: Backend>(
    backend: &B,
    cfg: &RunConfig,
    sizes: &Sizes,
) -> anyhow::Result<Vec<Measurement>> {
    let mut measurements = Vec::new();
    for (cluster, &n) in (1..).zip(&sizes.clusters) {
        let nodes = start_cluster(backend, cluster, n).await?;
        let rows = async {
            let mut m = writes::matrix(cfg, &nodes, &sizes.writes).await?;
            m.extend(reads::rows(cfg, &nodes, &sizes.reads).await?);
            if n == 3 {
                m.extend(large::rows(cfg, &nodes, &sizes.large).await?);
            }
            anyhow::Ok(m)
        }
        .await;
        shutdown(nodes).await;
        measurements.extend(rows?);
    }
    Ok(measurements)
}
