//! The in-memory state of one keyspace: [`KeyspaceState`].

use std::ops::ControlFlow;

use datacake_crdt::{HLCTimestamp, OrSWotSet, Version};

use crate::digest::{bits_for, BucketEntry, KeyspaceDigest};
use crate::storage::{Key, Metadata};

/// One write to a keyspace: a put or a delete of `key` at `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mutation {
    /// The document `key` was written at `timestamp`.
    Put {
        /// The document id.
        key: Key,
        /// When it was written.
        timestamp: HLCTimestamp,
    },
    /// The document `key` was deleted at `timestamp`.
    Delete {
        /// The document id.
        key: Key,
        /// When it was deleted.
        timestamp: HLCTimestamp,
    },
}

impl Mutation {
    /// The id the mutation writes.
    pub(crate) fn key(&self) -> Key {
        match self {
            Self::Put { key, .. } | Self::Delete { key, .. } => *key,
        }
    }

    /// When it was written.
    pub(crate) fn timestamp(&self) -> HLCTimestamp {
        match self {
            Self::Put { timestamp, .. } | Self::Delete { timestamp, .. } => *timestamp,
        }
    }

    /// The same mutation at `timestamp`.
    pub(crate) fn at(self, timestamp: HLCTimestamp) -> Self {
        match self {
            Self::Put { key, .. } => Self::Put { key, timestamp },
            Self::Delete { key, .. } => Self::Delete { key, timestamp },
        }
    }

    /// Whether it is a delete.
    pub(crate) fn is_delete(&self) -> bool {
        matches!(self, Self::Delete { .. })
    }

    /// Its rank under last writer wins.
    pub(crate) fn version(&self) -> Version {
        Version {
            timestamp: self.timestamp(),
            delete: self.is_delete(),
        }
    }

    /// The entry the keyspace holds for the key once the mutation applied.
    pub(crate) fn entry(&self) -> BucketEntry {
        BucketEntry {
            key: self.key(),
            timestamp: self.timestamp(),
            tombstone: self.is_delete(),
        }
    }
}

impl From<BucketEntry> for Mutation {
    fn from(entry: BucketEntry) -> Self {
        if entry.tombstone {
            Self::Delete {
                key: entry.key,
                timestamp: entry.timestamp,
            }
        } else {
            Self::Put {
                key: entry.key,
                timestamp: entry.timestamp,
            }
        }
    }
}

/// What [`KeyspaceState::apply`] did with a mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The mutation won: the keyspace now holds it (and the storage must be written).
    Applied,
    /// The keyspace already holds a newer write of the key (or the same one); nothing changed.
    Stale,
}

/// The metadata of one keyspace: which write of every id wins, decided by an
/// [`OrSWotSet`] (last writer wins by timestamp; a delete beats a put of the same
/// timestamp), plus the keyspace's [`KeyspaceDigest`], kept up to date on every write.
///
/// Only ids and timestamps are held; documents stay in the storage. Tombstones live in the
/// set too (until purged), so the digest is updated in O(1) per write.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyspaceState {
    set: OrSWotSet<1>,
    digest: KeyspaceDigest,
}

impl KeyspaceState {
    /// An empty keyspace.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The state of a keyspace whose storage lists `metadata` (on start-up).
    pub(crate) fn from_metadata(metadata: impl IntoIterator<Item = Metadata>) -> Self {
        let mut state = Self::new();
        for (key, timestamp, tombstone) in metadata {
            state.apply(Mutation::from(BucketEntry {
                key,
                timestamp,
                tombstone,
            }));
        }
        state
    }

    /// The entry held for `key` (live or tombstone).
    pub(crate) fn get(&self, key: Key) -> Option<BucketEntry> {
        if let Some(ts) = self.set.get(&key) {
            return Some(BucketEntry::live(key, *ts));
        }
        self.set
            .tombstone(&key)
            .map(|ts| BucketEntry::tombstone(key, *ts))
    }

