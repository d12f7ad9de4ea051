//! The extension's errors.

use std::net::SocketAddr;
use std::time::Duration;

use datacake_node::{ConsistencyError, NodeId};
use datacake_rpc::Status;

use crate::messages::MAX_NAME_LEN;

/// Why a counter operation (or the extension's start) failed.
///
/// An increment that fails with a peer error *was* applied on this node and keeps
/// spreading to the peers that can be reached: the error says the level was not
/// confirmed, not that nothing happened (a G-counter cannot take an increment back).
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    /// The counter name is empty or longer than [`MAX_NAME_LEN`] bytes.
    #[error("counter names are 1 to {MAX_NAME_LEN} bytes, got {len}")]
    InvalidName {
        /// The name's length in bytes.
        len: usize,
    },
    /// This node's total of the counter would pass `u64::MAX`.
    #[error("counter {name:?} would overflow")]
    Overflow {
        /// The counter.
        name: String,
    },
    /// The node holds as many counter entries as it may
    /// ([`CounterExtension::with_max_entries`](crate::CounterExtension::with_max_entries)).
    #[error("the node holds its maximum of {max} counter entries")]
    Full {
        /// The bound.
        max: usize,
    },
    /// Too few live peers for the consistency level.
    #[error(transparent)]
    Consistency(#[from] ConsistencyError),
    /// A peer the level needed refused or failed the call.
    #[error("peer node {node_id} at {addr} failed: {status}")]
    PeerFailed {
        /// The peer's node id.
        node_id: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// What the call returned.
        status: Status,
    },
    /// A peer the level needed did not answer before the deadline.
    #[error("peer node {node_id} at {addr} did not answer within {timeout:?}")]
    PeerTimedOut {
        /// The peer's node id.
        node_id: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// The deadline ([`CounterExtension::with_rpc_timeout`](crate::CounterExtension::with_rpc_timeout)).
        timeout: Duration,
    },
    /// The extension was configured with a value it cannot run with.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}
