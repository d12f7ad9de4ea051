//! [`DatacakeNodeBuilder`]: configures a node and joins the cluster.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatId, ProtocolVersion};
use datacake_crdt::DEFAULT_MAX_DRIFT;
use datacake_rpc::{Server, TlsConfig};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::auth::PeerAuth;
use crate::clock::{Clock, WallClock};
use crate::config::{self, ConnectionConfig, Timings};
use crate::discovery::{Discovery, DiscoveryConfig, Poller};
use crate::error::NodeError;
use crate::identity::{NodeIdentity, IDENTITY_SCHEME};
use crate::join::JoinSnapshot;
use crate::membership::{ClusterMember, NodeId, KEY_JOINING, KEY_LEAVING};
use crate::network::RpcNetwork;
use crate::node::{DatacakeNode, NodeParts};
use crate::selector::{DCAwareSelector, NodeSelector};
use crate::transport::{GossipService, GossipShared, RpcTransport};

/// The cluster id used unless [`DatacakeNodeBuilder::with_cluster_id`] sets one.
pub const DEFAULT_CLUSTER_ID: &str = "datacake";
/// The data centre used unless [`DatacakeNodeBuilder::with_data_center`] sets one.
pub const DEFAULT_DATA_CENTER: &str = "default";

/// Configures a [`DatacakeNode`] and joins the cluster with [`connect`](Self::connect).
///
/// ```no_run
/// use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
///
/// # async fn run() -> Result<(), datacake_node::NodeError> {
/// let config = ConnectionConfig::new(
///     "127.0.0.1:0".parse().unwrap(),
///     "127.0.0.1:0".parse().unwrap(),
///     ["127.0.0.1:8000"],
/// );
/// let node = DatacakeNodeBuilder::new(2, config)
///     .with_cluster_id("orders")
///     .with_data_center("eu-west-1a")
///     .with_tag("role", "storage")
///     .connect()
///     .await?;
/// println!("live: {:?}", node.live_members());
/// node.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use]
pub struct DatacakeNodeBuilder<S: NodeSelector = DCAwareSelector> {
    node_id: NodeId,
    config: ConnectionConfig,
    selector: S,
    cluster_id: String,
    data_center: String,
    tags: BTreeMap<String, String>,
    timings: Timings,
    simulated: bool,
    clock_offset_millis: i64,
    tls: Option<TlsConfig>,
    max_message_size: usize,
    discovery: DiscoveryConfig,
}

impl DatacakeNodeBuilder<DCAwareSelector> {
    /// The shortest gossip interval [`connect`](Self::connect) accepts: 1 ms.
    pub const MIN_GOSSIP_INTERVAL: Duration = config::MIN_GOSSIP_INTERVAL;
    /// The longest gossip interval [`connect`](Self::connect) accepts: one hour.
    pub const MAX_GOSSIP_INTERVAL: Duration = config::MAX_GOSSIP_INTERVAL;
    /// The longest minimum failure timeout, join timeout and leave timeout
    /// [`connect`](Self::connect) accepts: one day.
    pub const MAX_TIMEOUT: Duration = config::MAX_TIMEOUT;
    /// The longest dead-node grace period [`connect`](Self::connect) accepts: thirty days.
    pub const MAX_DEAD_NODE_GRACE_PERIOD: Duration = config::MAX_DEAD_NODE_GRACE_PERIOD;

    /// A builder for node `node_id` (unique among live members) with the [`DCAwareSelector`],
    /// cluster id [`DEFAULT_CLUSTER_ID`] and data centre [`DEFAULT_DATA_CENTER`].
    pub fn new(node_id: NodeId, config: ConnectionConfig) -> Self {
        Self {
            node_id,
            config,
            selector: DCAwareSelector::default(),
            cluster_id: DEFAULT_CLUSTER_ID.to_string(),
            data_center: DEFAULT_DATA_CENTER.to_string(),
            tags: BTreeMap::new(),
            timings: Timings::default(),
            simulated: false,
            clock_offset_millis: 0,
            tls: None,
            max_message_size: datacake_rpc::DEFAULT_MAX_BODY_SIZE,
            discovery: DiscoveryConfig::default(),
        }
    }
}

