//! The HTTP API of a one-node cluster: keys, compare-and-set, counters, reads, bad input,
//! cluster state, health, metrics, graceful shutdown and restart on the same data.

use test_helper::http::{metric, request_chunked};
use test_helper::wait_for_value;

use crate::fixtures::{free_ports, temp_dir, Node, DEADLINE};

/// `(status, error code)` of an error reply.
fn error(reply: &test_helper::http::Reply) -> (u16, String) {
    (reply.status, reply.error_code())
}

#[tokio::test]
async fn one_node_serves_the_api() {
    let dir = temp_dir("api");
    let ports = free_ports(2);
    let mut node = Node::with_flags(
        1,
        (ports[0], ports[1]),
        dir.path(),
        1,
        &[],
        &["--max-body-bytes", "1024", "--max-key-bytes", "64"],
    );
    node.start();
    node.wait_healthy().await;

    // Put, get (both read modes), delete.
    let reply = node.put("/alice", b"hello").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let version = reply.json()["version"].as_u64().expect("a version");
    assert_eq!(reply.json()["key"], "alice");
    for path in ["/alice", "/alice?read=linearizable", "/alice?read=local"] {
        let reply = node.get(path).await;
        assert_eq!(
            (reply.status, reply.body.as_slice()),
            (200, &b"hello"[..]),
            "{path}"
        );
        assert_eq!(
            reply.header("x-version"),
            Some(version.to_string().as_str())
        );
    }
    assert_eq!(node.put("/empty", b"").await.status, 200);
    let reply = node.get("/empty").await;
    assert_eq!(
        (reply.status, reply.body.len()),
        (200, 0),
        "empty values are values"
    );
    let reply = node.put("/a%2Fb%20c", b"spaced").await;
    assert_eq!(reply.json()["key"], "a/b c", "keys are percent-decoded");
    assert_eq!(node.get("/a%2fb%20c").await.body, b"spaced");

    // Compare-and-set on the version; 0 means "absent".
    let reply = node
        .put(&format!("/alice?if_version={version}"), b"v2")
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let v2 = reply.json()["version"].as_u64().unwrap();
    assert!(v2 > version);
    let reply = node
        .put(&format!("/alice?if_version={version}"), b"lost")
        .await;
    assert_eq!(error(&reply), (412, "version_mismatch".to_owned()));
    assert_eq!(reply.json()["current_version"], v2);
    assert_eq!(
        node.get("/alice").await.body,
        b"v2",
        "a failed cas writes nothing"
    );
    assert_eq!(node.put("/fresh?if_version=0", b"1").await.status, 200);
    let reply = node.put("/fresh?if_version=0", b"2").await;
    assert_eq!(error(&reply), (412, "version_mismatch".to_owned()));
    assert!(reply.json()["current_version"].as_u64().unwrap() > 0);
    let reply = node.put("/nobody?if_version=3", b"x").await;
    assert_eq!(reply.json()["current_version"], 0);

    let reply = node.delete(&format!("/alice?if_version={version}")).await;
    assert_eq!(error(&reply), (412, "version_mismatch".to_owned()));
    let reply = node.delete(&format!("/alice?if_version={v2}")).await;
    assert_eq!(
        (reply.status, &reply.json()["deleted"]),
        (200, &true.into())
    );
    assert_eq!(
        error(&node.get("/alice").await),
        (404, "key_not_found".to_owned())
    );
    let reply = node.delete("/alice").await;
    assert_eq!(
        (reply.status, &reply.json()["deleted"]),
        (200, &false.into())
    );
    let reply = node.put("/alice", b"again").await;
    assert!(
        reply.json()["version"].as_u64().unwrap() > v2,
        "a re-created key does not reuse a version"
    );

    // Counters.
    assert_eq!(node.post("/counter/hits/incr").await.json()["value"], 1);
    assert_eq!(
        node.post("/counter/hits/incr?by=41").await.json()["value"],
        42
    );
    for path in ["/counter/hits", "/counter/hits?read=local"] {
        let reply = node.get(path).await;
        assert_eq!(
            reply.json(),
            serde_json::json!({"name": "hits", "value": 42}),
            "{path}"
        );
    }
    assert_eq!(
        node.post("/counter/hits/incr?by=-50").await.json()["value"],
        -8
    );
    assert_eq!(node.get("/counter/never").await.json()["value"], 0);
    let max = i64::MAX.to_string();
    let reply = node.post(&format!("/counter/big/incr?by={max}")).await;
    assert_eq!(reply.json()["value"], i64::MAX);
    let reply = node.post("/counter/big/incr").await;
    assert_eq!(error(&reply), (409, "counter_overflow".to_owned()));
    assert_eq!(reply.json()["value"], i64::MAX);
    assert_eq!(node.get("/counter/big").await.json()["value"], i64::MAX);
    let reply = node
        .post(&format!("/counter/small/incr?by={}", i64::MIN))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        error(&node.post("/counter/small/incr?by=-1").await).1,
        "counter_overflow"
    );

    // Bad input: a 4xx with a JSON error, nothing written.
    let long_key = format!("/{}", "k".repeat(65));
    let too_long_escaped = format!("/{}", "%41".repeat(65));
    for (method, path, status, code) in [
        ("GET", "/alice?read=eventual", 400, "bad_read"),
        ("GET", "/alice?read=", 400, "bad_read"),
        ("GET", "/counter/hits?read=LOCAL", 400, "bad_read"),
        ("POST", "/counter/hits/incr?by=abc", 400, "bad_by"),
        (
            "POST",
            "/counter/hits/incr?by=9223372036854775808",
            400,
            "bad_by",
        ),
        ("POST", "/counter/hits/incr?by=", 400, "bad_by"),
        ("PUT", "/alice?if_version=-1", 400, "bad_version"),
        ("PUT", "/alice?consistency=all", 400, "unknown_parameter"),
        (
            "GET",
            "/alice?read=local&read=local",
            400,
            "duplicate_parameter",
        ),
        ("GET", "/health?verbose", 400, "unknown_parameter"),
        ("PUT", "/%FF", 400, "bad_key"),
        ("PUT", "/%C3%28", 400, "bad_key"),
        ("PUT", "/%G0", 400, "bad_key"),
        ("GET", long_key.as_str(), 400, "bad_key"),
        ("PUT", too_long_escaped.as_str(), 400, "bad_key"),
        ("PUT", "/%63luster", 400, "bad_key"),
        ("PUT", "/counter", 400, "bad_key"),
        ("POST", "/counter/%FF/incr", 400, "bad_key"),
        ("PUT", "/a/b/c", 404, "not_found"),
        ("GET", "/", 404, "not_found"),
        ("PUT", "/health", 405, "method_not_allowed"),
        ("POST", "/alice", 405, "method_not_allowed"),
        ("GET", "/counter/hits/incr", 405, "method_not_allowed"),
        ("PUT", "/big", 413, "body_too_large"),
    ] {
        let body = if path == "/big" {
            vec![7; 2048]
        } else {
            b"x".to_vec()
        };
        let reply = node.request(method, path, &body).await.expect("an answer");
        assert_eq!(error(&reply), (status, code.to_owned()), "{method} {path}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{path}"
        );
    }
    let reply = request_chunked(node.http_port, "PUT", "/big", &[7; 2048])
        .await
        .unwrap();
    assert_eq!(error(&reply), (413, "body_too_large".to_owned()), "chunked");
    let reply = request_chunked(node.http_port, "PUT", "/fits", &[7; 1024])
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "a body at the limit is accepted");
    assert_eq!(error(&node.get("/big").await).1, "key_not_found");
    assert_eq!(node.get("/counter/hits").await.json()["value"], -8);
    assert_eq!(
        node.put(&format!("/{}", "k".repeat(64)), b"x").await.status,
        200,
        "a key at the limit is accepted"
    );

    // Cluster state and health.
    let cluster = node.cluster().await.expect("/cluster");
    assert_eq!(cluster["node_id"], 1);
    assert_eq!(cluster["role"], "leader");
    assert_eq!(cluster["is_active"], true);
    assert_eq!(cluster["has_quorum"], true);
    assert_eq!(cluster["leader"], 1);
    assert_eq!(cluster["voters"], serde_json::json!([1]));
    assert_eq!(cluster["learners"], serde_json::json!([]));
    assert!(cluster["term"].as_u64().unwrap() >= 1);
    let applied = cluster["applied_index"].as_u64().unwrap();
    assert!(applied >= 20, "{cluster}");
    assert!(cluster["commit_index"].as_u64().unwrap() >= applied);
    assert!(cluster["last_log_index"].as_u64().unwrap() >= applied);
    assert_eq!(cluster["members"][0]["node_id"], 1);
    assert_eq!(
        cluster["members"][0]["public_addr"],
        format!("127.0.0.1:{}", node.cluster_port)
    );
    let health = node.get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "serving");
    assert_eq!(health.json()["role"], "leader");

    // Metrics. Raft's gauges are recorded at most every 100 ms: wait until they show the
    // writes above.
    let reply = wait_for_value("the raft gauges to catch up", DEADLINE, || async {
        let reply = node.get("/metrics").await;
        let at_least = |name: &str, min: f64| {
            reply
                .text()
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .is_some_and(|v: f64| v >= min)
        };
        let caught_up = at_least("datacake_raft_term", 1.0)
            && at_least("datacake_raft_applied_index", applied as f64);
        caught_up.then_some(reply)
    })
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = reply.text();
    for line in [
        "# TYPE raftkv_http_requests_total counter",
        "raftkv_http_requests_total{route=\"kv\",method=\"PUT\",status=\"200\"}",
        "raftkv_http_requests_total{route=\"kv\",method=\"PUT\",status=\"412\"}",
        "raftkv_http_requests_total{route=\"counter_incr\",method=\"POST\",status=\"409\"}",
        "# TYPE raftkv_write_duration_seconds histogram",
        "raftkv_write_duration_seconds_bucket{op=\"put\",outcome=\"ok\",le=\"0.01\"}",
        "raftkv_write_duration_seconds_count{op=\"incr\",outcome=\"ok\"}",
        "raftkv_raft_role{role=\"leader\"} 1",
        "raftkv_raft_role{role=\"follower\"} 0",
        "raftkv_raft_has_quorum 1",
        "# TYPE raftkv_http_request_duration_seconds histogram",
        "raftkv_http_request_duration_seconds_bucket{route=\"kv\",method=\"PUT\",status=\"200\",le=\"10\"}",
        "raftkv_http_request_duration_seconds_count{route=\"health\",method=\"GET\",status=\"200\"}",
        "raftkv_http_errors_total{class=\"4xx\"}",
    ] {
        assert!(text.contains(line), "metrics lack {line:?}:\n{text}");
    }
    assert!(metric(text, "datacake_raft_term") >= 1.0);
    assert!(metric(text, "datacake_raft_applied_index") >= applied as f64);
    assert!(
        metric(text, "raftkv_http_connections_open") >= 1.0,
        "this one at least"
    );
    assert_eq!(metric(text, "raftkv_http_connections_refused_total"), 0.0);

    // SIGTERM: a clean exit; everything is there after a restart on the same directory.
    let status = node.stop_with("TERM").await;
    assert!(status.success(), "exit status {status:?}");
    node.start();
    node.wait_healthy().await;
    assert_eq!(node.get("/alice").await.body, b"again");
    assert_eq!(
        node.get("/counter/hits?read=local").await.json()["value"],
        -8
    );
    assert_eq!(node.get("/counter/big").await.json()["value"], i64::MAX);
    let status = node.stop_with("INT").await;
    assert!(status.success(), "exit status after SIGINT {status:?}");
}

