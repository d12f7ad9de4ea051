//! The conformance suite every [`Storage`] implementation should pass.

use std::collections::BTreeSet;
use std::fmt::Debug;

use datacake_crdt::HLCTimestamp;

use crate::storage::{Document, Key, Metadata, Storage};

/// Runs every conformance check against `storage`, panicking (with the failed rule) on the
/// first violation. `storage` must start empty.
///
/// The checks cover keyspace semantics (writes create keyspaces, reads never do, keyspaces are
/// isolated), round-trips of single and bulk writes, overwrites, tombstones hiding documents
/// (single and bulk, including ids never written), metadata listing and tombstone removal.
///
/// ```
/// # #[cfg(feature = "test-utils")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use datacake_eventual_consistency::test_suite::run_test_suite;
/// use datacake_eventual_consistency::test_utils::MemStore;
///
/// run_test_suite(MemStore::default()).await;
/// # }
/// # #[cfg(not(feature = "test-utils"))]
/// # fn main() {}
/// ```
pub async fn run_test_suite<S: Storage>(storage: S) {
    keyspace_semantics(&storage).await;
    single_round_trip(&storage).await;
    bulk_round_trip(&storage).await;
    single_tombstones(&storage).await;
    bulk_tombstones(&storage).await;
    tombstone_removal(&storage).await;
    keyspace_isolation(&storage).await;
}

fn ts(millis: u64) -> HLCTimestamp {
    HLCTimestamp::new(millis, 0, 1)
}

fn doc(id: Key, millis: u64, data: &str) -> Document {
    Document::new(id, ts(millis), data.to_owned())
}

fn ok<T, E: Debug>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("storage failed to {what}: {error:?}"),
    }
}

fn sorted_metadata(mut metadata: Vec<Metadata>) -> Vec<Metadata> {
    metadata.sort_unstable_by_key(|(k, _, _)| *k);
    metadata
}

fn sorted_docs(mut docs: Vec<Document>) -> Vec<Document> {
    docs.sort_unstable_by_key(|d| d.id);
    docs
}

async fn keyspace_list<S: Storage>(storage: &S) -> BTreeSet<String> {
    ok(storage.get_keyspace_list().await, "list keyspaces")
        .into_iter()
        .collect()
}