impl<S: NodeSelector> DatacakeNodeBuilder<S> {
    /// Uses `selector` to pick peers for consistency levels.
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder, DCAwareSelector};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config).with_node_selector(DCAwareSelector::default());
    /// ```
    pub fn with_node_selector<S2: NodeSelector>(self, selector: S2) -> DatacakeNodeBuilder<S2> {
        DatacakeNodeBuilder {
            node_id: self.node_id,
            config: self.config,
            selector,
            cluster_id: self.cluster_id,
            data_center: self.data_center,
            tags: self.tags,
            timings: self.timings,
            simulated: self.simulated,
            clock_offset_millis: self.clock_offset_millis,
            tls: self.tls,
            max_message_size: self.max_message_size,
            discovery: self.discovery,
        }
    }

    /// Only nodes with the same cluster id gossip together; others are refused (and logged).
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config).with_cluster_id("orders-prod");
    /// ```
    pub fn with_cluster_id(mut self, cluster_id: impl Into<String>) -> Self {
        self.cluster_id = cluster_id.into();
        self
    }

    /// The data centre this node is in (gossiped; used by the [`DCAwareSelector`]).
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config).with_data_center("us-east-1b");
    /// ```
    pub fn with_data_center(mut self, data_center: impl Into<String>) -> Self {
        self.data_center = data_center.into();
        self
    }

    /// A small user key/value gossiped with the node (visible in
    /// [`ClusterMember::tags`]). Keep tags few and short: every gossip round carries them
    /// to nodes that have not seen them yet.
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config).with_tag("role", "storage");
    /// ```
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// How often the node gossips with (up to three) peers. Default 100 ms. The failure
    /// detector scales with it.
    ///
    /// Between [`MIN_GOSSIP_INTERVAL`](DatacakeNodeBuilder::MIN_GOSSIP_INTERVAL) (1 ms) and
    /// [`MAX_GOSSIP_INTERVAL`](DatacakeNodeBuilder::MAX_GOSSIP_INTERVAL) (one hour), bounds
    /// included: [`connect`](Self::connect) refuses anything else (zero, or a value whose
    /// derived timeouts of up to twenty intervals would overflow) with
    /// [`NodeError::InvalidConfig`].
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config)
    ///     .with_gossip_interval(std::time::Duration::from_millis(250));
    /// ```
    pub fn with_gossip_interval(mut self, interval: Duration) -> Self {
        self.timings.gossip_interval = interval;
        self
    }

    /// The phi-accrual threshold above which a silent node is held dead. Default 10: with a
    /// 100 ms gossip interval a crashed node is held dead after about one to two seconds.
    /// Higher is slower to detect and less prone to false alarms.
    ///
    /// Must be finite and above zero (a threshold at or below zero, or NaN, would hold every
    /// peer dead; infinity, none): [`connect`](Self::connect) refuses anything else with
    /// [`NodeError::InvalidConfig`].
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config).with_phi_threshold(12.0);
    /// ```
    pub fn with_phi_threshold(mut self, phi: f64) -> Self {
        self.timings.phi_threshold = phi;
        self
    }

    /// A node is never held dead before its heartbeat has stood still this long, whatever
    /// the phi-accrual detector says (its timeout shrinks as heartbeat updates get frequent,
    /// which on a busy machine turns a scheduling stall into a false death). Default: ten
    /// gossip intervals (1 s at the default interval). Crash detection takes the larger of
    /// the two.
    ///
    /// At most [`MAX_TIMEOUT`](DatacakeNodeBuilder::MAX_TIMEOUT) (one day), else
    /// [`connect`](Self::connect) fails with [`NodeError::InvalidConfig`]. Zero leaves crash
    /// detection to the phi-accrual detector alone.
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config)
    ///     .with_min_failure_timeout(std::time::Duration::from_secs(3));
    /// ```
    pub fn with_min_failure_timeout(mut self, timeout: Duration) -> Self {
        self.timings.min_failure_timeout = Some(timeout);
        self
    }

    /// How long a dead node is remembered (and counted in
    /// [`ClusterStatistics::dead_members`](crate::ClusterStatistics::dead_members)) before it
    /// is forgotten. Default one hour. The same period applies to gossiped keys marked for
    /// deletion.
    ///
    /// At most [`MAX_DEAD_NODE_GRACE_PERIOD`](DatacakeNodeBuilder::MAX_DEAD_NODE_GRACE_PERIOD)
    /// (thirty days), else [`connect`](Self::connect) fails with [`NodeError::InvalidConfig`].
    /// Zero forgets a dead node as soon as it is held dead.
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config)
    ///     .with_dead_node_grace_period(std::time::Duration::from_secs(600));
    /// ```
    pub fn with_dead_node_grace_period(mut self, period: Duration) -> Self {
        self.timings.dead_node_grace_period = period;
        self
    }

    /// How long [`connect`](Self::connect) waits for a first exchange with the seeds (to
    /// check that no live member already holds this node id). A seed that does not answer in
    /// time is not an error: the node starts and keeps retrying it. Default 2 s.
    ///
    /// At most [`MAX_TIMEOUT`](DatacakeNodeBuilder::MAX_TIMEOUT) (one day), else
    /// [`connect`](Self::connect) fails with [`NodeError::InvalidConfig`]. The duplicate-id
    /// check (a first exchange with the seeds, then at least three gossip intervals) runs
    /// within this timeout: a shorter one cuts the check short, and zero skips it.
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config)
    ///     .with_join_timeout(std::time::Duration::from_secs(5));
    /// ```
    pub fn with_join_timeout(mut self, timeout: Duration) -> Self {
        self.timings.join_timeout = timeout;
        self
    }

    /// How long [`DatacakeNode::shutdown`] waits for peers to hear of the departure (and for
    /// extension tasks to stop), and, before that, for the extensions' leave hooks
    /// ([`ExtensionGuard::before_leave`](crate::ExtensionGuard::before_leave); the
    /// eventually consistent store hands off its data in one). A shutdown therefore takes at
    /// most twice this. Default 500 ms.
    ///
    /// At most [`MAX_TIMEOUT`](DatacakeNodeBuilder::MAX_TIMEOUT) (one day), else
    /// [`connect`](Self::connect) fails with [`NodeError::InvalidConfig`]. Zero cancels the
    /// leave hooks, announces the leave without waiting for it to be delivered and aborts
    /// extension tasks at once; peers that miss the announcement see the departure through
    /// failure detection.
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config)
    ///     .with_leave_timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn with_leave_timeout(mut self, timeout: Duration) -> Self {
        self.timings.leave_timeout = timeout;
        self
    }

    /// Shifts this node's wall clock by `offset_millis` (positive: ahead, negative: behind),
    /// as if the machine's clock were set wrong: the node's [`Clock`] builds its stamps and
    /// checks remote stamps against that reading. For testing how a cluster copes with clock
    /// skew; in production leave it at 0 and run NTP.
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// // A node whose clock runs 2 s fast.
    /// let builder = DatacakeNodeBuilder::new(1, config).with_clock_offset(2_000);
    /// ```
    pub fn with_clock_offset(mut self, offset_millis: i64) -> Self {
        self.clock_offset_millis = offset_millis;
        self
    }

    /// Turns mutual TLS on for everything the node says and hears: gossip, and every
    /// extension's RPCs. `tls` holds the cluster CA, this node's certificate and key; the
    /// certificate must name this node as `datacake://<cluster id>/<node id>` (a SAN URI; see
    /// [`NodeIdentity`]), or [`connect`](Self::connect) fails with
    /// [`NodeError::InvalidConfig`]. Peers are then admitted only with a certificate from
    /// the same CA naming this cluster, a call claiming to come from node X only with X's
    /// certificate ([`DatacakeHandle::verify_caller`](crate::DatacakeHandle::verify_caller)),
    /// and a member's address only once that member has proven it itself.
    ///
    /// Without it the node speaks plaintext and believes what its peers claim: keep such a
    /// cluster on a network only it can reach (a warning is logged when a plaintext node
    /// listens on a non-loopback address).
    ///
    /// ```no_run
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("10.0.0.7:8000".parse().unwrap(), "10.0.0.7:8000".parse().unwrap(), ["10.0.0.1:8000"]);
    /// let tls = datacake_rpc::TlsConfig::mutual_from_files("ca.pem", "node-7.pem", "node-7-key.pem")
    ///     .expect("readable certificates");
    /// let builder = DatacakeNodeBuilder::new(7, config).with_cluster_id("orders").with_tls(tls);
    /// ```
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The largest request body the node's RPC server takes, for gossip and every
    /// extension's service ([`datacake_rpc::DEFAULT_MAX_BODY_SIZE`], 64 MiB, by default); a
    /// larger one is refused with [`PayloadTooLarge`](datacake_rpc::ErrorCode::PayloadTooLarge).
    /// The gossip service then refuses a gossip message over one datagram (65,507 bytes), the
    /// same way, after the server read it. Above the server's per-connection buffer budget
    /// ([`datacake_rpc::DEFAULT_MAX_CONNECTION_BUFFER`]) [`connect`](Self::connect) fails.
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config).with_max_message_size(8 << 20);
    /// ```
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Adds a source of seed addresses, polled in [`connect`](Self::connect) and then every
    /// discovery interval ([`with_discovery_interval`](Self::with_discovery_interval)); the
    /// node sends a gossip round to discovered addresses that are not live members yet, so
    /// nodes started in any order, or at new addresses, find each other. Call it again to add
    /// more sources (their addresses are combined). [`ConnectionConfig::seeds`] keep working
    /// alongside. See [`Discovery`] and the crate docs' "Discovery" section.
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder, DnsDiscovery, FileDiscovery};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config)
    ///     .with_discovery(DnsDiscovery::new("datacake.prod.svc.cluster.local", 7000))
    ///     .with_discovery(FileDiscovery::new("/etc/datacake/extra-peers"));
    /// ```
    pub fn with_discovery(mut self, source: impl Discovery) -> Self {
        self.discovery.sources.push(Arc::new(source));
        self
    }

    /// How often the discovery sources are polled after the first poll in
    /// [`connect`](Self::connect). Default
    /// [`DEFAULT_DISCOVERY_INTERVAL`](crate::DEFAULT_DISCOVERY_INTERVAL) (10 s).
    ///
    /// From 10 ms to one day, else [`connect`](Self::connect) fails with
    /// [`NodeError::InvalidConfig`] (setting `"discovery_interval"`).
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config)
    ///     .with_discovery_interval(std::time::Duration::from_secs(30));
    /// ```
    pub fn with_discovery_interval(mut self, interval: Duration) -> Self {
        self.discovery.interval = interval;
        self
    }

    /// How long one poll of one discovery source may take; a source that takes longer is
    /// logged and its last good addresses stay in use. Default
    /// [`DEFAULT_DISCOVERY_TIMEOUT`](crate::DEFAULT_DISCOVERY_TIMEOUT) (5 s).
    ///
    /// Above zero and at most one day, else [`connect`](Self::connect) fails with
    /// [`NodeError::InvalidConfig`] (setting `"discovery_timeout"`). The first poll, in
    /// [`connect`](Self::connect), waits for it too.
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config)
    ///     .with_discovery_timeout(std::time::Duration::from_secs(2));
    /// ```
    pub fn with_discovery_timeout(mut self, timeout: Duration) -> Self {
        self.discovery.timeout = timeout;
        self
    }

    /// Runs the node on turmoil's simulated network instead of the real one: its RPC server
    /// (which carries gossip and every extension's services) listens with
    /// [`Server::listen_simulated`] and its [`RpcNetwork`] opens channels with
    /// [`Channel::connect_simulated`](datacake_rpc::Channel::connect_simulated). For
    /// deterministic cluster tests; [`connect`](Self::connect) must then run inside a turmoil
    /// host, and the addresses are simulated ones (e.g. `turmoil::lookup("node-1")`). The
    /// node's [`Clock`] then reads turmoil's simulated wall clock (`turmoil::since_epoch`), so
    /// stamps follow simulated time.
    ///
    /// Gossip reaches chitchat's message codec through loopback UDP sockets that never leave
    /// the process (see the `transport` module): these are real tokio sockets, so the
    /// simulation must enable tokio's I/O driver (`turmoil::Builder::enable_tokio_io`).
    ///
    /// ```
    /// # use datacake_node::{ConnectionConfig, DatacakeNodeBuilder};
    /// # let config = ConnectionConfig::new("0.0.0.0:9000".parse().unwrap(), "192.168.0.1:9000".parse().unwrap(), Vec::<String>::new());
    /// let builder = DatacakeNodeBuilder::new(1, config).with_simulated_network();
    /// ```
    #[cfg(feature = "simulation")]
    pub fn with_simulated_network(mut self) -> Self {
        self.simulated = true;
        self
    }

    /// Starts the RPC server and gossip, and joins the cluster through the seeds.
    ///
    /// First checks every timing against the bounds documented on its setter and returns
    /// [`NodeError::InvalidConfig`], naming the setting, before anything is bound or started.
    ///
    /// With discovery sources ([`with_discovery`](Self::with_discovery)), polls them once
    /// (each within the discovery timeout) and sends a gossip round to what they found.
    ///
    /// If seeds other than this node are configured, or discovery found other addresses,
    /// waits (at most the join timeout) for a first exchange with the cluster, then watches a
    /// few gossip rounds: if a live member already holds this node id, the node leaves again
    /// and this returns [`NodeError::DuplicateNodeId`]. A member at this node's own public
    /// address does not count: the address leads to this node's listener now, so that process
    /// is gone (a restart right after a crash); the restart replaces it.
    #[tracing::instrument(skip_all, fields(node_id = self.node_id))]
    pub async fn connect(self) -> Result<DatacakeNode, NodeError> {
        let Self {
            node_id,
            config,
            selector,
            cluster_id,
            data_center,
            tags,
            timings,
            simulated,
            clock_offset_millis,
            tls,
            max_message_size,
            discovery,
        } = self;
        timings.validate()?;
        discovery.validate()?;
        if config.public_addr.ip().is_unspecified() {
            return Err(NodeError::InvalidPublicAddr {
                addr: config.public_addr,
            });
        }
        let tls = tls
            .map(|tls| cluster_tls(tls, &cluster_id, node_id))
            .transpose()?;
        if tls.is_none() && !simulated && !config.listen_addr.ip().is_loopback() {
            warn!(
                addr = %config.listen_addr,
                "plaintext node on a non-loopback address: anyone who reaches it can join the \
                 cluster and read and write its data; turn TLS on (DatacakeNodeBuilder::with_tls) \
                 or keep the network private"
            );
        }
        let server = listen(config.listen_addr, simulated, tls.clone(), max_message_size)
            .await
            .map_err(|source| NodeError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        let mut public_addr = config.public_addr;
        if public_addr.port() == 0 {
            public_addr.set_port(server.local_addr().port());
        }
        let me = ClusterMember {
            node_id,
            public_addr,
            data_center: Arc::from(data_center),
            tags: Arc::new(tags),
        };

        let network = network(simulated, tls.clone(), &cluster_id)?;
        let auth = Arc::new(PeerAuth::new(
            &cluster_id,
            tls.is_some(),
            (node_id, public_addr),
        ));
        let send_timeout = timings
            .gossip_interval
            .saturating_mul(10)
            .max(Duration::from_secs(1));
        let (inbox_tx, inbox_rx) = RpcTransport::inbox();
        let gossip = Arc::new(GossipShared::new(
            node_id,
            public_addr,
            &cluster_id,
            network.clone(),
            send_timeout,
            inbox_tx.clone(),
        ));
        server.add_service(GossipService::new(inbox_tx, auth.clone(), send_timeout));
        let transport = RpcTransport::new(gossip.clone(), inbox_rx);

        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(node_id.to_string(), generation, public_addr),
            cluster_id: cluster_id.clone(),
            gossip_interval: timings.gossip_interval,
            listen_addr: public_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: timings.failure_detector(),
            marked_for_deletion_grace_period: timings.dead_node_grace_period,
            catchup_callback: None,
            extra_liveness_predicate: Some(Box::new(|state| state.get(KEY_LEAVING).is_none())),
            // The compressed digest: a SYN lists every member, so it is several times
            // smaller (see the README's limits).
            protocol_version: ProtocolVersion::V1,
        };
        // Marked as joining until the duplicate-id check below is done (see
        // `ViewEntry::rank`): a duplicate never displaces the live member meanwhile.
        let mut key_values = me.to_key_values();
        key_values.push((KEY_JOINING.to_string(), "true".to_string()));
        let chitchat = spawn_chitchat(chitchat_config, key_values, &transport)
            .await
            .map_err(|error| NodeError::Gossip {
                reason: format!("{error:#}"),
            })?;
        gossip.know_table(chitchat.chitchat());
        info!(node_id, addr=%public_addr, cluster_id=%cluster_id, "node started");

        let has_other_seeds = config
            .seeds
            .iter()
            .any(|seed| seed.parse::<SocketAddr>().ok() != Some(public_addr));
        let node = DatacakeNode::start(NodeParts {
            me,
            generation,
            cluster_id,
            clock: Clock::reading(
                node_id,
                DEFAULT_MAX_DRIFT,
                WallClock::new(clock_offset_millis, simulated),
            ),
            network,
            selector: Box::new(selector),
            server,
            chitchat,
            gossip,
            auth,
            timings: timings.clone(),
            other_seeds: has_other_seeds,
        })
        .await;

        let mut poller = Poller::new(discovery, public_addr);
        let mut discovered_others = false;
        if let Some(poller) = poller.as_mut() {
            let discovered = poller.poll().await;
            discovered_others = node.discovery_target().feed(poller, &discovered) > 0;
        }
        if has_other_seeds || discovered_others {
            if let Some(existing_addr) = join_check(&node, &timings).await {
                warn!(node_id, existing=%existing_addr, "node id already live: leaving again");
                node.shutdown().await;
                return Err(NodeError::DuplicateNodeId {
                    node_id,
                    existing_addr,
                });
            }
        }
        node.finish_joining().await;
        if let Some(poller) = poller {
            node.spawn_task(node.discovery_target().run(poller));
        }
        Ok(node)
    }
}

