//! Raft on turmoil's simulated network, with a fixed seed: a minority partition cannot
//! commit, the majority elects a leader and commits, and after healing all nodes agree.
//!
//! The test drives the simulation step by step from the test thread and checks observable
//! state (Raft metrics, write and read results) between steps, each wait bounded in simulated
//! time. The network is replayed exactly by the seed; openraft's election-timeout jitter is
//! not seeded, so the test asserts only what Raft guarantees whichever node wins an election.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{ConnectionConfig, DatacakeNodeBuilder, NodeId};
use datacake_raft::{
    RaftConfig, RaftError, RaftExtension, RaftHandle, ReadConsistency, Role, StateMachine,
};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

const SEED: u64 = 0xDA7A_CA4E;
const PORT: u16 = 9000;
const NODES: [NodeId; 3] = [1, 2, 3];
/// Bound (simulated time) for an election or for convergence.
const CONVERGE: Duration = Duration::from_secs(30);

/// A replicated map of string keys to numbers.
#[derive(Debug, Default)]
struct Kv {
    map: BTreeMap<String, u64>,
}

/// Sets a key; the response is the previous value.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Set(String, u64);

impl StateMachine for Kv {
    type Command = Set;
    type Response = Option<u64>;
    type Query = ();
    type Answer = BTreeMap<String, u64>;

    fn apply(&mut self, Set(key, value): Set) -> Option<u64> {
        self.map.insert(key, value)
    }

    fn read(&self, _query: ()) -> BTreeMap<String, u64> {
        self.map.clone()
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.map).expect("map encodes")
    }

    fn restore(&mut self, snapshot: &[u8]) {
        self.map = serde_json::from_slice(snapshot).expect("snapshot decodes");
    }
}

type WriteResult = Result<Option<u64>, RaftError>;
type ReadResult = Result<BTreeMap<String, u64>, RaftError>;

/// An operation the test asks a host to run on its own runtime (so its RPCs leave from that
/// host on the simulated network).
enum Op {
    Write(Set, oneshot::Sender<WriteResult>),
    Read(oneshot::Sender<ReadResult>),
}

fn host_name(id: NodeId) -> String {
    format!("node-{id}")
}

/// The simulated cluster: the simulation, each node's Raft handle once started, and a queue of
/// operations per node.
struct Cluster<'a> {
    sim: turmoil::Sim<'a>,
    handles: Arc<Mutex<BTreeMap<NodeId, RaftHandle<Kv>>>>,
    ops: BTreeMap<NodeId, mpsc::UnboundedSender<Op>>,
}

