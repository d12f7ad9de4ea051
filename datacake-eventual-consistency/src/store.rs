//! The cluster extension and the running store: [`EventuallyConsistentStoreExtension`],
//! [`EventuallyConsistentStore`], [`StoreStatistics`].

use std::fmt;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datacake_node::{
    ClusterExtension, ClusterMember, Consistency, ConsistencyError, DatacakeHandle, DatacakeNode,
    ExtensionGuard, NodeId,
};
use datacake_rpc::RpcClient;
use futures::StreamExt;
use tracing::{info, warn};

use crate::anti_entropy::Repairer;
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::handle::{ReplicatedKeyspaceHandle, ReplicatedStoreHandle};
use crate::handoff;
use crate::members::{Members, Plan};
use crate::messages::RemoveMember;
use crate::replica::{KeyspaceLimits, Replica};
use crate::replication::{ReplicationConfig, Replicator};
use crate::service::{StoreService, SERVICE_NAME};
use crate::storage::Storage;

/// Attaches an eventually consistent replicated store to a node; see the crate docs.
///
/// Settings are checked when the extension starts
/// ([`DatacakeNode::add_extension`](datacake_node::DatacakeNode::add_extension)): a bad one
/// is a [`StoreError::InvalidConfig`] naming it.
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
    config: StoreConfig,
}

