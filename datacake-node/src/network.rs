//! A pool of RPC channels, one per peer address.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use datacake_rpc::{Channel, TlsConfig};
use parking_lot::RwLock;

/// The node's pool of RPC [`Channel`]s, one per peer address, shared by gossip and by every
/// extension.
///
/// A `Channel` is multiplexed and reconnects by itself, so one per address is all a node
/// needs. Cloning the network is cheap and shares the pool.
///
/// ```no_run
/// # async fn demo(node: &datacake_node::DatacakeNode) {
/// let peer = node.live_members()[0].public_addr;
/// let channel = node.network().get_or_connect(peer);
/// // let client = datacake_rpc::RpcClient::<MyService>::new(channel);
/// # let _ = channel;
/// # }
/// ```
#[derive(Clone, Default)]
pub struct RpcNetwork {
    channels: Arc<RwLock<HashMap<SocketAddr, Channel>>>,
    simulated: bool,
    tls: Option<TlsConfig>,
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

    /// Whether the channels are opened on turmoil's simulated network.
    pub fn is_simulated(&self) -> bool {
        self.simulated
    }

    /// The channel to `addr`, created (lazily connected) on first use.
    pub fn get_or_connect(&self, addr: SocketAddr) -> Channel {
        if let Some(channel) = self.channels.read().get(&addr) {
            return channel.clone();
        }
        self.channels
            .write()
            .entry(addr)
            .or_insert_with(|| self.connect(addr))
            .clone()
    }

    fn connect(&self, addr: SocketAddr) -> Channel {
        let mut builder = Channel::builder();
        if let Some(tls) = &self.tls {
            builder = builder.tls(tls.clone());
        }
        #[cfg(feature = "simulation")]
        if self.simulated {
            return builder.connect_simulated(addr);
        }
        builder.connect(addr)
    }

    /// Drops the pooled channel to `addr` (in-flight calls on clones finish). Returns whether
    /// there was one.
    pub fn disconnect(&self, addr: SocketAddr) -> bool {
        self.channels.write().remove(&addr).is_some()
    }

    /// How many addresses have a pooled channel.
    pub fn len(&self) -> usize {
        self.channels.read().len()
    }

    /// `true` if no channel is pooled.
    pub fn is_empty(&self) -> bool {
        self.channels.read().is_empty()
    }
}

impl fmt::Debug for RpcNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcNetwork")
            .field("channels", &self.channels.read().keys().collect::<Vec<_>>())
            .field("simulated", &self.simulated)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}
