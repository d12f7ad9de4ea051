//! The checkers of the workload, one per invariant of the [module docs](super), over the
//! recorded history, the [`Recorder`]'s stamps and holders and the final contents.

use std::collections::{BTreeMap, BTreeSet};

use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::{Consistency, Key};
use datacake_node::NodeId;

use super::{Action, Contents, Entry, Version};
use crate::storage::Recorder;

/// Every checker, over the history, the final contents and the nodes that left for good.
pub(super) fn check(
    entries: &[Entry],
    recorder: &Recorder,
    final_state: &Contents,
    departed: &BTreeSet<NodeId>,
) -> Vec<String> {
    let mut violations = phantoms(entries, recorder, final_state);
    violations.extend(acknowledged_levels(entries, recorder));
    violations.extend(lost_puts(entries, recorder, final_state, departed));
    violations.extend(undone_deletes(entries, recorder, final_state, departed));
    violations.extend(read_your_writes(entries, recorder));
    violations
}

/// The fewest nodes that hold a write acknowledged at `level` when it returns: the writer,
/// and for every level but `None` a peer. (`One` asks one; `Quorum` and `All` count the
/// writer's known members, of which there is at least one peer: a node that knows none
/// meets no level but `None`.)
fn promised_copies(level: Consistency) -> usize {
    match level {
        Consistency::None => 1,
        _ => 2,
    }
}

/// The stamp the store gave a write (`None` for a read, or a write stored nowhere).
fn stamp_of(entry: &Entry, recorder: &Recorder) -> Option<HLCTimestamp> {
    match entry.action {
        Action::Put { write_id } => recorder.put_stamp(write_id),
        Action::Delete => entry.delete_stamp,
        Action::Read => None,
    }
}

/// Whether the acknowledged write `entry`, which the nodes `holders` ever stored, left with
/// them: every one of them left for good, and it had its level's copies when acknowledged
/// (see the module docs: the store does not keep what only departed members held).
fn left_with(entry: &Entry, holders: &BTreeSet<NodeId>, departed: &BTreeSet<NodeId>) -> bool {
    !holders.is_empty()
        && holders.is_subset(departed)
        && entry.copies >= promised_copies(entry.level)
}

/// Whether a delete of `key` stamped after `stamp` could be ordered before a read that
/// returned at `ret`, that is, was invoked before then, whatever its outcome.
///
/// A delete's stamp is known from its tombstones (copies a replica forgot aside). The
/// delete that issued one is the entry that recorded that stamp (its node stored the
/// tombstone before the call returned, as the store applies a write locally before it
/// replicates it); failing that (its node crashed with the call under way), the last delete
/// of `key` that the node which stamped it invoked before a replica first stored it (a node
/// runs one operation at a time, and a crash ends it).
fn deleted_before(
    entries: &[Entry],
    recorder: &Recorder,
    key: Key,
    stamp: HLCTimestamp,
    ret: u64,
) -> bool {
    let deletes = || {
        entries
            .iter()
            .filter(move |e| e.action == Action::Delete && e.key == key)
    };
    recorder
        .deletes_after(key, stamp)
        .into_iter()
        .any(|(delete, first_stored)| {
            let invoked = deletes()
                .find(|e| e.delete_stamp == Some(delete))
                .or_else(|| {
                    deletes()
                        .filter(|e| e.node == delete.node() && e.call < first_stored)
                        .max_by_key(|e| e.call)
                })
                .map_or(first_stored, |e| e.call);
            invoked < ret
        })
}

