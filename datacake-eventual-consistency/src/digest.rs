//! Bucketed keyspace digests for anti-entropy: [`KeyspaceDigest`].
//!
//! A keyspace's ids are split into buckets by the top bits of a hash of the id. A bucket's
//! digest is the wrapping sum of [`entry_hash`] over its entries (documents and tombstones):
//! order-independent and invertible, so a write updates it in O(1) (subtract the old entry's
//! hash, add the new one). Two replicas holding the same entries in a bucket have the same
//! bucket digest; comparing the digests of two replicas names the buckets whose entries must
//! be exchanged.
//!
//! **Resolution follows size.** A keyspace with `n` entries keeps `2^bits` buckets, about
//! [`ENTRIES_PER_BUCKET`] entries each, up to [`DIGEST_BUCKETS`] (`bits` up to
//! [`MAX_DIGEST_BITS`]): an empty keyspace costs no bucket memory, a small one a few words
//! (about a byte per entry), and a million ids 32 KiB. Because bucket `i` at `bits` is the sum of buckets
//! `i << d .. (i + 1) << d` at `bits + d`, a digest folds exactly to any coarser resolution,
//! and two replicas compare at the resolution of either.

use std::ops::RangeInclusive;

use datacake_crdt::{hash_prefix, hash_prefix_range, key_hash, HLCTimestamp, Version};

use crate::storage::Key;

/// The finest resolution of a [`KeyspaceDigest`]: `2^12` buckets.
pub(crate) const MAX_DIGEST_BITS: u8 = 12;

/// The most buckets in a [`KeyspaceDigest`] (`2^MAX_DIGEST_BITS`).
///
/// 4,096 buckets make a digest of 32 KiB; with a million keys a bucket holds about 250 ids,
/// so ten changed keys cost at most ten buckets' `(id, timestamp)` lists on the wire.
pub(crate) const DIGEST_BUCKETS: usize = 1 << MAX_DIGEST_BITS;

/// The average number of entries per bucket a digest grows its resolution to keep: a
/// digest costs about one byte per entry (against about 24 for the entry itself), and a
/// changed key costs its bucket's few entries on the wire.
pub(crate) const ENTRIES_PER_BUCKET: usize = 8;

/// One `(id, timestamp, is_tombstone)` entry of a keyspace, as exchanged during repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct BucketEntry {
    /// The document id.
    pub(crate) key: Key,
    /// The timestamp of the latest write of `key`.
    pub(crate) timestamp: HLCTimestamp,
    /// Whether that write was a delete.
    pub(crate) tombstone: bool,
}

impl BucketEntry {
    /// Its rank under last writer wins.
    pub(crate) fn version(&self) -> Version {
        Version {
            timestamp: self.timestamp,
            delete: self.tombstone,
        }
    }

    /// A live entry.
    pub(crate) fn live(key: Key, timestamp: HLCTimestamp) -> Self {
        Self {
            key,
            timestamp,
            tombstone: false,
        }
    }

    /// A tombstone.
    pub(crate) fn tombstone(key: Key, timestamp: HLCTimestamp) -> Self {
        Self {
            key,
            timestamp,
            tombstone: true,
        }
    }

    /// The bucket this entry belongs to at resolution `bits`.
    pub(crate) fn bucket_at(&self, bits: u8) -> u32 {
        bucket_at(self.key, bits)
    }
}

#[cfg(test)]
/// The bucket `key` belongs to at the finest resolution, in `0..DIGEST_BUCKETS`.
pub(crate) fn bucket_of(key: Key) -> u32 {
    bucket_at(key, MAX_DIGEST_BITS)
}

/// The bucket `key` belongs to at resolution `bits` (at most [`MAX_DIGEST_BITS`]), in
/// `0..2^bits`: the top `bits` bits of the key's [`key_hash`], the order the keyspace's set
/// keeps its ids in (so a bucket is one run of it).
pub(crate) fn bucket_at(key: Key, bits: u8) -> u32 {
    hash_prefix(key_hash(key), bits.min(MAX_DIGEST_BITS))
}

