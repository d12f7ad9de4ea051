//! From URL keys to the store's `u64` document ids, and the stored value format.
//!
//! The store addresses documents by `u64`. A URL key (a string) maps to the 64-bit FNV-1a hash
//! of its bytes: stable across builds, platforms and versions. The stored document is
//! `[key length: u16 big-endian][key bytes][value bytes]`, so a read checks that the document
//! really belongs to the requested key; two keys colliding on one id (odds about n²/2⁶⁵ for n
//! keys in a keyspace) would overwrite each other, but never return each other's value.
//!
//! FNV-1a is unkeyed, so a client can craft a key colliding with one it knows and overwrite
//! or delete that key through its own. It stays: every admitted client may already put and
//! delete any key, ids must agree on every node, and a keyed hash would orphan existing data.
//! Per-key permissions would call for SipHash with a per-cluster secret key (and a migration).

use bytes::{BufMut, Bytes, BytesMut};

/// The longest key accepted, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 256;
/// The longest keyspace name accepted, in bytes.
pub(crate) const MAX_KEYSPACE_LEN: usize = 64;

/// Whether `name` is a valid key or keyspace of at most `max` bytes: non-empty, and only
/// ASCII letters, digits and `-`, `_`, `.`, `~` (URL-safe without escaping).
pub(crate) fn is_valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// The document id of `key`: its 64-bit FNV-1a hash.
pub(crate) fn key_id(key: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    key.bytes()
        .fold(OFFSET, |hash, b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The stored form of `value` under `key`.
pub(crate) fn encode(key: &str, value: &[u8]) -> Bytes {
    let len = u16::try_from(key.len()).expect("keys are at most MAX_KEY_LEN bytes");
    let mut out = BytesMut::with_capacity(2 + key.len() + value.len());
    out.put_u16(len);
    out.put_slice(key.as_bytes());
    out.put_slice(value);
    out.freeze()
}

/// The value in `stored`, if it was written under `key`.
pub(crate) fn decode(key: &str, stored: &Bytes) -> Option<Bytes> {
    let len = usize::from(u16::from_be_bytes(stored.get(..2)?.try_into().ok()?));
    let stored_key = stored.get(2..2 + len)?;
    (stored_key == key.as_bytes()).then(|| stored.slice(2 + len..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(is_valid_name("user-1_a.b~c", MAX_KEY_LEN));
        assert!(!is_valid_name("", MAX_KEY_LEN));
        assert!(!is_valid_name("a/b", MAX_KEY_LEN));
        assert!(!is_valid_name("a%20b", MAX_KEY_LEN));
        assert!(!is_valid_name("é", MAX_KEY_LEN));
        assert!(is_valid_name(&"k".repeat(MAX_KEY_LEN), MAX_KEY_LEN));
        assert!(!is_valid_name(&"k".repeat(MAX_KEY_LEN + 1), MAX_KEY_LEN));
    }

    #[test]
    fn key_ids_are_stable_fnv1a() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(key_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_id("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn values_round_trip_and_check_their_key() {
        let stored = encode("alpha", b"hello");
        assert_eq!(decode("alpha", &stored).as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode("beta", &stored), None);
        assert_eq!(decode("alpha", &Bytes::from_static(b"\x00")), None);
        assert_eq!(
            decode("alpha", &encode("alpha", b"")).as_deref(),
            Some(&b""[..])
        );
    }
}
