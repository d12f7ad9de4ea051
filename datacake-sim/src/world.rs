//! A turmoil world of Datacake nodes: one host per node, each a real [`DatacakeNode`] with
//! an application ([`App`]) attached, driven from the test thread one step at a time, with
//! the faults of a [`Schedule`] applied as simulated time reaches them.
//!
//! The test thread runs operations on a node by sending it a closure ([`World::run_on`]); the
//! host spawns it on its own runtime, so the operation's RPCs leave from that node. A crash
//! drops the host's runtime with every task on it; whatever the [`App`] keeps outside (its
//! durable storage) survives to the restart.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use datacake_node::{ConnectionConfig, DatacakeHandle, DatacakeNode, DatacakeNodeBuilder, NodeId};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::schedule::{Event, Fault, Schedule};

/// The port every node listens on (each host has its own simulated IP address).
pub const PORT: u16 = 9000;

/// The longest a message takes on a healthy link (turmoil's default, set explicitly so that
/// a link a delay fault slowed down gets exactly it back when healed).
pub const MAX_LINK_LATENCY: Duration = Duration::from_millis(100);

/// Where simulated wall-clock time starts (turmoil's epoch), in seconds since the UNIX
/// epoch: 2100-01-01 00:00:00 UTC. Turmoil otherwise starts it at the machine's clock when
/// the world is built, so the stamps a replay's writes get would differ from the first run's.
/// It lies ahead of the machine's clock on purpose: a node clock read outside a host falls
/// back to the machine's clock (see `datacake-node`'s `clock.rs`), and a reading behind
/// simulated time leaves the hybrid logical clock where it was, as it did before (simulated
/// time already ran ahead of the machine's within a run), where one ahead would push every
/// later stamp of that node past its peers' drift bound.
pub const EPOCH_SECS: u64 = 4_102_444_800;

/// The gossip interval of simulated nodes.
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(100);

/// The host name of node `id`.
pub fn host_name(id: NodeId) -> String {
    format!("node-{id}")
}

/// What runs on each node: attaches its extensions when the node (re)starts.
pub trait App: Send + Sync + 'static {
    /// What operations get to use (e.g. the store's handle).
    type Handle: Clone + Send + Sync + 'static;

    /// Attaches the application to `node`, freshly connected as node `id` (after a restart,
    /// on the durable state the application kept for `id`).
    fn attach<'a>(
        &'a self,
        id: NodeId,
        node: &'a DatacakeNode,
    ) -> BoxFuture<'a, anyhow::Result<Self::Handle>>;

    /// Makes node `id`'s disk refuse every write (`failing`) or take them again. An
    /// application whose durable state is not the simulation's ignores it (the default).
    fn set_disk_failing(&self, id: NodeId, failing: bool) {
        let _ = (id, failing);
    }
}

/// An operation to run on a node's runtime.
pub type Op<H> = Box<dyn FnOnce(H) -> BoxFuture<'static, ()> + Send>;

/// What the test thread sends a host.
enum Message<H> {
    Run(Op<H>),
    Leave,
}

/// A node as the test thread sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Not started yet (a late joiner).
    Pending,
    /// Its host runs (it may still be connecting).
    Up,
    /// Crashed.
    Crashed,
    /// Left the cluster (its host stopped).
    Left,
}

/// A started node: its handles and its queue of operations.
struct Running<H> {
    node: DatacakeHandle,
    app: H,
}

/// Shared between the test thread and the hosts.
struct Slots<H> {
    /// The started nodes (cleared on crash and leave).
    running: BTreeMap<NodeId, Running<H>>,
    /// Each host's inbox, taken by the host when it starts.
    inboxes: BTreeMap<NodeId, mpsc::UnboundedReceiver<Message<H>>>,
    /// Each node's clock offset now, read by its host at every start (a machine's clock
    /// keeps its last step across a restart).
    clock_offsets: BTreeMap<NodeId, i64>,
}

