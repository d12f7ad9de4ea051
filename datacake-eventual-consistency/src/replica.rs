//! The local replica: the storage plus the in-memory state of every keyspace. Every write,
//! local, replicated or repaired, goes through [`Replica::apply`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use datacake_crdt::HLCTimestamp;
use datacake_node::NodeId;
use parking_lot::{Mutex, RwLock};

use crate::digest::{BucketEntry, KeyspaceDigest};
use crate::error::StoreError;
use crate::keyspace::{KeyspaceState, Mutation};
use crate::repair::{plan_repair, RepairPlan};
use crate::slot::KeyspaceSlot;
use crate::storage::{Document, Key, Metadata, Storage};
use crate::watermark::{self, PURGE_WATERMARK_KEYSPACE};

/// A mutation with its document (for a put).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) mutation: Mutation,
    pub(crate) data: Option<Bytes>,
}

impl Change {
    /// Whether `self` wins over `other` (same key): newer, or a delete at the same time.
    fn beats(&self, other: &Change) -> bool {
        let (a, b) = (self.mutation.timestamp(), other.mutation.timestamp());
        a > b || (a == b && self.mutation.is_delete() && !other.mutation.is_delete())
    }
}

/// Counters behind [`StoreStatistics`](crate::StoreStatistics).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) writes: AtomicU64,
    pub(crate) replicated: AtomicU64,
    pub(crate) repairs_run: AtomicU64,
    pub(crate) keys_repaired: AtomicU64,
    pub(crate) repair_bytes: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) consistency_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The newest of `changes` per key (a delete wins a tie).
fn newest_per_key(changes: Vec<Change>) -> Vec<Change> {
    if changes.len() < 2 {
        return changes;
    }
    let mut newest: HashMap<Key, Change> = HashMap::with_capacity(changes.len());
    for change in changes {
        let key = change.mutation.key();
        match newest.get(&key) {
            Some(held) if !change.beats(held) => {}
            _ => {
                newest.insert(key, change);
            }
        }
    }
    newest.into_values().collect()
}

/// The local replica; see the module docs.
#[derive(Debug)]
pub(crate) struct Replica<S> {
    pub(crate) storage: S,
    keyspaces: RwLock<HashMap<String, Arc<KeyspaceSlot>>>,
    pub(crate) counters: Counters,
    /// Per peer: our clock at the start of the peer's last complete repair round from us.
    peer_synced: Mutex<HashMap<NodeId, HLCTimestamp>>,
}

type Result<T, S> = std::result::Result<T, StoreError<<S as Storage>::Error>>;

impl<S: Storage> Replica<S> {
    /// Loads the metadata of every keyspace of `storage`, and the persisted purge watermarks.
    pub(crate) async fn load(storage: S) -> Result<Self, S> {
        let mut keyspaces = HashMap::new();
        let names = storage
            .get_keyspace_list()
            .await
            .map_err(StoreError::Storage)?;
        for name in names.iter().filter(|n| !watermark::is_reserved(n)) {
            let metadata = storage
                .iter_metadata(name)
                .await
                .map_err(StoreError::Storage)?;
            let slot = KeyspaceSlot::new(name, KeyspaceState::from_metadata(metadata));
            keyspaces.insert(name.clone(), Arc::new(slot));
        }
        if names.iter().any(|n| n == PURGE_WATERMARK_KEYSPACE) {
            for (name, mark) in Self::load_watermarks(&storage).await? {
                let slot = keyspaces.entry(name).or_insert_with_key(|name| {
                    Arc::new(KeyspaceSlot::new(name, KeyspaceState::new()))
                });
                slot.with_state(|s| s.raise_purge_watermark(mark));
            }
        }
        Ok(Self {
            storage,
            keyspaces: RwLock::new(keyspaces),
            counters: Counters::default(),
            peer_synced: Mutex::new(HashMap::new()),
        })
    }

    /// The `(keyspace, purge watermark)` pairs persisted in [`PURGE_WATERMARK_KEYSPACE`].
    async fn load_watermarks(storage: &S) -> Result<Vec<(String, HLCTimestamp)>, S> {
        let ids = storage
            .iter_metadata(PURGE_WATERMARK_KEYSPACE)
            .await
            .map_err(StoreError::Storage)?
            .into_iter()
            .filter(|(_, _, tombstone)| !tombstone)
            .map(|(id, _, _)| id)
            .collect();
        let docs = storage
            .multi_get(PURGE_WATERMARK_KEYSPACE, ids)
            .await
            .map_err(StoreError::Storage)?;
        docs.iter()
            .map(|doc| {
                watermark::decode(doc).ok_or(StoreError::CorruptPurgeWatermark { id: doc.id })
            })
            .collect()
    }

