//! The observed-remove set with last-writer-wins timestamps, [`OrSWotSet`].

use std::cmp::Ordering;
use std::ops::{ControlFlow, RangeInclusive};

use crate::error::SetError;
use crate::key_hash::{key_hash, key_of_hash};
use crate::key_map::{merge_by_hash, KeyMap};
use crate::timestamp::HLCTimestamp;
use crate::version::Version;

/// A key of an [`OrSWotSet`]: a plain `u64` (the name datacake 0.x exported).
pub type Key = u64;

/// `(key, timestamp)` pairs, as returned by [`OrSWotSet::diff`] and
/// [`OrSWotSet::purge_old_deletes`].
pub type StateChanges = Vec<(u64, HLCTimestamp)>;

/// An observed-remove set of `u64` keys with last-writer-wins [`HLCTimestamp`]s, whose
/// tombstones can be purged without letting deleted keys come back.
///
/// # Rules
///
/// * Every key holds the latest operation applied to it: *live* (inserted) at a timestamp, or
///   *dead* (a tombstone) at a timestamp. An operation applies only if its timestamp is newer
///   than the key's current one; when an insert and a delete carry the same timestamp, the
///   delete wins. So every replica that sees the same operations, in any order, ends in the
///   same state.
/// * **Sources.** Operations arrive through `SOURCES` numbered sources (peers, streams); each
///   source must deliver its operations in timestamp order (repeats are harmless). The set
///   remembers, per source, the largest timestamp it has *observed* from it.
/// * **Purging.** [`purge_old_deletes`](Self::purge_old_deletes) drops every tombstone older
///   than the smallest observed timestamp among the sources that have delivered anything.
///   A source that has never delivered does not hold purging back (the original datacake
///   set waited for it forever, so a set with an idle source leaked tombstones). The purge is
///   strict (`<`): a source may still send more operations carrying the very timestamp it
///   last sent (a batch stamped once).
/// * **Purge watermark.** The set remembers the newest purged tombstone. A write for a key the
///   set holds nothing about is refused if its timestamp is at or below that watermark: the
///   key may be one whose tombstone was purged, and the write is then stale. Writes from
///   sources that delivered before the purge are always newer than the watermark, so this
///   only refuses writes that are stale or come from a source that was idle until after the
///   purge and then replays old history; such a source must start after the watermark (in
///   Datacake, the store refuses such a write at the peer and says so, so the write fails at
///   its consistency level instead of being acknowledged and dropped).
/// * **Out-of-range sources** are refused with [`SetError::SourceOutOfRange`]; nothing
///   panics.
///
/// # Merging
///
/// [`merge`](Self::merge) is a join: commutative, associative and idempotent, as long as
/// every purge keeps the contract of
/// [`purge_deletes_before`](Self::purge_deletes_before) (a set purges only what every set it
/// is later merged with has seen); a purge that breaks it can make the order of merges
/// matter. The property tests check the laws on sets without purges. Per key the
/// newer operation wins as above; an entry one side lacks is dropped when it is at or below
/// the other side's purge watermark (the other side purged it). Observed timestamps merge per
/// source by maximum and the purge watermarks by maximum, so source indexes must mean the same
/// streams in both sets (always true with one source).
///
/// # Memory
///
/// Live entries and tombstones each sit in a struct-of-arrays map sorted by
/// [`key_hash`](crate::key_hash) (24 bytes per key), plus a small delta of recent inserts
/// in hash maps sharded by the same hash (see the crate docs for measured figures). The hash
/// order lets [`visit_hash_ranges`](Self::visit_hash_ranges) read a range of key hashes
/// without scanning the set.
///
/// ```
/// use datacake_crdt::{HLCTimestamp, OrSWotSet};
///
/// let mut set = OrSWotSet::<1>::new();
/// assert!(set.insert(1, HLCTimestamp::new(10, 0, 0)));
/// assert!(!set.insert(1, HLCTimestamp::new(9, 0, 0)), "older writes lose");
/// assert!(set.delete(1, HLCTimestamp::new(11, 0, 0)));
/// assert!(set.insert(2, HLCTimestamp::new(12, 0, 0)));
/// assert_eq!(set.purge_old_deletes(), vec![(1, HLCTimestamp::new(11, 0, 0))]);
/// assert!(!set.insert(1, HLCTimestamp::new(10, 5, 0)), "a purged delete still wins");
/// ```
#[derive(Debug, Clone)]
pub struct OrSWotSet<const SOURCES: usize = 1> {
    live: KeyMap,
    dead: KeyMap,
    observed: [Option<HLCTimestamp>; SOURCES],
    purged: Option<HLCTimestamp>,
}

