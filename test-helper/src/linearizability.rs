//! A linearizability checker for histories of concurrent calls on one object.
//!
//! A history is a list of [`Entry`]s: an operation, the moment it was invoked and the moment
//! it returned (`None` when the outcome is unknown: the call failed, timed out or its client
//! died, so it may or may not have taken effect). The history is *linearizable* if the
//! operations can be put in one sequential order that
//! - contains every operation that returned (unknown ones may be left out, or put anywhere
//!   after their invocation),
//! - respects real time: if `a` returned before `b` was invoked, `a` comes first,
//! - is legal for the object's sequential [`Model`]: every operation's recorded output is what
//!   the model produces from the state the operations before it leave.
//!
//! The search is Wing & Gong's: repeatedly pick an operation that may go next (one invoked no
//! later than the earliest return among the operations not yet ordered), step the model, and
//! backtrack when stuck. It memoises the pairs (set of ordered operations, model state) it
//! has explored, so each is explored once. Identical operations of unknown outcome are
//! interchangeable once invoked, so they are ordered in the order of their invocations: many
//! unknown increments of a counter cost one search branch per distinct count, not one per
//! subset.
//!
//! Times are any `u64` that orders events; two events with the same time count as concurrent,
//! so a clock too coarse to tell them apart never invents an order.
//!
//! ```
//! use test_helper::linearizability::{check, Entry, Register, RegisterOp, Verdict};
//!
//! let history = [
//!     Entry { call: 0, ret: Some(10), op: RegisterOp::Write(1) },
//!     Entry { call: 20, ret: Some(30), op: RegisterOp::Read(0) }, // stale: 1 was written
//! ];
//! assert_eq!(
//!     check(&Register, 0, &history),
//!     Verdict::NotLinearizable { culprit: 1 }
//! );
//! ```

use std::collections::HashSet;
use std::hash::Hash;

/// An object's sequential specification.
pub trait Model {
    /// The object's state.
    type State: Clone + Eq + Hash;
    /// An operation with its recorded output (e.g. "read returned 3"). Equal operations
    /// must behave alike.
    type Op: PartialEq;

    /// The state after `op` runs on `state`, or `None` if `op`'s recorded output cannot come
    /// from `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// One call of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<O> {
    /// When it was invoked.
    pub call: u64,
    /// When it returned; `None` if its outcome is unknown (it may or may not have taken
    /// effect, and need not be ordered at all).
    pub ret: Option<u64>,
    /// What it did and what it returned.
    pub op: O,
}

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Some sequential order explains the history.
    Linearizable,
    /// No order does. `culprit` is the index of the entry whose return first made the history
    /// impossible: the history cut just before that return is linearizable, and cut just
    /// after it is not (of entries returning at the same time, the first).
    NotLinearizable {
        /// An index into the checked history.
        culprit: usize,
    },
    /// The search explored more states than its limit without deciding.
    Undecided {
        /// How many (ordered set, state) pairs it explored.
        explored: usize,
    },
}

/// How many states [`check`] explores before it gives up.
pub const DEFAULT_LIMIT: usize = 1_000_000;

/// Whether `history` of an object specified by `model`, starting in `initial`, is
/// linearizable (exploring at most [`DEFAULT_LIMIT`] states).
pub fn check<M: Model>(model: &M, initial: M::State, history: &[Entry<M::Op>]) -> Verdict {
    check_with_limit(model, initial, history, DEFAULT_LIMIT)
}

