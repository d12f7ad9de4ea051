//! The durable store: a restarted node keeps its log, vote and membership; a store of
//! another format version is refused.

use std::collections::BTreeMap;

use datacake_node::NodeId;
use datacake_raft::{RaftError, RaftExtension, ReadConsistency, Role};

use test_helper::TempDir;

use crate::fixtures::{
    by_id, config, durable, start, start_cluster, start_node, wait_for_leader, Get, KvMachine, Set,
    CONVERGE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_its_durable_store_rejoins_with_its_log() {
    let dirs: Vec<TempDir> = (1..=3)
        .map(|i| TempDir::new(&format!("restart-{i}")))
        .collect();
    let storage = |id: u32| durable(&dirs[id as usize - 1]);
    // Snapshots every few entries with nothing kept, so the restart also needs the snapshot.
    let durable = |id: u32| {
        config(3)
            .with_storage(storage(id))
            .with_snapshot_policy(4, 0)
    };
    let mut nodes = start_cluster(3, durable).await;
    let all: Vec<_> = nodes.iter().collect();
    let leader_id = wait_for_leader(&all).await;

    let mut expected = BTreeMap::new();
    for i in 0..10u64 {
        let key = format!("k{i}");
        by_id(&nodes, leader_id)
            .raft
            .write(Set(key.clone(), i))
            .await
            .expect("write commits");
        expected.insert(key, i);
    }
    let index = nodes.iter().position(|n| n.id() != leader_id).unwrap();
    let follower = nodes.remove(index);
    let follower_id = follower.id();
    test_helper::wait_for("the follower to apply every write", CONVERGE, || async {
        follower
            .raft
            .read(Get::All, ReadConsistency::Local)
            .await
            .ok()
            == Some(expected.clone())
    })
    .await;
    test_helper::wait_for(
        "the follower to snapshot and purge its log",
        CONVERGE,
        || async { follower.raft.status().purged_index.is_some() },
    )
    .await;
    let before = expected.clone();
    let log_before = follower.raft.status().last_log_index;
    let term_before = follower.raft.status().term;
    drop(follower.raft);
    follower.node.shutdown().await;

    // The remaining majority keeps committing while the follower is down.
    for i in 10..15u64 {
        let key = format!("k{i}");
        by_id(&nodes, leader_id)
            .raft
            .write(Set(key.clone(), i))
            .await
            .expect("write commits");
        expected.insert(key, i);
    }

    // First restart it alone (no seeds, on a new port nobody knows): whatever it has now
    // came from its own disk — the log, vote, membership, and the state machine rebuilt from
    // the persisted snapshot plus the committed log after it.
    let alone = start(follower_id, &[], durable(follower_id)).await;
    test_helper::wait_for(
        "the isolated node to load its state from disk",
        CONVERGE,
        || async {
            let m = alone.raft.status();
            m.last_log_index >= log_before && m.voters == [1, 2, 3].into()
        },
    )
    .await;
    assert!(alone.raft.status().term >= term_before);
    assert_ne!(alone.raft.role(), Role::Inactive);
    test_helper::wait_for(
        "the isolated node to rebuild its state machine",
        CONVERGE,
        || async {
            alone.raft.read(Get::All, ReadConsistency::Local).await.ok() == Some(before.clone())
        },
    )
    .await;
    drop(alone.raft);
    alone.node.shutdown().await;

    // Then restart it in the cluster: it rejoins under its id with its log and catches up.
    let seed = by_id(&nodes, leader_id).seed();
    let restarted = start(follower_id, &[seed], durable(follower_id)).await;
    test_helper::wait_for("the restarted node to catch up", CONVERGE, || async {
        restarted
            .raft
            .read(Get::All, ReadConsistency::Local)
            .await
            .ok()
            == Some(expected.clone())
    })
    .await;
    let seen = restarted
        .raft
        .read(Get::All, ReadConsistency::Linearizable)
        .await;
    assert_eq!(seen.expect("linearizable read"), expected);
}

/// The SQLite log and the snapshot file inside a durable directory.
const LOG_FILE: &str = "raft-log.sqlite";
const SNAPSHOT_FILE: &str = "snapshot.bin";

/// Runs node 1 alone on `dir` until it has written, taken a snapshot and stopped.
async fn write_durable_state(dir: &TempDir) {
    let node = start(1, &[], config(1).with_storage(durable(dir))).await;
    let all = [&node];
    wait_for_leader(&all).await;
    node.raft
        .write(Set("k".to_string(), 1))
        .await
        .expect("write commits");
    node.raft.trigger_snapshot().await.expect("snapshot asked");
    test_helper::wait_for("the snapshot to be taken", CONVERGE, || async {
        node.raft.status().snapshot_index.is_some() && dir.join(SNAPSHOT_FILE).exists()
    })
    .await;
    drop(node.raft);
    node.node.shutdown().await;
}

/// Two Raft instances writing one log and vote could vote twice in a term or lose
/// acknowledged entries: a second instance on a directory in use is refused, and the
/// directory opens again right after its instance stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_in_use_by_another_instance_is_refused() {
    let dir = TempDir::new("dir-in-use");
    let first = start(1, &[], config(1).with_storage(durable(&dir))).await;
    wait_for_leader(&[&first]).await;

    match refused_start(2, &dir).await {
        RaftError::DirectoryInUse { dir: refused } => assert_eq!(refused, dir.path()),
        other => panic!("expected DirectoryInUse, got {other}"),
    }

    first
        .raft
        .write(Set("k".to_string(), 1))
        .await
        .expect("the first instance keeps writing");
    drop(first.raft);
    first.node.shutdown().await;
    // At once: the start waits for the stopped instance to let go of the directory.
    restart_and_read_k(&dir).await;
}

