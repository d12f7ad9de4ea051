//! The membership view: who is live, who left, who died — derived from chitchat's state by
//! pure functions, so the rules are unit-tested without a network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::Hash;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;

use crate::statistics::ClusterStatistics;

/// The id of a node in the cluster (unique among live members).
pub type NodeId = u32;

/// Gossiped key: the node id.
pub(crate) const KEY_NODE_ID: &str = "datacake.node_id";
/// Gossiped key: the public RPC address.
pub(crate) const KEY_PUBLIC_ADDR: &str = "datacake.public_addr";
/// Gossiped key: the data centre.
pub(crate) const KEY_DATA_CENTER: &str = "datacake.data_center";
/// Gossiped key prefix of user tags.
pub(crate) const KEY_TAG_PREFIX: &str = "datacake.tag.";
/// Gossiped key set when the node leaves gracefully.
pub(crate) const KEY_LEAVING: &str = "datacake.leaving";
/// Gossiped key a node holds while `connect` checks that its id is free; deleted once it is.
pub(crate) const KEY_JOINING: &str = "datacake.joining";

/// A live member of the cluster, as gossiped by that node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterMember {
    /// The node's id.
    pub node_id: NodeId,
    /// The address its RPC server (and gossip) is reached at: the one it gossips under,
    /// which with TLS it has proven itself (a member relaying another address for it gets
    /// it left out of the view, never listed there).
    pub public_addr: SocketAddr,
    /// Its data centre.
    pub data_center: Arc<str>,
    /// Small user key/values it was built with
    /// ([`DatacakeNodeBuilder::with_tag`](crate::DatacakeNodeBuilder::with_tag)).
    pub tags: Arc<BTreeMap<String, String>>,
}

impl ClusterMember {
    /// A member without tags.
    ///
    /// ```
    /// use datacake_node::ClusterMember;
    ///
    /// let member = ClusterMember::new(7, "127.0.0.1:9000".parse().unwrap(), "eu-west");
    /// assert_eq!(&*member.data_center, "eu-west");
    /// ```
    pub fn new(node_id: NodeId, public_addr: SocketAddr, data_center: impl Into<Arc<str>>) -> Self {
        Self {
            node_id,
            public_addr,
            data_center: data_center.into(),
            tags: Arc::default(),
        }
    }

    /// The key/values this member gossips about itself.
    pub(crate) fn to_key_values(&self) -> Vec<(String, String)> {
        let mut kvs = vec![
            (KEY_NODE_ID.to_string(), self.node_id.to_string()),
            (KEY_PUBLIC_ADDR.to_string(), self.public_addr.to_string()),
            (KEY_DATA_CENTER.to_string(), self.data_center.to_string()),
        ];
        for (k, v) in self.tags.iter() {
            kvs.push((format!("{KEY_TAG_PREFIX}{k}"), v.clone()));
        }
        kvs
    }
}

impl fmt::Display for ClusterMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} at {} ({})",
            self.node_id, self.public_addr, self.data_center
        )
    }
}

/// Whether `gossiped`, a node's [`KEY_PUBLIC_ADDR`], is other than `addr`, the address of the
/// node's chitchat identity. `connect` sets the two equal, so another value was relayed by a
/// member that forged it: chitchat applies a relayed newer version of a key/value, even to
/// the node's own state.
pub(crate) fn is_foreign_addr(gossiped: &str, addr: SocketAddr) -> bool {
    gossiped.parse::<SocketAddr>().ok() != Some(addr)
}

/// One gossiped node as the view sees it: chitchat's identity plus its key/values.
#[derive(Debug, Clone)]
pub(crate) struct GossipedNode<'a> {
    /// Chitchat's generation (the node's start time): a restart is a new generation.
    pub(crate) generation: u64,
    /// Chitchat's node id string.
    pub(crate) chitchat_node_id: &'a str,
    /// The address of chitchat's identity of the node (`gossip_advertise_addr`): with TLS,
    /// the one the node proved itself. Any member can relay key/values of another, this
    /// address only the node itself gossips.
    pub(crate) addr: SocketAddr,
    /// Looks up a gossiped key.
    pub(crate) key_values: BTreeMap<&'a str, &'a str>,
}