/// Checks that the node's own certificate names this node of this cluster, and narrows the
/// trust to peers whose certificates name this cluster.
fn cluster_tls(tls: TlsConfig, cluster_id: &str, node_id: NodeId) -> Result<TlsConfig, NodeError> {
    let invalid = |reason: String| NodeError::InvalidConfig {
        setting: "tls",
        reason,
    };
    let me = NodeIdentity::new(cluster_id, node_id).map_err(|e| invalid(e.to_string()))?;
    let names = tls.identity().uris();
    if !names.iter().any(|uri| *uri == me.to_uri()) {
        return Err(invalid(format!(
            "the node's certificate must name {me} (it names {names:?})"
        )));
    }
    Ok(tls.require_peer_uri_prefix(format!("{IDENTITY_SCHEME}://{cluster_id}/")))
}

/// The RPC server on the real network or, with `simulated`, on turmoil's.
async fn listen(
    addr: SocketAddr,
    simulated: bool,
    tls: Option<TlsConfig>,
    max_message_size: usize,
) -> std::io::Result<Server> {
    let mut builder = Server::builder().max_body_size(max_message_size);
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    #[cfg(feature = "simulation")]
    if simulated {
        return builder.listen_simulated(addr).await;
    }
    debug_assert!(
        !simulated,
        "the simulated network needs the `simulation` feature"
    );
    builder.listen(addr).await
}