/// The key hashes of bucket `bucket` at resolution `bits` (at most [`MAX_DIGEST_BITS`]);
/// `None` for a bucket at or above `2^bits`.
pub(crate) fn bucket_hashes(bucket: u32, bits: u8) -> Option<RangeInclusive<u64>> {
    hash_prefix_range(bucket, bits.min(MAX_DIGEST_BITS))
}

/// The resolution a keyspace of `entries` entries keeps: the fewest bits that leave at most
/// [`ENTRIES_PER_BUCKET`] entries per bucket on average, up to [`MAX_DIGEST_BITS`].
pub(crate) fn bits_for(entries: usize) -> u8 {
    let mut bits = 0;
    while bits < MAX_DIGEST_BITS && entries > ENTRIES_PER_BUCKET << bits {
        bits += 1;
    }
    bits
}

/// Folds `buckets` (a digest at `from` bits; empty means all zero) to the coarser resolution
/// `to`. `None` if `to` is finer than `from`.
pub(crate) fn fold(buckets: &[u64], from: u8, to: u8) -> Option<Vec<u64>> {
    if to > from {
        return None;
    }
    let mut out = vec![0u64; 1 << to];
    if buckets.is_empty() {
        return Some(out);
    }
    let shift = from - to;
    for (i, b) in buckets.iter().enumerate() {
        let slot = &mut out[i >> shift];
        *slot = slot.wrapping_add(*b);
    }
    Some(out)
}

/// The buckets (ascending) whose values differ between two digests at the same resolution
/// `bits`; an empty slice stands for all zero.
pub(crate) fn differing(bits: u8, a: &[u64], b: &[u64]) -> Vec<u32> {
    let n = 1usize << bits.min(MAX_DIGEST_BITS);
    let value = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    (0..n)
        .filter(|&i| value(a, i) != value(b, i))
        .map(|i| i as u32)
        .collect()
}

/// The hash of one entry, as summed into its bucket's digest. Covers the id, every field of the
/// timestamp and the tombstone flag.
pub(crate) fn entry_hash(entry: &BucketEntry) -> u64 {
    // Each step folds fields into the running hash, with a constant of its own, and mixes it
    // with `key_hash` (a well-mixing bijection on `u64`, seeded, so even the all-zero entry
    // does not hash to zero, the digest of nothing).
    let ts = entry.timestamp;
    let mut h = key_hash(entry.key);
    h = key_hash(h ^ ts.pack() ^ 0xD1B5_4A32_D192_ED03);
    h = key_hash(
        h ^ (u64::from(ts.node()) << 1 | u64::from(entry.tombstone)) ^ 0x8CB9_2BA7_2F3D_8DD7,
    );
    h
}

/// The per-bucket digests of one keyspace, at a resolution that follows its size; see the
/// module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyspaceDigest {
    bits: u8,
    /// `2^bits` values, or none while the keyspace is empty.
    buckets: Vec<u64>,
    total: u64,
    len: usize,
}

/// Digests are equal when they sum the same number of entries to the same buckets, compared
/// at the coarser of their two resolutions.
impl PartialEq for KeyspaceDigest {
    fn eq(&self, other: &Self) -> bool {
        let bits = self.bits.min(other.bits);
        self.total == other.total
            && self.len == other.len
            && self.buckets_at(bits) == other.buckets_at(bits)
    }
}

impl Eq for KeyspaceDigest {}