    /// Whether `mutation` would win against what the keyspace holds.
    pub(crate) fn will_apply(&self, mutation: &Mutation) -> bool {
        self.set.would_win(mutation.key(), mutation.version())
    }

    /// Applies `mutation` if it wins, updating the set, the tombstones and the digest.
    pub(crate) fn apply(&mut self, mutation: Mutation) -> Outcome {
        let old = self.get(mutation.key());
        let applied = match mutation {
            Mutation::Put { key, timestamp } => self.set.insert(key, timestamp),
            Mutation::Delete { key, timestamp } => self.set.delete(key, timestamp),
        };
        if !applied {
            return Outcome::Stale;
        }
        let new = mutation.entry();
        self.digest.replace(old.as_ref(), Some(&new));
        if self.digest.wants_finer() {
            self.rebuild_digest();
        }
        Outcome::Applied
    }

    /// Rebuilds the digest at the resolution the keyspace's size calls for (amortised O(1)
    /// per write: the resolution doubles each time).
    fn rebuild_digest(&mut self) {
        let entries: Vec<BucketEntry> = self.entries().collect();
        self.digest = KeyspaceDigest::from_entries_at(bits_for(entries.len()), &entries);
    }

    /// Forgets `keys` altogether (no tombstone left), after raising the purge watermark to
    /// `watermark` so that older writes of them stay refused; returns the entries forgotten.
    /// For a replica whose copies at or below a peer's purge watermark are obsolete (see
    /// [`plan_repair`](crate::repair::plan_repair)): only keys at or below `watermark` are forgotten.
    pub(crate) fn forget_below(
        &mut self,
        watermark: HLCTimestamp,
        keys: &[Key],
    ) -> Vec<BucketEntry> {
        self.set.raise_purge_watermark(watermark);
        let forgotten = self.held_at_or_below(watermark, keys);
        for entry in &forgotten {
            self.set.forget(entry.key);
            self.digest.remove(entry);
        }
        self.digest.shrink_to_fit();
        forgotten
    }

    /// The entries of `keys` held at or below `watermark`: what
    /// [`forget_below`](Self::forget_below) would forget.
    pub(crate) fn held_at_or_below(
        &self,
        watermark: HLCTimestamp,
        keys: &[Key],
    ) -> Vec<BucketEntry> {
        keys.iter()
            .filter_map(|key| self.get(*key).filter(|e| e.timestamp <= watermark))
            .collect()
    }

    /// Whether any tombstone is older than `cutoff` (what a purge would drop).
    pub(crate) fn has_tombstones_before(&self, cutoff: HLCTimestamp) -> bool {
        self.set.tombstones().any(|(_, ts)| ts < cutoff)
    }

    /// Forgets the tombstones older than `cutoff` and returns them (sorted by key), while the
    /// set keeps refusing any write of an id it does not hold at or below the newest forgotten
    /// tombstone (the [`OrSWotSet`] purge watermark), so a purged delete never lets an older
    /// write resurrect the document. Linear in the number of tombstones, not the keyspace.
    pub(crate) fn purge_tombstones(&mut self, cutoff: HLCTimestamp) -> Vec<BucketEntry> {
        let purged: Vec<BucketEntry> = self
            .set
            .purge_deletes_before(cutoff)
            .into_iter()
            .map(|(key, ts)| BucketEntry::tombstone(key, ts))
            .collect();
        for entry in &purged {
            self.digest.remove(entry);
        }
        self.digest.shrink_to_fit();
        purged
    }

    /// Whether a version of `key` stamped `timestamp` is known to be purged here: the
    /// keyspace holds nothing for `key` and the stamp is at or below its purge watermark.
    pub(crate) fn knows_purged(&self, key: Key, timestamp: HLCTimestamp) -> bool {
        self.purge_watermark().is_some_and(|w| timestamp <= w) && self.get(key).is_none()
    }

