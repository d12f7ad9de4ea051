//! The HTTP API of one node: round trips, errors, metrics, graceful shutdown (SIGTERM and
//! SIGINT), restart.

use crate::fixtures::{free_ports, request, request_chunked, temp_dir, KvNode};

#[tokio::test]
async fn one_node_serves_the_api_and_shuts_down_gracefully() {
    let dir = temp_dir("api");
    let ports = free_ports(2);
    let mut node = KvNode::new(1, (ports[0], ports[1]), Vec::new(), dir.path()).with_args(&[
        "--max-body-bytes",
        "1024",
        "--data-center",
        "eu-west",
    ]);
    node.start();
    node.wait_for_members(1).await;

    // Round trip with the default consistency (quorum) and an explicit one.
    assert_eq!(node.put("/users/alice", b"hello").await.status, 204);
    let reply = node.get("/users/alice").await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(
        node.put("/users/bob?consistency=all", b"").await.status,
        204
    );
    let reply = node.get("/users/bob").await;
    assert_eq!(
        (reply.status, reply.body.len()),
        (200, 0),
        "empty values are values"
    );
    assert_eq!(
        node.get("/other/alice").await.status,
        404,
        "keyspaces are separate"
    );
    assert_eq!(node.delete("/users/bob?consistency=none").await.status, 204);
    let reply = node.get("/users/bob").await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (404, "key_not_found")
    );

    // A level this one-node cluster cannot meet, for writes and reads.
    let reply = node.put("/users/carol?consistency=one", b"x").await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (503, "not_enough_nodes")
    );
    let reply = node.get("/users/alice?consistency=one").await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (503, "not_enough_nodes")
    );
    let reply = node.get("/users/alice?consistency=all").await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(
        node.get("/users/alice?consistency=most").await.error_code(),
        "bad_consistency"
    );

    // Member removal: only of a member that is down.
    for (path, status, code) in [
        ("/cluster/members/1", 409, "member_is_live"),
        ("/cluster/members/7", 404, "unknown_member"),
        ("/cluster/members/seven", 400, "bad_node_id"),
    ] {
        let reply = node.delete(path).await;
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (status, code),
            "{path}"
        );
    }

    // Bad requests: 4xx with a JSON error.
    for (path, status, code) in [
        ("/users/al%20ice", 400, "bad_key"),
        ("/users/a*b", 400, "bad_key"),
        ("/us$ers/alice", 400, "bad_keyspace"),
        ("/__datacake.members/alice", 400, "bad_keyspace"),
        ("/users/alice?consistency=most", 400, "bad_consistency"),
        ("/users/alice?consistency=", 400, "bad_consistency"),
        ("/users/alice/extra", 404, "not_found"),
        ("/", 404, "not_found"),
    ] {
        let reply = node.put(path, b"x").await;
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (status, code),
            "{path}"
        );
        assert!(reply.headers.contains("application/json"), "{path}");
    }
    let long_key = format!("/users/{}", "k".repeat(257));
    assert_eq!(node.get(&long_key).await.error_code(), "bad_key");
    let reply = request(node.http_port, "POST", "/users/alice", b"x")
        .await
        .unwrap();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (405, "method_not_allowed")
    );

    // Oversized bodies, declared and chunked.
    let reply = node.put("/users/big", &[7; 4096]).await;
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (413, "body_too_large")
    );
    let reply = request_chunked(node.http_port, "PUT", "/users/big", &[7; 4096])
        .await
        .unwrap();
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (413, "body_too_large")
    );
    let reply = request_chunked(node.http_port, "PUT", "/users/fits", &[7; 1024])
        .await
        .unwrap();
    assert_eq!(reply.status, 204, "a body at the limit is accepted");
    assert_eq!(node.get("/users/big").await.status, 404);

    // Cluster, health and metrics.
    let cluster = node.get("/cluster").await.json();
    assert_eq!(cluster["node_id"], 1);
    assert_eq!(cluster["members"][0]["node_id"], 1);
    assert_eq!(cluster["members"][0]["data_center"], "eu-west");
    assert_eq!(
        cluster["members"][0]["public_addr"],
        format!("127.0.0.1:{}", node.cluster_port())
    );
    let metrics = node.get("/metrics").await;
    assert!(metrics.headers.contains("text/plain"));
    let text = String::from_utf8(metrics.body).unwrap();
    for line in [
        "# TYPE kv_http_requests_total counter",
        "kv_http_requests_total{route=\"kv\",method=\"PUT\",status=\"204\"}",
        "kv_http_requests_total{route=\"kv\",method=\"PUT\",status=\"413\"}",
        "# TYPE kv_http_request_duration_seconds histogram",
        "kv_http_request_duration_seconds_bucket{route=\"kv\",method=\"GET\",status=\"200\",le=\"10\"}",
        "kv_http_request_duration_seconds_count{route=\"cluster\",method=\"GET\",status=\"200\"}",
        "kv_http_errors_total{class=\"4xx\"}",
        "datacake_store_writes_total 4",
        "datacake_node_live_members 1",
    ] {
        assert!(text.contains(line), "metrics lack {line:?}:\n{text}");
    }

    // SIGTERM: a clean exit; the data is still there after a restart.
    let status = node.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    node.start();
    node.wait_for_members(1).await;
    let reply = node.get("/users/alice").await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"hello"[..]));
    let status = node.stop_with("INT").await;
    assert!(status.success(), "exit status after SIGINT {status:?}");
}
