//! The history of a run and the checkers that judge it, one per invariant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use datacake_node::NodeId;
use test_helper::linearizability::{self, CounterOp, Entry, RegisterOp, Verdict};

use super::{Cells, Command};

/// What a client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A write.
    Write(Command),
    /// A linearizable read of both cells.
    Read,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Not (yet) returned: still running, or its node crashed during the call.
    Pending,
    /// Failed with this error.
    Failed(String),
    /// Missed its deadline.
    TimedOut,
    /// The write was applied; the state machine's response.
    Applied(u64),
    /// The read's answer.
    Read(Cells),
}

/// One recorded client call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The node it was made on.
    pub node: NodeId,
    /// What it asked.
    pub request: Request,
    /// The sequence number of its invocation.
    pub invoked: u64,
    /// The sequence number of its return.
    pub returned: Option<u64>,
    /// How it ended.
    pub reply: Reply,
    /// When it was invoked (simulated time, for reading reports).
    pub at: Duration,
}

impl Call {
    /// Whether the call returned a result (a failure or timeout tells nothing).
    fn succeeded(&self) -> bool {
        matches!(self.reply, Reply::Applied(_) | Reply::Read(_))
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} node {} {:?} -> {:?} (invoked at {:?}, ",
            self.invoked, self.node, self.request, self.reply, self.at
        )?;
        match self.returned {
            Some(returned) => write!(f, "returned #{returned})"),
            None => write!(f, "never returned)"),
        }
    }
}

/// What the checkers judge.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Every client call, the final read included.
    pub calls: Vec<Call>,
    /// The nodes seen claiming leadership, by term.
    pub leaders: BTreeMap<u64, BTreeSet<NodeId>>,
    /// The answer of the final linearizable read, after healing.
    pub final_read: Option<Cells>,
    /// Each node's local state once the cluster converged after healing.
    pub local_states: BTreeMap<NodeId, Cells>,
}

impl Evidence {
    /// What every checker found wrong, one line each.
    pub fn judge(&self) -> Vec<String> {
        let mut violations = Vec::new();
        violations.extend(self.register_is_linearizable());
        violations.extend(self.counter_is_linearizable());
        violations.extend(self.one_leader_per_term());
        violations.extend(self.acknowledged_writes_survive());
        violations.extend(self.nodes_agree());
        violations
    }

    /// The evidence as text: every call in invocation order, the leaders by term, the
    /// final states. openraft's timers are not seeded, so a seed does not always replay the
    /// same history: this is what to keep of a failing run.
    pub fn transcript(&self) -> String {
        let mut calls: Vec<&Call> = self.calls.iter().collect();
        calls.sort_by_key(|c| c.invoked);
        let mut text = String::new();
        for call in calls {
            text.push_str(&format!("{call}\n"));
        }
        for (term, nodes) in &self.leaders {
            text.push_str(&format!("term {term}: leader {nodes:?}\n"));
        }
        text.push_str(&format!("final read: {:?}\n", self.final_read));
        text.push_str(&format!("local states: {:?}\n", self.local_states));
        text
    }

    /// The history of the calls `op_of` maps to an operation (and the return it counts: `None`
    /// for an unknown outcome), with the calls it came from, in the same order.
    fn history<Op>(
        &self,
        op_of: impl Fn(&Call) -> Option<(Op, Option<u64>)>,
    ) -> (Vec<Entry<Op>>, Vec<&Call>) {
        let mut history = Vec::new();
        let mut calls = Vec::new();
        for call in &self.calls {
            if let Some((op, ret)) = op_of(call) {
                history.push(Entry {
                    call: call.invoked,
                    ret,
                    op,
                });
                calls.push(call);
            }
        }
        (history, calls)
    }

    /// The register's history. Unknown writes no read returned are left out: a write nobody
    /// observed can always be taken out of a linearization (reads between it and the next
    /// write would have returned its unique value), so dropping them keeps the verdict and
    /// shrinks the search.
    fn register_history(&self) -> (Vec<Entry<RegisterOp>>, Vec<&Call>) {
        let read: BTreeSet<u64> = self
            .calls
            .iter()
            .filter_map(|c| match c.reply {
                Reply::Read(cells) => Some(cells.register),
                _ => None,
            })
            .collect();
        self.history(|call| match (call.request, &call.reply) {
            (Request::Write(Command::SetRegister(v)), Reply::Applied(_)) => {
                Some((RegisterOp::Write(v), call.returned))
            }
            (Request::Write(Command::SetRegister(v)), _) if read.contains(&v) => {
                Some((RegisterOp::Write(v), None))
            }
            (Request::Read, Reply::Read(cells)) => {
                Some((RegisterOp::Read(cells.register), call.returned))
            }
            _ => None,
        })
    }