impl KeyspaceDigest {
    #[cfg(test)]
    /// The digest of an empty keyspace (no bucket memory).
    pub(crate) fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    /// The digest of `entries` at the resolution their number calls for ([`bits_for`]).
    pub(crate) fn from_entries<'a>(
        entries: impl IntoIterator<Item = &'a BucketEntry> + Clone,
    ) -> Self {
        let n = entries.clone().into_iter().count();
        Self::from_entries_at(bits_for(n), entries)
    }

    /// The digest of `entries` at resolution `bits` (at most [`MAX_DIGEST_BITS`]).
    pub(crate) fn from_entries_at<'a>(
        bits: u8,
        entries: impl IntoIterator<Item = &'a BucketEntry>,
    ) -> Self {
        let mut digest = Self {
            bits: bits.min(MAX_DIGEST_BITS),
            ..Self::default()
        };
        for entry in entries {
            digest.add(entry);
        }
        digest
    }

    #[cfg(test)]
    /// A peer's digest from its resolution and bucket values; `None` unless `bits` is at
    /// most [`MAX_DIGEST_BITS`] and there are `2^bits` values (or none, for all zero).
    pub(crate) fn from_buckets(bits: u8, buckets: Vec<u64>) -> Option<Self> {
        if bits > MAX_DIGEST_BITS || !(buckets.is_empty() || buckets.len() == 1 << bits) {
            return None;
        }
        let total = buckets.iter().fold(0u64, |acc, b| acc.wrapping_add(*b));
        Some(Self {
            bits,
            buckets,
            total,
            len: 0,
        })
    }

    /// Adds `entry`'s hash to its bucket.
    pub(crate) fn add(&mut self, entry: &BucketEntry) {
        let h = entry_hash(entry);
        if self.buckets.is_empty() {
            self.buckets = vec![0; 1 << self.bits];
        }
        let slot = &mut self.buckets[entry.bucket_at(self.bits) as usize];
        *slot = slot.wrapping_add(h);
        self.total = self.total.wrapping_add(h);
        self.len += 1;
    }

    /// Removes `entry`'s hash from its bucket (the inverse of [`add`](Self::add)).
    pub(crate) fn remove(&mut self, entry: &BucketEntry) {
        let h = entry_hash(entry);
        if self.buckets.is_empty() {
            self.buckets = vec![0; 1 << self.bits];
        }
        let slot = &mut self.buckets[entry.bucket_at(self.bits) as usize];
        *slot = slot.wrapping_sub(h);
        self.total = self.total.wrapping_sub(h);
        self.len = self.len.saturating_sub(1);
        if self.len == 0 && self.total == 0 {
            // Empty again: give the bucket memory back.
            self.buckets = Vec::new();
        }
    }

    /// Replaces `old` with `new` (either may be absent): the O(1) update of one write.
    pub(crate) fn replace(&mut self, old: Option<&BucketEntry>, new: Option<&BucketEntry>) {
        if let Some(old) = old {
            self.remove(old);
        }
        if let Some(new) = new {
            self.add(new);
        }
    }

    /// Folds to a coarser resolution if the keyspace shrank to a quarter of what the
    /// current one is sized for; exact, no entries needed.
    pub(crate) fn shrink_to_fit(&mut self) {
        let fit = bits_for(self.len);
        if fit < self.bits && self.len <= (ENTRIES_PER_BUCKET << self.bits) / 4 {
            self.buckets = if self.buckets.is_empty() {
                Vec::new()
            } else {
                fold(&self.buckets, self.bits, fit).expect("coarser")
            };
            self.bits = fit;
        }
    }

    /// Whether the keyspace grew past what the resolution is sized for (rebuild it from the
    /// entries with [`from_entries_at`](Self::from_entries_at) and [`bits_for`]).
    pub(crate) fn wants_finer(&self) -> bool {
        self.bits < MAX_DIGEST_BITS && self.len > ENTRIES_PER_BUCKET << self.bits
    }

    /// The resolution: the digest has `2^bits` buckets.
    pub(crate) fn bits(&self) -> u8 {
        self.bits
    }

    /// The value of every bucket, indexed by bucket (`2^bits` of them), or none while the
    /// keyspace is empty (every bucket zero).
    pub(crate) fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    /// The bucket values folded to the coarser resolution `bits`; `None` if `bits` is finer
    /// than this digest's.
    pub(crate) fn buckets_at(&self, bits: u8) -> Option<Vec<u64>> {
        fold(&self.buckets, self.bits, bits)
    }

    /// A digest of the whole keyspace: the wrapping sum of the buckets. Equal keyspaces have
    /// equal totals, so a peer can skip a keyspace after comparing one number.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    #[cfg(test)]
    /// The buckets whose digests differ from `other`'s (a peer's buckets at resolution
    /// `other_bits`, which must not be finer than this digest's), ascending, at
    /// `other_bits`. Every bucket differs if `other` has the wrong length.
    pub(crate) fn differing_buckets(&self, other_bits: u8, other: &[u64]) -> Vec<u32> {
        let bits = other_bits.min(MAX_DIGEST_BITS);
        let all = || (0..1u32 << bits).collect();
        if !(other.is_empty() || other.len() == 1 << bits) {
            return all();
        }
        match self.buckets_at(bits) {
            Some(mine) => differing(bits, &mine, other),
            None => all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn entry(key: u64, millis: u64, tombstone: bool) -> BucketEntry {
        BucketEntry {
            key,
            timestamp: HLCTimestamp::new(millis, 0, 1),
            tombstone,
        }
    }

    #[test]
    fn the_all_zero_entry_does_not_vanish_from_its_digest() {
        let zero = BucketEntry {
            key: 0,
            timestamp: HLCTimestamp::new(0, 0, 0),
            tombstone: false,
        };
        assert_ne!(entry_hash(&zero), 0);
    }

    #[test]
    fn a_coarse_bucket_is_the_sum_of_its_fine_buckets() {
        for key in 0..10_000u64 {
            assert_eq!(bucket_at(key, 4), bucket_of(key) >> 8);
            assert_eq!(bucket_at(key, 0), 0);
            for bits in 0..=MAX_DIGEST_BITS {
                let hashes = bucket_hashes(bucket_at(key, bits), bits).expect("in range");
                assert!(hashes.contains(&key_hash(key)), "key {key} at {bits} bits");
            }
        }
        assert_eq!(bucket_hashes(16, 4), None, "no bucket 16 of 16");
        assert_eq!(bucket_hashes(1, 0), None);
        assert_eq!(bucket_hashes(15, 4), Some(15 << 60..=u64::MAX));
    }

    #[test]
    fn buckets_cover_the_range_evenly() {
        let mut counts = vec![0u32; DIGEST_BUCKETS];
        for key in 0..(DIGEST_BUCKETS as u64 * 64) {
            counts[bucket_of(key) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 20 && *max < 120, "min {min}, max {max}");
    }

    #[test]
    fn the_hash_covers_every_field() {
        let base = entry(1, 10, false);
        let variants = [
            entry(2, 10, false),
            entry(1, 11, false),
            entry(1, 10, true),
            BucketEntry::live(1, HLCTimestamp::new(10, 1, 1)),
            BucketEntry::live(1, HLCTimestamp::new(10, 0, 2)),
        ];
        for v in variants {
            assert_ne!(entry_hash(&base), entry_hash(&v), "{v:?}");
        }
    }

    #[test]
    fn no_entry_hashes_like_nothing() {
        assert_ne!(
            entry_hash(&BucketEntry::live(0, HLCTimestamp::new(0, 0, 0))),
            0
        );
        let mut d = KeyspaceDigest::new();
        d.add(&BucketEntry::live(0, HLCTimestamp::new(0, 0, 0)));
        assert_ne!(d, KeyspaceDigest::new());
    }

    #[test]
    fn a_wrong_sized_peer_digest_differs_everywhere() {
        let d = KeyspaceDigest::new();
        assert_eq!(d.differing_buckets(12, &[0; 3]).len(), DIGEST_BUCKETS);
        assert!(KeyspaceDigest::from_buckets(12, vec![0; 3]).is_none());
        assert!(KeyspaceDigest::from_buckets(13, Vec::new()).is_none());
        let some = KeyspaceDigest::from_entries_at(3, &[entry(1, 1, false)]);
        let copy = KeyspaceDigest::from_buckets(3, some.buckets().to_vec()).unwrap();
        assert_eq!((copy.bits(), copy.total()), (3, some.total()));
    }

    #[test]
    fn resolution_follows_size_and_an_empty_keyspace_holds_no_buckets() {
        assert_eq!(
            [0, 1, 8, 9, 16, 17, 1_000, 1_000_000].map(bits_for),
            [0, 0, 0, 1, 1, 2, 7, 12]
        );
        let mut d = KeyspaceDigest::new();
        assert!(d.buckets().is_empty());
        let e = entry(7, 1, false);
        d.add(&e);
        assert_eq!(d.buckets().len(), 1);
        d.remove(&e);
        assert!(d.buckets().is_empty(), "empty again: no bucket memory");
        assert_eq!(d, KeyspaceDigest::new());
    }

    proptest! {
        #[test]
        fn digests_are_order_independent(
            entries in prop::collection::vec((0u64..10_000, 0u64..1_000, any::<bool>()), 0..200),
            seed in any::<u64>(),
        ) {
            let entries: Vec<_> = entries.into_iter().map(|(k, m, t)| entry(k, m, t)).collect();
            let forward = KeyspaceDigest::from_entries(&entries);
            let mut shuffled = entries.clone();
            // A deterministic shuffle from the seed.
            let n = shuffled.len();
            let mut state = seed;
            for i in (1..n).rev() {
                state = key_hash(state);
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(&forward, &KeyspaceDigest::from_entries(&shuffled));
        }

        #[test]
        fn replace_equals_rebuilding(
            entries in prop::collection::btree_map(0u64..10_000, (0u64..1_000, any::<bool>()), 1..100),
            new_millis in 1_000u64..2_000,
        ) {
            let entries: Vec<_> = entries.into_iter().map(|(k, (m, t))| entry(k, m, t)).collect();
            let mut digest = KeyspaceDigest::from_entries(&entries);
            let old = entries[0];
            let new = entry(old.key, new_millis, !old.tombstone);
            digest.replace(Some(&old), Some(&new));
            let mut rebuilt = entries.clone();
            rebuilt[0] = new;
            prop_assert_eq!(&digest, &KeyspaceDigest::from_entries(&rebuilt));
            let before = KeyspaceDigest::from_entries(&entries);
            prop_assert_eq!(
                digest.differing_buckets(before.bits(), before.buckets()),
                vec![old.bucket_at(before.bits())]
            );
        }

        /// Folding to a coarser resolution equals building at it, so replicas of different
        /// sizes compare exactly.
        #[test]
        fn folding_equals_building_coarser(
            entries in prop::collection::btree_map(0u64..100_000, (0u64..1_000, any::<bool>()), 0..300),
            fine in 0u8..=MAX_DIGEST_BITS,
            coarse in 0u8..=MAX_DIGEST_BITS,
        ) {
            let (fine, coarse) = (fine.max(coarse), fine.min(coarse));
            let entries: Vec<_> = entries.into_iter().map(|(k, (m, t))| entry(k, m, t)).collect();
            let at_fine = KeyspaceDigest::from_entries_at(fine, &entries);
            let at_coarse = KeyspaceDigest::from_entries_at(coarse, &entries);
            let mut folded = at_fine.buckets_at(coarse).unwrap();
            if at_coarse.buckets().is_empty() {
                prop_assert!(folded.iter().all(|b| *b == 0));
                folded.clear();
            }
            prop_assert_eq!(folded.as_slice(), at_coarse.buckets());
            prop_assert!(at_coarse.differing_buckets(fine, at_fine.buckets()).is_empty() || fine > coarse);
            prop_assert!(at_fine.differing_buckets(coarse, at_coarse.buckets()).is_empty());
        }
    }

    #[test]
    fn digests_are_order_independent_and_find_the_differing_bucket() {
        let mut a = KeyspaceDigest::new();
        let mut b = KeyspaceDigest::new();
        let one = BucketEntry::live(1, HLCTimestamp::new(10, 0, 1));
        let two = BucketEntry::live(2, HLCTimestamp::new(11, 0, 1));
        a.add(&one);
        a.add(&two);
        b.add(&two);
        b.add(&one);
        assert_eq!(a, b, "order does not matter");

        let newer = BucketEntry::live(2, HLCTimestamp::new(12, 0, 1));
        b.replace(Some(&two), Some(&newer));
        assert_ne!(a.total(), b.total());

        // Compared at a finer resolution, only the bucket of id 2 differs.
        let a8 = KeyspaceDigest::from_entries_at(8, &[one, two]);
        let b8 = KeyspaceDigest::from_entries_at(8, &[one, newer]);
        assert_eq!(
            a8.differing_buckets(8, b8.buckets()),
            vec![two.bucket_at(8)]
        );
    }
}
