//! The user's replicated state machine ([`StateMachine`]) and its type-erased form
//! ([`SharedMachine`]), which the Raft plumbing, the RPC service and the handle share.
//!
//! How openraft drives it (applying entries, snapshots, the snapshot file) is in
//! [`machine_store`](crate::machine_store): this file is what a user implements, that one is
//! the openraft adaptor around it.

use std::sync::Arc;

use datacake_rpc::{Message, Status};
use parking_lot::RwLock;

use crate::codec::{archive, failure_text, unarchive, Encoded};
use crate::types::Reply;

/// A deterministic state machine replicated by Raft: every node applies the same committed
/// commands in the same order and so holds the same state.
///
/// Commands, responses, queries and answers are the application's own types, encoded once as
/// rkyv 0.8 archives: a command is archived by the writer and travels, is stored in the log
/// and is checked (bytecheck) and deserialised only where it is applied. Each of the four
/// types must be a [`datacake_rpc::Message`], which needs exactly
/// `#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]` (Rust's primitives,
/// `String`, `Vec`, `Option`, tuples and the std maps are already). datacake builds rkyv with
/// its `bytecheck` feature, so the archived types can be checked; a payload that does not
/// check comes back as [`RaftError::Codec`](crate::RaftError::Codec), never a panic.
/// Without a direct rkyv dependency, derive through the re-export and name it:
///
/// ```
/// use datacake_raft::rkyv;
///
/// #[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
/// #[rkyv(crate = datacake_raft::rkyv)]
/// enum Command {
///     Set { key: String, value: u64 },
///     Delete { key: String },
/// }
/// ```
///
/// A counter needs no derive at all:
///
/// ```
/// use datacake_raft::StateMachine;
///
/// /// A replicated counter.
/// #[derive(Default)]
/// struct Counter(i64);
///
/// impl StateMachine for Counter {
///     type Command = i64;
///     type Response = i64;
///     type Query = ();
///     type Answer = i64;
///
///     fn apply(&mut self, delta: i64) -> i64 {
///         self.0 += delta;
///         self.0
///     }
///     fn read(&self, _query: ()) -> i64 {
///         self.0
///     }
///     fn snapshot(&self) -> Vec<u8> {
///         self.0.to_le_bytes().to_vec()
///     }
///     fn restore(&mut self, snapshot: &[u8]) {
///         self.0 = i64::from_le_bytes(snapshot.try_into().unwrap_or_default());
///     }
/// }
///
/// let mut counter = Counter::default();
/// assert_eq!(counter.apply(5), 5);
/// ```
pub trait StateMachine: Send + Sync + 'static {
    /// A mutation, written through Raft.
    type Command: Message;
    /// What applying a command returns to the writer.
    type Response: Message;
    /// A read-only question about the state.
    type Query: Message;
    /// The answer to a query.
    type Answer: Message;

    /// Applies a committed command. Must be deterministic.
    fn apply(&mut self, command: Self::Command) -> Self::Response;

    /// Answers a query from the current state.
    fn read(&self, query: Self::Query) -> Self::Answer;

    /// The whole state as bytes (taken for snapshots, which let the log be purged).
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with one produced by [`snapshot`](Self::snapshot).
    fn restore(&mut self, snapshot: &[u8]);
}

/// A state machine with its types erased to their archives, so the Raft plumbing is not
/// generic.
pub(crate) trait DynMachine: Send + Sync {
    /// Applies an archived command; its archived response, or why the command did not check.
    fn apply(&mut self, command: Encoded) -> Reply;
    /// Answers an archived query; the archived answer, or why the query did not check.
    fn read(&self, query: Encoded) -> Result<Encoded, Status>;
    fn snapshot(&self) -> Vec<u8>;
    fn restore(&mut self, snapshot: &[u8]);
}

/// The state machine as the Raft adaptor, the RPC service and the handle share it.
pub(crate) type SharedMachine = Arc<RwLock<Box<dyn DynMachine>>>;

/// Wraps a typed [`StateMachine`] as a [`DynMachine`].
pub(crate) struct Erased<S>(pub(crate) S);

impl<S: StateMachine> DynMachine for Erased<S> {
    fn apply(&mut self, command: Encoded) -> Reply {
        let command: S::Command = unarchive(command).map_err(failure_text)?;
        archive(&self.0.apply(command)).map_err(failure_text)
    }

    fn read(&self, query: Encoded) -> Result<Encoded, Status> {
        let query: S::Query = unarchive(query)?;
        archive(&self.0.read(query))
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) {
        self.0.restore(snapshot)
    }
}

/// Answers an archived `query` from `machine`: in place when the machine is free (or soon
/// is), else on a blocking thread. An install holds the machine for as long as the user's
/// `restore` runs, which can be seconds for a large snapshot: waiting for it in place would
/// hold up a runtime thread (two such reads stall a two-worker runtime: gossip, RPC, Raft).
pub(crate) async fn query(machine: &SharedMachine, query: Encoded) -> Result<Encoded, Status> {
    /// How long a read waits in place for an `apply` (which holds the machine briefly).
    const IN_PLACE: std::time::Duration = std::time::Duration::from_micros(100);
    if let Some(machine) = machine.try_read_for(IN_PLACE) {
        return machine.read(query);
    }
    let machine = machine.clone();
    tokio::task::spawn_blocking(move || machine.read().read(query))
        .await
        .map_err(|e| Status::internal(format!("the read did not finish: {e}")))?
}

/// Shares `machine` in its erased form.
pub(crate) fn share<S: StateMachine>(machine: S) -> SharedMachine {
    Arc::new(RwLock::new(Box::new(Erased(machine))))
}
