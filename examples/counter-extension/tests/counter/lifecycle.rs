//! Stopping: the last handle takes the service away; node shutdown ends the tasks.

use counter_extension::messages::Fetch;
use datacake_node::Consistency;
use datacake_rpc::ErrorCode;
use test_helper::wait_for;

use crate::fixtures::{cluster, rogue_client, start, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_removes_the_service() {
    let node = start(1, Vec::new()).await;
    node.counter
        .incr("hits", 1, Consistency::None)
        .await
        .unwrap();
    let client = rogue_client(node.addr());
    let fetch = Fetch {
        from: 9,
        clock: node.node.clock().get_time(),
        name: "hits".into(),
    };
    let tasks = node.node.handle().running_tasks();

    let clone = node.counter.clone();
    drop(node.counter);
    let reply = client.send(&fetch).await.expect("a handle is left: served");
    assert_eq!(reply.into_inner().entries.len(), 1);

    drop(clone);
    let status = client.send(&fetch).await.unwrap_err();
    assert_eq!(status.code(), ErrorCode::Unavailable);
    wait_for("the membership task ends", DEADLINE, || async {
        node.node.handle().running_tasks() == tasks - 1
    })
    .await;
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_shutdown_ends_the_extension_tasks() {
    let mut nodes = cluster(2).await;
    let second = nodes.pop().unwrap();
    let first = nodes.pop().unwrap();
    assert!(first.counter.statistics().running_tasks >= 1);
    first
        .counter
        .incr("hits", 1, Consistency::All)
        .await
        .unwrap();

    let counter = first.counter.clone();
    first.node.shutdown().await;
    wait_for("the counter's tasks end", DEADLINE, || async {
        counter.statistics().running_tasks == 0
    })
    .await;
    drop(first.counter);
    second.node.shutdown().await;
}
