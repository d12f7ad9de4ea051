//! Consistency levels and the errors of not meeting them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
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
        f.write_str(self.as_str())
    }
}

impl Consistency {
    /// The level's name, as [`Display`](fmt::Display) writes it: `none`, `one`, `two`,
    /// `three`, `quorum`, `local-quorum`, `each-quorum`, `all` (e.g. a metric's `level`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::One => "one",
            Self::Two => "two",
            Self::Three => "three",
            Self::Quorum => "quorum",
            Self::LocalQuorum => "local-quorum",
            Self::EachQuorum => "each-quorum",
            Self::All => "all",
        }
    }

    /// Every level, weakest first.
    pub const LEVELS: [Consistency; 8] = [
        Self::None,
        Self::One,
        Self::Two,
        Self::Three,
        Self::Quorum,
        Self::LocalQuorum,
        Self::EachQuorum,
        Self::All,
    ];
}

/// A name that is not a consistency level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown consistency level {name:?}: use none, one, two, three, quorum, local-quorum, each-quorum or all")]
pub struct ParseConsistencyError {
    /// The name given.
    pub name: String,
}

/// Parses the names [`Display`](fmt::Display) writes (`local-quorum`), case-insensitively,
/// with `_` accepted for `-` (`LOCAL_QUORUM`).
///
/// ```
/// use datacake_node::Consistency;
///
/// assert_eq!("quorum".parse(), Ok(Consistency::Quorum));
/// assert_eq!("LOCAL_QUORUM".parse(), Ok(Consistency::LocalQuorum));
/// assert!("most".parse::<Consistency>().is_err());
/// for level in Consistency::LEVELS {
///     assert_eq!(level.to_string().parse(), Ok(level));
/// }
/// ```
impl std::str::FromStr for Consistency {
    type Err = ParseConsistencyError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let wanted = name.to_ascii_lowercase().replace('_', "-");
        Self::LEVELS
            .into_iter()
            .find(|level| level.to_string() == wanted)
            .ok_or_else(|| ParseConsistencyError {
                name: name.to_owned(),
            })
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
#[non_exhaustive]
pub enum ConsistencyError {
    /// Fewer live peers than the level needs.
    #[error("not enough live nodes: {required} required, {live} available")]
    NotEnoughNodes {
        /// Live peers (nodes other than the local one) that were available.
        live: usize,
        /// Peers the level required.
        required: usize,
    },
    /// The node expects peers
    /// ([`DatacakeHandle::expects_peers`](crate::DatacakeHandle::expects_peers)) but has
    /// seen none yet: it knows no replica to count, so any level but `None` would be met by
    /// this node alone.
    #[error(
        "this node has not seen any member of its cluster yet (its seeds have not answered): \
         only `None` is met until it has"
    )]
    NotJoined,
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
    /// Every replica of every group, sorted: a replica's position here is its index in a
    /// tally.
    replicas: Arc<[NodeId]>,
    /// Shared with the tallies made from it, so a tally copies no replica list.
    groups: Arc<[Group]>,
}

