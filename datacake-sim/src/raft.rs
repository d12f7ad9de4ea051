//! The Raft workload: a register and a counter replicated by `datacake-raft` on every node,
//! clients on every node writing and reading them while the schedule's faults play out, and
//! checkers that judge what the clients saw.
//!
//! # A run
//! 1. The nodes start with [`LogStorage::Durable`] storage (one directory per node, under a
//!    temporary directory removed at the end), so a crashed node restarts on its log and vote.
//!    The schedule has no membership changes: the voters stay the nodes of the run. Its
//!    faults start after [`WARMUP`] and end by [`WARMUP`] + [`FAULT_PHASE`].
//! 2. Once a leader is elected, every running node runs one sequential client: random
//!    `SetRegister` writes (of values unique to the run), `AddCounter` adds (of 1 or 2) and
//!    linearizable reads, each with a deadline ([`CALL_DEADLINE`]), at most [`MAX_CALLS`] in
//!    all. Every call is recorded with a sequence number taken at its invocation and at its
//!    return, from one counter shared by all hosts: the simulation runs on one thread, so the
//!    numbers give the true real-time order, with none of the ties of a coarse clock.
//! 3. Every simulation step, the test thread notes which node claims to lead in which term.
//! 4. After the fault phase the world is healed; the run waits (bounded, in simulated time)
//!    for a leader all nodes agree on, does a final linearizable read, and waits for every
//!    node to apply the same log.
//!
//! # Checkers
//! One per invariant ([`Evidence::judge`]): the register history and the counter history are
//! each linearizable; at most one node leads in a term; the final state keeps every
//! acknowledged write; after healing, every node holds the same state. A wait that ends
//! without what it waited for is a violation too.
//!
//! A write that failed or timed out may or may not have taken effect: it is an *unknown*
//! outcome, which the linearizability checker may order anywhere after its invocation or
//! leave out. A read that failed is dropped.
//!
//! # Determinism
//! The seed fixes the schedule, the clients' calls and turmoil's network (latencies, losses),
//! but not openraft's election timers, which draw their jitter from a thread-local random
//! generator that turmoil does not seed; nor does it order the durable store's SQLite calls,
//! which run on tokio's blocking pool (real threads). Which node wins an election, and so the
//! exact history, can differ between two runs of one seed. The checkers only assert what must
//! hold whichever node wins, and a failing run writes its history to a file (named on
//! stderr).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{DatacakeNode, NodeId};
use datacake_raft::{
    rkyv, LogStorage, RaftConfig, RaftExtension, RaftHandle, ReadConsistency, Role, StateMachine,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use test_helper::TempDir;
use tokio::sync::oneshot;

use crate::membership;
use crate::report::Outcome;
use crate::schedule::{Schedule, ScheduleConfig};
use crate::world::{App, World};

mod checks;

pub use checks::{Call, Evidence, Reply, Request};

/// The workload's name in reports.
pub const WORKLOAD: &str = "raft";

/// How long faults are injected for.
pub const FAULT_PHASE: Duration = Duration::from_secs(5);

/// Time for the cluster to form before the first fault (the schedule is shifted by it).
pub const WARMUP: Duration = Duration::from_secs(1);

/// The deadline of one client call.
pub const CALL_DEADLINE: Duration = Duration::from_secs(3);

/// The most client calls of a run (the final read included), so the history stays small
/// enough to check quickly.
pub const MAX_CALLS: usize = 150;

/// The longest a client pauses between two calls.
const MAX_THINK: Duration = Duration::from_millis(250);

/// Bound (simulated) of each wait for the cluster: a leader, a final read, one applied log.
const CONVERGE: Duration = Duration::from_secs(30);

/// Bound (simulated) of the whole run.
const LIMIT: Duration = Duration::from_secs(300);

/// The replicated state: one register and one counter, both starting at 0. (rkyv as the
/// answer to a query; serde for the snapshot.)
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(crate = datacake_raft::rkyv)]
pub struct Cells {
    /// The register's value.
    pub register: u64,
    /// The counter's value.
    pub counter: u64,
}

