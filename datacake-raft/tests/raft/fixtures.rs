//! Shared fixtures: a small key/value state machine, nodes with short timings, and waits.

use std::collections::BTreeMap;
use std::time::Duration;

use datacake_node::{DatacakeNode, DatacakeNodeBuilder, NodeId};
use datacake_raft::{rkyv, LogStorage, RaftConfig, RaftExtension, RaftHandle, Role, StateMachine};
use test_helper::TempDir;

/// The largest election timeout of test nodes.
pub(crate) const ELECTION_MAX: Duration = Duration::from_millis(1000);
/// Generous bound for convergence on a loaded machine (tests never assert on timing).
pub(crate) const CONVERGE: Duration = Duration::from_secs(30);

/// A replicated map of string keys to numbers.
#[derive(Debug, Default)]
pub(crate) struct KvMachine {
    map: BTreeMap<String, u64>,
}

/// Sets a key; the response is the previous value. (Derived through datacake-raft's rkyv
/// re-export, as an application without its own rkyv dependency would.)
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = datacake_raft::rkyv)]
pub(crate) struct Set(pub(crate) String, pub(crate) u64);

/// Reads a key, or every key with `All`.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = datacake_raft::rkyv)]
pub(crate) enum Get {
    Key(String),
    All,
}

impl StateMachine for KvMachine {
    type Command = Set;
    type Response = Option<u64>;
    type Query = Get;
    type Answer = BTreeMap<String, u64>;

    fn apply(&mut self, Set(key, value): Set) -> Option<u64> {
        self.map.insert(key, value)
    }

    fn read(&self, query: Get) -> BTreeMap<String, u64> {
        match query {
            Get::Key(key) => self
                .map
                .get_key_value(&key)
                .map(|(k, v)| (k.clone(), *v))
                .into_iter()
                .collect(),
            Get::All => self.map.clone(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.map).expect("map encodes")
    }

    fn restore(&mut self, snapshot: &[u8]) {
        self.map = serde_json::from_slice(snapshot).expect("snapshot decodes");
    }
}

pub(crate) type Kv = RaftHandle<KvMachine>;

/// Raft settings for tests: short timeouts, `expect` voters to bootstrap.
pub(crate) fn config(expect: usize) -> RaftConfig {
    RaftConfig::new(expect)
        .with_election_timeout(Duration::from_millis(500), ELECTION_MAX)
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_rpc_timeout(Duration::from_secs(2))
}

/// A started node with Raft.
pub(crate) struct RaftNode {
    pub(crate) node: DatacakeNode,
    pub(crate) raft: Kv,
}

impl RaftNode {
    pub(crate) fn id(&self) -> NodeId {
        self.node.me().node_id
    }

    pub(crate) fn seed(&self) -> String {
        self.node.me().public_addr.to_string()
    }
}

/// Starts the Datacake node `id` on loopback, seeded from `seeds`, with the tests' timings.
pub(crate) async fn start_node(id: NodeId, seeds: &[String]) -> DatacakeNode {
    start_node_with(id, seeds, |builder| builder).await
}

/// [`start_node`], with `customize` applied to the builder first.
pub(crate) async fn start_node_with(
    id: NodeId,
    seeds: &[String],
    customize: impl FnOnce(DatacakeNodeBuilder) -> DatacakeNodeBuilder,
) -> DatacakeNode {
    customize(node_builder(id, seeds))
        .connect()
        .await
        .expect("node starts")
}

/// The builder of the Datacake node `id`, seeded from `seeds`, with the tests' timings.
pub(crate) fn node_builder(id: NodeId, seeds: &[String]) -> DatacakeNodeBuilder {
    test_helper::node::builder(id, seeds.to_vec())
        .with_phi_threshold(50.0)
        .with_min_failure_timeout(Duration::from_secs(2))
        .with_join_timeout(Duration::from_secs(5))
}

/// Starts node `id`, seeded from `seeds`, with Raft configured by `config`.
pub(crate) async fn start(id: NodeId, seeds: &[String], config: RaftConfig) -> RaftNode {
    start_with(id, seeds, config, |builder| builder).await
}

/// [`start`], with `customize` applied to the node's builder first.
pub(crate) async fn start_with(
    id: NodeId,
    seeds: &[String],
    config: RaftConfig,
    customize: impl FnOnce(DatacakeNodeBuilder) -> DatacakeNodeBuilder,
) -> RaftNode {
    let node = start_node_with(id, seeds, customize).await;
    let raft = node
        .add_extension(RaftExtension::new(KvMachine::default(), config))
        .await
        .expect("raft starts");
    RaftNode { node, raft }
}

/// Starts nodes `1..=n`, each configured by `config(id)`, all seeded from node 1.
pub(crate) async fn start_cluster(
    n: NodeId,
    config: impl Fn(NodeId) -> RaftConfig,
) -> Vec<RaftNode> {
    let first = start(1, &[], config(1)).await;
    let seed = first.seed();
    let mut nodes = vec![first];
    for id in 2..=n {
        nodes.push(start(id, std::slice::from_ref(&seed), config(id)).await);
    }
    nodes
}

/// Waits until every node in `nodes` is active and all agree on one leader among them, which
/// is the only node in the `Leader` role; returns the leader's id.
pub(crate) async fn wait_for_leader(nodes: &[&RaftNode]) -> NodeId {
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.id()).collect();
    let what = format!("nodes {ids:?} to agree on one leader among them");
    test_helper::wait_for(&what, CONVERGE, || async { agreed_leader(nodes).is_some() }).await;
    agreed_leader(nodes).expect("leader agreed")
}

/// Like [`wait_for_leader`], for bare handles of any state machine.
pub(crate) async fn wait_for_leader_of<S: StateMachine>(handles: &[&RaftHandle<S>]) -> NodeId {
    let agreed = || {
        let leader = handles[0].leader()?;
        let all_agree = handles.iter().all(|h| h.leader() == Some(leader));
        let leaders = handles.iter().filter(|h| h.role() == Role::Leader).count();
        (all_agree && leaders == 1).then_some(leader)
    };
    test_helper::wait_for("handles to agree on one leader", CONVERGE, || async {
        agreed().is_some()
    })
    .await;
    agreed().expect("leader agreed")
}

fn agreed_leader(nodes: &[&RaftNode]) -> Option<NodeId> {
    let leader = nodes[0].raft.leader()?;
    let all_agree = nodes
        .iter()
        .all(|n| n.raft.is_active() && n.raft.leader() == Some(leader));
    let leaders = nodes
        .iter()
        .filter(|n| n.raft.role() == Role::Leader)
        .count();
    let in_set = nodes.iter().any(|n| n.id() == leader);
    (all_agree && leaders == 1 && in_set).then_some(leader)
}

/// The node with id `id`.
pub(crate) fn by_id(nodes: &[RaftNode], id: NodeId) -> &RaftNode {
    nodes.iter().find(|n| n.id() == id).expect("node exists")
}

/// A durable store in `dir`.
pub(crate) fn durable(dir: &TempDir) -> LogStorage {
    LogStorage::Durable(dir.path().to_owned())
}
