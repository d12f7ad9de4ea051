//! Write fan-out: one outbound queue per peer, drained in batches by one sender task per peer.
//!
//! A write pushes its mutations onto the queue of every live peer and waits until any of
//! them have acknowledged it as its consistency level needs ([`AckTracker`]): the first
//! acknowledgements win, and a peer that refuses or cannot be reached fails the write at
//! once if the level can no longer be met. Each
//! sender task takes whatever has accumulated, up to a count and a byte budget, and sends it
//! as one RPC, so many concurrent writers cost a handful of RPCs per peer, not one each, and
//! no batch exceeds the RPC body limit however large the documents.
//!
//! A mutation takes four forms between a handle and a peer's storage, each for a reason:
//! the handle's arguments become a [`Change`] (stamped, applied locally under last writer
//! wins), one [`Outbound`] per peer (its queue entry: the keyspace, the acknowledgement the
//! write waits on, when it was queued), a [`WireMutation`] in the peer's batch (the archived
//! form) and, on the peer, a `Document` for its `Storage`. The document's bytes are shared
//! (`Bytes`) from the handle to the archive: each peer costs one copy, into its archive, and
//! the peer one more, out of the received body into its storage.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use datacake_crdt::{HLCTimestamp, Version};
use datacake_node::{ClusterMember, DatacakeHandle, ExtensionTasks, NodeId};
use datacake_rpc::{RpcClient, Status};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::ack::AckTracker;
use crate::config::MUTATION_OVERHEAD;
use crate::messages::{KeyspaceBatch, Refusal, ReplicateBatch, WireMutation};
use crate::metrics;
use crate::replica::{Change, Counters, Replica};
use crate::service::StoreService;
use crate::storage::{Key, Storage};

/// Most mutations queued for one peer before its backlog is dropped.
const MAX_PENDING: usize = 262_144;
/// Most bytes of documents queued for one peer before its backlog is dropped.
const MAX_PENDING_BYTES: usize = 1 << 30;

/// One mutation waiting to be sent to one peer.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) keyspace: Arc<str>,
    pub(crate) key: Key,
    pub(crate) timestamp: HLCTimestamp,
    pub(crate) data: Option<Bytes>,
    /// Set on every mutation of a write whose level counts this peer's acknowledgement.
    pub(crate) ack: Option<Arc<AckTracker>>,
    /// When it was queued (kept when a newer write of the key replaces it in the queue).
    pub(crate) queued_at: Instant,
}

impl Outbound {
    /// `change` of `keyspace`, for a write that waits on `ack` (if any), queued at
    /// `queued_at` (one clock reading for a whole write).
    pub(crate) fn new(
        keyspace: Arc<str>,
        change: Change,
        ack: Option<Arc<AckTracker>>,
        queued_at: Instant,
    ) -> Self {
        Self {
            keyspace,
            key: change.mutation.key(),
            timestamp: change.mutation.timestamp(),
            data: change.data,
            ack,
            queued_at,
        }
    }

    /// Its rank under last writer wins (no data: a delete).
    fn version(&self) -> Version {
        Version {
            timestamp: self.timestamp,
            delete: self.data.is_none(),
        }
    }

    /// What the mutation costs in a batch, in bytes (an upper bound).
    fn wire_size(&self) -> usize {
        MUTATION_OVERHEAD + self.keyspace.len() + self.data.as_ref().map_or(0, Bytes::len)
    }
}

/// The mutations waiting for one peer.
///
/// A write nobody waits for (no acknowledgement) replaces a queued, not yet sent write of the
/// same key that nobody waits for either, if it wins under last writer wins (newer, or a
/// delete at the same timestamp: [`Version::beats`]), and is dropped otherwise: the peer would
/// apply only the winner anyway. So a hot key costs one
/// queued mutation, not one per write, and a burst of overwrites (a `None` workload outrunning
/// the fan-out) neither fills the queue nor costs the peer work it would throw away. Writes
/// whose consistency level waits for this peer keep their own entry (their acknowledgement
/// belongs to them).
#[derive(Debug, Default)]
struct Pending {
    items: Vec<Outbound>,
    /// Where the queued write of a key that nobody waits for is, by keyspace and key.
    unacked: HashMap<(Arc<str>, Key), usize>,
    /// The wire size of `items`.
    bytes: usize,
}