impl<const SOURCES: usize> Default for OrSWotSet<SOURCES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SOURCES: usize> OrSWotSet<SOURCES> {
    /// An empty set. `SOURCES` must be at least 1 (checked at compile time).
    pub fn new() -> Self {
        const { assert!(SOURCES >= 1, "an OrSWotSet needs at least one source") };
        Self {
            live: KeyMap::default(),
            dead: KeyMap::default(),
            observed: [None; SOURCES],
            purged: None,
        }
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether there are no live keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of tombstones held.
    pub fn tombstone_count(&self) -> usize {
        self.dead.len()
    }

    /// The timestamp of a live key.
    pub fn get(&self, key: &u64) -> Option<&HLCTimestamp> {
        self.live.get(key_hash(*key))
    }

    /// The live keys and their timestamps, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, HLCTimestamp)> + '_ {
        self.live.iter().map(|(h, ts)| (key_of_hash(h), *ts))
    }

    /// The tombstones (deleted keys and their delete timestamps), in no particular order.
    pub fn tombstones(&self) -> impl Iterator<Item = (u64, HLCTimestamp)> + '_ {
        self.dead.iter().map(|(h, ts)| (key_of_hash(h), *ts))
    }

    /// The timestamp of the tombstone held for `key` (a deleted key the set still remembers).
    pub fn tombstone(&self, key: &u64) -> Option<&HLCTimestamp> {
        self.dead.get(key_hash(*key))
    }

    /// Visits the live entries and tombstones whose [`key_hash`](crate::key_hash) lies in one
    /// of `ranges`, in ascending hash order, until `visit` breaks; each as its key and its
    /// [`Version`] (a tombstone is a delete). Ranges may come in any order and overlap (an
    /// entry is visited once); an empty range matches nothing.
    ///
    /// The cost is a few binary searches per range, the entries visited, and the recent
    /// inserts in the delta's shards the ranges overlap (a shard holds about 1,024 entries at
    /// most): not a scan of the set. For anti-entropy by buckets of key hashes on a keyspace
    /// too large to scan while writes wait.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    ///
    /// use datacake_crdt::{key_hash, HLCTimestamp, OrSWotSet};
    ///
    /// let mut set = OrSWotSet::<1>::new();
    /// for key in 0..1_000 {
    ///     set.insert(key, HLCTimestamp::new(key + 1, 0, 0));
    /// }
    /// set.delete(3, HLCTimestamp::new(5_000, 0, 0));
    /// // Bucket 5 of 16: the keys whose hash starts with the four bits 0101.
    /// let bucket = 5u64 << 60..=(6u64 << 60) - 1;
    /// let mut seen = Vec::new();
    /// set.visit_hash_ranges(&[bucket.clone()], |key, version| {
    ///     seen.push((key, version.delete));
    ///     ControlFlow::Continue(())
    /// });
    /// assert!(seen.iter().all(|(key, _)| bucket.contains(&key_hash(*key))));
    /// assert!(seen.is_sorted_by_key(|(key, _)| key_hash(*key)));
    /// assert_eq!(seen.len(), (0..1_000).filter(|k| bucket.contains(&key_hash(*k))).count());
    /// ```
    pub fn visit_hash_ranges(
        &self,
        ranges: &[RangeInclusive<u64>],
        mut visit: impl FnMut(u64, Version) -> ControlFlow<()>,
    ) {
        for range in disjoint(ranges) {
            let live = self
                .live
                .range(range.clone())
                .map(|(hash, ts)| (hash, Version::put(ts)));
            let dead = self
                .dead
                .range(range)
                .map(|(hash, ts)| (hash, Version::delete(ts)));
            for (hash, version) in merge_by_hash(live, dead) {
                if visit(key_of_hash(hash), version).is_break() {
                    return;
                }
            }
        }
    }

    /// The largest timestamp observed from `source`; `None` if it has delivered nothing or is
    /// out of range.
    pub fn observed(&self, source: usize) -> Option<HLCTimestamp> {
        self.observed.get(source).copied().flatten()
    }

    /// The newest purged tombstone's timestamp, below or at which writes for unknown keys are
    /// refused (see the type docs).
    pub fn purge_watermark(&self) -> Option<HLCTimestamp> {
        self.purged
    }

    /// Whether an insert of `key` at `ts` would apply (without observing anything).
    pub fn will_apply(&self, key: u64, ts: HLCTimestamp) -> bool {
        self.would_win(key, Version::put(ts))
    }

    /// Whether a write of `key` ranked `version` (a put or a delete) would apply: it must
    /// [beat](Version::beats) what the set holds for the key, and a key the set does not hold
    /// must be stamped above the purge watermark.
    pub fn would_win(&self, key: u64, version: Version) -> bool {
        self.wins(key_hash(key), version)
    }

    /// Inserts `key` at `ts` through source 0; returns whether it applied.
    pub fn insert(&mut self, key: u64, ts: HLCTimestamp) -> bool {
        self.insert_with_source(0, key, ts).unwrap_or(false)
    }

    /// Deletes `key` at `ts` through source 0; returns whether it applied. A delete of a key
    /// the set does not know still leaves a tombstone (so an older insert arriving later
    /// loses), unless it is at or below the purge watermark.
    pub fn delete(&mut self, key: u64, ts: HLCTimestamp) -> bool {
        self.delete_with_source(0, key, ts).unwrap_or(false)
    }

    /// Inserts `key` at `ts` as delivered by `source`; returns whether it applied. The source's
    /// observed timestamp advances even when the insert loses.
    pub fn insert_with_source(
        &mut self,
        source: usize,
        key: u64,
        ts: HLCTimestamp,
    ) -> Result<bool, SetError> {
        self.observe(source, ts)?;
        Ok(self.apply(key, ts, false))
    }

    /// Deletes `key` at `ts` as delivered by `source`; returns whether it applied.
    pub fn delete_with_source(
        &mut self,
        source: usize,
        key: u64,
        ts: HLCTimestamp,
    ) -> Result<bool, SetError> {
        self.observe(source, ts)?;
        Ok(self.apply(key, ts, true))
    }

    fn observe(&mut self, source: usize, ts: HLCTimestamp) -> Result<(), SetError> {
        let slot = self
            .observed
            .get_mut(source)
            .ok_or(SetError::SourceOutOfRange {
                index: source,
                sources: SOURCES,
            })?;
        if slot.is_none_or(|seen| ts > seen) {
            *slot = Some(ts);
        }
        Ok(())
    }

    /// [`would_win`](Self::would_win) for the key whose [`key_hash`] is `hash`.
    fn wins(&self, hash: u64, version: Version) -> bool {
        let held = match (self.live.get(hash), self.dead.get(hash)) {
            (Some(ts), _) => Version::put(*ts),
            (None, Some(ts)) => Version::delete(*ts),
            (None, None) => return self.purged.is_none_or(|w| version.timestamp > w),
        };
        version.beats(held)
    }

    fn apply(&mut self, key: u64, ts: HLCTimestamp, delete: bool) -> bool {
        let hash = key_hash(key);
        let version = Version {
            timestamp: ts,
            delete,
        };
        if !self.wins(hash, version) {
            return false;
        }
        if delete {
            self.live.remove(hash);
            self.dead.insert(hash, ts);
        } else {
            self.dead.remove(hash);
            self.live.insert(hash, ts);
        }
        true
    }

    /// Drops every tombstone older than the smallest observed timestamp among the sources that
    /// have delivered anything, raises the purge watermark to the newest one dropped, and
    /// returns them sorted by key.
    pub fn purge_old_deletes(&mut self) -> StateChanges {
        let Some(frontier) = self.observed.iter().flatten().min().copied() else {
            return Vec::new();
        };
        self.purge_tombstones_below(frontier)
    }

    /// Drops every tombstone strictly older than `cutoff`, raises the purge watermark to the
    /// newest one dropped, and returns them sorted by key.
    ///
    /// The same watermark semantics as [`purge_old_deletes`](Self::purge_old_deletes), with the
    /// cutoff chosen by the caller instead of the observed frontier: afterwards, a write of any
    /// key the set does not hold at or below the watermark is refused, so a purged delete never
    /// lets an older write resurrect its key. The caller vouches that no write older than
    /// `cutoff` that the set has not seen is still in flight (as `purge_old_deletes` relies on
    /// the sources' observed timestamps). Linear in the number of tombstones, not live keys.
    ///
    /// ```
    /// use datacake_crdt::{HLCTimestamp, OrSWotSet};
    ///
    /// let mut set = OrSWotSet::<1>::new();
    /// set.delete(1, HLCTimestamp::new(5, 0, 0));
    /// set.delete(2, HLCTimestamp::new(9, 0, 0));
    /// assert_eq!(
    ///     set.purge_deletes_before(HLCTimestamp::new(6, 0, 0)),
    ///     vec![(1, HLCTimestamp::new(5, 0, 0))],
    /// );
    /// assert_eq!(set.purge_watermark(), Some(HLCTimestamp::new(5, 0, 0)));
    /// assert!(!set.insert(1, HLCTimestamp::new(4, 0, 0)), "the purged delete still wins");
    /// assert_eq!(set.tombstone(&2), Some(&HLCTimestamp::new(9, 0, 0)));
    /// ```
    pub fn purge_deletes_before(&mut self, cutoff: HLCTimestamp) -> StateChanges {
        self.purge_tombstones_below(cutoff)
    }

    /// Raises the purge watermark to `watermark` (never lowers it): writes of keys the set
    /// does not hold at or below it are refused from now on. For restoring a watermark that
    /// was persisted when tombstones were purged.
    pub fn raise_purge_watermark(&mut self, watermark: HLCTimestamp) {
        self.purged = self.purged.max(Some(watermark));
    }

    /// Forgets `key` altogether (live or tombstone) and returns what was held, without
    /// touching the purge watermark.
    ///
    /// For a replica that learns its copy is obsolete: call it only for keys at or below a
    /// watermark the caller raises with [`raise_purge_watermark`](Self::raise_purge_watermark),
    /// so that writes older than the forgotten entry stay refused.
    ///
    /// ```
    /// use datacake_crdt::{HLCTimestamp, OrSWotSet};
    ///
    /// let mut set = OrSWotSet::<1>::new();
    /// set.insert(1, HLCTimestamp::new(5, 0, 0));
    /// set.raise_purge_watermark(HLCTimestamp::new(6, 0, 0));
    /// assert_eq!(set.forget(1), Some((HLCTimestamp::new(5, 0, 0), false)));
    /// assert!(!set.insert(1, HLCTimestamp::new(5, 0, 0)), "still refused");
    /// assert_eq!(set.forget(1), None);
    /// ```
    pub fn forget(&mut self, key: u64) -> Option<(HLCTimestamp, bool)> {
        let hash = key_hash(key);
        if let Some(ts) = self.live.remove(hash) {
            return Some((ts, false));
        }
        self.dead.remove(hash).map(|ts| (ts, true))
    }

    fn purge_tombstones_below(&mut self, cutoff: HLCTimestamp) -> StateChanges {
        let mut purged = Vec::new();
        self.dead.retain(|hash, ts| {
            let old = ts < cutoff;
            if old {
                purged.push((key_of_hash(hash), ts));
            }
            !old
        });
        purged.sort_unstable_by_key(|(k, _)| *k);
        if let Some(newest) = purged.iter().map(|(_, ts)| *ts).max() {
            self.purged = self.purged.max(Some(newest));
        }
        purged
    }

    /// Merges `other` into this set (see the type docs for the rules). Linear in the sizes of
    /// both sets.
    pub fn merge(&mut self, mut other: Self) {
        self.merge_tombstones(&other);
        let (a_hashes, a_stamps) = self.live.sorted_hashes();
        let (b_hashes, b_stamps) = other.live.sorted_hashes();
        let mut hashes = Vec::with_capacity(a_hashes.len() + b_hashes.len());
        let mut stamps = Vec::with_capacity(a_hashes.len() + b_hashes.len());
        let mut a = a_hashes
            .iter()
            .copied()
            .zip(a_stamps.iter().copied())
            .peekable();
        let mut b = b_hashes
            .iter()
            .copied()
            .zip(b_stamps.iter().copied())
            .peekable();
        loop {
            let order = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some((ha, _)), Some((hb, _))) => ha.cmp(hb),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
            };
            let entry = match order {
                Ordering::Equal => a
                    .next()
                    .zip(b.next())
                    .map(|((h, wa), (_, wb))| (h, wa.max(wb))),
                // Only we hold it live: the other side may have deleted or purged it.
                Ordering::Less => a.next().filter(|&(h, w)| match other.dead.get(h) {
                    Some(&d) if d >= w => {
                        self.dead.insert(h, d);
                        false
                    }
                    Some(_) => true,
                    None => other.purged.is_none_or(|p| w > p),
                }),
                // Only the other side holds it live: we may have deleted or purged it.
                Ordering::Greater => b.next().filter(|&(h, w)| match self.dead.get(h) {
                    Some(&d) if w <= d => false,
                    Some(_) => {
                        self.dead.remove(h);
                        true
                    }
                    None => self.purged.is_none_or(|p| w > p),
                }),
            };
            if let Some((hash, ts)) = entry {
                hashes.push(hash);
                stamps.push(ts);
            }
        }
        hashes.shrink_to_fit();
        stamps.shrink_to_fit();
        self.live = KeyMap::from_sorted_hashes(hashes, stamps);
        self.purged = self.purged.max(other.purged);
        for (mine, theirs) in self.observed.iter_mut().zip(other.observed) {
            *mine = (*mine).max(theirs);
        }
    }

    /// The tombstone half of [`merge`](Self::merge), for keys live on neither side or only
    /// dead on ours; runs before the live entries are merged.
    fn merge_tombstones(&mut self, other: &Self) {
        // Our tombstones the other side knows nothing of, at or below its purge watermark:
        // it purged them, so do we.
        if let Some(p) = other.purged {
            self.dead.retain(|hash, ts| {
                ts > p || other.dead.contains(hash) || other.live.contains(hash)
            });
        }
        for (hash, &d) in other.dead.iter() {
            if self.live.contains(hash) {
                continue; // settled with the live entries
            }
            match self.dead.get(hash) {
                Some(&mine) if mine >= d => {}
                None if self.purged.is_some_and(|p| d <= p) => {}
                // Ours is older, or we hold none and have not purged past it.
                Some(_) | None => self.dead.insert(hash, d),
            }
        }
    }

    /// What `other` holds that this set lacks: `(changed, removed)`, the live entries and the
    /// tombstones of `other` that would apply here, each sorted by key. Applying them with
    /// [`insert`](Self::insert) and [`delete`](Self::delete) gives this set the entries of
    /// `self.merge(other)` (purge watermarks are not carried).
    pub fn diff(&self, other: &Self) -> (StateChanges, StateChanges) {
        let newer = |entries: &KeyMap, version: fn(HLCTimestamp) -> Version| -> StateChanges {
            entries
                .iter()
                .filter(|(hash, ts)| self.wins(*hash, version(**ts)))
                .map(|(hash, ts)| (key_of_hash(hash), *ts))
                .collect()
        };
        let mut changed = newer(&other.live, Version::put);
        let mut removed = newer(&other.dead, Version::delete);
        changed.sort_unstable_by_key(|(k, _)| *k);
        removed.sort_unstable_by_key(|(k, _)| *k);
        (changed, removed)
    }
}