/// A mutation of [`Cells`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(crate = datacake_raft::rkyv)]
pub enum Command {
    /// Sets the register; responds with the value set.
    SetRegister(u64),
    /// Adds to the counter; responds with the counter's new value.
    AddCounter(u64),
}

/// The [`StateMachine`] replicating [`Cells`]; a query reads both.
#[derive(Debug, Default)]
pub struct Machine(Cells);

impl StateMachine for Machine {
    type Command = Command;
    type Response = u64;
    type Query = ();
    type Answer = Cells;

    fn apply(&mut self, command: Command) -> u64 {
        match command {
            Command::SetRegister(value) => {
                self.0.register = value;
                value
            }
            Command::AddCounter(n) => {
                self.0.counter = self.0.counter.wrapping_add(n);
                self.0.counter
            }
        }
    }

    fn read(&self, _query: ()) -> Cells {
        self.0
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("cells encode")
    }

    fn restore(&mut self, snapshot: &[u8]) {
        self.0 = serde_json::from_slice(snapshot).expect("snapshot decodes");
    }
}

/// Runs [`Machine`] under Raft on every node, each with durable storage in its own
/// subdirectory of `dir`.
#[derive(Debug)]
pub struct RaftApp {
    dir: PathBuf,
    voters: usize,
}

impl RaftApp {
    /// Raft among `voters` nodes, node `id` keeping its log, vote and snapshots under
    /// `dir/node-{id}`.
    pub fn new(dir: PathBuf, voters: usize) -> Self {
        Self { dir, voters }
    }

    /// The configuration of node `id`: short timings, forwarding on, durable storage.
    fn config(&self, id: NodeId) -> RaftConfig {
        RaftConfig::new(self.voters)
            .with_election_timeout(Duration::from_millis(500), Duration::from_millis(1_000))
            .with_heartbeat_interval(Duration::from_millis(100))
            .with_rpc_timeout(Duration::from_secs(2))
            .with_forward_to_leader(true)
            // Snapshots every few dozen entries, so restarts and lagging followers go
            // through snapshot restore and install, not only log replay.
            .with_snapshot_policy(40, 10)
            .with_storage(LogStorage::Durable(self.dir.join(format!("node-{id}"))))
    }
}

impl App for RaftApp {
    type Handle = RaftHandle<Machine>;

    fn attach<'a>(
        &'a self,
        id: NodeId,
        node: &'a DatacakeNode,
    ) -> BoxFuture<'a, anyhow::Result<Self::Handle>> {
        Box::pin(async move {
            let extension = RaftExtension::new(Machine::default(), self.config(id));
            Ok(node.add_extension(extension).await?)
        })
    }
}

/// The calls of a run, shared by every host's clients.
#[derive(Debug, Default)]
struct Log {
    /// The next sequence number of an invocation or a return.
    seq: AtomicU64,
    calls: Mutex<Vec<Call>>,
}

impl Log {
    /// Records the invocation of `request` on `node`; returns its index.
    fn invoke(&self, node: NodeId, request: Request) -> usize {
        let mut calls = self.calls.lock();
        calls.push(Call {
            node,
            request,
            invoked: self.seq.fetch_add(1, Ordering::SeqCst),
            returned: None,
            reply: Reply::Pending,
            at: turmoil::sim_elapsed().unwrap_or_default(),
        });
        calls.len() - 1
    }

    /// Records the return of call `index`.
    fn complete(&self, index: usize, reply: Reply) {
        let mut calls = self.calls.lock();
        calls[index].returned = Some(self.seq.fetch_add(1, Ordering::SeqCst));
        calls[index].reply = reply;
    }
}

/// Makes `request` on `raft` within [`CALL_DEADLINE`], recording it in `log`.
async fn make_call(log: &Log, node: NodeId, raft: &RaftHandle<Machine>, request: Request) -> Reply {
    let index = log.invoke(node, request);
    let reply = match request {
        Request::Write(command) => {
            match tokio::time::timeout(CALL_DEADLINE, raft.write(command)).await {
                Ok(Ok(response)) => Reply::Applied(response),
                Ok(Err(e)) => Reply::Failed(e.to_string()),
                Err(_) => Reply::TimedOut,
            }
        }
        Request::Read => {
            let read = raft.read((), ReadConsistency::Linearizable);
            match tokio::time::timeout(CALL_DEADLINE, read).await {
                Ok(Ok(cells)) => Reply::Read(cells),
                Ok(Err(e)) => Reply::Failed(e.to_string()),
                Err(_) => Reply::TimedOut,
            }
        }
    };
    log.complete(index, reply.clone());
    reply
}

