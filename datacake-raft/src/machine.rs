//! The user's replicated state machine ([`StateMachine`]) and its type-erased form.

use std::sync::Arc;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::Reply;

/// A deterministic state machine replicated by Raft: every node applies the same committed
/// commands in the same order and so holds the same state.
///
/// Commands, responses, queries and answers are the application's own serde types; they are
/// encoded as JSON on the log and on the wire.
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
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command returns to the writer.
    type Response: Serialize + DeserializeOwned + Send + 'static;
    /// A read-only question about the state.
    type Query: Serialize + DeserializeOwned + Send + 'static;
    /// The answer to a query.
    type Answer: Serialize + DeserializeOwned + Send + 'static;

    /// Applies a committed command. Must be deterministic.
    fn apply(&mut self, command: Self::Command) -> Self::Response;

    /// Answers a query from the current state.
    fn read(&self, query: Self::Query) -> Self::Answer;

    /// The whole state as bytes (taken for snapshots, which let the log be purged).
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with one produced by [`snapshot`](Self::snapshot).
    fn restore(&mut self, snapshot: &[u8]);
}

/// A state machine with its types erased to JSON, so the Raft plumbing is not generic.
pub(crate) trait DynMachine: Send + Sync {
    fn apply_json(&mut self, command: &str) -> Reply;
    fn read_json(&self, query: &str) -> Result<String, String>;
    fn snapshot(&self) -> Vec<u8>;
    fn restore(&mut self, snapshot: &[u8]);
}

/// The state machine as the Raft adaptor, the RPC service and the handle share it.
pub(crate) type SharedMachine = Arc<RwLock<Box<dyn DynMachine>>>;

/// Wraps a typed [`StateMachine`] as a [`DynMachine`].
pub(crate) struct Erased<S>(pub(crate) S);

impl<S: StateMachine> DynMachine for Erased<S> {
    fn apply_json(&mut self, command: &str) -> Reply {
        let command: S::Command = serde_json::from_str(command).map_err(|e| e.to_string())?;
        serde_json::to_string(&self.0.apply(command)).map_err(|e| e.to_string())
    }

    fn read_json(&self, query: &str) -> Result<String, String> {
        let query: S::Query = serde_json::from_str(query).map_err(|e| e.to_string())?;
        serde_json::to_string(&self.0.read(query)).map_err(|e| e.to_string())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) {
        self.0.restore(snapshot)
    }
}

/// Shares `machine` in its erased form.
pub(crate) fn share<S: StateMachine>(machine: S) -> SharedMachine {
    Arc::new(RwLock::new(Box::new(Erased(machine))))
}
