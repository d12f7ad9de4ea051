use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::test_utils::{FaultyStorage, MemStore, WriteHook};

/// A `MemStore` whose writes yield to the scheduler a varying number of times before they
/// land, so concurrent writes finish in a scrambled order (as with a real database).
fn scrambling() -> FaultyStorage<MemStore> {
    let calls = Arc::new(AtomicUsize::new(0));
    let hook: WriteHook = Arc::new(move || {
        let n = calls.fetch_add(1, Ordering::Relaxed) % 7;
        Box::pin(async move {
            for _ in 0..n {
                tokio::task::yield_now().await;
            }
        })
    });
    FaultyStorage::with_write_hook(MemStore::default(), hook)
}

const KEYS: u64 = 4;
const LIMITS: KeyspaceLimits = KeyspaceLimits {
    max_keyspaces: 16,
    max_name_len: 64,
};

const TASKS: u64 = 16;
const WRITES: u64 = 200;

/// Write `i` of task `t`: a put, or every fifth a delete, of key `i % KEYS`, single or (every
/// third) in a batch with the next key; timestamps are unique across tasks.
fn changes(t: u64, i: u64) -> Vec<Change> {
    let change = |key: Key, millis: u64| {
        let timestamp = HLCTimestamp::new(1_000 + millis, 0, 1);
        if millis.is_multiple_of(5) {
            Change {
                mutation: Mutation::Delete { key, timestamp },
                data: None,
            }
        } else {
            Change {
                mutation: Mutation::Put { key, timestamp },
                data: Some(Bytes::from(millis.to_string())),
            }
        }
    };
    let millis = i * TASKS + t;
    let mut out = vec![change(i % KEYS, millis)];
    if i.is_multiple_of(3) {
        out.push(change((i + 1) % KEYS, millis));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_of_a_key_reach_the_storage_in_the_order_the_crdt_decided() {
    let (replica, _) = Replica::load(scrambling(), LIMITS).await.unwrap();
    let replica = Arc::new(replica);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let replica = replica.clone();
            tokio::spawn(async move {
                for i in 0..WRITES {
                    replica.apply("ks", changes(t, i)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    // The winner of every key: the newest of all writes (they are all distinct in time).
    let mut newest: HashMap<Key, Change> = HashMap::new();
    for t in 0..TASKS {
        for i in 0..WRITES {
            for change in changes(t, i) {
                let key = change.mutation.key();
                if newest.get(&key).is_none_or(|held| change.beats(held)) {
                    newest.insert(key, change);
                }
            }
        }
    }
    let metadata: HashMap<Key, (HLCTimestamp, bool)> = replica
        .metadata("ks")
        .into_iter()
        .map(|(key, ts, tombstone)| (key, (ts, tombstone)))
        .collect();
    let stored: HashMap<Key, (HLCTimestamp, bool)> = replica
        .storage
        .iter_metadata("ks")
        .await
        .unwrap()
        .into_iter()
        .map(|(key, ts, tombstone)| (key, (ts, tombstone)))
        .collect();
    for (key, winner) in &newest {
        let expected = (winner.mutation.timestamp(), winner.mutation.is_delete());
        assert_eq!(metadata.get(key), Some(&expected), "metadata of key {key}");
        assert_eq!(stored.get(key), Some(&expected), "storage of key {key}");
        let doc = replica.storage.get("ks", *key).await.unwrap();
        assert_eq!(doc.map(|d| d.data), winner.data.clone(), "document {key}");
    }
}

/// A `MemStore` whose writes signal that they started, then wait for a permit of `gate`.
fn gated(
    entered: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Semaphore>,
) -> FaultyStorage<MemStore> {
    let hook: WriteHook = Arc::new(move || {
        let (entered, gate) = (entered.clone(), gate.clone());
        Box::pin(async move {
            entered.notify_one();
            let _pass = gate.acquire().await.expect("the gate stays open");
        })
    });
    FaultyStorage::with_write_hook(MemStore::default(), hook)
}

/// A caller that goes away (a client reset mid-request) while its write is in the storage
/// must not leave the storage holding a write the in-memory state lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_goes_away_still_reaches_the_in_memory_state() {
    let entered = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (replica, _) = Replica::load(gated(entered.clone(), gate.clone()), LIMITS)
        .await
        .unwrap();
    let replica = Arc::new(replica);
    let timestamp = HLCTimestamp::new(1_000, 0, 2);
    let change = Change {
        mutation: Mutation::Put { key: 7, timestamp },
        data: Some(Bytes::from_static(b"v")),
    };
    let caller = {
        let replica = replica.clone();
        tokio::spawn(async move { replica.apply("ks", vec![change]).await })
    };
    entered.notified().await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    gate.add_permits(1);

    test_helper::wait_for(
        "the storage and the in-memory state agree on key 7",
        std::time::Duration::from_secs(10),
        || async {
            let stored = replica
                .storage
                .inner()
                .get_doc("ks", 7)
                .map(|d| d.last_updated);
            let held = replica.metadata("ks").first().map(|(_, ts, _)| *ts);
            stored == Some(timestamp) && held == Some(timestamp)
        },
    )
    .await;
}

/// A keyspace whose watermark document id (an unkeyed hash of its name) is already held by
/// another keyspace's document, as a crafted name could make it, gets a document of its own:
/// after a restart both keyspaces still refuse what their purges made stale. Before, the
/// second persist overwrote the first keyspace's watermark.
#[tokio::test]
async fn colliding_keyspace_names_keep_both_purge_watermarks() {
    let storage = MemStore::new();
    // "crafted" already persisted its watermark under the id "ks" hashes to.
    let crafted = HLCTimestamp::new(5_000, 0, 1);
    storage
        .put(
            PURGE_WATERMARK_KEYSPACE,
            watermark::encode(watermark::watermark_doc_id("ks"), "crafted", crafted),
        )
        .await
        .unwrap();
    let (replica, _) = Replica::load(storage.clone(), LIMITS).await.unwrap();
    let mark = HLCTimestamp::new(9_000, 0, 1);
    replica.persist_watermark("ks", Some(mark)).await.unwrap();
    drop(replica);

    let (reloaded, _) = Replica::load(storage, LIMITS).await.unwrap();
    let watermark_of = |keyspace: &str| {
        reloaded
            .slot(keyspace)
            .and_then(|slot| slot.with_state(|s| s.purge_watermark()))
    };
    assert_eq!(watermark_of("crafted"), Some(crafted));
    assert_eq!(watermark_of("ks"), Some(mark));
}