impl GossipedNode<'_> {
    fn is_leaving(&self) -> bool {
        self.key_values.contains_key(KEY_LEAVING)
    }

    fn is_joining(&self) -> bool {
        self.key_values.contains_key(KEY_JOINING)
    }

    /// Parses the member it describes; `None` if a required key is missing or malformed
    /// (e.g. the node's first key/values have not arrived yet), or if the gossiped public
    /// address is not the one of the node's identity ([`is_foreign_addr`]).
    fn parse(&self) -> Option<ClusterMember> {
        let node_id: NodeId = self.key_values.get(KEY_NODE_ID)?.parse().ok()?;
        if self.chitchat_node_id != node_id.to_string() {
            return None;
        }
        let gossiped_addr = self.key_values.get(KEY_PUBLIC_ADDR)?;
        if is_foreign_addr(gossiped_addr, self.addr) {
            return None;
        }
        let public_addr = self.addr;
        let data_center: Arc<str> = Arc::from(*self.key_values.get(KEY_DATA_CENTER)?);
        let tags: BTreeMap<String, String> = self
            .key_values
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(KEY_TAG_PREFIX)?.to_string(), v.to_string())))
            .collect();
        Some(ClusterMember {
            node_id,
            public_addr,
            data_center,
            tags: Arc::new(tags),
        })
    }
}

/// A member together with the generation it was seen at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ViewEntry {
    pub(crate) generation: u64,
    /// Still checking, in `connect`, that its id is free.
    pub(crate) joining: bool,
    pub(crate) member: ClusterMember,
}

impl ViewEntry {
    /// Which of two live claims to one node id the view keeps: the higher rank. A node that
    /// finished joining outranks one still checking (so a duplicate refused at `connect`
    /// never displaces the member), then the newer generation (a restarted node outranks an
    /// earlier incarnation that comes back from a partition or a stall), then the address,
    /// so every node decides alike.
    fn rank(&self) -> (bool, u64, SocketAddr) {
        (!self.joining, self.generation, self.member.public_addr)
    }
}

/// A point-in-time view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MembershipView {
    /// Live members (including the local node), one per node id.
    pub(crate) members: BTreeMap<NodeId, ViewEntry>,
    /// Node ids the failure detector holds dead (and that are not live under another
    /// generation, and did not leave).
    pub(crate) dead: BTreeSet<NodeId>,
    /// Node ids that announced a graceful leave and are not live under another generation.
    pub(crate) left: BTreeSet<NodeId>,
    /// The members, in node id order, built once per view so handing them out is a
    /// reference-count bump.
    pub(crate) live: Arc<[ClusterMember]>,
}

