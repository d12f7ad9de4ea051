//! The local replica: the storage plus the in-memory state of every keyspace. Every write,
//! local, replicated or repaired, goes through [`Replica::apply_local`] or
//! [`Replica::apply`]; purge and the forgetting of obsolete copies go through
//! [`Replica::purge_tombstones`] and [`Replica::forget_obsolete`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::task::Poll;

use bytes::Bytes;
use datacake_crdt::HLCTimestamp;
use datacake_node::DatacakeHandle;
use parking_lot::RwLock;

use crate::digest::BucketEntry;
use crate::error::StoreError;
use crate::keyspace::{scan_in_steps, KeyspaceState, Mutation, SCAN_STEP_ENTRIES};
use crate::members::{self, Known, Members, MEMBERS_KEYSPACE};
use crate::metrics::Counter;
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
    /// A local write of `key`: a put of `data`, or a delete. Stamped when it is claimed.
    pub(crate) fn local(key: Key, data: Option<Bytes>) -> Self {
        let timestamp = HLCTimestamp::new(0, 0, 0);
        let mutation = match data {
            Some(_) => Mutation::Put { key, timestamp },
            None => Mutation::Delete { key, timestamp },
        };
        Self { mutation, data }
    }

    /// Whether `self` wins over `other` (same key), by [`Version::beats`](datacake_crdt::Version::beats).
    pub(crate) fn beats(&self, other: &Change) -> bool {
        self.mutation.version().beats(other.mutation.version())
    }
}

/// Counters behind [`StoreStatistics`](crate::StoreStatistics), each also recorded through
/// the `metrics` facade (see [`crate::metrics`]).
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) writes: Counter,
    pub(crate) replicated: Counter,
    pub(crate) repairs_run: Counter,
    pub(crate) keys_repaired: Counter,
    pub(crate) repair_bytes: Counter,
    pub(crate) failures: Counter,
    pub(crate) consistency_failures: Counter,
    pub(crate) clock_skew_rejected: Counter,
    pub(crate) clock_fenced: Counter,
    pub(crate) read_repairs: Counter,
    pub(crate) tombstones_purged: Counter,
    pub(crate) obsolete_forgotten: Counter,
}

impl Default for Counters {
    fn default() -> Self {
        use crate::metrics as m;
        let counters = Self {
            writes: Counter::new(m::WRITES),
            replicated: Counter::new(m::REPLICATED),
            repairs_run: Counter::new(m::REPAIR_ROUNDS),
            keys_repaired: Counter::new(m::KEYS_REPAIRED),
            repair_bytes: Counter::new(m::REPAIR_BYTES),
            failures: Counter::new(m::REPLICATION_FAILURES),
            consistency_failures: Counter::new(m::CONSISTENCY_FAILURES),
            clock_skew_rejected: Counter::new(m::CLOCK_SKEW_REJECTIONS),
            clock_fenced: Counter::new(m::CLOCK_FENCED),
            read_repairs: Counter::new(m::READ_REPAIRS),
            tombstones_purged: Counter::new(m::TOMBSTONES_PURGED),
            obsolete_forgotten: Counter::new(m::OBSOLETE_FORGOTTEN),
        };
        counters.register();
        counters
    }
}

impl Counters {
    /// Records every counter (and the backlog gauge) at zero, so an exporter shows each series
    /// from the start rather than from its first event.
    fn register(&self) {
        for counter in [
            &self.writes,
            &self.replicated,
            &self.repairs_run,
            &self.keys_repaired,
            &self.repair_bytes,
            &self.failures,
            &self.consistency_failures,
            &self.clock_skew_rejected,
            &self.clock_fenced,
            &self.read_repairs,
            &self.tombstones_purged,
            &self.obsolete_forgotten,
        ] {
            counter.register();
        }
        crate::metrics::backlog_changed(0, 0);
    }

