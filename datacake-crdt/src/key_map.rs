//! A compact map from key hashes ([`key_hash`](crate::key_hash)) to timestamps, in hash
//! order: the live entries and the tombstones of an [`OrSWotSet`](crate::OrSWotSet), which
//! hashes each key once at its boundary.
//!
//! A hash map of `(u64, HLCTimestamp)` costs 36-50 bytes per key at a million keys (buckets
//! are a power of two, load at most 7/8, plus control bytes). This map keeps the bulk of the
//! entries in two parallel vectors of exact capacity (8 + 16 = 24 bytes per key), the
//! *base*, sorted by the keys' hashes, and only recent inserts of new keys in a small
//! [`Delta`] of hash maps sharded by hash. Both are keyed by the hash (which is invertible,
//! so the key is not stored), so the entries of a range of hashes are one run of the base plus the
//! delta's entries in the shards the range overlaps. When the delta outgrows a sixteenth of
//! the base, it is merged into the base in one linear pass, so an insert costs amortised
//! O(1) moves. A lookup binary-searches the base, then probes the delta; updates of existing
//! keys happen in place; removal from the base leaves a vacant slot that the next
//! compaction drops.

use std::ops::RangeInclusive;

use crate::delta::Delta;
use crate::timestamp::HLCTimestamp;

/// The delta is compacted into the base once it holds more than this many entries and more
/// than a sixteenth of the base (vacant slots likewise).
const MIN_DELTA: usize = 1024;
const DELTA_SHIFT: u32 = 4;

/// Sorted base plus sharded delta; see the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyMap {
    /// The base's key hashes, sorted and unique.
    hashes: Vec<u64>,
    /// `stamps[i]` belongs to `hashes[i]`; [`HLCTimestamp::VACANT`] marks a
    /// removed entry.
    stamps: Vec<HLCTimestamp>,
    /// How many base slots are vacant.
    vacant: usize,
    /// Recently inserted hashes that are not in the base.
    delta: Delta,
}

impl KeyMap {
    /// A map of hashes, already sorted and unique, and their stamps (none vacant).
    pub(crate) fn from_sorted_hashes(hashes: Vec<u64>, stamps: Vec<HLCTimestamp>) -> Self {
        debug_assert_eq!(hashes.len(), stamps.len());
        debug_assert!(hashes.windows(2).all(|w| w[0] < w[1]));
        let mut map = Self {
            hashes,
            stamps,
            vacant: 0,
            delta: Delta::default(),
        };
        map.delta = Delta::for_capacity(map.delta_limit());
        map
    }

    /// A map of unique hashes and their stamps, in any order.
    #[cfg(any(test, feature = "rkyv"))]
    pub(crate) fn from_entries(entries: impl IntoIterator<Item = (u64, HLCTimestamp)>) -> Self {
        let mut entries: Vec<(u64, HLCTimestamp)> = entries.into_iter().collect();
        entries.sort_unstable_by_key(|(hash, _)| *hash);
        let (hashes, stamps) = entries.into_iter().unzip();
        Self::from_sorted_hashes(hashes, stamps)
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.hashes.len() - self.vacant + self.delta.len()
    }

    /// The most entries the delta (or vacant base slots) may hold before a compaction.
    fn delta_limit(&self) -> usize {
        MIN_DELTA.max(self.hashes.len() >> DELTA_SHIFT)
    }

    /// The base slot of `hash`, vacant or not.
    fn base_index(&self, hash: u64) -> Option<usize> {
        self.hashes.binary_search(&hash).ok()
    }

    /// The stamp of `hash`.
    pub(crate) fn get(&self, hash: u64) -> Option<&HLCTimestamp> {
        // A hash with a base slot, vacant or not, is never in the delta (`insert` refills
        // the slot), so one of the two lookups answers.
        match self.base_index(hash) {
            Some(i) => self.stamps.get(i).filter(|ts| **ts != HLCTimestamp::VACANT),
            None => self.delta.get(hash),
        }
    }

    /// Whether `hash` is present.
    pub(crate) fn contains(&self, hash: u64) -> bool {
        self.get(hash).is_some()
    }

