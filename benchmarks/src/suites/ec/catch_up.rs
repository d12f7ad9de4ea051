//! What a keyspace's state costs: heap per key, the time a bucket request holds its lock, and
//! the time and repair bytes for a late node to catch up on it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::bench_support::KeyspaceMemory;
use datacake_eventual_consistency::Consistency;

use super::cell::DOC;
use super::cluster::{shutdown, start_cluster, start_node, Backend};
use super::{GIVE_UP, KEYSPACE};
use crate::alloc::allocated_bytes;
use crate::report::{median, paired_ratio, Measurement};

/// Bytes of heap per key held by a keyspace's in-memory state of `keys` keys, and the time
/// a bucket request holds that keyspace's lock for.
pub(super) fn keyspace_state(keys: u64) -> Vec<Measurement> {
    let metadata: Vec<_> = (0..keys)
        .map(|k| (k, HLCTimestamp::new(1_700_000_000_000 + k, 0, 1), false))
        .collect();
    let before = allocated_bytes();
    let state = KeyspaceMemory::from_metadata(metadata.iter().copied());
    let after = allocated_bytes();
    drop(metadata);
    let per_key = after.saturating_sub(before) as f64 / keys as f64;
    assert_eq!(state.len() as u64, keys);
    let mut rows = vec![Measurement::new(
        format!("memory per key, {keys} keys in memory"),
        "datacake-ec",
    )
    .with_value(per_key, "bytes/key")];
    let every: Vec<u32> = (0..1 << BUCKET_BITS).collect();
    rows.extend(bucket_scan(&state, keys, "1 of 4,096 buckets", &[1_234]));
    rows.extend(bucket_scan(
        &state,
        keys,
        "4,096 buckets, one lock hold",
        &every,
    ));
    rows
}

/// Resolution of the bucket rows: the finest a digest keeps.
const BUCKET_BITS: u8 = 12;

/// Rounds of the bucket rows, each timing the request and the baseline back to back.
const BUCKET_ROUNDS: usize = 5;

/// Bucket requests for `buckets` on `state` against the baseline, a scan of every entry
/// (how requests were answered before the set kept its ids in bucket order).
fn bucket_scan(state: &KeyspaceMemory, keys: u64, what: &str, buckets: &[u32]) -> Vec<Measurement> {
    let found = state.scan_buckets(BUCKET_BITS, buckets);
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..BUCKET_ROUNDS {
        ours.push(calls_per_sec(|| state.scan_buckets(BUCKET_BITS, buckets)));
        base.push(calls_per_sec(|| {
            state.scan_everything(BUCKET_BITS, buckets)
        }));
    }
    let scenario = format!("bucket request, {what}, {keys} keys ({found} entries)");
    vec![
        Measurement::new(scenario.clone(), "baseline").with_ops_per_sec(median(base.clone())),
        Measurement::new(scenario, "datacake-ec")
            .with_ops_per_sec(median(ours.clone()))
            .with_ratio(paired_ratio(&ours, &base))
            .with_target(">= 10x the baseline (a whole-keyspace scan)"),
    ]
}

/// Calls of `f` per second, over at least 50 ms.
fn calls_per_sec(mut f: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while calls == 0 || start.elapsed() < Duration::from_millis(50) {
        std::hint::black_box(f());
        calls += 1;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

/// Time and repair bytes for a node joining late to catch up on `keys` keys.
pub(super) async fn catch_up<B: Backend>(
    backend: &B,
    keys: u64,
) -> anyhow::Result<Vec<Measurement>> {
    // Cluster numbers 1.. are the throughput clusters; this one is 0.
    let mut nodes = start_cluster(backend, 0, 2).await?;
    let handle = nodes[0].store.handle();
    let data = Bytes::from_static(DOC);
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
    let late = start_node(backend, 0, 3, vec![seed]).await?;
    while late.store.statistics().keys_repaired < keys {
        if start.elapsed() > GIVE_UP {
            anyhow::bail!("late node did not catch up within {GIVE_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    let held = late.store.handle().iter_metadata(KEYSPACE).len() as u64;
    anyhow::ensure!(held == keys, "late node holds {held} of {keys} keys");
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