/// Restarts node 1 alone on `dir`, waits until it reads `k = 1` from its own state, and
/// stops it.
async fn restart_and_read_k(dir: &TempDir) {
    let again = start(1, &[], config(1).with_storage(durable(dir))).await;
    test_helper::wait_for("the restarted node to read its state", CONVERGE, || async {
        again.raft.read(Get::All, ReadConsistency::Local).await.ok()
            == Some(BTreeMap::from([("k".to_string(), 1)]))
    })
    .await;
    drop(again.raft);
    again.node.shutdown().await;
}

/// Starts Raft on a new node `id` over `dir`, which must refuse it; returns why.
async fn refused_start(id: NodeId, dir: &TempDir) -> RaftError {
    let node = start_node(id, &[]).await;
    let result = node
        .add_extension(RaftExtension::new(
            KvMachine::default(),
            config(1).with_storage(durable(dir)),
        ))
        .await;
    node.shutdown().await;
    match result {
        Err(error) => error,
        Ok(_) => panic!("raft started on {}", dir.path().display()),
    }
}

/// Starts node 1 on `dir` and returns the format version of the refused file.
async fn refused_format(dir: &TempDir) -> (std::path::PathBuf, Option<u32>) {
    match refused_start(1, dir).await {
        RaftError::IncompatibleFormat { path, found, .. } => (path, found),
        other => panic!("expected IncompatibleFormat, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_another_format_version_is_refused_at_start() {
    let dir = TempDir::new("log-format");
    write_durable_state(&dir).await;
    // The same directory restarts fine (the check passes its own format).
    restart_and_read_k(&dir).await;

    let log = dir.join(LOG_FILE);
    let version: u32 = {
        let conn = rusqlite::Connection::open(&log).unwrap();
        let version = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "user_version", version + 1)
            .unwrap();
        version
    };
    assert_eq!(refused_format(&dir).await, (log, Some(version + 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_log_of_an_earlier_release_is_refused_at_start() {
    let dir = TempDir::new("log-json");
    let log = dir.join(LOG_FILE);
    // The layout and encoding of the log before format versions: JSON rows, no user_version.
    let conn = rusqlite::Connection::open(&log).unwrap();
    conn.execute_batch(
        r#"CREATE TABLE raft_log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
           CREATE TABLE raft_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
           INSERT INTO raft_meta (key, value) VALUES
               ('vote', CAST('{"leader_id":{"term":1,"node_id":1},"committed":true}' AS BLOB));
           INSERT INTO raft_log (idx, entry) VALUES
               (1, CAST('{"log_id":{"leader_id":{"term":1,"node_id":1},"index":1},"payload":"Blank"}' AS BLOB));"#,
    )
    .unwrap();
    drop(conn);
    assert_eq!(refused_format(&dir).await, (log, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_another_format_version_is_refused_at_start() {
    let dir = TempDir::new("snapshot-format");
    write_durable_state(&dir).await;
    let snapshot = dir.join(SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&snapshot).unwrap();
    // The header: 8 magic bytes, then the version (u32, little endian).
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    bytes[8..12].copy_from_slice(&(version + 1).to_le_bytes());
    std::fs::write(&snapshot, &bytes).unwrap();
    assert_eq!(refused_format(&dir).await, (snapshot, Some(version + 1)));
}
