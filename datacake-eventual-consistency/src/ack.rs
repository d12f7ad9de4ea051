//! [`AckTracker`]: one write's acknowledgements, counted against its consistency level
//! with `datacake_node`'s [`AckTally`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{AckProgress, AckTally, ClusterMember, Consistency, NodeId, Requirement};
use datacake_rpc::Status;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// How a write's wait for its acknowledgements ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    /// The level was met.
    Met,
    /// A replica failed so that the level can no longer be met.
    Failed {
        node_id: NodeId,
        peer: SocketAddr,
        status: Status,
        acknowledged: usize,
    },
    /// The deadline passed first.
    TimedOut { acknowledged: usize },
}

/// Tracks one write's acknowledgements: per asked peer, how many of the write's mutations
/// it still has to acknowledge (a write split over several batches counts for a peer once
/// all of them were), and the level's tally over the peers.
#[derive(Debug)]
pub(crate) struct AckTracker {
    level: Consistency,
    required: usize,
    state: Mutex<TrackerState>,
    done: Notify,
}

#[derive(Debug)]
struct TrackerState {
    tally: AckTally,
    /// For a write of several mutations: per asked peer, how many it has yet to acknowledge
    /// (a handful of peers: a vector beats a map). A write of one mutation needs none: the
    /// tally ignores a peer's repeated answers.
    remaining: Option<Vec<(NodeId, usize)>>,
    outcome: Option<WriteOutcome>,
}

impl AckTracker {
    /// A tracker for a write of `mutations` mutations sent to `asked`, meeting `requirement`.
    pub(crate) fn new(
        requirement: &Requirement,
        asked: &[ClusterMember],
        mutations: usize,
    ) -> Arc<Self> {
        let tally = AckTally::new(requirement, |id| asked.iter().any(|m| m.node_id == id));
        let remaining =
            (mutations > 1).then(|| asked.iter().map(|m| (m.node_id, mutations)).collect());
        let outcome = match tally.progress() {
            AckProgress::Met => Some(WriteOutcome::Met),
            _ => None,
        };
        Arc::new(Self {
            level: requirement.level(),
            required: requirement.required(),
            state: Mutex::new(TrackerState {
                tally,
                remaining,
                outcome,
            }),
            done: Notify::new(),
        })
    }

    /// The level the write asked for.
    pub(crate) fn level(&self) -> Consistency {
        self.level
    }

    /// Acknowledgements the level needs.
    pub(crate) fn required(&self) -> usize {
        self.required
    }

    /// `peer` acknowledged `n` of the write's mutations.
    pub(crate) fn ack(&self, peer: NodeId, n: usize) {
        let mut state = self.state.lock();
        let done = match &mut state.remaining {
            None => true,
            Some(remaining) => match remaining.iter_mut().find(|(id, _)| *id == peer) {
                Some((_, left)) => {
                    *left = left.saturating_sub(n);
                    *left == 0
                }
                None => false,
            },
        };
        if done && state.tally.ack(peer) == AckProgress::Met && state.outcome.is_none() {
            state.outcome = Some(WriteOutcome::Met);
            self.done.notify_one();
        }
    }

    /// `peer` refused (or could not be sent) some of the write's mutations.
    pub(crate) fn fail(&self, peer: NodeId, addr: SocketAddr, status: &Status) {
        let mut state = self.state.lock();
        if let Some(remaining) = &mut state.remaining {
            let Some(at) = remaining.iter().position(|(id, _)| *id == peer) else {
                return;
            };
            remaining.swap_remove(at);
        }
        if state.tally.fail(peer) == AckProgress::Impossible && state.outcome.is_none() {
            state.outcome = Some(WriteOutcome::Failed {
                node_id: peer,
                peer: addr,
                status: status.clone(),
                acknowledged: state.tally.acknowledged(),
            });
            self.done.notify_one();
        }
    }

    /// Waits until the level is met or impossible, or `timeout` passes.
    pub(crate) async fn wait(&self, timeout: Duration) -> WriteOutcome {
        let decided = async {
            loop {
                let notified = self.done.notified();
                if let Some(outcome) = self.state.lock().outcome.clone() {
                    return outcome;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(timeout, decided).await {
            Ok(outcome) => outcome,
            Err(_) => WriteOutcome::TimedOut {
                acknowledged: self.state.lock().tally.acknowledged(),
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn member(id: NodeId) -> ClusterMember {
        ClusterMember::new(id, ([127, 0, 0, 1], 9_000 + id as u16).into(), "dc")
    }

    /// A tracker for a write of `mutations` mutations at `level` among nodes 2..=`n` (node 1
    /// writes), sent to all of them.
    pub(crate) fn tracker(level: Consistency, n: NodeId, mutations: usize) -> Arc<AckTracker> {
        let peers: Vec<ClusterMember> = (2..=n).map(member).collect();
        let requirement = Requirement::new(level, &member(1), &peers);
        AckTracker::new(&requirement, &peers, mutations)
    }

    #[tokio::test]
    async fn a_peer_counts_once_all_mutations_of_the_write_are_acknowledged() {
        let all = tracker(Consistency::All, 3, 3);
        all.ack(2, 3); // node 2, in any number of batches
        all.ack(3, 2); // two of node 3's three
        let outcome = all.wait(Duration::ZERO).await;
        assert_eq!(outcome, WriteOutcome::TimedOut { acknowledged: 1 });
        all.ack(3, 1);
        assert_eq!(all.wait(Duration::ZERO).await, WriteOutcome::Met);
        all.ack(3, 1); // a stray acknowledgement changes nothing
        assert_eq!(all.wait(Duration::ZERO).await, WriteOutcome::Met);
    }

    #[tokio::test]
    async fn any_k_acks_win_and_a_refusal_fails_only_an_impossible_level() {
        let addr = member(3).public_addr;
        let quorum = tracker(Consistency::Quorum, 3, 1);
        quorum.fail(3, addr, &Status::internal("disk full"));
        assert!(matches!(
            quorum.wait(Duration::ZERO).await,
            WriteOutcome::TimedOut { .. }
        ));
        quorum.ack(2, 1);
        assert_eq!(quorum.wait(Duration::ZERO).await, WriteOutcome::Met);

        let all = tracker(Consistency::All, 3, 1);
        all.ack(2, 1);
        all.fail(3, addr, &Status::internal("disk full"));
        match all.wait(Duration::from_secs(60)).await {
            WriteOutcome::Failed {
                node_id,
                status,
                acknowledged,
                ..
            } => {
                assert_eq!((node_id, acknowledged), (3, 1));
                assert_eq!(status.message(), "disk full");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