/// Marks a node's client idle when its call ends, however it ends (a crash drops it too).
struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// A run in progress: the world and what the workload keeps beside it.
struct Run<'a> {
    world: World<'a, RaftApp>,
    log: Arc<Log>,
    /// Whether each node's client has a call under way.
    busy: BTreeMap<NodeId, Arc<AtomicBool>>,
    /// The nodes seen claiming leadership, by term.
    leaders: BTreeMap<u64, BTreeSet<NodeId>>,
    /// Draws the clients' calls.
    rng: StdRng,
    /// Client calls started so far.
    issued: usize,
    /// The last value written to the register (each write writes a new one).
    last_value: u64,
}

impl Run<'_> {
    /// One simulation step; then notes who leads.
    fn step(&mut self) -> anyhow::Result<()> {
        self.world.step()?;
        for id in self.world.up() {
            if let Some((_, raft)) = self.world.handles(id) {
                let status = raft.status();
                if status.role == Role::Leader {
                    self.leaders.entry(status.term).or_default().insert(id);
                }
            }
        }
        Ok(())
    }

    /// Steps until `done` holds; `Ok(false)` if `bound` (simulated) passes first.
    fn step_until(
        &mut self,
        bound: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> anyhow::Result<bool> {
        let start = self.world.elapsed();
        while !done(self) {
            if self.world.elapsed() - start > bound {
                return Ok(false);
            }
            self.step()?;
        }
        Ok(true)
    }

    fn raft(&self, id: NodeId) -> Option<RaftHandle<Machine>> {
        self.world.handles(id).map(|(_, raft)| raft)
    }

    /// The node claiming leadership in the highest term, if a majority of the nodes name it
    /// their leader.
    fn leader(&self) -> Option<NodeId> {
        let nodes = &self.world.schedule().nodes;
        let (leader, _) = nodes
            .iter()
            .filter_map(|id| {
                let status = self.raft(*id)?.status();
                (status.role == Role::Leader).then_some((*id, status.term))
            })
            .max_by_key(|(_, term)| *term)?;
        let votes = nodes
            .iter()
            .filter(|id| self.raft(**id).is_some_and(|r| r.leader() == Some(leader)))
            .count();
        (votes > nodes.len() / 2).then_some(leader)
    }

    /// The leader that every node has started and agrees on.
    fn agreed_leader(&self) -> Option<NodeId> {
        let leader = self.leader()?;
        let nodes = &self.world.schedule().nodes;
        nodes
            .iter()
            .all(|id| self.raft(*id).is_some_and(|r| r.leader() == Some(leader)))
            .then_some(leader)
    }

    /// Starts a call on every running node whose client is idle, until [`MAX_CALLS`] (less
    /// one, for the final read) have started.
    fn start_calls(&mut self) {
        for id in self.world.up() {
            if self.issued >= MAX_CALLS - 1 {
                return;
            }
            let busy = self.busy[&id].clone();
            if busy.load(Ordering::SeqCst) || self.world.handles(id).is_none() {
                continue;
            }
            let request = match self.rng.random_range(0..10) {
                0..=3 => {
                    self.last_value += 1;
                    Request::Write(Command::SetRegister(self.last_value))
                }
                // Few distinct amounts: the checker orders identical adds of unknown outcome
                // as one, so the search stays small however many calls time out.
                4..=6 => Request::Write(Command::AddCounter(self.rng.random_range(1..=2))),
                _ => Request::Read,
            };
            let think = self.rng.random_range(Duration::ZERO..MAX_THINK);
            busy.store(true, Ordering::SeqCst);
            let busy = Busy(busy);
            let log = self.log.clone();
            // Dropped unrun (freeing the client) if the node just went down.
            let sent = self.world.run_on(
                id,
                Box::new(move |raft| {
                    Box::pin(async move {
                        let _busy = busy;
                        tokio::time::sleep(think).await;
                        make_call(&log, id, &raft, request).await;
                    })
                }),
            );
            self.issued += usize::from(sent);
        }
    }

    /// A linearizable read through the agreed leader, recorded like a client's; retried
    /// until one succeeds or [`CONVERGE`] passes.
    fn final_read(&mut self) -> anyhow::Result<Option<Cells>> {
        let start = self.world.elapsed();
        while self.world.elapsed() - start < CONVERGE {
            let Some(leader) = self.agreed_leader() else {
                self.step()?;
                continue;
            };
            let (tx, mut rx) = oneshot::channel();
            let log = self.log.clone();
            self.world.run_on(
                leader,
                Box::new(move |raft| {
                    Box::pin(async move {
                        let reply = make_call(&log, leader, &raft, Request::Read).await;
                        let _ = tx.send(reply);
                    })
                }),
            );
            let mut reply = None;
            self.step_until(CALL_DEADLINE * 2, |_| match rx.try_recv() {
                Ok(answer) => {
                    reply = Some(answer);
                    true
                }
                Err(oneshot::error::TryRecvError::Empty) => false,
                // The leader went down with the call: try again.
                Err(oneshot::error::TryRecvError::Closed) => true,
            })?;
            if let Some(Reply::Read(cells)) = reply {
                return Ok(Some(cells));
            }
        }
        Ok(None)
    }

    /// The index every node has applied, once all agree and it covers the leader's commit
    /// index.
    fn applied_everywhere(&self) -> Option<u64> {
        let commit = self.raft(self.agreed_leader()?)?.status().commit_index?;
        let nodes = &self.world.schedule().nodes;
        nodes
            .iter()
            .all(|id| {
                self.raft(*id)
                    .is_some_and(|r| r.status().applied_index == Some(commit))
            })
            .then_some(commit)
    }

    /// Each node's Raft status in a line, for a report.
    fn statuses(&self) -> String {
        let nodes = &self.world.schedule().nodes;
        let status = |id: &NodeId| match self.raft(*id) {
            Some(raft) => {
                let s = raft.status();
                format!(
                    "node {id}: {:?} term {} leader {:?} log {:?} commit {:?} applied {:?}",
                    s.role, s.term, s.leader, s.last_log_index, s.commit_index, s.applied_index
                )
            }
            None => format!("node {id}: not running"),
        };
        nodes.iter().map(status).collect::<Vec<_>>().join("; ")
    }

    fn applied_indexes(&self) -> BTreeMap<NodeId, Option<u64>> {
        let nodes = &self.world.schedule().nodes;
        nodes
            .iter()
            .map(|id| (*id, self.raft(*id).and_then(|r| r.status().applied_index)))
            .collect()
    }

    /// Each started node's state, as it reads locally.
    fn local_states(&self) -> BTreeMap<NodeId, Cells> {
        let nodes = &self.world.schedule().nodes;
        nodes
            .iter()
            .filter_map(|id| {
                let raft = self.raft(*id)?;
                // A local read answers at once: it only looks at the state machine.
                let cells = raft.read((), ReadConsistency::Local).now_or_never()?.ok()?;
                Some((*id, cells))
            })
            .collect()
    }

    /// The whole run, gathering `evidence`. What did not happen within its bound is a line
    /// in `violations`.
    fn drive(
        &mut self,
        evidence: &mut Evidence,
        violations: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        if !self.step_until(CONVERGE, |run| run.leader().is_some())? {
            violations.push(format!(
                "no leader was elected within {CONVERGE:?} (simulated) of the start"
            ));
            return Ok(());
        }
        let fault_end = WARMUP + FAULT_PHASE;
        while !(self.world.faults_done() && self.world.elapsed() >= fault_end) {
            self.start_calls();
            self.step()?;
        }

        self.world.heal();
        let idle = |run: &mut Self| run.busy.values().all(|b| !b.load(Ordering::SeqCst));
        if !self.step_until(CALL_DEADLINE + MAX_THINK + Duration::from_secs(1), idle)? {
            violations.push("client calls still ran a second past their deadline".into());
        }
        if !self.step_until(CONVERGE, |run| run.agreed_leader().is_some())? {
            violations.push(format!(
                "after healing, the nodes did not agree on a leader within {CONVERGE:?} \
                 (simulated); {}",
                self.statuses()
            ));
            return Ok(());
        }
        evidence.final_read = self.final_read()?;
        if evidence.final_read.is_none() {
            violations.push(format!(
                "after healing, no linearizable read succeeded within {CONVERGE:?} (simulated)"
            ));
            return Ok(());
        }
        if !self.step_until(CONVERGE, |run| run.applied_everywhere().is_some())? {
            violations.push(format!(
                "after healing, the nodes did not apply the same log within {CONVERGE:?} \
                 (simulated): applied indexes {:?}",
                self.applied_indexes()
            ));
        }
        // A state machine may be a step behind the metrics; a difference that outlasts the
        // wait is judged a violation.
        let nodes = self.world.schedule().nodes.len();
        self.step_until(Duration::from_secs(5), |run| {
            let states = run.local_states();
            let first = states.values().next().copied();
            states.len() == nodes && states.values().all(|s| Some(*s) == first)
        })?;
        evidence.local_states = self.local_states();
        Ok(())
    }
}