/// The channel pool on the real network or, with `simulated`, on turmoil's.
fn network(
    simulated: bool,
    tls: Option<TlsConfig>,
    cluster_id: &str,
) -> Result<RpcNetwork, NodeError> {
    #[cfg(feature = "simulation")]
    let network = if simulated {
        RpcNetwork::simulated()
    } else {
        RpcNetwork::new()
    };
    #[cfg(not(feature = "simulation"))]
    let network = {
        debug_assert!(
            !simulated,
            "the simulated network needs the `simulation` feature"
        );
        RpcNetwork::new()
    };
    match tls {
        // `cluster_tls` checked the cluster id already; this keeps the error typed anyway.
        Some(tls) => network
            .with_tls(tls)
            .verifying_node_identities(cluster_id)
            .map_err(|e| NodeError::InvalidConfig {
                setting: "cluster_id",
                reason: e.to_string(),
            }),
        None => Ok(network),
    }
}

/// Joining: waits for a first exchange with the cluster (bounded by the join timeout), then
/// watches for another node with our id that is alive — held live by the failure detector, or
/// with a heartbeat that advanced while we watched (a crashed earlier incarnation of this node
/// has a frozen heartbeat and is not a duplicate). The watch lasts three gossip intervals and
/// at least until fresh gossip arrived twice more (so a stalled, overloaded process does not
/// cut it short), within the join timeout. Returns the address of a duplicate.
async fn join_check(node: &DatacakeNode, timings: &Timings) -> Option<SocketAddr> {
    let poll = (timings.gossip_interval / 2).max(Duration::from_millis(1));
    // Timings are validated to at most `MAX_TIMEOUT` (a day); the `min`s keep the additions
    // below from overflowing whatever they hold.
    let deadline = Instant::now() + timings.join_timeout.min(config::MAX_TIMEOUT);
    let mut first_seen: HashMap<ChitchatId, u64> = HashMap::new();
    let mut duplicate = |snapshot: &JoinSnapshot| {
        for other in &snapshot.same_id {
            let first = *first_seen
                .entry(other.id.clone())
                .or_insert(other.heartbeat);
            if other.live || other.heartbeat > first {
                return Some(other.id.gossip_advertise_addr);
            }
        }
        None
    };
    let mut last_heartbeats = loop {
        let snapshot = node.join_snapshot().await;
        if let Some(addr) = duplicate(&snapshot) {
            return Some(addr);
        }
        if snapshot.known_peers > 0 {
            break snapshot.peer_heartbeats;
        }
        if Instant::now() >= deadline {
            info!(
                node_id = node.me().node_id,
                "no seed answered yet: starting alone, seeds are retried"
            );
            return None;
        }
        tokio::time::sleep(poll).await;
    };
    let watch = timings
        .gossip_interval
        .saturating_mul(3)
        .min(config::MAX_TIMEOUT);
    let watch_until = Instant::now() + watch;
    let mut fresh_gossip = 0;
    while Instant::now() < deadline && (Instant::now() < watch_until || fresh_gossip < 2) {
        tokio::time::sleep(poll).await;
        let snapshot = node.join_snapshot().await;
        if let Some(addr) = duplicate(&snapshot) {
            return Some(addr);
        }
        if snapshot.peer_heartbeats > last_heartbeats {
            fresh_gossip += 1;
            last_heartbeats = snapshot.peer_heartbeats;
        }
    }
    None
}