    /// Counts `n` events on `counter` (its statistic and its facade metric).
    pub(crate) fn add(counter: &Counter, n: usize) {
        counter.add(n);
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

/// The last of `changes` per key, in their order (the local writes of one call: the later
/// one of a key is the one the caller meant).
fn last_per_key(changes: Vec<Change>) -> Vec<Change> {
    if changes.len() < 2 {
        return changes;
    }
    let mut last: HashMap<Key, usize> = HashMap::with_capacity(changes.len());
    for (i, change) in changes.iter().enumerate() {
        last.insert(change.mutation.key(), i);
    }
    changes
        .into_iter()
        .enumerate()
        .filter(|(i, c)| last.get(&c.mutation.key()) == Some(i))
        .map(|(_, c)| c)
        .collect()
}

/// How many keyspaces a replica holds at most, and how long their names may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyspaceLimits {
    pub(crate) max_keyspaces: usize,
    pub(crate) max_name_len: usize,
}

/// The local replica; see the module docs.
#[derive(Debug)]
pub(crate) struct Replica<S> {
    pub(crate) storage: S,
    keyspaces: RwLock<BTreeMap<String, Arc<KeyspaceSlot>>>,
    pub(crate) counters: Counters,
    limits: KeyspaceLimits,
    /// The live [`TombstoneWatch`]es, told of every delete taken from a peer.
    watches: parking_lot::Mutex<Vec<Weak<TombstoneWatch>>>,
    /// The ids of the persisted purge watermarks, by keyspace.
    watermark_ids: parking_lot::Mutex<watermark::DocIds>,
}

/// The oldest stamp among the deletes a replica took from peers (replication, repair, read
/// repair) since the watch began ([`Replica::watch_tombstones`]).
///
/// A repair round confirms that the peer holds every tombstone this replica held when the
/// round began and older than the round's start. A delete stamped before that start can
/// still arrive later (a batch in transit, a peer's lagging clock); it was never compared
/// with the peer, so the confirmation must not cover it: the purge bounds each
/// confirmation by the oldest delete its round's watch saw.
#[derive(Debug, Default)]
pub(crate) struct TombstoneWatch(parking_lot::Mutex<Option<HLCTimestamp>>);

impl TombstoneWatch {
    /// The oldest delete stamp seen, if any.
    pub(crate) fn oldest(&self) -> Option<HLCTimestamp> {
        *self.0.lock()
    }

    fn saw(&self, stamp: HLCTimestamp) {
        let mut oldest = self.0.lock();
        *oldest = Some(oldest.map_or(stamp, |o| o.min(stamp)));
    }
}

type Result<T, S> = std::result::Result<T, StoreError<<S as Storage>::Error>>;

/// Runs `work` to completion even if the caller stops waiting for it (a client that hangs
/// up, a connection that drops): polled once in place, where an in-memory storage finishes,
/// otherwise moved to a task of its own. A write that reached the storage therefore always
/// reaches the in-memory state too.
async fn run_to_completion<T, S>(
    work: impl Future<Output = Result<T, S>> + Send + 'static,
) -> Result<T, S>
where
    T: Send + 'static,
    S: Storage,
{
    let mut work = Box::pin(work);
    let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    if let Poll::Ready(done) = first {
        return done;
    }
    match tokio::spawn(work).await {
        Ok(done) => done,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(StoreError::Interrupted),
    }
}

impl<S: Storage> Replica<S> {
    /// Loads the metadata of every keyspace of `storage`, the persisted purge watermarks and
    /// the member records.
    pub(crate) async fn load(storage: S, limits: KeyspaceLimits) -> Result<(Self, Vec<Known>), S> {
        let mut keyspaces = BTreeMap::new();
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
        let mut watermark_ids = watermark::DocIds::default();
        if names.iter().any(|n| n == PURGE_WATERMARK_KEYSPACE) {
            for doc in Self::load_reserved(&storage, PURGE_WATERMARK_KEYSPACE).await? {
                let (name, mark) = watermark::decode(&doc)
                    .ok_or(StoreError::CorruptPurgeWatermark { id: doc.id })?;
                watermark_ids.found(&name, doc.id);
                let slot = keyspaces.entry(name).or_insert_with_key(|name| {
                    Arc::new(KeyspaceSlot::new(name, KeyspaceState::new()))
                });
                slot.with_state(|s| s.raise_purge_watermark(mark));
            }
        }
        let mut members = Vec::new();
        if names.iter().any(|n| n == MEMBERS_KEYSPACE) {
            for doc in Self::load_reserved(&storage, MEMBERS_KEYSPACE).await? {
                members.push(
                    members::decode(&doc).ok_or(StoreError::CorruptMemberRecord { id: doc.id })?,
                );
            }
        }
        let replica = Self {
            storage,
            keyspaces: RwLock::new(keyspaces),
            counters: Counters::default(),
            limits,
            watches: parking_lot::Mutex::new(Vec::new()),
            watermark_ids: parking_lot::Mutex::new(watermark_ids),
        };
        Ok((replica, members))
    }

