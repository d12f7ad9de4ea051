//! A node's identity as its certificate names it: the URI `datacake://<cluster>/<node-id>` in
//! the certificate's subject alternative names.
//!
//! With TLS on, a peer is who its verified certificate says, never what its messages claim:
//! the node checks every gossip, replication, repair and Raft call against the identity
//! parsed here.

use std::fmt;
use std::str::FromStr;

use crate::membership::NodeId;

/// The URI scheme of a node identity.
pub const IDENTITY_SCHEME: &str = "datacake";

/// The longest cluster id a certificate can name.
pub const MAX_CLUSTER_ID_LEN: usize = 64;

/// A cluster id and a node id, as a certificate names them.
///
/// ```
/// use datacake_node::NodeIdentity;
///
/// let id = NodeIdentity::new("orders", 7).unwrap();
/// assert_eq!(id.to_uri(), "datacake://orders/7");
/// assert_eq!("datacake://orders/7".parse::<NodeIdentity>().unwrap(), id);
/// assert!("datacake://orders/seven".parse::<NodeIdentity>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    cluster: String,
    node_id: NodeId,
}

/// Why a string is not a node identity, or a cluster id cannot be named in one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The URI does not start with `datacake://`.
    #[error("`{uri}` is not a node identity: it must start with `datacake://`")]
    Scheme {
        /// The rejected URI.
        uri: String,
    },
    /// The part after the cluster is not a node id.
    #[error("`{uri}` is not a node identity: expected `datacake://<cluster>/<node-id>` with a numeric node id")]
    Malformed {
        /// The rejected URI.
        uri: String,
    },
    /// The cluster id is empty, too long or uses characters outside `[A-Za-z0-9._-]`.
    #[error("cluster id `{cluster}` cannot be named in a certificate: use 1-{MAX_CLUSTER_ID_LEN} characters from [A-Za-z0-9._-]")]
    ClusterId {
        /// The rejected cluster id.
        cluster: String,
    },
}

impl NodeIdentity {
    /// The identity of node `node_id` in `cluster`; fails for a cluster id a URI cannot carry
    /// unescaped.
    pub fn new(cluster: impl Into<String>, node_id: NodeId) -> Result<Self, IdentityError> {
        let cluster = cluster.into();
        check_cluster_id(&cluster)?;
        Ok(Self { cluster, node_id })
    }

    /// The cluster the identity belongs to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The node id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The identity as a certificate names it: `datacake://<cluster>/<node-id>`.
    pub fn to_uri(&self) -> String {
        self.to_string()
    }

    /// [`to_uri`](Self::to_uri) of node `node_id` of `cluster`, a cluster id that already
    /// passed [`check_cluster_id`].
    pub(crate) fn uri_of(cluster: &str, node_id: NodeId) -> String {
        Self {
            cluster: cluster.to_owned(),
            node_id,
        }
        .to_uri()
    }
}

/// Checks that `cluster` can be named in a node identity.
pub fn check_cluster_id(cluster: &str) -> Result<(), IdentityError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if cluster.is_empty() || cluster.len() > MAX_CLUSTER_ID_LEN || !cluster.chars().all(allowed) {
        return Err(IdentityError::ClusterId {
            cluster: cluster.to_owned(),
        });
    }
    Ok(())
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{IDENTITY_SCHEME}://{}/{}", self.cluster, self.node_id)
    }
}

impl FromStr for NodeIdentity {
    type Err = IdentityError;

    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        let rest = uri
            .strip_prefix(IDENTITY_SCHEME)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or_else(|| IdentityError::Scheme {
                uri: uri.to_owned(),
            })?;
        let malformed = || IdentityError::Malformed {
            uri: uri.to_owned(),
        };
        let (cluster, node) = rest.split_once('/').ok_or_else(malformed)?;
        // Digits only: `u32::from_str` would also take a leading `+`.
        if node.is_empty() || !node.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let node_id = node.parse().map_err(|_| malformed())?;
        Self::new(cluster, node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        for (cluster, id) in [("a", 0), ("orders-prod.eu_1", 7), ("x", u32::MAX)] {
            let identity = NodeIdentity::new(cluster, id).unwrap();
            assert_eq!(identity.to_uri().parse::<NodeIdentity>().unwrap(), identity);
        }
    }

    #[test]
    fn malformed_uris_are_refused_with_the_reason() {
        let scheme = |uri: &str| {
            matches!(
                uri.parse::<NodeIdentity>(),
                Err(IdentityError::Scheme { .. })
            )
        };
        let malformed = |uri: &str| {
            matches!(
                uri.parse::<NodeIdentity>(),
                Err(IdentityError::Malformed { .. })
            )
        };
        let cluster = |uri: &str| {
            matches!(
                uri.parse::<NodeIdentity>(),
                Err(IdentityError::ClusterId { .. })
            )
        };
        assert!(scheme("https://orders/7"));
        assert!(scheme("datacake:/orders/7"));
        assert!(malformed("datacake://orders"));
        assert!(malformed("datacake://orders/"));
        assert!(malformed("datacake://orders/+7"));
        assert!(malformed("datacake://orders/7/8"));
        assert!(malformed("datacake://orders/4294967296"));
        assert!(cluster("datacake:///7"));
        assert!(cluster("datacake://or ders/7"));
        assert!(cluster(&format!(
            "datacake://{}/7",
            "a".repeat(MAX_CLUSTER_ID_LEN + 1)
        )));
    }
}
