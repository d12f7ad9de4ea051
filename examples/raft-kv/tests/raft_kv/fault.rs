//! Three processes under a write load lose their leader to SIGKILL: the survivors elect
//! another and keep accepting writes, the killed node restarts on its data directory and
//! catches up, and every acknowledged write is on every node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use test_helper::{wait_for, wait_for_value};

use crate::fixtures::{free_ports, temp_dir, wait_for_leader, Node, DEADLINE};

/// Concurrent writers.
const WRITERS: usize = 4;
/// Acknowledged writes before the kill, and again after it.
const ACKS_PER_PHASE: u64 = 40;
/// The pause of a writer after a failed write (pacing, so retries do not spin).
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// The longest one write may take before the writer gives up on it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// No node is down.
const NONE_DOWN: usize = usize::MAX;

/// What the writers did.
#[derive(Default)]
struct Load {
    /// Increments of the counter `hits` that got a 2xx.
    acked_incr: AtomicU64,
    /// Increments sent, whatever came back.
    attempted_incr: AtomicU64,
    /// Keys whose put got a 2xx, with their value.
    acked_puts: Mutex<BTreeMap<String, String>>,
    /// Writes that got a 2xx, of both kinds.
    acked: AtomicU64,
    /// The index of the node that is down, or [`NONE_DOWN`].
    down: AtomicUsize,
    stop: AtomicBool,
}