impl Pending {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn push(&mut self, item: Outbound) {
        if item.ack.is_none() {
            match self.unacked.entry((item.keyspace.clone(), item.key)) {
                Entry::Occupied(queued) => {
                    let queued = &mut self.items[*queued.get()];
                    if item.version().beats(queued.version()) {
                        self.bytes -= queued.wire_size();
                        queued.timestamp = item.timestamp;
                        queued.data = item.data;
                        self.bytes += queued.wire_size();
                    }
                    return;
                }
                Entry::Vacant(slot) => {
                    slot.insert(self.items.len());
                }
            }
        }
        self.bytes += item.wire_size();
        self.items.push(item);
        metrics::backlog_changed(1, 0);
    }

    /// Takes the oldest mutations, up to `max` of them and `budget` bytes (at least one).
    fn take(&mut self, max: usize, budget: usize) -> Vec<Outbound> {
        // A table that a flood of distinct keys grew is not kept around.
        if self.unacked.capacity() > 4 * max {
            self.unacked = HashMap::new();
        } else {
            self.unacked.clear();
        }
        let mut count = 0;
        let mut bytes = 0;
        for item in &self.items {
            let size = item.wire_size();
            if count == max || (count > 0 && bytes + size > budget) {
                break;
            }
            count += 1;
            bytes += size;
        }
        self.bytes -= bytes;
        metrics::backlog_changed(0, count);
        if count == self.items.len() {
            return std::mem::take(&mut self.items);
        }
        let batch = self.items.drain(..count).collect();
        for (i, item) in self.items.iter().enumerate() {
            if item.ack.is_none() {
                self.unacked.insert((item.keyspace.clone(), item.key), i);
            }
        }
        batch
    }

    /// Empties the queue and returns what it held.
    fn clear(&mut self) -> Vec<Outbound> {
        self.unacked.clear();
        self.bytes = 0;
        metrics::backlog_changed(0, self.items.len());
        std::mem::take(&mut self.items)
    }
}

impl Drop for Pending {
    /// What was still queued leaves the backlog gauge with the queue (the store stopped).
    fn drop(&mut self) {
        metrics::backlog_changed(0, self.items.len());
    }
}

/// Fails the writes waiting on `items` for peer `node_id` at `addr`.
fn fail_waiting(items: &[Outbound], node_id: NodeId, addr: SocketAddr, status: &Status) {
    let mut last: Option<&Arc<AckTracker>> = None;
    for ack in items.iter().filter_map(|i| i.ack.as_ref()) {
        if last.is_some_and(|l| Arc::ptr_eq(l, ack)) {
            continue;
        }
        ack.fail(node_id, addr, status);
        last = Some(ack);
    }
}

#[derive(Debug)]
struct PeerQueue {
    node_id: NodeId,
    addr: SocketAddr,
    pending: Mutex<Pending>,
    wake: Notify,
    closed: AtomicBool,
}

/// Settings of the fan-out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplicationConfig {
    /// Most mutations in one RPC.
    pub(crate) max_batch: usize,
    /// Most bytes of mutations in one RPC.
    pub(crate) max_batch_bytes: usize,
    /// Deadline of one RPC.
    pub(crate) rpc_timeout: Duration,
}

/// The per-peer queues of one node.
#[derive(Debug)]
pub(crate) struct Replicator<S> {
    replica: Arc<Replica<S>>,
    node: DatacakeHandle,
    peers: Mutex<HashMap<NodeId, Arc<PeerQueue>>>,
    tasks: ExtensionTasks,
    config: ReplicationConfig,
}