impl<S> fmt::Debug for EventuallyConsistentStoreExtension<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventuallyConsistentStoreExtension")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> EventuallyConsistentStoreExtension<S> {
    /// A store over `storage`, with the default settings.
    pub fn new(storage: S) -> Self {
        Self {
            storage,
            config: StoreConfig::default(),
        }
    }

    /// How often to run anti-entropy repair with each peer (default
    /// [`DEFAULT_REPAIR_INTERVAL`](crate::DEFAULT_REPAIR_INTERVAL); more than zero).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_repair_interval(Duration::from_secs(10));
    /// ```
    pub fn with_repair_interval(mut self, interval: Duration) -> Self {
        self.config.repair_interval = interval;
        self
    }

    /// How long a write waits for its consistency level before failing with
    /// [`ConsistencyError::ConsistencyFailure`](crate::ConsistencyError::ConsistencyFailure)
    /// (default [`DEFAULT_WRITE_TIMEOUT`](crate::DEFAULT_WRITE_TIMEOUT); more than zero).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_write_timeout(Duration::from_millis(500));
    /// ```
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// How long a read at a consistency level waits for the replies it needs (default
    /// [`DEFAULT_READ_TIMEOUT`](crate::DEFAULT_READ_TIMEOUT); more than zero).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_read_timeout(Duration::from_millis(500));
    /// ```
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.read_timeout = timeout;
        self
    }

    /// The deadline of one replication, repair or read RPC (default
    /// [`DEFAULT_RPC_TIMEOUT`](crate::DEFAULT_RPC_TIMEOUT); more than zero).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_rpc_timeout(Duration::from_secs(1));
    /// ```
    pub fn with_rpc_timeout(mut self, timeout: Duration) -> Self {
        self.config.rpc_timeout = timeout;
        self
    }

    /// The deadline of one whole repair round with one peer (default
    /// [`DEFAULT_REPAIR_ROUND_TIMEOUT`](crate::DEFAULT_REPAIR_ROUND_TIMEOUT), 5 minutes; more
    /// than zero). The RPC timeout bounds each call of a round; this bounds the round, so a
    /// peer that answers every call slowly (or keeps a round going) cannot hold it forever.
    /// A round cut off keeps what it took, confirms nothing for tombstone purge (which goes
    /// on from the peer's last complete round), and counts as a failure; the next round (at
    /// the next repair interval) starts again and takes what still differs. Rounds with
    /// different peers run side by side, so a slow peer delays only its own rounds. Choose
    /// it longer than a round needs to catch a node up on what it missed while down: deletes
    /// newer than a peer's last complete round are not purged until one completes.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_repair_round_timeout(Duration::from_secs(60));
    /// ```
    pub fn with_repair_round_timeout(mut self, timeout: Duration) -> Self {
        self.config.repair_round_timeout = timeout;
        self
    }

    /// How long a member that is down (crashed, or shut down and not removed) keeps holding
    /// tombstone purge back (default [`DEFAULT_TOMBSTONE_GRACE`](crate::DEFAULT_TOMBSTONE_GRACE),
    /// 24 hours, like Cassandra's `gc_grace_seconds`). A tombstone is purged only once every
    /// member has confirmed it; a member down for longer than this stops counting for purge
    /// (it still counts for consistency levels until
    /// [`remove_member`](crate::EventuallyConsistentStore::remove_member)). When such a
    /// member returns, its copies of documents the cluster deleted and purged meanwhile are
    /// forgotten, not served (see the crate docs).
    ///
    /// The grace counts on two clocks and must pass on both: the wall clock since the
    /// member's recorded `down_since` (kept across restarts), and this process's monotonic
    /// clock since it first held the member down. A wall clock stepping forward cannot cut
    /// the grace short; a restart, or the wall clock stepping back, only makes purges wait
    /// longer.
    ///
    /// Choose it longer than any outage you expect, partitions included. A member that was
    /// only cut off (not crashed) keeps accepting writes at the levels it can meet alone
    /// (`None`, `One` with a local replica); if the others held it down for longer than the
    /// grace and purged meanwhile, those of its writes stamped at or below the purge are
    /// indistinguishable from deleted copies and are forgotten too when it reconnects. (The
    /// whole-cluster simulation, `datacake-sim`, found this with a 5 s grace.)
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_tombstone_grace(Duration::from_secs(6 * 60 * 60));
    /// ```
    pub fn with_tombstone_grace(mut self, grace: Duration) -> Self {
        self.config.tombstone_grace = grace;
        self
    }

    /// The most mutations sent to one peer in one RPC (default
    /// [`DEFAULT_MAX_BATCH`](crate::DEFAULT_MAX_BATCH); at least 1). Batches are also cut by
    /// bytes, below [`with_max_message_size`](Self::with_max_message_size).
    ///
    /// ```
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default()).with_max_batch_size(512);
    /// ```
    pub fn with_max_batch_size(mut self, mutations: usize) -> Self {
        self.config.max_batch = mutations;
        self
    }

    /// The largest message the store sends or asks a peer for, in bytes (default and
    /// maximum [`DEFAULT_MAX_MESSAGE_SIZE`](crate::DEFAULT_MAX_MESSAGE_SIZE), the RPC body
    /// limit; at least 1 MiB). Replication batches, repair replies and read replies are cut
    /// below it, and a `put` of a document that would not fit in one message (with its id,
    /// timestamp and keyspace name) is refused with [`StoreError::DocumentTooLarge`]: about
    /// 64 KiB less than this.
    ///
    /// ```
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_max_message_size(16 << 20);
    /// ```
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// The most keyspaces the store holds (default
    /// [`DEFAULT_MAX_KEYSPACES`](crate::DEFAULT_MAX_KEYSPACES); at least 1). A write that
    /// would create one more is refused with [`StoreError::TooManyKeyspaces`]; so is a
    /// replicated one (the peer's write fails for this replica).
    ///
    /// ```
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default()).with_max_keyspaces(1_000);
    /// ```
    pub fn with_max_keyspaces(mut self, keyspaces: usize) -> Self {
        self.config.max_keyspaces = keyspaces;
        self
    }

    /// The longest keyspace name, in bytes (default
    /// [`DEFAULT_MAX_KEYSPACE_NAME_LEN`](crate::DEFAULT_MAX_KEYSPACE_NAME_LEN); 1 to
    /// 65,535). Longer (and empty) names are refused with
    /// [`StoreError::InvalidKeyspaceName`].
    ///
    /// ```
    /// # use datacake_eventual_consistency::{test_utils::MemStore, EventuallyConsistentStoreExtension};
    /// let ext = EventuallyConsistentStoreExtension::new(MemStore::default())
    ///     .with_max_keyspace_name_len(64);
    /// ```
    pub fn with_max_keyspace_name_len(mut self, bytes: usize) -> Self {
        self.config.max_keyspace_name_len = bytes;
        self
    }
}

#[async_trait]
impl<S: Storage> ClusterExtension for EventuallyConsistentStoreExtension<S> {
    type Output = EventuallyConsistentStore<S>;
    type Error = StoreError<S::Error>;