/// One writer: alternately increments `hits` and puts a key of its own, each write to the
/// next node that is up (followers forward to the leader). A write that fails or times out
/// is not acknowledged; the writer moves on to the next node.
async fn writer(id: usize, ports: Vec<u16>, load: Arc<Load>) {
    let mut attempt = 0usize;
    while !load.stop.load(Ordering::SeqCst) {
        let target = (id + attempt) % ports.len();
        attempt += 1;
        if load.down.load(Ordering::SeqCst) == target {
            continue;
        }
        let port = ports[target];
        let acked = if attempt.is_multiple_of(2) {
            load.attempted_incr.fetch_add(1, Ordering::SeqCst);
            let ok = send(port, "POST", "/counter/hits/incr", b"").await;
            if ok {
                load.acked_incr.fetch_add(1, Ordering::SeqCst);
            }
            ok
        } else {
            let (key, value) = (format!("w{id}-{attempt}"), format!("value {id}/{attempt}"));
            let ok = send(port, "PUT", &format!("/{key}"), value.as_bytes()).await;
            if ok {
                load.acked_puts.lock().unwrap().insert(key, value);
            }
            ok
        };
        if acked {
            load.acked.fetch_add(1, Ordering::SeqCst);
        } else {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Whether the write got a 2xx.
async fn send(port: u16, method: &str, path: &str, body: &[u8]) -> bool {
    let request = test_helper::http::request(port, method, path, body);
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, request).await,
        Ok(Ok(reply)) if (200..300).contains(&reply.status)
    )
}

/// The three nodes, configured by TOML files (one per node, as an operator would write
/// them), all seeding each other.
fn cluster(dir: &std::path::Path) -> Vec<Node> {
    let ports = free_ports(6);
    let seeds: Vec<String> = (0..3)
        .map(|i| format!("\"127.0.0.1:{}\"", ports[2 * i]))
        .collect();
    (0..3)
        .map(|i| {
            let id = i as u32 + 1;
            let (cluster_port, http_port) = (ports[2 * i], ports[2 * i + 1]);
            let file = dir.join(format!("node-{id}.toml"));
            let toml = format!(
                "node_id = {id}\n\
                 cluster_addr = \"127.0.0.1:{cluster_port}\"\n\
                 http_addr = \"127.0.0.1:{http_port}\"\n\
                 seeds = [{seeds}]\n\
                 data_dir = \"{data}\"\n\
                 bootstrap_expect = 3\n\
                 [timings]\n\
                 election_timeout_min_ms = 500\n\
                 election_timeout_max_ms = 1000\n\
                 heartbeat_interval_ms = 100\n\
                 request_timeout_ms = 3000\n",
                seeds = seeds.join(", "),
                data = dir.join(format!("node-{id}")).display(),
            );
            std::fs::write(&file, toml).expect("write the config file");
            let args = vec!["--config".to_owned(), file.display().to_string()];
            Node::new(id, (cluster_port, http_port), dir, args)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_leader_sigkill() {
    let dir = temp_dir("fault");
    let mut nodes = cluster(dir.path());
    for node in &mut nodes {
        node.start();
    }
    let (leader, term) = wait_for_leader(&nodes.iter().collect::<Vec<_>>()).await;

    // The load, through every node.
    let load = Arc::new(Load {
        down: AtomicUsize::new(NONE_DOWN),
        ..Load::default()
    });
    let ports: Vec<u16> = nodes.iter().map(|n| n.http_port).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| tokio::spawn(writer(id, ports.clone(), load.clone())))
        .collect();
    let acked = |load: &Arc<Load>| load.acked.load(Ordering::SeqCst);
    wait_for("writes before the kill", DEADLINE, || {
        std::future::ready(acked(&load) >= ACKS_PER_PHASE)
    })
    .await;

    // SIGKILL the leader mid-load; the writers skip it from now on.
    load.down.store(leader, Ordering::SeqCst);
    nodes[leader].kill();
    let at_kill = acked(&load);
    let survivors: Vec<&Node> = (0..3).filter(|&i| i != leader).map(|i| &nodes[i]).collect();
    let (new_leader, new_term) = wait_for_leader(&survivors).await;
    assert!(new_term > term, "a new term: {new_term} after {term}");
    let new_leader = survivors[new_leader];
    wait_for("writes accepted after the kill", DEADLINE, || {
        std::future::ready(acked(&load) >= at_kill + ACKS_PER_PHASE)
    })
    .await;
    load.stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer");
    }

    // The killed node restarts on its data once the others hold it dead (a live member with
    // its id would be refused as a duplicate), and catches up.
    let killed = nodes[leader].id;
    for node in &survivors {
        wait_for(
            "the survivors to hold the killed node dead",
            DEADLINE,
            || async {
                node.cluster().await.is_some_and(|c| {
                    c["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().all(|m| m["node_id"] != killed))
                })
            },
        )
        .await;
    }
    let target = wait_for_value("the leader's applied index", DEADLINE, || {
        new_leader.applied_index()
    })
    .await;
    let new_leader_id = new_leader.id;
    nodes[leader].start();
    let restarted = &nodes[leader];
    wait_for("the restarted node to catch up", DEADLINE, || async {
        restarted
            .applied_index()
            .await
            .is_some_and(|applied| applied >= target)
    })
    .await;
    let restarted_view = restarted.cluster().await.expect("/cluster");
    assert_eq!(restarted_view["leader"], new_leader_id, "{restarted_view}");

    // Every acknowledged write is on every node (local reads), and on the leader
    // (linearizable).
    let acked_incr = load.acked_incr.load(Ordering::SeqCst);
    let attempted_incr = load.attempted_incr.load(Ordering::SeqCst);
    let puts = load.acked_puts.lock().unwrap().clone();
    assert!(
        acked_incr > 0 && !puts.is_empty(),
        "both kinds of write were acknowledged"
    );
    let leader_index = nodes.iter().position(|n| n.id == new_leader_id).unwrap();
    for (i, node) in nodes.iter().enumerate() {
        let mut reads = vec!["read=local"];
        if i == leader_index {
            reads.push("read=linearizable");
        }
        for read in reads {
            let value = node.get(&format!("/counter/hits?{read}")).await.json()["value"]
                .as_i64()
                .expect("a counter value");
            assert!(
                (acked_incr as i64..=attempted_incr as i64).contains(&value),
                "node {} ({read}): hits = {value}, acknowledged {acked_incr}, attempted {attempted_incr}",
                node.id
            );
            for (key, value) in &puts {
                let reply = node.get(&format!("/{key}?{read}")).await;
                assert_eq!(
                    (reply.status, reply.text()),
                    (200, value.as_str()),
                    "node {} ({read}): acknowledged put of {key}",
                    node.id
                );
            }
        }
    }
    eprintln!(
        "acknowledged: {acked_incr} of {attempted_incr} increments, {} puts; {} before the kill",
        puts.len(),
        at_kill
    );

    for node in &mut nodes {
        let status = node.stop_with("TERM").await;
        assert!(status.success(), "node {} exit status {status:?}", node.id);
    }
}