impl MembershipView {
    /// Builds the view from chitchat's live and dead nodes.
    ///
    /// Rules: a node that announced its leave is never a member; a node whose key/values do
    /// not parse is ignored, and so is one whose gossiped public address is not the address
    /// of its chitchat identity (any member can relay a newer version of another's
    /// key/values, but only the node gossips under its identity, and with TLS proves that
    /// address: a member is listed at no other); when two live nodes claim one node id, the
    /// one of higher [`ViewEntry::rank`] is the member: a node still joining never displaces
    /// one that has joined, and otherwise the newest generation (the latest start) wins.
    pub(crate) fn build<'a>(
        live: impl IntoIterator<Item = GossipedNode<'a>>,
        dead: impl IntoIterator<Item = GossipedNode<'a>>,
    ) -> Self {
        let mut view = MembershipView::default();
        for node in live {
            if node.is_leaving() {
                if let Some(member) = node.parse() {
                    view.left.insert(member.node_id);
                }
                continue;
            }
            let Some(member) = node.parse() else { continue };
            let candidate = ViewEntry {
                generation: node.generation,
                joining: node.is_joining(),
                member,
            };
            view.members
                .entry(candidate.member.node_id)
                .and_modify(|existing| {
                    if candidate.rank() > existing.rank() {
                        *existing = candidate.clone();
                    }
                })
                .or_insert(candidate);
        }
        for node in dead {
            let Some(member) = node.parse() else { continue };
            if node.is_leaving() {
                view.left.insert(member.node_id);
            } else {
                view.dead.insert(member.node_id);
            }
        }
        let live_ids: BTreeSet<NodeId> = view.members.keys().copied().collect();
        view.dead.retain(|id| !live_ids.contains(id));
        view.left.retain(|id| !live_ids.contains(id));
        // A node that left gracefully and was later held dead by the detector counts as left.
        let left = view.left.clone();
        view.dead.retain(|id| !left.contains(id));
        view.live = view.members.values().map(|e| e.member.clone()).collect();
        view
    }

    /// The member listed for `node_id` if it is a newer incarnation than `generation`: the
    /// process of that generation was replaced (see [`ViewEntry::rank`]).
    pub(crate) fn newer_incarnation(&self, node_id: NodeId, generation: u64) -> Option<&ViewEntry> {
        self.members
            .get(&node_id)
            .filter(|entry| entry.generation > generation)
    }

    /// The members, in node id order.
    pub(crate) fn member_list(&self) -> Vec<ClusterMember> {
        self.live.to_vec()
    }

    /// Number of distinct data centres among the live members.
    pub(crate) fn data_centers(&self) -> usize {
        self.members
            .values()
            .map(|e| &e.member.data_center)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The statistics of this view.
    pub(crate) fn statistics(&self) -> ClusterStatistics {
        ClusterStatistics {
            live_members: self.members.len(),
            dead_members: self.dead.len(),
            left_members: self.left.len(),
            data_centers: self.data_centers(),
        }
    }

    /// What changed from `old` to `self`. A member seen under a new generation (a restart)
    /// is reported as having left and joined.
    pub(crate) fn diff(&self, old: &MembershipView) -> MembershipChange {
        // The same incarnation, whether or not it finished joining in between.
        let kept = |e: &ViewEntry, other: Option<&ViewEntry>| {
            other.is_some_and(|o| o.generation == e.generation && o.member == e.member)
        };
        let joined = self
            .members
            .iter()
            .filter(|(id, e)| !kept(e, old.members.get(id)))
            .map(|(_, e)| e.member.clone())
            .collect();
        let left = old
            .members
            .iter()
            .filter(|(id, e)| !kept(e, self.members.get(id)))
            .map(|(_, e)| e.member.clone())
            .collect();
        MembershipChange { joined, left }
    }
}

/// Remembers when each node's heartbeat was last seen to advance.
///
/// chitchat's phi-accrual detector times out after `phi × mean gap between heartbeat
/// updates`; in a busy cluster updates arrive many times per gossip round, so that timeout
/// shrinks to a few hundred milliseconds and a scheduling stall looks like a death. The view
/// therefore holds a node dead only when the detector says so **and** its heartbeat has stood
/// still for at least a minimum time (the node's `min_failure_timeout`). Conversely a node
/// whose heartbeat was seen to advance within that time counts as live even before the
/// detector has enough samples, which shortens joins by a gossip round.
#[derive(Debug)]
pub(crate) struct HeartbeatTracker<K> {
    /// Per node: the highest heartbeat seen, and when it last increased (never, if it was
    /// seen only once: stale state of a dead node must not look alive).
    seen: HashMap<K, (u64, Option<Instant>)>,
}

impl<K> Default for HeartbeatTracker<K> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> HeartbeatTracker<K> {
    /// Records the heartbeat of `key` as seen at `now`.
    pub(crate) fn observe(&mut self, key: &K, heartbeat: u64, now: Instant) {
        match self.seen.get_mut(key) {
            Some((seen, at)) => {
                if heartbeat > *seen {
                    *seen = heartbeat;
                    *at = Some(now);
                }
            }
            None => {
                self.seen.insert(key.clone(), (heartbeat, None));
            }
        }
    }

    /// `true` if the heartbeat of `key` advanced less than `window` before `now`.
    pub(crate) fn advanced_within(&self, key: &K, window: Duration, now: Instant) -> bool {
        matches!(self.seen.get(key), Some((_, Some(at))) if now.saturating_duration_since(*at) < window)
    }

    /// Forgets the nodes for which `keep` is false.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.seen.retain(|k, _| keep(k));
    }
}

/// Members that joined and left between two views of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipChange {
    /// Members that became live.
    pub joined: Vec<ClusterMember>,
    /// Members that are gone: they left gracefully, or the failure detector holds them dead.
    pub left: Vec<ClusterMember>,
}

impl MembershipChange {
    /// `true` if nothing changed.
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty()
    }
}