    fn slot(&self, keyspace: &str) -> Option<Arc<KeyspaceSlot>> {
        self.keyspaces.read().get(keyspace).cloned()
    }

    /// The keyspace's slot, created if needed (the name must have passed
    /// [`StoreError::check_keyspace`]).
    pub(crate) fn slot_or_create(&self, keyspace: &str) -> Arc<KeyspaceSlot> {
        if let Some(slot) = self.slot(keyspace) {
            return slot;
        }
        self.keyspaces
            .write()
            .entry(keyspace.to_owned())
            .or_insert_with(|| Arc::new(KeyspaceSlot::new(keyspace, KeyspaceState::new())))
            .clone()
    }

    /// Applies the winning `changes` to the storage and the keyspace state; returns the ones
    /// that applied (the rest were older than what the replica holds).
    ///
    /// Writes of one key reach the storage one at a time, in the order the CRDT decided
    /// them; writes of different keys go concurrently (see [`KeyspaceSlot`]).
    pub(crate) async fn apply(
        &self,
        keyspace: &str,
        changes: Vec<Change>,
    ) -> Result<Vec<Change>, S> {
        StoreError::check_keyspace(keyspace)?;
        self.apply_to(&self.slot_or_create(keyspace), changes).await
    }

    /// [`apply`](Self::apply) to a keyspace whose slot the caller holds.
    pub(crate) async fn apply_to(
        &self,
        slot: &KeyspaceSlot,
        changes: Vec<Change>,
    ) -> Result<Vec<Change>, S> {
        let keyspace = &*slot.name;
        let mut todo = newest_per_key(changes);
        let mut applied = Vec::new();
        while !todo.is_empty() {
            let settled = slot.settled();
            tokio::pin!(settled);
            let (claim, blocked) = slot.claim(todo, settled.as_mut());
            if !claim.winners().is_empty() {
                match self.store(keyspace, claim.winners()).await {
                    Ok(()) => applied.extend(claim.commit(None)),
                    Err((stored, error)) => {
                        claim.commit(Some(&stored));
                        return Err(error);
                    }
                }
            }
            if !blocked.is_empty() {
                settled.await;
            }
            todo = blocked;
        }
        Ok(applied)
    }

    /// Writes `winners` to the storage; on failure, the ids that were applied.
    async fn store(
        &self,
        keyspace: &str,
        winners: &[Change],
    ) -> std::result::Result<(), (Vec<Key>, StoreError<S::Error>)> {
        if let [single] = winners {
            let key = single.mutation.key();
            let timestamp = single.mutation.timestamp();
            let stored = if single.mutation.is_delete() {
                self.storage
                    .mark_as_tombstone(keyspace, key, timestamp)
                    .await
            } else {
                let data = single.data.clone().unwrap_or_default();
                let doc = Document::new(key, timestamp, data);
                self.storage.put(keyspace, doc).await
            };
            return stored.map_err(|e| (Vec::new(), StoreError::Storage(e)));
        }
        let (puts, deletes): (Vec<&Change>, Vec<&Change>) =
            winners.iter().partition(|c| !c.mutation.is_delete());
        let documents: Vec<Document> = puts
            .iter()
            .map(|c| Document {
                id: c.mutation.key(),
                last_updated: c.mutation.timestamp(),
                data: c.data.clone().unwrap_or_default(),
            })
            .collect();
        let put_ids: Vec<Key> = documents.iter().map(|d| d.id).collect();
        match documents.len() {
            0 => {}
            1 => {
                let doc = documents.into_iter().next().expect("one document");
                if let Err(e) = self.storage.put(keyspace, doc).await {
                    return Err((Vec::new(), StoreError::Storage(e)));
                }
            }
            _ => {
                if let Err(e) = self.storage.multi_put(keyspace, documents).await {
                    return Err((e.successful_doc_ids.clone(), StoreError::BulkStorage(e)));
                }
            }
        }
        let tombstones: Vec<(Key, _)> = deletes
            .iter()
            .map(|c| (c.mutation.key(), c.mutation.timestamp()))
            .collect();
        match tombstones.as_slice() {
            [] => Ok(()),
            [(key, ts)] => self
                .storage
                .mark_as_tombstone(keyspace, *key, *ts)
                .await
                .map_err(|e| (put_ids, StoreError::Storage(e))),
            _ => match self
                .storage
                .mark_many_as_tombstone(keyspace, tombstones)
                .await
            {
                Ok(()) => Ok(()),
                Err(e) => {
                    let mut applied = put_ids;
                    applied.extend_from_slice(&e.successful_doc_ids);
                    Err((applied, StoreError::BulkStorage(e)))
                }
            },
        }
    }