/// Some replicas (by index into [`Requirement::replicas`]), and how many of them must
/// acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    members: Vec<usize>,
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
        let mut replicas: Vec<NodeId> = peers.iter().map(|m| m.node_id).collect();
        replicas.sort_unstable();
        replicas.dedup();
        let index = |id: NodeId| replicas.binary_search(&id).expect("a replica");
        let group = |members: &[&ClusterMember], required: usize| Group {
            members: members.iter().map(|m| index(m.node_id)).collect(),
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
        let groups: Arc<[Group]> = groups.into_iter().filter(|g| g.required > 0).collect();
        Self {
            level,
            replicas: replicas.into(),
            groups,
        }
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
        self.index(node)
            .is_some_and(|i| self.groups.iter().any(|g| g.members.contains(&i)))
    }

    fn index(&self, node: NodeId) -> Option<usize> {
        self.replicas.binary_search(&node).ok()
    }

    /// The replicas to ask first, when asking as few as can meet the level: from each group,
    /// as many of its members for which `askable` holds as the group needs, taken in turn
    /// from `offset` (pass a counter, so that load spreads over the replicas). The others are
    /// for when one of these fails or is slow.
    ///
    /// ```
    /// use datacake_node::{ClusterMember, Consistency, Requirement};
    ///
    /// let member = |id: u32| ClusterMember::new(id, ([127, 0, 0, 1], 9000 + id as u16).into(), "dc");
    /// let quorum = Requirement::new(Consistency::Quorum, &member(1), &[member(2), member(3)]);
    /// assert_eq!(quorum.first_choice(0, |_| true), vec![2]);
    /// assert_eq!(quorum.first_choice(1, |_| true), vec![3]);
    /// assert_eq!(quorum.first_choice(0, |id| id != 2), vec![3]);
    /// ```
    pub fn first_choice(&self, offset: usize, askable: impl Fn(NodeId) -> bool) -> Vec<NodeId> {
        let mut chosen = Vec::with_capacity(self.required());
        for group in self.groups.iter() {
            let candidates: Vec<NodeId> = group
                .members
                .iter()
                .map(|i| self.replicas[*i])
                .filter(|id| askable(*id))
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let start = offset % candidates.len();
            chosen.extend(
                (0..group.required.min(candidates.len()))
                    .map(|i| candidates[(start + i) % candidates.len()]),
            );
        }
        chosen
    }

    /// `Err(NotEnoughNodes)` if fewer replicas are live (by `is_live`) than some group of the
    /// level needs: the operation could not succeed, so it should not start.
    pub fn check_live(&self, is_live: impl Fn(NodeId) -> bool) -> Result<(), ConsistencyError> {
        for group in self.groups.iter() {
            let live = group
                .members
                .iter()
                .filter(|i| is_live(self.replicas[**i]))
                .count();
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
    requirement: Requirement,
    /// Replicas (by index) that acknowledged.
    acked: Bits,
    /// Replicas (by index) that failed, or were never asked.
    lost: Bits,
}

/// A set of small indexes: inline up to 64, so a tally of a cluster of up to 65 nodes
/// allocates nothing.
#[derive(Debug, Clone, Default)]
struct Bits {
    low: u64,
    high: Vec<u64>,
}

impl Bits {
    fn contains(&self, i: usize) -> bool {
        match i.checked_sub(64) {
            None => self.low & (1 << i) != 0,
            Some(j) => self
                .high
                .get(j / 64)
                .is_some_and(|w| w & (1 << (j % 64)) != 0),
        }
    }

    fn insert(&mut self, i: usize) {
        match i.checked_sub(64) {
            None => self.low |= 1 << i,
            Some(j) => {
                if self.high.len() <= j / 64 {
                    self.high.resize(j / 64 + 1, 0);
                }
                self.high[j / 64] |= 1 << (j % 64);
            }
        }
    }
}

impl AckTally {
    /// A tally for `requirement`, where only the replicas for which `asked` is true were
    /// asked (the others count as failed from the start).
    pub fn new(requirement: &Requirement, asked: impl Fn(NodeId) -> bool) -> Self {
        let mut lost = Bits::default();
        for (i, id) in requirement.replicas.iter().enumerate() {
            if !asked(*id) {
                lost.insert(i);
            }
        }
        Self {
            requirement: requirement.clone(),
            acked: Bits::default(),
            lost,
        }
    }

    /// Records an acknowledgement of `node`.
    pub fn ack(&mut self, node: NodeId) -> AckProgress {
        if let Some(i) = self.unanswered(node) {
            self.acked.insert(i);
        }
        self.progress()
    }

    /// Records that `node` failed (refused, or could not be reached).
    pub fn fail(&mut self, node: NodeId) -> AckProgress {
        if let Some(i) = self.unanswered(node) {
            self.lost.insert(i);
        }
        self.progress()
    }

    /// The index of `node` if it is a replica that has not answered yet.
    fn unanswered(&self, node: NodeId) -> Option<usize> {
        self.requirement
            .index(node)
            .filter(|i| !self.acked.contains(*i) && !self.lost.contains(*i))
    }

    /// Where the tally stands.
    pub fn progress(&self) -> AckProgress {
        let mut met = true;
        for group in self.requirement.groups.iter() {
            let acked = group
                .members
                .iter()
                .filter(|i| self.acked.contains(**i))
                .count();
            let lost = group
                .members
                .iter()
                .filter(|i| self.lost.contains(**i))
                .count();
            let open = group.members.len() - acked - lost;
            if acked + open < group.required {
                return AckProgress::Impossible;
            }
            met &= acked >= group.required;
        }
        if met {
            AckProgress::Met
        } else {
            AckProgress::Pending
        }
    }

    /// Acknowledgements that counted so far (at most what each group needs).
    pub fn acknowledged(&self) -> usize {
        self.requirement
            .groups
            .iter()
            .map(|g| {
                let acked = g
                    .members
                    .iter()
                    .filter(|i| self.acked.contains(**i))
                    .count();
                acked.min(g.required)
            })
            .sum()
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
    fn a_tally_over_more_than_64_replicas() {
        let peers: Vec<(NodeId, &str)> = (2..=201).map(|id| (id, "dc-a")).collect();
        let all = requirement(Consistency::All, &peers);
        let mut tally = AckTally::new(&all, |_| true);
        for id in 2..=200 {
            assert_eq!(tally.ack(id), AckProgress::Pending);
        }
        assert_eq!(
            tally.ack(200),
            AckProgress::Pending,
            "a repeat does not count"
        );
        assert_eq!(tally.acknowledged(), 199);
        assert_eq!(tally.ack(201), AckProgress::Met);
        let mut tally = AckTally::new(&all, |_| true);
        assert_eq!(tally.fail(150), AckProgress::Impossible);
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