    /// The counter's history: every add (unknown ones too, as they may show in later reads)
    /// and every successful read.
    fn counter_history(&self) -> (Vec<Entry<CounterOp>>, Vec<&Call>) {
        self.history(|call| match (call.request, &call.reply) {
            (Request::Write(Command::AddCounter(n)), Reply::Applied(value)) => Some((
                CounterOp::Add {
                    n,
                    returned: Some(*value),
                },
                call.returned,
            )),
            (Request::Write(Command::AddCounter(n)), _) => {
                Some((CounterOp::Add { n, returned: None }, None))
            }
            (Request::Read, Reply::Read(cells)) => {
                Some((CounterOp::Read(cells.counter), call.returned))
            }
            _ => None,
        })
    }

    fn register_is_linearizable(&self) -> Option<String> {
        let (history, calls) = self.register_history();
        let verdict = linearizability::check(&linearizability::Register, 0, &history);
        describe("register", verdict, &history, &calls)
    }

    fn counter_is_linearizable(&self) -> Option<String> {
        let (history, calls) = self.counter_history();
        let verdict = linearizability::check(&linearizability::Counter, 0, &history);
        describe("counter", verdict, &history, &calls)
    }

    fn one_leader_per_term(&self) -> Vec<String> {
        self.leaders
            .iter()
            .filter(|(_, nodes)| nodes.len() > 1)
            .map(|(term, nodes)| format!("term {term} had several leaders: nodes {nodes:?}"))
            .collect()
    }

    fn acknowledged_writes_survive(&self) -> Vec<String> {
        // Without a final read (the run reports that it failed) there is nothing to check.
        let Some(last) = self.final_read else {
            return Vec::new();
        };
        let mut violations = Vec::new();
        let (mut acknowledged, mut attempted) = (0u64, 0u64);
        let mut written = BTreeSet::from([0]);
        for call in &self.calls {
            match call.request {
                Request::Write(Command::AddCounter(n)) => {
                    attempted += n;
                    if call.succeeded() {
                        acknowledged += n;
                    }
                }
                Request::Write(Command::SetRegister(v)) => {
                    written.insert(v);
                }
                Request::Read => {}
            }
        }
        if last.counter < acknowledged {
            violations.push(format!(
                "acknowledged adds lost: the final counter is {} but acknowledged adds sum to \
                 {acknowledged}",
                last.counter
            ));
        }
        if last.counter > attempted {
            violations.push(format!(
                "the final counter is {} but all adds attempted sum to {attempted}",
                last.counter
            ));
        }
        if !written.contains(&last.register) {
            violations.push(format!(
                "the final register holds {}, which no client wrote",
                last.register
            ));
        }
        violations
    }

    fn nodes_agree(&self) -> Option<String> {
        let mut states = self.local_states.values();
        let first = states.next()?;
        states.any(|s| s != first).then(|| {
            format!(
                "after healing, the nodes' states differ: {:?}",
                self.local_states
            )
        })
    }
}

/// A violation line for a linearizability verdict, naming the call that broke it.
fn describe<O>(
    object: &str,
    verdict: Verdict,
    history: &[Entry<O>],
    calls: &[&Call],
) -> Option<String> {
    let unknown = history.iter().filter(|e| e.ret.is_none()).count();
    let size = format!("{} calls, {unknown} unknown", history.len());
    match verdict {
        Verdict::Linearizable => None,
        Verdict::NotLinearizable { culprit } => Some(format!(
            "the {object} history ({size}) is not linearizable; it breaks at the return of \
             {}",
            calls[culprit]
        )),
        Verdict::Undecided { explored } => Some(format!(
            "the {object} history ({size}) could not be checked: the search gave up after \
             {explored} states"
        )),
    }
}
