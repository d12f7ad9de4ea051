//! What a keyspace's state costs: heap per key, and the time and repair bytes for a late
//! node to catch up on it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::bench_support::KeyspaceMemory;
use datacake_eventual_consistency::Consistency;

use super::cell::DOC;
use super::cluster::{shutdown, start_cluster, start_node, Backend};
use super::{GIVE_UP, KEYSPACE};
use crate::alloc::allocated_bytes;
use crate::report::Measurement;

/// Bytes of heap per key held by a keyspace's in-memory state.
pub(super) fn memory_per_key(keys: u64) -> Measurement {
    let metadata: Vec<_> = (0..keys)
        .map(|k| (k, HLCTimestamp::new(1_700_000_000_000 + k, 0, 1), false))
        .collect();
    let before = allocated_bytes();
    let state = KeyspaceMemory::from_metadata(metadata.iter().copied());
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