    async fn init_extension(self, node: &DatacakeNode) -> Result<Self::Output, Self::Error> {
        let config = self.config;
        config.validate()?;
        let limits = KeyspaceLimits {
            max_keyspaces: config.max_keyspaces,
            max_name_len: config.max_keyspace_name_len,
        };
        let (replica, known) = Replica::load(self.storage, limits).await?;
        let replica = Arc::new(replica);
        let handle = node.handle();
        // Stamps from an earlier run may be ahead of today's wall clock: new writes must be
        // stamped after them.
        if let Some(newest) = replica.newest_stamp() {
            if let Err(error) = handle.clock().advance_past(newest) {
                warn!(%error, "the storage holds stamps beyond the clock drift bound");
            }
        }
        let members = Arc::new(Members::new(handle.me().node_id, known));
        // Stops the store (service and tasks) with the last handle, or if starting fails.
        let guard = ExtensionGuard::new(handle.clone(), SERVICE_NAME);
        let tasks = guard.tasks();
        let repairer = Repairer::new(replica.clone(), members.clone(), handle.clone(), config);
        node.add_rpc_service(StoreService {
            store: repairer.clone(),
            hand_off_turn: tokio::sync::Semaphore::new(1),
        });
        // On a graceful leave, every live peer pulls from this node first.
        let leaving = handle.clone();
        guard.before_leave(move || handoff::hand_off::<S>(leaving));
        let replicator = Arc::new(Replicator::new(
            replica.clone(),
            handle.clone(),
            tasks.clone(),
            ReplicationConfig {
                max_batch: config.max_batch,
                max_batch_bytes: config.batch_budget(),
                rpc_timeout: config.rpc_timeout,
            },
        ));

        repairer.record_members(&handle.live_members()).await;
        let mut changes = node.membership_changes();
        let departures = replicator.clone();
        let watcher = repairer.clone();
        tasks.spawn(async move {
            while let Some(change) = changes.next().await {
                for member in change.left {
                    departures.remove(member.node_id);
                }
                watcher.record_members(&watcher.node.live_members()).await;
            }
        });
        let clock_fence = repairer.clock_fence.clone();
        tasks.spawn(repairer.run());

        Ok(EventuallyConsistentStore {
            shared: Arc::new(Shared {
                replica,
                replicator,
                members,
                node: handle,
                config,
                reads: std::sync::atomic::AtomicUsize::new(0),
                clock_fence,
                _guard: guard,
            }),
        })
    }
}

