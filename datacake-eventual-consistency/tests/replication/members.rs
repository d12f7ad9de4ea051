//! The store's member record under storage faults: a record that failed to persist is
//! written later, and a removal a peer missed is finished by calling again.

use datacake_eventual_consistency::test_utils::{FaultyStorage, MemStore};
use datacake_eventual_consistency::{Consistency, ConsistencyError, StoreError, MEMBERS_KEYSPACE};

use crate::fixtures::{
    shutdown, start_node_full, wait_for_membership, wait_until_gone, TestNode, CONVERGE,
};

type Faulty = FaultyStorage<MemStore>;

async fn start(id: u32, seeds: Vec<String>, storage: Faulty) -> TestNode<Faulty> {
    start_node_full(id, seeds, storage, |b| b, |ext| ext).await
}

/// `node`'s persisted record of member `id`.
fn record_of(node: &Faulty, id: u32) -> Option<datacake_eventual_consistency::Document> {
    node.inner().get_doc(MEMBERS_KEYSPACE, u64::from(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_first_seen_while_the_disk_refuses_writes_is_recorded_once_it_works() {
    let first = start(1, Vec::new(), FaultyStorage::new(MemStore::new())).await;
    let storage = first.storage.clone();
    storage.fail_writes(true);
    let second = start(2, vec![first.addr()], FaultyStorage::new(MemStore::new())).await;
    let nodes = vec![first, second];
    wait_for_membership(&nodes, 1..=2).await;
    test_helper::wait_for("node 1 fails to record node 2", CONVERGE, || async {
        storage.refused(MEMBERS_KEYSPACE) > 0
    })
    .await;
    storage.fail_writes(false);
    test_helper::wait_for(
        "node 1 records node 2 once its disk works",
        CONVERGE,
        || async { record_of(&storage, 2).is_some() },
    )
    .await;

    // So node 1, restarted alone, still counts node 2 as a replica.
    let mut nodes = nodes;
    drop(nodes.pop().expect("node 2").crash());
    let storage = nodes.pop().expect("node 1").crash();
    let restarted = start(1, Vec::new(), storage).await;
    match restarted.handle().put("ks", 1, "v", Consistency::All).await {
        Err(StoreError::Consistency(ConsistencyError::NotEnoughNodes { .. })) => {}
        other => panic!("expected NotEnoughNodes (node 2 is a member), got {other:?}"),
    }
    shutdown(vec![restarted]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_a_peer_missed_is_finished_by_calling_again() {
    let first = start(1, Vec::new(), FaultyStorage::new(MemStore::new())).await;
    let seeds = vec![first.addr()];
    let mut nodes = vec![first];
    for id in 2..=3 {
        nodes.push(start(id, seeds.clone(), FaultyStorage::new(MemStore::new())).await);
    }
    wait_for_membership(&nodes, 1..=3).await;
    drop(nodes.pop().expect("node 3").crash());
    wait_until_gone(&nodes, 3).await;
    test_helper::wait_for(
        "node 2 has persisted its record of node 3",
        CONVERGE,
        || async { record_of(&nodes[1].storage, 3).is_some() },
    )
    .await;

    // Node 2's disk refuses the removal: node 1 names it, and node 2 still counts node 3.
    nodes[1].storage.fail_writes(true);
    let node_2 = nodes[1].node.me().public_addr;
    match nodes[0].store.remove_member(3).await {
        Err(StoreError::Transport { peer, .. }) if peer == node_2 => {}
        other => panic!("expected a transport error naming node 2, got {other:?}"),
    }
    nodes[1].storage.fail_writes(false);
    let node_2_handle = nodes[1].handle();
    let all_on_node_2 = || node_2_handle.put("ks", 1, "v", Consistency::All);
    assert!(
        matches!(
            all_on_node_2().await,
            Err(StoreError::Consistency(
                ConsistencyError::NotEnoughNodes { .. }
            ))
        ),
        "node 2 still counts node 3"
    );
    assert!(record_of(&nodes[1].storage, 3).is_some());

    // Calling again tells node 2 again (node 1 has already removed node 3).
    nodes[0]
        .store
        .remove_member(3)
        .await
        .expect("the removal is finished");
    all_on_node_2()
        .await
        .expect("node 2 no longer counts node 3");
    assert!(record_of(&nodes[1].storage, 3).is_none());
    // An id no node ever knew is still refused.
    assert!(matches!(
        nodes[0].store.remove_member(9).await,
        Err(StoreError::UnknownMember { node_id: 9 })
    ));
    shutdown(nodes).await;
}
