//! Where a node listens, what it advertises, whom it contacts first — and its timings.

use std::net::SocketAddr;
use std::time::Duration;

/// Addresses of a node: where it binds, where peers reach it, and the seeds it gossips with
/// to join.
///
/// ```
/// use datacake_node::ConnectionConfig;
///
/// // Bind every interface, advertise a routable address, join through two seeds.
/// let config = ConnectionConfig::new(
///     "0.0.0.0:8000".parse().unwrap(),
///     "10.0.0.7:8000".parse().unwrap(),
///     ["db-1.internal:8000", "10.0.0.5:8000"],
/// );
/// assert_eq!(config.seeds.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The address the RPC server (which also carries gossip) binds. Port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// The address peers reach this node at. Its IP must be reachable (not `0.0.0.0`); port 0
    /// means "the port actually bound", handy with a `listen_addr` on port 0.
    pub public_addr: SocketAddr,
    /// Seeds as `host:port` strings. Host names are resolved (DNS) when gossiping, so a seed
    /// that is not up yet, or not resolvable yet, is retried rather than fatal.
    pub seeds: Vec<String>,
}

impl ConnectionConfig {
    /// A configuration from its three parts.
    pub fn new(
        listen_addr: SocketAddr,
        public_addr: SocketAddr,
        seeds: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            listen_addr,
            public_addr,
            seeds: seeds.into_iter().map(Into::into).collect(),
        }
    }
}

/// Gossip and failure-detection timings. The defaults suit a LAN with a 100 ms gossip
/// interval: a crashed node is held dead after roughly one to two seconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timings {
    /// How often each node gossips with up to three peers.
    pub(crate) gossip_interval: Duration,
    /// The phi-accrual threshold above which a silent node is held dead.
    pub(crate) phi_threshold: f64,
    /// A node is never held dead before its heartbeat has stood still this long (`None`: ten
    /// gossip intervals).
    pub(crate) min_failure_timeout: Option<Duration>,
    /// How long a dead node's state is kept before it is forgotten.
    pub(crate) dead_node_grace_period: Duration,
    /// How long `connect` waits for a first exchange with the seeds.
    pub(crate) join_timeout: Duration,
    /// How long `shutdown` waits for peers to hear of the leave.
    pub(crate) leave_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            gossip_interval: Duration::from_millis(100),
            phi_threshold: 10.0,
            min_failure_timeout: None,
            dead_node_grace_period: Duration::from_secs(60 * 60),
            join_timeout: Duration::from_secs(2),
            leave_timeout: Duration::from_millis(500),
        }
    }
}

impl Timings {
    /// The minimum time a node's heartbeat must stand still before it is held dead.
    pub(crate) fn min_failure_timeout(&self) -> Duration {
        self.min_failure_timeout
            .unwrap_or(self.gossip_interval * 10)
    }

    /// chitchat's failure-detector configuration for these timings.
    pub(crate) fn failure_detector(&self) -> chitchat::FailureDetectorConfig {
        chitchat::FailureDetectorConfig {
            phi_threshold: self.phi_threshold,
            sampling_window_size: 1_000,
            // Heartbeat gaps longer than this are not learnt as "normal" (a paused peer must
            // not teach the detector to wait forever).
            max_interval: self.gossip_interval * 20,
            // Before any sample the detector assumes heartbeats arrive every gossip interval.
            initial_interval: self.gossip_interval,
            dead_node_grace_period: self.dead_node_grace_period,
        }
    }
}
