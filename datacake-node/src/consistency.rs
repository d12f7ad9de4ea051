//! Consistency levels and the errors of not meeting them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::membership::{ClusterMember, NodeId};

/// How many replicas (other than this node) an operation must reach.
///
/// The counts are of *other* nodes: the local node always takes part in an operation itself,
/// so for example [`Consistency::Quorum`] in a cluster of three needs one peer (local node +
/// one peer = a majority of three). [`Requirement`] states the rule of each level over an
/// operation's replicas; the [`NodeSelector`](crate::NodeSelector) picks specific live peers
/// for a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Consistency {
    /// Only the local node: no peer is selected.
    None,
    /// One peer.
    One,
    /// Two peers.
    Two,
    /// Three peers.
    Three,
    /// A majority of the whole live cluster, counting the local node.
    Quorum,
    /// A majority of the local data centre, counting the local node.
    LocalQuorum,
    /// A majority of every data centre (the local one counting the local node).
    EachQuorum,
    /// Every live peer.
    All,
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::None => "none",
            Self::One => "one",
            Self::Two => "two",
            Self::Three => "three",
            Self::Quorum => "quorum",
            Self::LocalQuorum => "local-quorum",
            Self::EachQuorum => "each-quorum",
            Self::All => "all",
        };
        f.write_str(name)
    }
}

/// The majority of `n` nodes: `n / 2 + 1` (0 for an empty set).
pub(crate) fn majority(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n / 2 + 1
    }
}

/// A consistency level could not be met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    /// Fewer live peers than the level needs.
    #[error("not enough live nodes: {required} required, {live} available")]
    NotEnoughNodes {
        /// Live peers (nodes other than the local one) that were available.
        live: usize,
        /// Peers the level required.
        required: usize,
    },
    /// Enough peers were asked, but too few answered in time.
    #[error("consistency not met: {responses} of {required} responses within {timeout:?}")]
    ConsistencyFailure {
        /// Successful responses received.
        responses: usize,
        /// Responses the level required.
        required: usize,
        /// The deadline that passed.
        timeout: Duration,
    },
}

/// Which acknowledgements a [`Consistency`] level needs from the replicas of an operation.
///
/// The *replicas* are the peers that hold the data: every member the cluster knows of, live
/// or down (until it is removed), the local node aside. The local node always takes part
/// itself, so the counts below are of peers. A requirement is a list of groups, each a set
/// of replicas and how many of them must acknowledge; **any** members of a group count (the
/// first to answer win), never specific ones:
///
/// | level | peers that must acknowledge |
/// |---|---|
/// | `None` | none |
/// | `One`, `Two`, `Three` | 1, 2, 3 of the replicas |
/// | `Quorum` | a majority of the replicas plus the local node, minus the local node |
/// | `LocalQuorum` | the same within the local data centre's replicas |
/// | `EachQuorum` | a majority of every data centre (the local one counting the local node) |
/// | `All` | every replica |
///
/// Because down members count, a level fails fast with
/// [`ConsistencyError::NotEnoughNodes`] when too few of its replicas are live
/// ([`check_live`](Self::check_live)) instead of succeeding with fewer copies than it
/// promises: on the last live node of three, `Quorum` and `All` are refused.
///
/// ```
/// use datacake_node::{AckProgress, AckTally, ClusterMember, Consistency, Requirement};
///
/// let member = |id: u32| ClusterMember::new(id, ([127, 0, 0, 1], 9000 + id as u16).into(), "dc");
/// let replicas = [member(2), member(3)];
/// let quorum = Requirement::new(Consistency::Quorum, &member(1), &replicas);
/// assert_eq!(quorum.required(), 1);
///
/// // Sent to both peers: whichever answers first meets the level.
/// let mut tally = AckTally::new(&quorum, |_| true);
/// assert_eq!(tally.fail(3), AckProgress::Pending);
/// assert_eq!(tally.ack(2), AckProgress::Met);
///
/// // With node 3 down, `All` cannot be met: refused before anything is sent.
/// let all = Requirement::new(Consistency::All, &member(1), &replicas);
/// assert!(all.check_live(|id| id != 3).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    level: Consistency,
    groups: Vec<Group>,
}

