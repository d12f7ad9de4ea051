//! Write fan-out: one outbound queue per peer, drained in batches by one sender task per peer.
//!
//! A write pushes its mutations onto the queue of every live peer and waits for the
//! acknowledgements of the peers its consistency level selected ([`AckTracker`]). Each
//! sender task takes whatever has accumulated (up to a cap) and sends it as one RPC, so many
//! concurrent writers cost a handful of RPCs per peer, not one each.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datacake_crdt::HLCTimestamp;
use datacake_node::{ClusterMember, DatacakeHandle, NodeId};
use datacake_rpc::RpcClient;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

use crate::messages::{KeyspaceBatch, ReplicateBatch, WireMutation};
use crate::replica::{Counters, Replica};
use crate::service::StoreService;
use crate::storage::{Key, Storage};

/// Most mutations queued for one peer before its backlog is dropped.
const MAX_PENDING: usize = 262_144;

/// Counts the acknowledgements one write still needs: one per mutation per selected peer, so
/// a write whose mutations were split over several batches counts for a peer only once all
/// of them were acknowledged.
#[derive(Debug)]
pub(crate) struct AckTracker {
    peers: usize,
    mutations: usize,
    remaining: AtomicUsize,
    done: Notify,
}

impl AckTracker {
    /// A tracker for a write of `mutations` mutations waiting for `peers` peers.
    pub(crate) fn new(peers: usize, mutations: usize) -> Arc<Self> {
        let mutations = mutations.max(1);
        Arc::new(Self {
            peers,
            mutations,
            remaining: AtomicUsize::new(peers * mutations),
            done: Notify::new(),
        })
    }

    fn ack(&self) {
        let before = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if before == Ok(1) {
            self.done.notify_one();
        }
    }

    /// Peers that acknowledged so far (whole writes' worth of mutations).
    pub(crate) fn responses(&self) -> usize {
        let acked = self.peers * self.mutations - self.remaining.load(Ordering::Acquire);
        acked / self.mutations
    }

    /// Waits until every required acknowledgement arrived, or `timeout` passes; returns
    /// whether they all arrived.
    pub(crate) async fn wait(&self, timeout: Duration) -> bool {
        let all = async {
            while self.remaining.load(Ordering::Acquire) > 0 {
                self.done.notified().await;
            }
        };
        tokio::time::timeout(timeout, all).await.is_ok()
    }
}

/// One mutation waiting to be sent to one peer.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) keyspace: Arc<str>,
    pub(crate) key: Key,
    pub(crate) timestamp: HLCTimestamp,
    pub(crate) data: Option<Bytes>,
    /// Set on every mutation of a write for a peer the write waits for.
    pub(crate) ack: Option<Arc<AckTracker>>,
}

/// The mutations waiting for one peer.
///
/// A write nobody waits for (no acknowledgement) replaces a queued, not yet sent write of the
/// same key that nobody waits for either, if it is newer, and is dropped if it is older: under
/// last writer wins the peer would apply only the newest anyway. So a hot key costs one
/// queued mutation, not one per write, and a burst of overwrites (a `None` workload outrunning
/// the fan-out) neither fills the queue nor costs the peer work it would throw away. Writes
/// whose consistency level waits for this peer keep their own entry (their acknowledgement
/// belongs to them).
#[derive(Debug, Default)]
struct Pending {
    items: Vec<Outbound>,
    /// Where the queued write of a key that nobody waits for is, by keyspace and key.
    unacked: HashMap<(Arc<str>, Key), usize>,
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
                    if item.timestamp > queued.timestamp {
                        queued.timestamp = item.timestamp;
                        queued.data = item.data;
                    }
                    return;
                }
                Entry::Vacant(slot) => {
                    slot.insert(self.items.len());
                }
            }
        }
        self.items.push(item);
    }

    /// Takes up to `max` mutations, oldest first.
    fn take(&mut self, max: usize) -> Vec<Outbound> {
        // A table that a flood of distinct keys grew is not kept around.
        if self.unacked.capacity() > 4 * max {
            self.unacked = HashMap::new();
        } else {
            self.unacked.clear();
        }
        if self.items.len() <= max {
            return std::mem::take(&mut self.items);
        }
        let batch = self.items.drain(..max).collect();
        for (i, item) in self.items.iter().enumerate() {
            if item.ack.is_none() {
                self.unacked.insert((item.keyspace.clone(), item.key), i);
            }
        }
        batch
    }

    fn clear(&mut self) {
        self.items.clear();
        self.unacked.clear();
    }
}

