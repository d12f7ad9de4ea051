//! Hostile messages sent straight to a node's Raft RPC service, as anyone who reaches the RPC
//! port can: each must come back as a typed refusal, and the cluster must keep electing and
//! committing afterwards.

use std::time::Duration;

use datacake_node::certs::ClusterCa;
use datacake_node::{DatacakeNode, DatacakeNodeBuilder, NodeId, RpcNetwork};
use datacake_rpc::{ErrorCode, Status, TlsConfig};
use openraft::error::{Infallible, InstallSnapshotError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, LogId, SnapshotMeta, StoredMembership, Vote};

use super::client::{call, unreachable_backoff};
use super::{ask, Answer, AppendPacket, Failure, ForwardWritePacket, SnapshotPacket, VotePacket};
use crate::guard::Refusal;
use crate::{RaftConfig, RaftError, RaftExtension, RaftHandle, Role, StateMachine};

/// Bound for an election or for a write to commit on a loaded machine.
const CONVERGE: Duration = Duration::from_secs(30);
/// The deadline of one hostile call.
const CALL: Duration = Duration::from_secs(5);
/// An id no node has: the "leader" the hostile messages claim to come from.
const INTRUDER: u64 = 99;
/// The incarnation the hostile messages claim: newer than any (a replaced incarnation's
/// messages are refused; those tests claim an older one).
const NEWEST: u64 = u64::MAX;

/// A replicated sum, whose snapshots carry `padding` extra bytes.
#[derive(Debug, Default)]
struct Sum {
    sum: u64,
    padding: usize,
}

impl StateMachine for Sum {
    type Command = u64;
    type Response = u64;
    type Query = ();
    type Answer = u64;

    fn apply(&mut self, add: u64) -> u64 {
        self.sum += add;
        self.sum
    }
    fn read(&self, _query: ()) -> u64 {
        self.sum
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = self.sum.to_le_bytes().to_vec();
        bytes.resize(8 + self.padding, 0xAB);
        bytes
    }
    fn restore(&mut self, snapshot: &[u8]) {
        let sum = snapshot.get(..8).and_then(|b| b.try_into().ok());
        self.sum = u64::from_le_bytes(sum.unwrap_or_default());
        self.padding = snapshot.len().saturating_sub(8);
    }
}

struct TestNode {
    node: DatacakeNode,
    raft: RaftHandle<Sum>,
}

/// Raft settings for these tests: short timeouts, three voters to bootstrap.
fn config() -> RaftConfig {
    RaftConfig::new(3)
        .with_election_timeout(Duration::from_millis(500), Duration::from_millis(1000))
        .with_heartbeat_interval(Duration::from_millis(100))
        .with_rpc_timeout(Duration::from_secs(5))
}

/// Starts node `id` on loopback, seeded from `seed`, running Raft over `machine`.
async fn start_node(
    id: NodeId,
    seed: Option<&TestNode>,
    machine: Sum,
    config: RaftConfig,
) -> TestNode {
    start_node_with(id, seed, machine, config, |b| b).await
}

/// [`start_node`], with the node builder changed by `node` first.
async fn start_node_with(
    id: NodeId,
    seed: Option<&TestNode>,
    machine: Sum,
    config: RaftConfig,
    node: impl FnOnce(DatacakeNodeBuilder) -> DatacakeNodeBuilder,
) -> TestNode {
    let seeds = seed.map(|n| n.node.me().public_addr.to_string());
    let builder = test_helper::node::builder(id, seeds)
        .with_phi_threshold(50.0)
        .with_min_failure_timeout(Duration::from_secs(2));
    let node = node(builder).connect().await.expect("node starts");
    let raft = node
        .add_extension(RaftExtension::new(machine, config))
        .await
        .expect("raft starts");
    TestNode { node, raft }
}

/// Starts nodes `1..=3`, seeded from node 1, and waits for a leader they all agree on.
async fn start_cluster(config: impl Fn() -> RaftConfig) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for id in 1..=3 {
        let node = start_node(id, nodes.first(), Sum::default(), config()).await;
        nodes.push(node);
    }
    wait_for_leader(&nodes).await;
    nodes
}

