//! Anti-entropy repair planning: what to take from a peer, given its digest and entries.
//!
//! Repair is pull-based and runs per peer: a node asks a peer for its keyspace digests,
//! compares them with its own ([`KeyspaceState::differing_buckets`]), asks for the
//! `(id, timestamp)` entries of the differing buckets only, and [`plan_repair`] decides what
//! to fetch. What the local node holds newer, the peer pulls in its own repair round.
//!
//! A plan also answers the two questions tombstone purge depends on, from what the peer
//! *showed* rather than from anything it claims:
//! - **Which of our deletes does the peer hold?** Every local tombstone in a bucket that did
//!   not differ is held by the peer; in a differing bucket the peer's entry shows it. The
//!   oldest local tombstone the peer lacks is [`RepairPlan::unconfirmed`].
//! - **Which of our copies are obsolete?** A local entry the peer lacks at or below the
//!   peer's purge watermark is one the peer purged the delete of (or refuses as older than
//!   its watermark): keeping and offering it would resurrect a deleted document or leave the
//!   replicas apart forever, so it is forgotten ([`RepairPlan::obsolete`]).
//!
//! [`KeyspaceState::differing_buckets`]: crate::keyspace::KeyspaceState::differing_buckets

use std::collections::HashMap;

use datacake_crdt::HLCTimestamp;

use crate::digest::BucketEntry;
use crate::keyspace::{KeyspaceState, Mutation};
use crate::storage::Key;

/// What a repair round should do with one peer's entries for one keyspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RepairPlan {
    /// Live documents the peer holds newer: fetch them (with their data) and apply.
    pub(crate) fetch: Vec<BucketEntry>,
    /// Deletes the peer holds newer: apply them as they are, nothing to fetch.
    pub(crate) tombstones: Vec<BucketEntry>,
    /// Ids in the compared buckets that the local node holds newer than the peer (or the peer
    /// lacks). The peer takes them in its own repair round.
    pub(crate) newer_locally: Vec<Key>,
    /// Local ids the peer lacks at or below its purge watermark: obsolete copies to forget
    /// (after taking what the plan fetches, raising the local watermark to the peer's).
    pub(crate) obsolete: Vec<Key>,
    /// The oldest local tombstone in the compared buckets that the peer holds neither as it
    /// is nor newer (nor below its purge watermark): the peer has confirmed every local
    /// delete older than it. `None`: it holds them all.
    pub(crate) unconfirmed: Option<HLCTimestamp>,
}

impl RepairPlan {}