    /// Sets the stamp of `hash`, adding it if it is absent.
    pub(crate) fn insert(&mut self, hash: u64, ts: HLCTimestamp) {
        if let Some(slot) = self.base_index(hash).and_then(|i| self.stamps.get_mut(i)) {
            if *slot == HLCTimestamp::VACANT {
                self.vacant -= 1;
            }
            *slot = ts;
            return;
        }
        if self.delta.insert(hash, ts).is_none() && self.delta.len() > self.delta_limit() {
            self.compact();
        }
    }

    /// Removes `hash`, returning its stamp.
    pub(crate) fn remove(&mut self, hash: u64) -> Option<HLCTimestamp> {
        let Some(i) = self.base_index(hash) else {
            return self.delta.remove(hash);
        };
        let ts = self.vacate(i)?;
        if self.vacant > self.delta_limit() {
            self.compact();
        }
        Some(ts)
    }

    /// Marks base slot `i` vacant, returning the stamp it held.
    fn vacate(&mut self, i: usize) -> Option<HLCTimestamp> {
        let slot = self.stamps.get_mut(i)?;
        if *slot == HLCTimestamp::VACANT {
            return None;
        }
        self.vacant += 1;
        Some(std::mem::replace(slot, HLCTimestamp::VACANT))
    }

    /// Keeps only the entries for which `keep(hash, stamp)` holds.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64, HLCTimestamp) -> bool) {
        self.delta.retain(&mut keep);
        for i in 0..self.hashes.len() {
            let ts = self.stamps[i];
            if ts != HLCTimestamp::VACANT && !keep(self.hashes[i], ts) {
                self.vacate(i);
            }
        }
        if self.vacant > self.delta_limit() {
            self.compact();
        }
    }

    /// Every entry as `(hash, stamp)`, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &HLCTimestamp)> + '_ {
        self.hashes
            .iter()
            .zip(&self.stamps)
            .filter(|(_, ts)| **ts != HLCTimestamp::VACANT)
            .chain(self.delta.iter())
            .map(|(hash, ts)| (*hash, ts))
    }

    /// The entries whose key hash lies in `hashes`, as `(hash, stamp)` in hash order. Lazy:
    /// a caller that stops early has read the base and the delta's shards only that far.
    pub(crate) fn range(
        &self,
        hashes: RangeInclusive<u64>,
    ) -> impl Iterator<Item = (u64, HLCTimestamp)> + '_ {
        self.delta.pieces(hashes).flat_map(move |piece| {
            let delta = self.delta.sorted_in(&piece);
            merge_by_hash(self.base_range(&piece), delta.into_iter())
        })
    }

    /// The base's entries whose key hash lies in `hashes`, as `(hash, stamp)` in hash order.
    fn base_range(
        &self,
        hashes: &RangeInclusive<u64>,
    ) -> impl Iterator<Item = (u64, HLCTimestamp)> + '_ {
        let start = self.hashes.partition_point(|h| h < hashes.start());
        let end = self
            .hashes
            .partition_point(|h| h <= hashes.end())
            .max(start);
        self.hashes[start..end]
            .iter()
            .zip(&self.stamps[start..end])
            .filter(|(_, ts)| **ts != HLCTimestamp::VACANT)
            .map(|(hash, ts)| (*hash, *ts))
    }

    /// Moves the delta into the base and drops vacant slots, leaving the base with exactly
    /// the capacity it needs and the delta sharded for what it may take before the next
    /// compaction.
    pub(crate) fn compact(&mut self) {
        if self.delta.is_empty() && self.vacant == 0 {
            return;
        }
        let len = self.len();
        let mut hashes = Vec::with_capacity(len);
        let mut stamps = Vec::with_capacity(len);
        let mut base = self
            .hashes
            .iter()
            .zip(&self.stamps)
            .filter(|(_, ts)| **ts != HLCTimestamp::VACANT)
            .peekable();
        // The delta is small: each of its entries goes in after the base entries below it.
        for (hash, ts) in self.delta.drain_sorted() {
            while let Some((bh, bts)) = base.next_if(|(bh, _)| **bh < hash) {
                hashes.push(*bh);
                stamps.push(*bts);
            }
            hashes.push(hash);
            stamps.push(ts);
        }
        for (bh, bts) in base {
            hashes.push(*bh);
            stamps.push(*bts);
        }
        self.hashes = hashes;
        self.stamps = stamps;
        self.vacant = 0;
        self.delta = Delta::for_capacity(self.delta_limit());
    }

    /// The sorted hashes and their stamps, after [`compact`](Self::compact) (which
    /// this calls).
    pub(crate) fn sorted_hashes(&mut self) -> (&[u64], &[HLCTimestamp]) {
        self.compact();
        (&self.hashes, &self.stamps)
    }
}