/// [`check`] with a limit on the states explored.
pub fn check_with_limit<M: Model>(
    model: &M,
    initial: M::State,
    history: &[Entry<M::Op>],
    limit: usize,
) -> Verdict {
    let all: Vec<Option<u64>> = history.iter().map(|e| e.ret).collect();
    match Search::new(model, history, &all, limit).run(initial.clone()) {
        Found::Yes => return Verdict::Linearizable,
        Found::GaveUp(explored) => return Verdict::Undecided { explored },
        Found::No => {}
    }
    // Find the first return after which the history is impossible. Cutting a history at a
    // time turns the calls that had not returned by then into unknown ones; a cut of a
    // linearizable history is linearizable, so the answer is monotone in the cut and a binary
    // search finds the boundary.
    let mut returns: Vec<(u64, usize)> = history
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.ret.map(|r| (r, i)))
        .collect();
    returns.sort_unstable();
    let cut = |at: u64| -> Vec<Option<u64>> {
        history.iter().map(|e| e.ret.filter(|r| *r <= at)).collect()
    };
    // Invariant: the cut at `returns[high]` is not linearizable; every cut before `low` is.
    let (mut low, mut high) = (0, returns.len() - 1);
    while low < high {
        let middle = (low + high) / 2;
        let rets = cut(returns[middle].0);
        match Search::new(model, history, &rets, limit).run(initial.clone()) {
            Found::Yes => low = middle + 1,
            Found::No => high = middle,
            Found::GaveUp(explored) => return Verdict::Undecided { explored },
        }
    }
    Verdict::NotLinearizable {
        culprit: returns[high].1,
    }
}

/// The result of one search.
enum Found {
    Yes,
    No,
    GaveUp(usize),
}

/// One search over a history, with its returns possibly cut.
struct Search<'h, M: Model> {
    model: &'h M,
    history: &'h [Entry<M::Op>],
    /// Each entry's return (the history's, or `None` if cut).
    rets: &'h [Option<u64>],
    /// Entry indexes by invocation time.
    by_call: Vec<usize>,
    /// For an entry of unknown outcome, the latest entry invoked before it with an identical
    /// operation and an unknown outcome too: it must be ordered first.
    twin_before: Vec<Option<usize>>,
    /// Which entries are ordered, as a bit set.
    done: Vec<u64>,
    /// How many entries with a known return are not ordered yet.
    unfinished: usize,
    /// The (ordered entries, state) pairs explored.
    seen: HashSet<(Vec<u64>, M::State)>,
    limit: usize,
}

impl<'h, M: Model> Search<'h, M> {
    fn new(
        model: &'h M,
        history: &'h [Entry<M::Op>],
        rets: &'h [Option<u64>],
        limit: usize,
    ) -> Self {
        let mut by_call: Vec<usize> = (0..history.len()).collect();
        by_call.sort_by_key(|i| history[*i].call);
        let mut twin_before = vec![None; history.len()];
        for (k, &i) in by_call.iter().enumerate() {
            if rets[i].is_none() {
                twin_before[i] = by_call[..k]
                    .iter()
                    .rev()
                    .find(|j| rets[**j].is_none() && history[**j].op == history[i].op)
                    .copied();
            }
        }
        Self {
            model,
            history,
            rets,
            by_call,
            twin_before,
            done: vec![0; history.len().div_ceil(64)],
            unfinished: rets.iter().filter(|r| r.is_some()).count(),
            seen: HashSet::new(),
            limit,
        }
    }

    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    fn run(mut self, initial: M::State) -> Found {
        match self.search(initial) {
            true => Found::Yes,
            false if self.seen.len() > self.limit => Found::GaveUp(self.seen.len()),
            false => Found::No,
        }
    }