/// The simulated cluster.
pub struct World<'a, A: App> {
    /// The turmoil simulation.
    pub sim: turmoil::Sim<'a>,
    app: Arc<A>,
    schedule: Schedule,
    next_event: usize,
    slots: Arc<Mutex<Slots<A::Handle>>>,
    senders: BTreeMap<NodeId, mpsc::UnboundedSender<Message<A::Handle>>>,
    states: BTreeMap<NodeId, NodeState>,
    faults_applied: usize,
}

impl<A: App> std::fmt::Debug for World<'_, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.schedule.seed)
            .field("elapsed", &self.sim.elapsed())
            .field("states", &self.states)
            .finish()
    }
}

impl<'a, A: App> World<'a, A> {
    /// A world for `schedule` running `app` on every node; the initial nodes are started.
    /// `limit` bounds the simulated time of the whole run.
    pub fn new(schedule: Schedule, app: A, limit: Duration) -> Self {
        let sim = turmoil::Builder::new()
            .rng_seed(schedule.seed)
            .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
            .simulation_duration(limit)
            .tick_duration(Duration::from_millis(5))
            .max_message_latency(MAX_LINK_LATENCY)
            // Gossip reaches chitchat's codec through loopback UDP sockets (real tokio
            // sockets that never leave the process), which need tokio's I/O driver.
            .enable_tokio_io()
            .build();
        let states = schedule
            .nodes
            .iter()
            .map(|id| (*id, NodeState::Pending))
            .collect();
        let mut world = Self {
            sim,
            app: Arc::new(app),
            next_event: 0,
            slots: Arc::new(Mutex::new(Slots {
                running: BTreeMap::new(),
                inboxes: BTreeMap::new(),
                clock_offsets: schedule.clock_offsets.clone(),
            })),
            senders: BTreeMap::new(),
            states,
            faults_applied: 0,
            schedule,
        };
        for id in world.schedule.initial.clone() {
            world.register(id);
        }
        world
    }

    /// The schedule the world runs.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// How many faults were injected so far.
    pub fn faults_applied(&self) -> usize {
        self.faults_applied
    }

    /// Node `id`'s state.
    pub fn state(&self, id: NodeId) -> NodeState {
        self.states[&id]
    }

