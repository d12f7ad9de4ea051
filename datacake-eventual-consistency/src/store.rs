//! The cluster extension and the running store: [`EventuallyConsistentStoreExtension`],
//! [`EventuallyConsistentStore`], [`StoreStatistics`].

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use datacake_node::{
    ClusterExtension, Consistency, ConsistencyError, DatacakeHandle, DatacakeNode,
};
use futures::StreamExt;
use tokio::sync::watch;

use crate::anti_entropy::{self, RepairConfig};
use crate::error::StoreError;
use crate::handle::{ReplicatedKeyspaceHandle, ReplicatedStoreHandle};
use crate::keyspace::Mutation;
use crate::replica::{Change, Counters, Replica};
use crate::replication::{AckTracker, Outbound, ReplicationConfig, Replicator};
use crate::service::{StoreService, SERVICE_NAME};
use crate::storage::{Key, Storage};

/// How often each node runs anti-entropy repair with each peer, by default.
pub const DEFAULT_REPAIR_INTERVAL: Duration = Duration::from_secs(1);
/// How long a write waits for the acknowledgements its consistency level needs, by default.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// The deadline of one replication or repair RPC, by default.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How much older than what every live peer has synced a tombstone must be before it is
/// purged, by default.
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(10);
/// The most mutations sent to one peer in one RPC, by default.
pub const DEFAULT_MAX_BATCH: usize = 4096;

/// Attaches an eventually consistent replicated store to a node; see the crate docs.
///
/// ```
/// use std::time::Duration;
/// use datacake_eventual_consistency::test_utils::MemStore;
/// use datacake_eventual_consistency::EventuallyConsistentStoreExtension;
///
/// let extension = EventuallyConsistentStoreExtension::new(MemStore::default())
///     .with_repair_interval(Duration::from_millis(500))
///     .with_write_timeout(Duration::from_secs(2));
/// ```
#[must_use]
pub struct EventuallyConsistentStoreExtension<S> {
    storage: S,
    repair_interval: Duration,
    write_timeout: Duration,
    rpc_timeout: Duration,
    tombstone_grace: Duration,
    max_batch: usize,
}