/// Waits until every node names the same leader, which is one of them and the only node in
/// the `Leader` role; returns its id.
async fn wait_for_leader(nodes: &[TestNode]) -> NodeId {
    let agreed = || {
        let leader = nodes[0].raft.leader()?;
        let all = nodes.iter().all(|n| n.raft.leader() == Some(leader));
        let leaders = nodes
            .iter()
            .filter(|n| n.raft.role() == Role::Leader)
            .count();
        let among = nodes.iter().any(|n| n.raft.node_id() == leader);
        (all && leaders == 1 && among).then_some(leader)
    };
    test_helper::wait_for("the nodes to agree on a leader", CONVERGE, || async {
        agreed().is_some()
    })
    .await;
    agreed().expect("leader agreed")
}

/// Waits until a write through `node` commits and every node in `nodes` has applied it.
async fn wait_for_commit(node: &TestNode, nodes: &[TestNode]) {
    let sum = tokio::time::timeout(CONVERGE, async {
        loop {
            // A write can fail while an election is under way; retry until the deadline.
            if let Ok(sum) = node.raft.write(1).await {
                return sum;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a write commits");
    for n in nodes {
        let what = format!("node {} to apply the write", n.raft.node_id());
        test_helper::wait_for(&what, CONVERGE, || async {
            n.raft.read((), crate::ReadConsistency::Local).await.ok() >= Some(sum)
        })
        .await;
    }
}

fn by_id(nodes: &[TestNode], id: NodeId) -> &TestNode {
    nodes
        .iter()
        .find(|n| n.raft.node_id() == id)
        .expect("node exists")
}

/// The current vote of `node`, which a hostile sender could learn by watching the traffic.
fn vote_of(node: &TestNode) -> Vote<u64> {
    node.raft.raft().metrics().borrow().vote
}

/// A vote request of candidate `sender` for `term`, with an empty log. (The node ids are
/// typed: an untyped literal would be an i32, which postcard encodes differently (zigzag)
/// from the u64 the nodes read.)
fn vote_request(term: u64, sender: u64) -> VoteRequest<u64> {
    VoteRequest {
        vote: Vote::new(term, sender),
        last_log_id: None,
    }
}

/// A heartbeat of `sender` as the leader of `term`.
fn heartbeat(term: u64, sender: u64) -> AppendEntriesRequest<crate::types::TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(term, sender),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    }
}

fn assert_refused(status: &Status, what: &str) {
    assert_eq!(
        status.code(),
        ErrorCode::Custom(Refusal::IMPLAUSIBLE_TERM),
        "{what}: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_of_u64_max_is_refused_and_the_cluster_keeps_electing() {
    let mut nodes = start_cluster(config).await;
    let leader = wait_for_leader(&nodes).await;
    let network = nodes[0].node.handle().network().clone();
    let term_before = by_id(&nodes, leader).raft.status().term;

    // A vote request with term u64::MAX (and a log that looks newest) to every node.
    let vote = VoteRequest {
        vote: Vote::new(u64::MAX, INTRUDER),
        last_log_id: Some(LogId::new(
            CommittedLeaderId::new(u64::MAX, INTRUDER),
            u64::MAX,
        )),
    };
    for node in &nodes {
        let addr = node.node.me().public_addr;
        let result = call::<VotePacket, _, Answer<VoteResponse<u64>, Infallible>>(
            network.get_or_connect(addr),
            NEWEST,
            &vote,
            CALL,
        )
        .await;
        let status = result.expect_err("a vote with term u64::MAX is refused");
        assert_refused(&status, "vote");
    }

    // A heartbeat from a "leader" of term u64::MAX to every follower.
    for node in nodes.iter().filter(|n| n.raft.node_id() != leader) {
        let addr = node.node.me().public_addr;
        let result = call::<AppendPacket, _, Answer<AppendEntriesResponse<u64>, Infallible>>(
            network.get_or_connect(addr),
            NEWEST,
            &heartbeat(u64::MAX, INTRUDER),
            CALL,
        )
        .await;
        let status = result.expect_err("a heartbeat with term u64::MAX is refused");
        assert_refused(&status, "append entries");
    }

    // The cluster still commits, and after losing its leader still elects a new one (whose
    // term is the old one plus a few, not u64::MAX + 1) that commits.
    wait_for_commit(by_id(&nodes, leader), &nodes).await;
    let index = nodes
        .iter()
        .position(|n| n.raft.node_id() == leader)
        .unwrap();
    nodes.remove(index).node.shutdown().await;
    let new_leader = wait_for_leader(&nodes).await;
    assert_ne!(new_leader, leader);
    let term_after = by_id(&nodes, new_leader).raft.status().term;
    assert!(
        term_after > term_before && term_after < term_before + 1000,
        "term {term_before} -> {term_after}"
    );
    wait_for_commit(by_id(&nodes, new_leader), &nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_command_that_does_not_check_is_a_codec_error() {
    let nodes = start_cluster(config).await;
    let leader = wait_for_leader(&nodes).await;
    let network = nodes[0].node.handle().network().clone();
    let addr = by_id(&nodes, leader).node.me().public_addr;

    // Three bytes are no archived u64 (the machine's command): bytecheck refuses them where
    // the command is applied, on every node, and the writer hears why.
    let garbage = ForwardWritePacket {
        command: vec![0xFF; 3],
    };
    let outcome = ask(network.get_or_connect(addr), &garbage, CALL)
        .await
        .expect("the call succeeds");
    match outcome.into_result() {
        Err(RaftError::Codec { source }) => assert!(!source.to_string().is_empty()),
        other => panic!("expected a codec error, got {other:?}"),
    }

    // No node panicked: the cluster still commits.
    wait_for_commit(by_id(&nodes, leader), &nodes).await;
    for node in nodes {
        node.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_chunk_at_a_huge_offset_is_refused_without_allocating() {
    let nodes = start_cluster(|| config().with_max_snapshot_size(1 << 20)).await;
    let leader = wait_for_leader(&nodes).await;
    let network = nodes[0].node.handle().network().clone();
    let follower = nodes.iter().find(|n| n.raft.node_id() != leader).unwrap();
    let addr = follower.node.me().public_addr;

    // The first chunk of a snapshot at offset 0, under the follower's own vote so that openraft
    // starts receiving it; then the next chunk at offset 2^40, which openraft would seek to in
    // its in-memory buffer and fill up to: a 1 TiB allocation, and the process aborts.
    let vote = vote_of(follower);
    let chunk = |offset: u64, data: Vec<u8>| InstallSnapshotRequest::<crate::types::TypeConfig> {
        vote,
        meta: SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, INTRUDER), 1)),
            last_membership: StoredMembership::default(),
            snapshot_id: "hostile".to_string(),
        },
        offset,
        data,
        done: false,
    };
    type SnapshotReply = Answer<InstallSnapshotResponse<u64>, InstallSnapshotError>;
    let first = call::<SnapshotPacket, _, SnapshotReply>(
        network.get_or_connect(addr),
        NEWEST,
        &chunk(0, vec![1; 5]),
        CALL,
    )
    .await
    .expect("the call succeeds");
    assert!(first.is_ok(), "the first chunk is accepted: {first:?}");

    let huge = call::<SnapshotPacket, _, SnapshotReply>(
        network.get_or_connect(addr),
        NEWEST,
        &chunk(1 << 40, vec![1; 5]),
        CALL,
    )
    .await
    .expect("the call succeeds");
    match huge {
        Err(Failure::Api(InstallSnapshotError::SnapshotMismatch(mismatch))) => {
            assert_eq!(mismatch.expect.offset, 5, "{mismatch}");
            assert_eq!(mismatch.got.offset, 1 << 40, "{mismatch}");
        }
        other => panic!("expected a snapshot mismatch, got {other:?}"),
    }

    // A chunk in place that would take the snapshot past the node's maximum (1 MiB here).
    let status = call::<SnapshotPacket, _, SnapshotReply>(
        network.get_or_connect(addr),
        NEWEST,
        &chunk(5, vec![1; 1 << 20]),
        CALL,
    )
    .await
    .expect_err("a snapshot beyond the maximum size is refused");
    assert_eq!(
        status.code(),
        ErrorCode::Custom(Refusal::SNAPSHOT_TOO_LARGE),
        "{status}"
    );

    // The follower is alive and the cluster still commits.
    wait_for_commit(by_id(&nodes, leader), &nodes).await;
}

#[test]
fn an_unreachable_peer_is_retried_less_and_less_often_up_to_a_bound() {
    let ms = Duration::from_millis;
    // Default election timeout 1.5 s: waits double from openraft's 500 ms up to 1125 ms.
    let waits: Vec<_> = unreachable_backoff(ms(1500) * 3 / 4).take(4).collect();
    assert_eq!(waits, [ms(500), ms(1000), ms(1125), ms(1125)]);
    // A short election timeout never makes the waits shorter than openraft's own.
    let waits: Vec<_> = unreachable_backoff(ms(100)).take(2).collect();
    assert_eq!(waits, [ms(500), ms(500)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_several_chunks_still_reaches_a_new_learner() {
    // Snapshots of 7 MiB: three chunks, each admitted only where the previous one ended.
    let padding = 7 << 20;
    let config = || config().with_snapshot_policy(1000, 0);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let machine = Sum { sum: 0, padding };
        let node = start_node(id, nodes.first(), machine, config()).await;
        nodes.push(node);
    }
    let leader = by_id(&nodes, wait_for_leader(&nodes).await);
    for _ in 0..5 {
        leader.raft.write(1).await.expect("write commits");
    }
    leader
        .raft
        .trigger_snapshot()
        .await
        .expect("snapshot triggered");
    let last = leader.raft.status().last_log_index.expect("log not empty");
    test_helper::wait_for(
        "the leader to purge its log up to a snapshot",
        CONVERGE,
        || async { leader.raft.status().purged_index >= Some(last) },
    )
    .await;

    let fourth = start_node(4, Some(leader), Sum::default(), config()).await;
    test_helper::wait_for("the leader to see node 4 in gossip", CONVERGE, || async {
        leader.node.live_members().iter().any(|m| m.node_id == 4)
    })
    .await;
    leader.raft.add_learner(4).await.expect("learner added");
    test_helper::wait_for(
        "node 4 to catch up through the snapshot",
        CONVERGE,
        || async {
            fourth
                .raft
                .read((), crate::ReadConsistency::Local)
                .await
                .ok()
                == Some(5)
                && fourth.raft.status().snapshot_index.is_some()
        },
    )
    .await;
    let snapshot = fourth.raft.raft().get_snapshot().await.expect("raft runs");
    let size = snapshot.expect("a snapshot").snapshot.into_inner().len();
    assert_eq!(size, 8 + padding, "the whole snapshot arrived");
}

/// TLS settings for node `id`, signed by `ca`.
fn tls(ca: &ClusterCa, id: NodeId) -> TlsConfig {
    let cert = ca.issue_node(id, &[]).unwrap();
    TlsConfig::mutual_from_pem(
        ca.cert_pem().as_bytes(),
        cert.cert_pem().as_bytes(),
        cert.key_pem().as_bytes(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_member_cannot_vote_or_lead_as_another_node() {
    let ca = ClusterCa::generate("raft-tls").unwrap();
    let mut nodes: Vec<TestNode> = Vec::new();
    for id in 1..=3 {
        let node_tls = tls(&ca, id);
        let node = start_node_with(id, nodes.first(), Sum::default(), config(), |b| {
            b.with_cluster_id("raft-tls").with_tls(node_tls)
        })
        .await;
        nodes.push(node);
    }
    // Votes and appends between the real nodes pass the caller check: a leader is elected
    // and a write commits.
    let leader = wait_for_leader(&nodes).await;
    wait_for_commit(by_id(&nodes, leader), &nodes).await;

    // Node 3's certificate, in the hands of a member that claims to be node 1 (the leader,
    // or a candidate) towards node 2.
    let rogue =
        RpcNetwork::new().with_tls(tls(&ca, 3).require_peer_uri_prefix("datacake://raft-tls/"));
    let target = by_id(&nodes, 2).node.me().public_addr;
    let term = vote_of(by_id(&nodes, 2)).leader_id().term;
    let denied = |status: Status, what: &str| {
        assert_eq!(
            status.code(),
            ErrorCode::PermissionDenied,
            "{what}: {status}"
        );
        assert!(
            status.message().contains("datacake://raft-tls/3"),
            "{what}: {status}"
        );
    };
    let result = call::<VotePacket, _, Answer<VoteResponse<u64>, Infallible>>(
        rogue.get_or_connect(target),
        NEWEST,
        &vote_request(term + 1, 1),
        CALL,
    )
    .await;
    denied(result.expect_err("a vote as node 1"), "vote");
    let result = call::<AppendPacket, _, Answer<AppendEntriesResponse<u64>, Infallible>>(
        rogue.get_or_connect(target),
        NEWEST,
        &heartbeat(term + 1, 1),
        CALL,
    )
    .await;
    denied(result.expect_err("a heartbeat as node 1"), "append entries");
    // The same certificate speaking as its own node is heard (openraft answers).
    let _openraft_answers = call::<VotePacket, _, Answer<VoteResponse<u64>, Infallible>>(
        rogue.get_or_connect(target),
        NEWEST,
        &vote_request(term, 3),
        CALL,
    )
    .await
    .expect("node 3 may speak as node 3");
    wait_for_commit(by_id(&nodes, wait_for_leader(&nodes).await), &nodes).await;
    for node in nodes {
        node.node.shutdown().await;
    }
}

/// A node that stalled until held dead and was started again elsewhere may send Raft
/// messages before gossip tells it it was replaced: its peers refuse every message from an
/// incarnation older than the one they list, and still hear the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_a_replaced_incarnation_are_refused() {
    let nodes = start_cluster(config).await;
    let network = nodes[0].node.handle().network().clone();
    let target = by_id(&nodes, 1).node.me().public_addr;
    let sender = by_id(&nodes, 3);
    let current = sender.node.generation();
    let term = vote_of(by_id(&nodes, 1)).leader_id().term;
    let vote = vote_request(term + 1, 3);
    let replaced = |status: Status, what: &str| {
        assert_eq!(
            status.code(),
            ErrorCode::Custom(Refusal::REPLACED),
            "{what}: {status}"
        );
    };
    let stale = current - 1;
    let result = call::<VotePacket, _, Answer<VoteResponse<u64>, Infallible>>(
        network.get_or_connect(target),
        stale,
        &vote,
        CALL,
    )
    .await;
    replaced(result.expect_err("a vote of the older incarnation"), "vote");
    let result = call::<AppendPacket, _, Answer<AppendEntriesResponse<u64>, Infallible>>(
        network.get_or_connect(target),
        stale,
        &heartbeat(term + 1, 3),
        CALL,
    )
    .await;
    replaced(
        result.expect_err("a heartbeat of the older incarnation"),
        "append",
    );
    // The incarnation the cluster lists is heard (openraft answers; the vote may be denied).
    let _openraft_answers = call::<VotePacket, _, Answer<VoteResponse<u64>, Infallible>>(
        network.get_or_connect(target),
        current,
        &vote,
        CALL,
    )
    .await
    .expect("the current incarnation is heard");
    wait_for_commit(by_id(&nodes, wait_for_leader(&nodes).await), &nodes).await;
    for node in nodes {
        node.node.shutdown().await;
    }
}

/// A blank entry is a few bytes on the wire and about 70 in memory: an append message is
/// refused by its announced number of entries before it is decoded.
#[test]
fn an_append_of_more_entries_than_openraft_sends_is_refused_before_decoding() {
    use super::server::{check_entry_count, MAX_APPEND_ENTRIES};
    use openraft::EntryPayload;

    let blank = |index: u64| crate::types::Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Blank,
    };
    let mut rpc = heartbeat(1, 1);
    rpc.entries = (1..=MAX_APPEND_ENTRIES).map(blank).collect();
    check_entry_count(&crate::codec::encode(&rpc).unwrap()).expect("at the bound");
    rpc.entries.push(blank(MAX_APPEND_ENTRIES + 1));
    let status = check_entry_count(&crate::codec::encode(&rpc).unwrap()).unwrap_err();
    assert_eq!(status.code(), ErrorCode::InvalidPayload, "{status}");
    let status = check_entry_count(b"\x01").unwrap_err();
    assert_eq!(status.code(), ErrorCode::InvalidPayload, "{status}");
}

/// A log entry decodes at most as many commands as a proposer puts in one.
#[test]
fn a_batch_of_more_commands_than_a_proposer_makes_does_not_decode() {
    use crate::codec::{decode, encode, Encoded};
    use crate::proposer::{Batch, MAX_BATCH_COMMANDS};

    let full = Batch(vec![Encoded::default(); MAX_BATCH_COMMANDS]);
    assert_eq!(decode::<Batch>(&encode(&full).unwrap()).unwrap(), full);
    let over = Batch(vec![Encoded::default(); MAX_BATCH_COMMANDS + 1]);
    assert!(decode::<Batch>(&encode(&over).unwrap()).is_err());
}
