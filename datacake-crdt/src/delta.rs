//! [`Delta`]: the recent inserts of a [`KeyMap`](crate::key_map::KeyMap), in hash maps
//! sharded by key hash.
//!
//! A lookup is one hash-map probe. The shards split the hash space into equal, ordered
//! spans (by the hash's top bits), so the entries of a range of hashes are found by reading
//! only the shards the range overlaps, and a shard holds about [`SHARD_ENTRIES`] entries at
//! most: reading a short range costs about that many entries, however large the delta.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::RangeInclusive;

use crate::key_hash::{hash_prefix, hash_prefix_range};
use crate::timestamp::HLCTimestamp;

/// About the most entries a shard holds once the delta is full: the shard count is chosen
/// at each compaction from the most entries the delta may then take.
pub(crate) const SHARD_ENTRIES: usize = 1024;

/// Spreads the hashes of one shard, which share their top bits, over a hash map's slots and
/// control bytes (which use the low and the top bits).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, hash: u64) {
        // Key hashes are already well mixed: a rotation brings varying bits to the top.
        self.0 = hash.rotate_left(32);
    }
}

type Shard = HashMap<u64, HLCTimestamp, BuildHasherDefault<Spread>>;

/// Entries by key hash, in shards by the hash's top bits; see the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Delta {
    /// A power of two of shards (none until the first insert); shard `i` holds the hashes
    /// whose top `log2(shards.len())` bits are `i`.
    shards: Vec<Shard>,
    len: usize,
}

impl Delta {
    /// An empty delta sharded for up to about `capacity` entries.
    pub(crate) fn for_capacity(capacity: usize) -> Self {
        let shards = capacity.div_ceil(SHARD_ENTRIES).max(1).next_power_of_two();
        Self {
            shards: vec![Shard::default(); shards],
            len: 0,
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many top bits of a hash name its shard.
    fn bits(&self) -> u8 {
        self.shards.len().max(1).trailing_zeros() as u8
    }

    /// The shard of `hash`.
    fn shard_of(&self, hash: u64) -> usize {
        hash_prefix(hash, self.bits()) as usize
    }

    /// The hashes shard `i` (below the shard count) holds.
    fn span(&self, i: usize) -> RangeInclusive<u64> {
        hash_prefix_range(i as u32, self.bits()).expect("a shard index is below the shard count")
    }

    /// The stamp held for `hash`.
    pub(crate) fn get(&self, hash: u64) -> Option<&HLCTimestamp> {
        self.shards.get(self.shard_of(hash))?.get(&hash)
    }

    /// Sets the stamp of `hash`; returns the stamp it replaced.
    pub(crate) fn insert(&mut self, hash: u64, ts: HLCTimestamp) -> Option<HLCTimestamp> {
        if self.shards.is_empty() {
            self.shards.push(Shard::default());
        }
        let shard = self.shard_of(hash);
        let old = self.shards[shard].insert(hash, ts);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `hash`, returning its stamp.
    pub(crate) fn remove(&mut self, hash: u64) -> Option<HLCTimestamp> {
        let shard = self.shard_of(hash);
        let old = self.shards.get_mut(shard)?.remove(&hash);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Keeps only the entries for which `keep(hash, stamp)` holds.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64, HLCTimestamp) -> bool) {
        for shard in &mut self.shards {
            shard.retain(|hash, ts| keep(*hash, *ts));
        }
        self.len = self.shards.iter().map(Shard::len).sum();
    }

    /// Every entry as `(hash, stamp)`, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u64, &HLCTimestamp)> + '_ {
        self.shards.iter().flatten()
    }

    /// `hashes` cut at the shards' boundaries: pieces that each lie in one shard, in order.
    pub(crate) fn pieces(
        &self,
        hashes: RangeInclusive<u64>,
    ) -> impl Iterator<Item = RangeInclusive<u64>> + '_ {
        // An empty range overlaps no shard.
        let (first, last) = (self.shard_of(*hashes.start()), self.shard_of(*hashes.end()));
        let shards = if hashes.is_empty() {
            0..0
        } else {
            first..last + 1
        };
        shards.map(move |i| {
            let span = self.span(i);
            *span.start().max(hashes.start())..=*span.end().min(hashes.end())
        })
    }

