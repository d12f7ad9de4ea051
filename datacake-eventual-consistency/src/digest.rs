//! Bucketed keyspace digests for anti-entropy: [`KeyspaceDigest`].
//!
//! A keyspace's ids are split into [`DIGEST_BUCKETS`] fixed buckets by a hash of the id. A
//! bucket's digest is the wrapping sum of [`entry_hash`] over its entries (documents and
//! tombstones): order-independent and invertible, so a write updates it in O(1) (subtract
//! the old entry's hash, add the new one). Two replicas holding the same entries in a bucket
//! have the same bucket digest; comparing the digests of two replicas names the buckets whose
//! entries must be exchanged.

use datacake_crdt::HLCTimestamp;

use crate::storage::Key;

/// Number of buckets in a [`KeyspaceDigest`] (a power of two).
///
/// 4,096 buckets make a digest of 32 KiB; with a million keys a bucket holds about 250 ids,
/// so ten changed keys cost at most ten buckets' `(id, timestamp)` lists on the wire.
pub const DIGEST_BUCKETS: usize = 4096;

const BUCKET_SHIFT: u32 = 64 - DIGEST_BUCKETS.trailing_zeros();

/// One `(id, timestamp, is_tombstone)` entry of a keyspace, as exchanged during repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketEntry {
    /// The document id.
    pub key: Key,
    /// The timestamp of the latest write of `key`.
    pub timestamp: HLCTimestamp,
    /// Whether that write was a delete.
    pub tombstone: bool,
}

impl BucketEntry {
    /// A live entry.
    pub fn live(key: Key, timestamp: HLCTimestamp) -> Self {
        Self {
            key,
            timestamp,
            tombstone: false,
        }
    }

    /// A tombstone.
    pub fn tombstone(key: Key, timestamp: HLCTimestamp) -> Self {
        Self {
            key,
            timestamp,
            tombstone: true,
        }
    }

    /// The bucket this entry belongs to.
    pub fn bucket(&self) -> u32 {
        bucket_of(self.key)
    }
}

/// The splitmix64 finaliser: a fast, well-mixing bijection on `u64`.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The bucket `key` belongs to, in `0..DIGEST_BUCKETS`.
pub fn bucket_of(key: Key) -> u32 {
    (mix64(key ^ 0x5851_F42D_4C95_7F2D) >> BUCKET_SHIFT) as u32
}

/// The hash of one entry, as summed into its bucket's digest. Covers the id, every field of the
/// timestamp and the tombstone flag.
pub fn entry_hash(entry: &BucketEntry) -> u64 {
    // The constants keep the all-zero entry from hashing to zero (the digest of nothing).
    let ts = entry.timestamp;
    let mut h = mix64(entry.key ^ 0x9E37_79B9_7F4A_7C15);
    h = mix64(h ^ ts.pack() ^ 0xD1B5_4A32_D192_ED03);
    h = mix64(h ^ (u64::from(ts.node()) << 1 | u64::from(entry.tombstone)) ^ 0x8CB9_2BA7_2F3D_8DD7);
    h
}

/// The per-bucket digests of one keyspace; see the module docs.
///
/// ```
/// use datacake_crdt::HLCTimestamp;
/// use datacake_eventual_consistency::{BucketEntry, KeyspaceDigest};
///
/// let mut a = KeyspaceDigest::new();
/// let mut b = KeyspaceDigest::new();
/// let one = BucketEntry::live(1, HLCTimestamp::new(10, 0, 1));
/// let two = BucketEntry::live(2, HLCTimestamp::new(11, 0, 1));
/// a.add(&one);
/// a.add(&two);
/// b.add(&two);
/// b.add(&one);
/// assert_eq!(a, b, "order does not matter");
///
/// let newer = BucketEntry::live(2, HLCTimestamp::new(12, 0, 1));
/// b.replace(Some(&two), Some(&newer));
/// assert_eq!(a.differing_buckets(b.buckets()), vec![two.bucket()]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyspaceDigest {
    buckets: Box<[u64]>,
    total: u64,
}

impl Default for KeyspaceDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyspaceDigest {
    /// The digest of an empty keyspace.
    pub fn new() -> Self {
        Self {
            buckets: vec![0; DIGEST_BUCKETS].into_boxed_slice(),
            total: 0,
        }
    }

    /// The digest of `entries`.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a BucketEntry>) -> Self {
        let mut digest = Self::new();
        for entry in entries {
            digest.add(entry);
        }
        digest
    }

    /// A digest from bucket values received from a peer; `None` unless there are exactly
    /// [`DIGEST_BUCKETS`] of them.
    pub fn from_buckets(buckets: Vec<u64>) -> Option<Self> {
        if buckets.len() != DIGEST_BUCKETS {
            return None;
        }
        let total = buckets.iter().fold(0u64, |acc, b| acc.wrapping_add(*b));
        Some(Self {
            buckets: buckets.into_boxed_slice(),
            total,
        })
    }

    /// Adds `entry`'s hash to its bucket.
    pub fn add(&mut self, entry: &BucketEntry) {
        let h = entry_hash(entry);
        let slot = &mut self.buckets[entry.bucket() as usize];
        *slot = slot.wrapping_add(h);
        self.total = self.total.wrapping_add(h);
    }

    /// Removes `entry`'s hash from its bucket (the inverse of [`add`](Self::add)).
    pub fn remove(&mut self, entry: &BucketEntry) {
        let h = entry_hash(entry);
        let slot = &mut self.buckets[entry.bucket() as usize];
        *slot = slot.wrapping_sub(h);
        self.total = self.total.wrapping_sub(h);
    }

    /// Replaces `old` with `new` (either may be absent): the O(1) update of one write.
    pub fn replace(&mut self, old: Option<&BucketEntry>, new: Option<&BucketEntry>) {
        if let Some(old) = old {
            self.remove(old);
        }
        if let Some(new) = new {
            self.add(new);
        }
    }

    /// The digest of every bucket, indexed by bucket.
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    /// A digest of the whole keyspace: the wrapping sum of the buckets. Equal keyspaces have
    /// equal totals, so a peer can skip a keyspace after comparing one number.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The buckets whose digests differ from `other`'s (a peer's [`buckets`](Self::buckets)),
    /// ascending. Every bucket differs if `other` does not have [`DIGEST_BUCKETS`] entries.
    pub fn differing_buckets(&self, other: &[u64]) -> Vec<u32> {
        if other.len() != DIGEST_BUCKETS {
            return (0..DIGEST_BUCKETS as u32).collect();
        }
        self.buckets
            .iter()
            .zip(other)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i as u32)
            .collect()
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
        assert_eq!(d.differing_buckets(&[0; 3]).len(), DIGEST_BUCKETS);
        assert!(KeyspaceDigest::from_buckets(vec![0; 3]).is_none());
        assert_eq!(
            KeyspaceDigest::from_buckets(d.buckets().to_vec()),
            Some(d.clone())
        );
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
                state = mix64(state);
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
            prop_assert_eq!(digest.differing_buckets(KeyspaceDigest::from_entries(&entries).buckets()), vec![old.bucket()]);
        }
    }
}
