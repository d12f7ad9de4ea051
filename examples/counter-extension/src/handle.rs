//! [`CounterHandle`]: increments and reads, at a consistency level.

use std::sync::Arc;

use datacake_node::{ClusterMember, Consistency, ExtensionGuard};
use futures::future::join_all;
use tracing::debug;

use crate::error::CounterError;
use crate::messages::{check_name, Entry};
use crate::replica::{CounterStatistics, Replica};
use crate::state::Refused;

/// Increments and reads the replicated counters of one node. Cheap to clone.
///
/// **Dropping the last handle stops the extension on this node**: its RPC service is
/// removed from the node's server (peers calling it get `Unavailable`) and its membership
/// task ends. The node itself keeps running. This is the rule of every Datacake extension
/// (the eventually consistent store follows it too): the handles own the extension, the node
/// only hosts it.
#[derive(Debug, Clone)]
pub struct CounterHandle {
    shared: Arc<Shared>,
}

/// What the handles share. The RPC service and the tasks hold only the [`Replica`], never
/// this, so the last handle's drop is what drops the guard.
#[derive(Debug)]
struct Shared {
    replica: Arc<Replica>,
    /// Dropped with the last handle: removes the service and ends the membership task.
    _guard: ExtensionGuard,
}

impl CounterHandle {
    pub(crate) fn new(replica: Arc<Replica>, guard: ExtensionGuard) -> Self {
        Self {
            shared: Arc::new(Shared {
                replica,
                _guard: guard,
            }),
        }
    }

    fn replica(&self) -> &Arc<Replica> {
        &self.shared.replica
    }

    /// Adds `by` to counter `name` and returns its value on this node afterwards.
    ///
    /// The increment is applied here first, then pushed to the peers the node's selector
    /// picks for `consistency`, and the call waits for each of them to acknowledge (each
    /// within the rpc timeout). The other live peers get it in the background, so the
    /// cluster converges whatever the level.
    ///
    /// Errors: [`CounterError::Consistency`] if there are too few live peers for the level,
    /// [`CounterError::PeerFailed`] / [`CounterError::PeerTimedOut`] naming the peer that
    /// did not acknowledge. The increment stays applied on this node either way, and still
    /// spreads to the live peers in the background.
    pub async fn incr(
        &self,
        name: &str,
        by: u64,
        consistency: Consistency,
    ) -> Result<u64, CounterError> {
        check_name(name).map_err(|_| CounterError::InvalidName { len: name.len() })?;
        let replica = self.replica();
        // Apply before choosing peers: a node that joins meanwhile gets either this
        // increment in its catch-up snapshot, or this push (it is in the view by then).
        let (delta, value) = {
            let mut counters = replica.counters.lock();
            let delta = counters
                .incr(name, replica.node.me().node_id, by, replica.max_entries)
                .map_err(|refused| match refused {
                    Refused::Full => CounterError::Full {
                        max: replica.max_entries,
                    },
                    Refused::Overflow => CounterError::Overflow {
                        name: name.to_owned(),
                    },
                })?;
            (delta, counters.value(name))
        };
        let selected = match replica.node.select_nodes(consistency).await {
            Ok(selected) => selected,
            Err(error) => {
                // The level cannot be met, but the increment is applied: let it spread.
                self.spread_to_others(&[], &delta);
                return Err(error.into());
            }
        };
        self.spread_to_others(&selected, &delta);
        let acks = join_all(
            selected
                .iter()
                .map(|peer| replica.push(peer, delta.clone())),
        )
        .await;
        acks.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(value)
    }

    /// Pushes `delta` in the background to the live peers that `selected` leaves out: best
    /// effort (a failure is only logged), on a node task, so it stops with the node.
    fn spread_to_others(&self, selected: &[ClusterMember], delta: &[Entry]) {
        let replica = self.replica().clone();
        let me = replica.node.me().node_id;
        let others: Vec<ClusterMember> = replica
            .node
            .live_members()
            .into_iter()
            .filter(|m| m.node_id != me && !selected.iter().any(|s| s.node_id == m.node_id))
            .collect();
        if others.is_empty() {
            return;
        }
        let delta = delta.to_vec();
        let node = replica.node.clone();
        node.spawn_task(async move {
            let _running = replica.task_started();
            let pushes = others.iter().map(|peer| replica.push(peer, delta.clone()));
            for result in join_all(pushes).await {
                if let Err(error) = result {
                    debug!(%error, "background push failed; the peer catches up when it rejoins");
                }
            }
        });
    }

    /// The value of counter `name` as this node knows it (0 if unknown). Never waits.
    pub fn get(&self, name: &str) -> u64 {
        self.replica().counters.lock().value(name)
    }

    /// The value of counter `name` after merging what the peers picked for `consistency`
    /// hold of it: with [`Consistency::All`], every increment acknowledged anywhere is
    /// counted. Fails like [`incr`](Self::incr) when a peer does not answer.
    pub async fn get_at(&self, name: &str, consistency: Consistency) -> Result<u64, CounterError> {
        check_name(name).map_err(|_| CounterError::InvalidName { len: name.len() })?;
        let replica = self.replica();
        let selected = replica.node.select_nodes(consistency).await?;
        let fetched = join_all(selected.iter().map(|peer| replica.fetch(peer, name))).await;
        fetched.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(self.get(name))
    }

    /// What the extension did on this node so far.
    pub fn statistics(&self) -> CounterStatistics {
        self.replica().statistics()
    }
}