/// `ranges` sorted, with overlapping and adjacent ones joined and empty ones dropped.
fn disjoint(ranges: &[RangeInclusive<u64>]) -> Vec<RangeInclusive<u64>> {
    let mut sorted: Vec<RangeInclusive<u64>> =
        ranges.iter().filter(|r| !r.is_empty()).cloned().collect();
    sorted.sort_unstable_by_key(|r| *r.start());
    let mut out: Vec<RangeInclusive<u64>> = Vec::with_capacity(sorted.len());
    for range in sorted {
        match out.last_mut() {
            Some(last) if last.end().saturating_add(1) >= *range.start() => {
                *last = *last.start()..=*last.end().max(range.end());
            }
            _ => out.push(range),
        }
    }
    out
}

impl<const SOURCES: usize> PartialEq for OrSWotSet<SOURCES> {
    /// Equal live entries, tombstones, observed timestamps and purge watermark.
    fn eq(&self, other: &Self) -> bool {
        self.live == other.live
            && self.dead == other.dead
            && self.observed == other.observed
            && self.purged == other.purged
    }
}

impl<const SOURCES: usize> Eq for OrSWotSet<SOURCES> {}

#[cfg(feature = "rkyv")]
mod bytes {
    use rkyv::rancor;
    use rkyv::util::AlignedVec;

