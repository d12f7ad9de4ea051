//! Persisted purge watermarks: one document per keyspace in the reserved keyspace
//! [`PURGE_WATERMARK_KEYSPACE`], so a purged delete never resurrects a document, also after a
//! restart on the same storage.
//!
//! The document of keyspace `name` has the id [`watermark_doc_id`]`(name)` (the next free id
//! after it when another keyspace's document holds that one: see [`DocIds`]), `last_updated`
//! set to the watermark, and as data the watermark (16 bytes, little endian
//! [`HLCTimestamp::as_u128`]) followed by the keyspace name (UTF-8), so loading does not depend
//! on the id hash.

use std::collections::{HashMap, HashSet};

use bytes::{BufMut, Bytes, BytesMut};
use datacake_crdt::HLCTimestamp;

use crate::storage::{Document, Key};

/// Keyspace names starting with this prefix are reserved for the store's own bookkeeping:
/// users cannot read or write them ([`StoreError::ReservedKeyspace`](crate::StoreError)) and
/// they never appear in [`get_keyspace_list`](crate::ReplicatedStoreHandle::get_keyspace_list).
pub const RESERVED_KEYSPACE_PREFIX: &str = "__datacake.";

/// The reserved keyspace that holds each keyspace's purge watermark (see the module docs).
/// Written before purged tombstones are removed from the storage; read when the store starts.
pub const PURGE_WATERMARK_KEYSPACE: &str = "__datacake.purge_watermarks";

/// Whether `keyspace` is reserved for the store (starts with [`RESERVED_KEYSPACE_PREFIX`]).
pub(crate) fn is_reserved(keyspace: &str) -> bool {
    keyspace.starts_with(RESERVED_KEYSPACE_PREFIX)
}

/// The id of the watermark document of `keyspace`: FNV-1a (64 bits) of its name, stable
/// across builds and platforms.
pub(crate) fn watermark_doc_id(keyspace: &str) -> Key {
    keyspace
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// The ids of the watermark documents, by keyspace name. The hash is unkeyed, so names can
/// be crafted to collide; a keyspace whose hash names another keyspace's document takes the
/// next free id instead of overwriting it (which would lose that keyspace's watermark at the
/// next restart, and with it the guard against older copies of its purged deletes).
#[derive(Debug, Default)]
pub(crate) struct DocIds {
    by_name: HashMap<String, Key>,
    taken: HashSet<Key>,
}

impl DocIds {
    /// Records the document `id` found for `keyspace` (when loading).
    pub(crate) fn found(&mut self, keyspace: &str, id: Key) {
        self.by_name.insert(keyspace.to_owned(), id);
        self.taken.insert(id);
    }

    /// The id of `keyspace`'s document: the one it has, else the first free one from its
    /// hash on (taken from then on).
    pub(crate) fn of(&mut self, keyspace: &str) -> Key {
        if let Some(id) = self.by_name.get(keyspace) {
            return *id;
        }
        let mut id = watermark_doc_id(keyspace);
        while self.taken.contains(&id) {
            id = id.wrapping_add(1);
        }
        self.found(keyspace, id);
        id
    }
}

/// The document with id `id` that persists `watermark` for `keyspace`.
pub(crate) fn encode(id: Key, keyspace: &str, watermark: HLCTimestamp) -> Document {
    let mut data = BytesMut::with_capacity(16 + keyspace.len());
    data.put_u128_le(watermark.as_u128());
    data.put_slice(keyspace.as_bytes());
    Document::new(id, watermark, data.freeze())
}

/// The keyspace and watermark a document holds; `None` if it is malformed.
pub(crate) fn decode(doc: &Document) -> Option<(String, HLCTimestamp)> {
    let data: &Bytes = &doc.data;
    let (stamp, name) = data.split_first_chunk::<16>()?;
    let watermark = HLCTimestamp::from_u128(u128::from_le_bytes(*stamp)).ok()?;
    let name = std::str::from_utf8(name).ok()?;
    Some((name.to_owned(), watermark))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_reserved_names() {
        let ts = HLCTimestamp::new(1_700_000_000_000, 3, 42);
        let doc = encode(watermark_doc_id("users"), "users", ts);
        assert_eq!(doc.id, watermark_doc_id("users"));
        assert_eq!(doc.last_updated, ts);
        assert_eq!(decode(&doc), Some(("users".to_owned(), ts)));
        assert_ne!(watermark_doc_id("users"), watermark_doc_id("orders"));
        assert_eq!(decode(&Document::new(1, ts, &b"short"[..])), None);
        assert!(is_reserved(PURGE_WATERMARK_KEYSPACE));
        assert!(is_reserved("__datacake.anything"));
        assert!(!is_reserved("users") && !is_reserved("__datacake"));
    }

    /// Two keyspaces whose names hash to one id (the hash is unkeyed, so names can be
    /// crafted so) get two documents: the second takes the next free id.
    #[test]
    fn a_keyspace_whose_hash_names_another_keyspaces_document_takes_the_next_id() {
        let mut ids = DocIds::default();
        let users = watermark_doc_id("users");
        // A keyspace loaded from storage already holds the id "users" hashes to (as a
        // crafted colliding name would).
        ids.found("crafted", users);
        ids.found("at-the-next-id", users.wrapping_add(1));
        assert_eq!(ids.of("users"), users.wrapping_add(2));
        assert_eq!(ids.of("users"), users.wrapping_add(2), "stable once taken");
        assert_eq!(ids.of("crafted"), users);
        assert_eq!(ids.of("orders"), watermark_doc_id("orders"));
    }
}
