//! The members the store counts: every node the cluster has known, live or down, until it is
//! removed. They are the replicas of every key ([`Members::replicas`]), consistency levels
//! count them, and tombstone purge waits for each of them ([`Members::purge_holders`]).
//!
//! Gossip only says who is live *now*; a node that crashed, or shut down for a deploy, is
//! still a replica holding data it will serve when it returns. So the store keeps its own
//! record, persisted through the [`Storage`](crate::Storage) in the reserved keyspace
//! [`MEMBERS_KEYSPACE`] (one document per member), so it survives this node's restarts too.
//! A member stops counting only when it is removed explicitly
//! ([`EventuallyConsistentStore::remove_member`](crate::EventuallyConsistentStore::remove_member));
//! after the tombstone grace a down member no longer holds purges back, but still counts
//! for consistency levels.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use datacake_crdt::HLCTimestamp;
use datacake_node::{ClusterMember, Consistency, ConsistencyError, NodeId, Requirement};
use parking_lot::{Mutex, RwLock};

use crate::storage::{Document, Key};

/// The reserved keyspace holding the store's member records (one document per member, id =
/// node id). Written when a member is first seen, goes down, comes back or is removed.
pub const MEMBERS_KEYSPACE: &str = "__datacake.members";

/// Encoding version of a member record.
const RECORD_VERSION: u8 = 1;

/// A member as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) member: ClusterMember,
    /// Wall-clock milliseconds since which it has not been live; `None` while live.
    pub(crate) down_since: Option<u64>,
}

/// What an operation at one consistency level needs, on one membership: computed once per
/// membership change and level, not per operation.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The level's requirement over the replicas; `None` when it needs no peer.
    pub(crate) requirement: Option<Requirement>,
    /// `Err(NotEnoughNodes)` when too few of the replicas are live.
    pub(crate) check: Result<(), ConsistencyError>,
    /// The live peers the requirement counts: the ones an operation waits for.
    pub(crate) counted: Vec<ClusterMember>,
    /// No replica at all: no member recorded and no live peer.
    pub(crate) alone: bool,
}

/// The plans of every level for one live view and one version of the record.
#[derive(Debug)]
struct Plans {
    live: Arc<[ClusterMember]>,
    version: u64,
    by_level: [Option<Arc<Plan>>; 8],
}

/// The store's members (other than the local node); see the module docs.
#[derive(Debug)]
pub(crate) struct Members {
    me: NodeId,
    /// The record, and its version (bumped on every change).
    known: RwLock<(u64, Arc<BTreeMap<NodeId, Known>>)>,
    /// Members whose current record failed to persist: [`Members::observe`] hands them out
    /// again, so the next call retries.
    unsaved: Mutex<BTreeSet<NodeId>>,
    /// Members removed while this process ran (until they are live again): a repeated
    /// removal tells the peers again instead of failing as unknown.
    removed: Mutex<BTreeSet<NodeId>>,
    /// Held from [`Members::observe`] until what it returned is persisted, so records reach
    /// the storage in the order they changed.
    pub(crate) recording: tokio::sync::Mutex<()>,
    /// The record's version, readable without the lock (for the plan cache).
    version: AtomicU64,
    plans: Mutex<Option<Plans>>,
    /// When this process first held each down member down (at start, for members recorded
    /// down): on the monotonic clock, which a wall-clock step cannot move. See
    /// [`Members::purge_holders`].
    down_seen: Mutex<HashMap<NodeId, tokio::time::Instant>>,
}

fn level_index(level: Consistency) -> usize {
    match level {
        Consistency::None => 0,
        Consistency::One => 1,
        Consistency::Two => 2,
        Consistency::Three => 3,
        Consistency::Quorum => 4,
        Consistency::LocalQuorum => 5,
        Consistency::EachQuorum => 6,
        Consistency::All => 7,
    }
}

impl Members {
    /// The record of node `me`, starting from the `persisted` members.
    pub(crate) fn new(me: NodeId, persisted: impl IntoIterator<Item = Known>) -> Self {
        let known: BTreeMap<NodeId, Known> = persisted
            .into_iter()
            .filter(|k| k.member.node_id != me)
            .map(|k| (k.member.node_id, k))
            .collect();
        let now = tokio::time::Instant::now();
        let down_seen = known
            .values()
            .filter(|k| k.down_since.is_some())
            .map(|k| (k.member.node_id, now))
            .collect();
        Self {
            me,
            known: RwLock::new((0, Arc::new(known))),
            unsaved: Mutex::default(),
            removed: Mutex::default(),
            recording: tokio::sync::Mutex::new(()),
            version: AtomicU64::new(0),
            plans: Mutex::new(None),
            down_seen: Mutex::new(down_seen),
        }
    }