/// A stream of [`MembershipChange`]s, from the moment it was created.
///
/// Changes are coalesced: if several happen between two polls, one item reports their net
/// effect. Obtained from [`DatacakeHandle::membership_changes`](crate::DatacakeHandle::membership_changes).
/// It ends when the node shuts down.
pub struct MembershipChanges {
    inner: Pin<Box<dyn Stream<Item = MembershipChange> + Send>>,
}

impl MembershipChanges {
    pub(crate) fn new(rx: tokio::sync::watch::Receiver<Arc<MembershipView>>) -> Self {
        let start = rx.borrow().clone();
        let stream = futures::stream::unfold((rx, start), |(mut rx, last)| async move {
            loop {
                rx.changed().await.ok()?;
                let current = rx.borrow_and_update().clone();
                let change = current.diff(&last);
                if !change.is_empty() {
                    return Some((change, (rx, current)));
                }
            }
        });
        Self {
            inner: Box::pin(stream),
        }
    }
}

impl fmt::Debug for MembershipChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MembershipChanges").finish_non_exhaustive()
    }
}

impl Stream for MembershipChanges {
    type Item = MembershipChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Node {
        generation: u64,
        id: String,
        addr: SocketAddr,
        kvs: Vec<(String, String)>,
    }

    fn node(id: u32, port: u16, dc: &str, generation: u64) -> Node {
        let member = ClusterMember::new(id, ([127, 0, 0, 1], port).into(), dc);
        Node {
            generation,
            id: id.to_string(),
            addr: member.public_addr,
            kvs: member.to_key_values(),
        }
    }

    fn leaving(mut n: Node) -> Node {
        n.kvs.push((KEY_LEAVING.to_string(), "true".to_string()));
        n
    }

