//! Fault schedules drawn from a seed: which nodes run, how their clocks are off, and what
//! goes wrong when.
//!
//! A schedule is a pure function of its seed and [`ScheduleConfig`], so a seed names a run.
//! Every fault is an *episode* with a start and an end (a partition and its repair, a crash
//! and its restart); episodes end before the fault phase is over, except permanent leaves.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use datacake_node::NodeId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Mixed into the seed for the disk faults' random stream.
const DISK_STREAM: u64 = 0xD15C_FA17;
/// Mixed into the seed for the clock steps' random stream.
const CLOCK_STREAM: u64 = 0xC10C_57E9;

/// What a schedule may contain.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// The fewest and most nodes of a run (3 to 7).
    pub nodes: (usize, usize),
    /// How long faults are injected for (simulated time).
    pub fault_phase: Duration,
    /// Fault episodes per run, at least and at most.
    pub episodes: (usize, usize),
    /// The largest clock offset a node gets, either way (keep it under half the HLC's
    /// maximum drift so any two nodes stay within it).
    pub max_clock_offset: Duration,
    /// The longest a node stays crashed or away.
    pub max_down: Duration,
    /// Whether faults may include graceful leaves (with and without a rejoin) and a node
    /// that joins late. The Raft workload keeps its voters fixed and turns these off.
    pub membership_changes: bool,
    /// Whether a node's disk may refuse every write for a while (drawn from a stream of its
    /// own, after the other faults, so a seed's other faults stay as they were). Only the
    /// eventual-consistency workload, whose storage is the simulation's, turns it on.
    pub disk_faults: bool,
    /// Whether a node's wall clock may be stepped while it runs, to another offset within
    /// [`max_clock_offset`](Self::max_clock_offset), and back at the episode's end (drawn
    /// from a stream of its own, like the disk faults).
    pub clock_steps: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            nodes: (3, 5),
            fault_phase: Duration::from_secs(20),
            episodes: (2, 6),
            max_clock_offset: Duration::from_millis(2_000),
            max_down: Duration::from_secs(12),
            membership_changes: true,
            disk_faults: false,
            clock_steps: false,
        }
    }
}

/// One fault, or its end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// `a` and `b` cannot reach each other.
    Partition {
        /// One side.
        a: NodeId,
        /// The other side.
        b: NodeId,
    },
    /// Messages from `from` to `to` are dropped; the other way works.
    PartitionOneWay {
        /// The sender whose messages are lost.
        from: NodeId,
        /// The receiver.
        to: NodeId,
    },
    /// Messages between `a` and `b` take up to `max` to arrive.
    Delay {
        /// One side.
        a: NodeId,
        /// The other side.
        b: NodeId,
        /// The longest delay.
        max: Duration,
    },
    /// The link between `a` and `b` drops messages at random (turmoil's lossy links: each
    /// message may find the link down, `rate` of the time).
    Loss {
        /// One side.
        a: NodeId,
        /// The other side.
        b: NodeId,
        /// The chance a message finds the link failing.
        rate: f64,
    },
    /// The link between `a` and `b` works normally again.
    HealLink {
        /// One side.
        a: NodeId,
        /// The other side.
        b: NodeId,
    },
    /// `node`'s process dies (its durable storage survives).
    Crash {
        /// The node.
        node: NodeId,
    },
    /// `node` starts again on its durable storage.
    Restart {
        /// The node.
        node: NodeId,
    },
    /// `node` leaves the cluster gracefully and stops.
    Leave {
        /// The node.
        node: NodeId,
    },
    /// `node` (which left) starts again and joins.
    Rejoin {
        /// The node.
        node: NodeId,
    },
    /// `node` starts for the first time, after the others.
    Join {
        /// The node.
        node: NodeId,
    },
    /// `node`'s disk refuses every write (as a full or failing disk would); reads work.
    DiskFail {
        /// The node.
        node: NodeId,
    },
    /// `node`'s disk takes writes again.
    DiskHeal {
        /// The node.
        node: NodeId,
    },
    /// `node`'s wall clock is stepped to `offset` milliseconds from true time (as NTP steps a
    /// machine's clock), whether the node runs or not; it keeps that offset across restarts.
    ClockStep {
        /// The node.
        node: NodeId,
        /// The new offset (positive: ahead).
        offset: i64,
    },
    /// `node`'s wall clock is stepped back to its offset of the schedule's start.
    ClockReset {
        /// The node.
        node: NodeId,
    },
}