    fn snapshot(&self) -> (u64, Arc<BTreeMap<NodeId, Known>>) {
        let known = self.known.read();
        (known.0, known.1.clone())
    }

    /// Runs `change` on a copy of the record under the write lock (so concurrent updates do
    /// not undo each other) and installs the copy if `change` says it changed anything.
    fn update<R>(&self, change: impl FnOnce(&mut BTreeMap<NodeId, Known>) -> (R, bool)) -> R {
        let mut known = self.known.write();
        let mut next = (*known.1).clone();
        let (out, changed) = change(&mut next);
        if changed {
            known.0 += 1;
            known.1 = Arc::new(next);
            self.version.store(known.0, Ordering::Release);
        }
        out
    }

    /// What an operation at `level` on `local` needs, with `live` the live members (a
    /// shared snapshot from the node): cached until the live view or the record changes.
    pub(crate) fn plan(
        &self,
        level: Consistency,
        local: &ClusterMember,
        live: Arc<[ClusterMember]>,
    ) -> Arc<Plan> {
        let version = self.version.load(Ordering::Acquire);
        let index = level_index(level);
        let mut plans = self.plans.lock();
        let fresh = plans
            .as_ref()
            .is_some_and(|p| p.version == version && Arc::ptr_eq(&p.live, &live));
        if !fresh {
            *plans = Some(Plans {
                live: live.clone(),
                version,
                by_level: Default::default(),
            });
        }
        let cached = &mut plans.as_mut().expect("set above").by_level[index];
        if let Some(plan) = cached {
            return plan.clone();
        }
        let plan = Arc::new(self.compute(level, local, &live));
        *cached = Some(plan.clone());
        plan
    }

    fn compute(&self, level: Consistency, local: &ClusterMember, live: &[ClusterMember]) -> Plan {
        let replicas = self.replicas(live);
        let requirement =
            (level != Consistency::None).then(|| Requirement::new(level, local, &replicas));
        let check = requirement.as_ref().map_or(Ok(()), |r| {
            r.check_live(|id| live.iter().any(|m| m.node_id == id))
        });
        let requirement = requirement.filter(|r| !r.is_local());
        let counted = live
            .iter()
            .filter(|m| m.node_id != local.node_id)
            .filter(|m| requirement.as_ref().is_some_and(|r| r.counts(m.node_id)))
            .cloned()
            .collect();
        Plan {
            requirement,
            check,
            counted,
            alone: replicas.is_empty(),
        }
    }

    /// Folds the live members in: new members, changed addresses, members that went down
    /// (since `now_ms`) or came back. Returns the records that changed (to persist).
    pub(crate) fn observe(&self, live: &[ClusterMember], now_ms: u64) -> Vec<Known> {
        let mut changed = self.update(|next| {
            let mut changed = Vec::new();
            let mut removed = self.removed.lock();
            for member in live.iter().filter(|m| m.node_id != self.me) {
                removed.remove(&member.node_id);
                let same = next
                    .get(&member.node_id)
                    .is_some_and(|k| k.down_since.is_none() && same_place(&k.member, member));
                if !same {
                    let record = Known {
                        member: member.clone(),
                        down_since: None,
                    };
                    next.insert(member.node_id, record.clone());
                    changed.push(record);
                }
            }
            let mut down_seen = self.down_seen.lock();
            for known in next.values_mut() {
                let id = known.member.node_id;
                let is_live = live.iter().any(|m| m.node_id == id);
                if is_live {
                    down_seen.remove(&id);
                } else if known.down_since.is_none() {
                    known.down_since = Some(now_ms);
                    down_seen.insert(id, tokio::time::Instant::now());
                    changed.push(known.clone());
                }
            }
            let any = !changed.is_empty();
            (changed, any)
        });
        // The records that failed to persist before, as they stand now.
        let (_, current) = self.snapshot();
        for id in std::mem::take(&mut *self.unsaved.lock()) {
            if let Some(known) = current.get(&id) {
                if !changed.iter().any(|c| c.member.node_id == id) {
                    changed.push(known.clone());
                }
            }
        }
        changed
    }

    /// Records that `node_id`'s record failed to persist: the next [`Members::observe`]
    /// returns it again.
    pub(crate) fn unsaved(&self, node_id: NodeId) {
        self.unsaved.lock().insert(node_id);
    }

    /// The replicas of a key: every known member other than this node, plus any live member
    /// not recorded yet. The one place that decides it, so that partitioning (a replication
    /// factor below the cluster size) can replace it without touching the write, read,
    /// acknowledgement and repair paths.
    pub(crate) fn replicas(&self, live: &[ClusterMember]) -> Vec<ClusterMember> {
        let (_, known) = self.snapshot();
        let mut replicas: Vec<ClusterMember> = known
            .values()
            .map(|k| {
                // The live view has the member's current address.
                live.iter()
                    .find(|m| m.node_id == k.member.node_id)
                    .unwrap_or(&k.member)
                    .clone()
            })
            .collect();
        for member in live {
            if member.node_id != self.me && !known.contains_key(&member.node_id) {
                replicas.push(member.clone());
            }
        }
        replicas
    }

