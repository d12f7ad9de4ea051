//! The counters and their merge: the CRDT at the heart of the extension.
//!
//! A *grow-only counter* (G-counter) keeps, per counter name, one total per node: the sum of
//! everything that node added. A node only ever raises its own total; the counter's value is
//! the sum of the totals. Two replicas merge by taking, per `(name, node)`, the larger
//! total. That merge is commutative, associative and idempotent, so replicas that have seen
//! the same entries, in any order and any number of times, hold the same value. That is why
//! the network code around it can be simple: pushes may be lost, repeated or reordered.
//!
//! This is a plain synchronous state machine with no I/O, so the laws are tested directly
//! (see the tests at the bottom).

use std::collections::BTreeMap;

use datacake_node::NodeId;

use crate::messages::{Entry, MAX_ENTRIES_PER_MESSAGE};

/// Why the state refused a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// It would hold more entries than its bound (in all, or for one counter).
    Full,
    /// A node's total would pass `u64::MAX`.
    Overflow,
}

/// Every counter this node knows, as per-node totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    counters: BTreeMap<String, BTreeMap<NodeId, u64>>,
    /// How many `(name, node)` entries `counters` holds.
    entries: usize,
}

impl Counters {
    /// Adds `by` to `node`'s total of `name`, and returns the counter's entries: the state a
    /// peer needs to learn the increment (a delta, much smaller than the whole state).
    pub(crate) fn incr(
        &mut self,
        name: &str,
        node: NodeId,
        by: u64,
        max_entries: usize,
    ) -> Result<Vec<Entry>, Refused> {
        let current = self
            .counters
            .get(name)
            .and_then(|totals| totals.get(&node))
            .copied();
        if current.is_none() {
            self.check_room(name, 1, max_entries)?;
        }
        let total = current
            .unwrap_or(0)
            .checked_add(by)
            .ok_or(Refused::Overflow)?;
        self.set(name, node, total);
        Ok(self.entries_of(name))
    }

