//! [`key_hash`]: the order an [`OrSWotSet`](crate::OrSWotSet) keeps its keys in.
//!
//! The hash is a bijection on `u64` (an xor with a constant, then the splitmix64 finaliser),
//! so a set stores the hash in place of the key and recovers the key from it
//! ([`key_of_hash`]). Keeping keys in hash order puts every range of hashes, such as all keys
//! whose hash starts with given bits, in one contiguous run of the set's sorted storage.

use std::ops::RangeInclusive;

/// Xored into the key before mixing.
const SEED: u64 = 0x5851_F42D_4C95_7F2D;
const M1: u64 = 0xBF58_476D_1CE4_E5B9;
const M2: u64 = 0x94D0_49BB_1331_11EB;
const M1_INVERSE: u64 = mul_inverse(M1);
const M2_INVERSE: u64 = mul_inverse(M2);

/// The position of `key` in an [`OrSWotSet`](crate::OrSWotSet)'s order: a well-mixed,
/// invertible hash of the key (every `u64` is the hash of exactly one key).
///
/// [`OrSWotSet::visit_hash_ranges`](crate::OrSWotSet::visit_hash_ranges) walks keys by ranges
/// of this hash; its top bits spread any set of keys, however chosen, evenly over buckets.
/// The function is part of the crate's stable contract: it never changes within a major
/// version, so peers that bucket keys by it agree.
///
/// ```
/// use datacake_crdt::key_hash;
///
/// assert_ne!(key_hash(1) >> 52, key_hash(2) >> 52, "neighbouring keys land far apart");
/// ```
pub fn key_hash(key: u64) -> u64 {
    let mut x = key ^ SEED;
    x = (x ^ (x >> 30)).wrapping_mul(M1);
    x = (x ^ (x >> 27)).wrapping_mul(M2);
    x ^ (x >> 31)
}

/// The top `bits` bits of `hash` (`bits` at most 32; more count as 32): which of `2^bits`
/// equal spans of the hash order it falls in, such as an anti-entropy bucket. Every span
/// is one range of hashes, [`hash_prefix_range`].
///
/// ```
/// use datacake_crdt::{hash_prefix, hash_prefix_range, key_hash};
///
/// let bucket = hash_prefix(key_hash(42), 12);
/// assert!(bucket < 4_096);
/// assert!(hash_prefix_range(bucket, 12).unwrap().contains(&key_hash(42)));
/// ```
pub fn hash_prefix(hash: u64, bits: u8) -> u32 {
    match bits.min(32) {
        0 => 0,
        bits => (hash >> (64 - u32::from(bits))) as u32,
    }
}

/// The hashes whose top `bits` bits are `prefix` (`bits` at most 32; more count as 32), for
/// [`OrSWotSet::visit_hash_ranges`](crate::OrSWotSet::visit_hash_ranges); `None` if
/// `prefix` is not below `2^bits`.
pub fn hash_prefix_range(prefix: u32, bits: u8) -> Option<RangeInclusive<u64>> {
    let bits = bits.min(32);
    if u64::from(prefix) >= 1 << bits {
        return None;
    }
    if bits == 0 {
        return Some(0..=u64::MAX);
    }
    let shift = 64 - u32::from(bits);
    let start = u64::from(prefix) << shift;
    Some(start..=start | ((1 << shift) - 1))
}

/// The key whose [`key_hash`] is `hash`.
pub(crate) fn key_of_hash(hash: u64) -> u64 {
    let mut x = undo_xor_shift(hash, 31);
    x = undo_xor_shift(x.wrapping_mul(M2_INVERSE), 27);
    x = undo_xor_shift(x.wrapping_mul(M1_INVERSE), 30);
    x ^ SEED
}

/// The `x` for which `x ^ (x >> shift) == y` (`shift` at least 1).
const fn undo_xor_shift(y: u64, shift: u32) -> u64 {
    // Each round recovers `shift` more of the top bits.
    let mut x = y;
    let mut known = shift;
    while known < 64 {
        x = y ^ (x >> shift);
        known += shift;
    }
    x
}

/// The inverse of an odd `m` modulo 2^64 (Newton's iteration: each round doubles the number
/// of correct low bits, starting from the 3 that `m` itself gets right).
const fn mul_inverse(m: u64) -> u64 {
    let mut inverse = m;
    let mut round = 0;
    while round < 5 {
        inverse = inverse.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(inverse)));
        round += 1;
    }
    inverse
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_inverses_are_exact() {
        assert_eq!(M1.wrapping_mul(M1_INVERSE), 1);
        assert_eq!(M2.wrapping_mul(M2_INVERSE), 1);
    }

    #[test]
    fn prefixes_cut_the_hash_order_into_equal_ranges() {
        assert_eq!(hash_prefix(u64::MAX, 0), 0);
        assert_eq!(hash_prefix_range(0, 0), Some(0..=u64::MAX));
        assert_eq!(hash_prefix_range(1, 0), None);
        assert_eq!(hash_prefix(3 << 62, 2), 3);
        assert_eq!(hash_prefix_range(3, 2), Some((3 << 62)..=u64::MAX));
        assert_eq!(hash_prefix_range(4, 2), None);
        assert_eq!(
            hash_prefix(u64::MAX, 40),
            u32::MAX,
            "bits past 32 count as 32"
        );
        assert_eq!(
            hash_prefix_range(u32::MAX, 40),
            Some(0xFFFF_FFFF_0000_0000..=u64::MAX)
        );
    }

    #[test]
    fn the_hash_is_pinned() {
        // Peers bucket keys by this hash: a change would make every digest of a mixed-version
        // cluster differ. These are the values of the bucket hash the eventually consistent
        // store used before the function moved here (computed independently).
        assert_eq!(key_hash(0), 0xF2EE_2134_306F_F565);
        assert_eq!(key_hash(1), 0x803B_E1DF_AC84_2450);
        assert_eq!(key_hash(u64::MAX), 0xD9E5_0EDB_EB02_EC3A);
    }

    proptest! {
        #[test]
        fn every_hash_maps_back_to_its_key(key in any::<u64>(), shift in 1u32..64) {
            prop_assert_eq!(key_of_hash(key_hash(key)), key);
            prop_assert_eq!(key_hash(key_of_hash(key)), key);
            let y = key ^ (key >> shift);
            prop_assert_eq!(undo_xor_shift(y, shift), key);
            let bits = (shift % 33) as u8;
            let range = hash_prefix_range(hash_prefix(key, bits), bits).expect("a prefix");
            prop_assert!(range.contains(&key));
        }
    }
}