    /// The members whose confirmation a tombstone purge waits for: every known member except
    /// those down for longer than `grace`, both by the wall clock (`now_ms` against the
    /// recorded `down_since`, which survives restarts) and by this process's monotonic clock
    /// (since it first held the member down). The wall clock alone would let a step forward
    /// (NTP correcting a clock that ran a day slow, a VM snapshot restored) turn a member
    /// down for a minute into one past the grace, and purges would forget the writes only it
    /// holds; the monotonic clock alone would forget, at each restart, how long a member has
    /// been down. So a restart, or a wall clock stepping back, only makes purges wait longer.
    pub(crate) fn purge_holders(&self, grace: Duration, now_ms: u64) -> Vec<NodeId> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        let down_seen = self.down_seen.lock();
        let past_grace = |k: &Known| {
            let Some(since) = k.down_since else {
                return false;
            };
            now_ms.saturating_sub(since) >= grace_ms
                && down_seen
                    .get(&k.member.node_id)
                    .is_some_and(|seen| seen.elapsed() >= grace)
        };
        self.snapshot()
            .1
            .values()
            .filter(|k| !past_grace(k))
            .map(|k| k.member.node_id)
            .collect()
    }

    /// The record of `node_id`, if known.
    pub(crate) fn get(&self, node_id: NodeId) -> Option<Known> {
        self.snapshot().1.get(&node_id).cloned()
    }

    /// Forgets `node_id`; returns its record if it was known.
    pub(crate) fn remove(&self, node_id: NodeId) -> Option<Known> {
        self.update(|next| {
            let removed = next.remove(&node_id);
            self.down_seen.lock().remove(&node_id);
            let changed = removed.is_some();
            if changed {
                self.removed.lock().insert(node_id);
            }
            (removed, changed)
        })
    }

    /// Whether `node_id` was removed while this process ran and has not been live since.
    pub(crate) fn was_removed(&self, node_id: NodeId) -> bool {
        self.removed.lock().contains(&node_id)
    }
}

/// Whether two records of a member name the same address and data centre.
fn same_place(a: &ClusterMember, b: &ClusterMember) -> bool {
    a.public_addr == b.public_addr && a.data_center == b.data_center
}

/// The document that persists `known`.
pub(crate) fn encode(known: &Known) -> Document {
    let addr = known.member.public_addr.to_string();
    let dc = known.member.data_center.as_bytes();
    let mut data = BytesMut::with_capacity(1 + 8 + 2 + addr.len() + dc.len());
    data.put_u8(RECORD_VERSION);
    data.put_u64_le(known.down_since.unwrap_or(u64::MAX));
    data.put_u16_le(addr.len() as u16);
    data.put_slice(addr.as_bytes());
    data.put_slice(dc);
    // The timestamp is not used: records are read whole on start-up and never replicated.
    let id = Key::from(known.member.node_id);
    Document::new(id, HLCTimestamp::new(0, 0, 0), data.freeze())
}

