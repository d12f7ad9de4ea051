//! The crate's two encodings, in one place.
//!
//! - The user's values (commands, responses, queries, answers) are rkyv archives, checked
//!   with bytecheck before they are read ([`archive`], [`unarchive`]). A command is archived
//!   once, by the writer, and travels and is stored as those bytes ([`Encoded`]) until the
//!   state machine applies it.
//! - openraft's own types (entries, votes, log ids, RPC requests and responses, snapshot
//!   meta) are serde types; they are encoded with postcard ([`encode`], [`decode`]) for the
//!   network, the durable log and the snapshot file. postcard is compact (varints for the
//!   terms, indexes and node ids that fill these messages) and its wire format is frozen for
//!   all of 1.x.
//!
//! [`FORMAT_VERSION`] names this pair of encodings; the durable log and snapshot files carry
//! it (see [`format`](crate::format)).

use std::fmt;

use datacake_rpc::{DataView, Message, Status};
use rkyv::util::AlignedVec;
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version of the encodings above, as stored in durable files. Format 1: postcard for
/// openraft's types, rkyv for the user's, one command per log entry. Format 2: a log entry
/// holds a batch of commands ([`Batch`](crate::proposer::Batch)). Format 3: standard Raft
/// leader ids (openraft's `single-term-leader`): a vote names its term and the candidate it
/// went to, a log id only its term. (Releases before format 1 wrote JSON, unversioned.)
pub(crate) const FORMAT_VERSION: u32 = 3;

/// Why a value of openraft's types could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    /// postcard refused the value or the bytes.
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    /// The bytes held a whole value and then more.
    #[error("{0} bytes left over after the value")]
    TrailingBytes(usize),
}

/// Encodes one of openraft's values with postcard.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_stdvec(value)?)
}

/// Decodes one of openraft's values with postcard; bytes left over are an error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match postcard::take_from_bytes(bytes)? {
        (value, []) => Ok(value),
        (_, rest) => Err(CodecError::TrailingBytes(rest.len())),
    }
}

/// A user value as an rkyv archive, aligned for reading in place. On openraft's side (in log
/// entries and replies) it is a serde byte string.
#[derive(Clone, Default)]
pub(crate) struct Encoded(pub(crate) AlignedVec);

impl PartialEq for Encoded {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Encoded {}

impl Encoded {
    /// An aligned copy of `bytes`.
    pub(crate) fn copy_from(bytes: &[u8]) -> Self {
        let mut aligned = AlignedVec::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        Self(aligned)
    }

    /// The archive's bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Encoded({} bytes)", self.0.len())
    }
}

impl Serialize for Encoded {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Encoded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;

        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Encoded;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an rkyv archive as a byte string")
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Encoded, E> {
                Ok(Encoded::copy_from(bytes))
            }

            // Formats without a byte string (JSON) write a sequence of numbers.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Encoded, A::Error> {
                let mut aligned = AlignedVec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(byte) = seq.next_element::<u8>()? {
                    aligned.push(byte);
                }
                Ok(Encoded(aligned))
            }
        }

        deserializer.deserialize_bytes(BytesVisitor)
    }
}

/// Archives a user value.
pub(crate) fn archive<T: Message>(value: &T) -> Result<Encoded, Status> {
    value.to_archive().map(Encoded)
}

/// Checks `encoded` as an archived `T` with bytecheck (nested at most
/// [`datacake_rpc::DEFAULT_MAX_DEPTH`] deep) and deserialises it. A bad archive is an error,
/// never a panic.
pub(crate) fn unarchive<T: Message>(encoded: Encoded) -> Result<T, Status> {
    DataView::<T>::from_aligned(encoded.0).and_then(|view| view.deserialize_view())
}

/// Why [`archive`] or [`unarchive`] failed, as text: what a [`Reply`](crate::types::Reply)
/// carries through openraft and an [`Outcome`](crate::replica::Outcome) across the wire.
pub(crate) fn failure_text(status: Status) -> String {
    status.message().to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use proptest::prelude::*;

    use super::{archive, decode, encode, unarchive, CodecError, Encoded};
    use crate::proposer::Batch;
    use crate::types::Entry;

    #[derive(Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    enum Op {
        Set(String, u64),
        Many(BTreeMap<String, Vec<u8>>),
    }

    fn entry(term: u64, index: u64, command: Vec<u8>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Batch(vec![Encoded::copy_from(&command)])),
        }
    }

    proptest! {
        #[test]
        fn entries_round_trip(term: u64, index: u64, command: Vec<u8>) {
            let entry = entry(term, index, command);
            let back: Entry = decode(&encode(&entry).unwrap()).unwrap();
            prop_assert_eq!(back.log_id, entry.log_id);
            match (back.payload, entry.payload) {
                (EntryPayload::Normal(a), EntryPayload::Normal(b)) => prop_assert_eq!(a, b),
                _ => prop_assert!(false, "payload kind changed"),
            }
        }

        #[test]
        fn user_values_round_trip(key: String, value: u64, many: BTreeMap<String, Vec<u8>>) {
            for op in [Op::Set(key.clone(), value), Op::Many(many.clone())] {
                let bytes = archive(&op).unwrap();
                // As a peer receives it: copied out of a message, at any alignment.
                let copied = Encoded::copy_from(bytes.as_bytes());
                prop_assert_eq!(unarchive::<Op>(copied).unwrap(), op);
            }
        }

        /// Whatever the bytes, decoding answers (an error, mostly) instead of panicking.
        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let _ = unarchive::<Op>(Encoded::copy_from(&bytes));
            let _ = decode::<Entry>(&bytes);
        }
    }

    #[test]
    fn a_command_of_another_type_is_a_typed_error() {
        let bytes = archive(&7u8).unwrap();
        let error = unarchive::<Op>(bytes).expect_err("one byte is no Op");
        assert!(!error.to_string().is_empty());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&entry(1, 2, vec![3])).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Entry>(&bytes),
            Err(CodecError::TrailingBytes(1))
        ));
    }

    /// A command in an entry costs its own bytes plus a few (as JSON, 100 bytes were over
    /// 300: one number per byte, then the entry around them).
    #[test]
    fn a_command_costs_its_bytes_and_a_few_more() {
        let encoded = encode(&entry(3, 1000, vec![0xAB; 100])).unwrap();
        assert!(encoded.len() < 100 + 16, "{} bytes", encoded.len());
    }
}
