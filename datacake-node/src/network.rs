//! A pool of RPC channels, one per peer address (and, with TLS, per node expected there),
//! bounded.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datacake_rpc::{Channel, TlsConfig};
use parking_lot::RwLock;

use crate::identity::{check_cluster_id, IdentityError, NodeIdentity};
use crate::membership::NodeId;

/// The node's pool of RPC [`Channel`]s, one per peer address, shared by gossip and by every
/// extension.
///
/// A `Channel` is multiplexed and reconnects by itself, so one per address is all a node
/// needs. Cloning the network is cheap and shares the pool.
///
/// The pool holds at most [`MAX_CHANNELS`] channels: addresses come from the network (a
/// gossip packet names the address its replies go to), so the pool must not grow with what
/// peers claim. Past the bound, the channel used least recently is dropped (calls already
/// holding a clone of it finish).
///
/// To call a member, use [`get_or_connect_node`](Self::get_or_connect_node): with TLS its
/// channel accepts only a server whose certificate names that node, so an address gossip
/// got wrong (or a member lied about) reaches nobody else. [`get_or_connect`](Self::get_or_connect)
/// is for an address alone (a seed, a discovered address).
///
/// ```no_run
/// # async fn demo(node: &datacake_node::DatacakeNode) {
/// let peer = &node.live_members()[0];
/// let channel = node.network().get_or_connect_node(peer.node_id, peer.public_addr);
/// // let client = datacake_rpc::RpcClient::<MyService>::new(channel);
/// # let _ = channel;
/// # }
/// ```
#[derive(Clone, Default)]
pub struct RpcNetwork {
    pool: Arc<Pool>,
    simulated: bool,
    tls: Option<TlsConfig>,
    /// The cluster whose node identities channels to a node require (TLS only), a valid
    /// cluster id.
    cluster: Option<Arc<str>>,
}

/// A pooled channel's key: the address, and the node it must reach (`None`: anyone the
/// TLS settings trust).
type PoolKey = (SocketAddr, Option<NodeId>);

/// The most channels an [`RpcNetwork`] keeps: far more peers than a cluster has, few enough
/// that the pool's memory and sockets stay bounded whatever addresses peers name.
pub const MAX_CHANNELS: usize = 4_096;

#[derive(Default)]
struct Pool {
    channels: RwLock<HashMap<PoolKey, Pooled>>,
    /// A counter stamped on a channel each time it is handed out (its recency).
    clock: AtomicU64,
}

struct Pooled {
    channel: Channel,
    last_used: AtomicU64,
}

impl Pool {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }
}

impl RpcNetwork {
    /// An empty pool of channels on the real network.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty pool of channels on turmoil's simulated network (use inside a turmoil host;
    /// see [`DatacakeNodeBuilder::with_simulated_network`](crate::DatacakeNodeBuilder::with_simulated_network)).
    #[cfg(feature = "simulation")]
    pub fn simulated() -> Self {
        Self {
            simulated: true,
            ..Self::default()
        }
    }

    /// The same pool, its channels speaking mutual TLS with `tls` (see
    /// [`DatacakeNodeBuilder::with_tls`](crate::DatacakeNodeBuilder::with_tls)).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// With TLS, channels from [`get_or_connect_node`](Self::get_or_connect_node) require
    /// the server's certificate to name that node of `cluster_id`
    /// (`datacake://<cluster_id>/<node_id>`). A node's network does this already. Fails for
    /// a cluster id no certificate can name.
    pub fn verifying_node_identities(
        mut self,
        cluster_id: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let cluster_id = cluster_id.into();
        check_cluster_id(&cluster_id)?;
        self.cluster = Some(cluster_id.into());
        Ok(self)
    }

    /// Whether the channels are opened on turmoil's simulated network.
    pub fn is_simulated(&self) -> bool {
        self.simulated
    }

    /// The channel to `addr`, created (lazily connected) on first use. With TLS it accepts
    /// any server the TLS settings trust (a member of the cluster).
    pub fn get_or_connect(&self, addr: SocketAddr) -> Channel {
        self.pooled((addr, None))
    }