impl PartialEq for KeyMap {
    /// The same entries, however they are split between base and delta.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(key, ts)| other.get(key) == Some(ts))
    }
}

impl Eq for KeyMap {}

/// Two streams of `(hash, value)`, each in hash order with no hash in both, as one stream in
/// hash order.
pub(crate) fn merge_by_hash<T>(
    a: impl Iterator<Item = (u64, T)>,
    b: impl Iterator<Item = (u64, T)>,
) -> impl Iterator<Item = (u64, T)> {
    let mut a = a.peekable();
    let mut b = b.peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some((ha, _)), Some((hb, _))) if hb < ha => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::key_hash::key_hash;

    fn ts(millis: u64) -> HLCTimestamp {
        HLCTimestamp::new(millis, 0, 0)
    }

    fn check(map: &KeyMap, model: &BTreeMap<u64, HLCTimestamp>) {
        assert_eq!(map.len(), model.len());
        let mut entries: Vec<_> = map.iter().map(|(k, t)| (k, *t)).collect();
        entries.sort_unstable();
        let expected: Vec<_> = model.iter().map(|(k, t)| (*k, *t)).collect();
        assert_eq!(entries, expected);
        for (k, t) in model {
            assert_eq!(map.get(*k), Some(t));
        }
    }

    /// A deterministic pseudo-random walk (xorshift from `seed`) of `steps` inserts and
    /// removals (one in `remove_one_in`) over the hashes of keys `0..keys`, applied to `map`
    /// and `model` alike and checked by `get` after each step; `after` then runs with the
    /// step's number and hash.
    fn walk(
        map: &mut KeyMap,
        model: &mut BTreeMap<u64, HLCTimestamp>,
        seed: u64,
        steps: u64,
        keys: u64,
        remove_one_in: u64,
        mut after: impl FnMut(&KeyMap, &BTreeMap<u64, HLCTimestamp>, u64, u64),
    ) {
        let mut x = seed;
        for step in 0..steps {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = key_hash(x % keys);
            if x.is_multiple_of(remove_one_in) {
                assert_eq!(map.remove(key), model.remove(&key));
            } else {
                map.insert(key, ts(step));
                model.insert(key, ts(step));
            }
            assert_eq!(map.get(key), model.get(&key));
            after(map, model, step, key);
        }
    }

    #[test]
    fn behaves_like_a_map_across_compactions() {
        let mut map = KeyMap::default();
        let mut model = BTreeMap::new();
        // A key space small enough to hit updates, removals of base and delta entries, and
        // re-inserts into vacant slots.
        walk(
            &mut map,
            &mut model,
            0x1234_5678,
            40_000,
            6_000,
            5,
            |map, model, _, key| {
                assert_eq!(map.contains(key), model.contains_key(&key));
            },
        );
        check(&map, &model);
        map.retain(|key, _| key % 3 != 0);
        model.retain(|key, _| key % 3 != 0);
        check(&map, &model);
        map.compact();
        assert_eq!(map.vacant, 0);
        assert!(map.delta.is_empty());
        assert_eq!(map.hashes.capacity(), map.hashes.len());
        check(&map, &model);
        let (hashes, stamps) = map.sorted_hashes();
        assert!(hashes.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(hashes.len(), stamps.len());
    }

    #[test]
    fn a_large_map_with_a_sharded_delta_behaves_like_a_map() {
        // 50,000 keys in the base: a delta of up to 3,125 entries in 4 shards, refilled and
        // resharded by the compactions the walk triggers.
        let mut model: BTreeMap<u64, HLCTimestamp> =
            (0..50_000).map(|k| (key_hash(k), ts(k))).collect();
        let mut map = KeyMap::from_entries(model.iter().map(|(h, t)| (*h, *t)));
        walk(
            &mut map,
            &mut model,
            0x9E37_79B9,
            30_000,
            70_000,
            3,
            |map, model, step, key| {
                if step % 5_000 == 0 {
                    let range = key..=key.saturating_add(u64::MAX / 3);
                    let expected: Vec<(u64, HLCTimestamp)> =
                        model.range(range.clone()).map(|(h, t)| (*h, *t)).collect();
                    assert_eq!(map.range(range).collect::<Vec<_>>(), expected);
                }
            },
        );
        check(&map, &model);
        map.retain(|key, _| key % 7 != 0);
        model.retain(|key, _| key % 7 != 0);
        check(&map, &model);
    }

    #[test]
    fn absent_keys_and_vacant_slots_are_not_found() {
        let mut map = KeyMap::from_entries([(9, ts(9)), (1, ts(1)), (5, ts(5))]);
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(4), None);
        assert_eq!(map.remove(5), Some(ts(5)));
        assert_eq!(map.remove(5), None);
        assert_eq!(map.get(5), None);
        assert_eq!(map.len(), 2);
        map.insert(5, ts(50));
        assert_eq!(map.get(5), Some(&ts(50)));
        assert_eq!(map.len(), 3);
        map.insert(7, ts(7));
        assert_eq!(map.len(), 4);
        assert_eq!(map.remove(7), Some(ts(7)));
        assert_eq!(map.remove(100), None);
    }

    #[test]
    fn a_hash_range_is_a_run_of_the_base_and_the_delta_entries_in_it() {
        // A base of 100,000 keys: the delta is sharded (8 shards for its 6,250 entries).
        let mut map = KeyMap::from_entries((0..100_000).map(|k| (key_hash(k), ts(k))));
        assert_eq!(map.remove(key_hash(7)), Some(ts(7)));
        for k in 200_000..203_000 {
            map.insert(key_hash(k), ts(k));
        }
        assert_eq!(map.delta.len(), 3_000);
        assert_eq!(map.delta.pieces(0..=u64::MAX).count(), 8);
        let held = |k: &u64| *k != 7;
        let expect = |range: &RangeInclusive<u64>| {
            let mut expected: Vec<(u64, HLCTimestamp)> = (0..100_000)
                .chain(200_000..203_000)
                .filter(|k| held(k) && range.contains(&key_hash(*k)))
                .map(|k| (key_hash(k), ts(k)))
                .collect();
            expected.sort_unstable();
            expected
        };
        let narrow = key_hash(7)..=key_hash(7).saturating_add(u64::MAX / 64);
        // From inside the first shard to inside the fourth.
        let wide = u64::MAX / 16..=u64::MAX / 16 * 7;
        for range in [narrow, wide, 0..=u64::MAX] {
            let expected = expect(&range);
            assert!(expected.len() > 1_000, "about a 64th of the keys at least");
            assert!(
                expected.iter().any(|(h, _)| map.delta.get(*h).is_some()),
                "and some of the delta"
            );
            assert_eq!(map.range(range).collect::<Vec<_>>(), expected);
        }
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 5..=4;
        assert_eq!(map.range(empty).count(), 0);
    }

    #[test]
    fn maps_with_the_same_entries_are_equal_however_they_are_stored() {
        let mut a = KeyMap::from_entries((0..3_000).map(|k| (k, ts(k))));
        let mut b = KeyMap::default();
        for k in (0..3_000).rev() {
            b.insert(k, ts(k));
        }
        assert_eq!(a, b);
        b.insert(1, ts(2));
        assert_ne!(a, b);
        a.insert(1, ts(2));
        a.compact();
        assert_eq!(a, b);
    }
}