/// Plans the repair of `local` from a peer that sent `remote`: its entries for `buckets`
/// (the buckets, at resolution `bits`, whose digests differed), with the peer's purge
/// watermark of the keyspace.
pub(crate) fn plan_repair(
    local: &KeyspaceState,
    bits: u8,
    buckets: &[u32],
    remote: &[BucketEntry],
    remote_watermark: Option<HLCTimestamp>,
) -> RepairPlan {
    let mut plan = RepairPlan::default();
    let mut theirs: HashMap<Key, BucketEntry> = HashMap::with_capacity(remote.len());
    for entry in remote {
        theirs.insert(entry.key, *entry);
        if !local.will_apply(&Mutation::from(*entry)) {
            continue;
        }
        if entry.tombstone {
            plan.tombstones.push(*entry);
        } else {
            plan.fetch.push(*entry);
        }
    }
    let below_theirs = |e: &BucketEntry| remote_watermark.is_some_and(|w| e.timestamp <= w);
    for mine in local.bucket_entries(bits, buckets) {
        let held = theirs.get(&mine.key);
        let newer = held.is_none_or(|other| mine.version().beats(other.version()));
        if newer {
            plan.newer_locally.push(mine.key);
        }
        if held.is_none() && below_theirs(&mine) {
            plan.obsolete.push(mine.key);
            continue;
        }
        if mine.tombstone && newer {
            plan.unconfirmed = Some(
                plan.unconfirmed
                    .map_or(mine.timestamp, |t| t.min(mine.timestamp)),
            );
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use datacake_crdt::HLCTimestamp;
    use proptest::prelude::*;

    use super::*;
    use crate::digest::KeyspaceDigest;
    use crate::keyspace::Outcome;

    fn ts(millis: u64) -> HLCTimestamp {
        HLCTimestamp::new(millis, 0, 1)
    }

    #[test]
    fn the_plan_takes_only_what_wins() {
        let mut local = KeyspaceState::new();
        let mut remote = KeyspaceState::new();
        for m in [
            Mutation::Put {
                key: 1,
                timestamp: ts(5),
            },
            Mutation::Put {
                key: 2,
                timestamp: ts(9),
            },
            Mutation::Put {
                key: 3,
                timestamp: ts(5),
            },
        ] {
            local.apply(m);
        }
        for m in [
            Mutation::Put {
                key: 1,
                timestamp: ts(6),
            },
            Mutation::Put {
                key: 2,
                timestamp: ts(8),
            },
            Mutation::Delete {
                key: 3,
                timestamp: ts(6),
            },
            Mutation::Put {
                key: 4,
                timestamp: ts(1),
            },
            Mutation::Delete {
                key: 5,
                timestamp: ts(1),
            },
        ] {
            remote.apply(m);
        }
        let bits = remote.digest().bits();
        let buckets = local.differing_buckets(bits, remote.digest().buckets());
        let plan = plan_repair(
            &local,
            bits,
            &buckets,
            &remote.bucket_entries(bits, &buckets),
            None,
        );
        let mut fetch: Vec<_> = plan.fetch.iter().map(|e| e.key).collect();
        fetch.sort();
        let mut dead: Vec<_> = plan.tombstones.iter().map(|e| e.key).collect();
        dead.sort();
        assert_eq!(fetch, vec![1, 4]);
        assert_eq!(dead, vec![3, 5]);
        assert_eq!(plan.newer_locally, vec![2]);
        assert!(plan.obsolete.is_empty());
        assert_eq!(plan.unconfirmed, None);
    }

    #[test]
    fn the_plan_names_unconfirmed_deletes_and_obsolete_copies() {
        let put = |key, millis| Mutation::Put {
            key,
            timestamp: ts(millis),
        };
        let del = |key, millis| Mutation::Delete {
            key,
            timestamp: ts(millis),
        };
        let mut local = KeyspaceState::new();
        for m in [
            del(1, 5),
            del(2, 7),
            del(3, 9),
            put(4, 3),
            put(5, 20),
            del(6, 4),
        ] {
            local.apply(m);
        }
        let mut remote = KeyspaceState::new();
        // 1: the peer holds an older put (not confirmed); 2: it holds the delete; 3: it holds
        // a newer put; 6: it lacks it below its watermark (it purged the delete: confirmed).
        for m in [put(1, 4), del(2, 7), put(3, 10)] {
            remote.apply(m);
        }
        let watermark = Some(ts(6));
        let bits = 0;
        let all = [0];
        let plan = plan_repair(
            &local,
            bits,
            &all,
            &remote.bucket_entries(bits, &all),
            watermark,
        );
        assert_eq!(
            plan.unconfirmed,
            Some(ts(5)),
            "only the delete of 1 is unconfirmed"
        );
        let mut obsolete = plan.obsolete.clone();
        obsolete.sort();
        assert_eq!(
            obsolete,
            vec![4, 6],
            "lacking at or below the peer's watermark"
        );
        assert_eq!(plan.fetch, vec![BucketEntry::live(3, ts(10))]);

        // Without a watermark the peer purged nothing: 4 and 6 are just newer here.
        let plan = plan_repair(&local, bits, &all, &remote.bucket_entries(bits, &all), None);
        assert!(plan.obsolete.is_empty());
        assert_eq!(
            plan.unconfirmed,
            Some(ts(4)),
            "the delete of 6 is unconfirmed now"
        );
    }

    /// Applies `plan` to `local` as the network shell would (documents fetched from the peer).
    fn apply(local: &mut KeyspaceState, plan: &RepairPlan) {
        for e in plan.fetch.iter().chain(&plan.tombstones) {
            assert_eq!(local.apply(Mutation::from(*e)), Outcome::Applied);
        }
    }

    /// A keyspace of 1,000,000 ids in which 10 changed: the exchange costs the digests and
    /// the entries of at most 10 buckets, and the repair fetches exactly the 10 changed ids.
    #[test]
    fn a_million_keys_with_ten_changes_exchange_only_the_differing_buckets() {
        const KEYS: u64 = 1_000_000;
        let entries: Vec<_> = (0..KEYS).map(|k| BucketEntry::live(k, ts(1))).collect();
        let mut local =
            KeyspaceState::from_metadata(entries.iter().map(|e| (e.key, e.timestamp, e.tombstone)));
        let mut remote = local.clone();
        let changed: Vec<Key> = (0..10).map(|i| i * 99_991 + 7).collect();
        for (i, key) in changed.iter().enumerate() {
            let m = if i % 2 == 0 {
                Mutation::Put {
                    key: *key,
                    timestamp: ts(2),
                }
            } else {
                Mutation::Delete {
                    key: *key,
                    timestamp: ts(2),
                }
            };
            assert_eq!(remote.apply(m), Outcome::Applied);
        }

        // Round 1: the local node sends nothing but compares the peer's bucket digests.
        let bits = remote.digest().bits();
        assert_eq!(bits, crate::digest::MAX_DIGEST_BITS);
        let buckets = local.differing_buckets(bits, remote.digest().buckets());
        assert!(!buckets.is_empty() && buckets.len() <= changed.len());
        // Round 2: the peer sends the entries of the differing buckets only.
        let sent = remote.bucket_entries(bits, &buckets);
        let per_bucket = KEYS as usize / crate::digest::DIGEST_BUCKETS;
        assert!(
            sent.len() <= buckets.len() * per_bucket * 2,
            "{} entries sent for {} buckets",
            sent.len(),
            buckets.len()
        );
        assert!(
            sent.len() < KEYS as usize / 100,
            "{} entries sent",
            sent.len()
        );
        // Round 3: fetch only the changed documents.
        let plan = plan_repair(&local, bits, &buckets, &sent, None);
        let mut taken: Vec<_> = plan
            .fetch
            .iter()
            .chain(&plan.tombstones)
            .map(|e| e.key)
            .collect();
        taken.sort();
        assert_eq!(taken, changed);
        assert_eq!(plan.fetch.len(), 5, "only the puts need their documents");
        assert!(plan.newer_locally.is_empty());

        apply(&mut local, &plan);
        assert_eq!(local.digest(), remote.digest());
        assert_eq!(
            local.digest(),
            &KeyspaceDigest::from_entries(&remote.entries().collect::<Vec<_>>())
        );
    }

    fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
        let one =
            (0u64..200, 0u64..50, 0u32..3, any::<bool>()).prop_map(|(key, millis, node, del)| {
                let timestamp = HLCTimestamp::new(millis, 0, node);
                if del {
                    Mutation::Delete { key, timestamp }
                } else {
                    Mutation::Put { key, timestamp }
                }
            });
        prop::collection::vec(one, 0..80)
    }

    /// One pull of `local` from `remote`, as the repair task does it.
    fn pull(local: &mut KeyspaceState, remote: &KeyspaceState) {
        let bits = remote.digest().bits();
        let buckets = local.differing_buckets(bits, remote.digest().buckets());
        let entries = remote.bucket_entries(bits, &buckets);
        let plan = plan_repair(local, bits, &buckets, &entries, remote.purge_watermark());
        apply(local, &plan);
        if let Some(watermark) = remote.purge_watermark() {
            local.forget_below(watermark, &plan.obsolete);
        }
    }

    proptest! {
        /// After each side pulls from the other once, two replicas hold the same entries and
        /// digests, whatever each saw before.
        #[test]
        fn two_pulls_converge(a in mutations(), b in mutations()) {
            let mut left = KeyspaceState::new();
            let mut right = KeyspaceState::new();
            for m in a {
                left.apply(m);
            }
            for m in b {
                right.apply(m);
            }
            pull(&mut left, &right);
            pull(&mut right, &left);
            prop_assert_eq!(left.digest(), right.digest());
            let mut l: Vec<_> = left.entries().collect();
            let mut r: Vec<_> = right.entries().collect();
            l.sort();
            r.sort();
            prop_assert_eq!(l, r);
            // Nothing left to exchange.
            let bits = right.digest().bits();
            prop_assert!(left.differing_buckets(bits, right.digest().buckets()).is_empty());
        }
    }

    #[test]
    fn a_newer_remote_entry_is_fetched() {
        let mut local = KeyspaceState::new();
        local.apply(Mutation::Put {
            key: 1,
            timestamp: HLCTimestamp::new(5, 0, 1),
        });
        let remote = [BucketEntry::live(1, HLCTimestamp::new(6, 0, 2))];
        let theirs = KeyspaceDigest::from_entries_at(4, &remote);
        let buckets = local.differing_buckets(4, theirs.buckets());
        let plan = plan_repair(&local, 4, &buckets, &remote, None);
        assert_eq!(plan.fetch, remote.to_vec());
    }
}
