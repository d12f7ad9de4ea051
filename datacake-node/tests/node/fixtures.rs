//! Shared fixtures: nodes with short timings, started on 127.0.0.1 with a free port.

use std::net::SocketAddr;
use std::time::Duration;

use datacake_node::{
    ConnectionConfig, DCAwareSelector, DatacakeNode, DatacakeNodeBuilder, MembershipChange,
    MembershipChanges, NodeId,
};
use futures::StreamExt;

/// Gossip interval of test nodes: short, so the suite is fast.
pub(crate) const GOSSIP: Duration = Duration::from_millis(50);
/// No node is held dead before its heartbeat stood still this long (in these tests).
pub(crate) const MIN_FAILURE_TIMEOUT: Duration = Duration::from_secs(2);
/// A failure-detector threshold that no scheduling stall of a loaded test machine reaches
/// (a silent node is held dead only after seconds), for tests that must not see false deaths.
pub(crate) const PATIENT_PHI: f64 = 200.0;
/// Generous bound for convergence on a loaded machine (tests never assert on timing).
pub(crate) const CONVERGE: Duration = Duration::from_secs(20);

pub(crate) fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The address other nodes use to seed from `node`.
pub(crate) fn seed(node: &DatacakeNode) -> String {
    node.me().public_addr.to_string()
}

/// A builder with test timings, seeded from `seeds`.
pub(crate) fn builder(id: NodeId, seeds: &[&DatacakeNode]) -> DatacakeNodeBuilder<DCAwareSelector> {
    builder_seeded(id, seeds.iter().map(|n| seed(n)).collect())
}

/// A builder with test timings, seeded from the addresses `seeds`.
pub(crate) fn builder_seeded(
    id: NodeId,
    seeds: Vec<String>,
) -> DatacakeNodeBuilder<DCAwareSelector> {
    DatacakeNodeBuilder::new(id, ConnectionConfig::new(local(), local(), seeds))
        .with_gossip_interval(GOSSIP)
        // A loaded 2-core test machine stalls tasks for hundreds of milliseconds: keep the
        // failure detector patient, except where a test tunes it.
        .with_phi_threshold(50.0)
        .with_min_failure_timeout(MIN_FAILURE_TIMEOUT)
        .with_join_timeout(Duration::from_secs(5))
}

/// Starts node `id` seeded from `seeds`.
pub(crate) async fn start(id: NodeId, seeds: &[&DatacakeNode]) -> DatacakeNode {
    builder(id, seeds).connect().await.expect("node starts")
}

/// The ids `node` currently sees as live.
pub(crate) fn ids(node: &DatacakeNode) -> Vec<NodeId> {
    node.live_members().iter().map(|m| m.node_id).collect()
}

/// Waits until every node in `nodes` sees exactly `expected` as live.
pub(crate) async fn wait_for_view(nodes: &[&DatacakeNode], expected: &[NodeId]) {
    for node in nodes {
        let what = format!("node {} to see members {expected:?}", node.me().node_id);
        test_helper::wait_for(&what, CONVERGE, || async { ids(node) == expected }).await;
    }
}

/// Waits for the next change on `changes` satisfying `pred`, within `timeout`.
pub(crate) async fn next_change_where(
    changes: &mut MembershipChanges,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&MembershipChange) -> bool,
) -> MembershipChange {
    let found = tokio::time::timeout(timeout, async {
        while let Some(change) = changes.next().await {
            if pred(&change) {
                return Some(change);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(change)) => change,
        Ok(None) => panic!("membership stream ended before: {what}"),
        Err(_) => panic!("timed out after {timeout:?} waiting for: {what}"),
    }
}

/// Waits until every node in `nodes` sees exactly `expected` at the same time; on timeout,
/// prints what each node sees before panicking.
pub(crate) async fn wait_until_all_see(nodes: &[&DatacakeNode], expected: &[NodeId]) {
    let all_see = || nodes.iter().all(|node| ids(node) == expected);
    let waited = tokio::time::timeout(CONVERGE, async {
        while !all_see() {
            tokio::time::sleep(test_helper::POLL_INTERVAL).await;
        }
    })
    .await;
    if waited.is_err() {
        for node in nodes {
            eprintln!(
                "node {} sees {:?}, {:?}",
                node.me().node_id,
                ids(node),
                node.statistics()
            );
        }
        panic!("timed out after {CONVERGE:?} waiting for all nodes to see {expected:?}");
    }
}