    use super::OrSWotSet;
    use crate::error::SetError;
    use crate::key_hash::key_hash;
    use crate::key_map::KeyMap;
    use crate::timestamp::HLCTimestamp;

    /// The archived form of a set: sorted live entries, sorted tombstones, per-source
    /// watermarks and the purge watermark.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    struct Snapshot {
        live_keys: Vec<u64>,
        live_stamps: Vec<HLCTimestamp>,
        dead_keys: Vec<u64>,
        dead_stamps: Vec<HLCTimestamp>,
        observed: Vec<Option<HLCTimestamp>>,
        purged: Option<HLCTimestamp>,
    }

    fn invalid(reason: impl Into<String>) -> SetError {
        SetError::InvalidBytes {
            reason: reason.into(),
        }
    }

    impl<const SOURCES: usize> OrSWotSet<SOURCES> {
        /// The set as rkyv bytes (feature `rkyv`), read back with
        /// [`from_bytes`](Self::from_bytes).
        pub fn to_bytes(&self) -> Result<Vec<u8>, SetError> {
            let mut live: Vec<(u64, HLCTimestamp)> = self.iter().collect();
            live.sort_unstable_by_key(|(k, _)| *k);
            let mut dead: Vec<(u64, HLCTimestamp)> = self.tombstones().collect();
            dead.sort_unstable_by_key(|(k, _)| *k);
            let snapshot = Snapshot {
                live_keys: live.iter().map(|(k, _)| *k).collect(),
                live_stamps: live.iter().map(|(_, ts)| *ts).collect(),
                dead_keys: dead.iter().map(|(k, _)| *k).collect(),
                dead_stamps: dead.iter().map(|(_, ts)| *ts).collect(),
                observed: self.observed.to_vec(),
                purged: self.purged,
            };
            rkyv::to_bytes::<rancor::Error>(&snapshot)
                .map(|bytes| bytes.to_vec())
                .map_err(|e| SetError::Serialize {
                    reason: e.to_string(),
                })
        }

        /// Reads a set written by [`to_bytes`](Self::to_bytes) (feature `rkyv`). The bytes are
        /// validated (bytecheck, then the set's own invariants: sorted unique keys, no key both
        /// live and dead, `SOURCES` watermarks); anything else is
        /// [`SetError::InvalidBytes`]. The bytes need no particular alignment.
        pub fn from_bytes(bytes: &[u8]) -> Result<Self, SetError> {
            let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
            aligned.extend_from_slice(bytes);
            let s = rkyv::from_bytes::<Snapshot, rancor::Error>(&aligned)
                .map_err(|e| invalid(e.to_string()))?;
            if s.live_keys.len() != s.live_stamps.len() || s.dead_keys.len() != s.dead_stamps.len()
            {
                return Err(invalid("keys and timestamps differ in number"));
            }
            if !s.live_keys.windows(2).all(|w| w[0] < w[1])
                || !s.dead_keys.windows(2).all(|w| w[0] < w[1])
            {
                return Err(invalid("keys are not sorted and unique"));
            }
            let observed: [Option<HLCTimestamp>; SOURCES] =
                s.observed.try_into().map_err(|v: Vec<_>| {
                    invalid(format!("{} source watermarks, expected {SOURCES}", v.len()))
                })?;
            let mut set = Self::new();
            set.observed = observed;
            set.purged = s.purged;
            for k in &s.dead_keys {
                if s.live_keys.binary_search(k).is_ok() {
                    return Err(invalid(format!("key {k} is both live and dead")));
                }
            }
            set.dead =
                KeyMap::from_entries(s.dead_keys.into_iter().map(key_hash).zip(s.dead_stamps));
            set.live =
                KeyMap::from_entries(s.live_keys.into_iter().map(key_hash).zip(s.live_stamps));
            Ok(set)
        }
    }
}

#[cfg(test)]
mod tests;
