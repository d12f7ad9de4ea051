//! The automatic membership policy, run by the leader: gossip members join as learners, are
//! promoted once caught up (up to a voter count), and members gone from gossip longer than a
//! grace period are removed. The rules are a pure function ([`plan`]) of the leader's view, so
//! they are unit-tested without a network; [`run`] applies one change at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use datacake_node::{DatacakeHandle, NodeId};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tracing::{info, warn};

use crate::types::{Raft, RaftNodeId};

/// A learner this many entries behind the leader (or fewer) counts as caught up.
pub(crate) const CAUGHT_UP_LAG: u64 = 64;

/// What the leader sees when it plans.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// The leader itself.
    pub(crate) me: NodeId,
    /// Live gossip members.
    pub(crate) live: BTreeSet<NodeId>,
    /// Voters of the Raft membership.
    pub(crate) voters: BTreeSet<NodeId>,
    /// Learners of the Raft membership.
    pub(crate) learners: BTreeSet<NodeId>,
    /// Replication lag per peer (absent: unknown).
    pub(crate) lag: BTreeMap<NodeId, u64>,
    /// For each Raft member missing from gossip: for how long it has been missing.
    pub(crate) missing_for: BTreeMap<NodeId, Duration>,
}

/// One membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    AddLearner(NodeId),
    Promote(NodeId),
    Remove(NodeId),
}

/// The next change the policy wants, if any.
///
/// Order: remove members gone longer than `grace` (a voter only while the live voters stay a
/// majority of the voters left, and never the leader itself); then add gossip members that
/// are not in the group as learners; then promote caught-up live learners while there are
/// fewer than `max_voters` voters. A member that flaps in and out of gossip within `grace`
/// is never removed, so flapping cannot shrink the group or its quorum.
pub(crate) fn plan(view: &View, max_voters: usize, grace: Duration) -> Option<Change> {
    let gone = |id: &NodeId| view.missing_for.get(id).is_some_and(|d| *d >= grace);
    if let Some(id) = view.learners.iter().find(|id| gone(id)) {
        return Some(Change::Remove(*id));
    }
    for id in view.voters.iter().filter(|id| **id != view.me && gone(id)) {
        let remaining: BTreeSet<NodeId> = view.voters.iter().copied().filter(|v| v != id).collect();
        let live_remaining = remaining.iter().filter(|v| view.live.contains(v)).count();
        if live_remaining * 2 > remaining.len() {
            return Some(Change::Remove(*id));
        }
    }
    let members = |id: &NodeId| view.voters.contains(id) || view.learners.contains(id);
    if let Some(id) = view.live.iter().find(|id| !members(id)) {
        return Some(Change::AddLearner(*id));
    }
    if view.voters.len() < max_voters {
        let caught_up = view.learners.iter().find(|id| {
            view.live.contains(id) && view.lag.get(id).is_some_and(|lag| *lag <= CAUGHT_UP_LAG)
        });
        if let Some(id) = caught_up {
            return Some(Change::Promote(*id));
        }
    }
    None
}

fn node_id(raw: RaftNodeId) -> Option<NodeId> {
    NodeId::try_from(raw).ok()
}

