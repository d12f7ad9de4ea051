//! Three real processes: replication, a SIGKILL, writes with quorum meanwhile, catch-up after
//! a restart on the same data directory.

use test_helper::wait_for;

use crate::fixtures::{free_ports, temp_dir, KvNode, DEADLINE};

const KEYS_WHILE_DOWN: usize = 20;

#[tokio::test]
async fn three_nodes_replicate_survive_sigkill_and_catch_up() {
    let dir = temp_dir("cluster");
    let ports = free_ports(6);
    let seed = ports[0];
    let mut nodes: Vec<KvNode> = (0..3)
        .map(|i| {
            let seeds = if i == 0 { Vec::new() } else { vec![seed] };
            KvNode::new(
                i as u32 + 1,
                (ports[2 * i], ports[2 * i + 1]),
                seeds,
                dir.path(),
            )
        })
        .collect();
    for node in &mut nodes {
        node.start();
    }
    for node in &nodes {
        node.wait_for_members(3).await;
    }

    // `all`: once acknowledged, every node serves it.
    assert_eq!(
        nodes[0]
            .put("/kv/alpha?consistency=all", b"one")
            .await
            .status,
        204
    );
    assert_eq!(
        nodes[0]
            .put("/kv/beta?consistency=all", b"two")
            .await
            .status,
        204
    );
    for node in &nodes[1..] {
        let reply = node.get("/kv/alpha").await;
        assert_eq!(
            (reply.status, reply.body.as_slice()),
            (200, &b"one"[..]),
            "node {}",
            node.id
        );
    }

    // Node 3 dies hard; the others notice, then keep writing with quorum.
    nodes[2].kill();
    nodes[0].wait_for_members(2).await;
    nodes[1].wait_for_members(2).await;
    for i in 0..KEYS_WHILE_DOWN {
        let writer = &nodes[i % 2];
        let reply = writer
            .put(
                &format!("/kv/key-{i}?consistency=quorum"),
                format!("value-{i}").as_bytes(),
            )
            .await;
        assert_eq!(
            reply.status, 204,
            "write {i} through node {}: {reply:?}",
            writer.id
        );
    }
    assert_eq!(
        nodes[1].delete("/kv/alpha?consistency=quorum").await.status,
        204
    );

    // Node 3 restarts on its data directory and catches up through repair.
    nodes[2].start();
    nodes[2].wait_for_members(3).await;
    let node3 = &nodes[2];
    let reply = node3.get("/kv/beta?consistency=none").await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"two"[..]),
        "kept on disk"
    );
    wait_for(
        "node 3 to catch up on the writes it missed",
        DEADLINE,
        || async {
            // Node 3's own copies (a quorum read would answer from the others).
            for i in 0..KEYS_WHILE_DOWN {
                let reply = node3.get(&format!("/kv/key-{i}?consistency=none")).await;
                if reply.status != 200 || reply.body != format!("value-{i}").into_bytes() {
                    return false;
                }
            }
            node3.get("/kv/alpha?consistency=none").await.status == 404
        },
    )
    .await;
    let metrics = String::from_utf8(node3.get("/metrics").await.body).unwrap();
    let repaired: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("datacake_store_keys_repaired_total "))
        .and_then(|v| v.parse().ok())
        .expect("repair counter");
    assert!(repaired > 0, "node 3 caught up through repair:\n{metrics}");

    for node in &mut nodes {
        let status = node.terminate().await;
        assert!(status.success(), "node {} exit status {status:?}", node.id);
    }
}

/// Nodes that know no seed find each other through a discovery file written after they
/// started (as an orchestrator would publish the addresses it assigned).
#[tokio::test]
async fn nodes_without_seeds_meet_through_a_discovery_file() {
    let dir = temp_dir("discovery");
    let ports = free_ports(4);
    let peers = dir.path().join("peers");
    let mut nodes: Vec<KvNode> = (0..2)
        .map(|i| {
            KvNode::new(
                i as u32 + 1,
                (ports[2 * i], ports[2 * i + 1]),
                Vec::new(),
                dir.path(),
            )
            .with_args(&["--discover-file", peers.to_str().expect("utf-8 path")])
        })
        .collect();
    for node in &mut nodes {
        node.start();
    }
    for node in &nodes {
        node.wait_for_members(1).await;
    }
    let lines: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.cluster_port()))
        .collect();
    std::fs::write(&peers, format!("# the cluster\n{}\n", lines.join("\n"))).expect("write peers");
    for node in &nodes {
        node.wait_for_members(2).await;
    }
}
