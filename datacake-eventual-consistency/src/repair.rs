//! Anti-entropy repair planning: what to take from a peer, given its digest and entries.
//!
//! Repair is pull-based and runs per peer: a node asks a peer for its keyspace digests,
//! compares them with its own ([`KeyspaceDigest::differing_buckets`]), asks for the
//! `(id, timestamp)` entries of the differing buckets only, and [`plan_repair`] decides what
//! to fetch. What the local node holds newer, the peer pulls in its own repair round.
//!
//! [`KeyspaceDigest::differing_buckets`]: crate::KeyspaceDigest::differing_buckets

use std::collections::HashMap;

use crate::digest::BucketEntry;
use crate::keyspace::{KeyspaceState, Mutation};
use crate::storage::Key;

/// What a repair round should do with one peer's entries for one keyspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairPlan {
    /// Live documents the peer holds newer: fetch them (with their data) and apply.
    pub fetch: Vec<BucketEntry>,
    /// Deletes the peer holds newer: apply them as they are, nothing to fetch.
    pub tombstones: Vec<BucketEntry>,
    /// Ids in the compared buckets that the local node holds newer than the peer (or the peer
    /// lacks). The peer takes them in its own repair round.
    pub newer_locally: Vec<Key>,
}

impl RepairPlan {
    /// Whether there is nothing to take from the peer.
    pub fn is_empty(&self) -> bool {
        self.fetch.is_empty() && self.tombstones.is_empty()
    }
}

/// Plans the repair of `local` from a peer that sent `remote`: its entries for `buckets`
/// (the buckets whose digests differed).
///
/// ```
/// use datacake_crdt::HLCTimestamp;
/// use datacake_eventual_consistency::{plan_repair, BucketEntry, KeyspaceState, Mutation};
///
/// let mut local = KeyspaceState::new();
/// local.apply(Mutation::Put { key: 1, timestamp: HLCTimestamp::new(5, 0, 1) });
/// let remote = [BucketEntry::live(1, HLCTimestamp::new(6, 0, 2))];
/// let buckets = local.digest().differing_buckets(
///     datacake_eventual_consistency::KeyspaceDigest::from_entries(&remote).buckets(),
/// );
/// let plan = plan_repair(&local, &buckets, &remote);
/// assert_eq!(plan.fetch, remote.to_vec());
/// ```
pub fn plan_repair(local: &KeyspaceState, buckets: &[u32], remote: &[BucketEntry]) -> RepairPlan {
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
    for mine in local.bucket_entries(buckets) {
        let newer = match theirs.get(&mine.key) {
            None => true,
            Some(other) => beats(&mine, other),
        };
        if newer {
            plan.newer_locally.push(mine.key);
        }
    }
    plan
}

/// Whether entry `a` wins over entry `b` of the same key (the CRDT's rule: the newer
/// timestamp wins; at the same timestamp a delete beats a put).
fn beats(a: &BucketEntry, b: &BucketEntry) -> bool {
    a.timestamp > b.timestamp || (a.timestamp == b.timestamp && a.tombstone && !b.tombstone)
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
        let buckets = local.digest().differing_buckets(remote.digest().buckets());
        let plan = plan_repair(&local, &buckets, &remote.bucket_entries(&buckets));
        let mut fetch: Vec<_> = plan.fetch.iter().map(|e| e.key).collect();
        fetch.sort();
        let mut dead: Vec<_> = plan.tombstones.iter().map(|e| e.key).collect();
        dead.sort();
        assert_eq!(fetch, vec![1, 4]);
        assert_eq!(dead, vec![3, 5]);
        assert_eq!(plan.newer_locally, vec![2]);
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
        let buckets = local.digest().differing_buckets(remote.digest().buckets());
        assert!(!buckets.is_empty() && buckets.len() <= changed.len());
        // Round 2: the peer sends the entries of the differing buckets only.
        let sent = remote.bucket_entries(&buckets);
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
        let plan = plan_repair(&local, &buckets, &sent);
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
        let buckets = local.digest().differing_buckets(remote.digest().buckets());
        let plan = plan_repair(local, &buckets, &remote.bucket_entries(&buckets));
        apply(local, &plan);
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
            prop_assert!(left.digest().differing_buckets(right.digest().buckets()).is_empty());
        }
    }
}