/// A node waiting for the rest of its cluster is not healthy, says why, and refuses writes
/// with 503 instead of hanging.
#[tokio::test]
async fn a_node_without_its_cluster_is_unavailable() {
    let dir = temp_dir("alone");
    let ports = free_ports(2);
    let mut node = Node::with_flags(4, (ports[0], ports[1]), dir.path(), 2, &[], &[]);
    node.start();
    let reply = wait_for_value("the node to start", DEADLINE, || async {
        let reply = node.request("GET", "/health", b"").await.ok()?;
        (reply.json()["status"] != "starting").then_some(reply)
    })
    .await;
    assert_eq!(error(&reply), (503, "unhealthy".to_owned()));
    assert_eq!(reply.json()["status"], "serving");
    assert_eq!(reply.json()["reason"], "inactive");
    let cluster = node.cluster().await.unwrap();
    assert_eq!(
        (&cluster["is_active"], &cluster["role"]),
        (&false.into(), &"inactive".into())
    );
    let reply = node.put("/k", b"v").await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.error_code(), "no_leader");
    let reply = node.get("/k").await;
    assert_eq!(error(&reply), (503, "no_leader".to_owned()));
    let reply = node.get("/k?read=local").await;
    assert_eq!(
        error(&reply),
        (404, "key_not_found".to_owned()),
        "local reads answer"
    );
    let status = node.stop_with("TERM").await;
    assert!(status.success(), "exit status {status:?}");
}
