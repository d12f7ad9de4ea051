//! The errors of building, joining and running a node.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::membership::NodeId;

/// Why a node could not start, join, or answer a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The RPC server could not bind its listen address.
    #[error("cannot bind the rpc server to {addr}")]
    Bind {
        /// The listen address.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The public address cannot be advertised (its IP is unspecified, e.g. `0.0.0.0`).
    #[error("public address {addr} cannot be advertised to peers: give a reachable ip")]
    InvalidPublicAddr {
        /// The rejected address.
        addr: SocketAddr,
    },
    /// A setting given to the [`DatacakeNodeBuilder`](crate::DatacakeNodeBuilder) is out of
    /// its documented range. Checked by
    /// [`connect`](crate::DatacakeNodeBuilder::connect) before anything is bound or started.
    #[error("invalid node setting `{setting}`: {reason}")]
    InvalidConfig {
        /// The setting, named as its builder method without `with_` (e.g.
        /// `"gossip_interval"` for
        /// [`with_gossip_interval`](crate::DatacakeNodeBuilder::with_gossip_interval)).
        setting: &'static str,
        /// What is wrong with the value, including the accepted bound.
        reason: String,
    },
    /// Gossip (chitchat) could not start.
    #[error("cannot start gossip: {reason}")]
    Gossip {
        /// What went wrong.
        reason: String,
    },
    /// Another live member already uses this node id; this node shut itself down.
    #[error("node id {node_id} is already used by a live member at {existing_addr}")]
    DuplicateNodeId {
        /// The contested node id.
        node_id: NodeId,
        /// Where the member that already holds it is reached.
        existing_addr: SocketAddr,
    },
    /// [`DatacakeHandle::wait_for_nodes`](crate::DatacakeHandle::wait_for_nodes) timed out.
    #[error("nodes {missing:?} were not live within {timeout:?}")]
    WaitForNodesTimeout {
        /// The ids that were still not live.
        missing: Vec<NodeId>,
        /// How long it waited.
        timeout: Duration,
    },
    /// The node has shut down.
    #[error("the node has shut down")]
    Shutdown,
}
