//! A TLS cluster: members join; a stranger (another CA, an expired certificate, no TLS) never
//! does, and the cluster stays healthy.

use std::time::{Duration, SystemTime};

use datacake_node::certs::{ClusterCa, NodeCertificate};
use datacake_node::{DatacakeNode, NodeError, NodeId};
use datacake_rpc::TlsConfig;

use crate::fixtures::{builder, ids, wait_for_view};

const CLUSTER: &str = "secure";

fn tls(ca: &ClusterCa, cert: &NodeCertificate) -> TlsConfig {
    TlsConfig::mutual_from_pem(
        ca.cert_pem().as_bytes(),
        cert.cert_pem().as_bytes(),
        cert.key_pem().as_bytes(),
    )
    .expect("valid pem")
}

/// Starts node `id` of [`CLUSTER`] with `tls`, seeded from `seeds`.
async fn start_tls(
    id: NodeId,
    tls: TlsConfig,
    seeds: &[&DatacakeNode],
) -> Result<DatacakeNode, NodeError> {
    builder(id, seeds)
        .with_cluster_id(CLUSTER)
        .with_join_timeout(Duration::from_millis(500))
        .with_tls(tls)
        .connect()
        .await
}

async fn member(ca: &ClusterCa, id: NodeId, seeds: &[&DatacakeNode]) -> DatacakeNode {
    let cert = ca.issue_node(id, &["127.0.0.1".to_string()]).unwrap();
    start_tls(id, tls(ca, &cert), seeds)
        .await
        .expect("member starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_never_join_a_tls_cluster_and_members_still_do() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let one = member(&ca, 1, &[]).await;
    let two = member(&ca, 2, &[&one]).await;
    wait_for_view(&[&one, &two], &[1, 2]).await;

    // Three strangers gossip at the cluster from now on.
    let other_ca = ClusterCa::generate(CLUSTER).unwrap();
    let foreign = other_ca.issue_node(3, &[]).unwrap();
    let year = Duration::from_secs(365 * 24 * 3600);
    let long_ago = SystemTime::now() - 2 * year;
    let expired = ca
        .issue_node_valid(4, &[], long_ago, long_ago + year)
        .unwrap();
    let strangers = vec![
        start_tls(3, tls(&other_ca, &foreign), &[&one, &two])
            .await
            .expect("a node with another CA starts (alone)"),
        start_tls(4, tls(&ca, &expired), &[&one, &two])
            .await
            .expect("a node with an expired certificate starts (alone)"),
        builder(5, &[&one, &two])
            .with_cluster_id(CLUSTER)
            .with_join_timeout(Duration::from_millis(500))
            .connect()
            .await
            .expect("a plaintext node starts (alone)"),
    ];

    // A member joining after them is admitted: by then the strangers had every chance.
    let six = member(&ca, 6, &[&one]).await;
    wait_for_view(&[&one, &two, &six], &[1, 2, 6]).await;
    for stranger in &strangers {
        assert_eq!(
            ids(stranger),
            vec![stranger.me().node_id],
            "a stranger sees only itself"
        );
    }
    assert_eq!(ids(&one), vec![1, 2, 6], "no stranger got in");
    for node in strangers.into_iter().chain([six, two, one]) {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_certificate_for_another_node_is_refused_at_start() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let cert = ca.issue_node(9, &[]).unwrap();
    match start_tls(1, tls(&ca, &cert), &[]).await {
        Err(NodeError::InvalidConfig {
            setting: "tls",
            reason,
        }) => {
            assert!(reason.contains("datacake://secure/1"), "{reason}");
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let other_cluster = ClusterCa::generate("elsewhere").unwrap();
    let cert = other_cluster.issue_node(1, &[]).unwrap();
    assert!(matches!(
        start_tls(1, tls(&other_cluster, &cert), &[]).await,
        Err(NodeError::InvalidConfig { setting: "tls", .. })
    ));
}

/// With TLS, a node id can hold more than one proven address: the restart of a stalled node
/// and the stalled process itself, once it is back, both prove theirs with the id's
/// certificate, and the view decides between them as on plaintext. (A single proven address
/// per id flipped to whichever gossiped last, so the zombie could win.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_stall_does_not_take_its_id_back_from_its_restart_with_tls() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    crate::membership::stalled_node_returns_after_its_restart(|id, seeds| {
        let cert = ca.issue_node(id, &["127.0.0.1".to_string()]).unwrap();
        builder(id, seeds)
            .with_cluster_id(CLUSTER)
            .with_tls(tls(&ca, &cert))
    })
    .await;
}