impl<S> fmt::Debug for EventuallyConsistentStoreExtension<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventuallyConsistentStoreExtension")
            .field("repair_interval", &self.repair_interval)
            .field("write_timeout", &self.write_timeout)
            .field("rpc_timeout", &self.rpc_timeout)
            .field("tombstone_grace", &self.tombstone_grace)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> EventuallyConsistentStoreExtension<S> {
    /// A store over `storage`, with the default settings.
    pub fn new(storage: S) -> Self {
        Self {
            storage,
            repair_interval: DEFAULT_REPAIR_INTERVAL,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
            tombstone_grace: DEFAULT_TOMBSTONE_GRACE,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }

    /// How often to run anti-entropy repair with each peer (default
    /// [`DEFAULT_REPAIR_INTERVAL`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_repair_interval(Duration::from_secs(10));
    /// ```
    pub fn with_repair_interval(mut self, interval: Duration) -> Self {
        self.repair_interval = interval;
        self
    }

    /// How long a write waits for its consistency level before failing with
    /// [`ConsistencyError::ConsistencyFailure`] (default [`DEFAULT_WRITE_TIMEOUT`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_write_timeout(Duration::from_millis(500));
    /// ```
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The deadline of one replication or repair RPC (default [`DEFAULT_RPC_TIMEOUT`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_rpc_timeout(Duration::from_secs(1));
    /// ```
    pub fn with_rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// How much older a tombstone must be than the point every live peer has synced from
    /// this node (through repair) before it is purged (default [`DEFAULT_TOMBSTONE_GRACE`]).
    /// The grace covers writes stamped before that point but still in flight.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_tombstone_grace(Duration::from_secs(60));
    /// ```
    pub fn with_tombstone_grace(mut self, grace: Duration) -> Self {
        self.tombstone_grace = grace;
        self
    }

    /// The most mutations sent to one peer in one RPC (default [`DEFAULT_MAX_BATCH`]; at
    /// least 1).
    ///
    /// ```
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default()).with_max_batch_size(512);
    /// ```
    pub fn with_max_batch_size(mut self, mutations: usize) -> Self {
        self.max_batch = mutations.max(1);
        self
    }
}

#[async_trait]
impl<S: Storage> ClusterExtension for EventuallyConsistentStoreExtension<S> {
    type Output = EventuallyConsistentStore<S>;
    type Error = StoreError<S::Error>;

    async fn init_extension(self, node: &DatacakeNode) -> Result<Self::Output, Self::Error> {
        let replica = Arc::new(Replica::load(self.storage).await?);
        let handle = node.handle();
        let (stop_tx, stop_rx) = watch::channel(());
        node.add_rpc_service(StoreService {
            replica: replica.clone(),
            node: handle.clone(),
        });
        let replicator = Arc::new(Replicator::new(
            replica.clone(),
            handle.clone(),
            stop_rx.clone(),
            ReplicationConfig {
                max_batch: self.max_batch,
                rpc_timeout: self.rpc_timeout,
            },
        ));

        let mut stop = stop_rx.clone();
        let repair = anti_entropy::run(
            replica.clone(),
            handle.clone(),
            RepairConfig {
                interval: self.repair_interval,
                rpc_timeout: self.rpc_timeout,
                tombstone_grace: self.tombstone_grace,
            },
        );
        node.spawn_task(async move {
            tokio::select! {
                _ = stop.changed() => {}
                _ = repair => {}
            }
        });

        let mut stop = stop_rx;
        let mut changes = node.membership_changes();
        let departures = replicator.clone();
        node.spawn_task(async move {
            let watch = async {
                while let Some(change) = changes.next().await {
                    for member in change.left {
                        departures.remove(member.node_id);
                    }
                }
            };
            tokio::select! {
                _ = stop.changed() => {}
                _ = watch => {}
            }
        });

        Ok(EventuallyConsistentStore {
            shared: Arc::new(Shared {
                replica,
                replicator,
                node: handle,
                write_timeout: self.write_timeout,
                _stop: stop_tx,
            }),
        })
    }
}

/// What the store's counters have counted since it started, and its replication backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStatistics {
    /// Mutations written through this node's handles (and applied locally).
    pub writes: u64,
    /// Mutations received from peers' write fan-out and applied.
    pub replicated: u64,
    /// Repair rounds completed (one per peer per round).
    pub repairs_run: u64,
    /// Keys taken from peers by repair.
    pub keys_repaired: u64,
    /// Bytes of repair replies (digests, bucket entries, documents) received from peers.
    pub repair_bytes_received: u64,
    /// Failed replication batches and repair rounds.
    pub failures: u64,
    /// Writes that did not meet their consistency level in time.
    pub consistency_failures: u64,
    /// Mutations queued for peers and not yet sent, right now (a gauge, not a counter): how
    /// far the write fan-out is behind the writes.
    pub replication_backlog: u64,
}

/// The running store on one node, returned by
/// [`DatacakeNode::add_extension`](datacake_node::DatacakeNode::add_extension).
///
/// Dropping it (and every handle) stops its replication and repair tasks and removes its RPC
/// service from the node, so peers get `Unavailable` from it; shutting the node down stops
/// them too.
pub struct EventuallyConsistentStore<S: Storage> {
    shared: Arc<Shared<S>>,
}

impl<S: Storage> fmt::Debug for EventuallyConsistentStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventuallyConsistentStore")
            .field("node_id", &self.shared.node.me().node_id)
            .field("statistics", &self.statistics())
            .finish()
    }
}

impl<S: Storage> EventuallyConsistentStore<S> {
    /// A handle to read and write any keyspace.
    pub fn handle(&self) -> ReplicatedStoreHandle<S> {
        ReplicatedStoreHandle::new(self.shared.clone())
    }