/// What the store's counters have counted since it started, and its replication backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStatistics {
    /// Mutations written through this node's handles (and applied locally).
    pub writes: u64,
    /// Mutations received from peers' write fan-out and applied.
    pub replicated: u64,
    /// Repair rounds completed (one per peer per round, and one per hand-off a leaving peer
    /// asked for).
    pub repairs_run: u64,
    /// Keys taken from peers by repair (counted as they are written, also by rounds that
    /// failed or were cut off later).
    pub keys_repaired: u64,
    /// Bytes of repair replies (digests, bucket entries, documents) received from peers.
    pub repair_bytes_received: u64,
    /// Failed replication batches and repair rounds (a round cut off by
    /// [`with_repair_round_timeout`](EventuallyConsistentStoreExtension::with_repair_round_timeout)
    /// included).
    pub failures: u64,
    /// Writes that did not meet their consistency level in time.
    pub consistency_failures: u64,
    /// Remote timestamps refused for being further ahead of the wall clock than the drift
    /// bound: replicated writes, repaired entries, read replies, peers' clocks.
    pub clock_skew_rejected: u64,
    /// Writes refused with [`StoreError::ClockAhead`](crate::StoreError::ClockAhead): this
    /// node's clock ran ahead of most live peers' by more than the drift bound.
    pub clock_fenced: u64,
    /// Stale versions repaired after reads at a consistency level (one per replica and id).
    pub read_repairs: u64,
    /// Tombstones purged once every member had confirmed them.
    pub tombstones_purged: u64,
    /// Copies forgotten because a peer had purged past them (this node missed the deletes
    /// while it was away).
    pub obsolete_forgotten: u64,
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

    /// Removes a member that is gone for good (decommissioned, or replaced by a node with
    /// another id): it no longer counts for consistency levels and no longer holds tombstone
    /// purge back. Applied on this node, then sent to every live peer.
    ///
    /// Refused for a live node ([`StoreError::MemberIsLive`]) and for an id this node never
    /// knew ([`StoreError::UnknownMember`]). If a live peer cannot be told, the error names
    /// it ([`StoreError::Transport`]) and the removal stands everywhere else: call again (a
    /// repeated call in the same process tells every live peer again; it is not refused as
    /// unknown). A
    /// peer that was down meanwhile keeps counting the member (the safe side) until told.
    /// If the removed node comes back, it is a member again.
    pub async fn remove_member(&self, node_id: NodeId) -> Result<(), StoreError<S::Error>> {
        let shared = &self.shared;
        let live = shared.node.live_members();
        if node_id == shared.node.me().node_id || live.iter().any(|m| m.node_id == node_id) {
            return Err(StoreError::MemberIsLive { node_id });
        }
        let removed = shared
            .replica
            .remove_member(&shared.members, node_id)
            .await?;
        if removed {
            info!(node_id, "member removed");
        } else if !shared.members.was_removed(node_id) {
            return Err(StoreError::UnknownMember { node_id });
        }
        let mut first_failure = None;
        for peer in live
            .iter()
            .filter(|m| m.node_id != shared.node.me().node_id)
        {
            let mut client = RpcClient::<StoreService<S>>::new(
                shared
                    .node
                    .network()
                    .get_or_connect_node(peer.node_id, peer.public_addr),
            );
            client.set_timeout(shared.config.rpc_timeout);
            let request = RemoveMember {
                clock: shared.node.clock().get_time(),
                node_id,
            };
            if let Err(source) = client.send(&request).await {
                warn!(peer = %peer.public_addr, node_id, error = %source, "a peer was not told of a member removal");
                first_failure.get_or_insert(StoreError::Transport {
                    peer: peer.public_addr,
                    source,
                });
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}

/// What the store and its handles share.
pub(crate) struct Shared<S: Storage> {
    pub(crate) replica: Arc<Replica<S>>,
    pub(crate) replicator: Arc<Replicator<S>>,
    pub(crate) members: Arc<Members>,
    pub(crate) node: DatacakeHandle,
    pub(crate) config: StoreConfig,
    /// Reads so far: rotates which replicas a read asks first.
    pub(crate) reads: std::sync::atomic::AtomicUsize,
    /// Refuses writes while this node's clock runs ahead of most peers' (see
    /// [`clock_fence`](crate::clock_fence)).
    pub(crate) clock_fence: Arc<crate::clock_fence::ClockFence>,
    /// Dropped with the last store or handle: takes the store's RPC service off the node
    /// (peers now get `Unavailable`) and ends the store's tasks.
    _guard: ExtensionGuard,
}

impl<S: Storage> Shared<S> {
    /// What an operation at `level` needs on the live view `live`, or why it cannot start:
    /// too few replicas live, or this node expects peers but has seen none (it would count
    /// itself as the whole cluster and meet any level alone).
    pub(crate) fn plan(
        &self,
        level: Consistency,
        live: Arc<[ClusterMember]>,
    ) -> Result<Arc<Plan>, ConsistencyError> {
        let plan = self.members.plan(level, self.node.me(), live);
        if level != Consistency::None && plan.alone && self.node.expects_peers() {
            return Err(ConsistencyError::NotJoined);
        }
        plan.check.clone()?;
        Ok(plan)
    }

    pub(crate) fn statistics(&self) -> StoreStatistics {
        let c = &self.replica.counters;
        let get = |c: &crate::metrics::Counter| c.get();
        StoreStatistics {
            writes: get(&c.writes),
            replicated: get(&c.replicated),
            repairs_run: get(&c.repairs_run),
            keys_repaired: get(&c.keys_repaired),
            repair_bytes_received: get(&c.repair_bytes),
            failures: get(&c.failures),
            consistency_failures: get(&c.consistency_failures),
            clock_skew_rejected: get(&c.clock_skew_rejected),
            clock_fenced: get(&c.clock_fenced),
            read_repairs: get(&c.read_repairs),
            tombstones_purged: get(&c.tombstones_purged),
            obsolete_forgotten: get(&c.obsolete_forgotten),
            replication_backlog: self.replicator.backlog() as u64,
        }
    }
}

#[cfg(test)]
mod tests;
