//! The eventual-consistency workload: random puts, deletes and reads at random levels on
//! random nodes while the schedule's faults happen; then the faults heal and the checkers
//! judge the recorded history:
//!
//! - **Convergence:** every node still in the cluster holds the same documents and the same
//!   metadata digest.
//! - **No acknowledged write lost:** for each acknowledged put, the final version of its key
//!   is it or a later-stamped write (a later put, or a delete stamped after it).
//! - **Acknowledged at its level:** when an acknowledged write returned, at least as many
//!   nodes had stored it (or a later version of its key, which a replica acknowledges as
//!   well) as its level promises: the writer for `None`; the writer and a peer for `One`,
//!   `Quorum` and `All` (the last two count the writer's known members, which may be one
//!   peer, so two nodes is all the checker can require of them). A delete also counts the
//!   nodes whose stored purge watermark reached its stamp: such a node acknowledges it
//!   without a tombstone when it holds nothing of the key (it stays absent there, and older
//!   puts of it are refused). Seed 155 met one: a `Quorum` delete stamped by a node whose
//!   clock ran behind, both peers already past it.
//! - **No delete undone:** for each acknowledged delete, the key is absent at the end unless
//!   a put stamped after the delete wrote it.
//! - **No phantom:** every document at the end, and every document a read returned, is one
//!   that a put wrote, with the stamp that put got.
//! - **Quorum read-your-writes:** a `Quorum` (or `All`) read that started after a `Quorum`
//!   (or `All`) write of its key was acknowledged returns that write or a later one. A read
//!   that finds the key absent is "later" than a put only through a delete stamped after the
//!   put that could be ordered before the read returned: one invoked before then (whatever
//!   its outcome: a delete that failed or never returned may have taken effect).
//!
//! A delete, for these checks, is a client's delete: a tombstone that carries a put's own
//! stamp is a copy a replica forgot as obsolete (the store's `forget_obsolete`), not a delete,
//! and never makes a key's absence "later" than a put.
//!
//! What the store promises a write when nodes leave (its README, "What is not promised"): a
//! member that leaves cut off from its peers, so that its hand-off reaches none, takes the
//! writes it alone held; "write at `One` or above what must outlive its node". A write thus
//! outlives any departures that leave one of the nodes that stored it. The lost-write and
//! undone-delete checks excuse a write only when every node that ever stored it left for good
//! *and* it had its level's copies when acknowledged: a `None` write whose node left before
//! it replicated (seed 259), or a write at `One` or above all of whose holders, two at least,
//! left (two departures, which five nodes allow). A write held by fewer nodes than its level
//! promises is never excused, nor one that any remaining node stored.
//!
//! "Later" is the store's own order: the hybrid logical clock stamps it gives writes, which
//! [`Recorder`] learns from the storages. Real-time order between nodes is not promised by
//! last-writer-wins (clocks differ), so the checkers never assume it, except for the
//! read-your-writes promise, which the levels make.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datacake_crdt::HLCTimestamp;
use datacake_eventual_consistency::test_utils::FaultyStorage;
use datacake_eventual_consistency::{
    Consistency, EventuallyConsistentStore, EventuallyConsistentStoreExtension, Key, Storage,
};
use datacake_node::{DatacakeNode, NodeId};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod check;

use crate::membership;
use crate::report::Outcome;
use crate::schedule::{Schedule, ScheduleConfig};
use crate::storage::{Recorder, SimStorage, KEYSPACE};
use crate::world::{App, NodeState, Op, World};

/// How an EC run is set up.
#[derive(Debug, Clone)]
pub struct EcConfig {
    /// The faults.
    pub schedule: ScheduleConfig,
    /// How many distinct keys the workload writes (few, so writes collide).
    pub keys: Key,
    /// The most operations a run issues.
    pub max_ops: usize,
    /// A node whose storage skips deletes (to show the checkers catch a broken replica).
    pub broken_node: Option<NodeId>,
    /// The tombstone grace of every node. Longer than any outage of the schedule (crashes,
    /// departures and partitions of at most [`ScheduleConfig::max_down`], plus the time to
    /// notice the end of one): the store promises nothing lost only within the grace (see
    /// `with_tombstone_grace`). Purges of tombstones every member confirmed still happen.
    pub tombstone_grace: Duration,
}

