//! Who a peer is, believed only as far as it proves it.
//!
//! With TLS on, every call arrives with the caller's verified certificate, which names one
//! node of this cluster ([`NodeIdentity`]). [`PeerAuth`] holds a node to that:
//! - A call claiming to come from node X (a gossip packet, a replication or Raft message) is
//!   refused unless the certificate names X.
//! - A member's address is believed only once the member itself has proven it: a gossip
//!   packet signed by X's certificate and sent from X's address. Until then, what other
//!   members relay about X at some address stays out of the membership view, so nobody but
//!   X can register X at a new address. X is listed at the address it gossips under (its
//!   chitchat identity, the one proven) and at no other: should a member relay a newer
//!   `datacake.public_addr` for X naming another address, the view leaves X out rather
//!   than list it there (with a warning naming X and the address). A node id may hold a
//!   few proven addresses at once (an earlier incarnation that comes back after its id was
//!   started elsewhere, say): the membership view then decides between them as it does on
//!   plaintext.
//!
//! Without TLS nothing can be proven, and everything is believed: a plaintext node trusts
//! its network (see the README's Security section).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use datacake_rpc::{PeerIdentity, Status};
use parking_lot::Mutex;
use tracing::warn;

use crate::identity::NodeIdentity;
use crate::membership::NodeId;

/// How many node addresses a node remembers as proven. Only holders of a certificate from
/// the cluster CA add entries (one per node id), so this is far beyond any real cluster; it
/// bounds memory should a CA issue certificates carelessly.
const MAX_PROVEN: usize = 65_536;
/// How many addresses one node id keeps as proven (the most recently proven ones).
const MAX_ADDRS_PER_NODE: usize = 4;

/// The node's rules for believing its peers.
#[derive(Debug)]
pub(crate) struct PeerAuth {
    cluster: String,
    tls: bool,
    /// Each node's addresses as proven by the node itself, the latest last (TLS only).
    proven: Mutex<HashMap<NodeId, VecDeque<SocketAddr>>>,
}

impl PeerAuth {
    /// The rules for a node of `cluster`, at `me`, with or without TLS.
    pub(crate) fn new(cluster: &str, tls: bool, me: (NodeId, SocketAddr)) -> Self {
        Self {
            cluster: cluster.to_owned(),
            tls,
            proven: Mutex::new(HashMap::from([(me.0, VecDeque::from([me.1]))])),
        }
    }

    /// Checks that a caller whose verified certificate is `peer` may speak for node
    /// `claimed`. On plaintext nothing is checked.
    pub(crate) fn verify(
        &self,
        peer: Option<&PeerIdentity>,
        claimed: NodeId,
    ) -> Result<(), Status> {
        if !self.tls {
            return Ok(());
        }
        let Some(peer) = peer else {
            return Err(Status::permission_denied(
                "this node accepts calls over tls only",
            ));
        };
        let named = || {
            peer.uris()
                .iter()
                .filter_map(|u| u.parse::<NodeIdentity>().ok())
        };
        if named().any(|id| id.cluster() == self.cluster && id.node_id() == claimed) {
            return Ok(());
        }
        let names: Vec<String> = named().map(|id| id.to_uri()).collect();
        Err(Status::permission_denied(format!(
            "the caller claims to be node {claimed} of cluster {} but its certificate names {names:?}",
            self.cluster
        )))
    }

    /// Records that node `node_id`, proven by `peer`'s certificate, sends from `addr`. Call
    /// only after [`verify`](Self::verify) accepted the same claim.
    pub(crate) fn prove_address(&self, node_id: NodeId, addr: SocketAddr) {
        if !self.tls {
            return;
        }
        let mut proven = self.proven.lock();
        if proven.len() >= MAX_PROVEN && !proven.contains_key(&node_id) {
            warn!(node_id, %addr, "too many proven node addresses: not recording another");
            return;
        }
        let addrs = proven.entry(node_id).or_default();
        addrs.retain(|known| *known != addr);
        if addrs.len() == MAX_ADDRS_PER_NODE {
            addrs.pop_front();
        }
        addrs.push_back(addr);
    }

    /// Whether the membership view may list `node_id` at `addr`: always on plaintext; with
    /// TLS, once the node itself has proven that address (and while it is one of the node's
    /// [`MAX_ADDRS_PER_NODE`] latest).
    pub(crate) fn admits(&self, node_id: NodeId, addr: SocketAddr) -> bool {
        !self.tls
            || self
                .proven
                .lock()
                .get(&node_id)
                .is_some_and(|addrs| addrs.contains(&addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn plaintext_believes_everything() {
        let auth = PeerAuth::new("c", false, (1, addr(1)));
        assert!(auth.verify(None, 7).is_ok());
        assert!(auth.admits(7, addr(9)));
    }

    #[test]
    fn with_tls_only_the_owner_proves_its_address() {
        let auth = PeerAuth::new("c", true, (1, addr(1)));
        assert!(auth.admits(1, addr(1)), "a node admits itself");
        assert!(!auth.admits(7, addr(7)), "nothing proven yet");
        auth.prove_address(7, addr(7));
        assert!(auth.admits(7, addr(7)));
        assert!(
            !auth.admits(7, addr(8)),
            "another address for 7 is not proven"
        );
        auth.prove_address(7, addr(8));
        assert!(
            auth.admits(7, addr(8)) && auth.admits(7, addr(7)),
            "7 at two addresses (a restart elsewhere and its earlier incarnation): the view picks"
        );
        for port in 9..=11 {
            auth.prove_address(7, addr(port));
        }
        assert!(
            !auth.admits(7, addr(7)) && (8..=11).all(|port| auth.admits(7, addr(port))),
            "only the latest addresses stay proven"
        );
        auth.prove_address(7, addr(8));
        auth.prove_address(7, addr(12));
        assert!(
            auth.admits(7, addr(8)) && !auth.admits(7, addr(9)),
            "proving an address again keeps it"
        );
    }

    #[test]
    fn with_tls_calls_without_a_certificate_are_refused() {
        let auth = PeerAuth::new("c", true, (1, addr(1)));
        let denied = auth.verify(None, 7).unwrap_err();
        assert_eq!(denied.code(), datacake_rpc::ErrorCode::PermissionDenied);
    }
}
