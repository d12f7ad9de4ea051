use std::time::Duration;

use datacake_node::{ConnectionConfig, DatacakeNode, DatacakeNodeBuilder};
use datacake_rpc::{ErrorCode, RpcClient};

use super::*;
use crate::messages::DigestRequest;
use crate::test_utils::MemStore;

const DEADLINE: Duration = Duration::from_secs(20);

async fn node(id: u32, seeds: Vec<String>) -> DatacakeNode {
    let local = "127.0.0.1:0".parse().unwrap();
    DatacakeNodeBuilder::new(id, ConnectionConfig::new(local, local, seeds))
        .with_gossip_interval(Duration::from_millis(50))
        .connect()
        .await
        .expect("node connects")
}

async fn start(node: &DatacakeNode) -> EventuallyConsistentStore<MemStore> {
    node.add_extension(
        EventuallyConsistentStoreExtension::new(MemStore::new())
            .with_repair_interval(Duration::from_millis(100))
            .with_write_timeout(Duration::from_millis(500)),
    )
    .await
    .expect("store starts")
}

/// A digest request from `from` to the store service of `to`.
async fn ping(from: &DatacakeNode, to: &DatacakeNode) -> Result<(), datacake_rpc::Status> {
    let channel = from.handle().network().get_or_connect(to.me().public_addr);
    let mut client = RpcClient::<StoreService<MemStore>>::new(channel);
    client.set_timeout(Duration::from_secs(5));
    let request = DigestRequest {
        clock: from.clock().get_time(),
        node_id: from.me().node_id,
        synced: None,
        totals: Vec::new(),
    };
    client.send(&request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_removes_its_service_and_ends_its_tasks() {
    let a = node(1, Vec::new()).await;
    let b = node(2, vec![a.me().public_addr.to_string()]).await;
    for n in [&a, &b] {
        n.wait_for_nodes([1, 2], DEADLINE).await.unwrap();
    }
    let baseline = b.handle().running_tasks();
    let store_a = start(&a).await;
    let store_b = start(&b).await;

    store_a
        .handle()
        .put("ks", 1, "v", Consistency::All)
        .await
        .unwrap();
    assert_eq!(store_b.statistics().replicated, 1);
    assert!(
        b.handle().running_tasks() > baseline,
        "the store runs tasks on b"
    );
    ping(&a, &b).await.expect("b serves the store");

    drop(store_b);
    let status = ping(&a, &b).await.expect_err("b's service is gone");
    assert_eq!(status.code, ErrorCode::Unavailable, "{status:?}");
    test_helper::wait_for("b's store tasks end", DEADLINE, || async {
        b.handle().running_tasks() <= baseline
    })
    .await;
    // A keeps writing; with no one serving on b, an `All` write cannot be acknowledged.
    let write = store_a.handle().put("ks", 2, "v", Consistency::All).await;
    assert!(matches!(
        write,
        Err(StoreError::Consistency(
            ConsistencyError::ConsistencyFailure { .. }
        ))
    ));

    drop(store_a);
    b.shutdown().await;
    a.shutdown().await;
}