/// Some replicas, and how many of them must acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    members: Vec<NodeId>,
    required: usize,
}

impl Requirement {
    /// The requirement of `level` for an operation on `local` whose replicas are `replicas`
    /// (live and down; an entry for the local node is ignored).
    pub fn new(level: Consistency, local: &ClusterMember, replicas: &[ClusterMember]) -> Self {
        let peers: Vec<&ClusterMember> = replicas
            .iter()
            .filter(|m| m.node_id != local.node_id)
            .collect();
        let group = |members: &[&ClusterMember], required: usize| Group {
            members: members.iter().map(|m| m.node_id).collect(),
            required,
        };
        let groups = match level {
            Consistency::None => Vec::new(),
            Consistency::One => vec![group(&peers, 1)],
            Consistency::Two => vec![group(&peers, 2)],
            Consistency::Three => vec![group(&peers, 3)],
            Consistency::Quorum => vec![group(&peers, majority(peers.len() + 1) - 1)],
            Consistency::All => vec![group(&peers, peers.len())],
            Consistency::LocalQuorum => {
                let local_dc: Vec<&ClusterMember> = peers
                    .iter()
                    .copied()
                    .filter(|m| m.data_center == local.data_center)
                    .collect();
                vec![group(&local_dc, majority(local_dc.len() + 1) - 1)]
            }
            Consistency::EachQuorum => {
                let mut by_dc: BTreeMap<&str, Vec<&ClusterMember>> = BTreeMap::new();
                by_dc.entry(&local.data_center).or_default();
                for peer in &peers {
                    by_dc.entry(&peer.data_center).or_default().push(peer);
                }
                by_dc
                    .into_iter()
                    .map(|(dc, members)| {
                        let required = if dc == &*local.data_center {
                            majority(members.len() + 1) - 1
                        } else {
                            majority(members.len())
                        };
                        group(&members, required)
                    })
                    .collect()
            }
        };
        let groups = groups.into_iter().filter(|g| g.required > 0).collect();
        Self { level, groups }
    }

    /// The level this requirement is for.
    pub fn level(&self) -> Consistency {
        self.level
    }

    /// How many acknowledgements the level needs in all.
    pub fn required(&self) -> usize {
        self.groups.iter().map(|g| g.required).sum()
    }

    /// Whether the level needs no acknowledgement at all.
    pub fn is_local(&self) -> bool {
        self.groups.is_empty()
    }

    /// Whether `node` is a replica whose acknowledgement counts.
    pub fn counts(&self, node: NodeId) -> bool {
        self.groups.iter().any(|g| g.members.contains(&node))
    }

    /// `Err(NotEnoughNodes)` if fewer replicas are live (by `is_live`) than some group of the
    /// level needs: the operation could not succeed, so it should not start.
    pub fn check_live(&self, is_live: impl Fn(NodeId) -> bool) -> Result<(), ConsistencyError> {
        for group in &self.groups {
            let live = group.members.iter().filter(|id| is_live(**id)).count();
            if live < group.required {
                return Err(ConsistencyError::NotEnoughNodes {
                    live,
                    required: group.required,
                });
            }
        }
        Ok(())
    }
}

/// Where an [`AckTally`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckProgress {
    /// Not met yet, still possible.
    Pending,
    /// Every group has the acknowledgements it needs.
    Met,
    /// Some group can no longer get enough: too many of its replicas failed (or were never
    /// asked).
    Impossible,
}

/// Counts the answers of the replicas of one operation against a [`Requirement`]: a plain
/// state machine, fed by the code that talks to the replicas.
///
/// A replica's first answer counts; later answers of the same replica, and answers of nodes
/// that are not replicas of the requirement, are ignored.
#[derive(Debug, Clone)]
pub struct AckTally {
    groups: Vec<GroupTally>,
    answered: Vec<NodeId>,
}

