//! Property tests: the clock's monotonicity, the set's merge laws, convergence of replicas
//! under any delivery order, `diff`, purging, the byte codec, and visits by key-hash range.

use std::ops::ControlFlow;
use std::time::Duration;

use datacake_crdt::{key_hash, next_recv, next_send, HLCTimestamp, OrSWotSet, StateChanges};
use proptest::prelude::*;

const SOURCES: usize = 3;
type Set = OrSWotSet<SOURCES>;

/// One operation as a source delivers it.
#[derive(Debug, Clone, Copy)]
struct Op {
    key: u64,
    ts: HLCTimestamp,
    delete: bool,
    source: usize,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0..12u64,
        1..60u64,
        0..3u16,
        0..3u32,
        prop::bool::weighted(0.3),
        0..SOURCES,
    )
        .prop_map(|(key, millis, counter, node, delete, source)| Op {
            key,
            ts: HLCTimestamp::new(millis, counter, node),
            delete,
            source,
        })
}

/// Operations, each source's in timestamp order (the one ordering the set relies on).
fn history(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 0..max).prop_map(|mut ops| {
        ops.sort_by_key(|o| (o.source, o.ts));
        ops
    })
}

fn apply(set: &mut Set, op: &Op) {
    let res = if op.delete {
        set.delete_with_source(op.source, op.key, op.ts)
    } else {
        set.insert_with_source(op.source, op.key, op.ts)
    };
    assert!(res.is_ok());
}

fn build(ops: &[Op]) -> Set {
    let mut set = Set::new();
    for op in ops {
        apply(&mut set, op);
    }
    set
}

fn merged(a: &Set, b: &Set) -> Set {
    let mut m = a.clone();
    m.merge(b.clone());
    m
}

/// Live entries and tombstones, sorted.
fn entries(set: &Set) -> (StateChanges, StateChanges) {
    let mut live: StateChanges = set.iter().collect();
    let mut dead: StateChanges = set.tombstones().collect();
    live.sort_unstable();
    dead.sort_unstable();
    (live, dead)
}

/// One step of a clock's life, for [`clock_never_stalls_on_remote_stamps_within_the_drift`].
#[derive(Debug, Clone, Copy)]
enum ClockStep {
    /// Issue this many local stamps in a row (enough, at the top, to use up whole
    /// milliseconds' worth of counter values).
    Send(u32),
    /// Register a remote stamp `offset` milliseconds from the wall clock (never beyond the
    /// drift bound ahead), with this counter, from another node.
    Recv {
        offset: i64,
        counter: u16,
        node: u32,
    },
    /// The wall clock advances this many milliseconds.
    Tick(u64),
}

/// The local node of the clock under test.
const LOCAL: u32 = 7;
/// The drift bound the clock under test allows.
const DRIFT_MILLIS: u64 = 5_000;

fn clock_step() -> impl Strategy<Value = ClockStep> {
    // Any node id but ours.
    let node = any::<u32>().prop_map(|n| if n == LOCAL { n + 1 } else { n });
    let counter = prop_oneof![
        2 => any::<u16>(),
        1 => Just(u16::MAX),
        1 => Just(u16::MAX - 1),
        1 => Just(0u16),
    ];
    let drift = DRIFT_MILLIS as i64;
    // Mostly at or near the bound, where the clock runs furthest ahead of the wall clock.
    let offset = prop_oneof![
        2 => -drift..=drift,
        1 => (drift - 3)..=drift,
    ];
    prop_oneof![
        3 => (offset, counter, node).prop_map(|(offset, counter, node)| ClockStep::Recv {
            offset,
            counter,
            node
        }),
        3 => (1..4u32).prop_map(ClockStep::Send),
        1 => (60_000..140_000u32).prop_map(ClockStep::Send),
        1 => (0..3u64).prop_map(ClockStep::Tick),
    ]
}

/// A tiny deterministic generator for delivery schedules (seeded by proptest).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Delivers `ops` to a fresh replica: sources interleaved at random, each in its own order,
/// with random repeats of already delivered operations. `purge` decides, before each
/// delivery, whether to purge first (given whether every source has delivered yet).
fn deliver(ops: &[Op], seed: u64, mut purge: impl FnMut(&mut Rng, bool) -> bool) -> Set {
    let mut rng = Rng(seed | 1);
    let mut queues: [Vec<Op>; SOURCES] = Default::default();
    for op in ops {
        queues[op.source].push(*op);
    }
    let mut next = [0usize; SOURCES];
    let mut set = Set::new();
    loop {
        let pending: Vec<usize> = (0..SOURCES)
            .filter(|&s| next[s] < queues[s].len())
            .collect();
        if pending.is_empty() {
            break;
        }
        let all_active = (0..SOURCES).all(|s| next[s] > 0 || queues[s].is_empty());
        if purge(&mut rng, all_active) {
            set.purge_old_deletes();
        }
        let s = pending[rng.below(pending.len())];
        apply(&mut set, &queues[s][next[s]]);
        if rng.below(4) == 0 {
            let again = queues[s][rng.below(next[s] + 1)];
            apply(&mut set, &again);
        }
        next[s] += 1;
    }
    set
}

