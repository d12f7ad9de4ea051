//! The one write path: put, put_many, del and del_many all go through [`Shared::mutate`].

use std::time::Instant;

use bytes::Bytes;
use datacake_node::{ClusterMember, Consistency, ConsistencyError};
use tracing::{info, warn};

use crate::ack::{AckTracker, WriteOutcome};
use crate::error::StoreError;
use crate::metrics;
use crate::replica::{Change, Counters};
use crate::replication::Outbound;
use crate::storage::{Key, Storage};
use crate::store::Shared;

impl<S: Storage> Shared<S> {
    /// Applies `ops` (a document to put, or `None` to delete) locally, stamped as they are
    /// claimed, queues them for every live peer, and waits until the replicas `level` needs
    /// have acknowledged them.
    ///
    /// Refused before anything is written: a process whose node id was started again
    /// elsewhere, a bad keyspace name, a document larger than the maximum, and a level whose
    /// replicas are too few live. Afterwards the local write is
    /// kept whatever happens: the call fails at once when replicas refuse so that the level
    /// can no longer be met, or at the write timeout.
    ///
    /// Its latency, whatever the outcome, is recorded in
    /// `datacake_store_write_duration_seconds{level}`.
    pub(crate) async fn mutate(
        &self,
        keyspace: &str,
        ops: Vec<(Key, Option<Bytes>)>,
        level: Consistency,
    ) -> Result<(), StoreError<S::Error>> {
        let started = Instant::now();
        let result = self.mutate_untimed(keyspace, ops, level).await;
        metrics::record_latency(metrics::WRITE_DURATION, level, started);
        result
    }

    /// Refuses a write while this node's wall clock runs ahead of most live peers' clocks
    /// by more than the drift bound ([`clock_fence`](crate::clock_fence)): they would refuse
    /// its stamps, and the copy kept here would later win over what they wrote meanwhile.
    fn check_clock(&self, live: &[ClusterMember]) -> Result<(), StoreError<S::Error>> {
        let me = self.node.me().node_id;
        let peers = live.iter().map(|m| m.node_id).filter(|id| *id != me);
        let clock = self.node.clock();
        let verdict = self
            .clock_fence
            .check(peers, || clock.wall_millis(), clock.max_drift());
        if self.clock_fence.changed(verdict.is_err()) {
            match &verdict {
                Err(ahead) => warn!(
                    behind = ahead.behind,
                    live = ahead.live,
                    by = ?ahead.by,
                    "this node's clock runs ahead of most live peers' beyond the drift bound: refusing writes until it is corrected"
                ),
                Ok(()) => info!("this node's clock is back within the drift bound of its peers: taking writes again"),
            }
        }
        verdict.map_err(|ahead| {
            Counters::add(&self.replica.counters.clock_fenced, 1);
            StoreError::ClockAhead {
                behind: ahead.behind,
                live: ahead.live,
                by: ahead.by,
            }
        })
    }

    async fn mutate_untimed(
        &self,
        keyspace: &str,
        ops: Vec<(Key, Option<Bytes>)>,
        level: Consistency,
    ) -> Result<(), StoreError<S::Error>> {
        if let Some(newer) = self.node.superseded_by() {
            return Err(StoreError::Superseded {
                node_id: self.node.me().node_id,
                newer,
            });
        }
        let live = self.node.live_members_shared();
        self.check_clock(&live)?;
        self.replica.check_name(keyspace)?;
        let max = self.config.max_document_size();
        if let Some((id, data)) = ops
            .iter()
            .find_map(|(id, d)| d.as_ref().filter(|d| d.len() > max).map(|d| (id, d)))
        {
            return Err(StoreError::DocumentTooLarge {
                id: *id,
                size: data.len(),
                max,
            });
        }
        // `None` waits for nobody: it needs the live peers, not a plan.
        let plan = (level != Consistency::None)
            .then(|| self.plan(level, live.clone()))
            .transpose()?;
        let slot = self.replica.slot_or_create(keyspace)?;
        let changes = ops
            .into_iter()
            .map(|(key, data)| Change::local(key, data))
            .collect();
        let applied = self
            .replica
            .apply_local(slot.clone(), changes, self.node.clone())
            .await?;
        Counters::add(&self.replica.counters.writes, applied.len());
        if applied.is_empty() {
            return Ok(());
        }

        let tracker = plan.as_ref().and_then(|plan| {
            let requirement = plan.requirement.as_ref()?;
            Some(AckTracker::new(requirement, &plan.counted, applied.len()))
        });
        let me = self.node.me().node_id;
        let queued_at = Instant::now();
        for peer in live.iter().filter(|m| m.node_id != me) {
            let counts = tracker.is_some()
                && plan
                    .as_ref()
                    .is_some_and(|p| p.counted.iter().any(|c| c.node_id == peer.node_id));
            let ack = tracker.as_ref().filter(|_| counts);
            let items: Vec<Outbound> = applied
                .iter()
                .map(|c| Outbound::new(slot.name.clone(), c.clone(), ack.cloned(), queued_at))
                .collect();
            self.replicator.enqueue(peer, items);
        }

        let Some(tracker) = tracker else {
            return Ok(());
        };
        let timeout = self.config.write_timeout;
        match tracker.wait(timeout).await {
            WriteOutcome::Met => Ok(()),
            WriteOutcome::Failed {
                node_id,
                peer,
                status,
                acknowledged,
            } => {
                Counters::add(&self.replica.counters.consistency_failures, 1);
                Err(StoreError::ReplicaFailed {
                    level: tracker.level(),
                    acknowledged,
                    required: tracker.required(),
                    node_id,
                    peer,
                    source: Box::new(status),
                })
            }
            WriteOutcome::TimedOut { acknowledged } => {
                Counters::add(&self.replica.counters.consistency_failures, 1);
                Err(ConsistencyError::ConsistencyFailure {
                    responses: acknowledged,
                    required: tracker.required(),
                    timeout,
                }
                .into())
            }
        }
    }
}