async fn keyspace_semantics<S: Storage>(storage: &S) {
    assert!(
        keyspace_list(storage).await.is_empty(),
        "the suite needs an empty storage"
    );
    assert_eq!(
        ok(storage.get("unknown", 1).await, "get"),
        None,
        "get on an unknown keyspace"
    );
    assert!(ok(storage.multi_get("unknown", vec![1, 2]).await, "multi_get").is_empty());
    assert!(ok(storage.iter_metadata("unknown").await, "iter_metadata").is_empty());
    assert!(
        keyspace_list(storage).await.is_empty(),
        "reading an unknown keyspace must not create it"
    );

    ok(storage.put("created-by-put", doc(1, 1, "a")).await, "put");
    ok(
        storage
            .multi_put("created-by-multi-put", vec![doc(1, 1, "a")])
            .await,
        "multi_put",
    );
    ok(
        storage
            .mark_as_tombstone("created-by-tombstone", 1, ts(1))
            .await,
        "mark_as_tombstone",
    );
    ok(
        storage
            .mark_many_as_tombstone("created-by-many-tombstones", vec![(1, ts(1))])
            .await,
        "mark_many_as_tombstone",
    );
    let expected: BTreeSet<String> = [
        "created-by-put",
        "created-by-multi-put",
        "created-by-tombstone",
        "created-by-many-tombstones",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(
        keyspace_list(storage).await,
        expected,
        "every write creates its keyspace"
    );
}

async fn single_round_trip<S: Storage>(storage: &S) {
    let ks = "single";
    assert_eq!(ok(storage.get(ks, 1).await, "get"), None, "missing id");
    ok(storage.put(ks, doc(1, 1, "first")).await, "put");
    assert_eq!(
        ok(storage.get(ks, 1).await, "get"),
        Some(doc(1, 1, "first"))
    );
    ok(storage.put(ks, doc(1, 2, "second")).await, "put");
    assert_eq!(
        ok(storage.get(ks, 1).await, "get"),
        Some(doc(1, 2, "second")),
        "a put overwrites"
    );
    assert_eq!(
        sorted_metadata(ok(storage.iter_metadata(ks).await, "iter_metadata")),
        vec![(1, ts(2), false)]
    );
    assert_eq!(
        ok(storage.get(ks, 2).await, "get"),
        None,
        "other ids stay missing"
    );
}

async fn bulk_round_trip<S: Storage>(storage: &S) {
    let ks = "bulk";
    let docs: Vec<_> = (1..=10).map(|i| doc(i, i, &format!("doc-{i}"))).collect();
    ok(storage.multi_put(ks, docs.clone()).await, "multi_put");
    assert_eq!(
        sorted_docs(ok(
            storage.multi_get(ks, (1..=10).collect()).await,
            "multi_get"
        )),
        docs
    );
    assert_eq!(
        sorted_docs(ok(storage.multi_get(ks, vec![2, 4, 99]).await, "multi_get")),
        vec![docs[1].clone(), docs[3].clone()],
        "multi_get skips missing ids"
    );
    assert_eq!(
        sorted_docs(ok(
            storage.multi_get(ks, vec![3, 3, 5, 3]).await,
            "multi_get"
        )),
        vec![docs[2].clone(), docs[4].clone()],
        "multi_get returns a repeated id once"
    );
    let newer: Vec<_> = (1..=5).map(|i| doc(i, 100 + i, "newer")).collect();
    ok(storage.multi_put(ks, newer.clone()).await, "multi_put");
    let mut expected = newer;
    expected.extend_from_slice(&docs[5..]);
    assert_eq!(
        sorted_docs(ok(
            storage.multi_get(ks, (1..=10).collect()).await,
            "multi_get"
        )),
        expected,
        "multi_put overwrites"
    );
    let metadata = sorted_metadata(ok(storage.iter_metadata(ks).await, "iter_metadata"));
    let expected: Vec<_> = expected
        .iter()
        .map(|d| (d.id, d.last_updated, false))
        .collect();
    assert_eq!(metadata, expected);
}

async fn single_tombstones<S: Storage>(storage: &S) {
    let ks = "single-tombstones";
    ok(storage.put(ks, doc(1, 1, "a")).await, "put");
    ok(storage.put(ks, doc(2, 1, "b")).await, "put");
    ok(
        storage.mark_as_tombstone(ks, 1, ts(2)).await,
        "mark_as_tombstone",
    );
    ok(
        storage.mark_as_tombstone(ks, 3, ts(3)).await,
        "tombstone a never-written id",
    );
    assert_eq!(
        ok(storage.get(ks, 1).await, "get"),
        None,
        "a tombstone hides the document"
    );
    assert_eq!(ok(storage.get(ks, 3).await, "get"), None);
    assert_eq!(
        sorted_docs(ok(storage.multi_get(ks, vec![1, 2, 3]).await, "multi_get")),
        vec![doc(2, 1, "b")],
        "multi_get skips tombstones"
    );
    assert_eq!(
        sorted_metadata(ok(storage.iter_metadata(ks).await, "iter_metadata")),
        vec![(1, ts(2), true), (2, ts(1), false), (3, ts(3), true)]
    );
    ok(storage.put(ks, doc(1, 4, "again")).await, "put");
    assert_eq!(
        ok(storage.get(ks, 1).await, "get"),
        Some(doc(1, 4, "again")),
        "a put replaces a tombstone"
    );
    assert_eq!(
        sorted_metadata(ok(storage.iter_metadata(ks).await, "iter_metadata")),
        vec![(1, ts(4), false), (2, ts(1), false), (3, ts(3), true)]
    );
}

async fn bulk_tombstones<S: Storage>(storage: &S) {
    let ks = "bulk-tombstones";
    ok(
        storage
            .multi_put(ks, (1..=4).map(|i| doc(i, 1, "x")).collect())
            .await,
        "multi_put",
    );
    ok(
        storage
            .mark_many_as_tombstone(ks, vec![(1, ts(2)), (3, ts(2)), (50, ts(3))])
            .await,
        "mark_many_as_tombstone",
    );
    assert_eq!(
        sorted_docs(ok(
            storage.multi_get(ks, vec![1, 2, 3, 4, 50]).await,
            "multi_get"
        )),
        vec![doc(2, 1, "x"), doc(4, 1, "x")]
    );
    assert_eq!(ok(storage.get(ks, 50).await, "get"), None);
    assert_eq!(
        sorted_metadata(ok(storage.iter_metadata(ks).await, "iter_metadata")),
        vec![
            (1, ts(2), true),
            (2, ts(1), false),
            (3, ts(2), true),
            (4, ts(1), false),
            (50, ts(3), true),
        ]
    );
    ok(
        storage.multi_put(ks, vec![doc(3, 5, "back")]).await,
        "multi_put",
    );
    assert_eq!(
        ok(storage.get(ks, 3).await, "get"),
        Some(doc(3, 5, "back")),
        "multi_put replaces a tombstone"
    );
}

async fn tombstone_removal<S: Storage>(storage: &S) {
    let ks = "tombstone-removal";
    ok(
        storage
            .multi_put(ks, (1..=3).map(|i| doc(i, 1, "x")).collect())
            .await,
        "multi_put",
    );
    ok(
        storage
            .mark_many_as_tombstone(ks, vec![(1, ts(2)), (2, ts(2)), (9, ts(2))])
            .await,
        "mark_many_as_tombstone",
    );
    ok(
        storage.remove_tombstones(ks, vec![1, 9, 3, 77]).await,
        "remove_tombstones",
    );
    assert_eq!(
        sorted_metadata(ok(storage.iter_metadata(ks).await, "iter_metadata")),
        vec![(2, ts(2), true), (3, ts(1), false)],
        "removed tombstones disappear; live documents and other tombstones stay"
    );
    assert_eq!(ok(storage.get(ks, 1).await, "get"), None);
    assert_eq!(
        ok(storage.get(ks, 3).await, "get"),
        Some(doc(3, 1, "x")),
        "remove_tombstones leaves live documents alone"
    );
}

async fn keyspace_isolation<S: Storage>(storage: &S) {
    ok(storage.put("iso-a", doc(1, 1, "a")).await, "put");
    ok(storage.put("iso-b", doc(1, 1, "b")).await, "put");
    ok(
        storage.mark_as_tombstone("iso-b", 2, ts(2)).await,
        "mark_as_tombstone",
    );
    assert_eq!(
        ok(storage.get("iso-a", 1).await, "get"),
        Some(doc(1, 1, "a"))
    );
    assert_eq!(
        ok(storage.get("iso-b", 1).await, "get"),
        Some(doc(1, 1, "b"))
    );
    ok(
        storage.mark_as_tombstone("iso-a", 1, ts(3)).await,
        "mark_as_tombstone",
    );
    assert_eq!(
        ok(storage.get("iso-b", 1).await, "get"),
        Some(doc(1, 1, "b")),
        "a tombstone in one keyspace leaves the other alone"
    );
    assert_eq!(
        sorted_metadata(ok(storage.iter_metadata("iso-a").await, "iter_metadata")),
        vec![(1, ts(3), true)]
    );
    assert_eq!(
        sorted_metadata(ok(storage.iter_metadata("iso-b").await, "iter_metadata")),
        vec![(1, ts(1), false), (2, ts(2), true)]
    );
}
