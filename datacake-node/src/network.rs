//! A pool of RPC channels, one per peer address, bounded.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datacake_rpc::{Channel, TlsConfig};
use parking_lot::RwLock;

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
    pool: Arc<Pool>,
    simulated: bool,
    tls: Option<TlsConfig>,
}

/// The most channels an [`RpcNetwork`] keeps: far more peers than a cluster has, few enough
/// that the pool's memory and sockets stay bounded whatever addresses peers name.
pub const MAX_CHANNELS: usize = 4_096;

#[derive(Default)]
struct Pool {
    channels: RwLock<HashMap<SocketAddr, Pooled>>,
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

    /// Whether the channels are opened on turmoil's simulated network.
    pub fn is_simulated(&self) -> bool {
        self.simulated
    }

    /// The channel to `addr`, created (lazily connected) on first use.
    pub fn get_or_connect(&self, addr: SocketAddr) -> Channel {
        let now = self.pool.tick();
        if let Some(pooled) = self.pool.channels.read().get(&addr) {
            pooled.last_used.store(now, Ordering::Relaxed);
            return pooled.channel.clone();
        }
        let mut channels = self.pool.channels.write();
        if !channels.contains_key(&addr) && channels.len() >= MAX_CHANNELS {
            let oldest = channels
                .iter()
                .min_by_key(|(_, p)| p.last_used.load(Ordering::Relaxed))
                .map(|(a, _)| *a);
            if let Some(oldest) = oldest {
                channels.remove(&oldest);
            }
        }
        channels
            .entry(addr)
            .or_insert_with(|| Pooled {
                channel: self.connect(addr),
                last_used: AtomicU64::new(now),
            })
            .channel
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
        self.pool.channels.write().remove(&addr).is_some()
    }

    /// How many addresses have a pooled channel.
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
        let pooled = |n| network.pool.channels.read().contains_key(&addr(n));
        assert!(pooled(0), "a recently used channel stays");
        assert!(!pooled(1), "the least recently used went first");
        assert!(pooled(MAX_CHANNELS + 9));
    }
}