/// No phantom: every document at the end, and every document a read returned, is one that a
/// put of its key wrote, with the stamp that put got.
fn phantoms(entries: &[Entry], recorder: &Recorder, final_state: &Contents) -> Vec<String> {
    let puts: BTreeMap<u64, &Entry> = entries
        .iter()
        .filter_map(|e| match e.action {
            Action::Put { write_id } => Some((write_id, e)),
            _ => None,
        })
        .collect();
    let genuine = |key: Key, (write_id, stamp): Version| {
        puts.get(&write_id).is_some_and(|p| p.key == key)
            && recorder.put_stamp(write_id) == Some(stamp)
    };
    let mut violations = Vec::new();
    for (key, version) in final_state {
        if let Some(version) = version {
            if !genuine(*key, *version) {
                violations.push(format!(
                    "key {key} ends holding {version:?}, which no put wrote"
                ));
            }
        }
    }
    for entry in entries.iter().filter(|e| e.ok && e.action == Action::Read) {
        if let Some(version) = entry.read {
            if !genuine(entry.key, version) {
                violations.push(format!(
                    "read of key {} on node {} returned {version:?}, which no put wrote",
                    entry.key, entry.node
                ));
            }
        }
    }
    violations
}

/// Acknowledged at its level: when an acknowledged write returned, at least as many nodes
/// had stored it (or a later version of its key) as its level promises.
fn acknowledged_levels(entries: &[Entry], recorder: &Recorder) -> Vec<String> {
    let mut violations = Vec::new();
    for entry in entries.iter().filter(|e| e.ok) {
        let Some(stamp) = stamp_of(entry, recorder) else {
            continue;
        };
        let promised = promised_copies(entry.level);
        if entry.copies < promised {
            violations.push(format!(
                "{:?} of key {} ({stamp}, node {}) acknowledged at {:?} when {} node(s) held it or a later version; the level promises {promised}",
                entry.action, entry.key, entry.node, entry.level, entry.copies
            ));
        }
    }
    violations
}

/// No acknowledged write lost: the final version of each acknowledged put's key is it or a
/// later-stamped write (a later put, or a delete stamped after it).
fn lost_puts(
    entries: &[Entry],
    recorder: &Recorder,
    final_state: &Contents,
    departed: &BTreeSet<NodeId>,
) -> Vec<String> {
    let mut violations = Vec::new();
    for entry in entries.iter().filter(|e| e.ok) {
        let Action::Put { write_id } = entry.action else {
            continue;
        };
        let Some(stamp) = recorder.put_stamp(write_id) else {
            violations.push(format!(
                "acknowledged put {write_id} of key {} on node {} ({:?}) was stored nowhere",
                entry.key, entry.node, entry.level
            ));
            continue;
        };
        let last = final_state.get(&entry.key).copied().flatten();
        let kept = match last {
            Some((_, seen)) => seen >= stamp,
            None => !recorder.deletes_after(entry.key, stamp).is_empty(),
        };
        if !kept && !left_with(entry, &recorder.put_holders(write_id), departed) {
            let how = if recorder.forgotten(entry.key, stamp) {
                " (a replica forgot it as an obsolete copy)"
            } else {
                ""
            };
            violations.push(format!(
                "acknowledged put {write_id} of key {} ({stamp}, {:?}, node {}) lost{how}: the key ends as {last:?}",
                entry.key, entry.level, entry.node
            ));
        }
    }
    violations
}

/// No delete undone: each acknowledged delete's key is absent at the end unless a put
/// stamped after the delete wrote it.
fn undone_deletes(
    entries: &[Entry],
    recorder: &Recorder,
    final_state: &Contents,
    departed: &BTreeSet<NodeId>,
) -> Vec<String> {
    let mut violations = Vec::new();
    for entry in entries
        .iter()
        .filter(|e| e.ok && e.action == Action::Delete)
    {
        let Some(stamp) = entry.delete_stamp else {
            violations.push(format!(
                "acknowledged delete of key {} on node {} ({:?}) was stored nowhere",
                entry.key, entry.node, entry.level
            ));
            continue;
        };
        let last = final_state.get(&entry.key).copied().flatten();
        if let Some((write_id, seen)) = last {
            if seen < stamp
                && !left_with(entry, &recorder.delete_holders(entry.key, stamp), departed)
            {
                violations.push(format!(
                    "delete of key {} ({stamp}, {:?}, node {}) undone: put {write_id} ({seen}) is back",
                    entry.key, entry.level, entry.node
                ));
            }
        }
    }
    violations
}