    /// Merges `entries` in (per `(name, node)`, the larger total wins) and returns how many
    /// entries changed. All or nothing: if the new entries would not fit, nothing changes.
    pub(crate) fn merge(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
        max_entries: usize,
    ) -> Result<usize, Refused> {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // Count what is new per counter first, so a refused merge leaves no partial state.
        let mut new: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
        for e in &entries {
            let known = self
                .counters
                .get(&e.name)
                .is_some_and(|t| t.contains_key(&e.node));
            let nodes = new.entry(&e.name).or_default();
            if !known && !nodes.contains(&e.node) {
                nodes.push(e.node);
            }
        }
        let added: usize = new.values().map(Vec::len).sum();
        if self.entries + added > max_entries {
            return Err(Refused::Full);
        }
        for (name, nodes) in &new {
            self.check_room(name, nodes.len(), usize::MAX)?;
        }
        let mut changed = 0;
        for e in entries {
            let current = self.counters.get(&e.name).and_then(|t| t.get(&e.node));
            if current.is_none_or(|c| *c < e.total) {
                self.set(&e.name, e.node, e.total);
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// The counter's value: the sum of its per-node totals (0 for an unknown name).
    /// Saturates rather than overflowing: totals come from the network.
    pub(crate) fn value(&self, name: &str) -> u64 {
        self.counters.get(name).map_or(0, |t| {
            t.values().fold(0u64, |sum, v| sum.saturating_add(*v))
        })
    }

    /// The entries of one counter (at most [`MAX_ENTRIES_PER_MESSAGE`]).
    pub(crate) fn entries_of(&self, name: &str) -> Vec<Entry> {
        self.counters.get(name).map_or_else(Vec::new, |totals| {
            totals
                .iter()
                .map(|(node, total)| Entry {
                    name: name.to_owned(),
                    node: *node,
                    total: *total,
                })
                .collect()
        })
    }

    /// Every entry, in order: what a newcomer needs to catch up.
    pub(crate) fn all_entries(&self) -> Vec<Entry> {
        self.counters
            .keys()
            .flat_map(|name| self.entries_of(name))
            .collect()
    }

    /// `Err(Full)` if `name` cannot take `more` new node entries, or the state `more`
    /// entries in all.
    fn check_room(&self, name: &str, more: usize, max_entries: usize) -> Result<(), Refused> {
        let of_name = self.counters.get(name).map_or(0, BTreeMap::len);
        if of_name + more > MAX_ENTRIES_PER_MESSAGE || self.entries + more > max_entries {
            return Err(Refused::Full);
        }
        Ok(())
    }

    fn set(&mut self, name: &str, node: NodeId, total: u64) {
        let totals = match self.counters.get_mut(name) {
            Some(totals) => totals,
            None => self.counters.entry(name.to_owned()).or_default(),
        };
        if totals.insert(node, total).is_none() {
            self.entries += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ROOM: usize = 100_000;

    fn entry(name: &str, node: NodeId, total: u64) -> Entry {
        Entry {
            name: name.to_owned(),
            node,
            total,
        }
    }

    fn state(entries: &[Entry]) -> Counters {
        let mut s = Counters::default();
        s.merge(entries.to_vec(), ROOM).unwrap();
        s
    }

    fn merged(a: &Counters, b: &Counters) -> Counters {
        let mut out = a.clone();
        out.merge(b.all_entries(), ROOM).unwrap();
        out
    }

    #[test]
    fn increments_of_different_nodes_add_up_and_a_merge_keeps_the_larger_total() {
        let mut a = Counters::default();
        a.incr("hits", 1, 5, ROOM).unwrap();
        let delta = a.incr("hits", 1, 2, ROOM).unwrap();
        assert_eq!(delta, vec![entry("hits", 1, 7)]);
        let mut b = Counters::default();
        b.incr("hits", 2, 3, ROOM).unwrap();
        b.merge(delta, ROOM).unwrap();
        // An older (smaller) total of node 1 changes nothing.
        assert_eq!(b.merge([entry("hits", 1, 4)], ROOM), Ok(0));
        assert_eq!(b.value("hits"), 10);
        assert_eq!(b.value("misses"), 0);
    }

    #[test]
    fn bounds_refuse_without_changing_anything() {
        let mut s = Counters::default();
        s.incr("a", 1, 1, 2).unwrap();
        assert_eq!(
            s.merge([entry("a", 1, 9), entry("b", 2, 1), entry("c", 3, 1)], 2),
            Err(Refused::Full)
        );
        assert_eq!(s.value("a"), 1, "a refused merge applies nothing");
        assert_eq!(s.incr("a", 1, u64::MAX, 2), Err(Refused::Overflow));
        let too_many: Vec<Entry> = (0..=MAX_ENTRIES_PER_MESSAGE as u32)
            .map(|n| entry("wide", n, 1))
            .collect();
        assert_eq!(s.merge(too_many, ROOM), Err(Refused::Full));
        // Totals from the network may be huge: the value saturates, never panics.
        s.merge([entry("big", 1, u64::MAX), entry("big", 2, 5)], ROOM)
            .unwrap();
        assert_eq!(s.value("big"), u64::MAX);
    }

    fn entries() -> impl Strategy<Value = Vec<Entry>> {
        let name = prop::sample::select(vec!["a", "b", "c"]);
        prop::collection::vec(
            (name, 0u32..4, 0u64..1_000).prop_map(|(n, node, t)| entry(n, node, t)),
            0..20,
        )
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in entries(), b in entries()) {
            let (a, b) = (state(&a), state(&b));
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in entries(), b in entries(), c in entries()) {
            let (a, b, c) = (state(&a), state(&b), state(&c));
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in entries()) {
            let a = state(&a);
            prop_assert_eq!(merged(&a, &a), a);
        }
    }
}