/// A prefix of each source's stream: the first `1 + cut % n` of its `n` operations. At least
/// one, so that "every source has delivered" means the same as in the full history (a source
/// idle until after a purge may replay old history; see `purge_never_resurrects`).
fn prefix(ops: &[Op], cuts: &[usize]) -> Vec<Op> {
    (0..SOURCES)
        .flat_map(|s| {
            let of_source: Vec<Op> = ops.iter().filter(|o| o.source == s).copied().collect();
            let keep = 1 + cuts[s] % of_source.len().max(1);
            of_source.into_iter().take(keep)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn send_is_strictly_monotonic(start in 0..1_000u64, walls in prop::collection::vec(0..2_000u64, 1..200)) {
        let mut clock = HLCTimestamp::new(start, 0, 1);
        let mut last = clock;
        for wall in walls {
            let next = clock.send_at(wall).unwrap();
            prop_assert!(next > last);
            prop_assert!(next.millis() >= wall.min(next.millis()));
            last = next;
        }
    }

    #[test]
    fn recv_orders_after_both(
        start in 0..1_000u64,
        steps in prop::collection::vec((0..2_000u64, 0..1_500u64, any::<u16>(), 0..4u32, any::<bool>()), 1..100),
    ) {
        let mut clock = HLCTimestamp::new(start, 0, 0);
        let mut last = clock;
        for (wall, remote_millis, counter, node, is_recv) in steps {
            let remote = HLCTimestamp::new(remote_millis, counter, node);
            let res = if is_recv {
                clock.recv_at(&remote, wall, Duration::from_millis(300))
            } else {
                clock.send_at(wall)
            };
            match res {
                Ok(next) => {
                    prop_assert!(next > last);
                    if is_recv {
                        prop_assert!(next.pack() > remote.pack());
                        prop_assert!(next.millis() >= wall);
                    }
                    last = next;
                }
                Err(_) => prop_assert_eq!(clock, last, "a refused step leaves the clock"),
            }
        }
    }

    /// Any sequence of remote stamps within the drift bound, however exhausted their
    /// counters, interleaved with sends, never makes a step fail (so nothing ever has to wait
    /// or retry), and every stamp issued orders after everything issued or registered before.
    #[test]
    fn clock_never_stalls_on_remote_stamps_within_the_drift(
        start_counter: u16,
        steps in prop::collection::vec(clock_step(), 1..60),
    ) {
        let max_drift = Duration::from_millis(DRIFT_MILLIS);
        let mut wall = 1_700_000_000_000u64;
        let mut clock = HLCTimestamp::new(wall, start_counter, LOCAL).pack();
        // The largest packed clock issued or registered so far.
        let mut high = clock;
        for step in steps {
            match step {
                ClockStep::Send(count) => {
                    for _ in 0..count {
                        let next = next_send(clock, wall);
                        prop_assert!(next.is_ok(), "send at wall {wall} after {clock:#x}: {next:?}");
                        let next = next.unwrap();
                        prop_assert!(next > high);
                        prop_assert!(next >> 16 >= wall);
                        clock = next;
                        high = next;
                    }
                }
                ClockStep::Recv { offset, counter, node } => {
                    let remote = HLCTimestamp::new(wall.saturating_add_signed(offset), counter, node);
                    let next = next_recv(clock, LOCAL, &remote, wall, max_drift);
                    prop_assert!(next.is_ok(), "recv of {remote} at wall {wall} after {clock:#x}: {next:?}");
                    let next = next.unwrap();
                    prop_assert!(next > high && next > remote.pack());
                    prop_assert!(next >> 16 >= wall);
                    clock = next;
                    high = next;
                }
                ClockStep::Tick(millis) => wall += millis,
            }
        }
    }

    #[test]
    fn packed_and_text_forms_round_trip(millis in 0..=datacake_crdt::MAX_MILLIS, counter: u16, node: u32) {
        let t = HLCTimestamp::new(millis, counter, node);
        prop_assert_eq!(HLCTimestamp::from_packed(t.pack(), node), t);
        prop_assert_eq!(HLCTimestamp::from_u128(t.as_u128()), Ok(t));
        prop_assert_eq!(t.to_string().parse::<HLCTimestamp>(), Ok(t));
    }

    #[test]
    fn parsing_any_string_never_panics(s in "\\PC{0,40}") {
        let _ = s.parse::<HLCTimestamp>();
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        a in history(40), b in history(40), c in history(40),
    ) {
        let (a, b, c) = (build(&a), build(&b), build(&c));
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
        let ab = merged(&a, &b);
        prop_assert_eq!(merged(&ab, &b), ab.clone());
    }

    #[test]
    fn merge_of_purged_replicas_of_one_history_commutes(ops in history(60), seeds in (any::<u64>(), any::<u64>())) {
        // Two replicas of the same operations, purging at random once all sources are active.
        let a = deliver(&ops, seeds.0, |rng, active| active && rng.below(3) == 0);
        let b = deliver(&ops, seeds.1, |rng, active| active && rng.below(3) == 0);
        prop_assert_eq!(entries(&merged(&a, &b)), entries(&merged(&b, &a)));
        prop_assert_eq!(entries(&merged(&a, &b)).0, entries(&a).0);
    }

    #[test]
    fn merging_lagging_purged_replicas_reaches_the_full_state(
        ops in history(80),
        seeds in (any::<u64>(), any::<u64>()),
        cuts in prop::collection::vec(prop::collection::vec(any::<usize>(), SOURCES), 3),
    ) {
        // Two replicas that have each seen a prefix of every source's stream and purged at
        // random (once their sources are active), merged, then merged with a full replica.
        let purge = |rng: &mut Rng, active: bool| active && rng.below(3) == 0;
        let a = deliver(&prefix(&ops, &cuts[0]), seeds.0, purge);
        let b = deliver(&prefix(&ops, &cuts[1]), seeds.1, purge);
        let c = deliver(&prefix(&ops, &cuts[2]), seeds.0.rotate_left(7), purge);
        let full = deliver(&ops, seeds.0 ^ seeds.1, purge);
        let reference = entries(&build(&ops)).0;
        prop_assert_eq!(entries(&merged(&a, &b)), entries(&merged(&b, &a)));
        prop_assert_eq!(
            entries(&merged(&merged(&a, &b), &c)),
            entries(&merged(&a, &merged(&b, &c)))
        );
        prop_assert_eq!(entries(&merged(&merged(&a, &b), &full)).0, reference.clone());
        prop_assert_eq!(entries(&merged(&full, &merged(&b, &a))).0, reference.clone());
        prop_assert_eq!(entries(&merged(&a, &full)).0, reference.clone());
        prop_assert_eq!(entries(&merged(&full, &b)).0, reference);
    }

    #[test]
    fn replicas_converge_under_any_delivery_order(
        ops in history(80), seeds in prop::collection::vec(any::<u64>(), 3),
    ) {
        let reference = build(&ops);
        let mut replicas: Vec<Set> = seeds
            .iter()
            .map(|&seed| deliver(&ops, seed, |rng, active| active && rng.below(4) == 0))
            .collect();
        for replica in &replicas {
            prop_assert_eq!(entries(replica).0, entries(&reference).0);
        }
        for replica in &mut replicas {
            replica.purge_old_deletes();
        }
        let mut reference = reference;
        reference.purge_old_deletes();
        for replica in &replicas {
            prop_assert_eq!(entries(replica), entries(&reference));
        }
    }

    #[test]
    fn purge_never_resurrects(ops in history(80), seed: u64) {
        // Purge at any moment, even before every source has delivered: a purged replica may
        // refuse a late source's old writes, but never holds a key the reference does not, nor
        // an older version of one.
        let reference = build(&ops);
        let purged = deliver(&ops, seed, |rng, _| rng.below(2) == 0);
        for (key, ts) in purged.iter() {
            prop_assert_eq!(reference.get(&key), Some(&ts), "key {} came back", key);
        }
    }

    #[test]
    fn diff_applied_makes_sets_equal(a in history(40), b in history(40)) {
        let (mut a, mut b) = (build(&a), build(&b));
        let target = entries(&merged(&a, &b));
        let (a_changed, a_removed) = a.diff(&b);
        let (b_changed, b_removed) = b.diff(&a);
        for (k, t) in a_changed { a.insert(k, t); }
        for (k, t) in a_removed { a.delete(k, t); }
        for (k, t) in b_changed { b.insert(k, t); }
        for (k, t) in b_removed { b.delete(k, t); }
        prop_assert_eq!(entries(&a), target.clone());
        prop_assert_eq!(entries(&b), target);
        let (changed, removed) = a.diff(&b);
        prop_assert!(changed.is_empty() && removed.is_empty());
    }
}

#[cfg(feature = "rkyv")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn bytes_round_trip(ops in history(60), seed: u64) {
        let set = deliver(&ops, seed, |rng, _| rng.below(3) == 0);
        let back = Set::from_bytes(&set.to_bytes().unwrap()).unwrap();
        prop_assert_eq!(back, set);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Set::from_bytes(&bytes);
    }

    #[test]
    fn corrupted_bytes_never_panic(ops in history(20), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = build(&ops).to_bytes().unwrap();
        for (at, value) in flips {
            let len = bytes.len();
            bytes[at % len] = value;
        }
        if let Ok(set) = Set::from_bytes(&bytes) {
            let _ = set.len();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// `purge_deletes_before` never resurrects: after purging at any cutoff, whatever arrives
    /// later, every live entry of the purged set is live with the same timestamp in a replica
    /// that never purged (purging may refuse more, never less), and no purged key comes back
    /// at or below its purged delete.
    #[test]
    fn purge_deletes_before_never_resurrects(
        ops in history(60),
        later in history(40),
        split in 0..60usize,
        cutoff in 0..70u64,
    ) {
        let split = split.min(ops.len());
        let mut purged = build(&ops[..split]);
        let mut reference = purged.clone();
        let dropped = purged.purge_deletes_before(HLCTimestamp::new(cutoff, 0, 0));
        for (key, ts) in &dropped {
            prop_assert!(*ts < HLCTimestamp::new(cutoff, 0, 0));
            prop_assert_eq!(purged.tombstone(key), None);
            prop_assert!(!purged.will_apply(*key, *ts));
        }
        for op in ops[split..].iter().chain(&later) {
            apply(&mut purged, op);
            apply(&mut reference, op);
        }
        for (key, ts) in purged.iter() {
            prop_assert_eq!(reference.get(&key), Some(&ts), "key {} resurrected", key);
            if let Some((_, deleted)) = dropped.iter().find(|(k, _)| *k == key) {
                prop_assert!(ts > *deleted, "key {} came back below its purged delete", key);
            }
        }
    }
}

/// Every live entry and tombstone of `set` whose key hash lies in one of `ranges`, sorted by
/// hash: what `visit_hash_ranges` must visit, computed by scanning the whole set.
fn in_ranges(set: &Set, ranges: &[std::ops::RangeInclusive<u64>]) -> Vec<(u64, bool)> {
    let mut out: Vec<(u64, bool)> = set
        .iter()
        .map(|(key, _)| (key, false))
        .chain(set.tombstones().map(|(key, _)| (key, true)))
        .filter(|(key, _)| ranges.iter().any(|r| r.contains(&key_hash(*key))))
        .collect();
    out.sort_unstable_by_key(|(key, _)| key_hash(*key));
    out
}

proptest! {
    #[test]
    fn visiting_hash_ranges_finds_exactly_the_entries_in_them(
        keys in prop::collection::vec((any::<u64>(), prop::bool::weighted(0.2)), 0..3_000),
        merged_at in 0..3_000usize,
        ranges in prop::collection::vec((any::<u64>(), 0..u64::MAX / 4), 0..5),
        stop_after in 0..200usize,
    ) {
        let mut set = Set::new();
        for (i, (key, delete)) in keys.iter().enumerate() {
            if i == merged_at {
                // A merge rebuilds the sorted base: later inserts go to the delta again.
                set.merge(Set::new());
            }
            let ts = HLCTimestamp::new(i as u64 + 1, 0, 0);
            if *delete {
                set.delete(*key, ts);
            } else {
                set.insert(*key, ts);
            }
        }
        let ranges: Vec<_> = ranges
            .iter()
            .map(|(start, len)| *start..=start.saturating_add(*len))
            .collect();
        let expected = in_ranges(&set, &ranges);
        let mut seen = Vec::new();
        set.visit_hash_ranges(&ranges, |key, version| {
            seen.push((key, version.delete));
            ControlFlow::Continue(())
        });
        prop_assert_eq!(&seen, &expected);

        let mut prefix = Vec::new();
        set.visit_hash_ranges(&ranges, |key, version| {
            prefix.push((key, version.delete));
            if prefix.len() > stop_after { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        });
        prop_assert_eq!(&prefix[..], &expected[..expected.len().min(stop_after + 1)]);
    }
}