impl Fault {
    /// Whether this is a fault (not the end of one).
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            Fault::HealLink { .. }
                | Fault::Restart { .. }
                | Fault::Rejoin { .. }
                | Fault::DiskHeal { .. }
                | Fault::ClockReset { .. }
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition { a, b } => write!(f, "partition {a} <-> {b}"),
            Fault::PartitionOneWay { from, to } => write!(f, "partition {from} -> {to}"),
            Fault::Delay { a, b, max } => write!(f, "delay {a} <-> {b} up to {max:?}"),
            Fault::Loss { a, b, rate } => write!(f, "loss {a} <-> {b} at {rate:.2}"),
            Fault::HealLink { a, b } => write!(f, "heal {a} <-> {b}"),
            Fault::Crash { node } => write!(f, "crash {node}"),
            Fault::Restart { node } => write!(f, "restart {node}"),
            Fault::Leave { node } => write!(f, "leave {node}"),
            Fault::Rejoin { node } => write!(f, "rejoin {node}"),
            Fault::Join { node } => write!(f, "join {node}"),
            Fault::DiskFail { node } => write!(f, "disk of {node} fails"),
            Fault::DiskHeal { node } => write!(f, "disk of {node} works"),
            Fault::ClockStep { node, offset } => {
                write!(f, "clock of {node} stepped to {offset} ms")
            }
            Fault::ClockReset { node } => write!(f, "clock of {node} stepped back"),
        }
    }
}

/// A fault at a point of simulated time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// When, from the start of the simulation.
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

/// A run's nodes, clocks and faults.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The seed it was drawn from.
    pub seed: u64,
    /// Every node id of the run, in order (`1..=n`).
    pub nodes: Vec<NodeId>,
    /// The nodes started at time zero (the others [`Fault::Join`] later).
    pub initial: Vec<NodeId>,
    /// Each node's clock offset in milliseconds (positive: ahead).
    pub clock_offsets: BTreeMap<NodeId, i64>,
    /// The events, in time order.
    pub events: Vec<Event>,
}

