//! Raft over `datacake-rpc`: one RPC service on the node carries append, vote and snapshot
//! messages, early copies of a leader's entries ([`early`](crate::early)), forwarded writes
//! and reads, and the bootstrap probe.
//!
//! - [`server`]: the service ([`RaftService`]) and its handlers, which refuse, before a vote,
//!   append or snapshot message reaches openraft, senders a certificate does not prove,
//!   implausible terms and snapshot chunks that do not continue the snapshot being received
//!   (see [`guard`](crate::guard)).
//! - [`client`]: calling that service on a peer through the node's channel pool ([`ask`],
//!   [`call`](client::call)), and openraft's network ([`Network`]), which checks the terms
//!   of the responses it gets.
//! - This file: what travels between the two.
//!
//! openraft's messages are serde types: they travel encoded with postcard ([`codec`]) inside
//! small rkyv envelopes ([`Packet`]s). Forwarded writes and reads carry the user's archived
//! command or query as it is, and come back as an rkyv
//! [`Outcome`](crate::replica::Outcome); the bootstrap probe is rkyv too.

use datacake_node::NodeId;
use datacake_rpc::{Message, Status};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;

mod client;
mod server;
#[cfg(test)]
mod tests;

pub(crate) use client::{ask, channel_to, resolve, Network};
pub(crate) use server::RaftService;

/// The service name all Raft RPCs are under.
pub(crate) const SERVICE_NAME: &str = "datacake-raft";

macro_rules! packets {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        pub(crate) struct $name {
            /// The sender's incarnation of its node id
            /// ([`DatacakeHandle::generation`](datacake_node::DatacakeHandle::generation)):
            /// a message from an incarnation the cluster has replaced is refused.
            pub(crate) generation: u64,
            /// The postcard-encoded message.
            pub(crate) payload: Vec<u8>,
        }

        impl Packet for $name {
            fn new(generation: u64, payload: Vec<u8>) -> Self {
                Self { generation, payload }
            }
        }
    )*};
}

/// An rkyv envelope around one postcard-encoded message of openraft's, from the sender's
/// incarnation `generation`.
pub(crate) trait Packet: Message {
    fn new(generation: u64, payload: Vec<u8>) -> Self;
}

packets!(
    /// openraft's `AppendEntriesRequest`.
    AppendPacket,
    /// openraft's `VoteRequest`.
    VotePacket,
    /// openraft's `InstallSnapshotRequest` (one chunk).
    SnapshotPacket,
    /// An early copy of a leader's entries (see [`early`](crate::early)), in the shape of
    /// openraft's `AppendEntriesRequest`; the reply is whether the log took it.
    EarlyPacket,
);

/// The reply to the packets above, postcard-encoded: an [`Answer`], or for an early copy a
/// `bool`, whether the log took it.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ReplyPacket {
    /// The postcard-encoded answer.
    pub(crate) payload: Vec<u8>,
}

/// A user command forwarded by a follower to the leader; the reply is an
/// [`Outcome`](crate::replica::Outcome).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ForwardWritePacket {
    /// The archived command, as the writer archived it.
    pub(crate) command: Vec<u8>,
}

/// A user query forwarded by a follower to the leader for a linearizable read; the reply is
/// an [`Outcome`](crate::replica::Outcome).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ForwardReadPacket {
    /// The archived query.
    pub(crate) query: Vec<u8>,
}

/// The bootstrap question: is this node part of a cluster already?
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ProbePacket {
    /// The prober's `bootstrap_expect`.
    pub(crate) expect: u64,
}

/// The reply to a [`ProbePacket`].
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct ProbeReply {
    /// In a cluster already, or about to initialise one.
    pub(crate) initialized: bool,
    /// The `bootstrap_expect` lowest live ids this node sees (empty if it sees fewer).
    pub(crate) initial: Vec<NodeId>,
}

/// Why a Raft RPC failed on the node that handled it, as it travels.
///
/// openraft's own `RaftError` would carry a `Fatal` error's `AnyError`, which nests a cause in
/// a cause without bound: decoding one nested a few hundred thousand levels deep would
/// overflow the stack. Text cannot nest.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Failure<E> {
    /// openraft refused the request (e.g. a snapshot chunk out of place).
    Api(E),
    /// Raft has stopped on that node, or its storage failed.
    Fatal(String),
}

/// The reply to an append, vote or snapshot message.
pub(crate) type Answer<T, E> = Result<T, Failure<E>>;

/// Decodes a postcard message that arrived in a [`Packet`] (a request on the server, a
/// reply on the client).
fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    codec::decode(payload).map_err(|e| Status::invalid_payload(e.to_string()))
}