impl Default for EcConfig {
    fn default() -> Self {
        Self {
            schedule: ScheduleConfig {
                disk_faults: true,
                clock_steps: true,
                ..ScheduleConfig::default()
            },
            keys: 8,
            max_ops: 200,
            broken_node: None,
            tombstone_grace: Duration::from_secs(60),
        }
    }
}

/// A node's durable storage, whose writes a disk fault of the schedule makes fail (a
/// refused write never reaches the [`SimStorage`], so the recorder never counts it).
type Disk = FaultyStorage<SimStorage>;

/// A running node's store.
#[derive(Clone)]
pub struct EcNode {
    store: Arc<EventuallyConsistentStore<Disk>>,
}

impl std::fmt::Debug for EcNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcNode").finish_non_exhaustive()
    }
}

/// Attaches the store to each node, on that node's durable storage.
struct EcApp {
    storages: BTreeMap<NodeId, Disk>,
    tombstone_grace: Duration,
}

impl App for EcApp {
    type Handle = EcNode;

    fn attach<'a>(
        &'a self,
        id: NodeId,
        node: &'a DatacakeNode,
    ) -> BoxFuture<'a, anyhow::Result<EcNode>> {
        Box::pin(async move {
            let extension = EventuallyConsistentStoreExtension::new(self.storages[&id].clone())
                .with_repair_interval(Duration::from_millis(500))
                .with_write_timeout(Duration::from_secs(2))
                .with_read_timeout(Duration::from_secs(2))
                .with_rpc_timeout(Duration::from_secs(1))
                .with_tombstone_grace(self.tombstone_grace);
            let store = node.add_extension(extension).await?;
            Ok(EcNode {
                store: Arc::new(store),
            })
        })
    }

    fn set_disk_failing(&self, id: NodeId, failing: bool) {
        self.storages[&id].fail_writes(failing);
    }
}

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Wrote the 8-byte value `write_id`.
    Put {
        write_id: u64,
    },
    Delete,
    Read,
}

/// A version as a read or the final state sees it: a put's write id and stamp.
type Version = (u64, HLCTimestamp);

/// One operation of the history.
#[derive(Debug, Clone)]
struct Entry {
    node: NodeId,
    key: Key,
    action: Action,
    level: Consistency,
    /// The invocation and the return in the run's order ([`Recorder::tick`]; `None`: never
    /// returned).
    call: u64,
    ret: Option<u64>,
    /// Whether it was acknowledged (for reads: answered).
    ok: bool,
    /// A delete's stamp, when the issuing node stored it.
    delete_stamp: Option<HLCTimestamp>,
    /// What an answered read saw (`None`: the key was absent).
    read: Option<Version>,
    /// For a write, when it returned: how many nodes had stored it or a later version of its
    /// key ([`Recorder::copies`]).
    copies: usize,
}

/// The history, shared by the operations running on the hosts.
#[derive(Default)]
struct History {
    entries: Mutex<Vec<Entry>>,
}

/// Decodes a stored value into its write id.
fn write_id(data: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(data).ok().map(u64::from_le_bytes)
}

const LEVELS: [Consistency; 4] = [
    Consistency::None,
    Consistency::One,
    Consistency::Quorum,
    Consistency::All,
];

/// Runs `seed` with the default setup.
pub fn run(seed: u64) -> Outcome {
    run_with(seed, &EcConfig::default())
}