/// Quorum read-your-writes: a `Quorum` (or `All`) read that started after a `Quorum` (or
/// `All`) write of its key was acknowledged returns that write or a later one.
fn read_your_writes(entries: &[Entry], recorder: &Recorder) -> Vec<String> {
    let strong = |level: Consistency| matches!(level, Consistency::Quorum | Consistency::All);
    let mut violations = Vec::new();
    for read in entries
        .iter()
        .filter(|e| e.ok && e.action == Action::Read && strong(e.level))
    {
        let Some(ret) = read.ret else { continue };
        for write in entries.iter().filter(|w| {
            w.ok && w.key == read.key
                && strong(w.level)
                && w.action != Action::Read
                && w.ret.is_some_and(|r| r < read.call)
        }) {
            let Some(stamp) = stamp_of(write, recorder) else {
                continue;
            };
            let fresh = match (write.action, read.read) {
                (Action::Put { .. }, Some((_, seen))) => seen >= stamp,
                (Action::Put { .. }, None) => {
                    deleted_before(entries, recorder, read.key, stamp, ret)
                }
                // After a delete: absent, or a put stamped after it.
                (_, Some((_, seen))) => seen > stamp,
                (_, None) => true,
            };
            if !fresh {
                violations.push(format!(
                    "{:?} read of key {} on node {} saw {:?}, older than the {:?} write ({:?}, {stamp}) acknowledged on node {} before it began",
                    read.level, read.key, read.node, read.read, write.level, write.action, write.node
                ));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use datacake_eventual_consistency::Document;

    use super::*;
    use crate::storage::KEYSPACE;

    const KEY: Key = 1;

    fn stamp(millis: u64, node: NodeId) -> HLCTimestamp {
        HLCTimestamp::new(millis, 0, node)
    }

    fn departed(nodes: &[NodeId]) -> BTreeSet<NodeId> {
        nodes.iter().copied().collect()
    }

    fn contents(version: Option<Version>) -> Contents {
        BTreeMap::from([(KEY, version)])
    }

    /// A history of key [`KEY`] built as the workload records one: invocations, stores and
    /// returns each take the recorder's next point of the run's order.
    #[derive(Default)]
    struct History {
        recorder: Recorder,
        entries: Vec<Entry>,
    }

    impl History {
        /// Invokes an operation on `node`; returns its index.
        fn invoke(&mut self, node: NodeId, action: Action, level: Consistency) -> usize {
            self.entries.push(Entry {
                node,
                key: KEY,
                action,
                level,
                call: self.recorder.tick(),
                ret: None,
                ok: false,
                delete_stamp: None,
                read: None,
                copies: 0,
            });
            self.entries.len() - 1
        }

        /// The storages of `holders` store put `write_id`, stamped `stamp`.
        fn store_put(&self, write_id: u64, stamp: HLCTimestamp, holders: &[NodeId]) {
            let document = Document::new(KEY, stamp, Bytes::from(write_id.to_le_bytes().to_vec()));
            for node in holders {
                self.recorder.saw_put(*node, &document);
            }
        }

        /// The storages of `holders` store a tombstone stamped `stamp`.
        fn store_tombstone(&self, stamp: HLCTimestamp, holders: &[NodeId]) {
            for node in holders {
                self.recorder.saw_delete(*node, KEY, stamp);
            }
        }

        /// The storage of `node` stores a purge watermark of the workload's keyspace.
        fn store_watermark(&self, node: NodeId, mark: HLCTimestamp) {
            let mut data = mark.as_u128().to_le_bytes().to_vec();
            data.extend_from_slice(KEYSPACE.as_bytes());
            let document = Document::new(0, mark, Bytes::from(data));
            self.recorder.saw_watermark(node, &document);
        }

        /// Operation `index` returns, acknowledged (`ok`) or not; a delete that stored a
        /// tombstone says its stamp, a read what it saw.
        fn ret(&mut self, index: usize, ok: bool, delete_stamp: Option<HLCTimestamp>) {
            let entry = &mut self.entries[index];
            entry.ok = ok;
            entry.delete_stamp = delete_stamp;
            let stamp = match entry.action {
                Action::Put { write_id } => self.recorder.put_stamp(write_id),
                _ => delete_stamp,
            };
            let tombstone = entry.action == Action::Delete;
            entry.copies = stamp.map_or(0, |s| self.recorder.copies(KEY, s, tombstone));
            entry.ret = Some(self.recorder.tick());
        }

        /// A read on `node` at `level`, answered with `seen`, with nothing in between.
        fn read(&mut self, node: NodeId, level: Consistency, seen: Option<Version>) -> usize {
            let read = self.invoke(node, Action::Read, level);
            self.entries[read].read = seen;
            self.ret(read, true, None);
            read
        }

        /// An acknowledged put of `write_id` on `node` at `level`, stored by `holders`.
        fn put(
            &mut self,
            node: NodeId,
            write_id: u64,
            stamp: HLCTimestamp,
            level: Consistency,
            holders: &[NodeId],
        ) {
            let put = self.invoke(node, Action::Put { write_id }, level);
            self.store_put(write_id, stamp, holders);
            self.ret(put, true, None);
        }

        /// An acknowledged delete by `node` at `level`, stamped `stamp`, whose tombstone
        /// `holders` stored.
        fn delete(
            &mut self,
            node: NodeId,
            stamp: HLCTimestamp,
            level: Consistency,
            holders: &[NodeId],
        ) {
            let del = self.invoke(node, Action::Delete, level);
            self.store_tombstone(stamp, holders);
            self.ret(del, true, Some(stamp));
        }

        fn check(&self, final_state: &Contents, departed: &BTreeSet<NodeId>) -> Vec<String> {
            check(&self.entries, &self.recorder, final_state, departed)
        }
    }

    /// A put that ends lost is excused only when every node that stored it left for good.
    #[test]
    fn a_lost_put_is_excused_only_if_it_left_with_every_node_that_held_it() {
        let absent = contents(None);
        let mut alone = History::default();
        alone.put(3, 5, stamp(1_000, 3), Consistency::None, &[3]);
        assert!(alone.check(&absent, &departed(&[3])).is_empty());
        let violations = alone.check(&absent, &departed(&[]));
        assert!(
            violations[0].contains("acknowledged put 5"),
            "{violations:?}"
        );

        let mut shared = History::default();
        shared.put(3, 5, stamp(1_000, 3), Consistency::None, &[3, 1]);
        let violations = shared.check(&absent, &departed(&[3]));
        assert!(
            violations[0].contains("acknowledged put 5"),
            "{violations:?}"
        );
    }

    /// A delete undone is excused only when every node that stored its tombstone left for
    /// good.
    #[test]
    fn an_undone_delete_is_excused_only_if_it_left_with_every_node_that_held_it() {
        let (put, delete) = (stamp(1_000, 1), stamp(2_000, 3));
        let back = contents(Some((5, put)));
        let history = |holders: &[NodeId]| {
            let mut history = History::default();
            history.put(1, 5, put, Consistency::None, &[1, 3]);
            history.delete(3, delete, Consistency::None, holders);
            history
        };

        let alone = history(&[3]);
        assert!(alone.check(&back, &departed(&[3])).is_empty());
        let violations = alone.check(&back, &departed(&[]));
        assert!(violations[0].contains("undone"), "{violations:?}");

        let shared = history(&[3, 2]);
        let violations = shared.check(&back, &departed(&[3]));
        assert!(violations[0].contains("undone"), "{violations:?}");
    }

    /// A `Quorum` read that finds the key absent after a `Quorum` put is not explained by a
    /// delete invoked only after the read returned (the old checker accepted any delete
    /// stamped after the put, whenever it came).
    #[test]
    fn an_absent_strong_read_is_not_excused_by_a_delete_invoked_after_it_returned() {
        let (put, delete) = (stamp(1_000, 1), stamp(2_000, 3));
        let mut history = History::default();
        history.put(1, 5, put, Consistency::Quorum, &[1, 2]);
        history.read(2, Consistency::Quorum, None);
        history.delete(3, delete, Consistency::Quorum, &[3, 1, 2]);

        let violations = history.check(&contents(None), &departed(&[]));
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].contains("Quorum read of key 1 on node 2 saw None"),
            "{violations:?}"
        );
    }

    /// Nor by a tombstone that carries a later put's own stamp: a replica that forgot that
    /// put's copy as obsolete stored it, and it is no delete. Such a tombstone does not
    /// explain the key's absence at the end either.
    #[test]
    fn an_absent_read_is_not_excused_by_a_forgotten_copy_of_a_later_put() {
        let (first, second) = (stamp(1_000, 1), stamp(2_000, 2));
        let mut history = History::default();
        history.put(1, 5, first, Consistency::Quorum, &[1, 2]);
        // A later put that failed, stored on node 2 only, which then forgets it.
        let put = history.invoke(2, Action::Put { write_id: 6 }, Consistency::One);
        history.store_put(6, second, &[2]);
        history.ret(put, false, None);
        history.store_tombstone(second, &[2]);
        history.read(1, Consistency::Quorum, None);

        let violations = history.check(&contents(None), &departed(&[]));
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(
            violations
                .iter()
                .any(|v| v.contains("Quorum read of key 1")),
            "{violations:?}"
        );
        assert!(
            violations
                .iter()
                .any(|v| v.contains("acknowledged put 5 of key 1")),
            "{violations:?}"
        );
    }

    /// The read-your-writes check stays sound: an absent read may follow a delete invoked
    /// before it returned, whose tombstone reached a storage only after, whether that delete
    /// failed, never returned (its node crashed) or was acknowledged.
    #[test]
    fn an_absent_strong_read_may_follow_a_concurrent_delete_of_any_outcome() {
        let (put, delete) = (stamp(1_000, 1), stamp(2_000, 3));
        let outcomes: [(bool, bool); 3] = [(true, true), (true, false), (false, false)];
        for (returned, ok) in outcomes {
            let mut history = History::default();
            history.put(1, 5, put, Consistency::Quorum, &[1, 2]);
            let del = history.invoke(3, Action::Delete, Consistency::All);
            history.read(2, Consistency::Quorum, None);
            history.store_tombstone(delete, &[3, 1]);
            if returned {
                history.ret(del, ok, Some(delete));
            }
            let violations = history.check(&contents(None), &departed(&[]));
            assert!(violations.is_empty(), "{returned} {ok}: {violations:?}");
        }
        // A delete stamped after the put but invoked after the read returned on the same
        // node does not stand in for the one before.
        let mut history = History::default();
        history.put(1, 5, put, Consistency::Quorum, &[1, 2]);
        let earlier = history.invoke(3, Action::Delete, Consistency::All);
        history.ret(earlier, false, None);
        history.read(2, Consistency::Quorum, None);
        let later = history.invoke(3, Action::Delete, Consistency::All);
        history.store_tombstone(delete, &[3]);
        history.ret(later, false, Some(delete));
        let violations = history.check(&contents(None), &departed(&[]));
        assert_eq!(violations.len(), 1, "{violations:?}");
    }

    /// A write acknowledged at `One` or above must have reached a second node (or one that
    /// held a later version) by the time it returned.
    #[test]
    fn a_write_acknowledged_with_fewer_copies_than_its_level_promises_is_flagged() {
        let (put, later) = (stamp(1_000, 1), stamp(2_000, 2));
        let kept = contents(Some((5, put)));
        for level in [Consistency::One, Consistency::Quorum, Consistency::All] {
            let mut history = History::default();
            history.put(1, 5, put, level, &[1]);
            let violations = history.check(&kept, &departed(&[]));
            assert_eq!(violations.len(), 1, "{level:?}: {violations:?}");
            assert!(
                violations[0].contains("the level promises 2"),
                "{violations:?}"
            );
        }
        let mut history = History::default();
        history.put(1, 5, put, Consistency::None, &[1]);
        assert!(history.check(&kept, &departed(&[])).is_empty());
        // A peer that already held a later version acknowledges without storing the put.
        let mut history = History::default();
        history.put(2, 6, later, Consistency::None, &[2]);
        history.put(1, 5, put, Consistency::One, &[1]);
        let violations = history.check(&contents(Some((6, later))), &departed(&[]));
        assert!(violations.is_empty(), "{violations:?}");
    }

    /// A write at `One` or above that ends lost is excused only if the nodes that held it,
    /// two at least, all left for good: leaving with one departed node is a `None` write's
    /// excuse only.
    #[test]
    fn a_lost_write_at_one_is_excused_only_if_its_two_copies_left() {
        let (put, delete) = (stamp(1_000, 1), stamp(2_000, 3));
        let absent = contents(None);
        let mut alone = History::default();
        alone.put(3, 5, put, Consistency::One, &[3]);
        let violations = alone.check(&absent, &departed(&[3]));
        assert!(
            violations.iter().any(|v| v.contains("acknowledged put 5")),
            "{violations:?}"
        );

        let mut both = History::default();
        both.put(3, 5, put, Consistency::One, &[3, 4]);
        assert!(both.check(&absent, &departed(&[3, 4])).is_empty());

        let mut undone = History::default();
        undone.put(1, 5, put, Consistency::None, &[1, 3]);
        let del = undone.invoke(3, Action::Delete, Consistency::Quorum);
        undone.store_tombstone(delete, &[3]);
        undone.ret(del, true, Some(delete));
        let violations = undone.check(&contents(Some((5, put))), &departed(&[3]));
        assert!(
            violations.iter().any(|v| v.contains("undone")),
            "{violations:?}"
        );
    }

    /// A peer whose purge watermark reached a delete acknowledges it without a tombstone (it
    /// holds nothing of the key, and refuses older puts of it): it counts as a copy, and as a
    /// holder that keeps the delete when its writer leaves.
    #[test]
    fn a_peer_past_its_purge_watermark_holds_a_delete_without_a_tombstone() {
        let (put, delete) = (stamp(1_000, 1), stamp(2_000, 3));
        let history = |watermark: Option<HLCTimestamp>| {
            let mut history = History::default();
            history.put(1, 5, put, Consistency::None, &[1]);
            if let Some(mark) = watermark {
                history.store_watermark(2, mark);
            }
            let del = history.invoke(3, Action::Delete, Consistency::Quorum);
            history.store_tombstone(delete, &[3]);
            history.ret(del, true, Some(delete));
            history
        };
        let absent = contents(None);
        assert!(history(Some(stamp(2_500, 2)))
            .check(&absent, &departed(&[]))
            .is_empty());
        for mark in [None, Some(stamp(1_500, 2))] {
            let violations = history(mark).check(&absent, &departed(&[]));
            assert_eq!(violations.len(), 1, "{mark:?}: {violations:?}");
            assert!(
                violations[0].contains("the level promises 2"),
                "{violations:?}"
            );
        }
        // Its writer left; the peer past the watermark stayed, so the delete is not excused.
        let violations =
            history(Some(stamp(2_500, 2))).check(&contents(Some((5, put))), &departed(&[3]));
        assert!(
            violations.iter().any(|v| v.contains("undone")),
            "{violations:?}"
        );
    }

    /// A document no put wrote, or a put's document with another stamp, is a phantom, at the
    /// end and in a read.
    #[test]
    fn a_document_no_put_wrote_is_a_phantom() {
        let put = stamp(1_000, 1);
        let mut history = History::default();
        history.put(1, 5, put, Consistency::None, &[1]);
        assert!(history
            .check(&contents(Some((5, put))), &departed(&[]))
            .is_empty());
        history.read(2, Consistency::One, Some((9, put)));
        let violations = history.check(&contents(Some((5, stamp(1_001, 1)))), &departed(&[]));
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(
            violations[0].contains("which no put wrote"),
            "{violations:?}"
        );
        assert!(violations[1].contains("returned (9"), "{violations:?}");
    }
}