    /// The purge watermark: writes of ids the keyspace does not hold at or below it are
    /// refused (see [`purge_tombstones`](Self::purge_tombstones)).
    pub(crate) fn purge_watermark(&self) -> Option<HLCTimestamp> {
        self.set.purge_watermark()
    }

    /// Raises the purge watermark to `watermark` (never lowers it); for restoring a persisted
    /// watermark on start-up.
    pub(crate) fn raise_purge_watermark(&mut self, watermark: HLCTimestamp) {
        self.set.raise_purge_watermark(watermark);
    }

    /// The keyspace's digest.
    pub(crate) fn digest(&self) -> &KeyspaceDigest {
        &self.digest
    }

    /// Number of live ids.
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether there are no live ids.
    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    #[cfg(test)]
    /// Number of tombstones held.
    pub(crate) fn tombstone_count(&self) -> usize {
        self.set.tombstone_count()
    }

    /// Every entry (live and tombstones), in no particular order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = BucketEntry> + '_ {
        let live = self.set.iter().map(|(k, ts)| BucketEntry::live(k, ts));
        let dead = self
            .set
            .tombstones()
            .map(|(k, ts)| BucketEntry::tombstone(k, ts));
        live.chain(dead)
    }

    /// The digest's bucket values at resolution `bits`: folded if the keyspace keeps at
    /// least that resolution, computed from the entries otherwise (a keyspace kept at a
    /// coarse resolution is small). Empty for an empty keyspace.
    pub(crate) fn buckets_at(&self, bits: u8) -> Vec<u64> {
        match self.digest.buckets_at(bits) {
            Some(buckets) if !self.digest.buckets().is_empty() => buckets,
            Some(_) => Vec::new(),
            None => {
                let entries: Vec<BucketEntry> = self.entries().collect();
                KeyspaceDigest::from_entries_at(bits, &entries)
                    .buckets()
                    .to_vec()
            }
        }
    }

    /// The buckets, at resolution `bits`, whose values differ from a peer's `remote` bucket
    /// values at that resolution (ascending; every bucket if `remote` has the wrong length).
    pub(crate) fn differing_buckets(&self, bits: u8, remote: &[u64]) -> Vec<u32> {
        let bits = bits.min(crate::digest::MAX_DIGEST_BITS);
        if !(remote.is_empty() || remote.len() == 1 << bits) {
            return (0..1u32 << bits).collect();
        }
        crate::digest::differing(bits, &self.buckets_at(bits), remote)
    }

    /// The entries of the given buckets at resolution `bits`, sorted by bucket, then key.
    pub(crate) fn bucket_entries(&self, bits: u8, buckets: &[u32]) -> Vec<BucketEntry> {
        let (entries, _) = self.bucket_entries_unsorted(bits, buckets, usize::MAX);
        sorted_by_bucket(entries)
    }

    /// The entries of `buckets` (ascending; any at or above `2^bits` are ignored) at
    /// resolution `bits`, each with its bucket, in bucket order (ids within a bucket
    /// unsorted, for a caller that sorts after releasing the keyspace's lock), and how many
    /// of `buckets`, from the first, they hold whole: all of them, unless more than
    /// `max_entries` entries were collected, where the scan stops at the next bucket.
    ///
    /// The set keeps its ids in the order of the hash that buckets them, so this reads the
    /// buckets' runs of it, not the whole keyspace: the cost is about the entries collected,
    /// plus the recent inserts that share the buckets' shards of the set's delta (see
    /// [`OrSWotSet::visit_hash_ranges`]).
    pub(crate) fn bucket_entries_unsorted(
        &self,
        bits: u8,
        buckets: &[u32],
        max_entries: usize,
    ) -> (Vec<(u32, BucketEntry)>, usize) {
        let bits = bits.min(crate::digest::MAX_DIGEST_BITS);
        let ranges: Vec<_> = buckets
            .iter()
            .filter_map(|b| crate::digest::bucket_hashes(*b, bits))
            .collect();
        let mut entries: Vec<(u32, BucketEntry)> = Vec::new();
        let mut whole = buckets.len();
        self.set.visit_hash_ranges(&ranges, |key, version| {
            let bucket = crate::digest::bucket_at(key, bits);
            if entries.len() > max_entries && entries.last().is_some_and(|(b, _)| *b != bucket) {
                whole = buckets.partition_point(|b| *b < bucket);
                return ControlFlow::Break(());
            }
            let entry = BucketEntry {
                key,
                timestamp: version.timestamp,
                tombstone: version.delete,
            };
            entries.push((bucket, entry));
            ControlFlow::Continue(())
        });
        (entries, whole)
    }
}