impl Schedule {
    /// The schedule of `seed`.
    pub fn draw(seed: u64, config: &ScheduleConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let (fewest, most) = config.nodes;
        let n = rng.random_range(fewest.max(3)..=most.max(fewest).max(3));
        let nodes: Vec<NodeId> = (1..=n as NodeId).collect();
        let max_offset = i64::try_from(config.max_clock_offset.as_millis()).unwrap_or(i64::MAX);
        let clock_offsets = nodes
            .iter()
            .map(|id| {
                // Half the nodes keep a true clock.
                let offset = if rng.random_bool(0.5) {
                    rng.random_range(-max_offset..=max_offset)
                } else {
                    0
                };
                (*id, offset)
            })
            .collect();
        let phase = config.fault_phase.as_millis().max(1) as u64;
        let mut events = Vec::new();
        let mut initial = nodes.clone();
        // A late joiner: never node 1 (the first seed), started in the first half.
        if config.membership_changes && rng.random_bool(0.3) {
            let late = nodes[n - 1];
            initial.retain(|id| *id != late);
            events.push(Event {
                at: Duration::from_millis(rng.random_range(0..phase / 2)),
                fault: Fault::Join { node: late },
            });
        }
        // When each node is next free of node-level faults (crash, leave, join).
        let mut busy_until: BTreeMap<NodeId, u64> = nodes.iter().map(|id| (*id, 0)).collect();
        for event in &events {
            if let Fault::Join { node } = event.fault {
                busy_until.insert(node, event.at.as_millis() as u64);
            }
        }
        let max_down = (config.max_down.as_millis() as u64).max(200);
        let mut departures = 0;
        let episodes =
            rng.random_range(config.episodes.0..=config.episodes.1.max(config.episodes.0));
        for _ in 0..episodes {
            let start = rng.random_range(0..phase);
            let length = rng.random_range(200..=max_down);
            let end = (start + length).min(phase);
            let (a, b) = two_nodes(&mut rng, &nodes);
            let kinds = if config.membership_changes { 7 } else { 5 };
            let mut push = |at: u64, fault: Fault| {
                events.push(Event {
                    at: Duration::from_millis(at),
                    fault,
                })
            };
            match rng.random_range(0..kinds) {
                0 => {
                    push(start, Fault::Partition { a, b });
                    push(end, Fault::HealLink { a, b });
                }
                1 => {
                    push(start, Fault::PartitionOneWay { from: a, to: b });
                    push(end, Fault::HealLink { a, b });
                }
                2 => {
                    let max = Duration::from_millis(rng.random_range(20..=1_000));
                    push(start, Fault::Delay { a, b, max });
                    push(end, Fault::HealLink { a, b });
                }
                3 => {
                    let rate = rng.random_range(0.05..0.5);
                    push(start, Fault::Loss { a, b, rate });
                    push(end, Fault::HealLink { a, b });
                }
                kind => {
                    // A node-level fault on a node free for the whole episode.
                    let node = a;
                    if busy_until[&node] > start {
                        continue;
                    }
                    busy_until.insert(node, end + 1);
                    match kind {
                        4 => {
                            push(start, Fault::Crash { node });
                            push(end, Fault::Restart { node });
                        }
                        5 => {
                            push(start, Fault::Leave { node });
                            push(end, Fault::Rejoin { node });
                        }
                        _ if departures < (n - 1) / 2 => {
                            // A leave for good: the node stays out after the faults. A
                            // majority of the nodes stays, so there is a cluster to judge.
                            departures += 1;
                            push(start, Fault::Leave { node });
                            busy_until.insert(node, u64::MAX);
                        }
                        _ => {
                            push(start, Fault::Crash { node });
                            push(end, Fault::Restart { node });
                        }
                    }
                }
            }
        }
        // Each kind drawn from a stream of its own, so turning it on leaves a seed's other
        // faults as they were.
        let mut side_episodes =
            |stream: u64, episode: &dyn Fn(&mut StdRng, NodeId) -> [Fault; 2]| {
                let mut rng = StdRng::seed_from_u64(seed ^ stream);
                for _ in 0..rng.random_range(0..=2) {
                    let node = nodes[rng.random_range(0..n)];
                    let start = rng.random_range(0..phase);
                    let end = (start + rng.random_range(200..=max_down)).min(phase);
                    let [begin, finish] = episode(&mut rng, node);
                    for (at, fault) in [(start, begin), (end, finish)] {
                        events.push(Event {
                            at: Duration::from_millis(at),
                            fault,
                        });
                    }
                }
            };
        if config.disk_faults {
            side_episodes(DISK_STREAM, &|_, node| {
                [Fault::DiskFail { node }, Fault::DiskHeal { node }]
            });
        }
        if config.clock_steps {
            side_episodes(CLOCK_STREAM, &|rng, node| {
                let offset = rng.random_range(-max_offset..=max_offset);
                [
                    Fault::ClockStep { node, offset },
                    Fault::ClockReset { node },
                ]
            });
        }
        // Stable: an episode's end never sorts before its start.
        events.sort_by_key(|e| e.at);
        Self {
            seed,
            nodes,
            initial,
            clock_offsets,
            events,
        }
    }

    /// How many faults (not ends of faults) the schedule holds.
    pub fn fault_count(&self) -> usize {
        self.events.iter().filter(|e| e.fault.is_fault()).count()
    }

    /// The nodes that left for good (are away when the faults end).
    pub fn departed(&self) -> Vec<NodeId> {
        let mut away = BTreeMap::new();
        for event in &self.events {
            match event.fault {
                Fault::Leave { node } => {
                    away.insert(node, true);
                }
                Fault::Rejoin { node } => {
                    away.insert(node, false);
                }
                _ => {}
            }
        }
        away.into_iter()
            .filter(|(_, a)| *a)
            .map(|(id, _)| id)
            .collect()
    }
}