#[derive(Debug, Clone)]
struct GroupTally {
    members: Vec<NodeId>,
    required: usize,
    acked: usize,
    /// Members that failed, or were never asked.
    lost: usize,
}

impl AckTally {
    /// A tally for `requirement`, where only the replicas for which `asked` is true were
    /// asked (the others count as failed from the start).
    pub fn new(requirement: &Requirement, asked: impl Fn(NodeId) -> bool) -> Self {
        let groups = requirement
            .groups
            .iter()
            .map(|g| GroupTally {
                members: g.members.clone(),
                required: g.required,
                acked: 0,
                lost: g.members.iter().filter(|id| !asked(**id)).count(),
            })
            .collect();
        Self {
            groups,
            answered: Vec::new(),
        }
    }

    /// Records an acknowledgement of `node`.
    pub fn ack(&mut self, node: NodeId) -> AckProgress {
        self.answer(node, |g| g.acked += 1)
    }

    /// Records that `node` failed (refused, or could not be reached).
    pub fn fail(&mut self, node: NodeId) -> AckProgress {
        self.answer(node, |g| g.lost += 1)
    }

    fn answer(&mut self, node: NodeId, record: impl Fn(&mut GroupTally)) -> AckProgress {
        if !self.answered.contains(&node) {
            self.answered.push(node);
            for group in &mut self.groups {
                if group.members.contains(&node) {
                    record(group);
                }
            }
        }
        self.progress()
    }

    /// Where the tally stands.
    pub fn progress(&self) -> AckProgress {
        if self
            .groups
            .iter()
            .any(|g| g.acked + (g.members.len() - g.acked - g.lost) < g.required)
        {
            AckProgress::Impossible
        } else if self.groups.iter().all(|g| g.acked >= g.required) {
            AckProgress::Met
        } else {
            AckProgress::Pending
        }
    }