/// The most entries one step of [`scan_in_steps`] collects (plus one bucket): a bucket
/// request holds a keyspace's lock for at most about this many entries at a time.
pub(crate) const SCAN_STEP_ENTRIES: usize = 4_096;

/// [`KeyspaceState::bucket_entries_unsorted`] of `buckets` (ascending) with `max_entries`,
/// run as `scan` steps of at most `step_entries` entries each (plus one bucket), each
/// resuming at the first bucket the previous step did not read whole: for a caller that
/// takes the keyspace's lock once per step, so writes wait for one step, not the whole
/// request. Between steps the task yields, so a large request does not hold its thread (on
/// a server, the connection's task, which polls a handler in place first) for the whole
/// scan. Each bucket is read whole within one step; the result, sorted by bucket, then key
/// (after the last step, with no lock held), is what one scan would give if nothing changed
/// between the steps.
pub(crate) async fn scan_in_steps(
    buckets: &[u32],
    max_entries: usize,
    step_entries: usize,
    mut scan: impl FnMut(&[u32], usize) -> (Vec<(u32, BucketEntry)>, usize),
) -> (Vec<BucketEntry>, usize) {
    let mut entries = Vec::new();
    let mut whole = 0;
    while whole < buckets.len() && entries.len() <= max_entries {
        if whole > 0 {
            // (Not before the first step: a small request is answered in one poll.)
            tokio::task::yield_now().await;
        }
        let step = step_entries.min(max_entries - entries.len());
        let (found, read) = scan(&buckets[whole..], step);
        entries.extend(found);
        whole += read;
        if read == 0 {
            break; // only for buckets out of order, which callers never pass
        }
    }
    (sorted_by_bucket(entries), whole)
}