/// Runs `seed` with `config`.
pub fn run_with(seed: u64, config: &EcConfig) -> Outcome {
    let schedule = Schedule::draw(seed, &config.schedule);
    let recorder = Arc::new(Recorder::default());
    let storages: BTreeMap<NodeId, Disk> = schedule
        .nodes
        .iter()
        .map(|id| {
            let storage = SimStorage::new(*id, recorder.clone());
            let storage = if config.broken_node == Some(*id) {
                storage.skipping_deletes()
            } else {
                storage
            };
            (*id, FaultyStorage::new(storage))
        })
        .collect();
    let app = EcApp {
        storages: storages.clone(),
        tombstone_grace: config.tombstone_grace,
    };
    let limit = config.schedule.fault_phase + Duration::from_secs(300);
    let mut world = World::new(schedule, app, limit);
    let mut outcome = Outcome {
        workload: "ec",
        seed,
        nodes: world.schedule().nodes.len(),
        faults: 0,
        operations: 0,
        violations: Vec::new(),
    };
    let history = Arc::new(History::default());
    if let Err(error) = drive(&mut world, config, &history, &recorder) {
        outcome.violations.push(error.to_string());
    }
    outcome.faults = world.faults_applied();
    let entries = history.entries.lock().clone();
    outcome.operations = entries.iter().filter(|e| e.ret.is_some()).count();
    if outcome.violations.is_empty() {
        outcome
            .violations
            .extend(membership::settle_and_check(&mut world));
    }

    if outcome.violations.is_empty() {
        let departed: BTreeSet<NodeId> = world.schedule().departed().into_iter().collect();
        match converge(&mut world, &storages, config.keys) {
            Ok(final_state) => outcome.violations.extend(check::check(
                &entries,
                &recorder,
                &final_state,
                &departed,
            )),
            Err(error) => outcome.violations.push(error.to_string()),
        }
    }
    outcome
}

/// Runs the workload through the fault phase, then heals and lets the operations finish.
fn drive(
    world: &mut World<'_, EcApp>,
    config: &EcConfig,
    history: &Arc<History>,
    recorder: &Arc<Recorder>,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(world.schedule().seed ^ 0xEC);
    let nodes = world.schedule().nodes.clone();
    let busy: BTreeMap<NodeId, Arc<AtomicBool>> = nodes
        .iter()
        .map(|id| (*id, Arc::new(AtomicBool::new(false))))
        .collect();
    let mut next_at: BTreeMap<NodeId, Duration> =
        nodes.iter().map(|id| (*id, Duration::ZERO)).collect();
    let mut issued = 0;
    let mut next_write_id = 1u64;
    let phase = config.schedule.fault_phase;
    while world.elapsed() < phase || !world.faults_done() {
        for id in &nodes {
            if world.state(*id) != NodeState::Up {
                // Its operation in flight (if any) died with it.
                busy[id].store(false, Ordering::SeqCst);
                continue;
            }
            if issued >= config.max_ops
                || busy[id].load(Ordering::SeqCst)
                || world.elapsed() < next_at[id]
                || world.handles(*id).is_none()
            {
                continue;
            }
            let key = rng.random_range(1..=config.keys);
            let action = match rng.random_range(0..10) {
                0..=4 => {
                    next_write_id += 1;
                    Action::Put {
                        write_id: next_write_id,
                    }
                }
                5..=6 => Action::Delete,
                _ => Action::Read,
            };
            let level = LEVELS[rng.random_range(0..LEVELS.len())];
            busy[id].store(true, Ordering::SeqCst);
            let op = operation(*id, key, action, level, history, recorder, &busy[id]);
            if world.run_on(*id, op) {
                issued += 1;
            } else {
                busy[id].store(false, Ordering::SeqCst);
            }
            next_at.insert(
                *id,
                world.elapsed() + Duration::from_millis(rng.random_range(10..300)),
            );
        }
        world.step()?;
    }
    world.heal();
    world.step_until(
        "the operations under way to finish",
        Duration::from_secs(30),
        |w| {
            nodes
                .iter()
                .all(|id| w.state(*id) != NodeState::Up || !busy[id].load(Ordering::SeqCst))
        },
    )
}