impl<S: Storage> Replicator<S> {
    pub(crate) fn new(
        replica: Arc<Replica<S>>,
        node: DatacakeHandle,
        tasks: ExtensionTasks,
        config: ReplicationConfig,
    ) -> Self {
        Self {
            replica,
            node,
            peers: Mutex::new(HashMap::new()),
            tasks,
            config,
        }
    }

    /// Queues `mutations` for `peer`, waking its sender.
    pub(crate) fn enqueue(&self, peer: &ClusterMember, mutations: Vec<Outbound>) {
        if mutations.is_empty() {
            return;
        }
        let queue = self.queue_for(peer);
        let dropped = {
            let mut pending = queue.pending.lock();
            let dropped = if pending.len() >= MAX_PENDING || pending.bytes >= MAX_PENDING_BYTES {
                // The peer does not keep up (or is unreachable but still held live): drop the
                // backlog rather than grow without bound; repair brings the peer up to date,
                // and writes waiting on it count it as failed.
                warn!(peer = %queue.addr, dropped = pending.len(), bytes = pending.bytes, "replication backlog dropped");
                Counters::add(&self.replica.counters.failures, 1);
                pending.clear()
            } else {
                Vec::new()
            };
            for item in mutations {
                pending.push(item);
            }
            dropped
        };
        queue.wake.notify_one();
        if !dropped.is_empty() {
            let status =
                Status::unavailable("replication backlog dropped: the peer does not keep up");
            fail_waiting(&dropped, queue.node_id, queue.addr, &status);
        }
    }

    /// Mutations queued for every peer and not yet taken into a batch.
    pub(crate) fn backlog(&self) -> usize {
        let queues: Vec<Arc<PeerQueue>> = self.peers.lock().values().cloned().collect();
        queues.iter().map(|q| q.pending.lock().len()).sum()
    }

    /// Stops the sender of a departed peer (its queued mutations are dropped: repair brings
    /// the peer up to date if it comes back).
    pub(crate) fn remove(&self, node_id: NodeId) {
        if let Some(queue) = self.peers.lock().remove(&node_id) {
            queue.closed.store(true, Ordering::Release);
            queue.wake.notify_one();
            let dropped = queue.pending.lock().clear();
            fail_waiting(
                &dropped,
                node_id,
                queue.addr,
                &Status::unavailable("the peer left"),
            );
        }
    }