impl Cluster<'_> {
    fn new() -> Self {
        Self::with_config(raft_config())
    }

    fn with_config(config: RaftConfig) -> Self {
        let mut sim = turmoil::Builder::new()
            .rng_seed(SEED)
            .simulation_duration(Duration::from_secs(600))
            // Gossip reaches chitchat's codec through loopback UDP sockets (real tokio
            // sockets, never leaving the process), which need tokio's I/O driver.
            .enable_tokio_io()
            .build();
        let handles = Arc::new(Mutex::new(BTreeMap::new()));
        let mut ops = BTreeMap::new();
        for id in NODES {
            let (tx, rx) = mpsc::unbounded_channel();
            ops.insert(id, tx);
            let inbox = Arc::new(Mutex::new(Some(rx)));
            let handles = handles.clone();
            let config = config.clone();
            sim.host(host_name(id), move || {
                let inbox = inbox.clone();
                let handles = handles.clone();
                let config = config.clone();
                async move {
                    let mut inbox = inbox.lock().take().expect("each host starts once");
                    let public = SocketAddr::new(turmoil::lookup(host_name(id)), PORT);
                    let seeds: Vec<String> = if id == NODES[0] {
                        Vec::new()
                    } else {
                        vec![format!("{}:{PORT}", turmoil::lookup(host_name(NODES[0])))]
                    };
                    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT);
                    let node =
                        DatacakeNodeBuilder::new(id, ConnectionConfig::new(listen, public, seeds))
                            .with_simulated_network()
                            .with_gossip_interval(Duration::from_millis(100))
                            .with_join_timeout(Duration::from_secs(5))
                            .connect()
                            .await?;
                    let raft = node
                        .add_extension(RaftExtension::new(Kv::default(), config))
                        .await?;
                    handles.lock().insert(id, raft.clone());
                    while let Some(op) = inbox.recv().await {
                        let raft = raft.clone();
                        tokio::spawn(async move {
                            match op {
                                Op::Write(set, reply) => {
                                    let _ = reply.send(raft.write(set).await);
                                }
                                Op::Read(reply) => {
                                    let _ = reply.send(raft.read((), ReadConsistency::Local).await);
                                }
                            }
                        });
                    }
                    drop(node);
                    Ok(())
                }
            });
        }
        Self { sim, handles, ops }
    }

    fn handle(&self, id: NodeId) -> Option<RaftHandle<Kv>> {
        self.handles.lock().get(&id).cloned()
    }

    /// Steps the simulation until `done` holds, failing after `bound` of simulated time.
    fn step_until(&mut self, what: &str, bound: Duration, mut done: impl FnMut(&Self) -> bool) {
        let start = self.sim.elapsed();
        while !done(self) {
            assert!(
                self.sim.elapsed() - start < bound,
                "timed out after {bound:?} (simulated) waiting for {what}"
            );
            self.sim.step().expect("no host fails");
        }
    }

    /// Steps the simulation until `rx` has an answer, failing after `bound` of simulated time.
    fn answer<T>(&mut self, what: &str, bound: Duration, mut rx: oneshot::Receiver<T>) -> T {
        let mut answer = None;
        self.step_until(what, bound, |_| {
            if answer.is_none() {
                answer = rx.try_recv().ok();
            }
            answer.is_some()
        });
        answer.expect("answered")
    }

    fn send_write(&self, id: NodeId, key: &str, value: u64) -> oneshot::Receiver<WriteResult> {
        let (tx, rx) = oneshot::channel();
        self.ops[&id]
            .send(Op::Write(Set(key.into(), value), tx))
            .expect("host runs");
        rx
    }

    fn read_local(&mut self, id: NodeId) -> ReadResult {
        let (tx, rx) = oneshot::channel();
        self.ops[&id].send(Op::Read(tx)).expect("host runs");
        self.answer(&format!("a local read on node {id}"), CONVERGE, rx)
    }

    /// The leader all of `ids` agree on, if they do and it is among them and leads.
    fn agreed_leader(&self, ids: &[NodeId]) -> Option<NodeId> {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| self.handle(*id))
            .collect::<Option<_>>()?;
        let leader = handles[0].leader()?;
        let agreed = handles.iter().all(|h| h.leader() == Some(leader));
        let leads = ids.contains(&leader) && self.handle(leader)?.role() == Role::Leader;
        (agreed && leads).then_some(leader)
    }

    fn wait_for_leader(&mut self, ids: &[NodeId]) -> NodeId {
        let what = format!("nodes {ids:?} to agree on a leader among them");
        self.step_until(&what, CONVERGE, |c| c.agreed_leader(ids).is_some());
        self.agreed_leader(ids).expect("leader agreed")
    }
}

fn raft_config() -> RaftConfig {
    RaftConfig::new(NODES.len())
        .with_election_timeout(Duration::from_millis(500), Duration::from_millis(1000))
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_rpc_timeout(Duration::from_secs(2))
        // Writes are sent to the node under test, never forwarded.
        .with_forward_to_leader(false)
}