/// One operation, recorded in `history` as it starts and ends.
fn operation(
    node: NodeId,
    key: Key,
    action: Action,
    level: Consistency,
    history: &Arc<History>,
    recorder: &Arc<Recorder>,
    busy: &Arc<AtomicBool>,
) -> Op<EcNode> {
    let (history, recorder, busy) = (history.clone(), recorder.clone(), busy.clone());
    Box::new(move |ec: EcNode| {
        Box::pin(async move {
            let call = recorder.tick();
            let index = {
                let mut entries = history.entries.lock();
                entries.push(Entry {
                    node,
                    key,
                    action,
                    level,
                    call,
                    ret: None,
                    ok: false,
                    delete_stamp: None,
                    read: None,
                    copies: 0,
                });
                entries.len() - 1
            };
            let handle = ec.store.handle();
            let before = recorder.own_delete(node, key);
            let (ok, read) = match action {
                Action::Put { write_id } => {
                    let data = Bytes::copy_from_slice(&write_id.to_le_bytes());
                    (handle.put(KEYSPACE, key, data, level).await.is_ok(), None)
                }
                Action::Delete => (handle.del(KEYSPACE, key, level).await.is_ok(), None),
                Action::Read => match handle.get(KEYSPACE, key, level).await {
                    Ok(document) => (
                        true,
                        document.and_then(|d| Some((write_id(&d.data)?, d.last_updated))),
                    ),
                    Err(_) => (false, None),
                },
            };
            let after = recorder.own_delete(node, key);
            let delete_stamp = (action == Action::Delete && after != before)
                .then_some(after)
                .flatten();
            let stamp = match action {
                Action::Put { write_id } => recorder.put_stamp(write_id),
                Action::Delete => delete_stamp,
                Action::Read => None,
            };
            let copies = stamp.map_or(0, |stamp| {
                recorder.copies(key, stamp, action == Action::Delete)
            });
            let ret = recorder.tick();
            tracing::debug!(
                node,
                key,
                ?action,
                ?level,
                ok,
                ?read,
                ?stamp,
                copies,
                call,
                ret,
                "operation returned"
            );
            {
                let mut entries = history.entries.lock();
                let entry = &mut entries[index];
                entry.ret = Some(ret);
                entry.ok = ok;
                entry.read = read;
                entry.delete_stamp = delete_stamp;
                entry.copies = copies;
            }
            busy.store(false, Ordering::SeqCst);
        })
    })
}

/// Every key's final version on one node (`None`: absent).
type Contents = BTreeMap<Key, Option<Version>>;

/// Waits (bounded) until every node in the cluster holds the same documents and digest;
/// returns those contents.
fn converge(
    world: &mut World<'_, EcApp>,
    storages: &BTreeMap<NodeId, Disk>,
    keys: Key,
) -> anyhow::Result<Contents> {
    let contents = |id: NodeId| -> Contents {
        // The storage's calls complete at once (it is in memory): no runtime needed.
        let docs =
            futures::executor::block_on(storages[&id].multi_get(KEYSPACE, (1..=keys).collect()))
                .unwrap_or_default();
        let mut out: Contents = (1..=keys).map(|k| (k, None)).collect();
        for d in docs {
            out.insert(
                d.id,
                Some((write_id(&d.data).unwrap_or(u64::MAX), d.last_updated)),
            );
        }
        out
    };
    let members = world.up();
    let agreed = |world: &World<'_, EcApp>| -> Option<Contents> {
        let first = contents(members[0]);
        let mut digests = Vec::new();
        for id in &members {
            let (_, ec) = world.handles(*id)?;
            digests.push(ec.store.handle().metadata_digest(KEYSPACE));
            if contents(*id) != first {
                return None;
            }
        }
        digests.windows(2).all(|w| w[0] == w[1]).then_some(first)
    };
    let result = world.step_until(
        "every node to hold the same documents and digest",
        Duration::from_secs(60),
        |w| agreed(w).is_some(),
    );
    if let Err(error) = result {
        let mut report = format!("{error}:");
        let first = contents(members[0]);
        for id in &members[1..] {
            let other = contents(*id);
            for (key, version) in &first {
                if other[key] != *version {
                    report.push_str(&format!(
                        " key {key}: node {} {version:?} vs node {id} {:?};",
                        members[0], other[key]
                    ));
                }
            }
        }
        anyhow::bail!(report);
    }
    agreed(world).ok_or_else(|| anyhow::anyhow!("the nodes stopped agreeing"))
}