    /// Whether the entries not yet ordered can be ordered from `state`.
    fn search(&mut self, state: M::State) -> bool {
        if self.unfinished == 0 {
            // Every call that returned is ordered; the unknown rest may never have happened.
            return true;
        }
        if self.seen.len() > self.limit || !self.seen.insert((self.done.clone(), state.clone())) {
            return false;
        }
        // The earliest return among the unordered calls: whatever goes next must have been
        // invoked by then, or that call would have returned before it began.
        let horizon = (0..self.history.len())
            .filter(|i| !self.is_done(*i))
            .filter_map(|i| self.rets[i])
            .min()
            .unwrap_or(u64::MAX);
        // The calls that may go next, those that returned first: every one of them has to be
        // ordered, a call of unknown outcome only if it helps.
        let mut next: Vec<usize> = self
            .by_call
            .iter()
            .copied()
            .take_while(|i| self.history[*i].call <= horizon)
            .filter(|i| !self.is_done(*i))
            .filter(|i| self.twin_before[*i].is_none_or(|j| self.is_done(j)))
            .collect();
        next.sort_by_key(|i| self.rets[*i].is_none());
        for i in next {
            let Some(after) = self.model.step(&state, &self.history[i].op) else {
                continue;
            };
            let finished = usize::from(self.rets[i].is_some());
            self.flip(i);
            self.unfinished -= finished;
            if self.search(after) {
                return true;
            }
            self.unfinished += finished;
            self.flip(i);
        }
        false
    }
}

/// A register holding a number.
#[derive(Debug, Clone, Copy, Default)]
pub struct Register;

/// An operation on a [`Register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp {
    /// Set the value.
    Write(u64),
    /// Read the value, which was the one given.
    Read(u64),
}

impl Model for Register {
    type State = u64;
    type Op = RegisterOp;

    fn step(&self, state: &u64, op: &RegisterOp) -> Option<u64> {
        match *op {
            RegisterOp::Write(value) => Some(value),
            RegisterOp::Read(value) => (value == *state).then_some(value),
        }
    }
}

/// A counter that only grows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter;

/// An operation on a [`Counter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterOp {
    /// Add `n`; `returned` is the value after the addition, if the call reported it.
    Add {
        /// The amount added.
        n: u64,
        /// The counter's value after the addition, as the call returned it.
        returned: Option<u64>,
    },
    /// Read the value, which was the one given.
    Read(u64),
}

impl Model for Counter {
    type State = u64;
    type Op = CounterOp;