    /// Acknowledgements that counted so far (at most what each group needs).
    pub fn acknowledged(&self) -> usize {
        self.groups.iter().map(|g| g.acked.min(g.required)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_small_clusters() {
        assert_eq!([0, 1, 2, 3, 4, 5, 6].map(majority), [0, 1, 2, 2, 3, 3, 4]);
    }

    fn member(id: NodeId, dc: &str) -> ClusterMember {
        ClusterMember::new(id, ([127, 0, 0, 1], 9_000 + id as u16).into(), dc)
    }

    /// Node 1 in `dc-a`, and `peers` as `(id, dc)`.
    fn requirement(level: Consistency, peers: &[(NodeId, &str)]) -> Requirement {
        let replicas: Vec<ClusterMember> = peers.iter().map(|(id, dc)| member(*id, dc)).collect();
        Requirement::new(level, &member(1, "dc-a"), &replicas)
    }

    #[test]
    fn counts_per_level_over_the_known_replicas() {
        let three = [(2, "dc-a"), (3, "dc-a")];
        let required = |level| requirement(level, &three).required();
        assert_eq!(required(Consistency::None), 0);
        assert_eq!(required(Consistency::One), 1);
        assert_eq!(required(Consistency::Two), 2);
        assert_eq!(required(Consistency::Three), 3, "impossible on three nodes");
        assert_eq!(required(Consistency::Quorum), 1);
        assert_eq!(required(Consistency::LocalQuorum), 1);
        assert_eq!(required(Consistency::EachQuorum), 1);
        assert_eq!(required(Consistency::All), 2);
        let five: Vec<(NodeId, &str)> = (2..=5).map(|id| (id, "dc-a")).collect();
        assert_eq!(requirement(Consistency::Quorum, &five).required(), 2);
        assert!(requirement(Consistency::None, &five).is_local());
        let alone = requirement(Consistency::Quorum, &[]);
        assert!(alone.is_local(), "a single-node cluster is its own quorum");
        assert_eq!(requirement(Consistency::All, &[]).required(), 0);
    }

    #[test]
    fn down_replicas_count_so_levels_fail_fast() {
        let quorum = requirement(Consistency::Quorum, &[(2, "dc-a"), (3, "dc-a")]);
        assert_eq!(quorum.check_live(|id| id == 2), Ok(()));
        assert_eq!(
            quorum.check_live(|_| false),
            Err(ConsistencyError::NotEnoughNodes {
                live: 0,
                required: 1
            })
        );
        let all = requirement(Consistency::All, &[(2, "dc-a"), (3, "dc-a")]);
        assert_eq!(
            all.check_live(|id| id == 2),
            Err(ConsistencyError::NotEnoughNodes {
                live: 1,
                required: 2
            })
        );
        let three = requirement(Consistency::Three, &[(2, "dc-a"), (3, "dc-a")]);
        assert!(three.check_live(|_| true).is_err(), "never satisfiable");
    }

    #[test]
    fn any_k_acknowledgements_meet_the_level() {
        let five: Vec<(NodeId, &str)> = (2..=5).map(|id| (id, "dc-a")).collect();
        let quorum = requirement(Consistency::Quorum, &five);
        let mut tally = AckTally::new(&quorum, |_| true);
        assert_eq!(tally.fail(2), AckProgress::Pending);
        assert_eq!(tally.ack(5), AckProgress::Pending);
        assert_eq!(
            tally.ack(5),
            AckProgress::Pending,
            "a repeat does not count"
        );
        assert_eq!(tally.ack(9), AckProgress::Pending, "not a replica");
        assert_eq!(tally.ack(3), AckProgress::Met);
        assert_eq!(tally.acknowledged(), 2);
    }

    #[test]
    fn failures_make_a_level_impossible_at_once() {
        let all = requirement(Consistency::All, &[(2, "dc-a"), (3, "dc-a")]);
        let mut tally = AckTally::new(&all, |_| true);
        assert_eq!(tally.ack(2), AckProgress::Pending);
        assert_eq!(tally.fail(3), AckProgress::Impossible);

        let quorum = requirement(Consistency::Quorum, &[(2, "dc-a"), (3, "dc-a")]);
        let mut tally = AckTally::new(&quorum, |id| id == 2);
        assert_eq!(
            tally.progress(),
            AckProgress::Pending,
            "node 2 may still answer"
        );
        assert_eq!(
            tally.fail(2),
            AckProgress::Impossible,
            "node 3 was never asked"
        );
    }

    #[test]
    fn data_centre_levels_count_per_data_centre() {
        let peers = [
            (2, "dc-a"),
            (3, "dc-a"),
            (4, "dc-b"),
            (5, "dc-b"),
            (6, "dc-b"),
        ];
        let local = requirement(Consistency::LocalQuorum, &peers);
        assert_eq!(local.required(), 1);
        assert!(local.counts(2) && !local.counts(4));
        let mut tally = AckTally::new(&local, |_| true);
        assert_eq!(tally.ack(4), AckProgress::Pending, "another data centre");
        assert_eq!(tally.ack(3), AckProgress::Met);

        let each = requirement(Consistency::EachQuorum, &peers);
        assert_eq!(each.required(), 1 + 2);
        let mut tally = AckTally::new(&each, |_| true);
        assert_eq!(tally.ack(2), AckProgress::Pending);
        assert_eq!(
            tally.ack(3),
            AckProgress::Pending,
            "dc-a already has its one"
        );
        assert_eq!(tally.ack(4), AckProgress::Pending);
        assert_eq!(tally.fail(5), AckProgress::Pending);
        assert_eq!(tally.ack(6), AckProgress::Met);
        assert_eq!(
            each.check_live(|id| id != 5 && id != 6),
            Err(ConsistencyError::NotEnoughNodes {
                live: 1,
                required: 2
            })
        );
    }
}