    /// The entries of `piece` (a range within one shard, from [`pieces`](Self::pieces)) as
    /// `(hash, stamp)`, sorted by hash: a scan of that shard only.
    pub(crate) fn sorted_in(&self, piece: &RangeInclusive<u64>) -> Vec<(u64, HLCTimestamp)> {
        let Some(shard) = self.shards.get(self.shard_of(*piece.start())) else {
            return Vec::new();
        };
        let mut entries: Vec<(u64, HLCTimestamp)> = shard
            .iter()
            .filter(|(hash, _)| piece.contains(hash))
            .map(|(hash, ts)| (*hash, *ts))
            .collect();
        entries.sort_unstable_by_key(|(hash, _)| *hash);
        entries
    }

    /// Every entry, sorted by hash, leaving the delta empty (with its shards).
    pub(crate) fn drain_sorted(&mut self) -> Vec<(u64, HLCTimestamp)> {
        let mut entries = Vec::with_capacity(self.len);
        // Shards cover the hash space in order: sorting each in turn sorts the whole.
        for shard in &mut self.shards {
            let start = entries.len();
            entries.extend(shard.drain());
            entries[start..].sort_unstable_by_key(|(hash, _)| *hash);
        }
        self.len = 0;
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_hash::key_hash;

    fn ts(millis: u64) -> HLCTimestamp {
        HLCTimestamp::new(millis, 0, 0)
    }

    #[test]
    fn pieces_cut_a_range_at_the_shard_boundaries() {
        let delta = Delta::for_capacity(4 * SHARD_ENTRIES);
        assert_eq!(delta.shards.len(), 4);
        let quarter = 1u64 << 62;
        let pieces: Vec<_> = delta.pieces(5..=quarter + 7).collect();
        assert_eq!(pieces, vec![5..=quarter - 1, quarter..=quarter + 7]);
        let pieces: Vec<_> = delta.pieces(0..=u64::MAX).collect();
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces[3], 3 * quarter..=u64::MAX);
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 9..=8;
        assert_eq!(delta.pieces(empty).count(), 0);
        let unsharded = Delta::default();
        assert_eq!(unsharded.pieces(3..=9).collect::<Vec<_>>(), vec![3..=9]);
    }

    #[test]
    fn entries_land_in_their_shard_and_come_back_sorted() {
        let mut delta = Delta::for_capacity(8 * SHARD_ENTRIES);
        for k in 0..5_000 {
            assert_eq!(delta.insert(key_hash(k), ts(k)), None);
        }
        assert_eq!(delta.insert(key_hash(7), ts(70)), Some(ts(7)));
        assert_eq!(delta.remove(key_hash(8)), Some(ts(8)));
        assert_eq!(delta.remove(key_hash(8)), None);
        assert_eq!(delta.len(), 4_999);
        for (i, shard) in delta.shards.iter().enumerate() {
            assert!(shard.keys().all(|h| delta.span(i).contains(h)));
        }
        let piece = delta.pieces(0..=u64::MAX).nth(2).expect("a third shard");
        let sorted = delta.sorted_in(&piece);
        assert!(!sorted.is_empty() && sorted.is_sorted());
        assert!(sorted.iter().all(|(h, _)| piece.contains(h)));
        delta.retain(|_, ts| ts.millis() % 2 == 0);
        assert_eq!(delta.len(), delta.iter().count());
        let all = delta.drain_sorted();
        assert!(all.is_sorted() && delta.is_empty() && delta.iter().next().is_none());
        assert_eq!(all.len(), 2_500);
    }
}