#[derive(Debug)]
struct PeerQueue {
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
    /// Deadline of one RPC.
    pub(crate) rpc_timeout: Duration,
}

/// The per-peer queues of one node.
#[derive(Debug)]
pub(crate) struct Replicator<S> {
    replica: Arc<Replica<S>>,
    node: DatacakeHandle,
    peers: Mutex<HashMap<NodeId, Arc<PeerQueue>>>,
    stop: watch::Receiver<()>,
    config: ReplicationConfig,
}

impl<S: Storage> Replicator<S> {
    pub(crate) fn new(
        replica: Arc<Replica<S>>,
        node: DatacakeHandle,
        stop: watch::Receiver<()>,
        config: ReplicationConfig,
    ) -> Self {
        Self {
            replica,
            node,
            peers: Mutex::new(HashMap::new()),
            stop,
            config,
        }
    }

    /// Queues `mutations` for `peer`, waking its sender.
    pub(crate) fn enqueue(&self, peer: &ClusterMember, mutations: Vec<Outbound>) {
        if mutations.is_empty() {
            return;
        }
        let queue = self.queue_for(peer);
        {
            let mut pending = queue.pending.lock();
            if pending.len() >= MAX_PENDING {
                // The peer does not keep up (or is unreachable but still held live): drop the
                // backlog rather than grow without bound; repair brings the peer up to date,
                // and writes waiting on it fail with `ConsistencyFailure` at their deadline.
                warn!(peer = %queue.addr, dropped = pending.len(), "replication backlog dropped");
                pending.clear();
                Counters::add(&self.replica.counters.failures, 1);
            }
            for item in mutations {
                pending.push(item);
            }
        }
        queue.wake.notify_one();
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
        let mut stop = self.stop.clone();
        self.node.spawn_task(async move {
            tokio::select! {
                _ = stop.changed() => {}
                _ = sender.run() => {}
            }
        });
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
        let mut client =
            RpcClient::<StoreService<S>>::new(self.node.network().get_or_connect(self.queue.addr));
        client.set_timeout(self.config.rpc_timeout);
        loop {
            let batch = { self.queue.pending.lock().take(self.config.max_batch) };
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
        let mut acks = Vec::new();
        let mut groups: Vec<KeyspaceBatch> = Vec::new();
        let mut index: HashMap<Arc<str>, usize> = HashMap::new();
        for item in batch {
            if let Some(ack) = item.ack {
                acks.push(ack);
            }
            let i = *index.entry(item.keyspace.clone()).or_insert_with(|| {
                groups.push(KeyspaceBatch {
                    keyspace: item.keyspace.to_string(),
                    // Sized for the common case: one keyspace per batch.
                    mutations: Vec::with_capacity(if groups.is_empty() { count } else { 0 }),
                });
                groups.len() - 1
            });
            groups[i].mutations.push(WireMutation {
                key: item.key,
                timestamp: item.timestamp,
                data: item.data.map(|d| d.to_vec()),
            });
        }
        let message = ReplicateBatch {
            clock: self.node.clock().get_time(),
            keyspaces: groups,
        };
        match client.send(&message).await {
            Ok(reply) => {
                if let Ok(ack) = reply.into_inner().deserialize_view() {
                    let _ = self.node.clock().register_ts(ack.clock);
                }
                for ack in acks {
                    ack.ack();
                }
            }
            Err(status) => {
                Counters::add(&self.replica.counters.failures, 1);
                debug!(peer = %self.queue.addr, mutations = count, error = %status, "replication batch failed; repair will catch up");
            }
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
    fn acknowledged_writes_keep_their_own_entries() {
        let tracker = AckTracker::new(1, 1);
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
        let batch = pending.take(2);
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
        assert_eq!(pending.take(10).len(), 4);
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test]
    async fn a_peer_counts_once_all_mutations_of_the_write_are_acknowledged() {
        let tracker = AckTracker::new(2, 3);
        for _ in 0..3 {
            tracker.ack(); // the first peer, in any number of batches
        }
        tracker.ack();
        tracker.ack(); // two of the second peer's three
        assert_eq!(tracker.responses(), 1);
        assert!(!tracker.wait(Duration::ZERO).await, "not done yet");
        tracker.ack();
        assert!(tracker.wait(Duration::ZERO).await);
        assert_eq!(tracker.responses(), 2);
        tracker.ack(); // a stray acknowledgement does not underflow
        assert_eq!(tracker.responses(), 2);
    }
}
