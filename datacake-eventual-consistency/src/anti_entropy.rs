//! The periodic anti-entropy task: pulls from every live peer what it holds newer.
//!
//! Per peer and round: send the totals of our keyspace digests; the peer answers with the
//! bucket digests of the keyspaces that differ; for each, ask for the entries of the
//! differing buckets only, plan with [`plan_repair`](crate::plan_repair), apply tombstones
//! directly and fetch only the documents we lack.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use datacake_crdt::HLCTimestamp;
use datacake_node::{ClusterMember, DatacakeHandle, NodeId};
use datacake_rpc::{DataView, Message, Response, RpcClient, Status};
use tracing::debug;

use crate::digest::BucketEntry;
use crate::error::StoreError;
use crate::keyspace::Mutation;
use crate::messages::{BucketRequest, DigestRequest, FetchRequest};
use crate::replica::{Change, Counters, Replica};
use crate::service::{to_changes, StoreService};
use crate::storage::Storage;

/// Tombstones are purged every this many repair rounds (a purge is linear in the number of
/// tombstones and writes each purged keyspace's watermark to the storage).
const PURGE_EVERY_ROUNDS: u64 = 10;
/// Most buckets whose entries are asked for in one request.
const BUCKETS_PER_REQUEST: usize = 512;
/// Most documents asked for in one fetch.
const FETCH_CHUNK: usize = 1024;

/// Settings of the repair task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RepairConfig {
    pub(crate) interval: Duration,
    pub(crate) rpc_timeout: Duration,
    /// How much older than every live peer's sync point a tombstone must be to be purged.
    pub(crate) tombstone_grace: Duration,
}

/// Runs repair rounds every `config.interval` until cancelled, then purges the tombstones
/// every live peer has observed.
pub(crate) async fn run<S: Storage>(
    replica: Arc<Replica<S>>,
    node: DatacakeHandle,
    config: RepairConfig,
) {
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Per peer: its clock at the start of our last complete round from it.
    let mut synced_from: HashMap<NodeId, HLCTimestamp> = HashMap::new();
    let mut rounds: u64 = 0;
    loop {
        ticker.tick().await;
        let me = node.me().node_id;
        let peers: Vec<ClusterMember> = node
            .live_members()
            .into_iter()
            .filter(|p| p.node_id != me)
            .collect();
        for peer in &peers {
            let synced = synced_from.get(&peer.node_id).copied();
            match repair_from(&replica, &node, peer, synced, config.rpc_timeout).await {
                Ok((repaired, at)) => {
                    synced_from.insert(peer.node_id, at);
                    Counters::add(&replica.counters.repairs_run, 1);
                    Counters::add(&replica.counters.keys_repaired, repaired);
                }
                Err(error) => {
                    replica.counters.failures.fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %peer.public_addr, error = %error, "repair round failed");
                }
            }
        }
        synced_from.retain(|id, _| peers.iter().any(|p| p.node_id == *id));
        rounds += 1;
        if rounds.is_multiple_of(PURGE_EVERY_ROUNDS) {
            purge(&replica, &node, &peers, config.tombstone_grace).await;
        }
    }
}

/// Purges the tombstones older than what every live peer has synced from us, minus the grace.
async fn purge<S: Storage>(
    replica: &Replica<S>,
    node: &DatacakeHandle,
    peers: &[ClusterMember],
    grace: Duration,
) {
    let frontier = if peers.is_empty() {
        Some(node.clock().get_time())
    } else {
        peers
            .iter()
            .map(|p| replica.peer_synced(p.node_id))
            .collect::<Option<Vec<_>>>()
            .and_then(|stamps| stamps.into_iter().min())
    };
    let Some(frontier) = frontier else {
        return;
    };
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    let cutoff = HLCTimestamp::new(frontier.millis().saturating_sub(grace_ms), 0, 0);
    match replica.purge_tombstones(cutoff).await {
        Ok(0) => {}
        Ok(purged) => debug!(purged, "purged tombstones observed by every live member"),
        Err(error) => {
            replica.counters.failures.fetch_add(1, Ordering::Relaxed);
            debug!(error = %error, "tombstone purge failed");
        }
    }
}

/// Counts the reply's archived bytes as repair traffic and deserialises it.
fn received<S, T: Message>(
    replica: &Replica<S>,
    reply: Response<DataView<T>>,
) -> Result<T, Status> {
    Counters::add(&replica.counters.repair_bytes, reply.as_bytes().len());
    reply.into_inner().deserialize_view()
}

/// Folds the newest repaired timestamp into the clock (entries may be newer than the peer's
/// digest clock), so later local writes are stamped after them; returns how many applied.
fn observe(node: &DatacakeHandle, applied: &[Change]) -> usize {
    if let Some(newest) = applied.iter().map(|c| c.mutation.timestamp()).max() {
        let _ = node.clock().register_ts(newest);
    }
    applied.len()
}

/// One repair round with `peer`; returns how many keys were repaired.
pub(crate) async fn repair_from<S: Storage>(
    replica: &Replica<S>,
    node: &DatacakeHandle,
    peer: &ClusterMember,
    synced: Option<HLCTimestamp>,
    rpc_timeout: Duration,
) -> Result<(usize, HLCTimestamp), StoreError<S::Error>> {
    let addr = peer.public_addr;
    let transport = |source: Status| StoreError::Transport { peer: addr, source };
    let mut client = RpcClient::<StoreService<S>>::new(node.network().get_or_connect(addr));
    client.set_timeout(rpc_timeout);

    let request = DigestRequest {
        clock: node.clock().get_time(),
        node_id: node.me().node_id,
        synced,
        totals: replica.totals(),
    };
    let reply = client
        .send(&request)
        .await
        .and_then(|r| received(replica, r))
        .map_err(transport)?;
    let _ = node.clock().register_ts(reply.clock);

    let mut repaired = 0;
    for remote in reply.digests {
        let keyspace = remote.keyspace;
        let local = replica.digest(&keyspace).unwrap_or_default();
        let buckets = local.differing_buckets(&remote.buckets);
        // A few hundred buckets per request keeps every reply far below the body limit,
        // even when a new node takes a whole large keyspace.
        for buckets in buckets.chunks(BUCKETS_PER_REQUEST) {
            let entries = client
                .send(&BucketRequest {
                    keyspace: keyspace.clone(),
                    buckets: buckets.to_vec(),
                })
                .await
                .and_then(|r| received(replica, r))
                .map_err(transport)?
                .entries;
            let entries: Vec<BucketEntry> = entries
                .into_iter()
                .map(|e| BucketEntry {
                    key: e.key,
                    timestamp: e.timestamp,
                    tombstone: e.tombstone,
                })
                .collect();
            let plan = replica.plan(&keyspace, buckets, &entries);
            if !plan.tombstones.is_empty() {
                let changes = plan
                    .tombstones
                    .iter()
                    .map(|e| Change {
                        mutation: Mutation::from(*e),
                        data: None,
                    })
                    .collect();
                let applied = replica.apply(&keyspace, changes).await?;
                repaired += observe(node, &applied);
            }
            for chunk in plan.fetch.chunks(FETCH_CHUNK) {
                let documents = client
                    .send(&FetchRequest {
                        keyspace: keyspace.clone(),
                        keys: chunk.iter().map(|e| e.key).collect(),
                    })
                    .await
                    .and_then(|r| received(replica, r))
                    .map_err(transport)?
                    .documents;
                let applied = replica.apply(&keyspace, to_changes(documents)).await?;
                repaired += observe(node, &applied);
            }
        }
    }
    Ok((repaired, reply.clock))
}
