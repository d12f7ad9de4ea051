//! Fixtures of the crate's own unit tests.

use std::time::Duration;

/// How long unit tests wait on observable state.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A node with id `id` on loopback joining `seeds`.
pub(crate) use test_helper::node::start as node;

/// Node 1 with a store of `max_message_size` messages (and no repair rounds of its own),
/// and node 2, which runs no store, in one cluster.
pub(crate) async fn store_and_bare_peer(
    max_message_size: usize,
) -> (
    datacake_node::DatacakeNode,
    crate::EventuallyConsistentStore<crate::test_utils::MemStore>,
    datacake_node::DatacakeNode,
) {
    store_over_and_bare_peer(crate::test_utils::MemStore::new(), max_message_size).await
}

/// [`store_and_bare_peer`] with node 1's store over `storage`.
pub(crate) async fn store_over_and_bare_peer<S: crate::Storage>(
    storage: S,
    max_message_size: usize,
) -> (
    datacake_node::DatacakeNode,
    crate::EventuallyConsistentStore<S>,
    datacake_node::DatacakeNode,
) {
    let a = node(1, Vec::new()).await;
    let store = a
        .add_extension(
            crate::EventuallyConsistentStoreExtension::new(storage)
                .with_max_message_size(max_message_size)
                .with_repair_interval(Duration::from_secs(3_600)),
        )
        .await
        .unwrap();
    let b = node(2, vec![a.me().public_addr.to_string()]).await;
    b.wait_for_nodes([1, 2], DEADLINE).await.unwrap();
    (a, store, b)
}
