use datacake_eventual_consistency::test_utils::MemStore;
use datacake_eventual_consistency::{Consistency, ConsistencyError, StoreError};

use crate::fixtures::{shutdown, start_node};

#[tokio::test]
async fn store_handle_single_and_bulk() {
    let node = start_node(1, Vec::new(), MemStore::new()).await;
    let h = node.handle();
    assert_eq!(h.get_local("ks", 1).await.unwrap(), None, "missing key");
    assert!(
        h.get_keyspace_list().is_empty(),
        "reads never create keyspaces"
    );

    h.put("ks", 1, "one", Consistency::None).await.unwrap();
    assert_eq!(
        &h.get_local("ks", 1).await.unwrap().unwrap().data[..],
        b"one"
    );
    h.put("ks", 1, "uno", Consistency::None).await.unwrap();
    assert_eq!(
        &h.get_local("ks", 1).await.unwrap().unwrap().data[..],
        b"uno"
    );
    h.del("ks", 1, Consistency::None).await.unwrap();
    assert_eq!(h.get_local("ks", 1).await.unwrap(), None);
    h.del("ks", 999, Consistency::None)
        .await
        .expect("deleting a missing id is ok");

    h.put_many(
        "ks",
        (10..20).map(|i| (i, format!("doc-{i}"))),
        Consistency::None,
    )
    .await
    .unwrap();
    let mut docs = h.get_many_local("ks", 0..30).await.unwrap();
    docs.sort_by_key(|d| d.id);
    assert_eq!(
        docs.iter().map(|d| d.id).collect::<Vec<_>>(),
        (10..20).collect::<Vec<_>>()
    );
    h.del_many("ks", [10, 11, 12, 500], Consistency::None)
        .await
        .unwrap();
    assert_eq!(h.get_many_local("ks", 10..13).await.unwrap(), vec![]);
    assert_eq!(h.get_many_local("ks", 0..30).await.unwrap().len(), 7);
    assert_eq!(h.get_keyspace_list(), vec!["ks".to_string()]);
    let tombstones = h.iter_metadata("ks").iter().filter(|m| m.2).count();
    assert_eq!(tombstones, 6, "ids 1, 999, 10, 11, 12, 500");
    assert_eq!(node.store.statistics().writes, 18);
    shutdown(vec![node]).await;
}

#[tokio::test]
async fn keyspace_handle_single_and_bulk() {
    let node = start_node(1, Vec::new(), MemStore::new()).await;
    let h = node.store.handle_with_keyspace("users");
    assert_eq!(h.keyspace(), "users");
    assert_eq!(h.get_local(1).await.unwrap(), None);
    h.put(1, "a", Consistency::None).await.unwrap();
    assert_eq!(&h.get_local(1).await.unwrap().unwrap().data[..], b"a");
    h.del(1, Consistency::None).await.unwrap();
    assert_eq!(h.get_local(1).await.unwrap(), None);
    h.del(2, Consistency::None).await.unwrap();
    h.put_many([(3, "c"), (4, "d")], Consistency::None)
        .await
        .unwrap();
    assert_eq!(h.get_many_local([3, 4, 5]).await.unwrap().len(), 2);
    h.del_many([3, 4, 5], Consistency::None).await.unwrap();
    assert!(h.get_many_local([3, 4, 5]).await.unwrap().is_empty());
    assert_eq!(h.iter_metadata().len(), 5);
    assert_eq!(h.get_keyspace_list(), vec!["users".to_string()]);
    shutdown(vec![node]).await;
}

#[tokio::test]
async fn keyspaces_are_isolated_on_one_node() {
    let node = start_node(1, Vec::new(), MemStore::new()).await;
    let a = node.store.handle_with_keyspace("a");
    let b = node.store.handle_with_keyspace("b");
    a.put(1, "in a", Consistency::None).await.unwrap();
    assert_eq!(b.get_local(1).await.unwrap(), None);
    b.put(1, "in b", Consistency::None).await.unwrap();
    a.del(1, Consistency::None).await.unwrap();
    assert_eq!(&b.get_local(1).await.unwrap().unwrap().data[..], b"in b");
    let mut list = a.get_keyspace_list();
    list.sort();
    assert_eq!(list, vec!["a".to_string(), "b".to_string()]);
    shutdown(vec![node]).await;
}

#[tokio::test]
async fn an_unreachable_level_fails_before_writing() {
    let node = start_node(1, Vec::new(), MemStore::new()).await;
    let h = node.handle();
    let result = h.put("ks", 1, "x", Consistency::One).await;
    assert!(
        matches!(
            result,
            Err(StoreError::Consistency(ConsistencyError::NotEnoughNodes {
                live: 0,
                required: 1
            }))
        ),
        "{result:?}"
    );
    assert_eq!(
        h.get_local("ks", 1).await.unwrap(),
        None,
        "nothing was written"
    );
    assert!(h.get_keyspace_list().is_empty());
    shutdown(vec![node]).await;
}

#[tokio::test]
async fn oversized_documents_bad_keyspaces_and_too_many_keyspaces_are_refused_before_writing() {
    let limited = |ext: crate::fixtures::Extension| {
        ext.with_max_message_size(1 << 20)
            .with_max_keyspaces(2)
            .with_max_keyspace_name_len(8)
    };
    let node = crate::fixtures::start_node_with(1, Vec::new(), MemStore::new(), limited).await;
    let h = node.handle();
    match h.put("ks", 1, vec![0u8; 1 << 20], Consistency::None).await {
        Err(StoreError::DocumentTooLarge { id: 1, size, max }) => {
            assert_eq!(size, 1 << 20);
            assert!(max < size && max > 900_000, "{max}");
        }
        other => panic!("expected DocumentTooLarge, got {other:?}"),
    }
    assert!(h.get_keyspace_list().is_empty(), "nothing was written");
    h.put("ks", 1, vec![0u8; 900_000], Consistency::None)
        .await
        .expect("fits in a message");

    for name in ["", "nine-char"] {
        assert!(matches!(
            h.put(name, 1, "x", Consistency::None).await,
            Err(StoreError::InvalidKeyspaceName { max: 8, .. })
        ));
    }
    h.put("second", 1, "x", Consistency::None).await.unwrap();
    assert!(matches!(
        h.put("third", 1, "x", Consistency::None).await,
        Err(StoreError::TooManyKeyspaces { max: 2 })
    ));
    h.put("second", 2, "x", Consistency::None)
        .await
        .expect("an existing keyspace takes writes");
    shutdown(vec![node]).await;
}

#[tokio::test]
async fn bad_settings_stop_the_store_from_starting() {
    let local = "127.0.0.1:0".parse().unwrap();
    let node = datacake_node::DatacakeNodeBuilder::new(
        1,
        datacake_node::ConnectionConfig::new(local, local, Vec::<String>::new()),
    )
    .connect()
    .await
    .unwrap();
    let zero =
        datacake_eventual_consistency::EventuallyConsistentStoreExtension::new(MemStore::new())
            .with_repair_interval(std::time::Duration::ZERO);
    match node.add_extension(zero).await {
        Err(StoreError::InvalidConfig(error)) => assert_eq!(error.setting, "repair_interval"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    node.shutdown().await;
}
