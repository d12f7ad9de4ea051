//! [`CounterExtension`]: what starts the counter on a node, and the membership task that keeps
//! newcomers up to date.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datacake_node::{
    ClusterExtension, ClusterMember, DatacakeNode, ExtensionGuard, MembershipChanges, NodeId,
};
use futures::StreamExt;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, warn};

use crate::error::CounterError;
use crate::handle::CounterHandle;
use crate::messages::{Entry, MAX_ENTRIES_PER_MESSAGE};
use crate::replica::{Event, Replica};
use crate::service::{CounterService, SERVICE_NAME};

/// How often a catch-up push to a newcomer is tried before giving up: a node is often a
/// live member a moment before its extension has registered its service.
const CATCH_UP_ATTEMPTS: u32 = 10;

/// A replicated grow-only counter, attached to a node with
/// [`DatacakeNode::add_extension`]; it hands back a [`CounterHandle`].
///
/// ```
/// use std::time::Duration;
/// use counter_extension::CounterExtension;
///
/// let extension = CounterExtension::new()
///     .with_rpc_timeout(Duration::from_millis(500))
///     .with_max_entries(10_000);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct CounterExtension {
    rpc_timeout: Duration,
    max_entries: usize,
}

impl Default for CounterExtension {
    fn default() -> Self {
        Self {
            rpc_timeout: Duration::from_secs(2),
            max_entries: 100_000,
        }
    }
}

impl CounterExtension {
    /// The extension with its defaults: a 2 s deadline per peer call, at most 100,000
    /// entries (one per counter and node).
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a call to one peer may take before the operation fails with
    /// [`CounterError::PeerTimedOut`] (default 2 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let extension = counter_extension::CounterExtension::new()
    ///     .with_rpc_timeout(Duration::from_secs(1));
    /// ```
    pub fn with_rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// The most `(counter, node)` entries the node holds (default 100,000). Peers can create
    /// entries, so memory needs a bound: past it, merges are refused with
    /// `ResourceExhausted` and local increments of new counters with [`CounterError::Full`].
    ///
    /// ```
    /// let extension = counter_extension::CounterExtension::new().with_max_entries(1_000);
    /// ```
    pub fn with_max_entries(mut self, entries: usize) -> Self {
        self.max_entries = entries;
        self
    }
}

#[async_trait]
impl ClusterExtension for CounterExtension {
    type Output = CounterHandle;
    type Error = CounterError;

    /// Starts the counter on `node`: registers the RPC service, then spawns the membership
    /// task. Nothing here blocks on peers, so a node starts alone just as well.
    async fn init_extension(self, node: &DatacakeNode) -> Result<CounterHandle, CounterError> {
        if self.rpc_timeout.is_zero() {
            return Err(CounterError::InvalidConfig(
                "the rpc timeout must be above zero",
            ));
        }
        if self.max_entries == 0 {
            return Err(CounterError::InvalidConfig(
                "max entries must be above zero",
            ));
        }
        let replica = Arc::new(Replica::new(
            node.handle(),
            self.max_entries,
            self.rpc_timeout,
        ));
        // The guard stops the extension with the last handle: it removes the service and
        // ends the tasks spawned through `guard.tasks()` (which also end with the node).
        let guard = ExtensionGuard::new(node.handle(), SERVICE_NAME);
        // Peers reach the service at this node's one address (gossip shares it).
        node.add_rpc_service(CounterService {
            replica: replica.clone(),
        });
        guard
            .tasks()
            .spawn(watch_membership(replica.clone(), node.membership_changes()));
        Ok(CounterHandle::new(replica, guard))
    }
}

/// Pushes the whole state to every node that joins, and abandons that push if the node
/// leaves again. Ends when the node shuts down or the last handle is dropped (either way the
/// future is dropped, and the `JoinSet` with it aborts the pushes in flight).
async fn watch_membership(replica: Arc<Replica>, mut changes: MembershipChanges) {
    let _running = replica.task_started();
    let me = replica.node.me().node_id;
    let mut pushes = JoinSet::new();
    let mut in_flight: HashMap<NodeId, AbortHandle> = HashMap::new();
    loop {
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else { return };
                // Leaving first: a node that restarted is reported as left and joined.
                for member in change.left {
                    if let Some(push) = in_flight.remove(&member.node_id) {
                        push.abort();
                    }
                }
                for member in change.joined.into_iter().filter(|m| m.node_id != me) {
                    let id = member.node_id;
                    let push = pushes.spawn(catch_up(replica.clone(), member));
                    if let Some(previous) = in_flight.insert(id, push) {
                        previous.abort();
                    }
                }
            }
            Some(done) = pushes.join_next_with_id(), if !pushes.is_empty() => {
                if let Ok((task, node_id)) = done {
                    if in_flight.get(&node_id).is_some_and(|h| h.id() == task) {
                        in_flight.remove(&node_id);
                    }
                }
            }
        }
    }
}

/// Sends a newcomer this node's whole state, in messages of at most
/// [`MAX_ENTRIES_PER_MESSAGE`] entries. Returns the newcomer's id.
///
/// First an empty merge, retried until the newcomer's service answers; only then the
/// snapshot. The order closes a gap: an increment applied after the snapshot is pushed by
/// `incr` to a service that is already there, and one applied before is in the snapshot.
/// (Snapshot first, and an increment made while the newcomer had no service yet would be
/// in neither.)
async fn catch_up(replica: Arc<Replica>, peer: ClusterMember) -> NodeId {
    let _running = replica.task_started();
    if !push_with_retries(&replica, &peer, Vec::new()).await {
        return peer.node_id;
    }
    let entries = replica.counters.lock().all_entries();
    for chunk in entries.chunks(MAX_ENTRIES_PER_MESSAGE) {
        if !push_with_retries(&replica, &peer, chunk.to_vec()).await {
            return peer.node_id;
        }
    }
    replica.record(Event::CatchUp);
    peer.node_id
}

/// Pushes `entries` to `peer`, up to [`CATCH_UP_ATTEMPTS`] times with a growing pause;
/// `false` if every attempt failed.
async fn push_with_retries(replica: &Replica, peer: &ClusterMember, entries: Vec<Entry>) -> bool {
    let mut backoff = Duration::from_millis(50);
    for attempt in 1..=CATCH_UP_ATTEMPTS {
        match replica.push(peer, entries.clone()).await {
            Ok(()) => return true,
            Err(error) if attempt == CATCH_UP_ATTEMPTS => {
                warn!(peer = %peer.public_addr, %error, "gave up sending the counters to a newcomer");
            }
            Err(error) => {
                debug!(peer = %peer.public_addr, %error, attempt, "catch-up push failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    false
}