    /// The names of the keyspaces held.
    pub(crate) fn keyspace_names(&self) -> Vec<String> {
        self.keyspaces.read().keys().cloned().collect()
    }

    /// Every entry of `keyspace` (empty if unknown).
    pub(crate) fn metadata(&self, keyspace: &str) -> Vec<Metadata> {
        self.slot(keyspace).map_or_else(Vec::new, |slot| {
            slot.with_state(|s| {
                s.entries()
                    .map(|e| (e.key, e.timestamp, e.tombstone))
                    .collect()
            })
        })
    }

    /// A snapshot of every keyspace's slot, so callers do not hold the map's lock while they
    /// work on the keyspaces.
    fn slots(&self) -> Vec<(String, Arc<KeyspaceSlot>)> {
        self.keyspaces
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `(keyspace, total digest)` of every keyspace.
    pub(crate) fn totals(&self) -> Vec<(String, u64)> {
        let slots = self.slots();
        slots
            .into_iter()
            .map(|(name, slot)| {
                let total = slot.with_state(|s| s.digest().total());
                (name, total)
            })
            .collect()
    }

    /// The total digest of `keyspace`, if held.
    pub(crate) fn total(&self, keyspace: &str) -> Option<u64> {
        self.slot(keyspace)
            .map(|slot| slot.with_state(|s| s.digest().total()))
    }

    /// The digest of `keyspace`, if held.
    pub(crate) fn digest(&self, keyspace: &str) -> Option<KeyspaceDigest> {
        self.slot(keyspace)
            .map(|slot| slot.with_state(|s| s.digest().clone()))
    }

    /// The entries of `buckets` of `keyspace`.
    pub(crate) fn bucket_entries(&self, keyspace: &str, buckets: &[u32]) -> Vec<BucketEntry> {
        self.slot(keyspace).map_or_else(Vec::new, |slot| {
            slot.with_state(|s| s.bucket_entries(buckets))
        })
    }

    /// Plans the repair of `keyspace` from a peer's entries of `buckets`.
    pub(crate) fn plan(
        &self,
        keyspace: &str,
        buckets: &[u32],
        remote: &[BucketEntry],
    ) -> RepairPlan {
        match self.slot(keyspace) {
            Some(slot) => slot.with_state(|s| plan_repair(s, buckets, remote)),
            None => plan_repair(&KeyspaceState::new(), buckets, remote),
        }
    }

    /// Records that `peer` holds everything we held at `at`.
    pub(crate) fn record_peer_synced(&self, peer: NodeId, at: HLCTimestamp) {
        let mut synced = self.peer_synced.lock();
        let slot = synced.entry(peer).or_insert(at);
        *slot = (*slot).max(at);
    }

    /// What `peer` last reported as synced from us.
    pub(crate) fn peer_synced(&self, peer: NodeId) -> Option<HLCTimestamp> {
        self.peer_synced.lock().get(&peer).copied()
    }

    /// Purges the tombstones older than `cutoff` from every keyspace, storage first; returns
    /// how many were purged.
    pub(crate) async fn purge_tombstones(&self, cutoff: HLCTimestamp) -> Result<usize, S> {
        let slots = self.slots();
        let mut total = 0;
        for (name, slot) in slots {
            // No write in flight while the watermark rises (see `KeyspaceSlot::exclusive`).
            let held = slot.exclusive().await;
            // Memory first: if the storage call fails, the storage merely keeps tombstones
            // that a restart reloads (harmless), never the other way round.
            let purged = held.state().purge_tombstones(cutoff);
            if purged.is_empty() {
                continue;
            }
            total += purged.len();
            // Persist the raised watermark before the tombstones go from the storage: a
            // restart in between reloads the tombstones (harmless), and once they are gone
            // the watermark is there to refuse older writes of the purged ids.
            let mark = held.state().purge_watermark();
            if let Some(mark) = mark {
                self.storage
                    .put(PURGE_WATERMARK_KEYSPACE, watermark::encode(&name, mark))
                    .await
                    .map_err(StoreError::Storage)?;
            }
            let keys = purged.iter().map(|e| e.key).collect();
            self.storage
                .remove_tombstones(&name, keys)
                .await
                .map_err(StoreError::BulkStorage)?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests;