/// The entries of `(bucket, entry)` pairs, sorted by bucket, then key.
fn sorted_by_bucket(mut entries: Vec<(u32, BucketEntry)>) -> Vec<BucketEntry> {
    entries.sort_unstable_by_key(|(b, e)| (*b, e.key));
    entries.into_iter().map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(millis: u64, node: u32) -> HLCTimestamp {
        HLCTimestamp::new(millis, 0, node)
    }

    fn put(key: Key, millis: u64) -> Mutation {
        Mutation::Put {
            key,
            timestamp: ts(millis, 1),
        }
    }

    fn del(key: Key, millis: u64) -> Mutation {
        Mutation::Delete {
            key,
            timestamp: ts(millis, 1),
        }
    }

    #[test]
    fn last_writer_wins_and_a_delete_is_a_write() {
        let mut ks = KeyspaceState::new();
        assert_eq!(ks.apply(put(1, 10)), Outcome::Applied);
        assert_eq!(ks.apply(put(1, 9)), Outcome::Stale);
        assert_eq!(ks.apply(put(1, 10)), Outcome::Stale, "a repeat is stale");
        assert_eq!(ks.apply(del(1, 10)), Outcome::Applied, "delete wins a tie");
        assert_eq!(ks.get(1), Some(BucketEntry::tombstone(1, ts(10, 1))));
        assert_eq!(ks.apply(put(1, 10)), Outcome::Stale);
        assert_eq!(ks.apply(put(1, 11)), Outcome::Applied);
        assert_eq!(ks.tombstone_count(), 0);
        assert_eq!(ks.len(), 1);
    }

    #[test]
    fn deleting_a_missing_id_leaves_a_tombstone_that_beats_older_puts() {
        let mut ks = KeyspaceState::new();
        assert_eq!(ks.apply(del(7, 5)), Outcome::Applied);
        assert_eq!(ks.apply(put(7, 4)), Outcome::Stale);
        assert!(ks.is_empty());
        assert_eq!(ks.tombstone_count(), 1);
    }

    #[test]
    fn will_apply_matches_apply() {
        let mut ks = KeyspaceState::new();
        for m in [
            put(1, 5),
            del(1, 5),
            put(1, 5),
            del(1, 4),
            del(2, 1),
            put(2, 1),
        ] {
            let predicted = ks.will_apply(&m);
            assert_eq!(predicted, ks.apply(m) == Outcome::Applied, "{m:?}");
        }
    }

    #[test]
    fn from_metadata_rebuilds_the_same_state() {
        let mut ks = KeyspaceState::new();
        for m in [put(1, 5), put(2, 6), del(2, 7), del(3, 8)] {
            ks.apply(m);
        }
        let metadata: Vec<Metadata> = ks
            .entries()
            .map(|e| (e.key, e.timestamp, e.tombstone))
            .collect();
        let rebuilt = KeyspaceState::from_metadata(metadata);
        assert_eq!(rebuilt.digest(), ks.digest());
        assert_eq!(rebuilt.get(2), ks.get(2));
    }

    #[test]
    fn purged_deletes_never_resurrect() {
        let mut ks = KeyspaceState::new();
        for m in [
            put(1, 1),
            put(2, 2),
            del(1, 3),
            del(3, 4),
            put(4, 10),
            del(5, 20),
        ] {
            ks.apply(m);
        }
        let before = ks.digest().clone();
        let purged = ks.purge_tombstones(ts(5, 0));
        assert_eq!(
            purged,
            vec![
                BucketEntry::tombstone(1, ts(3, 1)),
                BucketEntry::tombstone(3, ts(4, 1))
            ]
        );
        assert_ne!(ks.digest(), &before);
        assert_eq!(ks.tombstone_count(), 1, "the newer tombstone stays");
        assert_eq!(ks.get(5), Some(BucketEntry::tombstone(5, ts(20, 1))));
        assert_eq!(ks.len(), 2);
        let rebuilt: Vec<_> = ks.entries().collect();
        assert_eq!(ks.digest(), &KeyspaceDigest::from_entries(&rebuilt));

        // Older writes of purged ids are refused; newer ones apply.
        assert_eq!(ks.apply(put(1, 2)), Outcome::Stale);
        assert_eq!(ks.apply(put(3, 4)), Outcome::Stale);
        assert!(!ks.will_apply(&put(3, 4)));
        assert_eq!(ks.apply(put(3, 5)), Outcome::Applied);
        assert_eq!(ks.apply(del(5, 19)), Outcome::Stale);

        // Forgetting obsolete copies raises the watermark and leaves no tombstone.
        assert_eq!(
            ks.forget_below(ts(15, 1), &[4, 5]),
            vec![put(4, 10).entry()]
        );
        assert_eq!(ks.get(4), None);
        assert_eq!(
            ks.get(5),
            Some(BucketEntry::tombstone(5, ts(20, 1))),
            "above it: kept"
        );
        assert_eq!(ks.apply(put(4, 10)), Outcome::Stale);
        assert_eq!(ks.purge_watermark(), Some(ts(15, 1)));
    }

    #[test]
    fn purge_needs_nothing_newer_and_restores_a_watermark() {
        let mut ks = KeyspaceState::new();
        ks.apply(put(1, 1));
        ks.apply(del(1, 2));
        assert_eq!(
            ks.purge_tombstones(ts(100, 0)),
            vec![BucketEntry::tombstone(1, ts(2, 1))]
        );
        assert_eq!(ks.purge_watermark(), Some(ts(2, 1)));
        assert_eq!(ks.apply(put(1, 2)), Outcome::Stale);
        assert_eq!(ks.digest(), &KeyspaceDigest::from_entries(&[]));

        // A restarted replica rebuilt from storage (the tombstone is gone) plus the persisted
        // watermark refuses the same stale write.
        let mut restarted = KeyspaceState::from_metadata(Vec::new());
        assert_eq!(
            restarted.apply(put(1, 2)),
            Outcome::Applied,
            "without it, the stale write wins"
        );
        let mut restarted = KeyspaceState::from_metadata(Vec::new());
        restarted.raise_purge_watermark(ts(2, 1));
        assert!(!restarted.will_apply(&put(1, 2)));
        assert_eq!(restarted.apply(put(1, 2)), Outcome::Stale);
        assert_eq!(restarted.apply(put(1, 3)), Outcome::Applied);
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        (0u64..20, 0u64..30, 0u32..3, any::<bool>()).prop_map(|(key, millis, node, delete)| {
            let timestamp = ts(millis, node);
            if delete {
                Mutation::Delete { key, timestamp }
            } else {
                Mutation::Put { key, timestamp }
            }
        })
    }

    proptest! {
        /// Replicas that apply the same mutations in any order converge, digests included.
        #[test]
        fn replicas_converge_in_any_order(
            mutations in prop::collection::vec(mutation(), 0..60),
        ) {
            let mut forward = KeyspaceState::new();
            let mut backward = KeyspaceState::new();
            for m in &mutations {
                forward.apply(*m);
            }
            for m in mutations.iter().rev() {
                backward.apply(*m);
            }
            prop_assert_eq!(forward.digest(), backward.digest());
            let mut a: Vec<_> = forward.entries().collect();
            let mut b: Vec<_> = backward.entries().collect();
            a.sort();
            b.sort();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(forward.digest(), &KeyspaceDigest::from_entries(&a));
        }
    }

    /// A scan of more than one step gives its thread up between steps (on a server, the
    /// connection's task, which polls a handler in place first: the rest of the scan then
    /// runs in a task of its own while the connection serves other calls); one that fits in
    /// a step is done in one poll.
    #[test]
    fn a_scan_of_several_steps_yields_between_them() {
        use futures::FutureExt;

        let mut ks = KeyspaceState::new();
        for key in 0..2_000 {
            ks.apply(put(key, 1));
        }
        let bits = 6;
        let all: Vec<u32> = (0..64).collect();
        let scan = |step: usize| {
            scan_in_steps(&all, usize::MAX, step, |rest, step| {
                ks.bucket_entries_unsorted(bits, rest, step)
            })
        };
        let (entries, whole) = scan(10_000).now_or_never().expect("one step, one poll");
        assert_eq!((entries.len(), whole), (2_000, 64));
        let mut stepped = std::pin::pin!(scan(100));
        assert!(
            (&mut stepped).now_or_never().is_none(),
            "a scan of about twenty steps took one poll"
        );
    }

    #[test]
    fn an_older_delete_is_stale_after_a_put() {
        let mut ks = KeyspaceState::new();
        let put = Mutation::Put {
            key: 1,
            timestamp: HLCTimestamp::new(10, 0, 1),
        };
        let older_delete = Mutation::Delete {
            key: 1,
            timestamp: HLCTimestamp::new(9, 0, 2),
        };
        assert_eq!(ks.apply(put), Outcome::Applied);
        assert_eq!(ks.apply(older_delete), Outcome::Stale);
        assert_eq!(ks.get(1), Some(put.entry()));
    }
}
