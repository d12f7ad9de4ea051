//! The lifecycle: SIGTERM leaves the cluster gracefully (peers count a member that left, not
//! one that died) and exits 0; a shutdown stuck past `shutdown_timeout_ms` exits 1; a second
//! signal exits at once; a second server on a data directory in use exits 1.

use test_helper::http::{health_status, request_in_flight};
use test_helper::{wait_for, TempDir};
use tokio::net::TcpStream;

use crate::fixtures::{free_ports, metric, temp_dir, wait_for_metrics, KvNode, DEADLINE};

#[tokio::test]
async fn sigterm_leaves_the_cluster_and_exits_0() {
    let dir = temp_dir("leave");
    let ports = free_ports(4);
    let mut first = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path());
    let mut second = KvNode::new(2, (ports[2], ports[3]), vec![ports[0]], dir.path());
    first.start();
    second.start();
    first.wait_for_members(2).await;
    second.wait_for_members(2).await;
    assert_eq!(
        health_status(second.http_port).await.as_deref(),
        Some("serving")
    );

    second.signal("TERM");
    wait_for("node 2 to stop serving", DEADLINE, || async {
        matches!(
            health_status(second.http_port).await.as_deref(),
            None | Some("leaving")
        )
    })
    .await;
    let status = second.wait_exit().await;
    assert!(status.success(), "exit status {status:?}");

    // Node 1 sees it leave: gone from /cluster, and counted as left, not dead.
    wait_for("node 1 to see node 2 leave", DEADLINE, || async {
        let members = first.get("/cluster").await.json()["members"].clone();
        let metrics = wait_for_metrics(first.http_port, "metrics").await;
        members.as_array().map(Vec::len) == Some(1)
            && metric(&metrics, "kv_cluster_left_members") == 1
    })
    .await;
    let metrics = wait_for_metrics(first.http_port, "metrics").await;
    assert_eq!(
        metric(&metrics, "datacake_node_dead_members"),
        0,
        "{metrics}"
    );

    let status = first.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

/// One server per data directory: a second one started on a directory in use (here the same
/// node id, so the same `node-1` directory, on other ports) waits out the storage's lock wait
/// and exits 1 naming the database, and the first keeps serving.
#[tokio::test]
async fn a_second_server_on_a_data_directory_in_use_exits_1() {
    let dir = temp_dir("data-dir-in-use");
    let ports = free_ports(4);
    let mut first = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path());
    let mut second = KvNode::new(1, (ports[2], ports[3]), Vec::new(), dir.path());
    first.start();
    first.wait_for_members(1).await;
    assert_eq!(first.put("/users/alice", b"hello").await.status, 204);

    second.start();
    let status = second.wait_exit().await;
    assert_eq!(status.code(), Some(1), "exit status {status:?}");
    let log = second.log();
    assert!(
        log.contains("kv.db") && log.contains("in use by another storage"),
        "{log}"
    );
    let reply = first.get("/users/alice").await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello"[..]));
    let status = first.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn a_stuck_shutdown_exits_1_at_its_timeout_and_a_second_signal_at_once() {
    let dir = temp_dir("stuck");
    let ports = free_ports(4);

    // A request that never finishes holds the shutdown past its timeout: status 1.
    let (mut node, in_flight) = leaving_with_a_request_in_flight(1, &ports[..2], &dir, 500).await;
    let status = node.wait_exit().await;
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(
        node.log()
            .contains("shutdown did not finish within shutdown_timeout_ms"),
        "{}",
        node.log()
    );
    drop(in_flight);

    // With a long timeout, a second signal ends the wait at once: 128 + SIGINT.
    let (mut node, in_flight) =
        leaving_with_a_request_in_flight(2, &ports[2..], &dir, 600_000).await;
    wait_for("node 2 to start leaving", DEADLINE, || async {
        node.log().contains("leaving: finishing http requests")
    })
    .await;
    assert!(
        health_status(node.http_port).await.is_none(),
        "no new connections while leaving"
    );
    node.signal("INT");
    let status = node.wait_exit().await;
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        node.log().contains("second signal during shutdown"),
        "{}",
        node.log()
    );
    drop(in_flight);
}

/// Node `id` (on `ports`) with `--shutdown-timeout-ms timeout_ms`, sent SIGTERM while a
/// request it serves waits for a body that never comes (the stream, returned, holds it).
async fn leaving_with_a_request_in_flight(
    id: u32,
    ports: &[u16],
    dir: &TempDir,
    timeout_ms: u64,
) -> (KvNode, TcpStream) {
    let timeout = timeout_ms.to_string();
    let mut node = KvNode::new(id, (ports[0], ports[1]), Vec::new(), dir.path())
        .with_args(&["--shutdown-timeout-ms", &timeout]);
    node.start();
    node.wait_for_members(1).await;
    let in_flight = request_in_flight(node.http_port, "/ks/slow", 10)
        .await
        .expect("a request in flight");
    node.signal("TERM");
    (node, in_flight)
}