    /// Every live document of a reserved keyspace.
    async fn load_reserved(storage: &S, keyspace: &str) -> Result<Vec<Document>, S> {
        let ids = storage
            .iter_metadata(keyspace)
            .await
            .map_err(StoreError::Storage)?
            .into_iter()
            .filter(|(_, _, tombstone)| !tombstone)
            .map(|(id, _, _)| id)
            .collect();
        storage
            .multi_get(keyspace, ids)
            .await
            .map_err(StoreError::Storage)
    }

    /// The newest timestamp the replica holds anywhere (entries and watermarks), so that a
    /// restarted node's clock can be moved past it.
    pub(crate) fn newest_stamp(&self) -> Option<HLCTimestamp> {
        self.slots()
            .iter()
            .filter_map(|(_, slot)| {
                slot.with_state(|s| {
                    s.entries()
                        .map(|e| e.timestamp)
                        .chain(s.purge_watermark())
                        .max()
                })
            })
            .max()
    }

    /// `Err` unless `keyspace` is a name users may write: not reserved, 1 to the maximum
    /// bytes long.
    pub(crate) fn check_name(&self, keyspace: &str) -> Result<(), S> {
        StoreError::check_reserved(keyspace)?;
        if keyspace.is_empty() || keyspace.len() > self.limits.max_name_len {
            return Err(StoreError::InvalidKeyspaceName {
                len: keyspace.len(),
                max: self.limits.max_name_len,
            });
        }
        Ok(())
    }

    pub(crate) fn slot(&self, keyspace: &str) -> Option<Arc<KeyspaceSlot>> {
        self.keyspaces.read().get(keyspace).cloned()
    }

    /// The keyspace's slot, created if needed: checks the name and the keyspace limit.
    pub(crate) fn slot_or_create(&self, keyspace: &str) -> Result<Arc<KeyspaceSlot>, S> {
        if let Some(slot) = self.slot(keyspace) {
            // Held, so its name passed the checks when it was created (or loaded).
            return Ok(slot);
        }
        self.check_name(keyspace)?;
        let mut keyspaces = self.keyspaces.write();
        if let Some(slot) = keyspaces.get(keyspace) {
            return Ok(slot.clone());
        }
        if keyspaces.len() >= self.limits.max_keyspaces {
            return Err(StoreError::TooManyKeyspaces {
                max: self.limits.max_keyspaces,
            });
        }
        let slot = Arc::new(KeyspaceSlot::new(keyspace, KeyspaceState::new()));
        keyspaces.insert(keyspace.to_owned(), slot.clone());
        Ok(slot)
    }

    /// Applies local writes (stamped by `node`'s clock as they are claimed) to the storage
    /// and the keyspace state; returns them as applied. Runs to completion even if the caller
    /// stops waiting.
    pub(crate) async fn apply_local(
        self: &Arc<Self>,
        slot: Arc<KeyspaceSlot>,
        changes: Vec<Change>,
        node: DatacakeHandle,
    ) -> Result<Vec<Change>, S> {
        let replica = self.clone();
        run_to_completion::<_, S>(async move {
            let changes = last_per_key(changes);
            replica.apply_claimed(&slot, changes, Some(&node)).await
        })
        .await
    }

    /// Applies the winning `changes` (from peers) to the storage and the keyspace state;
    /// returns the ones that applied (the rest were older than what the replica holds). Runs
    /// to completion even if the caller stops waiting.
    pub(crate) async fn apply(
        self: &Arc<Self>,
        keyspace: &str,
        changes: Vec<Change>,
    ) -> Result<Vec<Change>, S> {
        let slot = self.slot_or_create(keyspace)?;
        // Before the deletes can reach the keyspace, so that a purge (which waits for the
        // writes in flight) sees them in its watches.
        let oldest_delete = changes
            .iter()
            .filter(|c| c.data.is_none())
            .map(|c| c.mutation.timestamp())
            .min();
        if let Some(oldest) = oldest_delete {
            self.watches.lock().retain(|watch| match watch.upgrade() {
                Some(watch) => {
                    watch.saw(oldest);
                    true
                }
                None => false,
            });
        }
        let replica = self.clone();
        run_to_completion::<_, S>(async move {
            let changes = newest_per_key(changes);
            replica.apply_claimed(&slot, changes, None).await
        })
        .await
    }