/// The schedule of `seed`: 3 to 5 voters, no membership changes, faults from [`WARMUP`] on.
pub fn schedule(seed: u64) -> Schedule {
    let config = ScheduleConfig {
        membership_changes: false,
        nodes: (3, 5),
        fault_phase: FAULT_PHASE,
        max_down: FAULT_PHASE / 2,
        clock_steps: true,
        ..Default::default()
    };
    let mut schedule = Schedule::draw(seed, &config);
    // Faults start once the cluster had time to form.
    for event in &mut schedule.events {
        event.at += WARMUP;
    }
    schedule
}

/// Runs the Raft workload on `seed`'s schedule and judges it.
pub fn run(seed: u64) -> Outcome {
    let schedule = schedule(seed);
    let nodes = schedule.nodes.clone();
    let dir = TempDir::new(&format!("sim-raft-{seed}"));
    let app = RaftApp::new(dir.path().to_path_buf(), nodes.len());
    let mut run = Run {
        world: World::new(schedule, app, LIMIT),
        log: Arc::new(Log::default()),
        busy: nodes
            .iter()
            .map(|id| (*id, Arc::new(AtomicBool::new(false))))
            .collect(),
        leaders: BTreeMap::new(),
        rng: StdRng::seed_from_u64(seed ^ 0x7261_6674),
        issued: 0,
        last_value: 0,
    };
    let mut evidence = Evidence::default();
    let mut violations = Vec::new();
    if let Err(error) = run.drive(&mut evidence, &mut violations) {
        violations.push(format!("the simulation failed: {error:#}"));
    }
    if violations.is_empty() {
        violations.extend(membership::settle_and_check(&mut run.world));
    }
    let faults = run.world.faults_applied();
    let Run {
        world,
        log,
        leaders,
        ..
    } = run;
    // The nodes stop (and stop recording) before their directory goes.
    drop(world);
    drop(dir);
    evidence.calls = std::mem::take(&mut *log.calls.lock());
    evidence.leaders = leaders;
    violations.extend(evidence.judge());
    if !violations.is_empty() {
        // The seed may not replay this history (see the module docs): keep it.
        let path = std::env::temp_dir().join(format!(
            "datacake-sim-{WORKLOAD}-seed-{seed}-{}.txt",
            std::process::id()
        ));
        match std::fs::write(&path, evidence.transcript()) {
            Ok(()) => eprintln!(
                "{WORKLOAD} seed {seed}: history written to {}",
                path.display()
            ),
            Err(e) => eprintln!("{WORKLOAD} seed {seed}: cannot write the history: {e}"),
        }
    }
    Outcome {
        workload: WORKLOAD,
        seed,
        nodes: nodes.len(),
        faults,
        operations: evidence
            .calls
            .iter()
            .filter(|c| c.reply != Reply::Pending)
            .count(),
        violations,
    }
}