    /// The nodes whose hosts run.
    pub fn up(&self) -> Vec<NodeId> {
        self.states
            .iter()
            .filter(|(_, s)| **s == NodeState::Up)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Node `id`'s handles, once it has connected and attached its application.
    pub fn handles(&self, id: NodeId) -> Option<(DatacakeHandle, A::Handle)> {
        let slots = self.slots.lock();
        slots
            .running
            .get(&id)
            .map(|r| (r.node.clone(), r.app.clone()))
    }

    /// Sends `op` to node `id`; `false` (and `op` dropped) if the node is not up.
    pub fn run_on(&self, id: NodeId, op: Op<A::Handle>) -> bool {
        if self.states[&id] != NodeState::Up {
            return false;
        }
        self.senders
            .get(&id)
            .is_some_and(|tx| tx.send(Message::Run(op)).is_ok())
    }

    /// Steps the simulation once, applying the faults that are due.
    pub fn step(&mut self) -> anyhow::Result<()> {
        while let Some(event) = self.schedule.events.get(self.next_event).copied() {
            if event.at > self.sim.elapsed() {
                break;
            }
            self.next_event += 1;
            self.apply(event);
        }
        self.sim
            .step()
            .map_err(|e| anyhow::anyhow!("simulation failed: {e}"))?;
        Ok(())
    }

    /// Steps until `done` holds, or fails after `bound` of simulated time.
    pub fn step_until(
        &mut self,
        what: &str,
        bound: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let start = self.sim.elapsed();
        while !done(self) {
            if self.sim.elapsed() - start > bound {
                anyhow::bail!("timed out after {bound:?} (simulated) waiting for {what}");
            }
            self.step()?;
        }
        Ok(())
    }

    /// Whether every event of the schedule has been applied.
    pub fn faults_done(&self) -> bool {
        self.next_event >= self.schedule.events.len()
    }

    /// Repairs every link and disk and brings back every crashed node (not the ones that
    /// left for good): the end of the fault phase.
    pub fn heal(&mut self) {
        let nodes = self.schedule.nodes.clone();
        for id in &nodes {
            self.app.set_disk_failing(*id, false);
        }
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                self.heal_link(*a, *b);
            }
        }
        for id in nodes {
            if self.states[&id] == NodeState::Crashed {
                self.start(id);
            }
        }
    }

    fn apply(&mut self, Event { fault, .. }: Event) {
        let link = match fault {
            Fault::Partition { a, b }
            | Fault::Delay { a, b, .. }
            | Fault::Loss { a, b, .. }
            | Fault::HealLink { a, b }
            | Fault::PartitionOneWay { from: a, to: b } => Some((a, b)),
            _ => None,
        };
        if let Some((a, b)) = link {
            // A link to a host that does not exist yet (a late joiner) has nothing to break.
            if self.states[&a] == NodeState::Pending || self.states[&b] == NodeState::Pending {
                return;
            }
        }
        if fault.is_fault() {
            self.faults_applied += 1;
        }
        tracing::debug!(seed = self.schedule.seed, at = ?self.sim.elapsed(), %fault, "fault");
        match fault {
            Fault::Partition { a, b } => self.sim.partition(host_name(a), host_name(b)),
            Fault::PartitionOneWay { from, to } => {
                self.sim.partition_oneway(host_name(from), host_name(to))
            }
            Fault::Delay { a, b, max } => {
                self.sim
                    .set_link_max_message_latency(host_name(a), host_name(b), max)
            }
            Fault::Loss { a, b, rate } => {
                self.sim
                    .set_link_fail_rate(host_name(a), host_name(b), rate)
            }
            Fault::HealLink { a, b } => self.heal_link(a, b),
            Fault::Crash { node } => {
                if self.states[&node] == NodeState::Up {
                    self.forget(node);
                    self.sim.crash(host_name(node));
                    self.states.insert(node, NodeState::Crashed);
                }
            }
            Fault::Restart { node } => {
                if self.states[&node] == NodeState::Crashed {
                    self.start(node);
                }
            }
            Fault::Leave { node } => {
                if self.states[&node] == NodeState::Up {
                    if let Some(tx) = self.senders.get(&node) {
                        let _ = tx.send(Message::Leave);
                    }
                    self.forget(node);
                    self.states.insert(node, NodeState::Left);
                }
            }
            Fault::Rejoin { node } => {
                if self.states[&node] == NodeState::Left {
                    self.start(node);
                }
            }
            Fault::Join { node } => {
                if self.states[&node] == NodeState::Pending {
                    self.register(node);
                }
            }
            // The disk outlives the process: it fails or works whether the node runs or not.
            Fault::DiskFail { node } => self.app.set_disk_failing(node, true),
            Fault::DiskHeal { node } => self.app.set_disk_failing(node, false),
            Fault::ClockStep { node, offset } => self.step_clock(node, offset),
            Fault::ClockReset { node } => {
                let offset = self.schedule.clock_offsets[&node];
                self.step_clock(node, offset);
            }
        }
    }

    /// Steps node `id`'s wall clock to `offset` (ms from true time): now, if it runs, and
    /// at its next start.
    fn step_clock(&mut self, id: NodeId, offset: i64) {
        let mut slots = self.slots.lock();
        slots.clock_offsets.insert(id, offset);
        if let Some(running) = slots.running.get(&id) {
            running.node.clock().step_wall_clock(offset);
        }
    }

    fn heal_link(&mut self, a: NodeId, b: NodeId) {
        // Only links between hosts that exist (a late joiner may not yet).
        if self.states[&a] == NodeState::Pending || self.states[&b] == NodeState::Pending {
            return;
        }
        let (a, b) = (host_name(a), host_name(b));
        self.sim.repair(a.as_str(), b.as_str());
        self.sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
        self.sim
            .set_link_max_message_latency(a.as_str(), b.as_str(), MAX_LINK_LATENCY);
    }

    /// Drops what the test thread holds of a node that goes down.
    fn forget(&mut self, id: NodeId) {
        self.senders.remove(&id);
        let mut slots = self.slots.lock();
        slots.running.remove(&id);
        slots.inboxes.remove(&id);
    }

    /// A fresh inbox for node `id`'s next start.
    fn new_inbox(&mut self, id: NodeId) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.senders.insert(id, tx);
        self.slots.lock().inboxes.insert(id, rx);
    }

    /// Registers node `id`'s host (its first start).
    fn register(&mut self, id: NodeId) {
        self.new_inbox(id);
        self.states.insert(id, NodeState::Up);
        let app = self.app.clone();
        let slots = self.slots.clone();
        let seeds: Vec<NodeId> = self
            .schedule
            .initial
            .iter()
            .copied()
            .filter(|s| *s != id)
            .collect();
        self.sim.host(host_name(id), move || {
            let (app, slots, seeds) = (app.clone(), slots.clone(), seeds.clone());
            async move {
                run_host(id, &seeds, &*app, &slots).await;
                Ok(())
            }
        });
    }

    /// Starts node `id` again (after a crash or a leave).
    fn start(&mut self, id: NodeId) {
        self.new_inbox(id);
        self.states.insert(id, NodeState::Up);
        self.sim.bounce(host_name(id));
    }
}

