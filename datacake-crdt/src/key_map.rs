//! A compact map from `u64` keys to timestamps: the live entries of an
//! [`OrSWotSet`](crate::OrSWotSet).
//!
//! A hash map of `(u64, HLCTimestamp)` costs 36-50 bytes per key at a million keys (buckets
//! are a power of two, load at most 7/8, plus control bytes). This map keeps the bulk of the
//! entries in two sorted parallel vectors of exact capacity (8 + 16 = 24 bytes per key) and
//! only recent inserts of new keys in a small hash map, the *delta*. When the delta outgrows
//! a sixteenth of the sorted base, it is sorted and merged into the base in one linear pass,
//! so an insert costs amortised O(1) moves. Lookups check the delta, then binary-search the
//! base; updates of existing keys happen in place; removal from the base leaves a vacant slot
//! that the next compaction drops.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::timestamp::HLCTimestamp;

/// The delta is compacted into the base once it holds more than this many entries and more
/// than a sixteenth of the base.
const MIN_DELTA: usize = 1024;
const DELTA_SHIFT: u32 = 4;

/// A fast hasher for `u64` keys (a multiply-xorshift mix). Not DoS resistant: keys are chosen
/// by the application, and a collision attack costs lookups, never correctness.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let mut x = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        self.0 = x;
    }
}

/// A `HashMap` keyed by `u64` with [`KeyHasher`].
pub(crate) type KeyHashMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// Sorted base plus hash delta; see the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyMap {
    /// Sorted, unique keys of the base.
    keys: Vec<u64>,
    /// `stamps[i]` belongs to `keys[i]`; [`HLCTimestamp::VACANT`] marks a removed entry.
    stamps: Vec<HLCTimestamp>,
    /// How many base slots are vacant.
    vacant: usize,
    /// Recently inserted keys that are not in the base.
    delta: KeyHashMap<HLCTimestamp>,
}

impl KeyMap {
    /// A map of already sorted, unique keys and their stamps (none vacant).
    pub(crate) fn from_sorted(keys: Vec<u64>, stamps: Vec<HLCTimestamp>) -> Self {
        debug_assert_eq!(keys.len(), stamps.len());
        debug_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        Self {
            keys,
            stamps,
            vacant: 0,
            delta: KeyHashMap::default(),
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.keys.len() - self.vacant + self.delta.len()
    }

    fn base_index(&self, key: u64) -> Option<usize> {
        self.keys.binary_search(&key).ok()
    }

    /// The stamp of `key`.
    pub(crate) fn get(&self, key: u64) -> Option<&HLCTimestamp> {
        if let Some(ts) = self.delta.get(&key) {
            return Some(ts);
        }
        let stamp = self.stamps.get(self.base_index(key)?)?;
        (*stamp != HLCTimestamp::VACANT).then_some(stamp)
    }

    /// Sets the stamp of `key`, adding the key if it is absent.
    pub(crate) fn insert(&mut self, key: u64, ts: HLCTimestamp) {
        if let Some(slot) = self.delta.get_mut(&key) {
            *slot = ts;
            return;
        }
        if let Some(i) = self.base_index(key) {
            if let Some(slot) = self.stamps.get_mut(i) {
                if *slot == HLCTimestamp::VACANT {
                    self.vacant -= 1;
                }
                *slot = ts;
                return;
            }
        }
        self.delta.insert(key, ts);
        if self.delta.len() > MIN_DELTA.max(self.keys.len() >> DELTA_SHIFT) {
            self.compact();
        }
    }

    /// Removes `key`, returning its stamp.
    pub(crate) fn remove(&mut self, key: u64) -> Option<HLCTimestamp> {
        if let Some(ts) = self.delta.remove(&key) {
            return Some(ts);
        }
        let i = self.base_index(key)?;
        let slot = self.stamps.get_mut(i)?;
        if *slot == HLCTimestamp::VACANT {
            return None;
        }
        let ts = std::mem::replace(slot, HLCTimestamp::VACANT);
        self.vacant += 1;
        if self.vacant > MIN_DELTA.max(self.keys.len() >> DELTA_SHIFT) {
            self.compact();
        }
        Some(ts)
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &HLCTimestamp)> + '_ {
        self.keys
            .iter()
            .zip(&self.stamps)
            .filter(|(_, ts)| **ts != HLCTimestamp::VACANT)
            .map(|(k, ts)| (*k, ts))
            .chain(self.delta.iter().map(|(k, ts)| (*k, ts)))
    }

    /// Moves the delta into the base and drops vacant slots, leaving the base with exactly
    /// the capacity it needs.
    pub(crate) fn compact(&mut self) {
        if self.delta.is_empty() && self.vacant == 0 {
            return;
        }
        let len = self.len();
        let mut delta: Vec<(u64, HLCTimestamp)> = self.delta.drain().collect();
        delta.sort_unstable_by_key(|(k, _)| *k);
        let mut keys = Vec::with_capacity(len);
        let mut stamps = Vec::with_capacity(len);
        let mut base = self
            .keys
            .iter()
            .zip(&self.stamps)
            .filter(|(_, ts)| **ts != HLCTimestamp::VACANT)
            .peekable();
        for (k, ts) in delta {
            while let Some((bk, bts)) = base.next_if(|(bk, _)| **bk < k) {
                keys.push(*bk);
                stamps.push(*bts);
            }
            keys.push(k);
            stamps.push(ts);
        }
        for (bk, bts) in base {
            keys.push(*bk);
            stamps.push(*bts);
        }
        self.keys = keys;
        self.stamps = stamps;
        self.vacant = 0;
        if self.delta.capacity() > 4 * MIN_DELTA.max(self.keys.len() >> DELTA_SHIFT) {
            self.delta = KeyHashMap::default();
        }
    }

    /// The sorted keys and stamps, after [`compact`](Self::compact) (which this calls).
    pub(crate) fn sorted(&mut self) -> (&[u64], &[HLCTimestamp]) {
        self.compact();
        (&self.keys, &self.stamps)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

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

    #[test]
    fn behaves_like_a_map_across_compactions() {
        let mut map = KeyMap::default();
        let mut model = BTreeMap::new();
        // A deterministic pseudo-random walk over a key space small enough to hit updates,
        // removals of base and delta entries, and re-inserts into vacant slots.
        let mut x = 0x1234_5678_u64;
        for step in 0..40_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 6_000;
            if x.is_multiple_of(5) {
                assert_eq!(map.remove(key), model.remove(&key));
            } else {
                map.insert(key, ts(step));
                model.insert(key, ts(step));
            }
            assert_eq!(map.get(key), model.get(&key));
        }
        check(&map, &model);
        map.compact();
        assert_eq!(map.vacant, 0);
        assert!(map.delta.is_empty());
        assert_eq!(map.keys.capacity(), map.keys.len());
        check(&map, &model);
        let (keys, stamps) = map.sorted();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(keys.len(), stamps.len());
    }

    #[test]
    fn absent_keys_and_vacant_slots_are_not_found() {
        let mut map = KeyMap::from_sorted(vec![1, 5, 9], vec![ts(1), ts(5), ts(9)]);
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
    fn hasher_spreads_keys() {
        let hash = |k: u64| {
            let mut h = KeyHasher::default();
            h.write_u64(k);
            h.finish()
        };
        assert_ne!(hash(1), hash(2));
        assert_ne!(hash(1 << 40), hash(2 << 40));
        let mut h = KeyHasher::default();
        h.write(&[1, 2]);
        assert_ne!(h.finish(), 0);
    }
}