/// Two distinct nodes of `nodes`.
fn two_nodes(rng: &mut StdRng, nodes: &[NodeId]) -> (NodeId, NodeId) {
    let a = rng.random_range(0..nodes.len());
    let mut b = rng.random_range(0..nodes.len() - 1);
    if b >= a {
        b += 1;
    }
    (nodes[a], nodes[b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_one_schedule() {
        let config = ScheduleConfig::default();
        for seed in 0..50 {
            let (a, b) = (Schedule::draw(seed, &config), Schedule::draw(seed, &config));
            assert_eq!(a.events, b.events);
            assert_eq!(a.clock_offsets, b.clock_offsets);
            assert_eq!(a.initial, b.initial);
        }
        let different = (0..50)
            .filter(|seed| {
                Schedule::draw(*seed, &config).events != Schedule::draw(seed + 1, &config).events
            })
            .count();
        assert!(different > 40);
    }

    #[test]
    fn episodes_on_one_node_never_overlap_and_end_in_the_phase() {
        let config = ScheduleConfig::default();
        for seed in 0..500 {
            let schedule = Schedule::draw(seed, &config);
            let mut down: BTreeMap<NodeId, bool> = BTreeMap::new();
            for id in &schedule.nodes {
                down.insert(*id, !schedule.initial.contains(id));
            }
            for event in &schedule.events {
                assert!(event.at <= config.fault_phase);
                match event.fault {
                    Fault::Crash { node } | Fault::Leave { node } => {
                        assert!(!down[&node], "seed {seed}: {node} already down");
                        down.insert(node, true);
                    }
                    Fault::Restart { node } | Fault::Rejoin { node } | Fault::Join { node } => {
                        assert!(down[&node], "seed {seed}: {node} already up");
                        down.insert(node, false);
                    }
                    _ => {}
                }
            }
            let departed = schedule.departed();
            assert!(
                departed.len() <= (schedule.nodes.len() - 1) / 2,
                "seed {seed}"
            );
            for (id, is_down) in down {
                assert_eq!(is_down, departed.contains(&id), "seed {seed}: node {id}");
            }
            let offsets = schedule.clock_offsets.values();
            assert!(offsets.into_iter().all(|o| o.unsigned_abs() <= 2_000));
        }
    }

    /// A side stream's faults (turned on by `turn_on`, told apart by `is_side`) come in
    /// pairs within the phase, at most two per seed, and leave the seed's other faults and
    /// clock offsets as they were; returns how many of 500 seeds had some.
    fn side_stream_pairs(
        turn_on: impl Fn(&mut ScheduleConfig),
        is_side: impl Fn(&Fault) -> bool,
    ) -> usize {
        let without = ScheduleConfig::default();
        let mut with = ScheduleConfig::default();
        turn_on(&mut with);
        let mut seeds_with = 0;
        for seed in 0..500 {
            let plain = Schedule::draw(seed, &without);
            let sided = Schedule::draw(seed, &with);
            assert!(!plain.events.iter().any(|e| is_side(&e.fault)));
            let others: Vec<Event> = sided
                .events
                .iter()
                .filter(|e| !is_side(&e.fault))
                .copied()
                .collect();
            assert_eq!(others, plain.events, "seed {seed}");
            assert_eq!(sided.clock_offsets, plain.clock_offsets);
            let side: Vec<&Fault> = sided
                .events
                .iter()
                .map(|e| &e.fault)
                .filter(|f| is_side(f))
                .collect();
            let starts = side.iter().filter(|f| f.is_fault()).count();
            assert_eq!(starts * 2, side.len(), "seed {seed}");
            assert!(starts <= 2);
            seeds_with += usize::from(starts > 0);
            assert!(sided.events.iter().all(|e| e.at <= with.fault_phase));
        }
        seeds_with
    }

    #[test]
    fn disk_faults_come_in_pairs_and_leave_the_other_faults_as_they_were() {
        let seeds = side_stream_pairs(
            |c| c.disk_faults = true,
            |f| matches!(f, Fault::DiskFail { .. } | Fault::DiskHeal { .. }),
        );
        assert!(seeds > 250, "{seeds}");
    }

    #[test]
    fn clock_steps_come_in_pairs_within_the_offset_bound_and_leave_the_other_faults() {
        let seeds = side_stream_pairs(
            |c| c.clock_steps = true,
            |f| matches!(f, Fault::ClockStep { .. } | Fault::ClockReset { .. }),
        );
        assert!(seeds > 250, "{seeds}");
        let config = ScheduleConfig {
            clock_steps: true,
            ..ScheduleConfig::default()
        };
        for seed in 0..500 {
            for event in Schedule::draw(seed, &config).events {
                if let Fault::ClockStep { offset, .. } = event.fault {
                    assert!(offset.unsigned_abs() <= 2_000, "seed {seed}: {offset}");
                }
            }
        }
    }
}