/// Runs the policy while this node is the leader, checking every `interval`.
pub(crate) async fn run(
    raft: Raft,
    node: DatacakeHandle,
    max_voters: usize,
    grace: Duration,
    interval: Duration,
) {
    let me = node.me().node_id;
    let mut missing_since: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let live: BTreeMap<NodeId, _> = node
            .live_members()
            .into_iter()
            .map(|m| (m.node_id, m.public_addr))
            .collect();
        let (view, leader) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().filter_map(node_id).collect();
            let learners: BTreeSet<NodeId> = membership.learner_ids().filter_map(node_id).collect();
            let last = m.last_log_index.unwrap_or(0);
            let lag = m
                .replication
                .iter()
                .flatten()
                .filter_map(|(id, matched)| {
                    let matched = (*matched)?;
                    Some((node_id(*id)?, last.saturating_sub(matched.index)))
                })
                .collect();
            let view = View {
                me,
                live: live.keys().copied().collect(),
                voters,
                learners,
                lag,
                missing_for: BTreeMap::new(),
            };
            (view, m.state == ServerState::Leader)
        };
        let now = Instant::now();
        let members: BTreeSet<NodeId> = view.voters.union(&view.learners).copied().collect();
        missing_since.retain(|id, _| members.contains(id) && !view.live.contains(id));
        for id in members.iter().filter(|id| !view.live.contains(id)) {
            missing_since.entry(*id).or_insert(now);
        }
        if !leader {
            continue;
        }
        let view = View {
            missing_for: missing_since
                .iter()
                .map(|(id, t)| (*id, now - *t))
                .collect(),
            ..view
        };
        let Some(change) = plan(&view, max_voters, grace) else {
            continue;
        };
        info!(node_id = me, change = ?change, "membership policy");
        let result = match change {
            Change::AddLearner(id) => {
                let Some(addr) = live.get(&id) else { continue };
                raft.add_learner(RaftNodeId::from(id), BasicNode::new(addr), false)
                    .await
                    .map(|_| ())
            }
            Change::Promote(id) => raft
                .change_membership(
                    ChangeMembers::AddVoterIds(BTreeSet::from([RaftNodeId::from(id)])),
                    false,
                )
                .await
                .map(|_| ()),
            Change::Remove(id) => {
                let ids = BTreeSet::from([RaftNodeId::from(id)]);
                let change = if view.voters.contains(&id) {
                    ChangeMembers::RemoveVoters(ids)
                } else {
                    ChangeMembers::RemoveNodes(ids)
                };
                raft.change_membership(change, false).await.map(|_| ())
            }
        };
        if let Err(e) = result {
            warn!(node_id = me, change = ?change, error = %e, "membership change failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn view(live: &[NodeId], voters: &[NodeId], learners: &[NodeId]) -> View {
        View {
            me: 1,
            live: live.iter().copied().collect(),
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            ..View::default()
        }
    }

    #[test]
    fn a_new_gossip_member_joins_as_a_learner() {
        let v = view(&[1, 2, 3, 4], &[1, 2, 3], &[]);
        assert_eq!(plan(&v, 3, GRACE), Some(Change::AddLearner(4)));
    }

    #[test]
    fn a_learner_is_promoted_only_once_caught_up_and_below_the_voter_count() {
        let mut v = view(&[1, 2, 4], &[1, 2], &[4]);
        assert_eq!(plan(&v, 3, GRACE), None, "lag unknown");
        v.lag.insert(4, CAUGHT_UP_LAG + 1);
        assert_eq!(plan(&v, 3, GRACE), None, "still behind");
        v.lag.insert(4, 3);
        assert_eq!(plan(&v, 3, GRACE), Some(Change::Promote(4)));
        assert_eq!(plan(&v, 2, GRACE), None, "enough voters");
    }

    #[test]
    fn a_member_gone_within_the_grace_period_is_kept() {
        let mut v = view(&[1, 2], &[1, 2, 3], &[]);
        v.missing_for.insert(3, GRACE / 2);
        assert_eq!(plan(&v, 3, GRACE), None);
        v.missing_for.insert(3, GRACE);
        assert_eq!(plan(&v, 3, GRACE), Some(Change::Remove(3)));
    }

    #[test]
    fn removal_never_leaves_the_live_voters_without_a_majority() {
        // 5 voters, 3 of them gone: removing one leaves 4 voters with 2 live — no majority.
        let mut v = view(&[1, 2], &[1, 2, 3, 4, 5], &[]);
        for id in [3, 4, 5] {
            v.missing_for.insert(id, GRACE * 2);
        }
        assert_eq!(plan(&v, 5, GRACE), None);
        // With one of them back, removing another gone voter keeps a live majority.
        v.live.insert(3);
        v.missing_for.remove(&3);
        assert_eq!(plan(&v, 5, GRACE), Some(Change::Remove(4)));
    }

    #[test]
    fn the_leader_never_removes_itself_and_gone_learners_go_first() {
        let mut v = view(&[2, 3], &[1, 2, 3], &[4]);
        v.missing_for.insert(1, GRACE * 2);
        v.missing_for.insert(4, GRACE * 2);
        assert_eq!(plan(&v, 3, GRACE), Some(Change::Remove(4)));
        v.learners.clear();
        assert_eq!(plan(&v, 3, GRACE), None);
    }
}