/// The record a document holds; `None` if it is malformed.
pub(crate) fn decode(doc: &Document) -> Option<Known> {
    let node_id = NodeId::try_from(doc.id).ok()?;
    let mut data: Bytes = doc.data.clone();
    if data.remaining() < 11 || data.get_u8() != RECORD_VERSION {
        return None;
    }
    let down_since = Some(data.get_u64_le()).filter(|ms| *ms != u64::MAX);
    let addr_len = usize::from(data.get_u16_le());
    if data.remaining() < addr_len {
        return None;
    }
    let addr = data.split_to(addr_len);
    let public_addr: SocketAddr = std::str::from_utf8(&addr).ok()?.parse().ok()?;
    let dc = std::str::from_utf8(&data).ok()?;
    Some(Known {
        member: ClusterMember::new(node_id, public_addr, dc),
        down_since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: NodeId) -> ClusterMember {
        ClusterMember::new(id, ([127, 0, 0, 1], 9_000 + id as u16).into(), "dc")
    }

    #[test]
    fn a_record_that_failed_to_persist_is_handed_out_again_once() {
        let members = Members::new(1, []);
        assert_eq!(members.observe(&[member(2), member(3)], 100).len(), 2);
        members.unsaved(3);
        let again = members.observe(&[member(2), member(3)], 150);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].member.node_id, 3);
        assert!(members.observe(&[member(2), member(3)], 200).is_empty());
        // A member removed meanwhile is not written back.
        members.unsaved(3);
        members.remove(3);
        assert!(members.observe(&[member(2)], 250).is_empty());
        assert!(members.was_removed(3));
        members.observe(&[member(2), member(3)], 300);
        assert!(!members.was_removed(3), "live again");
    }

    #[tokio::test(start_paused = true)]
    async fn members_are_remembered_down_and_back_until_removed() {
        let members = Members::new(1, []);
        let changed = members.observe(&[member(1), member(2), member(3)], 100);
        assert_eq!(
            changed.len(),
            2,
            "2 and 3 are new; the local node is not a member"
        );
        assert!(members
            .observe(&[member(1), member(2), member(3)], 150)
            .is_empty());

        let changed = members.observe(&[member(1), member(2)], 200);
        assert_eq!(changed[0].down_since, Some(200), "3 went down");
        let ids = |v: Vec<ClusterMember>| v.iter().map(|m| m.node_id).collect::<Vec<_>>();
        assert_eq!(
            ids(members.replicas(&[member(2)])),
            vec![2, 3],
            "down still counts"
        );

        let grace = Duration::from_millis(1_000);
        tokio::time::advance(grace).await;
        assert_eq!(members.purge_holders(grace, 1_199), vec![2, 3]);
        assert_eq!(
            members.purge_holders(grace, 1_200),
            vec![2],
            "down past the grace"
        );

        let moved = ClusterMember::new(3, ([127, 0, 0, 1], 7_777).into(), "dc");
        let changed = members.observe(&[member(2), moved.clone()], 300);
        assert_eq!(
            changed,
            vec![Known {
                member: moved,
                down_since: None
            }]
        );

        assert!(members.remove(3).is_some());
        assert_eq!(ids(members.replicas(&[member(2)])), vec![2]);
        assert!(members.remove(3).is_none());
    }

    /// The wall clock steps a day forward while a member has been down for a minute: the
    /// member still holds purges back until it has been down for the grace on the monotonic
    /// clock too. A restart starts that count again (the safe side).
    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_step_does_not_cut_a_down_members_grace_short() {
        let minute = 60_000;
        let day = 24 * 60 * minute;
        let grace = Duration::from_millis(day);
        let members = Members::new(1, []);
        members.observe(&[member(2), member(3)], 0);
        members.observe(&[member(2)], 0);
        tokio::time::advance(Duration::from_millis(minute)).await;
        let stepped = minute + day + 3_600_000;
        assert_eq!(
            members.purge_holders(grace, stepped),
            vec![2, 3],
            "down for a minute, whatever the wall clock says"
        );
        tokio::time::advance(grace).await;
        assert_eq!(members.purge_holders(grace, stepped), vec![2]);

        // After a restart the record says down since 0: the grace counts again from start.
        let restarted = Members::new(1, members.get(3));
        assert_eq!(restarted.purge_holders(grace, stepped), vec![3]);
        tokio::time::advance(grace).await;
        assert!(restarted.purge_holders(grace, stepped).is_empty());
    }

    #[test]
    fn plans_are_cached_until_the_view_or_the_record_changes() {
        let members = Members::new(1, []);
        let live: Arc<[ClusterMember]> = vec![member(1), member(2), member(3)].into();
        members.observe(&live, 0);
        let quorum = members.plan(Consistency::Quorum, &member(1), live.clone());
        assert!(Arc::ptr_eq(
            &quorum,
            &members.plan(Consistency::Quorum, &member(1), live.clone())
        ));
        assert_eq!(quorum.check, Ok(()));
        assert_eq!(quorum.counted.len(), 2);

        // Node 3 goes down: a new view, and All can no longer be met.
        let fewer: Arc<[ClusterMember]> = vec![member(1), member(2)].into();
        members.observe(&fewer, 10);
        let all = members.plan(Consistency::All, &member(1), fewer.clone());
        assert!(all.check.is_err(), "node 3 is still a replica");
        assert_eq!(all.counted.len(), 1);
        // Removed: All counts node 2 alone.
        members.remove(3);
        let all = members.plan(Consistency::All, &member(1), fewer);
        assert_eq!(all.check, Ok(()));
        let none = members.plan(Consistency::None, &member(1), live);
        assert!(none.requirement.is_none() && none.counted.is_empty());
    }

    #[test]
    fn records_round_trip_and_malformed_ones_are_refused() {
        for down_since in [None, Some(1_700_000_000_000)] {
            let known = Known {
                member: member(42),
                down_since,
            };
            assert_eq!(decode(&encode(&known)), Some(known));
        }
        let mut doc = encode(&Known {
            member: member(7),
            down_since: None,
        });
        doc.data = Bytes::from_static(b"\x01short");
        assert_eq!(decode(&doc), None);
        doc.id = u64::MAX;
        assert_eq!(decode(&doc), None);
    }
}