#[test]
fn a_minority_partition_cannot_commit_the_majority_can_and_all_agree_after_healing() {
    let mut cluster = Cluster::new();
    let old_leader = cluster.wait_for_leader(&NODES);
    let majority: Vec<NodeId> = NODES.into_iter().filter(|id| *id != old_leader).collect();
    let old_term = cluster.handle(old_leader).expect("started").status().term;

    let before = cluster.send_write(old_leader, "before", 1);
    let before = cluster.answer("the write before the partition", CONVERGE, before);
    assert_eq!(before.expect("the healthy cluster commits"), None);
    let committed_before = cluster
        .handle(old_leader)
        .expect("started")
        .status()
        .commit_index
        .expect("the leader reports its commit index");

    // Cut the leader off from both other nodes.
    for id in &majority {
        cluster.sim.partition(host_name(old_leader), host_name(*id));
    }
    let mut minority_write = cluster.send_write(old_leader, "minority", 2);

    // The majority elects a new leader of a higher term and commits.
    let new_leader = cluster.wait_for_leader(&majority);
    let new_leader_handle = cluster.handle(new_leader).expect("started");
    assert!(new_leader_handle.status().term > old_term);
    let majority_write = cluster.send_write(new_leader, "majority", 3);
    let majority_write = cluster.answer("the majority's write", CONVERGE, majority_write);
    assert_eq!(majority_write.expect("the majority commits"), None);
    assert!(new_leader_handle.status().commit_index > Some(committed_before));

    // Meanwhile the minority committed nothing: its write has not succeeded, and its leader's
    // commit index and state machine did not move past the entry before the partition.
    match minority_write.try_recv() {
        Ok(Ok(response)) => panic!("the minority committed a write: {response:?}"),
        Ok(Err(_)) | Err(oneshot::error::TryRecvError::Empty) => {}
        Err(closed) => panic!("the minority's write was dropped: {closed}"),
    }
    let isolated = cluster.handle(old_leader).expect("started").status();
    assert!(
        isolated.commit_index.is_none_or(|c| c <= committed_before),
        "{isolated:?}"
    );
    assert!(
        isolated.applied_index <= Some(committed_before),
        "{isolated:?}"
    );
    let seen = cluster.read_local(old_leader).expect("local read");
    assert_eq!(seen, BTreeMap::from([("before".to_string(), 1)]));

    // Heal: everyone follows one leader and applies the same log.
    for id in &majority {
        cluster.sim.repair(host_name(old_leader), host_name(*id));
    }
    cluster.wait_for_leader(&NODES);
    cluster.step_until("every node to apply the same log", CONVERGE, |c| {
        let applied: Vec<_> = NODES
            .iter()
            .map(|id| c.handle(*id).and_then(|h| h.status().applied_index))
            .collect();
        applied.iter().all(|a| *a == applied[0])
            && applied[0] >= new_leader_handle.status().commit_index
    });
    let expected = BTreeMap::from([("before".to_string(), 1), ("majority".to_string(), 3)]);
    for id in NODES {
        let seen = cluster.read_local(id).expect("local read");
        assert_eq!(seen, expected, "node {id}");
    }
    // The minority's write was discarded, never applied.
    if let Ok(result) = minority_write.try_recv() {
        assert!(result.is_err(), "the discarded write reported {result:?}");
    }
}

/// A leader cut off with a write proposed, while the others elect, commit, snapshot and purge
/// past its entry, gets the missing log as a snapshot when it is back. openraft 0.9 then
/// never answers its `client_write` (the entry is neither applied nor truncated there); the
/// node's writes must not all wait behind it. Before, the entry's permit stayed held, and
/// every later write on that node timed out, until the process restarted.
#[test]
fn a_write_openraft_never_answers_does_not_block_the_nodes_later_writes() {
    let timeout = Duration::from_secs(2);
    let mut cluster = Cluster::with_config(
        raft_config()
            .with_snapshot_policy(3, 0)
            .with_request_timeout(timeout),
    );
    let old_leader = cluster.wait_for_leader(&NODES);
    let majority: Vec<NodeId> = NODES.into_iter().filter(|id| *id != old_leader).collect();
    for id in &majority {
        cluster.sim.partition(host_name(old_leader), host_name(*id));
    }
    let lost = cluster.send_write(old_leader, "lost", 1);
    let new_leader = cluster.wait_for_leader(&majority);
    for i in 0..12 {
        let write = cluster.send_write(new_leader, &format!("k{i}"), i);
        let written = cluster.answer("a majority write", CONVERGE, write);
        assert!(written.is_ok(), "{written:?}");
    }
    let lost = cluster.answer("the cut-off leader's write", CONVERGE, lost);
    assert!(
        matches!(
            lost,
            Err(RaftError::Timeout { .. } | RaftError::QuorumUnavailable)
        ),
        "{lost:?}"
    );
    for id in &majority {
        cluster.sim.repair(host_name(old_leader), host_name(*id));
    }
    cluster.step_until("every node to apply the same log", CONVERGE, |c| {
        let applied: Vec<_> = NODES
            .iter()
            .map(|id| c.handle(*id).and_then(|h| h.status().applied_index))
            .collect();
        applied.iter().all(|a| *a == applied[0] && a.is_some())
    });
    // A write on the old leader is answered at once (it no longer leads: forwarding is off
    // in these tests), not after waiting out its deadline behind the lost entry.
    let write = cluster.send_write(old_leader, "after", 2);
    let started = cluster.sim.elapsed();
    let result = cluster.answer("a write on the old leader", CONVERGE, write);
    assert!(
        !matches!(
            result,
            Err(RaftError::Timeout { .. } | RaftError::QuorumUnavailable)
        ),
        "the write waited behind the lost entry: {result:?}"
    );
    assert!(cluster.sim.elapsed() - started < timeout, "{result:?}");
}