    /// A handle bound to the keyspace `name`.
    pub fn handle_with_keyspace(&self, name: impl Into<String>) -> ReplicatedKeyspaceHandle<S> {
        ReplicatedKeyspaceHandle::new(self.shared.clone(), Arc::from(name.into()))
    }

    /// The store's counters.
    pub fn statistics(&self) -> StoreStatistics {
        self.shared.statistics()
    }
}

/// What the store and its handles share.
pub(crate) struct Shared<S: Storage> {
    pub(crate) replica: Arc<Replica<S>>,
    replicator: Arc<Replicator<S>>,
    node: DatacakeHandle,
    write_timeout: Duration,
    /// Dropped with the last store or handle: stops the store's tasks.
    _stop: watch::Sender<()>,
}

impl<S: Storage> Drop for Shared<S> {
    /// The last store or handle is gone: take the store's RPC service off the node (peers now
    /// get `Unavailable`); dropping `_stop` right after ends the store's tasks.
    fn drop(&mut self) {
        self.node.remove_rpc_service(SERVICE_NAME);
    }
}

impl<S: Storage> Shared<S> {
    pub(crate) fn statistics(&self) -> StoreStatistics {
        let c = &self.replica.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        StoreStatistics {
            writes: get(&c.writes),
            replicated: get(&c.replicated),
            repairs_run: get(&c.repairs_run),
            keys_repaired: get(&c.keys_repaired),
            repair_bytes_received: get(&c.repair_bytes),
            failures: get(&c.failures),
            consistency_failures: get(&c.consistency_failures),
            replication_backlog: self.replicator.backlog() as u64,
        }
    }

    /// The one write path: stamps `ops` (a document to put, or `None` to delete), applies
    /// them locally, queues them for every live peer and waits for the acknowledgements
    /// `consistency` needs.
    pub(crate) async fn mutate(
        &self,
        keyspace: &str,
        ops: Vec<(Key, Option<Bytes>)>,
        consistency: Consistency,
    ) -> Result<(), StoreError<S::Error>> {
        StoreError::check_keyspace(keyspace)?;
        let me = self.node.me().node_id;
        let mut peers = self.node.live_members();
        peers.retain(|m| m.node_id != me);
        let selected = match consistency {
            Consistency::None => Vec::new(),
            level => self.node.select_nodes(level).await?,
        };
        let clock = self.node.clock();
        let changes: Vec<Change> = ops
            .into_iter()
            .map(|(key, data)| {
                let timestamp = clock.get_time();
                let mutation = match data {
                    Some(_) => Mutation::Put { key, timestamp },
                    None => Mutation::Delete { key, timestamp },
                };
                Change { mutation, data }
            })
            .collect();
        let slot = self.replica.slot_or_create(keyspace);
        let applied = self.replica.apply_to(&slot, changes).await?;
        Counters::add(&self.replica.counters.writes, applied.len());
        if applied.is_empty() {
            return Ok(());
        }

        let tracker =
            (!selected.is_empty()).then(|| AckTracker::new(selected.len(), applied.len()));
        let keyspace = slot.name.clone();
        for chosen in &selected {
            if !peers.iter().any(|p| p.node_id == chosen.node_id) {
                peers.push(chosen.clone());
            }
        }
        for peer in &peers {
            let ack = if selected.iter().any(|s| s.node_id == peer.node_id) {
                tracker.clone()
            } else {
                None
            };
            let items: Vec<Outbound> = applied
                .iter()
                .map(|c| Outbound {
                    keyspace: keyspace.clone(),
                    key: c.mutation.key(),
                    timestamp: c.mutation.timestamp(),
                    data: c.data.clone(),
                    ack: ack.clone(),
                })
                .collect();
            self.replicator.enqueue(peer, items);
        }

        if let Some(tracker) = tracker {
            if !tracker.wait(self.write_timeout).await {
                Counters::add(&self.replica.counters.consistency_failures, 1);
                return Err(ConsistencyError::ConsistencyFailure {
                    responses: tracker.responses(),
                    required: selected.len(),
                    timeout: self.write_timeout,
                }
                .into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