    /// The channel to node `node_id` at `addr`. With TLS and
    /// [`verifying_node_identities`](Self::verifying_node_identities), it fails its calls
    /// with [`Connection`](datacake_rpc::ErrorCode::Connection) unless the server's
    /// certificate names that node; otherwise it is [`get_or_connect`](Self::get_or_connect)'s
    /// channel.
    pub fn get_or_connect_node(&self, node_id: NodeId, addr: SocketAddr) -> Channel {
        let checked = self.tls.is_some() && self.cluster.is_some();
        self.pooled((addr, checked.then_some(node_id)))
    }

    fn pooled(&self, key: PoolKey) -> Channel {
        let now = self.pool.tick();
        if let Some(pooled) = self.pool.channels.read().get(&key) {
            pooled.last_used.store(now, Ordering::Relaxed);
            return pooled.channel.clone();
        }
        let mut channels = self.pool.channels.write();
        if !channels.contains_key(&key) && channels.len() >= MAX_CHANNELS {
            let oldest = channels
                .iter()
                .min_by_key(|(_, p)| p.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                channels.remove(&oldest);
            }
        }
        channels
            .entry(key)
            .or_insert_with(|| Pooled {
                channel: self.connect(key),
                last_used: AtomicU64::new(now),
            })
            .channel
            .clone()
    }

    fn connect(&self, (addr, node_id): PoolKey) -> Channel {
        let mut builder = Channel::builder();
        if let Some(tls) = &self.tls {
            let required = node_id
                .zip(self.cluster.as_deref())
                .map(|(id, cluster)| NodeIdentity::uri_of(cluster, id));
            builder = builder.tls(match required {
                Some(uri) => tls.clone().require_peer_uri(uri),
                None => tls.clone(),
            });
        }
        #[cfg(feature = "simulation")]
        if self.simulated {
            return builder.connect_simulated(addr);
        }
        builder.connect(addr)
    }

    /// Drops the pooled channels to `addr` (in-flight calls on clones finish). Returns whether
    /// there was one.
    pub fn disconnect(&self, addr: SocketAddr) -> bool {
        let mut channels = self.pool.channels.write();
        let before = channels.len();
        channels.retain(|(a, _), _| *a != addr);
        channels.len() < before
    }

    /// How many channels are pooled.
    pub fn len(&self) -> usize {
        self.pool.channels.read().len()
    }

    /// `true` if no channel is pooled.
    pub fn is_empty(&self) -> bool {
        self.pool.channels.read().is_empty()
    }
}

impl fmt::Debug for RpcNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcNetwork")
            .field("channels", &self.pool.channels.read().len())
            .field("simulated", &self.simulated)
            .field("tls", &self.tls.is_some())
            .field("cluster", &self.cluster)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, (n >> 8) as u8, n as u8], 7000))
    }

    #[test]
    fn without_tls_a_node_channel_is_the_address_channel() {
        assert!(RpcNetwork::new()
            .verifying_node_identities("no spaces")
            .is_err());
        let network = RpcNetwork::new().verifying_node_identities("c").unwrap();
        network.get_or_connect(addr(1));
        network.get_or_connect_node(7, addr(1));
        assert_eq!(
            network.len(),
            1,
            "nothing to check without tls: one channel"
        );
        assert!(network.disconnect(addr(1)));
        assert!(network.is_empty());
    }

    #[test]
    fn the_pool_stays_bounded_and_drops_the_least_recently_used() {
        let network = RpcNetwork::new();
        for n in 0..MAX_CHANNELS {
            network.get_or_connect(addr(n));
        }
        // Address 0 is used again, so address 1 is now the least recently used.
        network.get_or_connect(addr(0));
        for n in MAX_CHANNELS..MAX_CHANNELS + 10 {
            network.get_or_connect(addr(n));
            assert_eq!(network.len(), MAX_CHANNELS);
        }
        let pooled = |n| network.pool.channels.read().contains_key(&(addr(n), None));
        assert!(pooled(0), "a recently used channel stays");
        assert!(!pooled(1), "the least recently used went first");
        assert!(pooled(MAX_CHANNELS + 9));
    }
}