    fn gossiped(nodes: &[Node]) -> Vec<GossipedNode<'_>> {
        nodes
            .iter()
            .map(|n| GossipedNode {
                generation: n.generation,
                chitchat_node_id: &n.id,
                addr: n.addr,
                key_values: n
                    .kvs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn leaving_nodes_are_not_members() {
        let live = [
            node(1, 1, "a", 1),
            leaving(node(2, 2, "a", 1)),
            node(3, 3, "b", 1),
        ];
        let view = MembershipView::build(gossiped(&live), []);
        assert_eq!(view.members.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(
            view.statistics(),
            ClusterStatistics {
                live_members: 2,
                dead_members: 0,
                left_members: 1,
                data_centers: 2
            }
        );
    }

    fn joining(mut n: Node) -> Node {
        n.kvs.push((KEY_JOINING.to_string(), "true".to_string()));
        n
    }

    /// The member the view keeps for node 1, whatever order chitchat lists the claims in.
    fn kept_port(claims: [Node; 2]) -> u16 {
        let view = MembershipView::build(gossiped(&claims), []);
        let [a, b] = claims;
        let reversed = MembershipView::build(gossiped(&[b, a]), []);
        assert_eq!(view, reversed, "the order of the claims does not matter");
        assert_eq!(view.members.len(), 1);
        view.members[&1].member.public_addr.port()
    }

    #[test]
    fn duplicate_id_keeps_the_newest_generation() {
        // A restarted node (generation 20) against its earlier incarnation come back from
        // a partition or a stall (generation 10): the restart is the member.
        assert_eq!(kept_port([node(1, 1, "a", 10), node(1, 2, "a", 20)]), 2);
        // One generation at two addresses: decided by the address, alike on every node.
        assert_eq!(kept_port([node(1, 1, "a", 10), node(1, 2, "a", 10)]), 2);
    }

    #[test]
    fn a_node_still_joining_never_displaces_a_member() {
        // A second node claiming a live id, while `connect` checks the id: the member stays.
        assert_eq!(
            kept_port([node(1, 1, "a", 10), joining(node(1, 2, "a", 20))]),
            1
        );
        // Two nodes joining at once: the newer one, as between members.
        assert_eq!(
            kept_port([joining(node(1, 1, "a", 10)), joining(node(1, 2, "a", 20))]),
            2
        );
    }

    #[test]
    fn dead_counts_exclude_restarted_and_left_nodes() {
        let live = [node(1, 1, "a", 1), node(2, 2, "a", 5)];
        let dead = [
            node(2, 2, "a", 1),
            node(3, 3, "a", 1),
            leaving(node(4, 4, "a", 1)),
        ];
        let view = MembershipView::build(gossiped(&live), gossiped(&dead));
        assert_eq!(view.dead.iter().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(view.left.iter().copied().collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn diff_reports_joins_leaves_and_restarts() {
        let before = MembershipView::build(gossiped(&[node(1, 1, "a", 1), node(2, 2, "a", 1)]), []);
        let after = MembershipView::build(gossiped(&[node(1, 1, "a", 1), node(3, 3, "a", 1)]), []);
        let change = after.diff(&before);
        assert_eq!(
            change.joined.iter().map(|m| m.node_id).collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(
            change.left.iter().map(|m| m.node_id).collect::<Vec<_>>(),
            vec![2]
        );

        let restarted =
            MembershipView::build(gossiped(&[node(1, 1, "a", 1), node(3, 3, "a", 2)]), []);
        let change = restarted.diff(&after);
        assert_eq!(change.joined.len(), 1);
        assert_eq!(change.left.len(), 1);
        assert!(restarted.diff(&restarted).is_empty());

        let still_joining = MembershipView::build(
            gossiped(&[node(1, 1, "a", 1), joining(node(3, 3, "a", 2))]),
            [],
        );
        assert!(
            restarted.diff(&still_joining).is_empty(),
            "finishing the join is no membership change"
        );
    }

    #[test]
    fn malformed_nodes_are_ignored() {
        let mut bad = node(5, 5, "a", 1);
        bad.id = "not-5".to_string();
        let mut incomplete = node(6, 6, "a", 1);
        incomplete.kvs.retain(|(k, _)| k != KEY_PUBLIC_ADDR);
        let view = MembershipView::build(gossiped(&[bad, incomplete]), []);
        assert!(view.members.is_empty());
    }

    #[test]
    fn a_relayed_address_other_than_the_nodes_own_is_no_member() {
        // Node 2 gossips under 127.0.0.1:2; a member relayed a newer `datacake.public_addr`
        // naming node 3's address.
        let mut forged = node(2, 2, "a", 1);
        for (k, v) in &mut forged.kvs {
            if k == KEY_PUBLIC_ADDR {
                *v = "127.0.0.1:3".to_string();
            }
        }
        let live = [node(1, 1, "a", 1), forged, node(3, 3, "a", 1)];
        let view = MembershipView::build(gossiped(&live), []);
        assert_eq!(view.members.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert!(view
            .live
            .iter()
            .all(|m| m.public_addr.port() == m.node_id as u16));
    }

    #[test]
    fn heartbeat_tracker_needs_progress_within_the_window() {
        let mut t = HeartbeatTracker::default();
        let t0 = Instant::now();
        let w = Duration::from_millis(100);
        t.observe(&1, 10, t0);
        assert!(
            !t.advanced_within(&1, w, t0),
            "a single sighting is not progress"
        );
        t.observe(&1, 10, t0 + Duration::from_millis(10));
        assert!(!t.advanced_within(&1, w, t0 + Duration::from_millis(10)));
        t.observe(&1, 11, t0 + Duration::from_millis(20));
        assert!(t.advanced_within(&1, w, t0 + Duration::from_millis(119)));
        assert!(!t.advanced_within(&1, w, t0 + Duration::from_millis(120)));
        t.observe(&1, 9, t0 + Duration::from_millis(200));
        assert!(
            !t.advanced_within(&1, w, t0 + Duration::from_millis(200)),
            "no going back"
        );
        t.retain(|k| *k != 1);
        assert!(!t.advanced_within(&1, w, t0 + Duration::from_millis(20)));
    }

    #[test]
    fn tags_round_trip() {
        let mut member = ClusterMember::new(9, ([10, 0, 0, 1], 7000).into(), "x");
        member.tags = Arc::new(
            [("role".to_string(), "db".to_string())]
                .into_iter()
                .collect(),
        );
        let n = Node {
            generation: 1,
            id: "9".into(),
            addr: member.public_addr,
            kvs: member.to_key_values(),
        };
        let view = MembershipView::build(gossiped(&[n]), []);
        assert_eq!(view.members[&9].member, member);
    }
}