    fn step(&self, state: &u64, op: &CounterOp) -> Option<u64> {
        match *op {
            CounterOp::Add { n, returned } => {
                let next = state.checked_add(n)?;
                returned.is_none_or(|r| r == next).then_some(next)
            }
            CounterOp::Read(value) => (value == *state).then_some(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done<O>(call: u64, ret: u64, op: O) -> Entry<O> {
        Entry {
            call,
            ret: Some(ret),
            op,
        }
    }

    fn unknown<O>(call: u64, op: O) -> Entry<O> {
        Entry {
            call,
            ret: None,
            op,
        }
    }

    use CounterOp::Read as CRead;
    use RegisterOp::{Read, Write};

    fn add(n: u64, returned: Option<u64>) -> CounterOp {
        CounterOp::Add { n, returned }
    }

    #[test]
    fn a_register_history_with_overlaps_and_unknown_writes_is_linearizable() {
        let history = [
            done(0, 10, Write(1)),
            done(5, 15, Read(0)), // overlaps the write: may come first
            done(20, 30, Read(1)),
            unknown(25, Write(2)), // never seen: may never have happened
            unknown(26, Write(3)), // seen later: took effect after its call
            done(40, 50, Read(3)),
            done(45, 55, Read(3)),
        ];
        assert_eq!(check(&Register, 0, &history), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_register_read_is_caught() {
        let history = [
            done(0, 10, Write(1)),
            done(12, 14, Write(2)),
            done(20, 30, Read(1)), // 2 was written before this read began
        ];
        assert_eq!(
            check(&Register, 0, &history),
            Verdict::NotLinearizable { culprit: 2 }
        );
    }

    #[test]
    fn reads_going_back_in_time_are_caught() {
        let history = [
            done(0, 100, Write(1)),
            done(10, 20, Read(1)),
            done(30, 40, Read(0)), // 1 was already visible
            done(50, 60, Read(1)),
        ];
        assert_eq!(
            check(&Register, 0, &history),
            Verdict::NotLinearizable { culprit: 2 }
        );
    }

    #[test]
    fn a_value_nobody_wrote_is_caught() {
        let history = [done(0, 10, Write(1)), done(20, 30, Read(7))];
        assert_eq!(
            check(&Register, 0, &history),
            Verdict::NotLinearizable { culprit: 1 }
        );
    }

    #[test]
    fn an_unknown_write_seen_before_its_call_is_caught() {
        // Equal times are concurrent; the read returns strictly before the write's call.
        let history = [done(0, 10, Read(5)), unknown(11, Write(5))];
        assert_eq!(
            check(&Register, 0, &history),
            Verdict::NotLinearizable { culprit: 0 }
        );
        let touching = [done(0, 10, Read(5)), unknown(10, Write(5))];
        assert_eq!(check(&Register, 0, &touching), Verdict::Linearizable);
    }

    #[test]
    fn a_counter_history_with_concurrent_and_unknown_adds_is_linearizable() {
        let history = [
            done(0, 10, add(2, Some(5))), // concurrent with the next add, ordered after it
            done(1, 9, add(3, Some(3))),
            unknown(12, add(4, None)), // took effect: the last read sees it
            unknown(13, add(100, None)), // never did
            done(14, 20, CRead(5)),
            done(21, 30, CRead(9)),
        ];
        assert_eq!(check(&Counter, 0, &history), Verdict::Linearizable);
    }

    #[test]
    fn a_lost_counter_add_is_caught() {
        let history = [
            done(0, 10, add(2, Some(2))),
            done(11, 20, add(3, Some(5))),
            done(21, 30, CRead(2)), // the second add is gone
        ];
        assert_eq!(
            check(&Counter, 0, &history),
            Verdict::NotLinearizable { culprit: 2 }
        );
    }

    #[test]
    fn counter_adds_returning_the_same_value_are_caught() {
        let history = [done(0, 10, add(1, Some(1))), done(0, 10, add(1, Some(1)))];
        assert_eq!(
            check(&Counter, 0, &history),
            Verdict::NotLinearizable { culprit: 0 }
        );
    }

    #[test]
    fn identical_unknown_adds_are_tried_once_per_count() {
        // 40 unknown adds of 2 and a read no number of them explains: 2^40 subsets, but only
        // 41 counts.
        let mut history: Vec<Entry<CounterOp>> =
            (0..40).map(|i| unknown(i, add(2, None))).collect();
        history.push(done(50, 100, CRead(7)));
        assert_eq!(
            check_with_limit(&Counter, 0, &history, 1_000),
            Verdict::NotLinearizable { culprit: 40 }
        );
        history.push(done(101, 102, CRead(80)));
        history[40] = done(50, 100, CRead(6));
        assert_eq!(
            check_with_limit(&Counter, 0, &history, 1_000),
            Verdict::Linearizable
        );
    }

    /// A small deterministic generator (xorshift), so the random histories replay.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A random history of `clients` sequential clients making `calls` calls each, which a
    /// sequential run explains: each call takes effect at a random point inside its interval.
    /// A fifth of the calls have an unknown outcome: the client gave up on them, and they took
    /// effect (possibly well after) or not; unknown reads are dropped. `make(rng, state)`
    /// draws an operation run on `state`, returning it, the next state and whether it reads.
    fn random_history<S: Copy, O>(
        rng: &mut Rng,
        clients: usize,
        calls: usize,
        initial: S,
        mut make: impl FnMut(&mut Rng, S) -> (O, S, bool),
    ) -> Vec<Entry<O>> {
        // (effect point, call, return, takes effect)
        let mut plan = Vec::new();
        for _ in 0..clients {
            let mut now = rng.below(100);
            for _ in 0..calls {
                let call = now + rng.below(50);
                let length = 1 + rng.below(300);
                now = call + length;
                if rng.below(5) == 0 {
                    let point = call + rng.below(3 * length);
                    plan.push((point, call, None, rng.below(2) == 0));
                } else {
                    plan.push((call + rng.below(length), call, Some(now), true));
                }
            }
        }
        plan.sort_unstable();
        let mut state = initial;
        let mut history = Vec::new();
        for (_, call, ret, effect) in plan {
            let (op, next, is_read) = make(rng, state);
            if effect {
                state = next;
            }
            if !(is_read && ret.is_none()) {
                history.push(Entry { call, ret, op });
            }
        }
        history
    }

    #[test]
    fn random_explainable_histories_pass_and_a_corrupted_read_is_caught() {
        let mut rng = Rng(0x5eed);
        for round in 0..100 {
            let mut next = 0;
            let mut register = random_history(&mut rng, 5, 30, 0u64, |rng, value| {
                if rng.below(2) == 0 {
                    next += 1;
                    (Write(next), next, false)
                } else {
                    (Read(value), value, true)
                }
            });
            let mut counter = random_history(&mut rng, 5, 30, 0u64, |rng, value| {
                if rng.below(3) == 0 {
                    (CRead(value), value, true)
                } else {
                    // Few distinct amounts, as in the Raft workload.
                    let n = 1 + rng.below(2);
                    (add(n, Some(value + n)), value + n, false)
                }
            });
            // As the Raft workload does: an add of unknown outcome returned nothing.
            for entry in counter.iter_mut().filter(|e| e.ret.is_none()) {
                if let CounterOp::Add { returned, .. } = &mut entry.op {
                    *returned = None;
                }
            }
            // As the Raft workload does: unknown writes nobody read are left out.
            let read: Vec<u64> = register
                .iter()
                .filter_map(|e| match e.op {
                    Read(v) => Some(v),
                    Write(_) => None,
                })
                .collect();
            register.retain(|e| e.ret.is_some() || matches!(e.op, Write(v) if read.contains(&v)));
            assert_eq!(
                check_with_limit(&Register, 0, &register, 20_000),
                Verdict::Linearizable,
                "{register:?}"
            );
            assert_eq!(
                check_with_limit(&Counter, 0, &counter, 20_000),
                Verdict::Linearizable,
                "{counter:?}"
            );
            if round % 5 != 0 {
                continue;
            }
            // One read that returned a value no order explains is caught, at that read.
            let corrupt = |len: usize, is_read: &dyn Fn(usize) -> bool, rng: &mut Rng| {
                let reads: Vec<usize> = (0..len).filter(|i| is_read(*i)).collect();
                reads[rng.below(reads.len() as u64) as usize]
            };
            let i = corrupt(
                register.len(),
                &|i| matches!(register[i].op, Read(_)) && register[i].ret.is_some(),
                &mut rng,
            );
            register[i].op = Read(u64::MAX);
            match check(&Register, 0, &register) {
                // The culprit returned when the bad read did (a tie is either of them).
                Verdict::NotLinearizable { culprit } => {
                    assert_eq!(register[culprit].ret, register[i].ret)
                }
                other => panic!("{other:?}"),
            }
            let i = corrupt(
                counter.len(),
                &|i| matches!(counter[i].op, CRead(_)) && counter[i].ret.is_some(),
                &mut rng,
            );
            counter[i].op = CRead(u64::MAX);
            match check(&Counter, 0, &counter) {
                Verdict::NotLinearizable { culprit } => {
                    assert_eq!(counter[culprit].ret, counter[i].ret)
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_limit_turns_a_long_search_into_undecided() {
        // Distinct unknown adds (every subset has its own sum) and a read none explains.
        let mut history: Vec<Entry<CounterOp>> =
            (0..20).map(|i| unknown(i, add(2 << i, None))).collect();
        history.push(done(0, 100, CRead(1)));
        assert!(matches!(
            check_with_limit(&Counter, 0, &history, 1_000),
            Verdict::Undecided { .. }
        ));
    }
}