    fn queue_for(&self, peer: &ClusterMember) -> Arc<PeerQueue> {
        let mut peers = self.peers.lock();
        if let Some(queue) = peers.get(&peer.node_id) {
            if queue.addr == peer.public_addr {
                return queue.clone();
            }
            queue.closed.store(true, Ordering::Release);
            queue.wake.notify_one();
        }
        let queue = Arc::new(PeerQueue {
            node_id: peer.node_id,
            addr: peer.public_addr,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        peers.insert(peer.node_id, queue.clone());
        let sender = Sender {
            queue: queue.clone(),
            replica: self.replica.clone(),
            node: self.node.clone(),
            config: self.config,
        };
        self.tasks.spawn(sender.run());
        queue
    }
}

/// The task draining one peer's queue.
struct Sender<S> {
    queue: Arc<PeerQueue>,
    replica: Arc<Replica<S>>,
    node: DatacakeHandle,
    config: ReplicationConfig,
}

impl<S: Storage> Sender<S> {
    async fn run(self) {
        let mut client = RpcClient::<StoreService<S>>::new(
            self.node
                .network()
                .get_or_connect_node(self.queue.node_id, self.queue.addr),
        );
        client.set_timeout(self.config.rpc_timeout);
        loop {
            let batch = {
                self.queue
                    .pending
                    .lock()
                    .take(self.config.max_batch, self.config.max_batch_bytes)
            };
            if batch.is_empty() {
                if self.queue.closed.load(Ordering::Acquire) {
                    return;
                }
                self.queue.wake.notified().await;
                continue;
            }
            self.send(&client, batch).await;
        }
    }

    async fn send(&self, client: &RpcClient<StoreService<S>>, batch: Vec<Outbound>) {
        let count = batch.len();
        // The queue is in arrival order: the first mutation waited longest.
        let oldest = batch.first().map(|item| item.queued_at);
        // Grouped by keyspace; `order` lists the batch's items in wire order (keyspace by
        // keyspace), which is how the peer numbers the mutations it refuses.
        let mut groups: Vec<(KeyspaceBatch, Vec<usize>)> = Vec::new();
        let mut index: HashMap<Arc<str>, usize> = HashMap::new();
        let mut acks: Vec<Option<Arc<AckTracker>>> = Vec::with_capacity(count);
        for (i, item) in batch.into_iter().enumerate() {
            let g = *index.entry(item.keyspace.clone()).or_insert_with(|| {
                groups.push((
                    KeyspaceBatch {
                        keyspace: item.keyspace.to_string(),
                        // Sized for the common case: one keyspace per batch.
                        mutations: Vec::with_capacity(if groups.is_empty() { count } else { 0 }),
                    },
                    Vec::new(),
                ));
                groups.len() - 1
            });
            groups[g].0.mutations.push(WireMutation {
                key: item.key,
                timestamp: item.timestamp,
                data: item.data,
            });
            groups[g].1.push(i);
            acks.push(item.ack);
        }
        let order: Vec<usize> = groups
            .iter()
            .flat_map(|(_, idx)| idx.iter().copied())
            .collect();
        let message = ReplicateBatch {
            clock: self.node.clock().get_time(),
            keyspaces: groups.into_iter().map(|(g, _)| g).collect(),
        };
        let (node_id, addr) = (self.queue.node_id, self.queue.addr);
        let reply = client
            .send(&message)
            .await
            .and_then(|r| r.into_inner().deserialize_view());
        let reply = match reply {
            Ok(reply) => reply,
            Err(status) => {
                Counters::add(&self.replica.counters.failures, 1);
                debug!(peer = %addr, mutations = count, error = %status, "replication batch failed; repair will catch up");
                let mut failed: Vec<&Arc<AckTracker>> = Vec::new();
                for ack in acks.iter().flatten() {
                    if !failed.iter().any(|f| Arc::ptr_eq(f, ack)) {
                        ack.fail(node_id, addr, &status);
                        failed.push(ack);
                    }
                }
                return;
            }
        };
        if let Some(queued_at) = oldest {
            metrics::record_replication_lag(queued_at);
        }
        if self.node.clock().register_ts(reply.clock).is_err() {
            Counters::add(&self.replica.counters.clock_skew_rejected, 1);
        }
        let mut refused: HashMap<usize, Refusal> = HashMap::new();
        for r in &reply.refused {
            if let Some(item) = order.get(r.index as usize) {
                refused.insert(*item, r.reason);
            }
        }
        if !refused.is_empty() {
            warn!(peer = %addr, refused = refused.len(), "peer refused replicated writes");
        }
        // Acknowledge per write, in runs of consecutive items of one write.
        let mut run: Option<(&Arc<AckTracker>, usize)> = None;
        for (i, ack) in acks.iter().enumerate() {
            let Some(ack) = ack else { continue };
            if let Some(reason) = refused.get(&i) {
                let status = Status::invalid_payload(match reason {
                    Refusal::ClockSkew => "refused: stamped beyond the clock drift bound",
                    Refusal::Keyspace => "refused: invalid keyspace or too many keyspaces",
                    Refusal::Purged => {
                        "refused: stamped at or below the peer's purge watermark (this node's \
                         clock lags the cluster's)"
                    }
                });
                ack.fail(node_id, addr, &status);
                continue;
            }
            match &mut run {
                Some((current, n)) if Arc::ptr_eq(current, ack) => *n += 1,
                _ => {
                    if let Some((current, n)) = run.take() {
                        current.ack(node_id, n);
                    }
                    run = Some((ack, 1));
                }
            }
        }
        if let Some((current, n)) = run {
            current.ack(node_id, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: Key, millis: u64, ack: Option<&Arc<AckTracker>>) -> Outbound {
        Outbound {
            keyspace: Arc::from("ks"),
            key,
            timestamp: HLCTimestamp::new(millis, 0, 1),
            data: Some(Bytes::from(millis.to_string())),
            ack: ack.cloned(),
            queued_at: Instant::now(),
        }
    }

    fn queued(pending: &Pending) -> Vec<(Key, u64, bool)> {
        pending
            .items
            .iter()
            .map(|i| (i.key, i.timestamp.millis(), i.ack.is_some()))
            .collect()
    }

    #[test]
    fn unacknowledged_writes_of_a_key_keep_only_the_newest() {
        let mut pending = Pending::default();
        pending.push(write(1, 10, None));
        pending.push(write(2, 11, None));
        pending.push(write(1, 12, None)); // replaces 10
        pending.push(write(1, 9, None)); // older than what is queued: dropped
        assert_eq!(queued(&pending), vec![(1, 12, false), (2, 11, false)]);
        assert_eq!(
            pending.items[0].data.as_deref(),
            Some(&b"12"[..]),
            "the newest document goes"
        );
    }

    #[test]
    fn a_delete_replaces_a_queued_put_of_the_same_timestamp() {
        let mut pending = Pending::default();
        pending.push(write(1, 10, None));
        let mut delete = write(1, 10, None);
        delete.data = None;
        pending.push(delete);
        assert_eq!(queued(&pending), vec![(1, 10, false)]);
        assert!(
            pending.items[0].data.is_none(),
            "the delete wins the tie, as it does on every replica"
        );
        pending.push(write(1, 10, None));
        assert!(
            pending.items[0].data.is_none(),
            "a put does not win it back"
        );
    }

    #[test]
    fn acknowledged_writes_keep_their_own_entries() {
        let tracker = crate::ack::tests::tracker(datacake_node::Consistency::One, 2, 1);
        let mut pending = Pending::default();
        pending.push(write(1, 10, Some(&tracker)));
        pending.push(write(1, 11, Some(&tracker)));
        pending.push(write(1, 12, None));
        pending.push(write(1, 13, None)); // replaces 12, not an acknowledged entry
        assert_eq!(
            queued(&pending),
            vec![(1, 10, true), (1, 11, true), (1, 13, false)]
        );
    }

    #[test]
    fn taking_a_batch_keeps_the_index_right_for_what_remains() {
        let mut pending = Pending::default();
        for key in 0..5 {
            pending.push(write(key, 10, None));
        }
        let batch = pending.take(2, usize::MAX);
        assert_eq!(batch.iter().map(|i| i.key).collect::<Vec<_>>(), vec![0, 1]);
        pending.push(write(4, 20, None)); // still queued: replaced in place
        pending.push(write(0, 20, None)); // already taken: queued anew
        assert_eq!(
            queued(&pending),
            vec![
                (2, 10, false),
                (3, 10, false),
                (4, 20, false),
                (0, 20, false)
            ]
        );
        assert_eq!(pending.take(10, usize::MAX).len(), 4);
        assert_eq!(pending.len(), 0);
        assert_eq!(pending.bytes, 0);
    }

    #[test]
    fn a_batch_is_cut_by_bytes_but_always_takes_one() {
        let big = |key| Outbound {
            keyspace: Arc::from("ks"),
            key,
            timestamp: HLCTimestamp::new(1, 0, 1),
            data: Some(Bytes::from(vec![0; 1 << 20])),
            ack: None,
            queued_at: Instant::now(),
        };
        let mut pending = Pending::default();
        for key in 0..10 {
            pending.push(big(key));
        }
        let budget = 3 * (1 << 20) + 3 * 100;
        assert_eq!(pending.take(4096, budget).len(), 3);
        assert_eq!(
            pending.take(4096, 10).len(),
            1,
            "an oversized first item still goes"
        );
        assert_eq!(pending.take(4096, usize::MAX).len(), 6);
        assert_eq!(pending.bytes, 0);
    }
}
