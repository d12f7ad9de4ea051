//! The replicated store on `SqliteStorage` across a long outage: a node down for longer than
//! the tombstone grace returns on its database file after the others deleted and purged
//! documents; neither it nor a node that joins afterwards brings them back.

use std::path::Path;
use std::time::Duration;

use datacake_eventual_consistency::{
    Consistency, EventuallyConsistentStore, EventuallyConsistentStoreExtension, Storage,
};
use datacake_node::DatacakeNode;
use datacake_sqlite::SqliteStorage;
use test_helper::{wait_for, TempDir};

const DEADLINE: Duration = Duration::from_secs(30);

struct Node {
    node: DatacakeNode,
    store: EventuallyConsistentStore<SqliteStorage>,
}

async fn start(id: u32, seeds: &[String], db: &Path) -> Node {
    let node = test_helper::node::builder(id, seeds.to_vec())
        .with_min_failure_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let storage = SqliteStorage::open(db).await.unwrap();
    let store = node
        .add_extension(
            EventuallyConsistentStoreExtension::new(storage)
                .with_repair_interval(Duration::from_millis(100))
                .with_tombstone_grace(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    Node { node, store }
}

/// Live ids and tombstones of `keyspace` as `node` holds them in memory.
fn held(node: &Node) -> (Vec<u64>, usize) {
    let metadata = node.store.handle().iter_metadata("ks");
    let mut live: Vec<u64> = metadata.iter().filter(|m| !m.2).map(|m| m.0).collect();
    live.sort_unstable();
    (live, metadata.iter().filter(|m| m.2).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_past_the_grace_returns_on_its_database_without_resurrecting_deletes() {
    let dir = TempDir::new("sqlite-outage");
    let db = |id: u32| dir.join(format!("node-{id}.db"));
    let first = start(1, &[], &db(1)).await;
    let seeds = vec![first.node.me().public_addr.to_string()];
    let mut nodes = vec![first];
    for id in 2..=3 {
        nodes.push(start(id, &seeds, &db(id)).await);
    }
    for n in &nodes {
        n.node.wait_for_nodes(1..=3, DEADLINE).await.unwrap();
    }
    nodes[0]
        .store
        .handle()
        .put_many(
            "ks",
            (0..10).map(|i| (i, format!("v{i}"))),
            Consistency::All,
        )
        .await
        .unwrap();

    // Node 3 crashes (no leave) and stays down past the grace while 0..5 are deleted and
    // the others purge the tombstones.
    let down = nodes.pop().unwrap();
    drop(down.store);
    drop(down.node);
    wait_for("nodes 1 and 2 hold node 3 dead", DEADLINE, || async {
        nodes
            .iter()
            .all(|n| n.node.live_members().iter().all(|m| m.node_id != 3))
    })
    .await;
    let h = nodes[0].store.handle();
    h.del_many("ks", 0..5, Consistency::Quorum).await.unwrap();
    h.put("ks", 100, "newer", Consistency::Quorum)
        .await
        .unwrap();
    wait_for("nodes 1 and 2 purge the deletes", DEADLINE, || async {
        nodes
            .iter()
            .all(|n| held(n) == (vec![5, 6, 7, 8, 9, 100], 0))
    })
    .await;

    // Node 3 returns on its database file, which still holds 0..5; then node 4 joins.
    let reopened = SqliteStorage::open(db(3)).await.unwrap();
    assert_eq!(
        reopened
            .get("ks", 0)
            .await
            .unwrap()
            .map(|d| d.data.to_vec()),
        Some(b"v0".to_vec())
    );
    drop(reopened);
    nodes.push(start(3, &seeds, &db(3)).await);
    nodes.push(start(4, &seeds, &db(4)).await);
    for n in &nodes {
        n.node.wait_for_nodes(1..=4, DEADLINE).await.unwrap();
    }
    wait_for(
        "all four hold the same ids, none deleted",
        DEADLINE,
        || async { nodes.iter().all(|n| held(n).0 == vec![5, 6, 7, 8, 9, 100]) },
    )
    .await;
    for n in &nodes {
        let docs = n.store.handle().get_many_local("ks", 0..5).await.unwrap();
        assert!(
            docs.is_empty(),
            "node {} serves deleted documents",
            n.node.me().node_id
        );
    }
    assert!(nodes[2].store.statistics().obsolete_forgotten >= 5);

    for n in nodes.into_iter().rev() {
        drop(n.store);
        n.node.shutdown().await;
    }
}