/// A host's life: connect (again and again until it works, as a process supervisor would
/// restart a node that failed to start), attach the application, run operations until told
/// to leave.
async fn run_host<A: App>(id: NodeId, seeds: &[NodeId], app: &A, slots: &Mutex<Slots<A::Handle>>) {
    let Some(mut inbox) = slots.lock().inboxes.remove(&id) else {
        return;
    };
    let public = SocketAddr::new(turmoil::lookup(host_name(id)), PORT);
    let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT);
    let seeds: Vec<String> = seeds
        .iter()
        .map(|s| format!("{}:{PORT}", turmoil::lookup(host_name(*s))))
        .collect();
    let (node, handle) = loop {
        let offset = slots.lock().clock_offsets[&id];
        let connected =
            DatacakeNodeBuilder::new(id, ConnectionConfig::new(listen, public, seeds.clone()))
                .with_simulated_network()
                .with_clock_offset(offset)
                .with_gossip_interval(GOSSIP_INTERVAL)
                .with_join_timeout(Duration::from_secs(2))
                .with_min_failure_timeout(Duration::from_secs(2))
                .with_dead_node_grace_period(Duration::from_secs(3_600))
                .connect()
                .await;
        match connected {
            Ok(node) => match app.attach(id, &node).await {
                Ok(handle) => break (node, handle),
                Err(error) => {
                    tracing::debug!(id, %error, "attaching failed; restarting the node");
                    node.shutdown().await;
                }
            },
            Err(error) => tracing::debug!(id, %error, "connecting failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    {
        let mut slots = slots.lock();
        // (A step while the node was connecting applies now.)
        node.clock().step_wall_clock(slots.clock_offsets[&id]);
        slots.running.insert(
            id,
            Running {
                node: node.handle(),
                app: handle.clone(),
            },
        );
    }
    while let Some(message) = inbox.recv().await {
        match message {
            Message::Run(op) => {
                tokio::spawn(op(handle.clone()));
            }
            Message::Leave => break,
        }
    }
    // The application stays attached while the node leaves: its leave hooks (the store's
    // hand-off) run then.
    node.shutdown().await;
    drop(handle);
}