    /// Writes of one key reach the storage one at a time, in the order the CRDT decided
    /// them; writes of different keys go concurrently (see [`KeyspaceSlot`]).
    async fn apply_claimed(
        &self,
        slot: &KeyspaceSlot,
        changes: Vec<Change>,
        local: Option<&DatacakeHandle>,
    ) -> Result<Vec<Change>, S> {
        let keyspace = &*slot.name;
        let clock = local.map(|node| node.clock());
        let mut todo = changes;
        let mut applied = Vec::new();
        while !todo.is_empty() {
            let settled = slot.settled();
            tokio::pin!(settled);
            let (claim, blocked) = slot
                .claim(todo, settled.as_mut(), clock)
                .map_err(|(id, source)| StoreError::Clock { id, source })?;
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

    /// The entries held for `keys` of `keyspace` (ids held nothing for are left out).
    pub(crate) fn entries_of(&self, keyspace: &str, keys: &[Key]) -> Vec<BucketEntry> {
        self.slot(keyspace).map_or_else(Vec::new, |slot| {
            slot.with_state(|s| keys.iter().filter_map(|k| s.get(*k)).collect())
        })
    }

    /// The ids of `entries` (a peer's, of `keyspace`) whose versions would still win here:
    /// what a repair still has to fetch, once other rounds and replication took their part.
    pub(crate) fn still_winning(&self, keyspace: &str, entries: &[BucketEntry]) -> Vec<Key> {
        match self.slot(keyspace) {
            Some(slot) => slot.with_state(|s| {
                entries
                    .iter()
                    .filter(|e| s.will_apply(&Mutation::from(**e)))
                    .map(|e| e.key)
                    .collect()
            }),
            None => entries.iter().map(|e| e.key).collect(),
        }
    }

    /// Drops from `versions` (another replica's answer) those this replica knows to be
    /// purged: of ids it holds nothing for, stamped at or below its purge watermark. Such a
    /// copy survives only on a node that was away past the tombstone grace and has not yet
    /// learnt of the purge; serving it would undo a delete.
    pub(crate) fn drop_purged(&self, keyspace: &str, versions: &mut Vec<Change>) {
        if let Some(slot) = self.slot(keyspace) {
            slot.with_state(|s| {
                versions.retain(|v| !s.knows_purged(v.mutation.key(), v.mutation.timestamp()))
            });
        }
    }

    /// Of `puts` (a position, an id, a stamp), the positions of those `keyspace` refuses as
    /// purged ([`KeyspaceState::knows_purged`]).
    pub(crate) fn purged_of(&self, keyspace: &str, puts: &[(u32, Key, HLCTimestamp)]) -> Vec<u32> {
        self.slot(keyspace).map_or_else(Vec::new, |slot| {
            slot.with_state(|s| {
                puts.iter()
                    .filter(|(_, key, ts)| s.knows_purged(*key, *ts))
                    .map(|(at, _, _)| *at)
                    .collect()
            })
        })
    }

    /// A watch of the deletes taken from peers from now on (see [`TombstoneWatch`]).
    pub(crate) fn watch_tombstones(&self) -> Arc<TombstoneWatch> {
        let watch = Arc::new(TombstoneWatch::default());
        let mut watches = self.watches.lock();
        // Dropped watches go here too, not only when a delete arrives: without deletes the
        // list would grow by a round's watch every round.
        watches.retain(|w| w.strong_count() > 0);
        watches.push(Arc::downgrade(&watch));
        watch
    }

    /// How many watches the replica keeps (live or not yet pruned).
    #[cfg(test)]
    pub(crate) fn watches_kept(&self) -> usize {
        self.watches.lock().len()
    }

    /// A snapshot of every keyspace's slot, so callers do not hold the map's lock while they
    /// work on the keyspaces.
    pub(crate) fn slots(&self) -> Vec<(String, Arc<KeyspaceSlot>)> {
        self.keyspaces
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The slots of the keyspaces named in `(after, until]` (`None`: unbounded), by name.
    pub(crate) fn slots_in(
        &self,
        after: Option<&str>,
        until: Option<&str>,
    ) -> Vec<(String, Arc<KeyspaceSlot>)> {
        use std::ops::Bound;
        let low = after.map_or(Bound::Unbounded, Bound::Excluded);
        let high = until.map_or(Bound::Unbounded, Bound::Included);
        self.keyspaces
            .read()
            .range::<str, _>((low, high))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The total digest of `keyspace`, if held.
    pub(crate) fn total(&self, keyspace: &str) -> Option<u64> {
        self.slot(keyspace)
            .map(|slot| slot.with_state(|s| s.digest().total()))
    }

    /// The oldest stamp of any write in flight, or `None` if nothing is in flight.
    pub(crate) fn floor(&self) -> Option<HLCTimestamp> {
        self.keyspaces
            .read()
            .values()
            .filter_map(|s| s.floor())
            .min()
    }

    /// The entries of `buckets` (ascending, at resolution `bits`) of `keyspace`, sorted by
    /// bucket, then id, and how many of `buckets` they hold whole: all of them, unless more
    /// than `max_entries` entries were collected (see
    /// [`KeyspaceState::bucket_entries_unsorted`]). The keyspace's lock is taken once per
    /// [`scan_in_steps`] step.
    pub(crate) async fn bucket_entries(
        &self,
        keyspace: &str,
        bits: u8,
        buckets: &[u32],
        max_entries: usize,
    ) -> (Vec<BucketEntry>, usize) {
        // Each step of the scan holds the keyspace's lock (writes of it wait); the sort
        // does not.
        let Some(slot) = self.slot(keyspace) else {
            return (Vec::new(), buckets.len());
        };
        scan_in_steps(buckets, max_entries, SCAN_STEP_ENTRIES, |rest, step| {
            slot.with_state(|s| s.bucket_entries_unsorted(bits, rest, step))
        })
        .await
    }

    /// The resolution of `keyspace`'s digest now (0 if not held): what this node tells
    /// peers to ask for its buckets at.
    pub(crate) fn digest_bits(&self, keyspace: &str) -> u8 {
        self.slot(keyspace)
            .map_or(0, |slot| slot.with_state(|s| s.digest().bits()))
    }

    /// The buckets of `keyspace`, at resolution `bits`, that differ from a peer's.
    pub(crate) fn differing_buckets(&self, keyspace: &str, bits: u8, remote: &[u64]) -> Vec<u32> {
        match self.slot(keyspace) {
            Some(slot) => slot.with_state(|s| s.differing_buckets(bits, remote)),
            None => KeyspaceState::new().differing_buckets(bits, remote),
        }
    }

    /// Plans the repair of `keyspace` from a peer's entries of `buckets`.
    pub(crate) fn plan(
        &self,
        keyspace: &str,
        bits: u8,
        buckets: &[u32],
        remote: &[BucketEntry],
        remote_watermark: Option<HLCTimestamp>,
    ) -> RepairPlan {
        match self.slot(keyspace) {
            Some(slot) => {
                slot.with_state(|s| plan_repair(s, bits, buckets, remote, remote_watermark))
            }
            None => plan_repair(
                &KeyspaceState::new(),
                bits,
                buckets,
                remote,
                remote_watermark,
            ),
        }
    }

    /// Purges the tombstones older than `cutoff` from every keyspace, storage first; returns
    /// how many were purged.
    ///
    /// `cutoff` is asked again for each keyspace once no write is in flight there, so a
    /// delete that arrived meanwhile lowers it (see [`TombstoneWatch`]).
    pub(crate) async fn purge_tombstones(
        &self,
        cutoff: impl Fn() -> HLCTimestamp,
    ) -> Result<usize, S> {
        let mut total = 0;
        for (name, slot) in self.slots() {
            if !slot.with_state(|s| s.has_tombstones_before(cutoff())) {
                continue;
            }
            // No write in flight while the watermark rises (see `KeyspaceSlot::exclusive`).
            let held = slot.exclusive().await;
            let cutoff = cutoff();
            // Memory first: if the storage call fails, the storage merely keeps tombstones
            // that a restart reloads (harmless), never the other way round.
            let purged = held.state().purge_tombstones(cutoff);
            if purged.is_empty() {
                continue;
            }
            total += purged.len();
            let mark = held.state().purge_watermark();
            self.persist_watermark(&name, mark).await?;
            let keys = purged.iter().map(|e| e.key).collect();
            self.storage
                .remove_tombstones(&name, keys)
                .await
                .map_err(StoreError::BulkStorage)?;
        }
        Counters::add(&self.counters.tombstones_purged, total);
        Ok(total)
    }

    /// Raises `keyspace`'s purge watermark to a peer's `watermark` and forgets the `keys`
    /// held at or below it (obsolete copies the peer purged the deletes of; see
    /// [`RepairPlan::obsolete`]); returns how many were forgotten.
    ///
    /// Storage first, then memory: if the storage fails, the replica still holds the copies
    /// in memory, so the next repair round finds them obsolete again and retries. (Memory
    /// first would leave the storage serving copies no repair looks at again.)
    pub(crate) async fn forget_obsolete(
        &self,
        keyspace: &str,
        watermark: HLCTimestamp,
        keys: &[Key],
    ) -> Result<usize, S> {
        let Some(slot) = self.slot(keyspace) else {
            return Ok(0);
        };
        let held = slot.exclusive().await;
        let obsolete = held.state().held_at_or_below(watermark, keys);
        // The watermark goes to the storage before the copies leave it (as in a purge).
        if held.state().purge_watermark() < Some(watermark) {
            self.persist_watermark(keyspace, Some(watermark)).await?;
        }
        if !obsolete.is_empty() {
            let live: Vec<(Key, HLCTimestamp)> = obsolete
                .iter()
                .filter(|e| !e.tombstone)
                .map(|e| (e.key, e.timestamp))
                .collect();
            if !live.is_empty() {
                self.storage
                    .mark_many_as_tombstone(keyspace, live)
                    .await
                    .map_err(StoreError::BulkStorage)?;
            }
            let keys = obsolete.iter().map(|e| e.key).collect();
            self.storage
                .remove_tombstones(keyspace, keys)
                .await
                .map_err(StoreError::BulkStorage)?;
        }
        // Nothing else wrote the keyspace meanwhile (the slot is held), so this forgets
        // exactly `obsolete`.
        let forgotten = held.state().forget_below(watermark, keys).len();
        Counters::add(&self.counters.obsolete_forgotten, forgotten);
        Ok(forgotten)
    }

    async fn persist_watermark(&self, keyspace: &str, mark: Option<HLCTimestamp>) -> Result<(), S> {
        if let Some(mark) = mark {
            self.storage
                .put(PURGE_WATERMARK_KEYSPACE, {
                    let id = self.watermark_ids.lock().of(keyspace);
                    watermark::encode(id, keyspace, mark)
                })
                .await
                .map_err(StoreError::Storage)?;
        }
        Ok(())
    }

    /// Persists a member record.
    pub(crate) async fn persist_member(&self, known: &Known) -> Result<(), S> {
        self.storage
            .put(MEMBERS_KEYSPACE, members::encode(known))
            .await
            .map_err(StoreError::Storage)
    }

    /// Removes `node_id` from `members` and deletes its record: on disk first, so a storage
    /// failure leaves the member counting here and a second call can finish the removal.
    /// Returns whether it was a member.
    pub(crate) async fn remove_member(
        &self,
        members: &Members,
        node_id: datacake_node::NodeId,
    ) -> Result<bool, S> {
        let _turn = members.recording.lock().await;
        if members.get(node_id).is_none() {
            return Ok(false);
        }
        self.forget_member(node_id).await?;
        members.remove(node_id);
        Ok(true)
    }

    /// Deletes a member record.
    async fn forget_member(&self, node_id: datacake_node::NodeId) -> Result<(), S> {
        let id = Key::from(node_id);
        self.storage
            .mark_as_tombstone(MEMBERS_KEYSPACE, id, HLCTimestamp::new(0, 0, 0))
            .await
            .map_err(StoreError::Storage)?;
        self.storage
            .remove_tombstones(MEMBERS_KEYSPACE, vec![id])
            .await
            .map_err(StoreError::BulkStorage)
    }
}

#[cfg(test)]
mod tests;
